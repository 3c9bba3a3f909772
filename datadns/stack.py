"""Start and stop the processes of an embedded Data DNS stack.

Each service is a small class with ``start()``/``stop()`` that owns one child
process, waits until it answers, and stops it (and only it) on exit.
"""

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests


def freePort():
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def portFree(port):
    """True when ``port`` on 127.0.0.1 can be bound now."""
    with contextlib.closing(socket.socket()) as s:
        try:
            s.bind(('127.0.0.1', port))
            return True
        except OSError:
            return False


def freePortBlock():
    """A base port free with the next two and base+100: the ports `datadns up --port` takes.

    Chosen at random below the kernel's ephemeral range, so that an outgoing connection
    made before the ports are bound (`make run` installs first) cannot take one, nor two
    test sessions on one machine pick the same block.
    """
    with open('/proc/sys/net/ipv4/ip_local_port_range') as ports:
        ephemeral = int(ports.read().split()[0])
    for _ in range(200):
        base = random.randrange(10000, ephemeral - 200)
        if all(portFree(port) for port in (base, base + 1, base + 2, base + 100)):
            return base
    raise RuntimeError('No free block of ports below the ephemeral range.')


def waitFor(check, timeout, what, interval=0.1, proc=None, log=None):
    """Call ``check()`` until it returns a true value or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    lastError = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'{what} exited with code {proc.returncode}{_tail(log)}')
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            lastError = exc
        time.sleep(interval)
    raise TimeoutError(f'{what} did not come up in {timeout}s ({lastError}){_tail(log)}')


def _tail(log, lines=20):
    if not log or not Path(log).exists():
        return ''
    text = Path(log).read_text(errors='replace').splitlines()[-lines:]
    return '\n--- last lines of %s ---\n%s' % (log, '\n'.join(text))


class Service:
    """One child process with a log file."""

    name = 'service'

    def __init__(self, logDir=None):
        self.proc = None
        self.logDir = Path(logDir or tempfile.mkdtemp(prefix=f'datadns-{self.name}-'))
        self.logDir.mkdir(parents=True, exist_ok=True)
        self.log = self.logDir / f'{self.name}.log'

    def command(self):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def ready(self):
        raise NotImplementedError

    #: Seconds ``start()`` waits for the process to answer.
    startTimeout = 60

    def spawn(self):
        """Start the process (its output appended to the log) without waiting for it."""
        logFile = open(self.log, 'ab')
        self.proc = subprocess.Popen(
            self.command(),
            stdout=logFile,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
        )
        logFile.close()
        return self

    def waitReady(self, timeout=None):
        waitFor(self.ready, timeout or self.startTimeout, self.name, proc=self.proc, log=self.log)
        return self

    def start(self, timeout=None):
        return self.spawn().waitReady(timeout)

    def stop(self, timeout=15):
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self):
        """Kill without grace, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class SecantusDB(Service):
    """A MongoDB-wire-protocol server; ``storage=':memory:'`` for a throwaway one."""

    name = 'secantusdb'

    def __init__(self, storage=':memory:', port=None, logDir=None, cacheSize=None):
        super().__init__(logDir)
        self.storage = str(storage)
        self.port = port or freePort()
        #: WiredTiger's cache, e.g. '4G' (SecantusDB's default is 1G). In memory, all
        #: data lives in it, and an index built over a large collection in one
        #: transaction stalls once its dirty share passes about a fifth of it.
        self.cacheSize = cacheSize

    @property
    def uri(self):
        return f'mongodb://127.0.0.1:{self.port}'

    def command(self):
        if self.storage != ':memory:':
            Path(self.storage).mkdir(parents=True, exist_ok=True)
        return [
            sys.executable,
            '-m',
            'secantus',
            '--host',
            '127.0.0.1',
            '--port',
            str(self.port),
            '--storage-path',
            self.storage,
            '--log-level',
            'WARNING',
            *(['--cache-size', self.cacheSize] if self.cacheSize else []),
        ]

    def ready(self):
        with socket.create_connection(('127.0.0.1', self.port), timeout=1):
            return True


class Girder(Service):
    """``girder serve`` with the plugin, eager local tasks, and its own database."""

    name = 'girder'

    def __init__(
        self, mongoUri, dbName='girder', port=None, host='127.0.0.1', logDir=None, extraEnv=None
    ):
        super().__init__(logDir)
        self.mongoUri = mongoUri
        self.dbName = dbName
        self.host = host
        self.port = port or freePort()
        self.extraEnv = extraEnv or {}

    @property
    def url(self):
        return f'http://127.0.0.1:{self.port}'

    @property
    def apiUrl(self):
        return f'{self.url}/api/v1'

    def command(self):
        girder = shutil.which('girder', path=os.path.dirname(sys.executable)) or 'girder'
        return [
            girder,
            'serve',
            '--database',
            f'{self.mongoUri}/{self.dbName}',
            '--host',
            self.host,
            '--port',
            str(self.port),
        ]

    def env(self):
        env = dict(os.environ)
        # No broker in the embedded stack: run Girder's "local" tasks in-process.
        env['GIRDER_WORKER_TASK_ALWAYS_EAGER'] = 'true'
        # `girder serve` defaults to development mode, whose reloader restarts the server
        # whenever a .py file under the working directory changes (dropping launches).
        env.setdefault('GIRDER_SERVER_MODE', 'production')
        env.update(self.extraEnv)
        return env

    def ready(self):
        return requests.get(f'{self.apiUrl}/system/version', timeout=2).ok

    startTimeout = 120


class Redis(Service):
    """Debian's redis-server, for Girder's notifications (the web client's progress)."""

    name = 'redis'

    def __init__(self, port=None, logDir=None):
        super().__init__(logDir)
        self.port = port or freePort()

    @property
    def url(self):
        return f'redis://127.0.0.1:{self.port}'

    @staticmethod
    def available():
        return shutil.which('redis-server') is not None

    def command(self):
        return [
            'redis-server',
            '--port',
            str(self.port),
            '--bind',
            '127.0.0.1',
            '--save',
            '',
            '--appendonly',
            'no',
        ]

    def ready(self):
        with socket.create_connection(('127.0.0.1', self.port), timeout=1) as s:
            s.sendall(b'PING\r\n')
            return s.recv(16).startswith(b'+PONG')


class Feder8(Service):
    """A ``feder8 run`` sidecar for one site."""

    name = 'feder8'

    def __init__(
        self,
        siteName,
        girderUrl,
        girderApiKey,
        centralUrl,
        centralApiKey,
        interval=30,
        publicUrl=None,
        logDir=None,
        extraArgs=(),
    ):
        super().__init__(logDir)
        self.log = self.logDir / f'feder8-{siteName}.log'
        self.siteName = siteName
        self.settings = {
            'FEDER8_SITE_NAME': siteName,
            'FEDER8_GIRDER_URL': girderUrl,
            'FEDER8_GIRDER_API_KEY': girderApiKey,
            'FEDER8_PUBLIC_URL': publicUrl or girderUrl,
            'FEDER8_CENTRAL_URL': centralUrl,
            'FEDER8_CENTRAL_API_KEY': centralApiKey,
            'FEDER8_INTERVAL': str(interval),
        }
        self.extraArgs = list(extraArgs)

    def command(self):
        return [sys.executable, '-m', 'feder8', 'run', *self.extraArgs]

    def env(self):
        return {**os.environ, **self.settings, 'PYTHONUNBUFFERED': '1'}

    def ready(self):
        # Running is all we can see from outside; registration is checked at the central.
        return self.proc.poll() is None

    def logText(self):
        return self.log.read_text(errors='replace') if self.log.exists() else ''
