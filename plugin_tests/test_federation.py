"""The federation with real processes on loopback: a central, two sites, a feder8 each."""

import os
import subprocess
import sys
import threading
import time

import pytest
import requests

from datadns.federation import Federation
from datadns.sample import SHARED_DATASET
from plugin_tests.federation_helpers import eventually, getAtCentral, sites

TTL = 3
INTERVAL = 0.5


@pytest.fixture(scope='module')
def fed(mongoUri, tmp_path_factory):
    federation = Federation(
        mongoUri,
        tmp_path_factory.mktemp('federation'),
        dbPrefix=f'fed_{os.getpid()}',
        interval=INTERVAL,
        centralSettings={'resolver.heartbeat_ttl': TTL},
    )
    try:
        federation.start()
        yield federation
    finally:
        federation.stop()


@pytest.fixture(scope='module')
def running(fed):
    for name in fed.siteNames:
        fed.startFeder8(name)
    # A site is listed as soon as its name is settled; its datasets follow with the first
    # full snapshot.
    eventually(
        lambda: all(
            'registered a full snapshot' in fed.feder8s[name].logText() for name in fed.siteNames
        ),
        what='both sites registered with their datasets',
    )
    return fed


def testEachSiteRegistersItsDatasetsOnStartup(running):
    listed = sites(running)
    assert listed['site-a']['datasetCount'] == 3
    assert listed['site-b']['datasetCount'] == 2
    assert all(s['healthy'] for s in listed.values())
    log = running.feder8s['site-a'].logText()
    assert 'registered a full snapshot: 3 datasets at the central (added 3' in log


def testTheReplicatedDatasetListsBothLocations(running):
    resp = getAtCentral(running, 'resolve', id=SHARED_DATASET[1].upper())
    assert resp.status_code == 200
    locations = resp.json()['locations']
    assert sorted(loc['site'] for loc in locations) == ['site-a', 'site-b']
    assert all(loc['healthy'] for loc in locations)
    assert {loc['apiUrl'] for loc in locations} == {
        running.girders['site-a'].apiUrl,
        running.girders['site-b'].apiUrl,
    }


def testATaggedDatasetIsResolvableAtTheCentralWithinAnIntervalAndUntaggingRemovesIt(running):
    gc = running.clients['site-a']
    coll = gc.get('collection', parameters={'limit': 0})[0]
    folder = gc.createFolder(coll['_id'], 'Fresh data', parentType='collection', public=True)
    gc.addMetadataToFolder(folder['_id'], {'identifier': 'doi:10.5072/fresh'})
    eventually(
        lambda: getAtCentral(running, 'resolve', id='10.5072/FRESH').status_code == 200,
        timeout=INTERVAL * 10,
        what='the new dataset at the central',
    )
    [location] = getAtCentral(running, 'resolve', id='10.5072/FRESH').json()['locations']
    assert (location['site'], location['folderId']) == ('site-a', folder['_id'])
    assert 'sent changes' in running.feder8s['site-a'].logText()
    gc.sendRestRequest('DELETE', f'folder/{folder["_id"]}/metadata', json=['identifier'])
    eventually(
        lambda: getAtCentral(running, 'resolve', id='10.5072/FRESH').status_code == 404,
        timeout=INTERVAL * 10,
        what='the untagged dataset gone from the central',
    )


def testAPrivateDatasetIsNotPublishedToTheCentral(running):
    gc = running.clients['site-b']
    coll = gc.get('collection', parameters={'limit': 0})[0]
    folder = gc.createFolder(coll['_id'], 'Embargoed', parentType='collection', public=False)
    gc.addMetadataToFolder(folder['_id'], {'identifier': 'doi:10.5072/embargoed'})
    gc.addMetadataToFolder(folder['_id'], {'note': 'touch'})
    # A public dataset tagged afterwards: once it has arrived, feder8 has synced past the
    # private one.
    witness = gc.createFolder(coll['_id'], 'Published after', parentType='collection', public=True)
    gc.addMetadataToFolder(witness['_id'], {'identifier': 'doi:10.5072/published.after'})
    eventually(
        lambda: (
            getAtCentral(running, 'resolve', id='doi:10.5072/published.after').status_code == 200
        ),
        INTERVAL * 10 + 20,
        'the dataset tagged afterwards at the central',
    )
    assert getAtCentral(running, 'resolve', id='doi:10.5072/embargoed').status_code == 404


def testAStoppedFeder8TurnsItsSiteUnhealthyAfterTheTtlAndARestartHealsIt(running):
    running.stopFeder8('site-b')
    eventually(
        lambda: not sites(running)['site-b']['healthy'], timeout=TTL * 4, what='site-b unhealthy'
    )
    resp = getAtCentral(running, 'resolve', id=SHARED_DATASET[1])
    assert [(loc['site'], loc['healthy']) for loc in resp.json()['locations']] == [
        ('site-a', True),
        ('site-b', False),
    ]
    running.startFeder8('site-b')
    eventually(
        lambda: sites(running)['site-b']['healthy'], timeout=TTL * 4, what='site-b healthy again'
    )


def testAFeder8StartedWhileTheCentralIsDownRegistersOnceItComesUp(running):
    running.stopFeder8('site-b')
    running.girders['central'].stop()
    running.startFeder8('site-b')
    log = running.feder8s['site-b']
    eventually(lambda: 'retrying in' in log.logText(), timeout=20, what='a logged retry')
    before = time.time()
    running.startGirder('central')
    eventually(
        lambda: sites(running)['site-b']['healthy'],
        timeout=30,
        what='site-b registered after the central came up',
    )
    assert 'registered a full snapshot' in log.logText()
    assert time.time() - before < 30
    # site-a's feder8 ran through the outage too, and is healthy again.
    eventually(
        lambda: sites(running)['site-a']['healthy'],
        # Its retries back off (up to feder8's cap) while the central is down; a loaded
        # machine adds seconds more. The wait is a deadline, not a speed claim.
        timeout=60,
        what='site-a healthy after the outage',
    )


def testACentralThatForgotASiteIsReRegistered(running):
    gc = running.clients['central']
    gc.delete('resolver/site/site-a')
    assert 'site-a' not in sites(running)
    eventually(
        lambda: sites(running).get('site-a', {}).get('datasetCount') == 3,
        timeout=20,
        what='site-a registered again',
    )
    assert 'does not know this site' in running.feder8s['site-a'].logText()


def testTheLaunchCredentialNeverAppearsInResponsesOrLogs(running):
    gc = running.clients['site-a']
    service = gc.get('system/setting', parameters={'key': 'resolver.federation_service'})
    assert service['central'] == 'central'
    assert gc.get(f'user/{service["userId"]}')['admin'] is False
    keys = [
        k['key']
        for k in gc.get('api_key', parameters={'userId': service['userId'], 'limit': 0})
        if k['name'].startswith('feder8 launch credential')
    ]
    assert len(keys) == 1
    # None left on the admin's own account.
    me = gc.get('user/me')
    assert not [
        k
        for k in gc.get('api_key', parameters={'userId': me['_id'], 'limit': 0})
        if k['name'].startswith('feder8 launch credential')
    ]
    secret = keys[0]
    admin = running.clients['central']
    bodies = [
        requests.get(f'{running.girders["central"].apiUrl}/resolver/site', timeout=10).text,
        str(admin.get('resolver/site')),
        str(admin.get('resolver/dataset', parameters={'limit': 0})),
        str(admin.get('resolve', parameters={'id': SHARED_DATASET[1]})),
    ]
    assert all(secret not in body for body in bodies)
    assert all(s['hasCredential'] for s in admin.get('resolver/site'))
    for feder8 in running.feder8s.values():
        assert secret not in feder8.logText()
    for name in running.names():
        assert secret not in running.girders[name].log.read_text(errors='replace')


def _sync(fed, site, key=None):
    env = {**os.environ, **fed.feder8(site).settings}
    if key:
        env['FEDER8_CENTRAL_API_KEY'] = key
    return subprocess.run(
        [sys.executable, '-m', 'feder8', 'sync'],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )


def testTwoSitesRegisteringAtTheSameMomentBothSucceed(running):
    results = {}
    threads = [
        threading.Thread(target=lambda s=s: results.__setitem__(s, _sync(running, s)))
        for s in running.siteNames
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for site, result in results.items():
        assert result.returncode == 0, result.stderr
        assert f'for site "{site}"' in result.stdout


def testSyncFailsWithAClearMessageOnABadCentralKey(running):
    result = _sync(running, 'site-a', key='not-a-real-key-' + 'x' * 24)
    assert result.returncode == 2
    assert 'central resolver refused the API key' in result.stderr


def testHeartbeatsCarryTheSitesCapacityAndRunningNotebooks(running):
    running.startFeder8('site-a', extraArgs=['--capacity', '5'])
    eventually(
        lambda: sites(running)['site-a'].get('capacity') == 5, timeout=20, what='capacity reported'
    )
    assert sites(running)['site-a']['running'] == 0
