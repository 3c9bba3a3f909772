"""Federation trust, tried as an attacker would: real Girders on loopback, real HTTP.

A central and one site (``datadns.federation``), the site's launch credential
made as feder8 makes it (a launch-scoped key of the site's non-admin federation
service account); fake sites are tiny HTTP servers in this process, and
"no connection was made" is checked on a listening socket nobody accepts on:
any connection would be waiting in its backlog.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pymongo
import pytest

from datadns.federation import apiKey
from feder8.sidecar import Config, Sidecar
from girder_resolver.constants import LAUNCH_SCOPE
from plugin_tests.federation_helpers import (
    eventually,
    http,
    liveAt,
    person,
    registerSite,
    siteBehindCentral,
    stopLiveAt,
)

SITE = 'site-a'
GALAXIES = 'doi:10.5072/datadns.galaxies'
OCEAN = 'hdl:20.500.12345/ocean-temps'
SOMEONE = 'central:' + 'a' * 24


@pytest.fixture(scope='module')
def fed(mongoUri, tmp_path_factory):
    with siteBehindCentral(
        mongoUri, tmp_path_factory.mktemp('federation-trust'), 'fedtrust', SITE
    ) as federation:
        yield federation


def tokenOf(apiUrl, key):
    resp = http().post(f'{apiUrl}/api_key/token', data={'key': key}, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()['authToken']['token']


def folderOf(fed, identifier):
    return next(f for _name, ident, f in fed.datasets[SITE] if ident == identifier)


def siteLaunch(fed, token, folderId, onBehalfOf=None):
    params = {'folderId': folderId}
    if onBehalfOf is not None:
        params['onBehalfOf'] = onBehalfOf
    return http().post(
        f'{fed.girders[SITE].apiUrl}/notebook',
        params=params,
        headers={'Girder-Token': token},
        timeout=30,
    )


def stopAllAtSite(fed):
    """Stop every live notebook at the site and wait until none is live.

    A notebook stopped while it still starts stays 'stopping' until its launch
    thread has released what it started.
    """
    stopLiveAt(fed, SITE)
    eventually(lambda: liveAt(fed, SITE) == [], 60, 'no live notebook at the site')


# Delegation ------------------------------------------------------------------------------


def testAKeyMadeByAnOrdinaryUserWithAnyScopeCannotLaunchOnAnyonesBehalf(fed):
    mallory = person(fed, SITE, 'mallory')
    folderId = folderOf(fed, GALAXIES)['_id']
    before = len(liveAt(fed, SITE))
    for scope in ([LAUNCH_SCOPE], None, [LAUNCH_SCOPE, 'core.data.read']):
        key = apiKey(mallory, f'my launch key {scope}', scope=scope)
        token = tokenOf(fed.girders[SITE].apiUrl, key)
        for identity in (SOMEONE, 'elsewhere:' + 'b' * 24):
            resp = siteLaunch(fed, token, folderId, onBehalfOf=identity)
            assert resp.status_code == 403, (scope, resp.text)
            assert 'behalf' in resp.json()['message']
    assert len(liveAt(fed, SITE)) == before


def testTheSiteCredentialLaunchesOnlyOnTheDatasetsTheSitePublished(fed):
    site = fed.clients[SITE]
    token = tokenOf(fed.girders[SITE].apiUrl, fed.launchKey)
    collection = site.get('collection', parameters={'limit': 0})[0]
    untagged = site.createFolder(
        collection['_id'], 'Public but not a dataset', parentType='collection', public=True
    )
    resp = siteLaunch(fed, token, untagged['_id'], onBehalfOf=SOMEONE)
    assert resp.status_code == 403
    assert 'published' in resp.json()['message']
    # A private dataset the site did not publish: the service account cannot even read it.
    private = site.createFolder(
        collection['_id'], 'Embargoed', parentType='collection', public=False
    )
    site.addMetadataToFolder(private['_id'], {'identifier': 'doi:10.5072/embargoed.trust'})
    resp = siteLaunch(fed, token, private['_id'], onBehalfOf=SOMEONE)
    assert resp.status_code == 403
    assert liveAt(fed, SITE) == []
    # A published one works.
    resp = siteLaunch(fed, token, folderOf(fed, OCEAN)['_id'], onBehalfOf=SOMEONE)
    assert resp.status_code == 200, resp.text
    stopAllAtSite(fed)


def testAnIdentityOfAnotherCentralIsRefusedWithThisCentralsCredential(fed):
    token = tokenOf(fed.girders[SITE].apiUrl, fed.launchKey)
    folderId = folderOf(fed, GALAXIES)['_id']
    resp = siteLaunch(fed, token, folderId, onBehalfOf='other-central:' + 'c' * 24)
    assert resp.status_code == 403
    message = resp.json()['message']
    assert '"central"' in message and 'other-central' in message
    # A name collision says what to change.
    resp = siteLaunch(fed, token, folderId, onBehalfOf=f'{SITE}:' + 'c' * 24)
    assert resp.status_code == 403
    assert 'resolver.site_name' in resp.json()['message']
    assert liveAt(fed, SITE) == []


def testTwoPeoplesLaunchesAtTheSameSiteAndFolderNeverReturnEachOthersNotebook(fed):
    folderId = folderOf(fed, GALAXIES)['_id']
    # A person of the site launches their own notebook on the folder...
    local = person(fed, SITE, 'localresearcher')
    mine = local.post('notebook', parameters={'folderId': folderId})
    # ...and the central launches for two of its people on the same folder.
    alice, bob = person(fed, 'central', 'alice'), person(fed, 'central', 'bobby')
    launched = {}
    for gc in (alice, bob):
        resp = http().post(
            f'{gc.urlBase}resolve/launch',
            params={'id': GALAXIES, 'site': SITE},
            headers={'Girder-Token': gc.token},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        launched[gc.get('user/me')['login']] = resp.json()
    remoteIds = {nb['remoteId'] for nb in launched.values()}
    assert len(remoteIds) == 2 and mine['_id'] not in remoteIds
    # Each launch again finds their own.
    again = http().post(
        f'{alice.urlBase}resolve/launch',
        params={'id': GALAXIES},
        headers={'Girder-Token': alice.token},
        timeout=60,
    )
    assert again.json()['_id'] == launched['alice']['_id']
    assert local.post('notebook', parameters={'folderId': folderId})['_id'] == mine['_id']
    # Nobody reaches another's: not the site's own person, nor someone minting a key.
    assert (
        http()
        .get(f'{local.urlBase}notebook/{launched["alice"]["remoteId"]}', headers=hdr(local))
        .status_code
        == 403
    )
    mallory = person(fed, SITE, 'mallory')
    token = tokenOf(fed.girders[SITE].apiUrl, apiKey(mallory, 'steal', scope=[LAUNCH_SCOPE]))
    aliceIdentity = f'central:{alice.get("user/me")["_id"]}'
    resp = siteLaunch(fed, token, folderId, onBehalfOf=aliceIdentity)
    assert resp.status_code == 403
    assert launched['alice']['remoteId'] not in resp.text
    stopAllAtSite(fed)


def hdr(gc):
    return {'Girder-Token': gc.token}


# What a site answers -----------------------------------------------------------------------


class FakeSite:
    """A tiny HTTP server pretending to be a site: it answers a launch with ``answer``."""

    def __init__(self, answer=None, redirect=None, error=None):
        self.answer = answer
        self.redirect = redirect
        self.error = error
        self.requests = []
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code, body=None, headers=()):
                data = json.dumps(body).encode() if body is not None else b''
                self.send_response(code)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _any(self):
                length = int(self.headers.get('Content-Length') or 0)
                body = self.rfile.read(length).decode(errors='replace')
                site.requests.append((self.command, self.path, body))
                if self.path.startswith('/api/v1/api_key/token'):
                    return self._reply(200, {'authToken': {'token': 'fake-token'}})
                if site.redirect:
                    return self._reply(302, {}, [('Location', site.redirect)])
                if site.error:
                    return self._reply(*site.error)
                if self.command == 'DELETE':
                    return self._reply(200, {**site.answer, 'status': 'stopped'})
                return self._reply(200, site.answer)

            do_GET = do_POST = do_PUT = do_DELETE = _any

        self.server = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.apiUrl = f'http://127.0.0.1:{self.server.server_address[1]}/api/v1'
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """A socket that listens and never accepts: a connection to it would stay queued."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]

    def connected(self):
        self.sock.settimeout(0.3)
        try:
            conn, _ = self.sock.accept()
        except TimeoutError:
            return False
        conn.close()
        return True

    def close(self):
        self.sock.close()


def remoteAnswer(url, status='running'):
    return {'_id': 'e' * 24, 'status': status, 'url': url, 'message': 'Running'}


def centralNotebooks(fed, mongoUri):
    db = pymongo.MongoClient(mongoUri)['fedtrust_central']
    return db['resolver_notebook'].count_documents({})


@pytest.mark.parametrize(
    'url',
    [
        'javascript:alert(document.cookie)',
        'data:text/html,<script>alert(1)</script>',
        'http://evil.example.org/notebook/x/?token=abc',
        'http://user@127.0.0.1/notebook/',
        'JaVaScRiPt:alert(1)',
    ],
)
def testASiteAnsweringWithAnUnsafeNotebookUrlStoresNothingAndSaysSo(fed, mongoUri, url):
    fake = FakeSite(remoteAnswer(url))
    name = 'fake-' + str(abs(hash(url)) % 10**6)
    ident = f'doi:10.5072/fake.{name}'
    try:
        resp = registerSite(
            fed,
            name,
            fake.apiUrl,
            'fake-credential',
            datasets=[{'identifier': ident, 'folderId': 'f' * 24, 'name': 'Fake'}],
        )
        assert resp.status_code == 200, resp.text
        before = centralNotebooks(fed, mongoUri)
        alice = person(fed, 'central', 'alice')
        resp = http().post(
            f'{alice.urlBase}resolve/launch', params={'id': ident}, headers=hdr(alice), timeout=60
        )
        assert resp.status_code == 502
        message = resp.json()['message']
        assert f'Site "{name}"' in message and 'will not open' in message
        assert 'alert' not in message and '<script>' not in message
        assert centralNotebooks(fed, mongoUri) == before
        # The site was asked to stop what it started.
        assert any(method == 'DELETE' for method, _path, _body in fake.requests)
    finally:
        fake.close()


def testASitesRedirectIsNotFollowed(fed):
    target = Listener()
    fake = FakeSite(redirect=f'http://127.0.0.1:{target.port}/api/v1/notebook')
    ident = 'doi:10.5072/fake.redirect'
    try:
        registerSite(
            fed,
            'redirecting',
            fake.apiUrl,
            'fake-credential',
            datasets=[{'identifier': ident, 'folderId': 'f' * 24, 'name': 'Fake'}],
        )
        alice = person(fed, 'central', 'alice')
        resp = http().post(
            f'{alice.urlBase}resolve/launch', params={'id': ident}, headers=hdr(alice), timeout=60
        )
        assert resp.status_code == 502
        assert 'redirect' in resp.json()['message']
        assert not target.connected()
    finally:
        fake.close()
        target.close()


def testASitesErrorBodyIsNotEchoedBeyondAShortSanitizedMessage(fed):
    hostile = '<script>alert(1)</script>\u202e\x1b[31m' + 'x' * 5000
    fake = FakeSite(error=(400, {'message': hostile, 'trace': 'secret stack trace'}))
    ident = 'doi:10.5072/fake.noisy'
    try:
        registerSite(
            fed,
            'noisy',
            fake.apiUrl,
            'fake-credential',
            datasets=[{'identifier': ident, 'folderId': 'f' * 24, 'name': 'Fake'}],
        )
        alice = person(fed, 'central', 'alice')
        resp = http().post(
            f'{alice.urlBase}resolve/launch', params={'id': ident}, headers=hdr(alice), timeout=60
        )
        assert resp.status_code == 400
        message = resp.json()['message']
        assert message.startswith('Site "noisy" could not launch the notebook')
        assert len(message) < 400
        assert '\u202e' not in message and '\x1b' not in message
        assert 'secret stack trace' not in message
    finally:
        fake.close()


# No SSRF ----------------------------------------------------------------------------------


def setCentral(fed, key, value):
    fed.clients['central'].put(
        'system/setting', parameters={'key': key, 'value': json.dumps(value)}
    )


def testApiUrlsOnAddressesNobodyAllowedAreRefusedBeforeAnyConnection(fed):
    listener = Listener()
    allowed = fed.clients['central'].get(
        'system/setting', parameters={'key': 'resolver.allowed_site_hosts'}
    )
    try:
        setCentral(fed, 'resolver.allowed_site_hosts', [])
        refused = [
            f'http://127.0.0.1:{listener.port}/api/v1',
            f'https://127.0.0.1:{listener.port}/api/v1',
            f'https://localhost:{listener.port}/api/v1',
            f'https://[::ffff:127.0.0.1]:{listener.port}/api/v1',
            'https://169.254.169.254/latest/meta-data',
            'https://[fe80::1]/api/v1',
            'https://10.0.0.1/api/v1',
            'https://172.16.5.4/api/v1',
            'https://192.168.1.1/api/v1',
            'https://100.64.0.1/api/v1',
            'https://[fd00::1]/api/v1',
            'https://0.0.0.0/api/v1',
            'http://site.example.org/api/v1',
            'https://user:pw@site.example.org/api/v1',
        ]
        for url in refused:
            resp = registerSite(fed, 'sneaky', url, 'a-credential', datasets=[])
            assert resp.status_code == 400, (url, resp.text)
        assert 'sneaky' not in {s['name'] for s in fed.clients['central'].get('resolver/site')}
        # Allowed by name or range, the same addresses are accepted.
        setCentral(fed, 'resolver.allowed_site_hosts', ['127.0.0.0/8'])
        resp = registerSite(fed, 'sneaky', f'http://127.0.0.1:{listener.port}/api/v1', datasets=[])
        assert resp.status_code == 200, resp.text
        # A host allowed when it registered but not any more: refused at launch, unreached.
        registerSite(
            fed,
            'sneaky',
            f'http://127.0.0.1:{listener.port}/api/v1',
            'a-credential',
            datasets=[{'identifier': 'doi:10.5072/sneaky', 'folderId': 'f' * 24, 'name': 'S'}],
        )
        setCentral(fed, 'resolver.allowed_site_hosts', [])
        time.sleep(2.1)  # other processes' settings caches
        alice = person(fed, 'central', 'alice')
        resp = http().post(
            f'{alice.urlBase}resolve/launch',
            params={'id': 'doi:10.5072/sneaky'},
            headers=hdr(alice),
            timeout=60,
        )
        assert resp.status_code == 502
        assert 'resolver.allowed_site_hosts' in resp.json()['message']
        assert not listener.connected()
    finally:
        setCentral(fed, 'resolver.allowed_site_hosts', allowed)
        fed.clients['central'].delete('resolver/site/sneaky')
        listener.close()


# Credentials at rest ------------------------------------------------------------------------


def testTheCredentialsPlaintextIsNowhereInTheCentralsDatabase(fed, mongoUri):
    db = pymongo.MongoClient(mongoUri)['fedtrust_central']
    dump = []
    for name in db.list_collection_names():
        for doc in db[name].find():
            dump.append(json.dumps(doc, default=str))
    text = '\n'.join(dump)
    assert 'credentialSealed' in text
    assert fed.launchKey not in text
    assert 'fake-credential' not in text


def testAReRegistrationWithANewApiUrlAndNoCredentialSendsNothingThere(fed):
    first, moved = FakeSite(remoteAnswer(None, 'launching')), Listener()
    ident = 'doi:10.5072/fake.moving'
    datasets = [{'identifier': ident, 'folderId': 'f' * 24, 'name': 'Moving'}]
    try:
        registerSite(fed, 'moving', first.apiUrl, 'moving-credential', datasets=datasets)
        [site] = [s for s in fed.clients['central'].get('resolver/site') if s['name'] == 'moving']
        assert site['hasCredential'] is True
        registerSite(fed, 'moving', f'http://127.0.0.1:{moved.port}/api/v1', datasets=datasets)
        [site] = [s for s in fed.clients['central'].get('resolver/site') if s['name'] == 'moving']
        assert site['hasCredential'] is False
        alice = person(fed, 'central', 'alice')
        resp = http().post(
            f'{alice.urlBase}resolve/launch', params={'id': ident}, headers=hdr(alice), timeout=60
        )
        assert resp.status_code == 502
        assert 'no launch credential' in resp.json()['message']
        assert not moved.connected()
        assert first.requests == []
    finally:
        first.close()
        moved.close()


def testFeder8RotateReplacesTheCredential(fed):
    sidecarEnv = fed.feder8(SITE).settings
    result = subprocess.run(
        [sys.executable, '-m', 'feder8', 'rotate'],
        env={**os.environ, **sidecarEnv},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert f'rotated the launch credential of site "{SITE}"' in result.stdout
    old = fed.launchKey
    assert http().post(
        f'{fed.girders[SITE].apiUrl}/api_key/token', data={'key': old}, timeout=10
    ).status_code in (400, 401)
    # The central launches with the new one.
    alice = person(fed, 'central', 'alice')
    resp = http().post(
        f'{alice.urlBase}resolve/launch',
        params={'id': OCEAN, 'site': SITE},
        headers=hdr(alice),
        timeout=60,
    )
    assert resp.status_code == 200, resp.text
    assert old not in result.stdout + result.stderr
    stopAllAtSite(fed)


def testAPrivateDatasetPublishedWithIncludePrivateIsReadableByTheServiceAccountOnly(fed):
    site = fed.clients[SITE]
    collection = site.get('collection', parameters={'limit': 0})[0]
    private = site.createFolder(
        collection['_id'], 'Published private', parentType='collection', public=False
    )
    site.addMetadataToFolder(private['_id'], {'identifier': 'doi:10.5072/published.private'})
    sidecar = Sidecar(
        Config(
            siteName=SITE,
            girderUrl=fed.girders[SITE].apiUrl,
            girderApiKey=fed.keys[SITE],
            publicUrl=fed.girders[SITE].apiUrl,
            centralUrl=fed.girders['central'].apiUrl,
            centralApiKey=fed.keys['central'],
            includePrivate=True,
        )
    )
    sidecar.settleSiteName()
    # The site's current launch credential (feder8 reuses it: same account, same key).
    token = tokenOf(fed.girders[SITE].apiUrl, sidecar.ensureCredential())
    assert siteLaunch(fed, token, private['_id'], onBehalfOf=SOMEONE).status_code == 403
    snapshot = sidecar.snapshot()
    assert any(folderId == private['_id'] for _ident, folderId in snapshot)
    access = site.get(f'folder/{private["_id"]}/access')
    service = site.get('system/setting', parameters={'key': 'resolver.federation_service'})
    assert [(u['id'], u['level']) for u in access['users'] if u['id'] == service['userId']] == [
        (service['userId'], 0)
    ]
    # Now the credential gets past READ and the published-dataset check: the folder has
    # no data on disk, so the site answers that (422) rather than a refusal.
    resp = siteLaunch(fed, token, private['_id'], onBehalfOf=SOMEONE)
    assert resp.status_code in (200, 422), resp.text
    stopAllAtSite(fed)
    # Another user of the site still cannot read it.
    mallory = person(fed, SITE, 'mallory')
    assert (
        http().get(f'{mallory.urlBase}folder/{private["_id"]}', headers=hdr(mallory)).status_code
        == 403
    )
