"""Federated launch: a central asks a site to run a person's notebook next to the data.

Real Girder processes (``datadns.federation``: a central and one site on the
session's SecantusDB, databases of their own), the site provisioned with the
sample data and registered at the central with a launch-scoped API key of the
site as its credential, as feder8 does. Notebooks run at the site with the
process backend.
"""

import json
import socket
import time
import urllib.parse

import pymongo
import pytest

from plugin_tests.federation_helpers import http, person, siteBehindCentral

SITE = 'site-a'
GALAXIES = 'doi:10.5072/datadns.galaxies'
OCEAN = 'hdl:20.500.12345/ocean-temps'
TURBULENCE = 'doi:10.5072/datadns.turbulence'


@pytest.fixture(scope='module')
def fed(mongoUri, tmp_path_factory):
    with siteBehindCentral(
        mongoUri, tmp_path_factory.mktemp('notebook-federation'), 'nbfed', SITE
    ) as federation:
        federation.responses = []
        yield federation


def call(fed, gc, method, path, **params):
    """A raw request through ``gc``'s login; the response text is kept for the leak check."""
    resp = http().request(
        method,
        f'{gc.urlBase}{path}',
        params=params,
        headers={'Girder-Token': gc.token},
        timeout=60,
    )
    fed.responses.append(resp.text)
    return resp


def waitRunning(fed, gc, notebookId, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        resp = call(fed, gc, 'GET', f'notebook/{notebookId}')
        assert resp.status_code == 200, resp.text
        if resp.json()['status'] in ('running', 'error', 'stopped'):
            return resp.json()
        assert time.monotonic() < deadline, resp.json()
        time.sleep(0.3)


def frontDoorBase(nb):
    """``<site front door>/notebook/<site's id>/``, from the notebook's open link."""
    parts = urllib.parse.urlsplit(nb['url'])
    siteId = parts.path.split('/')[4]  # /api/v1/notebook/<id>/open
    return f'{parts.scheme}://{parts.netloc}/notebook/{siteId}/'


def contents(nb, path=''):
    """Open the notebook's link as a browser would, then list ``path`` with its cookie."""
    session = http()
    opened = session.get(nb['url'], timeout=30)
    assert opened.status_code == 200, opened.text
    assert urllib.parse.urlsplit(opened.url).path.startswith('/notebook/')
    return session.get(f'{frontDoorBase(nb)}api/contents/{urllib.parse.quote(path)}', timeout=10)


def stoppedAtTheFrontDoor(nb):
    """The site's front door answers for the notebook with its "stopped" answer (410)."""
    return http().get(f'{frontDoorBase(nb)}api/contents', timeout=10).status_code == 410


def testALaunchAtTheCentralRunsEachPersonsOwnNotebookAtTheSite(fed):
    alice = person(fed, 'central', 'alice')
    bob = person(fed, 'central', 'bobby')
    aliceId = alice.get('user/me')['_id']

    resp = call(fed, alice, 'POST', 'resolve/launch', id=GALAXIES)
    assert resp.status_code == 200, resp.text
    launched = resp.json()
    assert launched['site'] == SITE
    assert launched['identity'] == f'central:{aliceId}'
    nb = waitRunning(fed, alice, launched['_id'])
    assert nb['status'] == 'running', nb['message']
    assert nb['url'].startswith('http://127.0.0.1:')
    listing = contents(nb, 'Galaxy survey')
    assert listing.status_code == 200
    assert {e['name'] for e in listing.json()['content']} == {
        'README.md',
        'part-1.csv',
        'part-2.csv',
    }

    # At the site, the notebook is keyed by alice's federation identity.
    atSite = fed.clients[SITE].get('notebook')
    assert [n['identity'] for n in atSite] == [f'central:{aliceId}']

    # Resolving the same identifier again finds the same notebook.
    again = call(
        fed, alice, 'POST', 'resolve/launch', id='https://doi.org/10.5072/DATADNS.GALAXIES'
    )
    assert again.json()['_id'] == launched['_id']

    # Bob gets his own, at the site too.
    bobs = call(fed, bob, 'POST', 'resolve/launch', id=GALAXIES, site=SITE).json()
    assert bobs['_id'] != launched['_id']
    bobs = waitRunning(fed, bob, bobs['_id'])
    assert bobs['url'] != nb['url']
    assert call(fed, bob, 'GET', f'notebook/{launched["_id"]}').status_code == 403
    assert len(fed.clients[SITE].get('notebook', parameters={'live': 'true'})) == 2

    # Stopping through the central stops it at the site.
    stopped = call(fed, alice, 'DELETE', f'notebook/{launched["_id"]}')
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()['status'] == 'stopped'
    remote = [n for n in fed.clients[SITE].get('notebook') if n['identity'].endswith(aliceId)]
    assert [n['status'] for n in remote] == ['stopped']
    assert stoppedAtTheFrontDoor(nb)
    # A notebook stopped at the site (say, culled there) shows as stopped at the central.
    fed.clients[SITE].delete(f'notebook/{bobs["remoteId"]}')
    assert call(fed, bob, 'GET', f'notebook/{bobs["_id"]}').json()['status'] == 'stopped'


def testTheLaunchCredentialDoesNothingElseAtTheSite(fed):
    site = fed.girders[SITE].apiUrl
    token = http().post(f'{site}/api_key/token', data={'key': fed.launchKey}).json()
    headers = {'Girder-Token': token['authToken']['token']}
    folderId = fed.datasets[SITE][0][2]['_id']
    # Not as a person: it has no user access.
    assert http().get(f'{site}/user/me', headers=headers).json() is None
    assert http().post(f'{site}/collection', headers=headers, params={'name': 'x'}).status_code in (
        401,
        403,
    )
    # Only on someone's behalf, and never for the site's own users.
    resp = http().post(f'{site}/notebook', headers=headers, params={'folderId': folderId})
    assert resp.status_code == 400
    assert 'onBehalfOf' in resp.json()['message']
    resp = http().post(
        f'{site}/notebook',
        headers=headers,
        params={'folderId': folderId, 'onBehalfOf': f'{SITE}:{"a" * 24}'},
    )
    assert resp.status_code == 403
    resp = http().post(
        f'{site}/notebook',
        headers=headers,
        params={'folderId': folderId, 'onBehalfOf': 'central:{"$ne": 1}'},
    )
    assert resp.status_code == 400


def testNoHealthySiteIsA503AndAFailingSiteA502WithNothingLeftBehind(fed, mongoUri):
    alice = person(fed, 'central', 'alice')
    central = fed.clients['central']
    central.post(
        'resolver/site',
        json={
            'name': 'site-gone',
            'apiUrl': f'http://127.0.0.1:{_closedPort()}/api/v1',
            'credential': 'no-such-key',
            'mode': 'full',
            'datasets': [
                {'identifier': 'doi:10.5072/only.gone', 'folderId': 'a' * 24, 'name': 'Gone'},
                {'identifier': 'doi:10.5072/only.silent', 'folderId': 'b' * 24, 'name': 'Silent'},
            ],
        },
    )
    before = len(call(fed, alice, 'GET', 'notebook').json())
    resp = call(fed, alice, 'POST', 'resolve/launch', id='doi:10.5072/only.gone')
    assert resp.status_code == 502
    assert 'site-gone' in resp.json()['message']
    assert len(call(fed, alice, 'GET', 'notebook').json()) == before

    db = pymongo.MongoClient(mongoUri)['nbfed_central']
    db['resolver_site'].update_one({'name': 'site-gone'}, {'$set': {'lastHeartbeat': _longAgo()}})
    # Written behind the central's back: it may reuse its last read of the site for up
    # to resolver.cache_seconds (2 s), as it would between two heartbeats.
    time.sleep(2.1)
    resp = call(fed, alice, 'POST', 'resolve/launch', id='doi:10.5072/only.silent')
    assert resp.status_code == 503
    assert 'No healthy site' in resp.json()['message']
    assert call(fed, alice, 'POST', 'resolve/launch', id='doi:10.5072/unknown').status_code == 404
    assert call(fed, alice, 'POST', 'resolve/launch', id='not an id').status_code == 400
    anonymous = http().post(f'{fed.girders["central"].apiUrl}/resolve/launch', params={'id': OCEAN})
    assert anonymous.status_code == 401


def testLaunchProgressStreamsAsServerSentEvents(fed):
    site = fed.clients[SITE]
    folderId = next(f['_id'] for name, ident, f in fed.datasets[SITE] if ident == OCEAN)
    nb = site.post('notebook', parameters={'folderId': folderId})
    started = time.monotonic()
    events = []
    with http().get(
        f'{site.urlBase}notebook/{nb["_id"]}/events',
        headers={'Girder-Token': site.token},
        stream=True,
        timeout=90,
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers['Content-Type'].startswith('text/event-stream')
        for line in resp.iter_lines():
            if line.startswith(b'data: '):
                events.append((time.monotonic() - started, json.loads(line[6:])))
    statuses = [e['status'] for _, e in events]
    assert statuses[-1] == 'running'
    assert statuses[0] == 'launching'
    assert 'Waiting for Jupyter to answer' in [e['message'] for _, e in events]
    # Streamed as they happen, not all at once at the end.
    assert events[-1][0] - events[0][0] > 0.3
    site.delete(f'notebook/{nb["_id"]}')


def testTheCredentialNeverAppearsInAnyResponse(fed):
    central = fed.clients['central']
    fed.responses.append(json.dumps(central.get('resolver/site')))
    fed.responses.append(json.dumps(central.get('notebook')))
    assert fed.responses
    for text in fed.responses:
        assert fed.launchKey not in text
        assert 'credential"' not in text


def _closedPort():
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _longAgo():
    import datetime

    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
