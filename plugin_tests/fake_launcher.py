"""A launcher backend in memory, for the notebook state machine's tests (like JupyterHub's
``MockSpawner``).

It implements the launcher interface (:class:`girder_resolver.launcher.Launcher`) with no
process, container or port: a "server" is a record in a dict. Switches let a test make the
next start fail, make a start or readiness wait hang until released, make a server die, or
make the engine unreachable. Only the state-machine tests use it (test_lifecycle.py); the
real backends are covered by test_launcher_*.py and test_notebook.py.
"""

import itertools
import threading

from girder_resolver.launcher import Launcher, LaunchError

NAME = 'fake'


class FakeLauncher(Launcher):
    """Notebook "servers" that are records in memory; see the module's notes."""

    name = NAME

    def __init__(self, **config):
        super().__init__(**config)
        self._lock = threading.Lock()
        # Tells a server from an earlier one of the same notebook id.
        self._serials = itertools.count(1)
        #: notebook id -> {'handle', 'token', 'alive', 'activity'}
        self.servers = {}
        #: What was asked of the backend, in order: ``(verb, notebook id)``.
        self.calls = []
        #: A message: the next starts raise LaunchError with it.
        self.failStart = None
        #: A message: ``stop`` raises LaunchError with it (the engine is down).
        self.failStop = None
        #: The engine cannot be reached: ``is_alive`` and ``list_running`` raise LaunchError.
        self.engineDown = False
        #: Cleared: ``start`` (and ``wait_ready``) block until it is set (a hang).
        self.startGate = threading.Event()
        self.startGate.set()
        self.readyGate = threading.Event()
        self.readyGate.set()
        #: Set when a start has begun (a test waits on it before acting mid-launch).
        self.started = threading.Event()

    def tool_ready(self, tool):
        """Every tool runs here (a "server" is a record); the tool is recorded with it."""
        return True, ''

    # -- switches --------------------------------------------------------------

    def hangStarts(self):
        """Starts block (inside ``start``, before any handle exists) until :meth:`release`."""
        self.startGate.clear()

    def hangReadiness(self):
        """Servers start but do not answer (``wait_ready`` blocks) until :meth:`release`."""
        self.readyGate.clear()

    def release(self):
        """End the hangs: blocked starts and readiness waits go on."""
        self.startGate.set()
        self.readyGate.set()

    def die(self, notebookId):
        """The server of ``notebookId`` ends behind everyone's back."""
        with self._lock:
            self.servers[str(notebookId)]['alive'] = False

    def touch(self, notebookId, when):
        """Record activity on a server, as jupyter_server's ``last_activity`` would."""
        with self._lock:
            self.servers[str(notebookId)]['activity'] = when

    def alive(self):
        """Notebook ids of the servers that run."""
        with self._lock:
            return {nid for nid, server in self.servers.items() if server['alive']}

    def count(self, verb):
        return sum(1 for v, _ in self.calls if v == verb)

    # -- the launcher interface ---------------------------------------------------

    def start(self, spec):
        self.calls.append(('start', spec.notebook_id))
        self.started.set()
        if not self.startGate.wait(60):
            raise LaunchError('The fake server hung while starting.')
        if self.failStart:
            raise LaunchError(self.failStart)
        handle = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'host': '127.0.0.1',
            # Nothing listens there: the front door may route to it, nobody connects.
            'port': 9,
            'serial': next(self._serials),
            'baseUrl': spec.base_url,
            'labels': dict(spec.labels),
        }
        with self._lock:
            self.servers[spec.notebook_id] = {
                'handle': handle,
                'token': spec.token,
                'alive': True,
                'activity': None,
            }
        return handle

    def _server(self, handle):
        server = self.servers.get(str(handle.get('notebookId')))
        if server is None or server['handle']['serial'] != handle.get('serial'):
            return None
        return server

    def stop(self, handle):
        self.calls.append(('stop', handle.get('notebookId')))
        if self.failStop:
            raise LaunchError(self.failStop)
        with self._lock:
            server = self._server(handle)
            if server is not None:
                server['alive'] = False

    def is_alive(self, handle):
        if self.engineDown:
            raise LaunchError('The fake engine cannot be reached.')
        with self._lock:
            server = self._server(handle)
            return bool(server and server['alive'])

    def list_running(self):
        if self.engineDown:
            raise LaunchError('The fake engine cannot be reached.')
        with self._lock:
            return [dict(s['handle']) for s in self.servers.values() if s['alive']]

    def logs_tail(self, handle, lines=40):
        return 'fake server: no output'

    def wait_ready(self, handle, timeout=None, token=None, progress=None):
        timeout = self.config['ready_timeout'] if timeout is None else timeout
        if not self.readyGate.wait(timeout):
            raise LaunchError(f'The notebook server did not answer within {timeout:g} s.')
        with self._lock:
            server = self._server(handle)
            if server is None or not server['alive']:
                raise LaunchError('The notebook server stopped while starting.')
            if token is not None and token != server['token']:
                raise LaunchError('The notebook server refused its token.')

    def poll(self, handle):
        return self.is_alive(handle)

    def last_activity(self, handle, token, base_url=None):
        with self._lock:
            server = self._server(handle)
            if server is None or not server['alive'] or token != server['token']:
                return None
            return server['activity']
