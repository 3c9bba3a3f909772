"""The docker launcher backend, against real containers (no Girder).

Needs DOCKER_HOST pointing at a live Docker Engine API (on a machine without
Docker Engine: ``eval "$(scripts/podman-service.sh start)"``) and the notebook
image (``scripts/build-notebook-image.sh``). Without them the tests are skipped,
except in CI (CI=true), where they fail.
"""

import datetime
import json
import os
import socket
import stat
import time

import pytest

from girder_resolver.launcher import DockerLauncher, LaunchError, LaunchSpec, get_launcher
from plugin_tests.kernel_helpers import contents
from plugin_tests.launcher_helpers import (
    dockerEngine,
    dockerUnavailable,
    makeDataset,
    sharedNotebook,
)

#: Container names are global to the engine: a test session of its own never meets another's.
RUN = os.getpid()

TOKEN = 'docker-test-token'


DATA_NAME = 'survey 2016'
IMAGE = os.environ.get('DATADNS_NOTEBOOK_IMAGE', 'localhost/datadns-notebook:latest')


def _docker_unavailable():
    """Why the docker tests cannot run here, or None when they can."""
    return dockerUnavailable(IMAGE)


@pytest.fixture(scope='module')
def docker_engine():
    """A docker SDK client for DOCKER_HOST; skips (or, in CI, fails) without one."""
    yield from dockerEngine('docker launcher', IMAGE)


@pytest.fixture(scope='module')
def started(docker_engine, tmp_path_factory):
    """One running notebook container shared by the checks: (launcher, spec, handle)."""
    root = tmp_path_factory.mktemp('docker')
    launcher = get_launcher('docker', image=IMAGE, labels={'datadns.test': '1'})
    spec = LaunchSpec(
        notebook_id=f'docker-shared-{RUN}',
        token=TOKEN,
        data_path=str(makeDataset(root)),
        data_name=DATA_NAME,
    )
    yield from sharedNotebook(launcher, spec, 'container')


def test_handle_is_json_and_names_the_container(started, docker_engine):
    launcher, spec, handle = started
    assert json.loads(json.dumps(handle)) == handle
    assert handle['backend'] == 'docker'
    assert handle['notebookId'] == spec.notebook_id
    container = docker_engine.containers.get(handle['containerId'])
    assert container.labels['datadns.notebook'] == spec.notebook_id
    assert container.labels['datadns.managed'] == '1'
    assert container.labels['datadns.test'] == '1'
    assert launcher.poll(handle)


def test_dataset_is_listed_under_its_name(started):
    launcher, _, handle = started
    response = contents(launcher, handle, DATA_NAME, TOKEN)
    assert response.status == 200, response.body
    assert {item['name'] for item in response.json()['content']} == {'readme.txt', 'tables'}
    file = contents(launcher, handle, f'{DATA_NAME}/tables/values.csv', TOKEN)
    assert file.json()['content'] == 'a,b\n1,2\n'


def test_requests_without_the_token_are_refused(started):
    launcher, _, handle = started
    assert contents(launcher, handle, '').status == 403


def test_writes_into_the_dataset_are_refused(started):
    launcher, spec, handle = started
    new_file = {'type': 'file', 'format': 'text', 'content': 'overwrite'}
    put = contents(launcher, handle, f'{DATA_NAME}/new.txt', TOKEN, 'PUT', new_file)
    assert put.status == 403
    assert 'read-only' in put.json()['message']
    delete = contents(launcher, handle, f'{DATA_NAME}/readme.txt', TOKEN, 'DELETE')
    assert delete.status == 403
    assert sorted(os.listdir(spec.data_path)) == ['readme.txt', 'tables']


def test_the_mount_itself_is_read_only_inside_the_container(started, docker_engine):
    _, spec, handle = started
    container = docker_engine.containers.get(handle['containerId'])
    target = f'/home/jovyan/{DATA_NAME}/from-kernel.txt'
    exit_code, output = container.exec_run(['sh', '-c', f'echo x > "{target}"'])
    assert exit_code != 0
    assert b'Read-only file system' in output
    assert not os.path.exists(os.path.join(spec.data_path, 'from-kernel.txt'))


def test_notebook_home_is_writable(started):
    launcher, _, handle = started
    notebook = {
        'type': 'notebook',
        'format': 'json',
        'content': {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},
    }
    put = contents(launcher, handle, 'analysis.ipynb', TOKEN, 'PUT', notebook)
    assert put.status == 201, put.body


def test_last_activity_is_an_aware_utc_datetime(started):
    launcher, _, handle = started
    activity = launcher.last_activity(handle, TOKEN)
    assert isinstance(activity, datetime.datetime)
    assert activity.utcoffset() == datetime.timedelta(0)
    assert launcher.last_activity(handle, 'wrong-token') is None


def test_the_server_listens_on_a_unix_socket_in_a_container_without_network(started, docker_engine):
    launcher, _, handle = started
    assert 'port' not in handle and 'host' not in handle
    assert stat.S_ISSOCK(os.lstat(handle['socket']).st_mode)
    assert launcher.proxy_target(handle).startswith('http+unix://%2F')
    container = docker_engine.containers.get(handle['containerId'])
    assert container.attrs['HostConfig']['NetworkMode'] == 'none'
    assert not container.ports  # nothing published


def test_the_container_is_confined(started, docker_engine):
    launcher, _, handle = started
    host_config = docker_engine.containers.get(handle['containerId']).attrs['HostConfig']
    assert [cap.upper().removeprefix('CAP_') for cap in host_config['CapDrop'] or []] == [
        'ALL'
    ] or len(host_config['CapDrop']) >= 14  # Podman lists the dropped capabilities one by one
    assert any(opt.startswith('no-new-privileges') for opt in host_config['SecurityOpt'])
    assert host_config['ReadonlyRootfs'] is True
    assert host_config['PidsLimit'] == launcher.config['pids_limit'] == 512
    assert host_config['NanoCpus'] == 1_000_000_000
    assert host_config['Memory'] == 1024**3
    config = docker_engine.containers.get(handle['containerId']).attrs['Config']
    assert config['User'] == '65534:65534'


def test_the_token_is_neither_on_the_command_line_nor_in_the_environment(started, docker_engine):
    launcher, _, handle = started
    container = docker_engine.containers.get(handle['containerId'])
    assert TOKEN not in json.dumps(container.attrs)
    # It is in a file only Girder's user can reach on this machine.
    run_dir = handle['runDir']
    assert stat.S_IMODE(os.stat(os.path.dirname(run_dir)).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    with open(os.path.join(run_dir, 'etc', 'jupyter_server_config.py')) as config:
        assert repr(TOKEN) in config.read()


def test_once_ready_the_container_cannot_replace_its_socket(started, docker_engine):
    """A kernel could otherwise put a symlink to another socket (the engine's, say) where
    Girder and the front door connect."""
    launcher, _, handle = started
    assert stat.S_IMODE(os.stat(os.path.dirname(handle['socket'])).st_mode) == 0o755
    container = docker_engine.containers.get(handle['containerId'])
    exit_code, output = container.exec_run(
        ['sh', '-c', 'ln -sf /etc/passwd /run/datadns/evil; mv -f /run/datadns/nb.sock /tmp/x']
    )
    assert exit_code != 0
    assert b'Permission denied' in output
    assert os.listdir(os.path.dirname(handle['socket'])) == ['nb.sock']
    assert launcher.poll(handle)


def test_a_notebook_running_as_girders_own_user_is_refused(docker_engine, tmp_path):
    """Owning its socket's directory, it could make it writable again and swap the socket."""
    launcher = DockerLauncher(image=IMAGE, run_root=str(tmp_path / 'run'))
    handle = launcher.start(LaunchSpec(f'same-{RUN}', TOKEN, str(makeDataset(tmp_path))))
    try:
        # As if Girder ran as the notebooks' uid: it made the directory, so it owns it.
        os.chown(os.path.dirname(handle['socket']), 65534, 65534)
        with pytest.raises(LaunchError, match='the user that Girder runs as'):
            launcher.wait_ready(handle, token=TOKEN)
    finally:
        launcher.stop(handle)
    assert not os.path.exists(handle['runDir'])


def test_directories_left_by_a_start_cut_short_are_removed(docker_engine, tmp_path):
    launcher = DockerLauncher(image=IMAGE, run_root=str(tmp_path / 'run'))
    os.makedirs(launcher.run_root, mode=0o700)
    orphan = tmp_path / 'run' / 'docker-orphan.0123abcd'
    recent = tmp_path / 'run' / 'docker-recent.0123abcd'
    foreign = tmp_path / 'run' / 'not-ours'
    for directory in (orphan, recent, foreign):
        directory.mkdir()
    (orphan / '.datadns-notebook').touch()
    (recent / '.datadns-notebook').touch()
    hour_ago = time.time() - 3600
    for directory in (orphan, foreign):
        os.utime(directory, (hour_ago, hour_ago))
    launcher.list_running()
    assert not orphan.exists()
    assert recent.exists()  # may be a start under way
    assert foreign.exists()  # no sentinel: not ours


def test_a_socket_path_too_long_for_unix_is_a_launch_error(docker_engine, tmp_path):
    launcher = DockerLauncher(image=IMAGE, run_root=str(tmp_path / ('x' * 100)))
    with pytest.raises(LaunchError, match='shorter run_root'):
        launcher.start(LaunchSpec(f'docker-long-{RUN}', TOKEN, str(makeDataset(tmp_path))))


@pytest.mark.parametrize('user', ['root', '0', '0:0', ' 0:1000'])
def test_notebooks_never_run_as_root(user):
    with pytest.raises(ValueError, match='non-root'):
        DockerLauncher(user=user)


def test_a_restarted_server_adopts_the_running_container(started):
    _, spec, handle = started
    adopted = [
        h
        for h in DockerLauncher(image=IMAGE).list_running()
        if h['notebookId'] == f'docker-shared-{RUN}'
    ]
    assert len(adopted) == 1
    for key in ('containerId', 'containerName', 'socket', 'runDir', 'baseUrl'):
        assert adopted[0][key] == handle[key]
    assert DockerLauncher().poll(adopted[0])


def test_starting_a_notebook_that_already_runs_is_a_launch_error(started, docker_engine):
    launcher, spec, handle = started
    with pytest.raises(LaunchError, match='already running'):
        launcher.start(spec)
    assert docker_engine.containers.get(handle['containerId']).status == 'running'
    assert launcher.poll(handle)


def test_a_leftover_container_of_the_same_name_is_replaced(docker_engine, tmp_path):
    import docker

    launcher = DockerLauncher(image=IMAGE)
    name = f'datadns-nb-docker-leftover-{RUN}'
    for stale in docker_engine.containers.list(all=True, filters={'name': name}):
        stale.remove(force=True)  # from an earlier, interrupted run
    leftover = docker_engine.containers.create(
        IMAGE, command=['sleep', '60'], name=name, detach=True
    )
    spec = LaunchSpec(f'docker-leftover-{RUN}', TOKEN, str(makeDataset(tmp_path)))
    try:
        handle = launcher.start(spec)
    except BaseException:
        leftover.remove(force=True)
        raise
    try:
        assert handle['containerId'] != leftover.id
        with pytest.raises(docker.errors.NotFound):
            docker_engine.containers.get(leftover.id)
        launcher.wait_ready(handle, token=TOKEN)
        container = docker_engine.containers.get(handle['containerId'])
        assert container.labels['datadns.notebook'] == f'docker-leftover-{RUN}'
        assert contents(launcher, handle, '', TOKEN).status == 200
    finally:
        launcher.stop(handle)


def test_a_container_that_exits_while_starting_fails_wait_ready_with_its_log(
    docker_engine, tmp_path
):
    launcher = DockerLauncher(
        image=IMAGE, command=['python3', '-c', 'import sys; sys.exit("no jupyter here")']
    )
    handle = launcher.start(LaunchSpec(f'docker-broken-{RUN}', TOKEN, str(makeDataset(tmp_path))))
    try:
        with pytest.raises(LaunchError, match='stopped while starting') as raised:
            launcher.wait_ready(handle, timeout=60, token=TOKEN)
        assert 'no jupyter here' in str(raised.value)
        assert not launcher.is_alive(handle)
    finally:
        launcher.stop(handle)


def test_stop_removes_the_container_its_directory_and_its_socket(docker_engine, tmp_path):
    import docker

    launcher = DockerLauncher(image=IMAGE)
    spec = LaunchSpec(f'docker-stop-{RUN}', TOKEN, str(makeDataset(tmp_path)))
    handle = launcher.start(spec)
    launcher.wait_ready(handle, token=TOKEN)

    launcher.stop(handle)

    with pytest.raises(docker.errors.NotFound):
        docker_engine.containers.get(handle['containerId'])
    assert not os.path.exists(handle['runDir'])
    with socket.socket(socket.AF_UNIX) as sock, pytest.raises(OSError):
        sock.connect(handle['socket'])
    assert not launcher.poll(handle)
    assert all(h['notebookId'] != f'docker-stop-{RUN}' for h in launcher.list_running())
    assert sorted(os.listdir(spec.data_path)) == ['readme.txt', 'tables']
    launcher.stop(handle)  # a second stop is harmless


def test_a_missing_image_is_a_launch_error(docker_engine, tmp_path):
    launcher = DockerLauncher(image='localhost/datadns-no-such-image:latest')
    with pytest.raises(LaunchError, match='not available'):
        launcher.start(LaunchSpec(f'docker-noimage-{RUN}', TOKEN, str(makeDataset(tmp_path))))


def test_a_missing_dataset_directory_is_a_launch_error(docker_engine, tmp_path):
    spec = LaunchSpec(f'docker-missing-{RUN}', TOKEN, str(makeDataset(tmp_path)))
    os.rename(spec.data_path, spec.data_path + '-moved')
    with pytest.raises(LaunchError, match='does not exist'):
        DockerLauncher(image=IMAGE).start(spec)
