"""The process launcher backend, against real jupyter_server processes (no Girder)."""

import datetime
import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import requests

import girder_resolver.launcher
from girder_resolver.launcher import LaunchError, LaunchSpec, ProcessLauncher, get_launcher
from plugin_tests.launcher_helpers import connectRefused, contentsUrl, makeDataset

TOKEN = 'process-test-token'


def _auth(token=TOKEN):
    return {'Authorization': f'token {token}'}


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
    begin = time.monotonic()
    handle = launcher.start(spec)
    launcher.wait_ready(handle, timeout=60, token=TOKEN)
    print(f'\nprocess notebook start-to-ready: {time.monotonic() - begin:.2f} s')
    yield launcher, spec, handle
    launcher.stop(handle)


def test_handle_is_json_and_names_the_process(started):
    launcher, spec, handle = started
    assert json.loads(json.dumps(handle)) == handle
    assert handle['backend'] == 'process'
    assert handle['notebookId'] == spec.notebook_id
    assert handle['baseUrl'] == f'/notebook/{spec.notebook_id}/'
    assert isinstance(handle['pid'], int) and isinstance(handle['port'], int)
    assert launcher.poll(handle)


def test_url_is_on_the_public_host_and_carries_the_token(started):
    launcher, spec, handle = started
    assert launcher.url(handle, spec) == f'http://127.0.0.1:{handle["port"]}{spec.base_url}'
    assert launcher.url(handle, token=TOKEN).endswith(f'{spec.base_url}?token={TOKEN}')
    other = ProcessLauncher(public_host='nb.example.org', work_root=launcher.work_root)
    assert other.url(handle, spec.base_url).startswith('http://nb.example.org:')


def test_dataset_is_listed_under_its_name(started):
    launcher, spec, handle = started
    response = requests.get(contentsUrl(launcher, handle, DATA_NAME), headers=_auth(), timeout=10)
    assert response.status_code == 200, response.text
    listing = response.json()
    assert {item['name'] for item in listing['content']} == {'readme.txt', 'tables'}
    assert listing['writable'] is False
    file = requests.get(
        contentsUrl(launcher, handle, f'{DATA_NAME}/tables/values.csv'), headers=_auth(), timeout=10
    )
    assert file.status_code == 200
    assert file.json()['content'] == 'a,b\n1,2\n'


def test_requests_without_the_token_are_refused(started):
    launcher, _, handle = started
    assert requests.get(contentsUrl(launcher, handle, ''), timeout=10).status_code == 403
    wrong = requests.get(contentsUrl(launcher, handle, ''), headers=_auth('wrong'), timeout=10)
    assert wrong.status_code == 403


def test_writes_into_the_dataset_are_refused(started):
    launcher, spec, handle = started
    new_file = {'type': 'file', 'format': 'text', 'content': 'overwrite'}
    put = requests.put(
        contentsUrl(launcher, handle, f'{DATA_NAME}/new.txt'), json=new_file, headers=_auth()
    )
    assert put.status_code == 403
    assert 'read-only' in put.json()['message']
    assert not os.path.exists(os.path.join(spec.data_path, 'new.txt'))

    overwrite = requests.put(
        contentsUrl(launcher, handle, f'{DATA_NAME}/readme.txt'), json=new_file, headers=_auth()
    )
    assert overwrite.status_code == 403
    untitled = requests.post(
        contentsUrl(launcher, handle, f'{DATA_NAME}/tables'), json={'type': 'file'}, headers=_auth()
    )
    assert untitled.status_code == 403
    rename = requests.patch(
        contentsUrl(launcher, handle, f'{DATA_NAME}/readme.txt'),
        json={'path': 'stolen.txt'},
        headers=_auth(),
    )
    assert rename.status_code == 403
    delete = requests.delete(
        contentsUrl(launcher, handle, f'{DATA_NAME}/tables/values.csv'), headers=_auth()
    )
    assert delete.status_code == 403
    delete_mount = requests.delete(contentsUrl(launcher, handle, DATA_NAME), headers=_auth())
    assert delete_mount.status_code == 403
    assert sorted(os.listdir(spec.data_path)) == ['readme.txt', 'tables']
    with open(os.path.join(spec.data_path, 'readme.txt')) as readme:
        assert readme.read() == 'hello\n'


def test_copy_out_of_the_dataset_into_the_work_dir_is_allowed(started):
    launcher, _, handle = started
    copy = requests.post(
        contentsUrl(launcher, handle, ''),
        json={'copy_from': f'{DATA_NAME}/readme.txt'},
        headers=_auth(),
    )
    assert copy.status_code == 201, copy.text
    assert os.path.isfile(os.path.join(handle['workDir'], 'home', copy.json()['path']))


def test_notebook_work_dir_is_writable(started):
    launcher, _, handle = started
    notebook = {
        'type': 'notebook',
        'format': 'json',
        'content': {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},
    }
    put = requests.put(
        contentsUrl(launcher, handle, 'analysis.ipynb'), json=notebook, headers=_auth()
    )
    assert put.status_code == 201, put.text
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


def test_stop_frees_the_port_ends_the_process_and_keeps_the_data(tmp_path):
    launcher = ProcessLauncher(work_root=str(tmp_path / 'work'))
    spec = LaunchSpec('proc-stop', TOKEN, str(makeDataset(tmp_path)))
    handle = launcher.start(spec)
    launcher.wait_ready(handle, token=TOKEN)

    launcher.stop(handle)

    assert connectRefused(handle['host'], handle['port'])
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
    assert connectRefused(handle['host'], handle['port'])


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
