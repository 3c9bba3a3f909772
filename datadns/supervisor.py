"""Keep the processes of ``datadns up`` running: restart the ones that die, with backoff.

A process that exits is reported and started again after a delay that doubles
with each death (1 s, 2 s, 4 s, … at most 30 s); the others keep serving
meanwhile. One that dies more than ``maxRestarts`` times within ``window``
seconds is given up on, with a message saying so. What runs is written to a
state file (``<home>/state.json``) that ``datadns status`` reads.
"""

import datetime
import json
import os
import sys
import threading
import time
from pathlib import Path

import psutil

_CLOCK_TICKS = os.sysconf('SC_CLK_TCK')


def _print(message, error=False):
    print(message, file=sys.stderr if error else sys.stdout, flush=True)


class RestartPolicy:
    """How long to wait before restarting a process that died, and when to give up on it."""

    def __init__(self, maxRestarts=5, window=300.0, firstDelay=1.0, maxDelay=30.0):
        self.maxRestarts = maxRestarts
        self.window = window
        self.firstDelay = firstDelay
        self.maxDelay = maxDelay

    def delay(self, deaths, now=None):
        """Seconds to wait before the next restart, given the times of the deaths so far
        (``time.monotonic()``); None once the process has died too often: give up."""
        now = time.monotonic() if now is None else now
        recent = [t for t in deaths if now - t <= self.window]
        if len(recent) > self.maxRestarts:
            return None
        return min(self.maxDelay, self.firstDelay * 2 ** (max(len(recent), 1) - 1))


class Supervised:
    """One service under supervision, and what happened to it."""

    def __init__(self, label, service, url=None):
        self.label = label
        self.service = service
        self.url = url
        self.status = 'running'
        self.restarts = 0
        self.deaths = []
        self.lastExit = None

    def describe(self):
        proc = self.service.proc
        return {
            'name': self.label,
            'pid': proc.pid if proc is not None else None,
            'pidStart': _started(proc.pid) if proc is not None else None,
            'status': self.status,
            'restarts': self.restarts,
            'lastExit': self.lastExit,
            'url': self.url,
            'log': str(self.service.log),
        }


class Supervisor:
    """Watches started services; :meth:`check` is called regularly by the owner's loop."""

    def __init__(self, report=_print, policy=None, stateFile=None):
        self.report = report
        self.policy = policy or RestartPolicy()
        self.stateFile = Path(stateFile) if stateFile else None
        self.entries = []
        self.started = datetime.datetime.now(datetime.timezone.utc).isoformat()
        self._lock = threading.RLock()
        self._stopping = threading.Event()
        self._threads = []

    def add(self, label, service, url=None):
        """Supervise ``service`` (already started) under ``label``."""
        with self._lock:
            self.entries.append(Supervised(label, service, url))
        self.writeState()
        return service

    def entry(self, label):
        return next(e for e in self.entries if e.label == label)

    def check(self):
        """Notice the processes that exited since the last call and schedule their restart."""
        with self._lock:
            if self._stopping.is_set():
                return
            for entry in self.entries:
                proc = entry.service.proc
                if entry.status == 'running' and proc is not None and proc.poll() is not None:
                    self._died(entry, f'exited (code {proc.returncode})', proc.returncode)

    def _died(self, entry, what, code=None):
        """Record a death; start the restart thread, or give up. Holds the lock."""
        entry.lastExit = code
        entry.deaths.append(time.monotonic())
        delay = self.policy.delay(entry.deaths)
        if delay is None:
            entry.status = 'given up'
            self.report(
                f'{entry.label} {what}; it died {len(entry.deaths)} times, so it is given up '
                f'on (see {entry.service.log}). The rest keeps running; fix it and run '
                '`datadns up` again.',
                error=True,
            )
        else:
            entry.status = 'restarting'
            self.report(
                f'{entry.label} {what}; restarting it in {delay:g} s (see {entry.service.log}).',
                error=True,
            )
            thread = threading.Thread(
                target=self._restart, args=(entry, delay), name=f'restart {entry.label}'
            )
            thread.daemon = True
            self._threads.append(thread)
            thread.start()
        self.writeState()

    def _restart(self, entry, delay):
        if self._stopping.wait(delay):
            return
        with self._lock:
            # Under the lock, so that stop() either sees this process or prevents it.
            if self._stopping.is_set():
                return
            entry.service.spawn()
        try:
            entry.service.waitReady()
        except Exception as exc:  # noqa: BLE001 - any failure to come up is another death
            entry.service.kill()
            with self._lock:
                if not self._stopping.is_set():
                    self._died(entry, f'did not come back ({str(exc).splitlines()[0]})')
            return
        with self._lock:
            if self._stopping.is_set():
                return
            entry.status = 'running'
            entry.restarts += 1
            self.writeState()
            # Last: whoever waits for this message also finds the state file up to date.
            self.report(f'{entry.label} is running again (pid {entry.service.proc.pid}).')

    def stop(self):
        """Stop every service, the last started first; no restart happens after this."""
        with self._lock:
            self._stopping.set()
        for entry in reversed(self.entries):
            entry.service.stop()
            entry.status = 'stopped'
        for thread in self._threads:
            thread.join(30)
        if self.stateFile is not None and self.stateFile.exists():
            self.stateFile.unlink()

    def state(self):
        with self._lock:
            return {
                'pid': os.getpid(),
                'pidStart': _started(os.getpid()),
                'started': self.started,
                'services': [entry.describe() for entry in self.entries],
            }

    def writeState(self):
        """Write :meth:`state` to the state file, atomically."""
        if self.stateFile is None or self._stopping.is_set():
            return
        tmp = self.stateFile.with_suffix('.tmp')
        tmp.write_text(json.dumps(self.state(), indent=1) + '\n')
        os.replace(tmp, self.stateFile)


def readState(stateFile):
    """What ``datadns up`` last wrote, with each process checked: None if there is no file.

    ``running`` says whether that ``datadns up`` still runs; each service gains
    ``alive`` (its process runs: the same pid, started at the same time).
    """
    path = Path(stateFile)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    state['running'] = _alive(state.get('pid'), state.get('pidStart'))
    for service in state.get('services', []):
        service['alive'] = _alive(service.get('pid'), service.get('pidStart'))
    return state


def _startOf(process):
    """When a ``psutil`` process started, in clock ticks since boot.

    Unlike ``create_time()`` alone, this does not move when the system clock is set.
    """
    return round((process.create_time() - psutil.boot_time()) * _CLOCK_TICKS)


def _started(pid):
    """When process ``pid`` started (see :func:`_startOf`), or None if it is gone."""
    try:
        return _startOf(psutil.Process(pid))
    except psutil.Error:
        return None


def _alive(pid, started=None):
    """Whether ``pid`` runs (a zombie does not) and, when ``started`` is known, is the process
    that started then rather than a later one that reuses its pid."""
    if not isinstance(pid, int):
        return False
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return started is None or _startOf(process) == started
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True
