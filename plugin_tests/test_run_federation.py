"""Federated runs: a central sends a batch run to the site that holds the data.

Real Girder processes (``datadns.federation``: a central and one site on the
session's SecantusDB), the site registered at the central with its launch
credential as feder8 registers it; runs execute at the site with the process
backend. The site keeps the results; the central's record follows the run's
status and links to the results folder there. A fake site (a tiny HTTP server,
as in test_federation_trust.py) answers with hostile results URLs.
"""

import datetime
import io
import time

import pymongo
import pytest
from bson import ObjectId

from datadns import sample
from plugin_tests.federation_helpers import http, person, registerSite, siteBehindCentral
from plugin_tests.test_federation_trust import FakeSite

SITE = 'site-a'
GALAXIES = 'doi:10.5072/datadns.galaxies'
OCEAN = 'hdl:20.500.12345/ocean-temps'


@pytest.fixture(scope='module')
def fed(mongoUri, tmp_path_factory):
    home = tmp_path_factory.mktemp('run-federation')
    with siteBehindCentral(mongoUri, home, 'runfed', SITE) as federation:
        # The central keeps people's files too (a script to run at the site).
        sample.ensureAssetstore(federation.clients['central'], home / 'central-assetstore')
        yield federation


def call(gc, method, path, data=None, **params):
    return http().request(
        method,
        f'{gc.urlBase}{path}',
        params=params,
        data=data,
        headers={'Girder-Token': gc.token},
        timeout=60,
    )


def waitFor(gc, runId, statuses, timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        resp = call(gc, 'GET', f'run/{runId}')
        assert resp.status_code == 200, resp.text
        run = resp.json()
        if run['status'] in statuses:
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.3)


def privateFolder(gc):
    me = gc.get('user/me')
    return next(gc.listFolder(me['_id'], parentFolderType='user', name='Private'))


@pytest.mark.timeout(300)
def testARunThroughTheCentralWritesItsResultsAtTheSiteAndTheCentralLinksToThem(fed):
    alice = person(fed, 'central', 'alice')
    aliceId = alice.get('user/me')['_id']
    # A script from alice's files at the central: its text is what the site runs.
    script = b'echo "counting at the site"\nwc -l "$DATASET_DIR"/*.csv > "$RESULTS_DIR/rows.txt"\n'
    scriptFile = alice.uploadStreamToFolder(
        privateFolder(alice)['_id'], io.BytesIO(script), 'rows.sh', len(script)
    )

    resp = call(alice, 'POST', 'resolve/run', id=GALAXIES, scriptFileId=scriptFile['_id'])
    assert resp.status_code == 200, resp.text
    submitted = resp.json()
    assert submitted['site'] == SITE
    assert submitted['remoteId'] and submitted['remoteId'] != submitted['_id']
    assert submitted['status'] in ('queued', 'running', 'succeeded')

    run = waitFor(alice, submitted['_id'], ('succeeded', 'failed', 'cancelled'))
    assert run['status'] == 'succeeded', run
    assert run['exitCode'] == 0
    # The results stay at the site; the central links to their folder there.
    siteWeb = fed.girders[SITE].url
    assert run['resultsUrl'].startswith(f'{siteWeb}/#folder/'), run['resultsUrl']
    resultsFolderId = run['resultsUrl'].rsplit('/', 1)[1]
    site = fed.clients[SITE]
    [item] = [i for i in site.listItem(resultsFolderId) if i['name'] == 'rows.txt']
    [file] = site.get(f'item/{item["_id"]}/files')
    counts = b''.join(site.downloadFileAsIterator(file['_id'])).decode()
    assert 'part-1.csv' in counts and 'total' in counts

    # The log, through the central.
    log = call(alice, 'GET', f'run/{submitted["_id"]}/log')
    assert log.status_code == 200, log.text
    assert 'counting at the site' in log.text
    assert 'counting at the site' in (run['logTail'] or '')

    # At the site, the run is alice's, as the central named her.
    db = pymongo.MongoClient(fed.mongoUri)[fed.girders[SITE].dbName]
    atSite = db['resolver_run'].find_one({'_id': ObjectId(run['remoteId'])})
    assert atSite['identity'] == f'central:{aliceId}'

    # The central lists it among alice's runs; nobody else sees it.
    assert submitted['_id'] in [r['_id'] for r in call(alice, 'GET', 'run').json()]
    bob = person(fed, 'central', 'bobby')
    assert call(bob, 'GET', f'run/{submitted["_id"]}').status_code == 403
    assert call(bob, 'GET', f'run/{submitted["_id"]}/log').status_code == 403


@pytest.mark.timeout(300)
def testCancellingAtTheCentralCancelsTheRunAtTheSite(fed):
    alice = person(fed, 'central', 'alice')
    resp = call(
        alice,
        'POST',
        'resolve/run',
        id=OCEAN,
        data={'command': 'echo started; sleep 300', 'fresh': 'true'},
    )
    assert resp.status_code == 200, resp.text
    submitted = resp.json()
    waitFor(alice, submitted['_id'], ('running',))
    resp = call(alice, 'DELETE', f'run/{submitted["_id"]}')
    assert resp.status_code == 200, resp.text
    run = waitFor(alice, submitted['_id'], ('cancelled', 'failed', 'succeeded'), timeout=60)
    assert run['status'] == 'cancelled', run
    db = pymongo.MongoClient(fed.mongoUri)[fed.girders[SITE].dbName]
    atSite = db['resolver_run'].find_one({'_id': ObjectId(run['remoteId'])})
    assert atSite['status'] == 'cancelled'


def testARunNeedsACommandOrAScriptAndAKnownIdentifier(fed):
    alice = person(fed, 'central', 'alice')
    assert call(alice, 'POST', 'resolve/run', id=GALAXIES).status_code == 400
    resp = call(alice, 'POST', 'resolve/run', id=GALAXIES, command='true', script='true')
    assert resp.status_code == 400
    assert call(alice, 'POST', 'resolve/run', id='not an id', command='true').status_code == 400
    resp = call(alice, 'POST', 'resolve/run', id='doi:10.5072/nowhere', command='true')
    assert resp.status_code == 404
    resp = call(alice, 'POST', 'resolve/run', id=GALAXIES, scriptFileId='f' * 24)
    assert resp.status_code in (400, 404)
    # As launches: a tool no site holding the data offers is named back.
    resp = call(alice, 'POST', 'resolve/run', id=GALAXIES, command='true', tool='no-such-tool')
    assert resp.status_code == 400
    assert 'no-such-tool' in resp.json()['message']
    anonymous = http().post(f'{alice.urlBase}resolve/run', params={'id': GALAXIES, 'command': 'x'})
    assert anonymous.status_code == 401


def centralRuns(fed):
    db = pymongo.MongoClient(fed.mongoUri)[fed.girders['central'].dbName]
    return db['resolver_run'].count_documents({})


def testASiteAnsweringWithAJavascriptResultsUrlIsRefused(fed):
    hostile = 'javascript:alert(document.cookie)'
    answer = {'_id': 'e' * 24, 'status': 'succeeded', 'exitCode': 0, 'resultsUrl': hostile}
    fake = FakeSite(answer)
    ident = 'doi:10.5072/fake.runs'
    try:
        resp = registerSite(
            fed,
            'fake-runs',
            fake.apiUrl,
            'fake-credential',
            datasets=[{'identifier': ident, 'folderId': 'f' * 24, 'name': 'Fake'}],
        )
        assert resp.status_code == 200, resp.text
        alice = person(fed, 'central', 'alice')
        before = centralRuns(fed)
        resp = call(alice, 'POST', 'resolve/run', id=ident, command='true')
        assert resp.status_code == 502, resp.text
        message = resp.json()['message']
        assert 'Site "fake-runs"' in message and 'will not link' in message
        assert 'alert' not in message
        assert centralRuns(fed) == before
        # The site was asked to cancel what it started.
        assert any(method == 'DELETE' for method, _path, _body in fake.requests)

        # A site that turns hostile later: the record keeps no link, and says why.
        fake.answer = {'_id': 'e' * 24, 'status': 'running', 'resultsUrl': None}
        resp = call(alice, 'POST', 'resolve/run', id=ident, command='true')
        assert resp.status_code == 200, resp.text
        runId = resp.json()['_id']
        fake.answer = answer
        run = call(alice, 'GET', f'run/{runId}').json()
        assert run['resultsUrl'] is None
        assert 'will not link' in run['reason']
        listed = [r for r in call(alice, 'GET', 'run').json() if r['_id'] == runId]
        assert listed and listed[0]['resultsUrl'] is None
    finally:
        fake.close()


def testARunFailsOverFromAFailingSiteAndNeedsAHealthyOne(fed):
    """As launches: a site that fails (5xx) is passed over for the next that holds the data;
    with no healthy site, a 503."""
    mirrored, silentOnly = 'doi:10.5072/runs.mirrored', 'doi:10.5072/runs.silent'
    failing = FakeSite(error=(503, {'message': 'down for maintenance'}))
    galaxies = next(f for _name, ident, f in fed.datasets[SITE] if ident == GALAXIES)
    try:
        # Ranked first (same operator, same weight: by name), and failing.
        resp = registerSite(
            fed,
            'a-failing',
            failing.apiUrl,
            'fake-credential',
            datasets=[
                {'identifier': mirrored, 'folderId': 'f' * 24, 'name': 'Mirror'},
                {'identifier': silentOnly, 'folderId': 'e' * 24, 'name': 'Silent'},
            ],
        )
        assert resp.status_code == 200, resp.text
        mine = [
            {'identifier': ident, 'folderId': folder['_id'], 'name': name}
            for name, ident, folder in fed.datasets[SITE]
        ]
        mirror = {'identifier': mirrored, 'folderId': galaxies['_id'], 'name': 'Galaxy survey'}
        resp = registerSite(fed, SITE, fed.girders[SITE].apiUrl, fed.launchKey, [*mine, mirror])
        assert resp.status_code == 200, resp.text
        alice = person(fed, 'central', 'alice')
        resp = call(alice, 'POST', 'resolve/run', id=mirrored, command='echo mirrored')
        assert resp.status_code == 200, resp.text
        run = resp.json()
        assert run['site'] == SITE
        assert 'a-failing' in run['failover'] and f'submitted at {SITE}' in run['failover']
        assert any('/run' in path for _method, path, _body in failing.requests)
        assert waitFor(alice, run['_id'], ('succeeded', 'failed'))['status'] == 'succeeded'

        # Only a site that stopped sending heartbeats holds it: 503, nothing sent there.
        db = pymongo.MongoClient(fed.mongoUri)[fed.girders['central'].dbName]
        longAgo = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=2)
        db['resolver_site'].update_one({'name': 'a-failing'}, {'$set': {'lastHeartbeat': longAgo}})
        time.sleep(2.1)  # the central may reuse its read of the site for resolver.cache_seconds
        asked = len(failing.requests)
        resp = call(alice, 'POST', 'resolve/run', id=silentOnly, command='true')
        assert resp.status_code == 503, resp.text
        assert 'No healthy site' in resp.json()['message']
        assert len(failing.requests) == asked
    finally:
        failing.close()
        registerSite(fed, SITE, fed.girders[SITE].apiUrl, fed.launchKey)
