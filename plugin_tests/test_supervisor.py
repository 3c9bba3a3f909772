"""`datadns up`'s supervision, with real child processes: a process that dies is restarted
with backoff while the others keep running, and one that keeps dying is given up on."""

import json
import signal
import subprocess
import sys
import time

from datadns import stack
from datadns.supervisor import RestartPolicy, Supervisor, readState


class Sleeper(stack.Service):
    """A real process that runs until killed (or exits with ``code`` after ``life`` s)."""

    name = 'sleeper'

    def __init__(self, logDir, life=None, code=1):
        super().__init__(logDir)
        self.life = life
        self.code = code

    def command(self):
        if self.life is None:
            return [sys.executable, '-c', 'import time; time.sleep(600)']
        return [
            sys.executable,
            '-c',
            f'import sys, time; time.sleep({self.life}); sys.exit({self.code})',
        ]

    def ready(self):
        return self.proc.poll() is None


class Messages(list):
    def __call__(self, message, error=False):
        self.append(message)


def watch(supervisor, until, timeout=20):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, 'timed out'
        supervisor.check()
        time.sleep(0.05)


def testTheRestartDelayDoublesUpToItsCapAndTheProcessIsGivenUpOnAfterTooManyDeaths():
    policy = RestartPolicy(maxRestarts=4, window=60, firstDelay=0.5, maxDelay=2)
    now = 1000.0
    assert policy.delay([now], now) == 0.5
    assert policy.delay([now] * 2, now) == 1
    assert policy.delay([now] * 3, now) == 2
    assert policy.delay([now] * 4, now) == 2
    assert policy.delay([now] * 5, now) is None
    # Deaths older than the window are forgiven.
    assert policy.delay([now - 120] * 5 + [now], now) == 0.5


def testADeadProcessIsReportedAndRestartedWhileTheOthersKeepRunning(tmp_path):
    messages = Messages()
    supervisor = Supervisor(
        report=messages,
        policy=RestartPolicy(firstDelay=0.2),
        stateFile=tmp_path / 'state.json',
    )
    first = supervisor.add('first', Sleeper(tmp_path).start())
    second = supervisor.add('second', Sleeper(tmp_path).start())
    try:
        secondPid = second.proc.pid
        deadPid = first.proc.pid
        first.proc.send_signal(signal.SIGKILL)
        # The "running again" message is the restart's last step (after the state file).
        watch(supervisor, lambda: len(messages) >= 2)
        assert supervisor.entry('first').restarts == 1
        assert first.proc.pid != deadPid and first.proc.poll() is None
        assert second.proc.pid == secondPid and second.proc.poll() is None
        assert messages[0].startswith('first exited (code -9); restarting it in 0.2 s')
        assert messages[1] == f'first is running again (pid {first.proc.pid}).'
        state = readState(tmp_path / 'state.json')
        assert state['running']
        byName = {s['name']: s for s in state['services']}
        assert byName['first']['pid'] == first.proc.pid and byName['first']['alive']
        assert (byName['first']['status'], byName['first']['restarts']) == ('running', 1)
        assert byName['first']['lastExit'] == -9
    finally:
        supervisor.stop()
    assert first.proc.poll() is not None and second.proc.poll() is not None
    assert not (tmp_path / 'state.json').exists()


def testAProcessThatKeepsDyingIsGivenUpOnWithAClearMessage(tmp_path):
    messages = Messages()
    supervisor = Supervisor(
        report=messages,
        policy=RestartPolicy(maxRestarts=2, firstDelay=0.05),
        stateFile=tmp_path / 'state.json',
    )
    steady = supervisor.add('steady', Sleeper(tmp_path).start())
    supervisor.add('flaky', Sleeper(tmp_path, life=0.3, code=3).start())
    try:
        watch(supervisor, lambda: supervisor.entry('flaky').status == 'given up')
        assert len([m for m in messages if m.startswith('flaky exited (code 3)')]) == 3
        assert 'given up on' in messages[-1] and 'The rest keeps running' in messages[-1]
        # Given up means given up: no more restarts, and the rest still runs.
        time.sleep(0.5)
        supervisor.check()
        assert supervisor.entry('flaky').status == 'given up'
        assert steady.proc.poll() is None
        state = json.loads((tmp_path / 'state.json').read_text())
        assert {s['name']: s['status'] for s in state['services']} == {
            'steady': 'running',
            'flaky': 'given up',
        }
    finally:
        supervisor.stop()


def testStoppingDuringABackoffRestartsNothing(tmp_path):
    supervisor = Supervisor(report=Messages(), policy=RestartPolicy(firstDelay=0.5))
    service = supervisor.add('slow', Sleeper(tmp_path).start())
    service.kill()
    supervisor.check()
    assert supervisor.entry('slow').status == 'restarting'
    supervisor.stop()
    time.sleep(0.7)
    assert service.proc.poll() is not None, 'a process was started after stop()'


def testDatadnsStatusSaysWhenNothingRuns(tmp_path):
    result = subprocess.run(
        [sys.executable, '-m', 'datadns', 'status', '--home', str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 3
    assert 'Data DNS is not running' in result.stdout
