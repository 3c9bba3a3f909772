"""The site's front door: one proxy in front of every notebook, at ``/notebook/<id>/``.

The proxy is configurable-http-proxy (JupyterHub's own, npm): it forwards
websockets, reaches servers on Unix sockets (``http+unix://``) and takes its
routes over a small REST API, so routes come and go with notebooks without a
reload. Anything without a route (``/``, ``/api/v1``, a stopped notebook's
``/notebook/<id>/``) goes to the default target: this Girder, which serves a
"this notebook was stopped" page there.

As JupyterHub does, the plugin starts and supervises the proxy itself by
default (``resolver.frontdoor_managed``): a child of this Girder process, its
REST API on a Unix socket in the notebooks' work root, with an API token made
anew at each start and handed over in its environment only (never on a command
line, in a log or a setting). A deployment that runs the proxy as a service of
its own (docker-compose.yml) turns that off and gives its API URL
(``resolver.frontdoor_api_url``) and token (``CONFIGPROXY_AUTH_TOKEN`` in
Girder's environment); the supervisor thread then gives that proxy back the
routes it lacks (it restarted, empty), every ``SUPERVISE_INTERVAL`` seconds.

This module knows nothing of notebooks: the model tells it which routes exist
(:func:`setRouteSource`), so that a restarted proxy gets them all back.
"""

import atexit
import http.client
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

import cherrypy

from . import settings
from .launcher import open_connection
from .settings import PluginSettings

logger = logging.getLogger(__name__)

#: Where scripts/setup.sh installs the proxy (frontdoor/package.json).
LOCAL_BINARY = (
    Path(__file__).resolve().parent.parent
    / 'frontdoor'
    / 'node_modules'
    / '.bin'
    / 'configurable-http-proxy'
)
PREFIX = '/notebook/'
_LOOPBACK = {'127.0.0.1', 'localhost', '::1', '[::1]'}


class FrontDoorError(Exception):
    """The front door cannot be started or reached; the message is fit for a user."""


def routePath(notebookId):
    """The front door path of a notebook (its base URL, without the trailing slash)."""
    return f'{PREFIX}{notebookId}'


def _freePort(ip):
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((ip if ip not in ('0.0.0.0', '::') else '', 0))
        return sock.getsockname()[1]


def _binary():
    configured = settings.get(PluginSettings.FRONTDOOR_COMMAND)
    if configured:
        return configured
    if LOCAL_BINARY.exists():
        return str(LOCAL_BINARY)
    return shutil.which('configurable-http-proxy')


def _workRoot():
    """A private directory for the managed proxy's API socket and log."""
    return os.path.join(tempfile.gettempdir(), f'datadns-frontdoor-{os.getuid()}')


#: This Girder's own address, as its requests show it (see learnGirderAddress).
_girderAddress = None


def learnGirderAddress(host, port):
    """Note where this Girder listens (a request's local address), for the default target.

    Girder 5 serves through uvicorn, so nothing but a request tells the plugin its
    port; a changed address restarts the managed proxy at its next check.
    """
    global _girderAddress
    if not port or int(port) <= 0:
        return
    host = host or '127.0.0.1'
    if host in ('0.0.0.0', '::', ''):
        host = '127.0.0.1'
    if ':' in host and not host.startswith('['):
        host = f'[{host}]'
    address = f'http://{host}:{int(port)}'
    if address != _girderAddress:
        _girderAddress = address
        if not managed():
            return
        moved = _managed.running() and _managed.config[2] != _girderUrl()
        # Notebooks adopted at start-up, before this Girder served (uvicorn fires no
        # CherryPy 'start'): their front door starts with the first request.
        adopted = not _managed.running() and _routeSource is not None and _routeSource()
        if moved or adopted:
            try:
                ensure()
            except FrontDoorError as exc:
                logger.warning('Front door: %s', exc)


def _girderUrl():
    """Where the managed proxy reaches this Girder (its default target).

    CherryPy's own HTTP server when it runs (tests bind one); otherwise the address
    requests arrived on (uvicorn, under ``girder serve``); before any, Girder's default.
    """
    if _girderAddress and not getattr(cherrypy.server, 'running', False):
        return _girderAddress
    host = cherrypy.server.socket_host or '127.0.0.1'
    if host in ('0.0.0.0', '::', ''):
        host = '127.0.0.1'
    if ':' in host:
        host = f'[{host}]'
    return f'http://{host}:{cherrypy.server.socket_port}'


class _Managed:
    """The configurable-http-proxy child process of this Girder process."""

    def __init__(self):
        self.process = None
        self.config = None
        self.port = None
        self.apiSocket = None
        self.token = None
        self.log = None
        #: Counts the proxy's starts: a route added under one generation is gone in the next.
        self.generation = 0

    def running(self):
        return self.process is not None and self.process.poll() is None

    def start(self, config, workRoot):
        binary = _binary()
        if not binary:
            raise FrontDoorError(
                'The front door (configurable-http-proxy) is not installed: run scripts/setup.sh, '
                'or set resolver.frontdoor_command to its path.'
            )
        self.stop()
        ip, port, defaultTarget = config
        port = port or _freePort(ip)
        os.makedirs(workRoot, mode=0o700, exist_ok=True)
        apiSocket = os.path.join(workRoot, f'frontdoor-{os.getpid()}.sock')
        if os.path.exists(apiSocket):
            os.unlink(apiSocket)
        token = secrets.token_urlsafe(32)
        args = [
            binary,
            '--ip',
            ip,
            '--port',
            str(port),
            '--api-socket',
            apiSocket,
            '--default-target',
            defaultTarget,
            '--log-level',
            'warn',
        ]
        self.log = open(os.path.join(workRoot, 'frontdoor.log'), 'ab')
        env = {'PATH': os.environ.get('PATH', '/usr/bin:/bin'), 'CONFIGPROXY_AUTH_TOKEN': token}
        try:
            self.process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=self.log,
                stderr=subprocess.STDOUT,
                env=env,
                close_fds=True,
            )
        except OSError as error:
            raise FrontDoorError(f'Could not start the front door ({binary}): {error}') from None
        self.config, self.port, self.apiSocket, self.token = config, port, apiSocket, token
        self.generation += 1
        deadline = time.monotonic() + 15
        while True:
            try:
                _api(self.apiUrl(), self.token, 'GET', '/api/routes')
                break
            except FrontDoorError:
                if not self.running() or time.monotonic() > deadline:
                    self.stop()
                    raise FrontDoorError(
                        f'The front door did not start on {ip}:{port}; see its log in {workRoot}.'
                    ) from None
                time.sleep(0.05)
        logger.info('Front door (configurable-http-proxy) on %s:%d, Girder behind it', ip, port)

    def apiUrl(self):
        return 'http+unix://' + urllib.parse.quote(self.apiSocket, safe='')

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None
        if self.apiSocket and os.path.exists(self.apiSocket):
            os.unlink(self.apiSocket)


_managed = _Managed()
_lock = threading.RLock()
_routeSource = None
_atexit = False
_supervisor = None
_stopSupervising = threading.Event()
#: Seconds between two checks that the managed proxy still runs.
SUPERVISE_INTERVAL = 5


def _supervise():
    unreachable = None
    while not _stopSupervising.wait(SUPERVISE_INTERVAL):
        try:
            if not managed():
                restoreRoutes()
                unreachable = None
            elif _managed.process is not None and not _managed.running():
                logger.warning('Front door: the proxy died (exit %s)', _managed.process.returncode)
                ensure()
        except FrontDoorError as exc:
            if str(exc) != unreachable:  # once, not every few seconds
                logger.warning('Front door: %s', exc)
                unreachable = str(exc)
        except Exception:  # noqa: BLE001 - the supervisor must outlive any one failure
            logger.exception('Front door: restarting the proxy failed')


def _superviseInBackground():
    global _supervisor
    with _lock:
        _stopSupervising.clear()
        if _supervisor is None or not _supervisor.is_alive():
            _supervisor = threading.Thread(target=_supervise, name='datadns-frontdoor', daemon=True)
            _supervisor.start()


def restoreRoutes():
    """Give a proxy run as a service of its own the routes it lacks; returns how many.

    A restarted configurable-http-proxy has no routes (it keeps them in memory). The
    proxy's routes are read before the notebooks' so that a notebook being stopped
    (moved off ``running`` before its route is removed) is never given its route back;
    one that stops while its route is being added loses it again at once.
    """
    if managed() or _routeSource is None:
        return 0
    have = routes()
    missing = {
        notebookId: target
        for notebookId, target in (_routeSource() or {}).items()
        if have.get(routePath(notebookId)) != target
    }
    if not missing:
        return 0
    url, token = _apiEndpoint()
    for notebookId, target in missing.items():
        _api(url, token, 'POST', f'/api/routes{routePath(notebookId)}', {'target': target})
    for notebookId in set(missing) - set(_routeSource() or {}):
        _api(url, token, 'DELETE', f'/api/routes{routePath(notebookId)}')
    logger.warning(
        'Front door: %d notebook route(s) were missing (did the proxy restart?) and were '
        'added again',
        len(missing),
    )
    return len(missing)


def setRouteSource(source):
    """``source()`` returns ``{notebook id: proxy target}`` of every notebook that should
    have a route; a restarted proxy is given them all."""
    global _routeSource
    _routeSource = source


def managed():
    return bool(settings.get(PluginSettings.FRONTDOOR_MANAGED))


def _managedConfig():
    ip = settings.get(PluginSettings.FRONTDOOR_IP)
    if not ip:
        host = settings.get(PluginSettings.NOTEBOOK_HOST)
        ip = '127.0.0.1' if host in _LOOPBACK else '0.0.0.0'
    return ip, int(settings.get(PluginSettings.FRONTDOOR_PORT) or 0), _girderUrl()


def ensure():
    """Start (or restart) the managed proxy if it does not run as configured.

    A restarted proxy is given every route again. When the proxy is not managed
    here, only the supervisor is started (it restores a restarted proxy's routes).
    """
    global _atexit
    if not managed():
        _superviseInBackground()
        return
    with _lock:
        config = _managedConfig()
        wanted = (config[0], config[1] or _managed.port, config[2])
        if _managed.running() and _managed.config is not None:
            current = (_managed.config[0], _managed.port, _managed.config[2])
            if current == wanted:
                return
        restarted = _managed.process is not None
        try:
            # A restart keeps the port it had, so that links handed out stay valid.
            _managed.start(wanted, _workRoot())
        except FrontDoorError:
            if config[1] or not wanted[1]:
                raise
            _managed.start(config, _workRoot())
        if not _atexit:
            atexit.register(shutdown)
            _atexit = True
        _superviseInBackground()
        if restarted:
            logger.warning('Front door restarted: its routes are added again')
        for notebookId, target in ((_routeSource and _routeSource()) or {}).items():
            try:
                addRoute(notebookId, target)
            except FrontDoorError as exc:
                logger.warning('Front door: no route for notebook %s: %s', notebookId, exc)


def shutdown():
    """Stop the managed proxy and its supervisor (Girder stops)."""
    _stopSupervising.set()
    with _lock:
        _managed.stop()


def _apiEndpoint():
    if managed():
        return _managed.apiUrl(), _managed.token
    url = settings.get(PluginSettings.FRONTDOOR_API_URL)
    if not url:
        raise FrontDoorError(
            'The front door is not managed by this Girder (resolver.frontdoor_managed = false) '
            'and resolver.frontdoor_api_url does not say where its REST API is.'
        )
    return url, os.environ.get('CONFIGPROXY_AUTH_TOKEN', '')


class _Connections(threading.local):
    """One kept-alive connection to the proxy's API per thread (and per API URL).

    configurable-http-proxy's API server keeps connections open (Node's default),
    so a launch's route request need not connect first. A connection the proxy
    closed meanwhile (Node drops idle ones after 5 s) fails on use and is made
    anew, once: every API request here is idempotent (a route set, removed or read).
    """

    def __init__(self):
        self.byUrl = {}


_connections = _Connections()


def _connect(apiUrl):
    parts = urllib.parse.urlsplit(apiUrl)
    if parts.scheme == 'http+unix':
        return open_connection({'socket': urllib.parse.unquote(parts.netloc)}, 5), ''
    connection = open_connection({'host': parts.hostname, 'port': parts.port or 80}, 5)
    return connection, parts.path.rstrip('/')


def _api(apiUrl, token, method, path, body=None):
    """One request to the proxy's REST API; returns the parsed JSON body (or None)."""
    headers = {'Authorization': f'token {token}'}
    data = None
    if body is not None:
        data = json.dumps(body)
        headers['Content-Type'] = 'application/json'
    connection, prefix = _connections.byUrl.pop(apiUrl, (None, ''))
    reused = connection is not None
    while True:
        if connection is None:
            connection, prefix = _connect(apiUrl)
        try:
            connection.request(method, prefix + path, body=data, headers=headers)
            response = connection.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            connection = None
            if reused:
                reused = False  # the proxy closed the kept connection: once more, anew
                continue
            raise FrontDoorError(f'The front door cannot be reached: {error}') from None
        break
    if response.will_close:
        connection.close()
    else:
        _connections.byUrl[apiUrl] = (connection, prefix)
    if response.status >= 400 and not (method == 'DELETE' and response.status == 404):
        raise FrontDoorError(f'The front door answered {response.status} to {method} {path}.')
    return json.loads(payload) if payload else None


def addRoute(notebookId, target):
    """Send ``/notebook/<id>/…`` to ``target`` (``http+unix://…`` or ``http://host:port``)."""
    ensure()
    url, token = _apiEndpoint()
    _api(url, token, 'POST', f'/api/routes{routePath(notebookId)}', {'target': target})


def removeRoute(notebookId):
    """Stop routing ``/notebook/<id>/``: from now on this Girder answers there."""
    if managed() and not _managed.running():
        return  # a proxy that does not run routes nothing; a restart adds only live ones
    url, token = _apiEndpoint()
    _api(url, token, 'DELETE', f'/api/routes{routePath(notebookId)}')


def routes():
    """The proxy's routes: ``{path: target}``."""
    url, token = _apiEndpoint()
    table = _api(url, token, 'GET', '/api/routes') or {}
    return {path: (entry or {}).get('target') for path, entry in table.items()}


def generation():
    """Which proxy process the routes were added to: changes when the managed proxy restarts.

    ``'external'`` for a proxy run as a service of its own (its restarts are not seen here).
    """
    if not managed():
        return 'external'
    return f'{os.getpid()}:{_managed.generation}' if _managed.running() else None


def publicUrl():
    """The front door's URL as browsers reach it, without a trailing slash."""
    configured = settings.get(PluginSettings.FRONTDOOR_URL)
    if configured:
        return configured.rstrip('/')
    host = settings.get(PluginSettings.NOTEBOOK_HOST)
    if ':' in host and not host.startswith('['):
        host = f'[{host}]'
    port = settings.get(PluginSettings.FRONTDOOR_PORT) or _managed.port
    if not port:
        raise FrontDoorError(
            'The front door has not started yet and resolver.frontdoor_port is 0: set '
            'resolver.frontdoor_url (or resolver.frontdoor_port).'
        )
    return f'http://{host}:{port}'
