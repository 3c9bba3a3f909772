"""The docker backend: one container per notebook, through the Docker Engine API.

Talks to the engine with the ``docker`` SDK only (never a shell), so it works
against Docker Engine and against Podman's Docker-compatible service alike
(``scripts/podman-service.sh``). A container runs the notebook image (the
``image`` option) or, for a launch with a tool, the tool's ``docker.image``
(``scripts/build-tools.sh`` builds the default tools' images). Each is a sandbox:

- no network (``network_mode`` ``none``: a loopback interface of its own and
  nothing else), so nothing in it can reach Girder, its database or any other
  service of the host or the site. ``jupyter_server`` listens on a Unix socket
  (``--ServerApp.sock``) in a per-notebook directory of this machine that is
  bind-mounted into the container; the handle carries that socket's path, and
  Girder and the front door reach the server through it;
- a non-root user (default ``65534:65534``, *nobody*), every capability dropped,
  ``no-new-privileges``, a read-only root file system, and limits on memory,
  CPU and the number of processes;
- a writable scratch home (``home``, default ``/home/jovyan``; a tmpfs, gone
  when the notebook stops) with the dataset bind-mounted read-only at
  ``<home>/<data_name>``;
- a configuration directory mounted read-only at ``/etc/datadns``: the server's
  configuration file, which holds the Jupyter token (never on the command line
  nor in the container's environment, which holds only ``HOME``, ``LANG``,
  ``PATH`` and ``PYTHONUNBUFFERED``), and copies of this package's modules that
  it loads by path: the read-only contents manager (``readonly.py``), so that
  Jupyter answers 403 rather than an I/O error, the identity that accepts
  the front door's cookie (``identity.py``; the image's jupyter_server is 1.x),
  and ``unixclose.py``, which leaves closing each connection to the front door;
- the labels ``datadns.managed=1``, ``datadns.notebook=<id>`` and
  ``datadns.base_url=<base_url>``, by which ``list_running()`` finds it again.

The per-notebook directory ``<run_root>/<notebook_id>.<random>/`` holds::

    .datadns-notebook               sentinel: only directories holding it are removed
    etc/jupyter_server_config.py    the server's configuration, with the token
    etc/identity.py, readonly.py,   copies of the modules that configuration loads
    etc/unixclose.py
    sock/nb.sock                    the server's socket

``etc/`` is the container's ``/etc/datadns`` (read-only), ``sock/`` its ``/run/datadns``.

A batch run (:meth:`DockerLauncher.start_run`) is a container of the tool's image
(``tool['docker']['image']``, else ``image``) under the same rules: no network,
the same user, capabilities, limits and read-only root, the dataset bind-mounted
read-only at ``/data`` and the results directory writable at ``/results``
(``DATASET_DIR`` and ``RESULTS_DIR``). Ending a run kills its container (its
command is PID 1 there, which a SIGTERM would not end).
It is labelled ``datadns.run=<id>`` and kept after it exits, so that its exit
code (from the Docker API) and its log outlive it until :meth:`cleanup_run`;
``<run_root>/.runs/<run_id>/ended`` records why it was ended early.

``sock/`` is writable by the container until the server answers; then
:meth:`DockerLauncher.wait_ready` makes it read-only for the container, so that
code in a kernel cannot put a symlink (to another socket of this machine, say
the container engine's) where Girder and the front door connect.

Paths (the dataset, ``run_root``) are paths on the engine's machine: this
backend expects the engine to run beside Girder.
"""

import collections
import datetime
import os
import secrets
import shutil
import stat
import tempfile
import threading
import time

try:
    import docker as _sdk
except ImportError:  # the package, and the process backend, work without the SDK
    _sdk = None

from . import identity, readonly, unixclose
from .base import (
    RUN_DATASET_DIR,
    RUN_RESULTS_DIR,
    Launcher,
    LaunchError,
    Option,
    parse_utc,
    tool_config_lines,
    tool_part,
)

MANAGED_LABEL = 'datadns.managed'
#: The label of a batch run's container (never ``datadns.managed``: list_running()
#: removes exited notebook containers, and a run's exit status must outlive it).
RUN_LABEL = 'datadns.run'
RUN_NAME_PREFIX = 'datadns-run-'
#: Where batch runs keep their directories, under run_root (a dot name, with no sentinel:
#: the clean-up of orphan notebook directories leaves it alone).
RUNS_DIR = '.runs'
_RUN_SENTINEL = '.datadns-run'
#: Most bytes that one run_log() call returns.
_LOG_CHUNK = 1 << 20
#: Seconds a running run's log, read whole from the engine, is reused by run_log().
_LOG_FRESH = 0.2
#: Seconds after a run's container exited before its log counts as complete: the engine
#: may log the last output a moment after the container's status says it exited.
_LOG_SETTLE = 1.0
#: Run logs kept in memory (the most recently read).
_LOG_CACHE_SIZE = 8
NOTEBOOK_LABEL = 'datadns.notebook'
BASE_URL_LABEL = 'datadns.base_url'
TOOL_LABEL = 'datadns.tool'
#: Where the per-notebook configuration directory appears inside the container.
ETC_DIR = '/etc/datadns'
#: Where the per-notebook socket directory appears inside the container.
SOCKET_DIR = '/run/datadns'
SOCKET_NAME = 'nb.sock'
_CONFIG_NAME = 'jupyter_server_config.py'
# A file in every per-notebook directory we create: nothing else is ever deleted.
_SENTINEL = '.datadns-notebook'
# Seconds after which a per-notebook directory that no container uses is removed.
_ORPHAN_AGE = 600
# sun_path is 108 bytes on Linux, the terminating NUL included.
_MAX_SOCKET_PATH = 107


def _default_user():
    return os.environ.get('DATADNS_DOCKER_USER') or '65534:65534'


def _default_run_root():
    return os.environ.get('DATADNS_DOCKER_RUN_ROOT') or os.path.join(
        tempfile.gettempdir(), 'datadns-docker'
    )


def _docker():
    """The docker SDK, or a LaunchError saying how to get it."""
    if _sdk is None:
        raise LaunchError(
            'The docker launcher needs the "docker" Python package (pip install docker).'
        )
    return _sdk


def _explain(error):
    """A short, human message from a docker SDK or connection error."""
    return str(getattr(error, 'explanation', None) or error).strip()


class DockerLauncher(Launcher):
    """Runs each notebook in a sandboxed container of the notebook image, data read-only."""

    name = 'docker'
    options = {
        'engine_url': Option(
            None,
            'Docker Engine API URL, e.g. unix:///run/datadns/podman.sock; '
            'default: from the environment (DOCKER_HOST), as docker.from_env().',
        ),
        'image': Option('localhost/datadns-notebook:latest', 'The notebook image.'),
        'command': Option(
            ['python3', '-m', 'jupyter_server'],
            'Command that runs jupyter_server in the image; the launcher appends the '
            'server options.',
        ),
        'extra_args': Option([], 'Further command-line options for jupyter_server.'),
        'home': Option(
            '/home/jovyan',
            "The notebook's writable scratch home and file tree inside the container; the "
            'dataset appears in it as <home>/<data_name>.',
        ),
        'user': Option(
            None,
            'User (uid:gid) that the server and its kernels run as; never root, nor the '
            "user Girder runs as on this machine (the container could then undo its socket's "
            'protection). It must be able to read the datasets. Default: '
            '$DATADNS_DOCKER_USER, else 65534:65534 (nobody).',
        ),
        'network': Option(
            'none',
            "The containers' network. 'none' gives a notebook no network at all (a loopback "
            'of its own), which is what keeps it from Girder, its database and every other '
            "service; with any other network that is the network's job.",
        ),
        'mem_limit': Option('1g', 'Memory limit of each notebook container (e.g. 1g).'),
        'cpus': Option(
            1.0, 'CPU limit of each notebook container, in CPUs (e.g. 1.5); 0 or None: none.'
        ),
        'pids_limit': Option(
            512,
            'Most processes and threads one notebook container may hold (server, kernels and '
            'their threads); it bounds a fork bomb. 0 or None: no limit.',
        ),
        'scratch_size': Option(
            None,
            'Size of the scratch home and of /tmp (each a tmpfs, counted against the memory '
            'limit), e.g. 512m; default: the memory limit.',
        ),
        'run_root': Option(
            None,
            "Directory on this machine (the engine's too) holding each notebook's socket "
            "directory and token file; made private to Girder's user (0700). Default: "
            '$DATADNS_DOCKER_RUN_ROOT, else <tmp>/datadns-docker.',
        ),
        'labels': Option({}, 'Further labels put on every notebook container.'),
        'name_prefix': Option('datadns-nb-', 'Container names are this prefix + notebook id.'),
        'read_only_contents': Option(
            True,
            "Mount and install this package's read-only contents manager, so that writes "
            'to the dataset get a clear 403 (the mount is read-only either way).',
        ),
        'contents_manager': Option(
            'ReadOnlyDataSyncContentsManager',
            'Which read-only contents manager of readonly.py to install: the sync one '
            "suits the image's nbclassic 0.3 UI; ReadOnlyDataContentsManager is the async one.",
        ),
        'run_kwargs': Option(
            {},
            'Further keyword arguments for the docker SDK containers.create(); they override '
            "the launcher's own, sandbox options included.",
        ),
        'stop_grace': Option(
            5, 'Seconds a container has to stop after SIGTERM before it is killed.'
        ),
        'api_timeout': Option(60, 'Seconds allowed for each Docker API call.'),
        'log_wait': Option(
            3.0,
            'Seconds logs_tail() waits for the output of a container that stopped with none '
            'logged yet (the engine may log it a moment after the exit).',
        ),
    }

    def __init__(self, **config):
        super().__init__(**config)
        user = str(self.config['user'] or _default_user()).strip()
        if not user or user.split(':')[0] in ('0', 'root'):
            raise ValueError('The docker launcher runs notebooks as a non-root user: set "user".')
        self.user = user
        self.run_root = os.path.abspath(self.config['run_root'] or _default_run_root())
        self._client = None
        # Run logs as last read: {container id: (monotonic time, ended, bytes)}. The engine
        # answers a log only whole, so a reader going through it piece by piece (or
        # following it) reuses one read: for ever once the run ended, briefly before.
        self._run_logs = collections.OrderedDict()
        self._run_logs_lock = threading.Lock()

    @property
    def client(self):
        """The docker SDK client, made on first use."""
        if self._client is None:
            docker = _docker()
            try:
                if self.config['engine_url']:
                    self._client = docker.DockerClient(
                        base_url=self.config['engine_url'],
                        version='auto',
                        timeout=self.config['api_timeout'],
                    )
                else:
                    self._client = docker.from_env(
                        version='auto', timeout=self.config['api_timeout']
                    )
            except (docker.errors.DockerException, OSError) as error:
                raise LaunchError(
                    f'The container engine is not reachable: {_explain(error)}'
                ) from None
        return self._client

    def _container(self, container_id):
        """The container, or None when it no longer exists."""
        docker = _docker()
        try:
            return self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None
        except (docker.errors.DockerException, OSError) as error:
            raise LaunchError(f'The container engine is not reachable: {_explain(error)}') from None

    # -- tools -----------------------------------------------------------------

    def tool_ready(self, tool):
        """Whether the tool's ``docker.image`` exists in the container engine."""
        try:
            docker = _docker()
        except LaunchError as error:
            return False, str(error)
        tool_id = (tool or {}).get('id', '?')
        image = tool_part(tool, 'docker', 'image')
        if not image:
            return False, (
                f'Tool {tool_id!r} has no image for the docker backend: set its "docker": '
                '{"image": "..."}.'
            )
        try:
            self.client.images.get(image)
        except docker.errors.ImageNotFound:
            return False, (
                f'The image {image} of tool {tool_id!r} is not in the container engine; build '
                f'it with scripts/build-tools.sh --docker {tool_id}.'
            )
        except (docker.errors.DockerException, OSError, LaunchError) as error:
            return False, f'The container engine is not reachable: {_explain(error)}'
        return True, ''

    # -- the interface ---------------------------------------------------------

    def start(self, spec):
        """Create and start the notebook's container; returns the handle.

        Handle: ``{'backend': 'docker', 'notebookId', 'containerId',
        'containerName', 'socket', 'runDir', 'baseUrl', 'started', 'labels'}``;
        ``socket`` is the server's Unix socket on this machine.
        """
        docker = _docker()
        spec.check_data_path()
        name = f'{self.config["name_prefix"]}{spec.notebook_id}'
        home = self.config['home'].rstrip('/') or '/'
        run_dir = self._make_run_dir(spec)
        labels = {
            **{str(k): str(v) for k, v in self.config['labels'].items()},
            **spec.labels,
            MANAGED_LABEL: '1',
            NOTEBOOK_LABEL: spec.notebook_id,
            BASE_URL_LABEL: spec.base_url,
        }
        if spec.tool:
            labels[TOOL_LABEL] = spec.tool['id']
        container = None
        try:
            # create() then start() rather than run(): run() would try to pull a
            # missing image from a registry, which a site without one cannot do.
            container = self._create(
                name, spec, self._create_kwargs(spec, name, home, run_dir, labels)
            )
            container.start()
        except docker.errors.ImageNotFound:
            _remove_run_dir(run_dir)
            if spec.tool:
                raise LaunchError(
                    f'The image {self.image(spec)} of tool {spec.tool["id"]!r} is not available '
                    f'to the container engine; build it with scripts/build-tools.sh --docker '
                    f'{spec.tool["id"]}.'
                ) from None
            raise LaunchError(
                f'The notebook image {self.config["image"]} is not available to the container '
                'engine; build it with scripts/build-notebook-image.sh.'
            ) from None
        except (docker.errors.DockerException, OSError, LaunchError) as error:
            if container is not None:
                self._remove(container)
            _remove_run_dir(run_dir)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(
                f'The container engine could not start the notebook: {_explain(error)}'
            ) from None
        handle = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'containerId': container.id,
            'containerName': name,
            'socket': os.path.join(run_dir, 'sock', SOCKET_NAME),
            'runDir': run_dir,
            'baseUrl': spec.base_url,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'labels': labels,
        }
        if spec.tool:
            handle['tool'] = spec.tool['id']
        return handle

    def image(self, spec):
        """The image that runs ``spec``: its tool's ``docker.image``, else the ``image`` option."""
        return tool_part(spec.tool, 'docker', 'image') or self.config['image']

    def wait_ready(self, handle, timeout=None, token=None, progress=None):
        """Wait until the server answers, then make its socket directory read-only to it.

        From then on nothing in the container (a kernel, say) can replace the socket
        by a symlink to another socket of this machine; until then no kernel runs,
        since starting one takes a request to the answering server.
        """
        super().wait_ready(handle, timeout=timeout, token=token, progress=progress)
        self._seal(handle)

    def is_alive(self, handle):
        """Whether the notebook's container exists and is running."""
        container = self._container(handle['containerId'])
        return container is not None and container.status == 'running'

    def stop(self, handle):
        """Stop and remove the container and its directory; a container already gone is fine."""
        container = self._container(handle['containerId'])
        if container is not None:
            self._remove(container)
        if handle.get('runDir'):
            _remove_run_dir(handle['runDir'])

    def list_running(self):
        """Handles of running containers labelled as ours; exited ones are removed."""
        docker = _docker()
        for attempt in range(5):
            try:
                containers = self.client.containers.list(
                    all=True, filters={'label': f'{MANAGED_LABEL}=1'}
                )
                break
            except docker.errors.NotFound:
                # The SDK inspects each listed container; one removed in between (another
                # process stopping its notebook) is no reason to fail: list again.
                if attempt == 4:
                    raise LaunchError('Containers kept vanishing while being listed.') from None
            except (docker.errors.DockerException, OSError) as error:
                raise LaunchError(
                    f'The container engine is not reachable: {_explain(error)}'
                ) from None
        self._remove_orphan_run_dirs(containers)
        running = []
        for container in containers:
            if container.status == 'running':
                handle = self._handle_of(container)
                if handle is not None:
                    running.append(handle)
            elif container.status in ('exited', 'dead'):
                # 'created' is left alone: another process may be starting it.
                self._remove(container)
        return running

    def logs_tail(self, handle, lines=40):
        """The last lines of the container's output.

        Podman's ``tail`` may return only the end of a log whose last line was
        written in two parts (``sys.exit("message")`` does that): a shorter tail
        than asked for means a short log, which is then read whole. And the output
        of a container that has just exited may reach the log a moment after its
        status says so: for a stopped container with no output yet, the log is
        read again until ``log_wait`` seconds have passed.
        """
        docker = _docker()
        deadline = time.monotonic() + float(self.config['log_wait'])
        try:
            container = self._container(handle['containerId'])
            while container is not None:
                text = container.logs(tail=lines).decode('utf-8', 'replace')
                if text.count('\n') < lines:
                    text = container.logs().decode('utf-8', 'replace')
                if text.strip() or container.status == 'running' or time.monotonic() >= deadline:
                    return '\n'.join(text.splitlines()[-lines:])
                time.sleep(0.05)
                container.reload()
        except (docker.errors.DockerException, OSError, LaunchError):
            pass
        return ''

    # -- batch runs ----------------------------------------------------------------

    def tool_identity(self, tool):
        """The id of the image that runs the tool's commands (its name if the engine lacks it)."""
        docker = _docker()
        image = tool_part(tool, 'docker', 'image') or self.config['image']
        try:
            return f'docker:{image}:{self.client.images.get(image).id}'
        except (docker.errors.DockerException, OSError, LaunchError):
            return f'docker:{image}'

    def start_run(self, spec):
        """Create and start the run's container; returns its run handle.

        Handle: ``{'backend': 'docker', 'runId', 'containerId', 'containerName',
        'runDir', 'started', 'startedEpoch', 'timeLimit', 'labels'}``.
        """
        docker = _docker()
        spec.check_paths()
        image = tool_part(spec.tool, 'docker', 'image') or self.config['image']
        run_dir = os.path.join(self.run_root, RUNS_DIR, spec.run_id)
        try:
            os.makedirs(self.run_root, mode=0o700, exist_ok=True)
            os.makedirs(os.path.dirname(run_dir), mode=0o700, exist_ok=True)
            os.mkdir(run_dir, mode=0o700)
            open(os.path.join(run_dir, _RUN_SENTINEL), 'w').close()
            self._open_results_to_container(spec.results_path)
        except FileExistsError:
            raise LaunchError(f'Run {spec.run_id} has been started already.') from None
        except OSError as error:
            _remove_run_dir(run_dir, _RUN_SENTINEL)
            raise LaunchError(f'Could not prepare the run directory: {error}') from None
        name = f'{RUN_NAME_PREFIX}{spec.run_id}'
        labels = {
            **{str(k): str(v) for k, v in self.config['labels'].items()},
            **spec.labels,
            RUN_LABEL: spec.run_id,
        }
        home = self.config['home'].rstrip('/') or '/'
        environment = {
            'HOME': home,
            'LANG': 'C.UTF-8',
            'PYTHONUNBUFFERED': '1',
            **spec.env,
            'DATASET_DIR': RUN_DATASET_DIR,
            'RESULTS_DIR': RUN_RESULTS_DIR,
        }
        kwargs = self._sandbox_kwargs(home)
        kwargs.update(
            {
                'name': name,
                'command': list(spec.argv),
                'entrypoint': [],
                'labels': labels,
                'environment': environment,
                'mounts': [
                    docker.types.Mount(
                        target=RUN_DATASET_DIR, source=spec.data_path, type='bind', read_only=True
                    ),
                    docker.types.Mount(
                        target=RUN_RESULTS_DIR,
                        source=spec.results_path,
                        type='bind',
                        read_only=False,
                    ),
                ],
            }
        )
        kwargs.update(self.config['run_kwargs'])
        container = None
        try:
            container = self.client.containers.create(image, **kwargs)
            container.start()
        except docker.errors.ImageNotFound:
            _remove_run_dir(run_dir, _RUN_SENTINEL)
            raise LaunchError(
                f'The image {image} is not available to the container engine; build it with '
                'scripts/build-tools.sh --docker (a tool) or scripts/build-notebook-image.sh.'
            ) from None
        except (docker.errors.DockerException, OSError) as error:
            if container is not None:
                self._remove_run_container(container)
            _remove_run_dir(run_dir, _RUN_SENTINEL)
            raise LaunchError(
                f'The container engine could not start the run: {_explain(error)}'
            ) from None
        return {
            'backend': self.name,
            'runId': spec.run_id,
            'containerId': container.id,
            'containerName': name,
            'runDir': run_dir,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'startedEpoch': time.time(),
            'timeLimit': spec.time_limit,
            'labels': labels,
        }

    def run_state(self, handle):
        """From the container's state; a run past its time limit is ended here."""
        container = self._container(handle['containerId'])
        reason = _read_reason(handle['runDir'])
        if container is None:
            return 'exited', None, reason or "the run's container is gone"
        if container.status in ('created', 'configured', 'initialized'):
            return 'queued', None, None
        if container.status in ('running', 'paused', 'restarting', 'stopping'):
            limit = int(handle.get('timeLimit') or 0)
            elapsed = time.time() - float(handle.get('startedEpoch') or time.time())
            if not limit or elapsed <= limit:
                return 'running', None, None
            self._end_run(handle, container, f'ran longer than the limit of {limit} s')
            reason = _read_reason(handle['runDir'])
        if reason:
            return 'exited', None, reason
        try:
            container.reload()
        except (_docker().errors.DockerException, OSError):
            return 'exited', None, reason or "the run's container is gone"
        if not _settled(container):
            return 'running', None, None  # its last output may still be on its way to the log
        code = (container.attrs.get('State') or {}).get('ExitCode')
        code = int(code) if code is not None else None
        if code == 0:
            return 'exited', 0, None
        return 'exited', code, f'the command exited with code {code}'

    def run_log(self, handle, offset=0):
        """The container's output (stdout and stderr) from ``offset`` (at most 1 MiB).

        The whole log is read from the engine at most every ``_LOG_FRESH`` seconds
        while the run runs, and once after it ended.
        """
        docker = _docker()
        key = handle['containerId']
        with self._run_logs_lock:
            cached = self._run_logs.get(key)
        if cached is None or not (cached[1] or time.monotonic() - cached[0] < _LOG_FRESH):
            try:
                container = self._container(key)
                if container is None:
                    return b''
                ended = _settled(container)
                cached = (time.monotonic(), ended, container.logs(stdout=True, stderr=True))
            except (docker.errors.DockerException, OSError, LaunchError):
                return b''
            with self._run_logs_lock:
                self._run_logs[key] = cached
                self._run_logs.move_to_end(key)
                while len(self._run_logs) > _LOG_CACHE_SIZE:
                    self._run_logs.popitem(last=False)
        offset = max(0, int(offset))
        return cached[2][offset : offset + _LOG_CHUNK]

    def cancel_run(self, handle):
        """Kill the run's container."""
        container = self._container(handle['containerId'])
        if container is not None and container.status in ('created', 'running', 'paused'):
            self._end_run(handle, container, 'cancelled')

    def cleanup_run(self, handle):
        """Remove the run's container (running or not) and its directory."""
        with self._run_logs_lock:
            self._run_logs.pop(handle['containerId'], None)
        container = self._container(handle['containerId'])
        if container is not None:
            self._remove_run_container(container)
        run_dir = handle.get('runDir') or ''
        if os.path.dirname(run_dir) == os.path.join(self.run_root, RUNS_DIR):
            _remove_run_dir(run_dir, _RUN_SENTINEL)

    def _end_run(self, handle, container, reason):
        path = os.path.join(handle['runDir'], 'ended')
        if not os.path.exists(path):
            try:
                with open(path, 'w') as out:
                    out.write(reason)
            except OSError:
                pass
        docker = _docker()
        try:
            container.kill()
            container.wait(timeout=int(self.config['api_timeout']))
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:  # not running (any more)
                raise LaunchError(
                    f'The container engine could not stop the run: {_explain(error)}'
                ) from None
        except (docker.errors.DockerException, OSError) as error:
            raise LaunchError(
                f'The container engine could not stop the run: {_explain(error)}'
            ) from None

    def _remove_run_container(self, container):
        docker = _docker()
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            if error.status_code != 409:
                raise LaunchError(
                    f'The container engine could not remove the run container: {_explain(error)}'
                ) from None
        except (docker.errors.DockerException, OSError) as error:
            raise LaunchError(
                f'The container engine could not remove the run container: {_explain(error)}'
            ) from None

    def _open_results_to_container(self, results_path):
        """Let the container's user write the results directory.

        Given to that user when Girder may (root), else opened to all: the
        directory is the caller's, inside a directory only Girder's user enters.
        """
        uid, _, gid = self.user.partition(':')
        if os.geteuid() == 0 and uid.isdigit() and (not gid or gid.isdigit()):
            os.chown(results_path, int(uid), int(gid or uid))
        else:
            os.chmod(results_path, 0o777)

    def _sandbox_kwargs(self, home):
        """The sandbox options every container gets: user, no network, no capabilities, limits."""
        scratch = self.config['scratch_size'] or self.config['mem_limit']
        tmpfs_options = 'rw,exec,nosuid,nodev,mode=1777' + (f',size={scratch}' if scratch else '')
        kwargs = {
            'tmpfs': {home: tmpfs_options, '/tmp': tmpfs_options},
            'working_dir': home,
            'user': self.user,
            'network_mode': self.config['network'],
            'cap_drop': ['ALL'],
            'security_opt': ['no-new-privileges'],
            'read_only': True,
            'detach': True,
        }
        if self.config['mem_limit']:
            kwargs['mem_limit'] = self.config['mem_limit']
        if self.config['cpus']:
            kwargs['nano_cpus'] = int(float(self.config['cpus']) * 1e9)
        if self.config['pids_limit']:
            kwargs['pids_limit'] = int(self.config['pids_limit'])
        return kwargs

    # -- helpers ---------------------------------------------------------------

    def _make_run_dir(self, spec):
        """Make ``<run_root>/<id>.<random>/`` with the token file and the socket directory."""
        run_dir = os.path.join(self.run_root, f'{spec.notebook_id}.{secrets.token_hex(4)}')
        socket_path = os.path.join(run_dir, 'sock', SOCKET_NAME)
        if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
            raise LaunchError(
                f'The notebook socket path {socket_path} is longer than a Unix socket path '
                'may be; choose a shorter run_root (DATADNS_DOCKER_RUN_ROOT).'
            )
        try:
            os.makedirs(self.run_root, mode=0o700, exist_ok=True)
            # Girder's user alone may enter: the socket and the token file below are
            # open to the container's user, who has no other way in.
            os.chmod(self.run_root, 0o700)
            os.mkdir(run_dir, mode=0o700)
            open(os.path.join(run_dir, _SENTINEL), 'w').close()
            etc = os.path.join(run_dir, 'etc')
            os.mkdir(etc)
            os.chmod(etc, 0o755)  # whatever the umask: the container's user reads it
            # Copies, so that a running server keeps the version it started with.
            for module in self.modules():
                target = os.path.join(etc, os.path.basename(module.__file__))
                shutil.copyfile(module.__file__, target)
                os.chmod(target, 0o644)
            config = os.path.join(etc, _CONFIG_NAME)
            descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with open(descriptor, 'w') as out:
                out.write(self.server_config(spec))
            os.chmod(config, 0o644)
            # The container's user creates the socket here; sealed by wait_ready().
            os.mkdir(os.path.join(run_dir, 'sock'))
            os.chmod(os.path.join(run_dir, 'sock'), 0o777)
        except OSError as error:
            _remove_run_dir(run_dir)
            raise LaunchError(f'Could not prepare the notebook directory: {error}') from None
        return run_dir

    def _create_kwargs(self, spec, name, home, run_dir, labels):
        docker = _docker()

        def bind(source, target, read_only):
            return docker.types.Mount(
                target=target, source=source, type='bind', read_only=read_only
            )

        mounts = [
            bind(spec.data_path, f'{home}/{spec.data_name}', True),
            bind(os.path.join(run_dir, 'sock'), SOCKET_DIR, False),
            bind(os.path.join(run_dir, 'etc'), ETC_DIR, True),
        ]
        kwargs = self._sandbox_kwargs(home)
        kwargs.update(
            {
                'name': name,
                'command': self.server_args(spec),
                'labels': labels,
                'environment': {'HOME': home, 'PYTHONUNBUFFERED': '1'},
                'mounts': mounts,
            }
        )
        kwargs.update(self.config['run_kwargs'])
        return kwargs

    def server_args(self, spec):
        """The container's command: ``jupyter_server`` on the socket, configured by the file."""
        home = self.config['home'].rstrip('/') or '/'
        args = [str(arg) for arg in self.config['command']] + [
            '--no-browser',
            # The token is in this file: never on a command line, nor in the environment.
            f'--config={ETC_DIR}/{_CONFIG_NAME}',
            f'--ServerApp.sock={SOCKET_DIR}/{SOCKET_NAME}',
            # Reached through the directory only: Girder's user may differ from the container's.
            '--ServerApp.sock_mode=0666',
            f'--ServerApp.base_url={spec.base_url}',
            f'--ServerApp.root_dir={home}',
            '--ServerApp.terminals_enabled=False',
            *self.default_url_args(spec.tool),
        ]
        return args + [str(arg) for arg in self.config['extra_args']]

    def modules(self):
        """The modules of this package that the server's configuration loads from ETC_DIR."""
        modules = [identity, unixclose]
        return modules + [readonly] if self.config['read_only_contents'] else modules

    def server_config(self, spec):
        """The server's configuration file (Python), read from ETC_DIR; it holds the token."""
        # Modules are loaded by file path: nothing is added to the PYTHONPATH that
        # kernels inherit. The token is read by the server alone (and by its kernels,
        # which run as the same user: they already run in this notebook).
        lines = [
            f'# Written by the datadns docker launcher for notebook {spec.notebook_id}.',
            'import importlib.util',
            'import sys',
            '',
            '',
            'def _load(name, path):',
            '    spec = importlib.util.spec_from_file_location(name, path)',
            '    module = importlib.util.module_from_spec(spec)',
            '    sys.modules[name] = module',
            '    spec.loader.exec_module(module)',
            '    return module',
            '',
            '',
            # The token; the front door's cookie (which holds it) is accepted too.
            f"_identity = _load('datadns_identity', '{ETC_DIR}/identity.py')",
            f'_identity.configure(c, {spec.token!r})',
            '# Reached only through its Unix socket (by Girder, and by the front door, whose',
            "# Host header is the site's public name), so no Host check is needed.",
            'c.ServerApp.allow_remote_access = True',
            '# The front door closes each connection, not the server (see unixclose.py).',
            f"_load('datadns_unixclose', '{ETC_DIR}/unixclose.py').install()",
        ]
        if self.config['read_only_contents']:
            # A tool's image has jupyter_server 2 (JupyterLab 4): the async manager suits it.
            manager = (
                'ReadOnlyDataContentsManager' if spec.tool else self.config['contents_manager']
            )
            lines += [
                f"_readonly = _load('datadns_readonly', '{ETC_DIR}/readonly.py')",
                f'c.ServerApp.contents_manager_class = _readonly.{manager}',
                f'c.{manager}.read_only_paths = [{spec.data_name!r}]',
            ]
        return '\n'.join(lines + tool_config_lines(spec.tool)) + '\n'

    def _create(self, name, spec, create_kwargs):
        """Create the container; a leftover of the same name is removed first.

        No lookup before the create, which is the common case: only when the
        create fails is the name checked, since Docker Engine answers 409 to a
        name in use but Podman 500.
        """
        docker = _docker()
        try:
            return self.client.containers.create(self.image(spec), **create_kwargs)
        except docker.errors.ImageNotFound:
            raise
        except docker.errors.APIError:
            existing = self._container(name)
            if existing is None:
                raise  # not a name conflict
        if existing.status == 'running':
            raise LaunchError(f'Notebook {spec.notebook_id} is already running.')
        self._remove(existing)
        return self.client.containers.create(self.image(spec), **create_kwargs)

    @staticmethod
    def _run_dir_of(container):
        """The per-notebook directory that ``container`` was started with, or None."""
        for mount in container.attrs.get('Mounts') or []:
            if mount.get('Destination') == SOCKET_DIR and mount.get('Source'):
                return os.path.dirname(mount['Source'].rstrip('/'))
        return None

    def _seal(self, handle):
        """Make the socket's directory read-only to the container, its server answering."""
        socket_dir = os.path.dirname(handle['socket'])
        try:
            directory = os.stat(socket_dir)
            server_socket = os.lstat(handle['socket'])
            if not stat.S_ISSOCK(server_socket.st_mode):
                raise LaunchError('The notebook server left something else than its socket.')
            if server_socket.st_uid == directory.st_uid:
                # The container's user owns the directory: it could make it writable again.
                raise LaunchError(
                    f'The notebook runs as the user that Girder runs as on this machine (uid '
                    f'{directory.st_uid}); run notebooks as another user (DATADNS_DOCKER_USER).'
                )
            if stat.S_IMODE(directory.st_mode) != 0o755:
                os.chmod(socket_dir, 0o755)
        except OSError as error:
            raise LaunchError(f'Could not protect the notebook socket: {error}') from None

    def _handle_of(self, container):
        """Rebuild the handle of a running container from its labels and mounts."""
        labels = container.labels or {}
        run_dir = self._run_dir_of(container)
        if NOTEBOOK_LABEL not in labels or not run_dir:
            return None
        if not os.path.exists(os.path.join(run_dir, _SENTINEL)):
            return None  # not a directory this launcher made
        return {
            'backend': self.name,
            'notebookId': labels[NOTEBOOK_LABEL],
            'containerId': container.id,
            'containerName': container.name,
            'socket': os.path.join(run_dir, 'sock', SOCKET_NAME),
            'runDir': run_dir,
            'baseUrl': labels.get(BASE_URL_LABEL) or f'/notebook/{labels[NOTEBOOK_LABEL]}/',
            'started': container.attrs.get('State', {}).get('StartedAt'),
            'labels': dict(labels),
            **({'tool': labels[TOOL_LABEL]} if labels.get(TOOL_LABEL) else {}),
        }

    def _remove_orphan_run_dirs(self, containers):
        """Remove per-notebook directories that no container uses (a start cut short).

        Only those untouched for ``_ORPHAN_AGE`` seconds: a start in progress makes its
        directory a moment before its container.
        """
        used = {self._run_dir_of(container) for container in containers}
        try:
            names = os.listdir(self.run_root)
        except OSError:
            return
        for name in names:
            run_dir = os.path.join(self.run_root, name)
            try:
                idle = time.time() - os.lstat(run_dir).st_mtime
            except OSError:
                continue
            if run_dir not in used and idle > _ORPHAN_AGE:
                _remove_run_dir(run_dir)

    def _remove(self, container):
        docker = _docker()
        run_dir = self._run_dir_of(container)
        try:
            if container.status == 'running':
                # A moment for jupyter_server to shut its kernels down cleanly.
                container.stop(timeout=int(self.config['stop_grace']))
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as error:
            # 409: another caller is removing it right now; it is going all the same.
            if error.status_code != 409:
                raise LaunchError(
                    f'The container engine could not remove the notebook container: '
                    f'{_explain(error)}'
                ) from None
        except (docker.errors.DockerException, OSError) as error:
            raise LaunchError(
                f'The container engine could not remove the notebook container: {_explain(error)}'
            ) from None
        if run_dir:
            _remove_run_dir(run_dir)


def _remove_run_dir(run_dir, sentinel=_SENTINEL):
    """Remove a per-notebook (or per-run) directory this launcher made (it holds the sentinel)."""
    if os.path.islink(run_dir) or not os.path.exists(os.path.join(run_dir, sentinel)):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


def _read_reason(run_dir):
    """Why a run was ended early (recorded by _end_run), or None."""
    try:
        with open(os.path.join(run_dir, 'ended')) as source:
            return source.read().strip() or None
    except OSError:
        return None


def _settled(container):
    """Whether ``container`` exited more than ``_LOG_SETTLE`` seconds ago (its log complete)."""
    if container.status not in ('exited', 'dead'):
        return False
    finished = parse_utc((container.attrs.get('State') or {}).get('FinishedAt') or '')
    if finished is None or finished.year < 2000:
        return True
    age = datetime.datetime.now(datetime.timezone.utc) - finished
    return age.total_seconds() >= _LOG_SETTLE
