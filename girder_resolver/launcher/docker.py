"""The docker backend: one container per notebook, through the Docker Engine API.

Talks to the engine with the ``docker`` SDK only (never a shell), so it works
against Docker Engine and against Podman's Docker-compatible service alike
(``scripts/podman-service.sh``). Each container:

- runs ``jupyter_server`` from the notebook image (``scripts/build-notebook-image.sh``
  or ``docker/notebook/Dockerfile``) with ``root_dir`` = ``home`` (default
  ``/home/jovyan``), the notebook's own writable file tree;
- has the dataset bind-mounted read-only at ``<home>/<data_name>``, and this
  package's read-only contents manager (``readonly.py``, mounted at
  ``/opt/datadns``) so that Jupyter answers 403 rather than an I/O error;
- publishes its port on ``host_ip`` at a free port that the engine picks
  (Podman at create, Docker Engine at start);
- carries the labels ``datadns.managed=1``, ``datadns.notebook=<id>`` and
  ``datadns.base_url=<base_url>``, by which ``list_running()`` finds it again.

The data path is a path on the engine's machine: this backend expects the engine
to run beside Girder.
"""

import datetime
import os
import time

from . import readonly
from .base import Launcher, LaunchError, Option

MANAGED_LABEL = 'datadns.managed'
NOTEBOOK_LABEL = 'datadns.notebook'
BASE_URL_LABEL = 'datadns.base_url'
_READONLY_DIR = '/opt/datadns'


def _docker():
    # Imported on first use, so that the launcher package imports without the SDK.
    try:
        import docker
    except ImportError:
        raise LaunchError(
            'The docker launcher needs the "docker" Python package (pip install docker).'
        ) from None
    return docker


def _explain(error):
    """A short, human message from a docker SDK or connection error."""
    return str(getattr(error, 'explanation', None) or error).strip()


class DockerLauncher(Launcher):
    """Runs each notebook in a container of the notebook image, with the data read-only."""

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
        'container_port': Option(8888, 'Port the server listens on inside the container.'),
        'host_ip': Option('127.0.0.1', 'Host address on which the container port is published.'),
        'home': Option(
            '/home/jovyan',
            "The notebook's file tree inside the container; the dataset appears in it "
            'as <home>/<data_name>.',
        ),
        'user': Option(None, "User to run as in the container (default: the image's)."),
        'mem_limit': Option('1g', 'Memory limit of each notebook container.'),
        'cpus': Option(None, 'CPU limit of each notebook container (e.g. 2.0); None: no limit.'),
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
            'Further keyword arguments for the docker SDK containers.create() '
            '(e.g. network, security_opt, cap_drop).',
        ),
        'stop_grace': Option(
            5, 'Seconds a container has to stop after SIGTERM before it is killed.'
        ),
        'api_timeout': Option(60, 'Seconds allowed for each Docker API call.'),
    }

    def __init__(self, **config):
        super().__init__(**config)
        self._client = None

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

    # -- the interface ---------------------------------------------------------

    def start(self, spec):
        """Create and start the notebook's container; returns the handle.

        Handle: ``{'backend': 'docker', 'notebookId', 'containerId',
        'containerName', 'host', 'port', 'baseUrl', 'started'}``.
        """
        docker = _docker()
        spec.check_data_path()
        name = f'{self.config["name_prefix"]}{spec.notebook_id}'
        home = self.config['home'].rstrip('/') or '/'
        port_key = f'{self.config["container_port"]}/tcp'
        mounts = [
            docker.types.Mount(
                target=f'{home}/{spec.data_name}',
                source=spec.data_path,
                type='bind',
                read_only=True,
            )
        ]
        environment = {
            # The token goes by environment rather than on the command line.
            'JUPYTER_TOKEN': spec.token,
            'PYTHONUNBUFFERED': '1',
        }
        if self.config['read_only_contents']:
            mounts.append(
                docker.types.Mount(
                    target=f'{_READONLY_DIR}/datadns_readonly.py',
                    source=os.path.abspath(readonly.__file__),
                    type='bind',
                    read_only=True,
                )
            )
            environment['PYTHONPATH'] = _READONLY_DIR
        labels = {
            **{str(k): str(v) for k, v in self.config['labels'].items()},
            **spec.labels,
            MANAGED_LABEL: '1',
            NOTEBOOK_LABEL: spec.notebook_id,
            BASE_URL_LABEL: spec.base_url,
        }
        create_kwargs = {
            'name': name,
            'command': self._server_args(spec, home),
            'labels': labels,
            'environment': environment,
            'mounts': mounts,
            'ports': {port_key: (self.config['host_ip'], None)},
            'working_dir': home,
            'detach': True,
        }
        if self.config['mem_limit']:
            create_kwargs['mem_limit'] = self.config['mem_limit']
        if self.config['cpus']:
            create_kwargs['nano_cpus'] = int(float(self.config['cpus']) * 1e9)
        if self.config['user']:
            create_kwargs['user'] = self.config['user']
        create_kwargs.update(self.config['run_kwargs'])

        container = None
        try:
            # create() then start() rather than run(): run() would try to pull a
            # missing image from a registry, which a site without one cannot do.
            container = self._create(name, spec, create_kwargs)
            container.start()
            # Podman picks the host port at create (create() inspects the new
            # container); Docker Engine at start, so then ask once more.
            port = self._port_of(container, port_key) or self._published_port(container, port_key)
        except docker.errors.ImageNotFound:
            raise LaunchError(
                f'The notebook image {self.config["image"]} is not available to the container '
                'engine; build it with scripts/build-notebook-image.sh.'
            ) from None
        except (docker.errors.DockerException, OSError, LaunchError) as error:
            if container is not None:
                self._remove(container)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(
                f'The container engine could not start the notebook: {_explain(error)}'
            ) from None
        return {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'containerId': container.id,
            'containerName': name,
            'host': self.config['host_ip'],
            'port': port,
            'baseUrl': spec.base_url,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'labels': labels,
        }

    def is_alive(self, handle):
        """Whether the notebook's container exists and is running."""
        container = self._container(handle['containerId'])
        return container is not None and container.status == 'running'

    def stop(self, handle):
        """Stop and remove the container; a container already gone is fine."""
        container = self._container(handle['containerId'])
        if container is not None:
            self._remove(container)

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
        """The last lines of the container's output."""
        docker = _docker()
        try:
            container = self._container(handle['containerId'])
            if container is None:
                return ''
            return container.logs(tail=lines).decode('utf-8', 'replace')
        except (docker.errors.DockerException, OSError, LaunchError):
            return ''

    # -- helpers ---------------------------------------------------------------

    def _server_args(self, spec, home):
        args = [str(arg) for arg in self.config['command']] + [
            '--no-browser',
            '--allow-root',
            '--ip=0.0.0.0',
            f'--ServerApp.port={self.config["container_port"]}',
            '--ServerApp.port_retries=0',
            f'--ServerApp.base_url={spec.base_url}',
            f'--ServerApp.root_dir={home}',
            '--ServerApp.terminals_enabled=False',
            *self.default_url_args(),
        ]
        if self.config['read_only_contents']:
            manager = self.config['contents_manager']
            args += [
                f'--ServerApp.contents_manager_class=datadns_readonly.{manager}',
                f'--{manager}.read_only_paths={spec.data_name}',
            ]
        return args + [str(arg) for arg in self.config['extra_args']]

    def _create(self, name, spec, create_kwargs):
        """Create the container; a leftover of the same name is removed first.

        No lookup before the create, which is the common case: only when the
        create fails is the name checked, since Docker Engine answers 409 to a
        name in use but Podman 500.
        """
        docker = _docker()
        try:
            return self.client.containers.create(self.config['image'], **create_kwargs)
        except docker.errors.ImageNotFound:
            raise
        except docker.errors.APIError:
            existing = self._container(name)
            if existing is None:
                raise  # not a name conflict
        if existing.status == 'running':
            raise LaunchError(f'Notebook {spec.notebook_id} is already running.')
        self._remove(existing)
        return self.client.containers.create(self.config['image'], **create_kwargs)

    @staticmethod
    def _port_of(container, port_key):
        """The host port published for ``port_key`` in the container's inspect data, or None."""
        # Before start, Docker Engine may report no ports at all (null).
        for binding in (container.ports or {}).get(port_key) or []:
            if binding.get('HostPort'):
                return int(binding['HostPort'])
        return None

    def _published_port(self, container, port_key):
        # Docker Engine picks the host port at start; it shows in the inspect data,
        # possibly a moment later.
        deadline = time.monotonic() + 5
        while True:
            container.reload()
            port = self._port_of(container, port_key)
            if port is not None:
                return port
            if container.status not in ('created', 'running') or time.monotonic() > deadline:
                raise LaunchError(
                    f'The container engine published no port for the notebook '
                    f'(container status {container.status}). Its last output:\n'
                    + container.logs(tail=40).decode('utf-8', 'replace')
                )
            time.sleep(0.1)

    def _handle_of(self, container):
        """Rebuild the handle of a running container from its labels and ports."""
        labels = container.labels or {}
        port_key = f'{self.config["container_port"]}/tcp'
        bindings = [b for b in (container.ports.get(port_key) or []) if b.get('HostPort')]
        if NOTEBOOK_LABEL not in labels or not bindings:
            return None
        return {
            'backend': self.name,
            'notebookId': labels[NOTEBOOK_LABEL],
            'containerId': container.id,
            'containerName': container.name,
            'host': bindings[0].get('HostIp') or self.config['host_ip'],
            'port': int(bindings[0]['HostPort']),
            'baseUrl': labels.get(BASE_URL_LABEL) or f'/notebook/{labels[NOTEBOOK_LABEL]}/',
            'started': container.attrs.get('State', {}).get('StartedAt'),
            'labels': dict(labels),
        }

    def _remove(self, container):
        docker = _docker()
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
