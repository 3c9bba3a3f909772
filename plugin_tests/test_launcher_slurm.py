"""The slurm launcher against the real one-node Slurm cluster (no Girder).

What the federation test (test_slurm.py) does not show: the sbatch options a site
sets, Slurm's refusal as a clear error, the warm pool's late binding (a job started
before its dataset is known), activity for the culler, and adoption by job id.
"""

import os
import socket

import pytest

from girder_resolver import tools
from girder_resolver.launcher import LaunchError, LaunchSpec, get_launcher
from girder_resolver.launcher.slurm import slurm_memory, slurm_seconds, slurm_time
from plugin_tests.kernel_helpers import runInKernel
from plugin_tests.launcher_helpers import makeDataset, requireSlurm

RUN = os.getpid()


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    requireSlurm()
    root = tmp_path_factory.mktemp('slurm-launcher')
    return root, makeDataset(root)


def launcher(root, **options):
    return get_launcher(
        'slurm', work_root=str(root / 'work'), ip='127.0.0.1', mem_limit='256m', **options
    )


def test_sbatch_gets_an_argument_list_with_the_sites_options(tmp_path):
    args = get_launcher(
        'slurm',
        partition='short',
        account='astro',
        time_limit=3600,
        mem_limit='2g',
        cpus=1.5,
        sbatch_args=['--qos=interactive'],
    ).sbatch_args('datadns-x', str(tmp_path))
    assert args[:2] == ['sbatch', '--parsable']
    for option in (
        '--job-name=datadns-x',
        f'--output={tmp_path}/server.log',
        '--cpus-per-task=2',
        '--export=NONE',
        '--partition=short',
        '--account=astro',
        '--mem=2048M',
        '--time=60:00',
        '--qos=interactive',
    ):
        assert option in args
    assert (slurm_memory('512m'), slurm_memory(''), slurm_time(90), slurm_time(0)) == (
        '512M',
        '',
        '1:30',
        '',
    )
    assert [slurm_seconds(t) for t in ('0:05', '1:02:03', '1-00:00:01', 'INVALID')] == [
        5,
        3723,
        86401,
        0,
    ]
    with pytest.raises(LaunchError, match='Cannot read the memory size'):
        slurm_memory('lots')


def test_slurm_refusing_a_job_is_a_clear_error_and_leaves_nothing(slurm):
    root, data = slurm
    backend = launcher(root, partition='nosuchpartition')
    with pytest.raises(LaunchError, match='Slurm refused the notebook job: .*partition'):
        backend.start(LaunchSpec(f'refused-{RUN}', 'tok', str(data)))
    assert not os.path.exists(root / 'work' / f'refused-{RUN}')


def test_a_pooled_job_binds_its_dataset_later_reports_activity_and_is_adopted(slurm):
    root, data = slurm
    backend = launcher(root)
    assert backend.nodes_are_this_host()
    if not backend.can_bind_later():
        pytest.fail('Girder runs as root on the one-node cluster here: the pool must work')
    handle = backend.start_unbound(f'pooled-{RUN}', 'pooltoken')
    try:
        backend.wait_ready(handle, timeout=60, token='pooltoken')
        empty = backend.request(handle, 'GET', 'api/contents/data', token='pooltoken').json()
        assert empty['content'] == []
        backend.bind_data(handle, str(data))
        listed = backend.request(handle, 'GET', 'api/contents/data', token='pooltoken').json()
        assert {e['name'] for e in listed['content']} == {'readme.txt', 'tables'}
        # Read-only inside, as with the process backend.
        put = backend.request(
            handle,
            'PUT',
            'api/contents/data/new.txt',
            token='pooltoken',
            body={'type': 'file', 'format': 'text', 'content': 'x'},
        )
        assert put.status >= 400
        assert backend.last_activity(handle, 'pooltoken') is not None

        # A restarted Girder finds it by its marker and job id, and reaches it.
        adopted = {h['notebookId']: h for h in launcher(root).list_running()}
        found = adopted[f'pooled-{RUN}']
        assert found['jobId'] == handle['jobId'] and found['port'] == handle['port']
        assert launcher(root).poll(found)
    finally:
        backend.stop(handle)
    assert not backend.is_alive(handle)
    assert backend.job(handle) is None or backend.job(handle)[0] == 'CANCELLED'
    assert not os.path.exists(handle['workDir'])


def test_a_tool_runs_in_the_job_with_its_environment_and_ui(slurm):
    root, data = slurm
    tool = {tool['id']: tool for tool in tools.default_tools()}['python']
    backend = launcher(root)
    ready, reason = backend.tool_ready(tool)
    if not ready:
        pytest.fail(f'The python tool must be built here (make test builds it): {reason}')
    handle = backend.start(LaunchSpec(f'tool-{RUN}', 'tooltoken', str(data), tool=tool))
    try:
        backend.wait_ready(handle, timeout=90, token='tooltoken')
        assert handle['tool'] == 'python'
        specs = backend.request(handle, 'GET', 'api/kernelspecs', token='tooltoken').json()
        assert 'python3' in specs['kernelspecs']
        lab = backend.request(handle, 'GET', 'lab', token='tooltoken')
        assert lab.status == 200
    finally:
        backend.stop(handle)


def test_a_kernel_cannot_send_the_forwarder_to_another_socket_of_the_node(slurm, tmp_path):
    """The job's forwarder connects, outside the sandbox, to the socket's path in a
    directory the kernel can write: a symlink there must not lead it elsewhere."""
    root, data = slurm
    decoy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    decoyPath = str(tmp_path / 'decoy.sock')
    decoy.bind(decoyPath)
    decoy.listen()
    decoy.settimeout(1)
    backend = launcher(root)
    handle = backend.start(LaunchSpec(f'symlink-{RUN}', 'symtoken', str(data)))
    try:
        backend.wait_ready(handle, timeout=60, token='symtoken')
        kernel = backend.request(
            handle, 'POST', 'api/kernels', token='symtoken', body={'name': 'python3'}
        ).json()
        url = (
            f'ws://{handle["host"]}:{handle["port"]}{handle["baseUrl"]}'
            f'api/kernels/{kernel["id"]}/channels'
        )
        code = (
            'import os\n'
            "os.rename('/run/datadns/nb.sock', '/run/datadns/moved.sock')\n"
            f"os.symlink({decoyPath!r}, '/run/datadns/nb.sock')\n"
            "print('replaced')\n"
        )
        # Through the forwarder (a WebSocket over TCP), as a browser's kernel runs.
        assert 'replaced' in runInKernel(url, code, headers=['Authorization: token symtoken'])
        with pytest.raises(OSError):
            backend.request(handle, 'GET', 'api/status', token='symtoken')
        with pytest.raises(TimeoutError):
            decoy.accept()  # the forwarder never connected to it
    finally:
        backend.stop(handle)
        decoy.close()
