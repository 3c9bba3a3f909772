"""The process backend: one sandboxed ``jupyter_server`` per notebook, no container engine.

The embedded default. Each notebook server (the ``command`` option's, or, for a
launch with a tool, ``<tool's process.env>/bin/python -m jupyter_server``, that
environment shown read-only) runs under bubblewrap (see
:mod:`.sandbox` for what it sees) and listens on a Unix socket, never on a TCP
port: the site's front door reaches it at ``http+unix://…``. Each notebook gets
a working directory ``<work_root>/<notebook_id>/``::

    home/                      the notebook's scratch home and file tree, writable
    home/<data_name>           where the dataset appears (a read-only bind mount)
    run/nb.sock                the server's socket; run/runtime/ its runtime files
    nb.sock                    a hard link to run/nb.sock, made when the server
                               first answers: what Girder and the front door
                               connect to (see below)
    etc/                       jupyter_server_config.py (mode 0600, holds the
                               token) and the modules it loads; read-only inside
    data/                      (start_unbound() only) the shared mount point that
                               bind_data() mounts the dataset onto
    server.log                 the server's stdout and stderr

``run/`` is writable inside the sandbox, so a kernel could put a symlink in place
of ``run/nb.sock`` leading to another socket of this machine (the container
engine's, say), and whoever connects by that path from outside (Girder, the front
door, with their rights) would follow it. So they connect to ``nb.sock`` instead,
a hard link outside the sandbox's view, made (never through a symlink) when the
server first answers, before any kernel can exist: starting one takes a request
to the answering server.

and a marker ``<work_root>/<notebook_id>.json`` holding its handle, by which a
restarted Girder finds the notebooks that still run. ``<work_root>/.unbound-empty``
is the empty placeholder dataset of servers started before their dataset is known
(:meth:`ProcessLauncher.start_unbound`). Whether a server still runs is asked of
``psutil``, by pid and start time, so a reused pid is not taken for it.

Where bubblewrap cannot run (no user namespaces), :meth:`ProcessLauncher.start`
refuses, unless ``allow_unsandboxed`` is set: then the server runs as Girder's
own user with only a clean environment, and a kernel can read or write
whatever that user can (trusted users only; see docs/security.md).

A batch run (:meth:`ProcessLauncher.start_run`) runs its command in the same
sandbox (:func:`.sandbox.run_bwrap_args`), started by a small ``/bin/sh``
wrapper outside it that writes the command's exit status to a file when it
ends. Its working directory ``<work_root>/.runs/<run_id>/`` holds ``home/``
(its scratch home), ``run.log`` (stdout and stderr), ``exit`` (the exit
status, once it ended), ``ended`` (why it was ended early: cancelled, over its
time limit) and ``handle.json``; it outlives Girder like a notebook server and
is followed again by its handle (pid and start time, asked of ``psutil``).
"""

import datetime
import glob
import json
import logging
import os
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import psutil

from ..primitives import processMatches, processStart, startTicks
from . import identity, readonly, sandbox, unixclose
from .base import (
    RUN_DATASET_DIR,
    RUN_RESULTS_DIR,
    Launcher,
    LaunchError,
    LaunchSpec,
    Option,
    tool_config_lines,
    tool_part,
)

logger = logging.getLogger(__name__)

# A file in every working directory we create: nothing else is ever deleted.
_SENTINEL = '.datadns-notebook'


# A file in every batch run's working directory we create.
_RUN_SENTINEL = '.datadns-run'
#: Where batch runs keep their working directories, under the work root (a dot name,
#: which no notebook id can take, so notebook clean-up never looks inside).
RUNS_DIR = '.runs'
#: The wrapper that runs a batch command (outside the sandbox) and records its exit
#: status in the file named by $0, atomically, once the command has ended.
_RUN_WRAPPER = 'exec </dev/null; "$@"; code=$?; echo "$code" > "$0.tmp" && mv -f "$0.tmp" "$0"'
#: Most bytes that one run_log() call returns.
_LOG_CHUNK = 1 << 20

#: Where :meth:`ProcessLauncher.start_unbound` servers find their placeholder dataset,
#: under the work root: a dot name, which no notebook id can take.
_PLACEHOLDER = '.unbound-empty'


def _utcnow_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def children_of(pid):
    """(pid, start time) of the direct children of process ``pid`` ([] once it is gone)."""
    try:
        children = psutil.Process(pid).children()
    except psutil.Error:
        return []
    found = []
    for child in children:
        try:
            found.append((child.pid, startTicks(child)))
        except psutil.Error:
            pass  # ended meanwhile
    return found


class ProcessLauncher(Launcher):
    """Runs each notebook as a sandboxed ``jupyter_server`` on a Unix socket of its own.

    The server starts in a new session so that it outlives a restart of the
    process that launched it (which adopts it again through its marker);
    stopping ends its whole sandbox, kernels included.
    """

    name = 'process'
    options = {
        'command': Option(
            [sys.executable, '-m', 'jupyter_server'],
            'Command that runs jupyter_server (a list, or a string split like a shell would); '
            'the launcher appends the server options.',
        ),
        'work_root': Option(
            os.path.join(tempfile.gettempdir(), 'datadns-notebooks'),
            'Directory holding one working directory and one marker file per notebook.',
        ),
        'extra_args': Option([], 'Further command-line options for jupyter_server.'),
        'env': Option(
            {},
            'Further environment variables for the notebook servers (and so their kernels); '
            "nothing of Girder's own environment is passed on.",
        ),
        'stop_grace': Option(
            5.0, 'Seconds a server has to shut down after SIGTERM before it is killed.'
        ),
        'bwrap': Option('bwrap', 'The bubblewrap executable that sandboxes each server.'),
        'sandbox_ro_paths': Option(
            [],
            'Further host directories shown read-only inside the sandbox (e.g. a conda '
            'environment that the command uses); the Python running Girder is always shown.',
        ),
        'allow_unsandboxed': Option(
            False,
            'Where bubblewrap cannot run, start servers without a sandbox rather than refuse: '
            "a kernel then runs as Girder's user and can read what that user can. Trusted "
            'users only.',
        ),
    }

    def __init__(self, **config):
        super().__init__(**config)
        self.work_root = os.path.abspath(self.config['work_root'])
        # Our own children, so that they are reaped rather than left as zombies.
        self._children = {}
        self._lock = threading.Lock()

    # -- paths -----------------------------------------------------------------

    def _work_dir(self, notebook_id):
        return os.path.join(self.work_root, notebook_id)

    def _marker_path(self, notebook_id):
        return os.path.join(self.work_root, f'{notebook_id}.json')

    def _command(self, tool=None):
        """The jupyter_server command line: the tool's env's Python, else the ``command`` option."""
        env = tool_part(tool, 'process', 'env')
        if env:
            return [os.path.join(env, 'bin', 'python'), '-m', 'jupyter_server']
        command = self.config['command']
        return shlex.split(command) if isinstance(command, str) else list(command)

    # -- the sandbox -----------------------------------------------------------

    def sandboxed(self):
        """Whether servers start under bubblewrap here; :class:`LaunchError` if they cannot.

        False only when bubblewrap cannot run and ``allow_unsandboxed`` accepts that.
        """
        ok, why = sandbox.probe(self.config['bwrap'])
        if ok:
            return True
        if self.config['allow_unsandboxed']:
            return False
        raise LaunchError(
            f'Notebooks run sandboxed with bubblewrap, which cannot run on this server ({why}). '
            'Install the "bubblewrap" package and allow unprivileged user namespaces '
            '(sysctl kernel.unprivileged_userns_clone=1), or, for trusted users only, set '
            'resolver.allow_unsandboxed to true to run notebooks unsandboxed.'
        )

    def can_bind_later(self):
        """Whether a running server can be bound to a dataset later (the warm pool).

        Unsandboxed always; sandboxed only where Girder may mount file systems
        (runs as root with ``CAP_SYS_ADMIN``), since a dataset is mounted into a
        running sandbox.
        """
        try:
            return not self.sandboxed() or sandbox.can_mount()
        except LaunchError:
            return False

    def start_unbound(self, notebook_id, token, data_name='data', labels=None, tool=None):
        """Start a server showing an empty placeholder as its dataset until :meth:`bind_data`.

        The placeholder is ``<work_root>/.unbound-empty`` (read-only, shared by
        every such server, empty).
        """
        placeholder = os.path.join(self.work_root, _PLACEHOLDER)
        try:
            # The work root first, private as start() makes it; then the read-only placeholder.
            os.makedirs(self.work_root, mode=0o700, exist_ok=True)
            os.makedirs(placeholder, mode=0o500, exist_ok=True)
        except OSError as error:
            raise LaunchError(f'Could not create the placeholder dataset: {error}') from None
        spec = LaunchSpec(
            notebook_id, token, placeholder, data_name, labels=labels or {}, tool=tool
        )
        return self.start(spec, bind_later=True)

    # -- tools -----------------------------------------------------------------

    def tool_ready(self, tool):
        """Whether the tool's ``process.env`` is a Python environment with jupyter_server.

        Read from the file system only (no process is started): ``<env>/bin/python``
        runs, and ``jupyter_server`` is installed in the env's site-packages.
        """
        tool_id = (tool or {}).get('id', '?')
        env = tool_part(tool, 'process', 'env')
        if not env or not os.path.isabs(env):
            return False, (
                f'Tool {tool_id!r} has no process environment: set its "process": {{"env": '
                '"/absolute/path/of/a/venv"}.'
            )
        build = f'build it with scripts/build-tools.sh {tool_id}'
        python = os.path.join(env, 'bin', 'python')
        if not os.access(python, os.X_OK):
            return False, f'The environment of tool {tool_id!r} ({env}) is missing; {build}.'
        if not glob.glob(os.path.join(env, 'lib', 'python3*', 'site-packages', 'jupyter_server')):
            return False, (
                f'The environment of tool {tool_id!r} ({env}) has no jupyter_server; {build}.'
            )
        return True, ''

    # -- the interface ---------------------------------------------------------

    def start(self, spec, bind_later=False):
        """Start ``jupyter_server`` for ``spec``; returns the handle.

        Handle: ``{'backend': 'process', 'notebookId', 'pid', 'procStart',
        'socket', 'baseUrl', 'workDir', 'started', 'labels', 'sandboxed',
        'bindLater'}``. With ``bind_later`` the dataset shown is ``spec``'s
        placeholder until :meth:`bind_data` binds the real one.
        """
        spec.check_data_path()
        if spec.tool:
            ready, reason = self.tool_ready(spec.tool)
            if not ready:
                raise LaunchError(reason)
        sandboxed = self.sandboxed()
        if bind_later and sandboxed and not sandbox.can_mount():
            raise LaunchError(
                'A sandboxed server can be bound to a dataset after it starts only when Girder '
                'may mount file systems (runs as root); the warm pool is not available here.'
            )
        work_dir = self.new_work_dir(spec.notebook_id)
        try:
            args, env, cwd = self._prepare(spec, work_dir, sandboxed, bind_later)
            with open(os.path.join(work_dir, 'server.log'), 'ab') as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                )
        except OSError as error:
            self._remove_leftovers(spec.notebook_id)
            raise LaunchError(
                f'Could not start the notebook server for {spec.notebook_id}: {error}'
            ) from None
        with self._lock:
            self._children[process.pid] = process
        handle = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'pid': process.pid,
            'procStart': processStart(process.pid),
            # The hard link that request() makes once the server's socket exists.
            'socket': os.path.join(work_dir, sandbox.SOCKET_NAME),
            'baseUrl': spec.base_url,
            'workDir': work_dir,
            'started': _utcnow_iso(),
            'labels': spec.labels,
            'sandboxed': sandboxed,
            'bindLater': bool(bind_later),
        }
        if spec.tool:
            handle['tool'] = spec.tool['id']
        self._write_marker(handle, spec)
        return handle

    def new_work_dir(self, notebook_id):
        """Create the notebook's empty working directory (clearing a dead one's leftovers).

        Raises :class:`LaunchError` when the notebook runs or is being started.
        """
        marker = self._read_marker(self._marker_path(notebook_id))
        if marker and self.is_alive(marker['handle']):
            raise LaunchError(f'Notebook {notebook_id} is already running.')
        self._remove_leftovers(notebook_id, marker and marker['handle'])
        work_dir = self._work_dir(notebook_id)
        try:
            os.makedirs(self.work_root, mode=0o700, exist_ok=True)
            os.makedirs(work_dir, mode=0o700)
            open(os.path.join(work_dir, _SENTINEL), 'w').close()
        except FileExistsError:
            # Another start of the same notebook is under way, or the directory is not ours.
            raise LaunchError(f'Notebook {notebook_id} is already being started.') from None
        except OSError as error:
            raise LaunchError(f'Could not create the notebook working directory: {error}') from None
        return work_dir

    def bind_data(self, handle, data_path):
        """Show ``data_path`` as the dataset of a server from :meth:`start_unbound`.

        Sandboxed: the dataset is mounted read-only onto the server's shared
        ``data/`` mount point, and the mount propagates into the sandbox.
        Unsandboxed: the dataset symlink is swapped atomically.
        """
        if not handle.get('bindLater'):
            raise LaunchError(f'Notebook {handle["notebookId"]} was not started to be bound later.')
        if not os.path.isdir(data_path):
            raise LaunchError(f'The dataset directory {data_path} does not exist on this server.')
        work_dir = handle['workDir']
        if handle.get('sandboxed'):
            target = os.path.join(work_dir, 'data')
            if len(sandbox.mounts_under(target)) != 1:
                raise LaunchError(f'Notebook {handle["notebookId"]} is already bound to a dataset.')
            try:
                sandbox.bind_readonly(data_path, target, os.path.join(self.work_root, '.stage'))
            except OSError as error:
                raise LaunchError(f'Could not bind the dataset: {error}') from None
            return
        home = os.path.join(work_dir, 'home')
        marker = self._read_marker(self._marker_path(handle['notebookId'])) or {}
        link = os.path.join(home, marker.get('dataName') or 'data')
        if not os.path.islink(link):
            # Never replace anything but the symlink this launcher made.
            raise LaunchError(f'Notebook {handle["notebookId"]} has no dataset link to bind.')
        tmp = os.path.join(home, f'.datadns-bind.{os.getpid()}.{threading.get_ident()}')
        os.symlink(os.path.abspath(data_path), tmp)
        try:
            os.replace(tmp, link)
        except OSError:
            os.unlink(tmp)
            raise

    def request(self, handle, method, path, **kwargs):
        """As :meth:`Launcher.request`, through the hard link to the server's socket.

        The link is made here, by the first request after the server created its
        socket (the readiness polls of :meth:`wait_ready`), never through a symlink.
        """
        link = handle.get('socket')
        if link and handle.get('workDir') and not os.path.lexists(link):
            inner = os.path.join(handle['workDir'], 'run', sandbox.SOCKET_NAME)
            if link != inner:
                try:
                    if stat.S_ISSOCK(os.lstat(inner).st_mode):
                        os.link(inner, link, follow_symlinks=False)
                except FileExistsError:
                    pass  # another thread's request made it
                except OSError as error:
                    raise OSError(f'The notebook server has no socket yet: {error}') from None
        return super().request(handle, method, path, **kwargs)

    def is_alive(self, handle):
        """Whether the server (for a sandbox: its bwrap process) still runs."""
        pid = handle.get('pid')
        if not pid:
            return False
        with self._lock:
            child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            with self._lock:
                self._children.pop(pid, None)
            return False
        return processMatches(pid, handle.get('procStart'))

    def stop(self, handle):
        """End the server, its kernels and its sandbox, then remove its files.

        SIGTERM to the server's process group lets jupyter_server shut its
        kernels down; whatever is left after ``stop_grace`` is killed, the
        sandbox's PID namespace by killing its init.
        """
        pid = handle.get('pid')
        if pid and self.is_alive(handle):
            # A sandbox's init, or an unsandboxed server's kernels (each in a session of its own).
            children = children_of(pid)
            self._signal_group(pid, signal.SIGTERM)
            if not self._wait_gone(handle, children, self.config['stop_grace']):
                self._signal_group(pid, signal.SIGKILL)
                for child_pid, child_start in children:
                    if processMatches(child_pid, child_start):
                        self._signal_group(child_pid, signal.SIGKILL)
                self._wait_gone(handle, children, 5.0)
        with self._lock:
            child = self._children.pop(pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self._remove_leftovers(handle['notebookId'], handle)

    def list_running(self):
        """Handles from the marker files whose servers still run; dead ones are cleared."""
        running = []
        try:
            names = sorted(os.listdir(self.work_root))
        except FileNotFoundError:
            return running
        for name in names:
            if not name.endswith('.json'):
                continue
            marker = self._read_marker(os.path.join(self.work_root, name))
            if marker is None or marker.get('backend') != self.name:
                continue
            handle = marker['handle']
            if self.is_alive(handle):
                running.append(handle)
            else:
                self._remove_leftovers(handle['notebookId'], handle)
        return running

    def logs_tail(self, handle, lines=40):
        """The last lines of the server's log file."""
        log_path = os.path.join(self._work_dir(handle['notebookId']), 'server.log')
        try:
            with open(log_path, 'rb') as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                text = log.read().decode('utf-8', 'replace')
        except OSError:
            return ''
        return '\n'.join(text.splitlines()[-lines:])

    # -- batch runs ----------------------------------------------------------------

    def _run_dir(self, run_id):
        return os.path.join(self.work_root, RUNS_DIR, run_id)

    def _tool_python(self, tool):
        """The Python (bin directory) that runs a tool's command, and the paths it needs."""
        env = tool_part(tool, 'process', 'env')
        if not env:
            python = self._command()[0]
            return os.path.dirname(python) or '/usr/bin', sandbox.python_paths(python)
        env = os.path.abspath(env)
        if not os.path.isdir(env):
            raise LaunchError(
                f'The environment {env} of tool {tool.get("id", "?")} is not on this server; '
                'build it with scripts/build-tools.sh.'
            )
        # As for a notebook of the tool: its environment, not the Python running Girder.
        return os.path.join(env, 'bin'), sandbox.env_paths(env)

    def tool_identity(self, tool):
        """The environment that runs the tool's commands, and when its packages last changed."""
        python_bin, _ = self._tool_python(tool)
        env = os.path.dirname(python_bin)
        stamps = []
        for path in [os.path.join(env, 'pyvenv.cfg')] + sorted(
            glob.glob(os.path.join(env, 'lib', 'python3*', 'site-packages'))
        ):
            try:
                stamps.append(str(os.stat(path).st_mtime_ns))
            except OSError:
                stamps.append('-')
        return f'process:{os.path.realpath(env)}:{",".join(stamps)}'

    def start_run(self, spec):
        """Start the batch run ``spec`` in its sandbox; returns its run handle.

        Handle: ``{'backend': 'process', 'runId', 'pid', 'procStart', 'runDir',
        'started', 'timeLimit', 'sandboxed', 'labels'}``; ``pid`` is the wrapper's.
        """
        spec.check_paths()
        sandboxed = self.sandboxed()
        run_dir = self._new_run_dir(spec.run_id)
        home = os.path.join(run_dir, 'home')
        try:
            args, env = self._run_args(spec, run_dir, sandboxed)
            with open(os.path.join(run_dir, 'run.log'), 'ab') as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env=env,
                    close_fds=True,
                    start_new_session=True,
                )
        except (OSError, LaunchError) as error:
            _remove_run_dir(run_dir)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(f'Could not start run {spec.run_id}: {error}') from None
        with self._lock:
            self._children[process.pid] = process
        handle = {
            'backend': self.name,
            'runId': spec.run_id,
            'pid': process.pid,
            'procStart': processStart(process.pid),
            'runDir': run_dir,
            'started': _utcnow_iso(),
            'timeLimit': spec.time_limit,
            'sandboxed': sandboxed,
            'labels': spec.labels,
        }
        _write_json(os.path.join(run_dir, 'handle.json'), handle)
        return handle

    def _new_run_dir(self, run_id):
        """Create the run's working directory (with its empty ``home/``); returns its path."""
        run_dir = self._run_dir(run_id)
        try:
            os.makedirs(self.work_root, mode=0o700, exist_ok=True)
            os.makedirs(os.path.dirname(run_dir), mode=0o700, exist_ok=True)
            os.makedirs(run_dir, mode=0o700)
            open(os.path.join(run_dir, _RUN_SENTINEL), 'w').close()
            os.makedirs(os.path.join(run_dir, 'home'), mode=0o700)
        except FileExistsError:
            raise LaunchError(f'Run {run_id} has been started already.') from None
        except OSError as error:
            raise LaunchError(f'Could not create the run working directory: {error}') from None
        return run_dir

    def _run_args(self, spec, run_dir, sandboxed):
        """The run's command line (its exit-status wrapper, the sandbox, the command) and
        environment; shared with backends that run it elsewhere (a Slurm job)."""
        home = os.path.join(run_dir, 'home')
        python_bin, paths = self._tool_python(spec.tool)
        paths += [p for p in self.config['sandbox_ro_paths'] if p not in paths]
        data_dir = RUN_DATASET_DIR if sandboxed else spec.data_path
        results_dir = RUN_RESULTS_DIR if sandboxed else spec.results_path
        env = sandbox.sandbox_env(
            python_bin,
            sandbox.RUN_HOME if sandboxed else home,
            '/tmp' if sandboxed else os.path.join(run_dir, 'runtime'),
            {**self.config['env'], **spec.env},
        )
        env.pop('JUPYTER_RUNTIME_DIR', None)
        env.update({'DATASET_DIR': data_dir, 'RESULTS_DIR': results_dir})
        if sandboxed:
            bwrap = shutil.which(self.config['bwrap']) or self.config['bwrap']
            command = sandbox.run_bwrap_args(
                home,
                spec.data_path,
                spec.results_path,
                data_dir,
                results_dir,
                paths,
                env,
                bwrap=bwrap,
            ) + list(spec.argv)
        else:
            command = list(spec.argv)
        args = ['/bin/sh', '-c', _RUN_WRAPPER, os.path.join(run_dir, 'exit'), *command]
        return args, env

    def run_state(self, handle):
        """``('running', None, None)``, or ``('exited', code, reason)`` once it ended.

        A run past its time limit is ended here, and its reason says so.
        """
        run_dir = handle['runDir']
        if self.is_alive(handle):
            limit = int(handle.get('timeLimit') or 0)
            started = handle.get('procStart')
            if not limit or started is None or _seconds_since(started) <= limit:
                return 'running', None, None
            self._end_run(handle, f'ran longer than the limit of {limit} s')
        code = _read_exit(run_dir)
        reason = _read_text(os.path.join(run_dir, 'ended'))
        if reason:
            return 'exited', code, reason
        if code is None:
            return 'exited', None, 'the run ended without an exit status (it was killed)'
        return 'exited', code, None if code == 0 else f'the command exited with code {code}'

    def run_log(self, handle, offset=0):
        """Bytes of ``run.log`` from ``offset`` (at most 1 MiB per call)."""
        try:
            with open(os.path.join(handle['runDir'], 'run.log'), 'rb') as log:
                log.seek(max(0, int(offset)))
                return log.read(_LOG_CHUNK)
        except OSError:
            return b''

    def cancel_run(self, handle):
        """End the run; its reason becomes 'cancelled' (unless it had ended already)."""
        if self.is_alive(handle):
            self._end_run(handle, 'cancelled')

    def cleanup_run(self, handle):
        """End the run if it still runs, then remove its working directory and log."""
        if self.is_alive(handle):
            self._end_run(handle, 'cancelled')
        with self._lock:
            child = self._children.pop(handle.get('pid'), None)
        if child is not None:
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        run_dir = handle.get('runDir') or ''
        _kill_naming(run_dir)
        if os.path.basename(run_dir) == handle.get('runId') and os.path.dirname(
            run_dir
        ) == os.path.join(self.work_root, RUNS_DIR):
            _remove_run_dir(run_dir)

    def _end_run(self, handle, reason):
        """Record why the run ends, then end it: SIGTERM, and SIGKILL after ``stop_grace``.

        Killing the wrapper is enough for a sandbox that has started
        (``--die-with-parent``); the process group is signalled too, for an
        unsandboxed run, and whatever still names the run's directory on its
        command line (a bwrap caught half-way through its start) is killed last.
        """
        ended = os.path.join(handle['runDir'], 'ended')
        if not os.path.exists(ended):
            try:
                _write_text(ended, reason)
            except OSError:
                pass
        pid = handle['pid']
        descendants = _descendants(pid)
        self._signal_group(pid, signal.SIGTERM)
        if not self._wait_gone(handle, descendants, self.config['stop_grace']):
            self._signal_group(pid, signal.SIGKILL)
            for child_pid, child_start in descendants + _descendants(pid):
                if processMatches(child_pid, child_start):
                    try:
                        os.kill(child_pid, signal.SIGKILL)
                    except OSError:
                        pass
            self._wait_gone(handle, descendants, 5.0)
        _kill_naming(handle['runDir'])

    # -- helpers ---------------------------------------------------------------

    def _prepare(self, spec, work_dir, sandboxed, bind_later):
        """Lay out the working directory; returns (command line, environment, cwd)."""
        home = os.path.join(work_dir, 'home')
        run = os.path.join(work_dir, 'run')
        etc = os.path.join(work_dir, 'etc')
        for path in (home, run, etc):
            os.makedirs(path, mode=0o700)
        # The modules the config file loads, copied so that the sandbox needs no view of
        # this package and a running server keeps the version it started with.
        for module in (readonly, identity, unixclose):
            shutil.copyfile(module.__file__, os.path.join(etc, os.path.basename(module.__file__)))
        command = self._command(spec.tool)
        python_bin = os.path.dirname(command[0]) or '/usr/bin'
        if sandboxed:
            inside = {'home': sandbox.HOME, 'run': sandbox.RUN_DIR, 'etc': sandbox.ETC_DIR}
        else:
            inside = {'home': home, 'run': run, 'etc': etc}
        config_file = os.path.join(etc, 'jupyter_server_config.py')
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, 'w') as config:
            config.write(self._server_config(spec, inside['etc']))
        env = sandbox.sandbox_env(
            python_bin,
            inside['home'],
            os.path.join(inside['run'], 'runtime'),
            self.config['env'],
        )
        server_args = self._server_args(spec, inside, sandboxed)
        if not sandboxed:
            data = spec.data_path
            os.symlink(data, os.path.join(home, spec.data_name))
            return server_args, env, home
        data = spec.data_path
        if bind_later:
            # An empty shared mount point, shown as the dataset until bind_data() mounts
            # the real one onto it.
            data = os.path.join(work_dir, 'data')
            os.makedirs(data, mode=0o700)
            sandbox.make_shared_mount_point(data)
        os.makedirs(os.path.join(home, spec.data_name))  # the mount point inside home
        if tool_part(spec.tool, 'process', 'env'):
            # A tool's environment, not the Python running Girder.
            paths = sandbox.env_paths(tool_part(spec.tool, 'process', 'env'))
        else:
            paths = sandbox.python_paths(command[0])
        paths += [p for p in self.config['sandbox_ro_paths'] if p not in paths]
        args = sandbox.bwrap_args(
            work_dir, data, spec.data_name, paths, env, bwrap=self.config['bwrap']
        )
        # bwrap itself gets the clean environment too: its own processes (the
        # sandbox's init among them) would otherwise show Girder's in /proc.
        return args + server_args, env, work_dir

    def _server_config(self, spec, etc_dir):
        # The read-only contents manager is loaded by file path rather than by
        # module name: the server's Python need not be able to import this
        # package, and a PYTHONPATH entry would leak into the kernels. The token
        # is here, in a 0600 file, rather than in the environment that kernels inherit.
        return (
            f'# Written by the datadns process launcher for notebook {spec.notebook_id}.\n'
            'import importlib.util\n'
            'import sys\n'
            '\n'
            '\n'
            'def _load(name, path):\n'
            '    spec = importlib.util.spec_from_file_location(name, path)\n'
            '    module = importlib.util.module_from_spec(spec)\n'
            '    sys.modules[name] = module\n'
            '    spec.loader.exec_module(module)\n'
            '    return module\n'
            '\n'
            '\n'
            f"_readonly = _load('datadns_readonly', {os.path.join(etc_dir, 'readonly.py')!r})\n"
            'c.ServerApp.contents_manager_class = _readonly.ReadOnlyDataContentsManager\n'
            f'c.ReadOnlyDataContentsManager.read_only_paths = [{spec.data_name!r}]\n'
            f"_identity = _load('datadns_identity', {os.path.join(etc_dir, 'identity.py')!r})\n"
            'c.ServerApp.identity_provider_class = _identity.FrontDoorCookieIdentityProvider\n'
            f'c.IdentityProvider.token = {spec.token!r}\n'
            '# Reached only through its Unix socket (by the front door, whose Host header\n'
            "# is the site's public name), so no Host check is needed.\n"
            'c.ServerApp.allow_remote_access = True\n'
            '# The front door closes each connection, not the server (see unixclose.py).\n'
            f"_load('datadns_unixclose', {os.path.join(etc_dir, 'unixclose.py')!r}).install()\n"
        ) + ''.join(line + '\n' for line in tool_config_lines(spec.tool))

    def _server_args(self, spec, inside, sandboxed):
        args = self._command(spec.tool) + [
            '--no-browser',
            f'--config={os.path.join(inside["etc"], "jupyter_server_config.py")}',
            f'--ServerApp.sock={os.path.join(inside["run"], sandbox.SOCKET_NAME)}',
            '--ServerApp.sock_mode=0600',
            f'--ServerApp.base_url={spec.base_url}',
            f'--ServerApp.root_dir={inside["home"]}',
            '--ServerApp.terminals_enabled=False',
            *self.default_url_args(spec.tool),
        ]
        if not sandboxed and hasattr(os, 'geteuid') and os.geteuid() == 0:
            args.append('--allow-root')
        return args + [str(arg) for arg in self.config['extra_args']]

    def _signal_group(self, pid, signum):
        try:
            # Started with start_new_session, the server leads its own group.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_gone(self, handle, children, timeout):
        deadline = time.monotonic() + timeout
        while self.is_alive(handle) or any(processMatches(*child) for child in children):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def _write_marker(self, handle, spec):
        marker = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'pid': handle['pid'],
            'socket': handle['socket'],
            'started': handle['started'],
            'dataPath': spec.data_path,
            'dataName': spec.data_name,
            'labels': spec.labels,
            'handle': handle,
        }
        path = self._marker_path(spec.notebook_id)
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as out:
            json.dump(marker, out, indent=1)
        # Atomic, so that a concurrent list_running() never reads half a marker.
        os.replace(tmp, path)

    @staticmethod
    def _read_marker(path):
        try:
            with open(path) as marker:
                data = json.load(marker)
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) and isinstance(data.get('handle'), dict) else None

    def _remove_leftovers(self, notebook_id, handle=None):
        """Remove the marker and working directory of a notebook that no longer runs."""
        work_dirs = {self._work_dir(notebook_id)}
        if handle and handle.get('workDir'):
            work_dirs.add(handle['workDir'])
        for work_dir in work_dirs:
            # Only directories we made, and never through a symlink: the
            # dataset hangs off home/ as a symlink and must survive this.
            if os.path.basename(work_dir) != notebook_id or os.path.islink(work_dir):
                continue
            # Nor through a mount: a pooled server's dataset is mounted in data/. Unmounting
            # deletes nothing, so it is done even when the sentinel is gone already.
            if not sandbox.unmount_under(work_dir):
                logger.error('Not removing %s: a file system is still mounted in it', work_dir)
                continue
            if not os.path.exists(os.path.join(work_dir, _SENTINEL)):
                continue
            shutil.rmtree(work_dir, ignore_errors=True)
        try:
            os.unlink(self._marker_path(notebook_id))
        except FileNotFoundError:
            pass


def _descendants(pid):
    """(pid, start time) of every process below ``pid``."""
    found = []
    try:
        for child in psutil.Process(pid).children(recursive=True):
            found.append((child.pid, startTicks(child)))
    except psutil.Error:
        pass
    return found


def _kill_naming(run_dir):
    """SIGKILL every process whose command line names ``run_dir`` (the run's bwrap)."""
    if not run_dir:
        return
    marker = os.path.join(run_dir, 'home')
    for process in psutil.process_iter(['cmdline']):
        try:
            if marker in (process.info['cmdline'] or []):
                process.kill()
        except psutil.Error:
            pass


def _seconds_since(ticks):
    """Seconds since a moment given in clock ticks since boot (as :func:`processStart`)."""
    return time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf('SC_CLK_TCK')


def _write_text(path, text):
    tmp = f'{path}.{os.getpid()}.tmp'
    with open(tmp, 'w') as out:
        out.write(text)
    os.replace(tmp, path)


def _write_json(path, data):
    _write_text(path, json.dumps(data, indent=1))


def _read_text(path):
    try:
        with open(path) as source:
            return source.read().strip() or None
    except OSError:
        return None


def _read_exit(run_dir):
    """The exit status the wrapper recorded, or None."""
    text = _read_text(os.path.join(run_dir, 'exit'))
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _remove_run_dir(run_dir):
    """Remove a run's working directory this launcher made (it holds the sentinel)."""
    if os.path.islink(run_dir) or not os.path.exists(os.path.join(run_dir, _RUN_SENTINEL)):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
