"""The process launcher backend, against real jupyter_server processes (no Girder)."""

import datetime
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest

import girder_resolver.launcher
from girder_resolver.launcher import LaunchError, LaunchSpec, ProcessLauncher, get_launcher
from plugin_tests.kernel_helpers import runInKernel
from plugin_tests.launcher_helpers import (
    makeDataset,
    sharedNotebook,
    socketRefused,
    unixSocket,
)

TOKEN = 'process-test-token'


def _contents(launcher, handle, method, path, body=None, token=TOKEN):
    return launcher.request(handle, method, f'api/contents/{path}', token=token, body=body)


DATA_NAME = 'survey 2016'
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(girder_resolver.launcher.__file__)))


@pytest.fixture(scope='module')
def started(tmp_path_factory):
    """One running notebook shared by the read-only checks: (launcher, spec, handle)."""
    root = tmp_path_factory.mktemp('process')
    launcher = get_launcher('process', work_root=str(root / 'work'))
    spec = LaunchSpec(
        notebook_id='proc-shared',
        token=TOKEN,
        data_path=str(makeDataset(root)),
        data_name=DATA_NAME,
    )
    yield from sharedNotebook(launcher, spec, 'process')


def test_handle_is_json_and_names_the_process(started):
    launcher, spec, handle = started
    assert json.loads(json.dumps(handle)) == handle
    assert handle['backend'] == 'process'
    assert handle['notebookId'] == spec.notebook_id
    assert handle['baseUrl'] == f'/notebook/{spec.notebook_id}/'
    assert isinstance(handle['pid'], int)
    # A hard link outside the sandbox to its run/nb.sock (which a kernel could replace).
    assert handle['socket'] == os.path.join(handle['workDir'], 'nb.sock')
    assert 'port' not in handle and 'host' not in handle
    assert handle['sandboxed'] is True
    assert launcher.poll(handle)


def test_url_is_the_front_door_and_the_token_stays_out_of_the_environment(started):
    launcher, spec, handle = started
    with pytest.raises(LaunchError, match='front door'):
        launcher.url(handle)
    fronted = ProcessLauncher(public_url='https://nb.example.org', work_root=launcher.work_root)
    assert fronted.url(handle, spec) == f'https://nb.example.org{spec.base_url}'
    with open(f'/proc/{_serverPid(handle)}/environ', 'rb') as environ:
        assert TOKEN.encode() not in environ.read()
    config = os.path.join(handle['workDir'], 'etc', 'jupyter_server_config.py')
    assert os.stat(config).st_mode & 0o777 == 0o600


def _descendants(pid):
    """``pid`` and every process below it, found through /proc."""
    found = [pid]
    for parent in found:
        for task in os.listdir(f'/proc/{parent}/task'):
            with open(f'/proc/{parent}/task/{task}/children') as children:
                found += [int(child) for child in children.read().split()]
    return found


def _serverPid(handle):
    """The jupyter_server process (inside the sandbox: the deepest one below bwrap)."""
    return _descendants(handle['pid'])[-1]


def test_dataset_is_listed_under_its_name(started):
    launcher, spec, handle = started
    response = _contents(launcher, handle, 'GET', DATA_NAME)
    assert response.status == 200, response.body
    listing = response.json()
    assert {item['name'] for item in listing['content']} == {'readme.txt', 'tables'}
    assert listing['writable'] is False
    file = _contents(launcher, handle, 'GET', f'{DATA_NAME}/tables/values.csv')
    assert file.status == 200
    assert file.json()['content'] == 'a,b\n1,2\n'


def test_requests_without_the_token_are_refused(started):
    launcher, _, handle = started
    assert _contents(launcher, handle, 'GET', '', token=None).status == 403
    assert _contents(launcher, handle, 'GET', '', token='wrong').status == 403


def test_writes_into_the_dataset_are_refused(started):
    launcher, spec, handle = started
    new_file = {'type': 'file', 'format': 'text', 'content': 'overwrite'}
    put = _contents(launcher, handle, 'PUT', f'{DATA_NAME}/new.txt', new_file)
    assert put.status == 403
    assert 'read-only' in put.json()['message']
    assert not os.path.exists(os.path.join(spec.data_path, 'new.txt'))

    overwrite = _contents(launcher, handle, 'PUT', f'{DATA_NAME}/readme.txt', new_file)
    assert overwrite.status == 403
    untitled = _contents(launcher, handle, 'POST', f'{DATA_NAME}/tables', {'type': 'file'})
    assert untitled.status == 403
    rename = _contents(launcher, handle, 'PATCH', f'{DATA_NAME}/readme.txt', {'path': 'x.txt'})
    assert rename.status == 403
    delete = _contents(launcher, handle, 'DELETE', f'{DATA_NAME}/tables/values.csv')
    assert delete.status == 403
    delete_mount = _contents(launcher, handle, 'DELETE', DATA_NAME)
    assert delete_mount.status == 403
    assert sorted(os.listdir(spec.data_path)) == ['readme.txt', 'tables']
    with open(os.path.join(spec.data_path, 'readme.txt')) as readme:
        assert readme.read() == 'hello\n'


def test_copy_out_of_the_dataset_into_the_work_dir_is_allowed(started):
    launcher, _, handle = started
    copy = _contents(launcher, handle, 'POST', '', {'copy_from': f'{DATA_NAME}/readme.txt'})
    assert copy.status == 201, copy.body
    assert os.path.isfile(os.path.join(handle['workDir'], 'home', copy.json()['path']))


def test_notebook_work_dir_is_writable(started):
    launcher, _, handle = started
    notebook = {
        'type': 'notebook',
        'format': 'json',
        'content': {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},
    }
    put = _contents(launcher, handle, 'PUT', 'analysis.ipynb', notebook)
    assert put.status == 201, put.body
    assert put.json()['writable'] is True
    assert os.path.isfile(os.path.join(handle['workDir'], 'home', 'analysis.ipynb'))


def test_last_activity_is_an_aware_utc_datetime(started):
    launcher, _, handle = started
    activity = launcher.last_activity(handle, TOKEN)
    assert isinstance(activity, datetime.datetime)
    assert activity.utcoffset() == datetime.timedelta(0)
    assert activity <= datetime.datetime.now(datetime.timezone.utc)
    assert launcher.last_activity(handle, 'wrong-token') is None


def test_list_running_finds_it_from_a_fresh_launcher(started):
    launcher, _, handle = started
    assert handle in launcher.list_running()
    assert handle in ProcessLauncher(work_root=launcher.work_root).list_running()


def test_a_kernel_cannot_send_girder_or_the_front_door_to_another_socket(tmp_path):
    """run/ is writable inside the sandbox: a kernel may put a symlink to another socket of
    the host (a container engine's, say) in place of run/nb.sock. Girder and the front
    door connect, with their own rights, to the hard link made outside the sandbox."""
    decoyPath = str(tmp_path / 'decoy.sock')
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoy.bind(decoyPath)
    decoy.listen()
    decoy.settimeout(1)
    launcher = get_launcher('process', work_root=str(tmp_path / 'work'))
    spec = LaunchSpec('proc-symlink', TOKEN, str(makeDataset(tmp_path)))
    handle = launcher.start(spec)
    try:
        launcher.wait_ready(handle, timeout=60, token=TOKEN)
        kernel = launcher.request(
            handle, 'POST', 'api/kernels', token=TOKEN, body={'name': 'python3'}
        ).json()
        code = (
            'import os\n'
            "os.rename('/run/datadns/nb.sock', '/run/datadns/moved.sock')\n"
            f"os.symlink({decoyPath!r}, '/run/datadns/nb.sock')\n"
            "print('replaced')\n"
        )
        out = runInKernel(
            f'ws://localhost{spec.base_url}api/kernels/{kernel["id"]}/channels',
            code,
            headers=[f'Authorization: token {TOKEN}'],
            sock=unixSocket(handle['socket']),
        )
        assert 'replaced' in out
        assert os.path.islink(os.path.join(handle['workDir'], 'run', 'nb.sock'))
        # Still the notebook's own server, through the link; the decoy is never reached.
        assert launcher.request(handle, 'GET', 'api/status', token=TOKEN).status == 200
        assert launcher.proxy_target(handle).endswith('nb.sock')
        with pytest.raises(TimeoutError):
            decoy.accept()
    finally:
        launcher.stop(handle)
        decoy.close()


def test_stop_closes_the_socket_ends_the_sandbox_and_keeps_the_data(tmp_path):
    launcher = ProcessLauncher(work_root=str(tmp_path / 'work'))
    spec = LaunchSpec('proc-stop', TOKEN, str(makeDataset(tmp_path)))
    handle = launcher.start(spec)
    launcher.wait_ready(handle, token=TOKEN)

    launcher.stop(handle)

    assert socketRefused(handle['socket'])
    with pytest.raises(ProcessLookupError):
        os.kill(handle['pid'], 0)
    assert not launcher.poll(handle)
    assert not os.path.exists(handle['workDir'])
    assert launcher.list_running() == []
    assert sorted(os.listdir(spec.data_path)) == ['readme.txt', 'tables']
    launcher.stop(handle)  # a second stop is harmless


def test_a_restarted_server_adopts_and_stops_a_running_notebook(tmp_path):
    work_root = str(tmp_path / 'work')
    launcher = ProcessLauncher(work_root=work_root)
    handle = launcher.start(LaunchSpec('proc-adopt', TOKEN, str(makeDataset(tmp_path))))
    launcher.wait_ready(handle, token=TOKEN)
    # Another Python process, as Girder after a restart: it finds the notebook by
    # its marker, polls it and stops it.
    script = textwrap.dedent(
        f"""
        import json
        from girder_resolver.launcher import get_launcher
        launcher = get_launcher('process', work_root={work_root!r})
        running = launcher.list_running()
        alive = [launcher.poll(handle) for handle in running]
        for handle in running:
            launcher.stop(handle)
        print(json.dumps({{'running': running, 'alive': alive}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report == {'running': [handle], 'alive': [True]}
    assert not launcher.is_alive(handle)
    assert socketRefused(handle['socket'])


def test_list_running_clears_markers_of_dead_notebooks(tmp_path):
    launcher = ProcessLauncher(work_root=str(tmp_path / 'work'))
    handle = launcher.start(LaunchSpec('proc-dead', TOKEN, str(makeDataset(tmp_path))))
    launcher.wait_ready(handle, token=TOKEN)
    os.killpg(handle['pid'], 9)
    deadline = time.monotonic() + 10
    while launcher.is_alive(handle) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert launcher.list_running() == []
    assert not os.path.exists(handle['workDir'])
    assert not os.path.exists(os.path.join(launcher.work_root, 'proc-dead.json'))


def test_a_missing_dataset_directory_is_a_launch_error(tmp_path):
    with pytest.raises(LaunchError, match='does not exist'):
        LaunchSpec('proc-missing', TOKEN, str(tmp_path / 'no-such-dataset'))
    spec = LaunchSpec('proc-missing', TOKEN, str(makeDataset(tmp_path)))
    os.rename(spec.data_path, spec.data_path + '-moved')
    with pytest.raises(LaunchError, match='does not exist'):
        ProcessLauncher(work_root=str(tmp_path / 'work')).start(spec)


def test_a_server_that_cannot_start_fails_wait_ready_with_its_log(tmp_path):
    launcher = ProcessLauncher(
        work_root=str(tmp_path / 'work'),
        command=[sys.executable, '-c', 'import sys; sys.exit("no jupyter here")'],
    )
    handle = launcher.start(LaunchSpec('proc-broken', TOKEN, str(makeDataset(tmp_path))))
    with pytest.raises(LaunchError, match='no jupyter here'):
        launcher.wait_ready(handle, timeout=20, token=TOKEN)
    launcher.stop(handle)


def test_data_names_are_sanitised_and_ids_checked(tmp_path):
    data = str(makeDataset(tmp_path))
    assert LaunchSpec('n1', TOKEN, data, '../../etc/passwd').data_name == '_.._etc_passwd'
    assert LaunchSpec('n1', TOKEN, data, '.hidden').data_name == 'hidden'
    assert LaunchSpec('n1', TOKEN, data, '').data_name == 'data'
    with pytest.raises(LaunchError):
        LaunchSpec('../escape', TOKEN, data)


def test_unknown_backends_and_options_are_value_errors():
    with pytest.raises(ValueError, match='Unknown notebook launcher'):
        get_launcher('kubernetes-someday')
    with pytest.raises(ValueError, match='no_such_option'):
        get_launcher('process', no_such_option=1)


def test_a_backend_missing_a_method_cannot_be_instantiated():
    class Incomplete(girder_resolver.launcher.Launcher):
        def start(self, spec):
            return {}

    with pytest.raises(TypeError):
        Incomplete()


def test_the_package_imports_without_the_docker_sdk():
    # None in sys.modules makes `import docker` fail, as on a site without the SDK.
    script = textwrap.dedent(
        """
        import sys
        sys.modules['docker'] = None
        from girder_resolver.launcher import LaunchError, get_launcher
        get_launcher('process')
        launcher = get_launcher('docker')
        try:
            launcher.list_running()
        except LaunchError as error:
            print(error)
        """
    )
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run(
        [sys.executable, '-c', script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert 'needs the "docker" Python package' in result.stdout
