"""The launcher interface that every notebook backend implements.

In the spirit of JupyterHub's ``Spawner``: one narrow abstract class, backends
that know nothing of Girder or the web layer, and options declared once on each
class with a help text beside them. A backend turns a :class:`LaunchSpec` into
a running ``jupyter_server`` and describes it by a *handle*: a small
JSON-serialisable dict that is stored with the notebook and is enough for any
later Python process (e.g. Girder after a restart) to poll, stop or adopt it.

Where a server listens is part of the handle, in one of two forms that the
shared code below understands:

- ``'socket': '/abs/path/nb.sock'``: a Unix socket on this machine (the
  sandboxed process backend; no TCP port at all), or
- ``'host': …, 'port': …``: a TCP address reachable from this machine.

Readiness, status and activity are read over either. The front door (the
site's proxy) reaches the server at :meth:`Launcher.proxy_target`, and a
browser only ever through the front door when ``public_url`` is set.

A backend may also start a server *before* its dataset is known and bind the
dataset to it later (what the warm pool needs): :meth:`Launcher.can_bind_later`,
:meth:`Launcher.start_unbound` and :meth:`Launcher.bind_data`. The base class
says it cannot; the process backend can where it may mount file systems.

A backend may run *batch runs* too (:class:`RunSpec`, :meth:`Launcher.start_run`
and the methods after it): one command next to one dataset, in the same
sandbox as its notebook servers, the dataset read-only at ``$DATASET_DIR`` and
a writable ``$RESULTS_DIR``; its output is kept as a log, its exit code
recorded, and its *run handle* (like a notebook's handle) is enough to follow
it after a restart. The base class raises :class:`LaunchError` for a backend
without them.
"""

import abc
import datetime
import http.client
import json
import os
import re
import socket
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, ClassVar

_NOTEBOOK_ID = re.compile(r'^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$')
_ENV_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_]{0,127}$')
#: Where a batch run finds its dataset (read-only) and leaves its results, inside its
#: sandbox or container; exported to it as DATASET_DIR and RESULTS_DIR.
RUN_DATASET_DIR = '/data'
RUN_RESULTS_DIR = '/results'
#: What :meth:`Launcher.run_state` answers for a run: waiting, running, or ended.
RUN_STATES = ('queued', 'running', 'exited')
_UNSAFE_NAME_CHARS = re.compile(r'[^A-Za-z0-9._ -]+')
_WILDCARD_HOSTS = {'', '0.0.0.0', '::', '[::]'}
#: A tool's user interface -> the page (below base_url) its notebook URL lands on.
TOOL_UIS = {'lab': '/lab', 'notebook': '/tree'}


class LaunchError(Exception):
    """A notebook could not be started or reached; the message is fit for a user."""


@dataclass(frozen=True)
class Option:
    """One configuration option of a launcher: its default and what it means."""

    default: Any
    help: str


def sanitize_data_name(name):
    """Turn a dataset's name into a safe single file name for the notebook's file tree.

    Path separators and other unusual characters become '_', leading dots are
    dropped (a hidden name would not be listed), and an empty result becomes
    'data'.
    """
    cleaned = _UNSAFE_NAME_CHARS.sub('_', str(name or '')).strip().lstrip('.').strip()
    cleaned = cleaned[:100].rstrip()
    return cleaned or 'data'


@dataclass
class LaunchSpec:
    """What to launch: one notebook server with one dataset mounted read-only.

    ``notebook_id`` names the notebook in file names, container names and
    labels (letters, digits, '.', '_', '-'); ``token`` is the Jupyter token;
    ``data_path`` the dataset directory on this machine, which must exist;
    ``data_name`` the name under which the dataset appears in the notebook's
    file tree (sanitised); ``base_url`` the URL path prefix the server serves
    under (default ``/notebook/<notebook_id>/``); ``labels`` free-form
    string labels recorded with the notebook (container labels, marker file);
    ``tool`` the tool to run (an entry of the site's ``resolver.tools``: a dict
    with an ``id``, ``ui`` and per backend ``process.env`` / ``docker.image``,
    see :mod:`girder_resolver.tools`), or None for the backend's configured
    default command or image.
    """

    notebook_id: str
    token: str
    data_path: str
    data_name: str = 'data'
    base_url: str = ''
    labels: dict = field(default_factory=dict)
    tool: dict | None = None

    def __post_init__(self):
        self.notebook_id = str(self.notebook_id)
        if not _NOTEBOOK_ID.match(self.notebook_id):
            raise LaunchError(
                f'Invalid notebook id {self.notebook_id!r}: use letters, digits, ".", "_" '
                'and "-" only.'
            )
        if not self.token or any(c.isspace() for c in self.token):
            raise LaunchError('A notebook needs a non-empty token without spaces.')
        self.data_name = sanitize_data_name(self.data_name)
        self.base_url = normalize_base_url(self.base_url or f'/notebook/{self.notebook_id}/')
        self.labels = {str(k): str(v) for k, v in (self.labels or {}).items()}
        self.data_path = os.path.abspath(self.data_path)
        self.tool = check_tool(self.tool)
        self.check_data_path()

    def check_data_path(self):
        """Raise :class:`LaunchError` unless the dataset directory exists and is readable."""
        if not os.path.isdir(self.data_path):
            raise LaunchError(
                f'The dataset directory {self.data_path} does not exist on this server; '
                'the dataset may have been moved or not imported here.'
            )
        if not os.access(self.data_path, os.R_OK | os.X_OK):
            raise LaunchError(f'The dataset directory {self.data_path} is not readable.')


def check_tool(tool):
    """A copy of ``tool`` (a tool entry, lightly checked), or None; LaunchError if malformed.

    It must be a dict with a string ``id``; ``ui``, when given, is ``'lab'`` or
    ``'notebook'``. Each backend checks the key it reads itself.
    """
    if tool is None:
        return None
    if not isinstance(tool, dict) or not isinstance(tool.get('id'), str) or not tool['id']:
        raise LaunchError('A tool must be a dict with an "id".')
    if (tool.get('ui') or 'lab') not in TOOL_UIS:
        raise LaunchError(
            f'Tool {tool["id"]!r} has an unknown ui {tool.get("ui")!r}: use "lab" or "notebook".'
        )
    return dict(tool)


def tool_part(tool, backend, key):
    """``tool[backend][key]`` (e.g. the process env, the docker image), or None."""
    part = (tool or {}).get(backend)
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, str) and value else None


@dataclass
class RunSpec:
    """What to run: one command next to one dataset, as a batch job.

    ``run_id`` names the run (the rule of notebook ids); ``argv`` the command as
    an argument list (e.g. ``['bash', '-c', command]``), never a shell string;
    ``data_path`` the dataset directory on this machine, shown read-only at the
    path exported as ``DATASET_DIR``; ``results_path`` a writable directory on
    this machine (the caller's: it is kept after the run), shown at the path
    exported as ``RESULTS_DIR``; ``tool`` the tool entry whose environment or
    image runs the command (None: the backend's default); ``env`` further
    environment variables (nothing of the caller's own environment is passed
    on); ``time_limit`` the most seconds the run may take (0: no limit), after
    which it is ended and :meth:`Launcher.run_state` says why; ``labels`` free-form
    string labels recorded with the run.
    """

    run_id: str
    argv: list
    data_path: str
    results_path: str
    tool: dict | None = None
    env: dict = field(default_factory=dict)
    time_limit: int = 0
    labels: dict = field(default_factory=dict)

    def __post_init__(self):
        self.run_id = str(self.run_id)
        if not _NOTEBOOK_ID.match(self.run_id):
            raise LaunchError(
                f'Invalid run id {self.run_id!r}: use letters, digits, ".", "_" and "-" only.'
            )
        if (
            not isinstance(self.argv, (list, tuple))
            or not self.argv
            or not all(isinstance(arg, str) and '\0' not in arg for arg in self.argv)
        ):
            raise LaunchError('A run needs a command: a non-empty list of strings.')
        self.argv = list(self.argv)
        self.env = {str(k): str(v) for k, v in (self.env or {}).items()}
        for key in self.env:
            if not _ENV_NAME.match(key) or key in ('DATASET_DIR', 'RESULTS_DIR'):
                raise LaunchError(f'A run cannot be given the environment variable {key!r}.')
        try:
            self.time_limit = max(0, int(self.time_limit or 0))
        except (TypeError, ValueError):
            raise LaunchError("A run's time limit is a whole number of seconds.") from None
        self.labels = {str(k): str(v) for k, v in (self.labels or {}).items()}
        self.tool = check_tool(self.tool)
        self.data_path = os.path.abspath(self.data_path)
        self.results_path = os.path.abspath(self.results_path)
        self.check_paths()

    def check_paths(self):
        """Raise :class:`LaunchError` unless the dataset is readable and the results writable."""
        LaunchSpec.check_data_path(self)
        if not os.path.isdir(self.results_path) or not os.access(self.results_path, os.W_OK):
            raise LaunchError(f'The results directory {self.results_path} is not writable.')


def tool_config_lines(tool):
    """jupyter_server configuration lines (Python) for ``tool``: only its kernels are offered.

    A tool's ``kernels`` (kernelspec names) are the ones its server lists and
    starts, the first being the default; none listed leaves every kernelspec
    of its environment. Empty without a tool.
    """
    kernels = [str(k) for k in (tool or {}).get('kernels') or [] if k]
    if not kernels:
        return []
    return [
        f'c.KernelSpecManager.allowed_kernelspecs = {sorted(set(kernels))!r}',
        f'c.MultiKernelManager.default_kernel_name = {kernels[0]!r}',
    ]


def normalize_base_url(base_url):
    """A URL path prefix with exactly one leading and one trailing slash."""
    stripped = str(base_url).strip('/')
    return f'/{stripped}/' if stripped else '/'


def _base_url_of(handle, spec_or_base_url):
    if isinstance(spec_or_base_url, LaunchSpec):
        return spec_or_base_url.base_url
    if spec_or_base_url:
        return normalize_base_url(spec_or_base_url)
    return handle['baseUrl']


def _connect_host(host):
    """Where this machine reaches a server that listens on ``host``."""
    if host in _WILDCARD_HOSTS:
        return '127.0.0.1'
    if ':' in host and not host.startswith('['):
        return f'[{host}]'
    return host


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix socket (the server's 'socket' in its handle)."""

    def __init__(self, path, timeout):
        super().__init__('localhost', timeout=timeout)
        self.socket_path = path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


@dataclass
class Response:
    """A notebook server's answer to :meth:`Launcher.request`."""

    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body or b'null')


def open_connection(handle, timeout):
    """An ``http.client`` connection to the server of ``handle`` (Unix socket or TCP).

    Environment proxies never apply: the servers run on this machine.
    """
    if handle.get('socket'):
        return _UnixHTTPConnection(handle['socket'], timeout)
    host = _connect_host(handle['host']).strip('[]')
    return http.client.HTTPConnection(host, int(handle['port']), timeout=timeout)


class Launcher(abc.ABC):
    """One way of running notebook servers (a process, a container, ...).

    Subclasses implement :meth:`start`, :meth:`stop`, :meth:`is_alive`,
    :meth:`list_running` and :meth:`logs_tail`; the base class refuses to
    instantiate one that does not. Readiness, polling, activity and URLs are
    shared, since every backend runs the same ``jupyter_server``. A backend that
    can bind a running server to a dataset also overrides :meth:`can_bind_later`,
    :meth:`start_unbound` and :meth:`bind_data`.

    Options are declared in the class attribute ``options`` (a dict of name to
    :class:`Option`); subclasses add theirs, and the constructor takes them as
    keyword arguments and refuses unknown ones.
    """

    name: ClassVar[str] = ''
    options: ClassVar[dict] = {
        'public_host': Option(
            '127.0.0.1',
            'Host name or address put in the notebook URL that a browser opens.',
        ),
        'public_scheme': Option('http', 'URL scheme of the notebook URL that a browser opens.'),
        'public_url': Option(
            '',
            "The site's front door (its proxy), e.g. https://data.example.org: when set, "
            'every notebook URL is <public_url>/notebook/<id>/, and a server on a Unix socket '
            'is reachable by a browser only this way.',
        ),
        'default_url': Option(
            '/tree',
            'Page (below base_url) that the notebook URL redirects to: /tree is the classic '
            "notebook UI's file listing (nbclassic); '' leaves jupyter_server's default.",
        ),
        'ready_timeout': Option(
            60.0, 'Seconds that wait_ready() waits by default for a new server to answer.'
        ),
        'ready_poll_interval': Option(
            0.025,
            'Seconds between two HTTP polls of a starting server in wait_ready(): a poll is '
            'one request to this machine, and every interval adds to the launch time.',
        ),
        'alive_check_interval': Option(
            0.2,
            'Seconds between two checks, in wait_ready(), that a starting server still runs '
            '(for docker, an API call); made only while the server does not answer yet.',
        ),
        'request_timeout': Option(
            3.0, 'Seconds allowed for each HTTP request to a notebook server.'
        ),
    }

    def __init__(self, **config):
        known = self.all_options()
        unknown = sorted(set(config) - set(known))
        if unknown:
            raise ValueError(
                f'Unknown option(s) for the {self.name or type(self).__name__} launcher: '
                f'{", ".join(unknown)}. Known options: {", ".join(sorted(known))}.'
            )
        self.config = {key: config.get(key, option.default) for key, option in known.items()}

    @classmethod
    def all_options(cls):
        """Every option this launcher takes, its own and inherited, by name."""
        merged = {}
        for klass in reversed(cls.__mro__):
            merged.update(getattr(klass, 'options', None) or {})
        return merged

    # -- what each backend implements ------------------------------------------

    @abc.abstractmethod
    def start(self, spec):
        """Start a notebook server for ``spec`` and return its handle (a JSON-able dict).

        Returns as soon as the server process or container runs; use
        :meth:`wait_ready` to wait until it answers. Raises :class:`LaunchError`.
        """

    @abc.abstractmethod
    def stop(self, handle):
        """Stop the notebook and release what it held (port, container, working directory).

        Idempotent: stopping a notebook that is already gone is not an error.
        """

    @abc.abstractmethod
    def is_alive(self, handle):
        """Whether the notebook's process or container still runs (answering or not)."""

    @abc.abstractmethod
    def list_running(self):
        """Handles of the notebooks this backend started that still run, on this machine.

        Found by marker or label rather than by memory, so that a restarted
        server can adopt live notebooks; leftovers of dead ones are cleared.
        """

    @abc.abstractmethod
    def logs_tail(self, handle, lines=40):
        """The last lines of the notebook server's output, for error messages ('' if none)."""

    # -- what a backend may implement: binding a running server to a dataset ------

    def can_bind_later(self):
        """Whether this backend, here and now, can start a server before its dataset is known.

        True means that :meth:`start_unbound` and :meth:`bind_data` work. False in
        the base class, and so for docker: a container's bind mounts are fixed
        when it is created.
        """
        return False

    def start_unbound(self, notebook_id, token, data_name='data', labels=None, tool=None):
        """Start a server whose dataset is not known yet; returns its handle, like :meth:`start`.

        Until :meth:`bind_data` binds one, the server shows an empty read-only
        placeholder that the launcher owns as its dataset, under ``data_name``
        (fixed now: the dataset bound later appears under this name); ``tool``
        is the tool it runs, as in :class:`LaunchSpec`. Raises
        :class:`LaunchError` where :meth:`can_bind_later` is False.
        """
        raise LaunchError(
            f'The {self.name or type(self).__name__} launcher cannot start a notebook server '
            'before its dataset is known.'
        )

    def bind_data(self, handle, data_path):
        """Show ``data_path`` read-only as the dataset of a server from :meth:`start_unbound`.

        Without widening what the server sees otherwise; a server is bound once.
        Raises :class:`LaunchError` (always, in the base class).
        """
        raise LaunchError(
            f'The {self.name or type(self).__name__} launcher cannot bind a running notebook '
            'server to a dataset.'
        )

    # -- what a backend may implement: tools -----------------------------------

    def tool_ready(self, tool):
        """Whether ``tool`` (a tool entry) can run on this backend here: ``(bool, reason)``.

        The reason, when not ready, is a sentence saying how to make it ready.
        False in the base class: a backend that runs tools overrides this.
        """
        return (
            False,
            f'The {self.name or type(self).__name__} backend does not run tools.',
        )

    # -- what a backend may implement: batch runs ---------------------------------

    def _no_runs(self):
        name = self.name or type(self).__name__
        return LaunchError(f'The {name} backend does not run batch jobs')

    def start_run(self, spec):
        """Start the batch run ``spec`` (a :class:`RunSpec`); returns its run handle.

        The handle is a JSON-serialisable dict, enough for any later process to
        follow, cancel and clean up the run. Returns once the run is queued or
        started. Raises :class:`LaunchError`.
        """
        raise self._no_runs()

    def run_state(self, handle):
        """``(state, exit_code, reason)`` of a run; state is one of :data:`RUN_STATES`.

        ``exit_code`` is the command's exit status once it ``exited`` (None when
        it was killed: cancelled, over its time limit, lost); ``reason`` a
        sentence saying why a run ended other than by exiting 0 (e.g. "ran longer
        than the limit of 60 s") or why it waits, else None. A run over its time
        limit is ended when this is asked, if the backend does not end it itself.
        """
        raise self._no_runs()

    def run_log(self, handle, offset=0):
        """The run's output (stdout and stderr) from byte ``offset`` on, as bytes.

        May return less than all that is there (a large log comes in pieces):
        ask again from ``offset + len(answer)``. Empty once nothing more is there.
        """
        raise self._no_runs()

    def cancel_run(self, handle):
        """End the run (idempotent); :meth:`run_state` then says it was cancelled."""
        raise self._no_runs()

    def tool_identity(self, tool):
        """A string naming the software a run of ``tool`` gets here (None: the default).

        It changes when that software changes (an environment rebuilt, a new image),
        so that an earlier run's results are reused only for the same tool version.
        The base class names the tool's entry for this backend; backends that can
        tell more (an image id, an environment's files) override it.
        """
        part = (tool or {}).get(self.name)
        return f'{self.name}:{json.dumps(part, sort_keys=True)}'

    def cleanup_run(self, handle):
        """Release what the run held (process, container, its working files, its log).

        The results directory is the caller's and is left alone. Idempotent.
        """
        raise self._no_runs()

    # -- shared behaviour ------------------------------------------------------

    def default_url_args(self, tool=None):
        """jupyter_server options that send the bare notebook URL to the UI's start page.

        With a tool, its ``ui`` decides: JupyterLab (``/lab``, the default) or the
        classic UI (``/tree``); without one, the ``default_url`` option.
        """
        default_url = TOOL_UIS[tool.get('ui') or 'lab'] if tool else self.config['default_url']
        if not default_url:
            return []
        return [f'--ServerApp.default_url={default_url}']

    def url(self, handle, spec_or_base_url=None, token=None):
        """The notebook URL that a browser opens.

        Through the front door (``public_url``) when it is set, else straight at
        the server's TCP port on ``public_host``. The path is the spec's or the
        given base URL (default: the handle's); with ``token``, ``?token=…`` is
        appended so the first visit logs in (callers that trade the token for a
        cookie pass none). Raises :class:`LaunchError` for a server on a Unix
        socket when there is no front door.
        """
        base_url = _base_url_of(handle, spec_or_base_url)
        if self.config['public_url']:
            url = str(self.config['public_url']).rstrip('/') + base_url
        elif handle.get('socket'):
            raise LaunchError(
                'This notebook server listens on a Unix socket and is reached only through '
                "the site's front door, but no front door URL (public_url) is configured."
            )
        else:
            host = _connect_host(self.config['public_host'])
            url = f'{self.config["public_scheme"]}://{host}:{handle["port"]}{base_url}'
        if token:
            url += '?' + urllib.parse.urlencode({'token': token})
        return url

    @staticmethod
    def proxy_target(handle):
        """Where the front door sends a notebook's requests.

        ``http+unix://<percent-encoded socket path>`` for a server on a Unix
        socket (configurable-http-proxy's form), ``http://host:port`` otherwise.
        The path below it is the notebook's base URL, unchanged.
        """
        if handle.get('socket'):
            return 'http+unix://' + urllib.parse.quote(handle['socket'], safe='')
        return f'http://{_connect_host(handle["host"])}:{handle["port"]}'

    def api_url(self, handle, path, base_url=None):
        """URL of ``{base_url}api/{path}`` as reached from this machine.

        For a server on a Unix socket this is an ``http+unix://`` URL, which
        ``urllib`` and ``requests`` cannot open: use :meth:`request`.
        """
        base_url = normalize_base_url(base_url) if base_url else handle['baseUrl']
        return f'{self.proxy_target(handle)}{base_url}api/{path}'

    def request(
        self, handle, method, path, token=None, body=None, headers=None, base_url=None, timeout=None
    ):
        """One HTTP request to ``{base_url}{path}`` of the server; returns a :class:`Response`.

        Works for Unix-socket and TCP handles alike. ``body`` may be bytes, a
        str or a JSON-able object. Raises ``OSError`` when the server cannot be
        reached.
        """
        base_url = normalize_base_url(base_url) if base_url else handle['baseUrl']
        headers = dict(headers or {})
        if token:
            headers['Authorization'] = f'token {token}'
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            headers.setdefault('Content-Type', 'application/json')
        connection = open_connection(
            handle, self.config['request_timeout'] if timeout is None else timeout
        )
        try:
            target = urllib.parse.quote(base_url + path.lstrip('/'), safe="/?&=%:;@+,~!$'()*")
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            return Response(response.status, dict(response.getheaders()), response.read())
        except http.client.HTTPException as error:
            raise OSError(f'Bad answer from the notebook server: {error!r}') from None
        finally:
            connection.close()

    def _get_status(self, handle, token=None, base_url=None):
        """GET api/status; returns (HTTP status, parsed JSON body or None)."""
        response = self.request(handle, 'GET', 'api/status', token=token, base_url=base_url)
        if response.status != 200:
            return response.status, None
        return response.status, response.json()

    def poll(self, handle):
        """Whether the notebook is alive and its server answers HTTP (any status below 500).

        Raises :class:`LaunchError` when the backend itself (e.g. the container
        engine) cannot be reached, rather than calling the notebook dead.
        """
        if not self.is_alive(handle):
            return False
        try:
            status, _ = self._get_status(handle)
        except (OSError, ValueError):
            return False
        return status < 500

    def wait_ready(self, handle, timeout=None, token=None, progress=None):
        """Wait until ``{base_url}api/status`` answers; raise :class:`LaunchError` on timeout.

        With ``token`` it must answer 200 to that token, which also proves the
        token; without, any answer (403 included) shows that the server is up.
        Fails early when the process or container exits. ``progress``, if given,
        is called with a sentence for a person whenever a backend has news of a
        wait that is not the server's own start (a batch job waiting in its
        queue); the backends here that start at once never call it.

        Polls HTTP every ``ready_poll_interval`` seconds; the backend is asked
        whether the server still runs only while it does not answer, at most
        every ``alive_check_interval`` seconds, since for docker that is an
        engine call competing for the CPU with the starting server.
        """
        timeout = self.config['ready_timeout'] if timeout is None else timeout
        deadline = time.monotonic() + timeout
        interval = float(self.config['ready_poll_interval'])
        alive_every = float(self.config['alive_check_interval'])
        next_alive_check = time.monotonic()
        last_error = 'no answer yet'
        while True:
            try:
                status, _ = self._get_status(handle, token)
                if status == 200 or (token is None and status < 500):
                    return
                last_error = f'HTTP {status}'
            except (OSError, ValueError) as error:
                last_error = str(error) or type(error).__name__
            now = time.monotonic()
            if now >= next_alive_check or now >= deadline:
                if not self.is_alive(handle):
                    raise LaunchError(
                        'The notebook server stopped while starting. Its last output:\n'
                        + self.logs_tail(handle)
                    )
                next_alive_check = time.monotonic() + alive_every
            if time.monotonic() >= deadline:
                raise LaunchError(
                    f'The notebook server did not answer within {timeout:g} s '
                    f'(last error: {last_error}). Its last output:\n' + self.logs_tail(handle)
                )
            time.sleep(interval)

    def last_activity(self, handle, token, base_url=None):
        """When the notebook was last used, from jupyter_server's ``api/status``.

        A timezone-aware UTC datetime, or None if the server cannot be reached
        or does not say.
        """
        try:
            status, body = self._get_status(handle, token, base_url)
        except (OSError, ValueError):
            return None
        if status != 200 or not isinstance(body, dict) or not body.get('last_activity'):
            return None
        return parse_utc(body['last_activity'])


def parse_utc(text):
    """Parse jupyter_server's ISO 8601 timestamps ('…Z') into an aware UTC datetime."""
    try:
        value = datetime.datetime.fromisoformat(str(text).replace('Z', '+00:00'))
    except ValueError:
        return None
    if value.tzinfo is None:
        # jupyter_server writes UTC; an unmarked time is UTC too.
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.astimezone(datetime.timezone.utc)
