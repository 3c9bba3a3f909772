"""The front door, end to end: a real Girder on a port, the real configurable-http-proxy,
real sandboxed notebook servers and kernels.

A notebook is reached only at ``<front door>/notebook/<id>/``; the URL a person gets is a
single-use link that Girder trades for a cookie, so the Jupyter token never appears in a
URL; websockets (kernels) work through the proxy; after Stop the address answers with
Girder's "stopped" page at once.
"""

import os
import secrets
import subprocess
import time
import urllib.parse

import pytest
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from datadns.stack import freePort
from girder_resolver import frontdoor
from girder_resolver.launcher.identity import COOKIE_NAME
from girder_resolver.launcher.process import children_of
from girder_resolver.models.notebook import Notebook
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks.local import launcher
from plugin_tests.launcher_helpers import runInKernel
from plugin_tests.test_notebook import FILES, http, launch, makeDataset, makeUser, waitFor


def stopAll():
    deadline = time.monotonic() + 60
    while Notebook().findOne({'status': 'launching'}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)


@pytest.fixture(params=['process', 'docker'])
def running(request, boundServer, admin, user, fsAssetstore, tmp_path):
    """A running notebook of ``user``: (notebook as GET shows it, folder)."""
    Setting().set('resolver.backend', request.param)
    folder, _ = makeDataset(boundServer, admin, fsAssetstore, tmp_path, 'Survey 2016')
    resp = launch(boundServer, user, folder)
    assertStatusOk(resp)
    nb = waitFor(boundServer, user, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    yield nb, folder
    stopAll()


@pytest.mark.plugin('resolver')
def testTheNotebookWorksThroughTheFrontDoorWithoutATokenInAnyUrl(boundServer, user, running):
    nb, _ = running
    doc = Notebook().load(nb['_id'])
    token = doc['token']
    front = frontdoor.publicUrl()
    # The URL is a single-use link at the front door, on Girder's API behind it.
    assert nb['url'].startswith(f'{front}/api/v1/notebook/{nb["_id"]}/open?ticket=')
    assert token not in nb['url']
    # Girder itself answers through the front door (its default target).
    assert http().get(f'{front}/api/v1/system/version').status_code == 200

    browser = http()
    page = browser.get(nb['url'])
    assert page.status_code == 200, page.text
    # Sent on to the default tool's UI (JupyterLab) under /notebook/<id>/, never with the token.
    assert urllib.parse.urlsplit(page.url).path == f'/notebook/{nb["_id"]}/lab'
    for hop in [*page.history, page]:
        assert token not in hop.url
        assert token not in hop.headers.get('Location', '')
    opened = page.history[0]
    assert opened.status_code == 303
    cookie = opened.headers['Set-Cookie']
    assert f'{COOKIE_NAME}=' in cookie and 'HttpOnly' in cookie
    assert f'Path=/notebook/{nb["_id"]}/' in cookie and 'SameSite=Lax' in cookie
    assert opened.headers['Referrer-Policy'] == 'no-referrer'

    # The cookie lets the browser use the contents API: the dataset is listed.
    base = f'{front}/notebook/{nb["_id"]}/'
    listing = browser.get(f'{base}api/contents/Survey 2016')
    assert listing.status_code == 200
    assert {e['name'] for e in listing.json()['content']} == set(FILES) | {'tables'}
    # Cookie-authenticated writes need Jupyter's XSRF token, as in a browser.
    xsrf = browser.cookies.get('_xsrf')
    assert browser.post(f'{base}api/kernels', json={}).status_code == 403
    kernel = browser.post(f'{base}api/kernels', json={}, headers={'X-XSRFToken': xsrf})
    assert kernel.status_code == 201, kernel.text
    # Code runs in a kernel over its websocket, through the proxy, with the cookie.
    wsUrl = base.replace('http://', 'ws://') + f'api/kernels/{kernel.json()["id"]}/channels'
    out = runInKernel(
        wsUrl,
        'print(sum(range(10)))',
        headers=[f'Cookie: {COOKIE_NAME}={token}'],
        origin=front,
    )
    assert out == '45\n'

    # The link works once: a second visit (no Girder login) is refused, and without the
    # cookie the notebook itself is closed.
    again = http().get(nb['url'], allow_redirects=False)
    assert again.status_code == 403
    assert 'used already or has expired' in again.json()['message']
    assert http().get(f'{base}api/contents').status_code == 403
    # A fresh GET of the notebook gives a fresh link.
    fresh = boundServer.request(f'/notebook/{nb["_id"]}', user=user).json['url']
    assert fresh != nb['url']
    assert http().get(fresh).status_code == 200


@pytest.mark.plugin('resolver')
def testRequestsWithABodyGetTheNotebooksOwnAnswerNeverAProxy503(boundServer, running):
    # The proxy used to answer 503 itself to about 1.5 % of these (EPIPE on the notebook's
    # socket, see launcher/unixclose.py): quick refusals most of all. No retry here.
    nb, _ = running
    token = Notebook().load(nb['_id'])['token']
    base = f'{frontdoor.publicUrl()}/notebook/{nb["_id"]}/api/contents/'
    withToken = http()
    withToken.headers['Authorization'] = f'token {token}'
    anonymous = http()
    handle = Notebook().load(nb['_id'])['handle']
    assert withToken.get(base).status_code == 200
    before = _serverSockets(handle)
    assert before >= 1  # its listening socket, at least
    notebook = {
        'type': 'notebook',
        'format': 'json',
        'content': {'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5},
    }
    textFile = {'type': 'file', 'format': 'text', 'content': 'x'}
    answers = {}
    for i in range(100):
        for name, session, url, body, expected in (
            ('save', withToken, f'{base}saved.ipynb', notebook, {200, 201}),
            ('read-only', withToken, f'{base}Survey 2016/new.txt', textFile, {403}),
            ('no login', anonymous, f'{base}saved.ipynb', notebook, {403}),
        ):
            resp = session.put(url, json=body)
            answers.setdefault(name, []).append(resp.status_code)
            assert resp.status_code in expected, (i, name, resp.status_code, resp.text[:200])
    assert sum(len(codes) for codes in answers.values()) == 300
    # The proxy closed every connection and so did the server: it holds no more sockets
    # than before (it keeps each one open until the proxy closes it).
    deadline = time.monotonic() + 5
    while _serverSockets(handle) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _serverSockets(handle) <= before


def _serverSockets(handle):
    """How many sockets the notebook's processes (its sandbox's) hold open, from /proc."""
    if handle['backend'] == 'docker':
        container = launcher('docker').client.containers.get(handle['containerId'])
        top = container.attrs['State']['Pid']
    else:
        top = handle['pid']
    pids, queue = set(), [top]
    while queue:
        pid = queue.pop()
        pids.add(pid)
        queue.extend(child for child, _ in children_of(pid) if child not in pids)
    count = 0
    for pid in pids:
        try:
            fds = os.listdir(f'/proc/{pid}/fd')
        except OSError:
            continue
        for fd in fds:
            try:
                count += os.readlink(f'/proc/{pid}/fd/{fd}').startswith('socket:')
            except OSError:
                pass
    return count


@pytest.mark.plugin('resolver')
def testATicketOpensOnlyItsOwnNotebookAndForgedOnesFail(boundServer, user, running):
    nb, _ = running
    ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(nb['url']).query)['ticket'][0]
    front = frontdoor.publicUrl()
    expires, nonce, signature = ticket.split('.')
    forged = [
        f'{int(expires) + 60}.{nonce}.{signature}',
        f'{expires}.{nonce}x.{signature}',
        f'{expires}.{nonce}.{signature[:-2]}AA',
        'not-a-ticket',
    ]
    for bad in forged:
        resp = http().get(
            f'{front}/api/v1/notebook/{nb["_id"]}/open',
            params={'ticket': bad},
            allow_redirects=False,
        )
        assert resp.status_code == 403, bad
    other = makeUser('other')
    assertStatus(boundServer.request(f'/notebook/{nb["_id"]}/open', user=other), 403)
    # Its owner, logged in to Girder, may open it without a ticket.
    resp = boundServer.request(f'/notebook/{nb["_id"]}/open', user=user, isJson=False)
    assertStatus(resp, 303)


@pytest.mark.plugin('resolver')
def testAfterStopTheAddressSaysStoppedAtOnce(boundServer, user, running):
    nb, folder = running
    browser = http()
    assert browser.get(nb['url']).status_code == 200
    base = f'{frontdoor.publicUrl()}/notebook/{nb["_id"]}/'
    assert browser.get(f'{base}api/contents').status_code == 200

    assertStatusOk(boundServer.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user))

    api = browser.get(f'{base}api/contents')
    assert api.status_code == 410
    assert 'stopped' in api.json()['message']
    page = browser.get(f'{base}tree')
    assert page.status_code == 200
    assert 'This notebook was stopped' in page.text
    assert f'#folder/{folder["_id"]}' in page.text
    assert f'/notebook/{nb["_id"]}' not in frontdoor.routes()
    # And its open link no longer opens anything.
    assert http().get(nb['url'], allow_redirects=False).status_code == 409


@pytest.mark.plugin('resolver')
def testARestartedFrontDoorGetsTheRoutesBack(boundServer, running):
    nb, _ = running
    path = f'/notebook/{nb["_id"]}'
    assert path in frontdoor.routes()
    frontdoor.shutdown()
    frontdoor.ensure()
    assert path in frontdoor.routes()
    assert http().get(nb['url']).status_code == 200


class ExternalFrontDoor:
    """configurable-http-proxy run beside Girder, as docker-compose.yml runs it: its REST
    API on a TCP port, the token in its environment and in Girder's."""

    def __init__(self, girderUrl, logPath):
        self.port, self.apiPort = freePort(), freePort()
        self.token = secrets.token_hex(24)
        self.girderUrl = girderUrl
        self.logPath = logPath
        self.proc = None

    def start(self):
        binary = frontdoor._binary()
        assert binary, 'configurable-http-proxy is not installed (scripts/setup.sh)'
        with open(self.logPath, 'ab') as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    '--ip=127.0.0.1',
                    f'--port={self.port}',
                    '--api-ip=127.0.0.1',
                    f'--api-port={self.apiPort}',
                    f'--default-target={self.girderUrl}',
                    '--log-level=warn',
                ],
                env={'PATH': os.environ['PATH'], 'CONFIGPROXY_AUTH_TOKEN': self.token},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 15
        while True:
            try:
                frontdoor._api(self.apiUrl(), self.token, 'GET', '/api/routes')
                return self
            except frontdoor.FrontDoorError:
                assert self.proc.poll() is None and time.monotonic() < deadline, (
                    self.logPath.read_text()
                )
                time.sleep(0.05)

    def apiUrl(self):
        return f'http://127.0.0.1:{self.apiPort}'

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def externalDoor(boundServer, monkeypatch, tmp_path):
    import cherrypy

    door = ExternalFrontDoor(
        f'http://127.0.0.1:{cherrypy.server.socket_port}', tmp_path / 'chp.log'
    )
    door.start()
    monkeypatch.setenv('CONFIGPROXY_AUTH_TOKEN', door.token)
    monkeypatch.setattr(frontdoor, 'SUPERVISE_INTERVAL', 0.2)
    Setting().set('resolver.frontdoor_managed', False)
    Setting().set('resolver.frontdoor_api_url', door.apiUrl())
    Setting().set('resolver.frontdoor_url', f'http://127.0.0.1:{door.port}')
    yield door
    stopAll()
    door.stop()


@pytest.mark.plugin('resolver')
def testAFrontDoorRunAsAServiceOfItsOwnGetsItsRoutesBackAfterARestart(
    boundServer, admin, user, fsAssetstore, tmp_path, externalDoor
):
    """docker-compose.yml's front door: Girder drives it over its TCP API with the token
    from its environment; restarted (empty), it is given the running notebooks' routes
    again; a stopped notebook's route is never put back."""
    Setting().set('resolver.backend', 'process')
    folder, _ = makeDataset(boundServer, admin, fsAssetstore, tmp_path, 'Survey 2016')
    resp = launch(boundServer, user, folder)
    assertStatusOk(resp)
    nb = waitFor(boundServer, user, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    path = f'/notebook/{nb["_id"]}'
    front = f'http://127.0.0.1:{externalDoor.port}'
    assert nb['url'].startswith(f'{front}/api/v1/notebook/{nb["_id"]}/open?ticket=')
    assert path in frontdoor.routes()
    assert http().get(nb['url']).status_code == 200
    # Without the token the proxy's API refuses.
    with pytest.raises(frontdoor.FrontDoorError, match='403'):
        frontdoor._api(externalDoor.apiUrl(), 'not-the-token', 'GET', '/api/routes')

    externalDoor.stop()
    externalDoor.start()  # same ports, no routes
    deadline = time.monotonic() + 15
    while path not in frontdoor.routes():
        assert time.monotonic() < deadline, 'the restarted front door did not get its route'
        time.sleep(0.1)
    fresh = boundServer.request(f'/notebook/{nb["_id"]}', user=user).json['url']
    browser = http()
    assert browser.get(fresh).status_code == 200
    assert browser.get(f'{front}{path}/api/contents').status_code == 200

    assertStatusOk(boundServer.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user))
    assert path not in frontdoor.routes()
    time.sleep(1)  # several supervisor rounds
    assert path not in frontdoor.routes()
    assert browser.get(f'{front}{path}/api/contents').status_code == 410
