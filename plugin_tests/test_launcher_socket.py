"""The launcher handle contract for servers on a Unix socket (no TCP port at all).

A real jupyter_server listens on ``ServerApp.sock``; the shared launcher code
waits for it, polls it, reads its activity and names it to the front door.
"""

import os
import subprocess
import sys
import urllib.parse

import pytest

from girder_resolver.launcher import Launcher, LaunchError

TOKEN = 'socket-test-token'
BASE_URL = '/notebook/sock1/'


class _Given(Launcher):
    """A launcher for a server started by the test itself."""

    name = 'given'

    def __init__(self, process, **config):
        super().__init__(**config)
        self.process = process

    def start(self, spec):
        raise NotImplementedError

    def stop(self, handle):
        self.process.terminate()
        self.process.wait(10)

    def is_alive(self, handle):
        return self.process.poll() is None

    def list_running(self):
        return []

    def logs_tail(self, handle, lines=40):
        return ''


@pytest.fixture(scope='module')
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp('socket')
    sock = str(root / 'run' / 'nb.sock')
    os.makedirs(os.path.dirname(sock), mode=0o700)
    (root / 'home').mkdir()
    (root / 'home' / 'hello.txt').write_text('hi\n')
    config = root / 'config.py'
    config.write_text(f'c.IdentityProvider.token = {TOKEN!r}\n')
    args = [
        sys.executable,
        '-m',
        'jupyter_server',
        '--no-browser',
        f'--config={config}',
        f'--ServerApp.sock={sock}',
        f'--ServerApp.base_url={BASE_URL}',
        f'--ServerApp.root_dir={root / "home"}',
    ]
    if os.geteuid() == 0:
        args.append('--allow-root')
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(root / 'runtime'))
    with open(root / 'server.log', 'wb') as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
    handle = {'backend': 'given', 'socket': sock, 'baseUrl': BASE_URL}
    yield _Given(process), handle
    if process.poll() is None:
        process.terminate()
        process.wait(10)


def test_readiness_status_and_activity_are_read_over_the_socket(server):
    launcher, handle = server
    launcher.wait_ready(handle, timeout=60, token=TOKEN)
    assert launcher.poll(handle)
    assert launcher.last_activity(handle, TOKEN) is not None
    assert launcher.last_activity(handle, 'wrong') is None
    listing = launcher.request(handle, 'GET', 'api/contents', token=TOKEN)
    assert listing.status == 200
    assert [item['name'] for item in listing.json()['content']] == ['hello.txt']
    assert launcher.request(handle, 'GET', 'api/contents').status == 403


def test_the_front_door_target_names_the_socket(server):
    launcher, handle = server
    target = launcher.proxy_target(handle)
    assert target == 'http+unix://' + urllib.parse.quote(handle['socket'], safe='')
    assert '/' not in target[len('http+unix://') :]
    assert Launcher.proxy_target({'host': '0.0.0.0', 'port': 8123}) == 'http://127.0.0.1:8123'


def test_a_socket_server_is_opened_only_through_the_front_door(server):
    launcher, handle = server
    with pytest.raises(LaunchError, match='front door'):
        launcher.url(handle)
    fronted = _Given(launcher.process, public_url='https://data.example.org/')
    assert fronted.url(handle) == f'https://data.example.org{BASE_URL}'
    tcp = {'host': '127.0.0.1', 'port': 9000, 'baseUrl': BASE_URL}
    assert fronted.url(tcp) == f'https://data.example.org{BASE_URL}'
    assert _Given(None).url(tcp) == f'http://127.0.0.1:9000{BASE_URL}'


def test_a_stopped_socket_server_is_not_alive_and_does_not_poll(server):
    launcher, handle = server
    launcher.stop(handle)
    assert not launcher.poll(handle)
    assert launcher.last_activity(handle, TOKEN) is None
    with pytest.raises(OSError):
        launcher.request(handle, 'GET', 'api/status')
