"""The process backend: one ``jupyter_server`` subprocess per notebook.

The embedded default, needing nothing but jupyter_server on this machine. Each
notebook gets a working directory ``<work_root>/<notebook_id>/``::

    home/                      the notebook's file tree (root_dir), writable
    home/<data_name> -> data   symlink to the dataset, read-only through Jupyter
    jupyter_server_config.py   installs the read-only contents manager
    runtime/                   JUPYTER_RUNTIME_DIR
    server.log                 the server's stdout and stderr

and a marker ``<work_root>/<notebook_id>.json`` holding its handle, by which a
restarted Girder finds the notebooks that still run.

The dataset is protected from writes through Jupyter's contents API only: code
run in a kernel runs as the server's user, so sites that need more run the
docker backend, whose mount the kernel cannot write either.
"""

import datetime
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from . import readonly
from .base import Launcher, LaunchError, Option

# A file in every working directory we create: nothing else is ever deleted.
_SENTINEL = '.datadns-notebook'


def _utcnow_iso():
    return datetime.datetime.now(datetime.timezone.utc).isoformat()


def _proc_stat(pid):
    """(state, parent pid, start time in clock ticks) from /proc, or None."""
    try:
        with open(f'/proc/{pid}/stat', 'rb') as stat:
            text = stat.read().decode('ascii', 'replace')
    except OSError:
        return None
    # The command name may hold spaces and parentheses; fields resume after the last ')'.
    fields = text[text.rfind(')') + 2 :].split()
    return fields[0], int(fields[1]), int(fields[19])


def _children_of(pid):
    """(pid, start time) of the direct children of ``pid``, found through /proc."""
    children = []
    try:
        entries = os.listdir('/proc')
    except OSError:
        return children
    for entry in entries:
        if entry.isdigit():
            stat = _proc_stat(int(entry))
            if stat and stat[1] == pid:
                children.append((int(entry), stat[2]))
    return children


def _process_matches(pid, proc_start):
    """Whether ``pid`` is a live (not zombie) process that started at ``proc_start``.

    The start time guards against the pid having been reused by another process
    since the handle was written, e.g. across a reboot.
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    stat = _proc_stat(pid)
    if stat is None:
        # No /proc (not Linux): the pid's existence is all we can know.
        return True
    return stat[0] != 'Z' and (proc_start is None or stat[2] == proc_start)


def _free_port(ip):
    """A TCP port that is free on ``ip`` right now."""
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip if ip not in ('0.0.0.0', '::') else '', 0))
        return sock.getsockname()[1]


class ProcessLauncher(Launcher):
    """Runs each notebook as a ``jupyter_server`` subprocess on a port of its own.

    The server starts in a new session so that it outlives a restart of the
    process that launched it; stopping kills its whole process group and its
    kernels.
    """

    name = 'process'
    options = {
        'command': Option(
            [sys.executable, '-m', 'jupyter_server'],
            'Command that runs jupyter_server (a list, or a string split like a shell would); '
            'the launcher appends the server options.',
        ),
        'ip': Option('127.0.0.1', 'Address the notebook servers listen on.'),
        'work_root': Option(
            os.path.join(tempfile.gettempdir(), 'datadns-notebooks'),
            'Directory holding one working directory and one marker file per notebook.',
        ),
        'extra_args': Option([], 'Further command-line options for jupyter_server.'),
        'env': Option({}, 'Further environment variables for the notebook servers.'),
        'stop_grace': Option(
            5.0, 'Seconds a server has to shut down after SIGTERM before it is killed.'
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

    def _command(self):
        command = self.config['command']
        return shlex.split(command) if isinstance(command, str) else list(command)

    # -- the interface ---------------------------------------------------------

    def start(self, spec):
        """Start ``jupyter_server`` for ``spec``; returns the handle.

        Handle: ``{'backend': 'process', 'notebookId', 'pid', 'procStart', 'host',
        'port', 'baseUrl', 'workDir', 'started'}``.
        """
        spec.check_data_path()
        marker = self._read_marker(self._marker_path(spec.notebook_id))
        if marker and self.is_alive(marker['handle']):
            raise LaunchError(f'Notebook {spec.notebook_id} is already running.')
        self._remove_leftovers(spec.notebook_id, marker and marker['handle'])

        work_dir = self._work_dir(spec.notebook_id)
        home = os.path.join(work_dir, 'home')
        runtime = os.path.join(work_dir, 'runtime')
        ip = self.config['ip']
        try:
            os.makedirs(self.work_root, mode=0o700, exist_ok=True)
            os.makedirs(work_dir, mode=0o700)
            open(os.path.join(work_dir, _SENTINEL), 'w').close()
        except FileExistsError:
            # Another start of the same notebook is under way, or the directory is not ours.
            raise LaunchError(f'Notebook {spec.notebook_id} is already being started.') from None
        except OSError as error:
            raise LaunchError(f'Could not create the notebook working directory: {error}') from None
        try:
            os.makedirs(home, mode=0o700)
            os.makedirs(runtime, mode=0o700)
            os.symlink(spec.data_path, os.path.join(home, spec.data_name))
            config_file = os.path.join(work_dir, 'jupyter_server_config.py')
            with open(config_file, 'w') as config:
                config.write(self._server_config(spec))
            port = _free_port(ip)
            args = self._server_args(spec, config_file, ip, port, home)
            log_path = os.path.join(work_dir, 'server.log')
            with open(log_path, 'ab') as log:
                process = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=home,
                    env=self._server_env(spec, runtime),
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
        stat = _proc_stat(process.pid)
        handle = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'pid': process.pid,
            'procStart': stat[2] if stat else None,
            'host': ip,
            'port': port,
            'baseUrl': spec.base_url,
            'workDir': work_dir,
            'started': _utcnow_iso(),
            'labels': spec.labels,
        }
        self._write_marker(handle, spec)
        return handle

    def is_alive(self, handle):
        """Whether the server process of ``handle`` still runs."""
        pid = handle.get('pid')
        if not pid:
            return False
        with self._lock:
            child = self._children.get(pid)
        if child is not None and child.poll() is not None:
            with self._lock:
                self._children.pop(pid, None)
            return False
        return _process_matches(pid, handle.get('procStart'))

    def stop(self, handle):
        """Terminate the server's process group and its kernels, then remove its files."""
        pid = handle.get('pid')
        if pid and self.is_alive(handle):
            kernels = _children_of(pid)
            self._signal_group(pid, signal.SIGTERM)
            if not self._wait_gone(handle, self.config['stop_grace']):
                self._signal_group(pid, signal.SIGKILL)
                self._wait_gone(handle, 5.0)
            # jupyter_server shuts its kernels down on SIGTERM; any left (each
            # kernel runs in a session of its own) are killed here.
            for kernel_pid, kernel_start in kernels:
                if _process_matches(kernel_pid, kernel_start):
                    self._signal_group(kernel_pid, signal.SIGKILL)
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

    # -- helpers ---------------------------------------------------------------

    def _server_config(self, spec):
        # The read-only contents manager is loaded by file path rather than by
        # module name: the server's Python need not be able to import this
        # package, and a PYTHONPATH entry would leak into the kernels.
        return (
            f'# Written by the datadns process launcher for notebook {spec.notebook_id}.\n'
            'import importlib.util\n'
            'import sys\n'
            '\n'
            '_spec = importlib.util.spec_from_file_location(\n'
            f"    'datadns_readonly', {os.path.abspath(readonly.__file__)!r}\n"
            ')\n'
            '_module = importlib.util.module_from_spec(_spec)\n'
            "sys.modules['datadns_readonly'] = _module\n"
            '_spec.loader.exec_module(_module)\n'
            'c.ServerApp.contents_manager_class = _module.ReadOnlyDataContentsManager\n'
            f'c.ReadOnlyDataContentsManager.read_only_paths = [{spec.data_name!r}]\n'
        )

    def _server_args(self, spec, config_file, ip, port, home):
        args = self._command() + [
            '--no-browser',
            f'--config={config_file}',
            f'--ServerApp.ip={ip}',
            f'--ServerApp.port={port}',
            # Fail rather than silently serve on another port than the handle says.
            '--ServerApp.port_retries=0',
            f'--ServerApp.base_url={spec.base_url}',
            f'--ServerApp.root_dir={home}',
            '--ServerApp.terminals_enabled=False',
            *self.default_url_args(),
        ]
        if hasattr(os, 'geteuid') and os.geteuid() == 0:
            args.append('--allow-root')
        return args + [str(arg) for arg in self.config['extra_args']]

    def _server_env(self, spec, runtime):
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in self.config['env'].items()})
        env.update(
            {
                # The token goes by environment, never on a command line that `ps` shows.
                'JUPYTER_TOKEN': spec.token,
                'JUPYTER_RUNTIME_DIR': runtime,
                'PYTHONUNBUFFERED': '1',
            }
        )
        return env

    def _signal_group(self, pid, signum):
        try:
            # Started with start_new_session, the server leads its own group.
            if os.getpgid(pid) == pid:
                os.killpg(pid, signum)
            else:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _wait_gone(self, handle, timeout):
        deadline = time.monotonic() + timeout
        while self.is_alive(handle):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _write_marker(self, handle, spec):
        marker = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'pid': handle['pid'],
            'port': handle['port'],
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
            if not os.path.exists(os.path.join(work_dir, _SENTINEL)):
                continue
            shutil.rmtree(work_dir, ignore_errors=True)
        try:
            os.unlink(self._marker_path(notebook_id))
        except FileNotFoundError:
            pass
