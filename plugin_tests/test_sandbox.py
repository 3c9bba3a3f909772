"""What a kernel of the sandboxed process backend can reach, tried as an attacker would.

Real jupyter_server processes under bubblewrap, real kernels driven over their
websocket, and the test's own process standing in for Girder: its environment
holds Girder-like secrets and it listens on TCP, as Girder and its database do.
"""

import json
import os
import socket
import textwrap
import urllib.parse

import pytest

from girder_resolver.launcher import LaunchError, LaunchSpec, ProcessLauncher
from girder_resolver.launcher import sandbox as sandboxModule
from plugin_tests.kernel_helpers import runInKernel
from plugin_tests.launcher_helpers import makeDataset, unixSocket

TOKEN = 'sandbox-test-token'
SECRETS = {
    'GIRDER_MONGO_URI': 'mongodb://girder:hunter2@127.0.0.1:27017/girder',
    'DATADNS_SECRET': 'datadns-very-secret',
    'FEDER8_CENTRAL_KEY': 'feder8-very-secret',
}

# Skipped only off CI: there, a machine where bubblewrap cannot run fails these tests.
pytestmark = pytest.mark.skipif(
    not sandboxModule.probe()[0] and os.environ.get('CI') != 'true',
    reason='bubblewrap cannot run here: ' + sandboxModule.probe()[1],
)


@pytest.fixture(scope='module')
def girderLike(tmp_path_factory):
    """Secrets in this process's environment and a TCP service, as Girder has."""
    saved = {key: os.environ.get(key) for key in SECRETS}
    os.environ.update(SECRETS)
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen(8)
    secretFile = tmp_path_factory.mktemp('girder') / 'girder.cfg'
    secretFile.write_text('admin-password = hunter2\n')
    yield {'port': listener.getsockname()[1], 'secretFile': str(secretFile)}
    listener.close()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope='module')
def kernel(tmp_path_factory, girderLike):
    """A sandboxed notebook with a running kernel: run(code) -> stdout."""
    root = tmp_path_factory.mktemp('sandbox')
    launcher = ProcessLauncher(work_root=str(root / 'work'))
    spec = LaunchSpec('sandbox-attack', TOKEN, str(makeDataset(root)), 'survey')
    handle = launcher.start(spec)
    launcher.wait_ready(handle, timeout=60, token=TOKEN)
    created = launcher.request(handle, 'POST', 'api/kernels', token=TOKEN, body={})
    assert created.status == 201, created.body
    kernelId = created.json()['id']
    wsUrl = f'ws://localhost{handle["baseUrl"]}api/kernels/{kernelId}/channels'

    def run(code):
        return runInKernel(
            wsUrl,
            textwrap.dedent(code),
            headers=[f'Authorization: token {TOKEN}'],
            sock=unixSocket(handle['socket']),
        )

    run.launcher, run.spec, run.handle = launcher, spec, handle
    yield run
    launcher.stop(handle)


def test_the_kernel_environment_holds_nothing_of_girders(kernel):
    environ = json.loads(kernel('import json, os; print(json.dumps(dict(os.environ)))'))
    for key, value in environ.items():
        assert not key.startswith(('GIRDER_', 'DATADNS_', 'FEDER8_')), key
        assert all(secret not in value for secret in SECRETS.values()), key
    assert TOKEN not in json.dumps(environ)
    assert 'JUPYTER_TOKEN' not in environ
    assert environ['HOME'] == '/home/nb'


def test_the_kernel_finds_no_other_process_environment_in_proc(kernel):
    found = json.loads(
        kernel(
            """
            import json, os
            seen = {}
            for pid in os.listdir('/proc'):
                if pid.isdigit():
                    try:
                        with open(f'/proc/{pid}/environ', 'rb') as f:
                            seen[pid] = f.read().decode('utf-8', 'replace')
                    except OSError as e:
                        seen[pid] = 'unreadable: ' + e.strerror
            print(json.dumps(seen))
            """
        )
    )
    # Only the sandbox's own few processes: bwrap's init, jupyter_server, this kernel.
    assert 1 <= len(found) <= 4, found
    assert str(os.getpid()) not in found or 'pytest' not in open('/proc/1/cmdline').read()
    for text in found.values():
        assert all(secret not in text for secret in SECRETS.values())
        assert TOKEN not in text
        assert 'GIRDER_' not in text and 'DATADNS_' not in text


def test_a_kernel_write_into_the_dataset_fails_and_nothing_appears_on_disk(kernel):
    before = sorted(os.listdir(kernel.spec.data_path))
    out = kernel(
        """
        import os
        for attempt in (
            lambda: open('/home/nb/survey/evil.txt', 'w'),
            lambda: open('/home/nb/survey/readme.txt', 'a'),
            lambda: os.remove('/home/nb/survey/readme.txt'),
            lambda: os.rename('/home/nb/survey/tables', '/home/nb/survey/moved'),
            lambda: os.mkdir('/home/nb/survey/new'),
            lambda: os.chmod('/home/nb/survey/readme.txt', 0o777),
        ):
            try:
                attempt()
                print('WROTE')
            except OSError as e:
                print(e.strerror)
        """
    )
    assert 'WROTE' not in out
    assert out.splitlines() == ['Read-only file system'] * 6
    assert sorted(os.listdir(kernel.spec.data_path)) == before
    with open(os.path.join(kernel.spec.data_path, 'readme.txt')) as readme:
        assert readme.read() == 'hello\n'
    # The scratch home is writable, and writes there land in the working directory.
    assert kernel("open('/home/nb/notes.txt', 'w').write('mine'); print('ok')") == 'ok\n'
    assert os.path.isfile(os.path.join(kernel.handle['workDir'], 'home', 'notes.txt'))


def test_the_kernel_cannot_open_tcp_connections_to_the_host(kernel, girderLike, mongoUri):
    dbPort = urllib.parse.urlsplit(mongoUri).port
    out = kernel(
        f"""
        import socket
        for host, port in (('127.0.0.1', {girderLike['port']}), ('127.0.0.1', {dbPort}),
                           ('::1', {dbPort}), ('10.0.2.2', 80), ('8.8.8.8', 53)):
            s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET)
            s.settimeout(3)
            try:
                s.connect((host, port))
                print('CONNECTED', host, port)
            except OSError as e:
                print('blocked', host, port, e.strerror)
        """
    )
    assert 'CONNECTED' not in out, out
    assert out.count('blocked') == 5


def test_the_kernel_sees_none_of_girders_files(kernel, girderLike):
    out = kernel(
        f"""
        import os
        for path in ({girderLike['secretFile']!r}, '/root', '/work', '/etc/shadow',
                     {os.path.dirname(kernel.launcher.work_root)!r}):
            try:
                print(path, sorted(os.listdir(path)) if os.path.isdir(path) else open(path).read())
            except OSError as e:
                print(path, 'hidden:', e.strerror)
        """
    )
    assert 'hunter2' not in out
    assert f'{girderLike["secretFile"]} hidden:' in out
    assert '/etc/shadow hidden:' in out
    # Other notebooks' working directories and markers are not visible either.
    assert 'sandbox-attack.json' not in out


def test_without_bubblewrap_the_launch_is_refused_with_a_reason(tmp_path):
    launcher = ProcessLauncher(work_root=str(tmp_path / 'work'), bwrap='/nonexistent/bwrap')
    with pytest.raises(LaunchError, match='bubblewrap.*allow_unsandboxed'):
        launcher.start(LaunchSpec('sandbox-none', TOKEN, str(makeDataset(tmp_path))))
    assert not os.path.exists(os.path.join(launcher.work_root, 'sandbox-none'))


def test_allow_unsandboxed_starts_a_server_with_a_clean_environment(tmp_path, girderLike):
    launcher = ProcessLauncher(
        work_root=str(tmp_path / 'work'), bwrap='/nonexistent/bwrap', allow_unsandboxed=True
    )
    handle = launcher.start(LaunchSpec('sandbox-off', TOKEN, str(makeDataset(tmp_path))))
    try:
        launcher.wait_ready(handle, timeout=60, token=TOKEN)
        assert handle['sandboxed'] is False
        with open(f'/proc/{handle["pid"]}/environ', 'rb') as environ:
            text = environ.read().decode()
        assert all(secret not in text for secret in SECRETS.values())
        assert TOKEN not in text
    finally:
        launcher.stop(handle)


@pytest.mark.skipif(not sandboxModule.can_mount(), reason='binding later needs CAP_SYS_ADMIN')
def test_a_warm_server_bound_later_sees_its_dataset_read_only_and_nothing_more(tmp_path):
    """The warm pool's late binding: the dataset arrives in the running sandbox, read-only."""
    launcher = ProcessLauncher(work_root=str(tmp_path / 'work'))
    empty = tmp_path / 'empty'
    empty.mkdir()
    data = makeDataset(tmp_path)
    handle = launcher.start(
        LaunchSpec('sandbox-pooled', TOKEN, str(empty), 'data'), bind_later=True
    )
    try:
        launcher.wait_ready(handle, timeout=60, token=TOKEN)

        def listing():
            response = launcher.request(handle, 'GET', 'api/contents/data', token=TOKEN)
            return sorted(item['name'] for item in response.json()['content'])

        assert listing() == []
        launcher.bind_data(handle, str(data))
        assert listing() == ['readme.txt', 'tables']
        with pytest.raises(LaunchError, match='already bound'):
            launcher.bind_data(handle, str(tmp_path))
        kernelId = launcher.request(handle, 'POST', 'api/kernels', token=TOKEN, body={}).json()[
            'id'
        ]
        out = runInKernel(
            f'ws://localhost{handle["baseUrl"]}api/kernels/{kernelId}/channels',
            textwrap.dedent(
                """
                import os
                print(sorted(os.listdir('/home/nb/data')))
                try:
                    open('/home/nb/data/evil.txt', 'w')
                except OSError as e:
                    print(e.strerror)
                """
            ),
            headers=[f'Authorization: token {TOKEN}'],
            sock=unixSocket(handle['socket']),
        )
        assert out == "['readme.txt', 'tables']\nRead-only file system\n"
        assert sorted(os.listdir(data)) == ['readme.txt', 'tables']
    finally:
        launcher.stop(handle)
    # Stopping unmounts before it removes anything: the dataset is intact, no mount is left.
    assert sorted(os.listdir(data)) == ['readme.txt', 'tables']
    assert sandboxModule.mounts_under(str(tmp_path)) == []
    assert not os.path.exists(handle['workDir'])
