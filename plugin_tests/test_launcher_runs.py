"""Batch runs of the launcher backends, against real sandboxes and containers (no Girder).

Each backend runs the same checks: the command sees the dataset read-only at
$DATASET_DIR and leaves results in $RESULTS_DIR, nothing of Girder's
environment, no network and no process of the host; the log can be read while
the command runs, by another launcher object too (a restarted Girder); the
time limit and cancel end a run with the reason.
"""

import os
import time

import pytest

from girder_resolver.launcher import Launcher, LaunchError, RunSpec, get_launcher
from plugin_tests.launcher_helpers import makeDataset, requireDocker, requireSlurm

IMAGE = os.environ.get('DATADNS_NOTEBOOK_IMAGE', 'localhost/datadns-notebook:latest')
RUN = os.getpid()
SECRET = 'girder-secret-value-that-no-run-may-see'

#: One command that probes what a run may do and reports it in its log.
PROBE = r"""
echo "first line"
cat "$DATASET_DIR/readme.txt" > "$RESULTS_DIR/copy.txt"
mkdir -p "$RESULTS_DIR/sub" && echo nested > "$RESULTS_DIR/sub/deep.txt"
echo tamper > "$DATASET_DIR/readme.txt" 2>/dev/null && echo "DATASET WRITABLE"
env | grep -q girder-secret-value && echo "SECRET SEEN"
for p in /proc/[0-9]*; do cat "$p/environ" 2>/dev/null | tr '\0' '\n'; done \
  | grep -q girder-secret && echo "SECRET IN PROC"
echo "processes: $(ls -d /proc/[0-9]* | wc -l)"
python3 -c "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)" \
  2>/dev/null && echo "NETWORK REACHED"
echo "dataset=$DATASET_DIR results=$RESULTS_DIR"
exit 7
"""


def _wait_exited(launcher, handle, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        state = launcher.run_state(handle)
        if state[0] == 'exited':
            return state
        assert time.monotonic() < deadline, f'run still {state} after {timeout} s'
        time.sleep(0.1)


def _log(launcher, handle):
    out = b''
    while True:
        chunk = launcher.run_log(handle, len(out))
        if not chunk:
            return out.decode()
        out += chunk


@pytest.fixture(scope='module', params=['process', 'docker', 'slurm'])
def backend(request, tmp_path_factory):
    """(launcher factory, dataset path, a fresh results directory maker) for one backend."""
    root = tmp_path_factory.mktemp(f'runs-{request.param}')
    if request.param == 'docker':
        requireDocker('docker runs', IMAGE)

        def make():
            return get_launcher('docker', image=IMAGE, run_root=str(root / 'docker'))
    elif request.param == 'slurm':
        requireSlurm()

        def make():
            return get_launcher(
                'slurm', work_root=str(root / 'work'), ip='127.0.0.1', mem_limit='256m'
            )
    else:

        def make():
            return get_launcher('process', work_root=str(root / 'work'))

    data = makeDataset(root)
    counter = iter(range(1000))

    def results():
        path = root / f'results-{next(counter)}'
        path.mkdir()
        return path

    return request.param, make, data, results


def _spec(name, backend, argv, **kwargs):
    kind, _, data, results = backend
    return RunSpec(f'{kind}-{name}-{RUN}', argv, str(data), str(results()), **kwargs)


def test_a_run_sees_the_dataset_read_only_and_leaves_its_results_nothing_else(backend, monkeypatch):
    _, make, data, _ = backend
    monkeypatch.setenv('DATADNS_TEST_SECRET', SECRET)
    launcher = make()
    spec = _spec('probe', backend, ['bash', '-c', PROBE])
    handle = launcher.start_run(spec)
    try:
        state = _wait_exited(launcher, handle)
        log = _log(launcher, handle)
        assert state == ('exited', 7, 'the command exited with code 7'), log
        assert 'first line' in log
        assert 'dataset=/data results=/results' in log
        for leak in ('DATASET WRITABLE', 'SECRET SEEN', 'SECRET IN PROC', 'NETWORK REACHED'):
            assert leak not in log, log
        # Only the run's own few processes: a PID namespace of its own.
        processes = int(log.split('processes: ')[1].split()[0])
        assert processes < 10, log
        assert (data / 'readme.txt').read_text() == 'hello\n'
        results = spec.results_path
        assert open(os.path.join(results, 'copy.txt')).read() == 'hello\n'
        assert open(os.path.join(results, 'sub', 'deep.txt')).read() == 'nested\n'
    finally:
        launcher.cleanup_run(handle)
    assert os.listdir(spec.results_path), 'cleanup_run must leave the results to the caller'
    launcher.cleanup_run(handle)  # idempotent


def test_the_log_streams_while_the_run_runs_and_another_launcher_follows_it(backend):
    _, make, _, _ = backend
    launcher = make()
    script = 'echo started; while [ ! -e "$RESULTS_DIR/go" ]; do sleep 0.1; done; echo done'
    spec = _spec('stream', backend, ['bash', '-c', script])
    handle = launcher.start_run(spec)
    try:
        later = make()  # what a restarted Girder has: the handle only
        deadline = time.monotonic() + 60
        while b'started' not in later.run_log(handle):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert later.run_state(handle)[0] == 'running'
        assert later.run_log(handle, 3) == b'rted\n'
        open(os.path.join(spec.results_path, 'go'), 'w').close()
        assert _wait_exited(later, handle) == ('exited', 0, None)
        assert _log(later, handle) == 'started\ndone\n'
    finally:
        launcher.cleanup_run(handle)


def test_a_run_over_its_time_limit_is_ended_with_the_reason(backend):
    _, make, _, _ = backend
    launcher = make()
    handle = launcher.start_run(_spec('limit', backend, ['sleep', '60'], time_limit=2))
    try:
        begin = time.monotonic()
        state = _wait_exited(launcher, handle)
        assert state[2] == 'ran longer than the limit of 2 s'
        assert state[1] != 0
        assert time.monotonic() - begin < 20
    finally:
        launcher.cleanup_run(handle)


def test_cancel_ends_a_run_as_cancelled(backend):
    _, make, _, _ = backend
    launcher = make()
    handle = launcher.start_run(_spec('cancel', backend, ['sleep', '60']))
    try:
        launcher.cancel_run(handle)
        state = _wait_exited(launcher, handle, timeout=30)
        assert state[2] == 'cancelled'
        launcher.cancel_run(handle)  # idempotent
    finally:
        launcher.cleanup_run(handle)


def test_a_backend_without_runs_says_so():
    class NoRuns(Launcher):
        name = 'noruns'
        start = stop = is_alive = list_running = logs_tail = lambda *args: None

    with pytest.raises(LaunchError, match='The noruns backend does not run batch jobs'):
        NoRuns().start_run(None)


def test_a_run_spec_refuses_bad_input(tmp_path):
    data = makeDataset(tmp_path)
    with pytest.raises(LaunchError, match='Invalid run id'):
        RunSpec('../x', ['true'], str(data), str(tmp_path))
    with pytest.raises(LaunchError, match='needs a command'):
        RunSpec('r', 'true', str(data), str(tmp_path))
    with pytest.raises(LaunchError, match='environment variable'):
        RunSpec('r', ['true'], str(data), str(tmp_path), env={'DATASET_DIR': '/'})
    with pytest.raises(LaunchError, match='does not exist'):
        RunSpec('r', ['true'], str(tmp_path / 'none'), str(tmp_path))
