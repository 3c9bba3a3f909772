"""Attacks on the docker backend's sandbox, made from inside a real kernel.

Each test starts nothing but what an attacker gets: a notebook container of the
real image, through the real launcher, and a Python kernel in it started over the
server's REST API, whose code is sent over the kernel's websocket (as a browser
does, through the server's Unix socket). The code tries what a hostile notebook
user would, and reports back what it found; the test then checks the host too.

Needs DOCKER_HOST and the notebook image (see test_launcher_docker.py): skipped
without them, except in CI (CI=true), where they fail.
"""

import json
import os
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver.launcher import LaunchSpec, get_launcher
from plugin_tests.kernel_helpers import executeInNewKernel
from plugin_tests.launcher_helpers import dockerEngine, makeDataset
from plugin_tests.test_launcher_docker import IMAGE, RUN

TOKEN = 'sandbox-test-token-4d1f'
DATA_NAME = 'survey'
PIDS_LIMIT = 96
#: What Girder's environment might hold: none of it may reach a notebook.
CANARIES = {
    'GIRDER_MONGO_URI': 'mongodb://girder:canary-db-password@127.0.0.1:27017/girder',
    'GIRDER_CANARY_SECRET': 'canary-girder-secret',
    'DATADNS_FEDER8_API_KEY': 'canary-feder8-key-0123456789abcdef',
    'FEDER8_CENTRAL_API_KEY': 'canary-central-key-0123456789abcdef',
    'AWS_SECRET_ACCESS_KEY': 'canary-aws-secret',
}
#: Everything a kernel's environment may hold: the image's, the launcher's, the
#: engine's (container, HOSTNAME, TERM) and ipykernel's own.
ALLOWED_ENV = {
    'HOME',
    'LANG',
    'PATH',
    'PYTHONUNBUFFERED',
    'HOSTNAME',
    'TERM',
    'container',
    'JPY_PARENT_PID',
    'JPY_SESSION_NAME',
    'CLICOLOR',
    'PAGER',
    'GIT_PAGER',
    'MPLBACKEND',
    'PYDEVD_USE_FRAME_EVAL',
}


@pytest.fixture(scope='module')
def docker_engine():
    yield from dockerEngine('docker sandbox', IMAGE)


@pytest.fixture(scope='module')
def notebook(docker_engine, tmp_path_factory):
    """A notebook launched from a process whose environment holds Girder's secrets.

    The dataset's directories and files are writable by everyone on the host, so
    that only the read-only mount stands between a kernel and the data.
    """
    data = makeDataset(tmp_path_factory.mktemp('sandbox'))
    for path in [data, *data.rglob('*')]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in CANARIES.items():
            patch.setenv(name, value)
        launcher = get_launcher('docker', image=IMAGE, pids_limit=PIDS_LIMIT)
        handle = launcher.start(LaunchSpec(f'docker-sandbox-{RUN}', TOKEN, str(data), DATA_NAME))
        try:
            launcher.wait_ready(handle, token=TOKEN)
            yield launcher, handle, data
        finally:
            launcher.stop(handle)


def kernel(notebook, code):
    launcher, handle, _ = notebook
    return executeInNewKernel(launcher, handle, TOKEN, code).json()


def snapshot(root):
    """Every path below ``root`` with its size, mode and modification time."""
    return {
        str(path.relative_to(root)): (
            path.stat().st_size,
            path.stat().st_mode,
            path.stat().st_mtime,
        )
        for path in [root, *root.rglob('*')]
    }


def hostEnviron(pid):
    with open(f'/proc/{pid}/environ', 'rb') as environ:
        return environ.read()


def test_a_kernel_sees_none_of_girders_environment(notebook):
    assert all(os.environ[name] == value for name, value in CANARIES.items())  # Girder's side
    env = kernel(notebook, 'import json, os; print(json.dumps(dict(os.environ)))')
    assert set(env) <= ALLOWED_ENV, set(env) - ALLOWED_ENV
    text = json.dumps(env)
    for value in [*CANARIES.values(), TOKEN]:
        assert value not in text
    assert not [name for name in env if name.startswith(('GIRDER_', 'DATADNS_', 'FEDER8_'))]


def test_a_kernel_finds_no_other_process_in_proc(notebook):
    # Girder's stand-in: a process of this machine whose environment holds the secrets.
    girder = subprocess.Popen(['sleep', '120'], env={**os.environ, **CANARIES})
    try:
        deadline = time.monotonic() + 10
        while CANARIES['GIRDER_CANARY_SECRET'].encode() not in hostEnviron(girder.pid):
            assert time.monotonic() < deadline, 'the stand-in never showed its environment'
            time.sleep(0.02)  # it shows once sleep has been exec'd
        found = kernel(
            notebook,
            """
import json, os
seen = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    entry = {}
    for name in ('cmdline', 'environ'):
        try:
            with open(f'/proc/{pid}/{name}', 'rb') as f:
                entry[name] = f.read().replace(b'\\0', b' ').decode('utf-8', 'replace')
        except OSError as error:
            entry[name] = f'unreadable: {error}'
    seen[pid] = entry
print(json.dumps(seen))
""",
        )
    finally:
        girder.kill()
        girder.wait()
    # The container's own pid namespace: its server (pid 1), the kernel and the
    # kernel's helpers, nothing of the host (Girder, its database, other notebooks).
    assert 'jupyter_server' in found['1']['cmdline']
    for pid, entry in found.items():
        assert 'jupyter_server' in entry['cmdline'] or 'ipykernel' in entry['cmdline'], (
            pid,
            entry,
        )
        for value in [*CANARIES.values(), TOKEN]:
            assert value not in entry['environ']
    assert len(found) < 10


def test_a_kernels_writes_into_the_dataset_fail_and_change_nothing_on_disk(notebook):
    _, _, data = notebook
    before = snapshot(data)
    attempts = kernel(
        notebook,
        f"""
import json, os
base = os.path.expanduser('~/{DATA_NAME}')
attempts = {{
    'create': lambda: open(base + '/new.txt', 'w').write('x'),
    'overwrite': lambda: open(base + '/readme.txt', 'w').write('x'),
    'append': lambda: open(base + '/tables/values.csv', 'a').write('3,4'),
    'delete': lambda: os.remove(base + '/readme.txt'),
    'rename': lambda: os.rename(base + '/readme.txt', base + '/moved.txt'),
    'mkdir': lambda: os.mkdir(base + '/sub'),
    'rmdir': lambda: os.rmdir(base + '/tables'),
    'chmod': lambda: os.chmod(base + '/readme.txt', 0o600),
    'utime': lambda: os.utime(base + '/readme.txt', (0, 0)),
    'symlink': lambda: os.symlink('/etc/passwd', base + '/link'),
}}
result = {{}}
for name, attempt in attempts.items():
    try:
        attempt()
        result[name] = 'succeeded'
    except OSError as error:
        result[name] = error.strerror
print(json.dumps(result))
""",
    )
    assert attempts == dict.fromkeys(attempts, 'Read-only file system')
    assert len(attempts) == 10
    assert snapshot(data) == before


def _host_addresses():
    """This machine's IPv4 addresses other than loopback."""
    try:
        output = subprocess.run(
            ['ip', '-j', '-4', 'addr'], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [
        info['local']
        for link in json.loads(output)
        for info in link.get('addr_info', [])
        if not info['local'].startswith('127.')
    ]


def _gateways(docker_engine):
    """The container networks' gateways here (Podman's 10.88.0.1, Docker's 172.17.0.1)."""
    gateways = set()
    for network in docker_engine.networks.list():
        for config in (network.attrs.get('IPAM') or {}).get('Config') or []:
            if config.get('Gateway'):
                gateways.add(config['Gateway'])
    return sorted(gateways)


@pytest.fixture
def wide_service():
    """A TCP service listening on every address of this machine, not just loopback."""
    server = socket.create_server(('0.0.0.0', 0))
    accepted = []

    def serve():
        while True:
            try:
                connection, peer = server.accept()
            except OSError:
                return
            accepted.append(peer)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    server.close()
    thread.join(timeout=5)


PROBE = """
import json, socket
result = {}
for host, port in json.loads(%r):
    try:
        socket.create_connection((host, port), timeout=2).close()
        result[f'{host}:{port}'] = 'connected'
    except OSError as error:
        result[f'{host}:{port}'] = str(error)
print(json.dumps(result))
"""


def test_a_kernel_cannot_reach_the_database_girder_or_any_host_service(
    notebook, docker_engine, boundServer, pytestconfig, wide_service
):
    mongo = urllib.parse.urlsplit(pytestconfig.getoption('--mongo-uri'))
    wide_port, accepted = wide_service
    ports = {'database': mongo.port, 'girder': boundServer.boundPort, 'wide': wide_port}
    # Each service answers on this machine.
    for port in ports.values():
        socket.create_connection(('127.0.0.1', port), timeout=5).close()
    hosts = [
        '127.0.0.1',
        'localhost',
        mongo.hostname,
        *_host_addresses(),
        *_gateways(docker_engine),
        'host.containers.internal',
        'host.docker.internal',
    ]
    targets = [(host, port) for host in dict.fromkeys(hosts) for port in ports.values()]
    assert len(hosts) >= 5, hosts
    accepted.clear()

    result = kernel(notebook, PROBE % json.dumps(targets))

    print(f'\nfrom the kernel: {json.dumps(result, indent=1)}')
    assert len(result) == len(targets)
    assert [target for target, outcome in result.items() if outcome == 'connected'] == []
    assert accepted == []
    # The attack is real: a container on the engine's default network reaches the
    # service bound to every address through this machine's address.
    if _host_addresses():
        control = docker_engine.containers.run(
            IMAGE,
            ['python3', '-c', PROBE % json.dumps([(_host_addresses()[0], wide_port)])],
            user='65534:65534',
            remove=True,
        )
        assert 'connected' in control.decode()
        assert accepted


def test_a_kernel_cannot_regain_privileges(notebook):
    found = kernel(
        notebook,
        """
import ctypes, json, os
status = dict(
    line.split(':', 1) for line in open('/proc/self/status').read().splitlines() if ':' in line
)
result = {key: status[key].strip() for key in status
          if key.startswith('Cap') or key in ('NoNewPrivs', 'Seccomp', 'Uid', 'Gid')}
result['groups'] = os.getgroups()
for name, attempt in {
    'setuid': lambda: os.setuid(0),
    'setgid': lambda: os.setgid(0),
    'setgroups': lambda: os.setgroups([0]),
}.items():
    try:
        attempt()
        result[name] = 'succeeded'
    except OSError as error:
        result[name] = error.strerror
libc = ctypes.CDLL(None, use_errno=True)
# A new user namespace would give the process every capability inside it.
result['unshare'] = libc.unshare(0x10000000) == 0 and 'succeeded' or os.strerror(ctypes.get_errno())
setuid = []
for top in ('/usr', '/bin', '/sbin'):
    for root, dirs, files in os.walk(top):
        for name in files:
            try:
                if os.lstat(os.path.join(root, name)).st_mode & 0o6000:
                    setuid.append(os.path.join(root, name))
            except OSError:
                pass
result['setuid_files'] = setuid
print(json.dumps(result))
""",
    )
    for key in ('CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb'):
        assert int(found[key], 16) == 0, (key, found[key])
    assert found['NoNewPrivs'] == '1'
    assert found['Uid'].split() == ['65534'] * 4
    assert found['Gid'].split() == ['65534'] * 4
    assert 0 not in found['groups']
    assert found['setuid'] == found['setgid'] == found['setgroups'] == 'Operation not permitted'
    assert found['unshare'] != 'succeeded'
    assert found['setuid_files'] == []


def test_the_pids_limit_bounds_a_fork_bomb(notebook):
    launcher, handle, _ = notebook
    found = kernel(
        notebook,
        f"""
import json, os, subprocess
children, error = [], None
try:
    for _ in range({PIDS_LIMIT * 2}):
        children.append(subprocess.Popen(['sleep', '60']))
except OSError as exc:
    error = exc.strerror
for child in children:
    child.kill()
for child in children:
    child.wait()
limit = None
for path in ('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'):
    if os.path.exists(path):
        limit = open(path).read().strip()
print(json.dumps({{'started': len(children), 'error': error, 'limit': limit}}))
""",
    )
    assert found['limit'] == str(PIDS_LIMIT)
    assert found['error'] == 'Resource temporarily unavailable'
    assert 0 < found['started'] < PIDS_LIMIT
    assert launcher.poll(handle)  # the notebook itself survives its bomb


def test_the_cpu_and_memory_limits_hold_inside(notebook):
    found = kernel(
        notebook,
        """
import json, os
def read(*paths):
    for path in paths:
        if os.path.exists(path):
            return open(path).read().split()
found = {
    'cpu': read('/sys/fs/cgroup/cpu.max', '/sys/fs/cgroup/cpu/cpu.cfs_quota_us'),
    'period': read('/sys/fs/cgroup/cpu/cpu.cfs_period_us'),
    'memory': read('/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'),
}
print(json.dumps(found))
""",
    )
    quota, period = (found['cpu'] + found['period'])[:2] if found['period'] else found['cpu']
    assert int(quota) / int(period) == 1.0
    assert int(found['memory'][0]) == 1024**3


def test_a_kernel_cannot_replace_its_servers_socket(notebook):
    """Girder and the front door connect to the socket's path on the host: a symlink
    there could send them (and the browser's requests) to the container engine."""
    launcher, handle, _ = notebook
    found = kernel(
        notebook,
        """
import json, os
result = {}
for name, attempt in {
    'symlink': lambda: os.symlink('/run/podman/podman.sock', '/run/datadns/evil.sock'),
    'rename': lambda: os.rename('/run/datadns/nb.sock', '/run/datadns/old.sock'),
    'unlink': lambda: os.unlink('/run/datadns/nb.sock'),
}.items():
    try:
        attempt()
        result[name] = 'succeeded'
    except OSError as error:
        result[name] = error.strerror
print(json.dumps(result))
""",
    )
    assert found == dict.fromkeys(('symlink', 'rename', 'unlink'), 'Permission denied')
    assert os.listdir(os.path.dirname(handle['socket'])) == ['nb.sock']
    assert launcher.poll(handle)


@pytest.mark.parametrize(
    ('key', 'value'),
    [
        ('resolver.cpu_limit', '-1'),
        ('resolver.cpu_limit', 'nan'),
        ('resolver.cpu_limit', 'inf'),
        ('resolver.cpu_limit', 'two'),
        ('resolver.cpu_limit', '0.001'),
        ('resolver.pids_limit', '-1'),
        ('resolver.pids_limit', '8'),
        ('resolver.pids_limit', '1.5'),
        ('resolver.pids_limit', 'many'),
    ],
)
@pytest.mark.plugin('resolver')
def test_out_of_range_cpu_and_pids_limits_are_refused(server, admin, key, value):
    resp = server.request(
        '/system/setting', method='PUT', user=admin, params={'key': key, 'value': value}
    )
    assertStatus(resp, 400)
    assert key in resp.json['message']


@pytest.mark.plugin('resolver')
def test_the_cpu_and_pids_limits_are_settings_beside_the_memory_limit(server, admin):
    from girder_resolver.services.notebooks.local import launcher

    defaults = launcher('docker').config
    assert (defaults['mem_limit'], defaults['cpus'], defaults['pids_limit']) == ('1g', 1.0, 512)
    for key, value in [
        ('resolver.memory_limit', '2g'),
        ('resolver.cpu_limit', '1.5'),
        ('resolver.pids_limit', '256'),
    ]:
        resp = server.request(
            '/system/setting', method='PUT', user=admin, params={'key': key, 'value': value}
        )
        assertStatusOk(resp)
    config = launcher('docker').config
    assert (config['mem_limit'], config['cpus'], config['pids_limit']) == ('2g', 1.5, 256)
    server.request(
        '/system/setting',
        method='PUT',
        user=admin,
        params={'key': 'resolver.cpu_limit', 'value': '0'},
    )
    assert launcher('docker').config['cpus'] == 0  # no limit: nano_cpus is not set
