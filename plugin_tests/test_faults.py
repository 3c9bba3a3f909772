"""Faults with real processes: the database restarted under load, feder8 killed, the central
restarted. After each, the federation must heal by itself, lose nothing and duplicate nothing.

The federation (a central, two sites, a feder8 each) runs on its own SecantusDB
with on-disk storage, so the database can be stopped and started again with its
data, as a MongoDB restart (or fail-over) would.
"""

import os
import threading
import time

import pytest
import requests

from datadns import stack
from datadns.federation import Federation
from datadns.sample import SHARED_DATASET, datasetsFor
from plugin_tests.federation_helpers import (
    allHealthy,
    eventually,
    getAtCentral,
    liveAt,
    personSession,
    sites,
    waitSettled,
)

TTL = 4
INTERVAL = 0.5

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope='module')
def db(tmp_path_factory):
    database = stack.SecantusDB(
        storage=tmp_path_factory.mktemp('faults-db') / 'data',
        logDir=tmp_path_factory.mktemp('faults-db-logs'),
    )
    database.start()
    yield database
    database.stop()


@pytest.fixture(scope='module')
def fed(db, tmp_path_factory):
    federation = Federation(
        db.uri,
        tmp_path_factory.mktemp('faults'),
        dbPrefix=f'faults_{os.getpid()}',
        interval=INTERVAL,
        centralSettings={'resolver.heartbeat_ttl': TTL},
        # No reloader: a file edited elsewhere must not restart a server mid-test.
        env={'GIRDER_SERVER_MODE': 'production'},
    )
    try:
        federation.start()
        for name in federation.siteNames:
            federation.startFeder8(name)
        eventually(lambda: allHealthy(federation), 30, 'both sites registered and healthy')
        yield federation
    finally:
        federation.stop()


def expectedEntries(fed):
    """{(site, identifier)} the central must hold: every sample dataset of every site."""
    return {(site, ident) for site in fed.siteNames for _name, ident, _ in datasetsFor(site)}


def centralEntries(fed):
    entries = getAtCentral(fed, 'resolver/dataset', limit=0, local='false').json()
    return [(e['site'], e['identifier'], e['folderId']) for e in entries]


def assertNothingLostOrDuplicated(fed):
    entries = centralEntries(fed)
    assert len(entries) == len(set(entries)), 'duplicate entries at the central'
    assert {(site, ident) for site, ident, _ in entries} == expectedEntries(fed)
    listed = sites(fed)
    for site in fed.siteNames:
        assert listed[site]['datasetCount'] == len(datasetsFor(site))


def resolvesEverywhere(fed):
    resp = getAtCentral(fed, 'resolve', id=SHARED_DATASET[1])
    if resp.status_code != 200:
        return False
    locations = resp.json()['locations']
    return sorted(loc['site'] for loc in locations) == sorted(fed.siteNames) and all(
        loc['healthy'] for loc in locations
    )


class Resolvers:
    """A few clients resolving continuously; records every outcome with its time."""

    def __init__(self, fed, clients=4):
        self.fed = fed
        self.stop = threading.Event()
        self.outcomes = []  # (time, status or exception name)
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self):
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                status = getAtCentral(
                    self.fed, 'resolve', timeout=30, id=SHARED_DATASET[1]
                ).status_code
            except requests.RequestException as exc:
                status = type(exc).__name__
                time.sleep(0.2)
            with self.lock:
                self.outcomes.append((start, status))
                self.slowest = max(getattr(self, 'slowest', 0), time.monotonic() - start)

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for thread in self.threads:
            thread.join(40)

    def after(self, moment):
        with self.lock:
            return [status for at, status in self.outcomes if at >= moment]


def testTheDatabaseRestartedUnderLoadLosesNothingAndServiceResumesByItself(fed, db):
    assertNothingLostOrDuplicated(fed)
    # A dataset tagged while the database is down must arrive once it is back.
    gc = fed.clients['site-a']
    collection = gc.get('collection', parameters={'limit': 0})[0]
    folder = gc.createFolder(
        collection['_id'], 'Tagged in the outage', parentType='collection', public=True
    )
    with Resolvers(fed) as load:
        eventually(lambda: load.after(0).count(200) >= 10, 30, 'the resolvers answered')
        down = time.monotonic()
        db.stop()
        time.sleep(5)  # the outage itself: a duration, not a wait for anything
        db.start()
        up = time.monotonic()
        gc.addMetadataToFolder(folder['_id'], {'identifier': 'doi:10.5072/after.outage'})
        eventually(lambda: resolvesEverywhere(fed), 60, 'resolving again after the restart')
        recovered = time.monotonic()
        time.sleep(2)  # a window of steady load after recovery, measured below
        steady = time.monotonic()
    during = load.after(down)
    print(
        f'\ndatabase down {up - down:.1f} s; first good answer {recovered - up:.1f} s after it '
        f'came back; answers while down or recovering: '
        f'{sorted({str(s) for s in during if s != 200})}; slowest answer {load.slowest:.1f} s'
    )
    assert all(status == 200 for status in load.after(steady)), load.after(steady)
    assert recovered - up < 30, 'Girder took too long to reconnect to the database'
    eventually(
        lambda: getAtCentral(fed, 'resolve', id='doi:10.5072/after.outage').status_code == 200,
        30,
        'the dataset tagged after the restart at the central',
    )
    gc.sendRestRequest('DELETE', f'folder/{folder["_id"]}')
    eventually(
        lambda: getAtCentral(fed, 'resolve', id='doi:10.5072/after.outage').status_code == 404,
        30,
        'the deleted dataset gone from the central',
    )
    assertNothingLostOrDuplicated(fed)
    for name in fed.siteNames:
        assert fed.feder8s[name].proc.poll() is None, f'feder8 of {name} died in the outage'


def testAKilledFeder8RestartsWithoutDuplicatesOrASecondCredential(fed):
    feder8 = fed.feder8s['site-a']
    feder8.kill()
    assert feder8.proc.returncode == -9
    eventually(lambda: not sites(fed)['site-a']['healthy'], TTL * 4, 'site-a unhealthy')
    fed.startFeder8('site-a')
    eventually(lambda: sites(fed)['site-a']['healthy'], 30, 'site-a healthy again')
    assertNothingLostOrDuplicated(fed)
    gc = fed.clients['site-a']
    service = gc.get('system/setting', parameters={'key': 'resolver.federation_service'})
    credentials = [
        k
        for k in gc.get('api_key', parameters={'userId': service['userId'], 'limit': 0})
        if k['name'].startswith('feder8 launch credential')
    ]
    assert len(credentials) == 1, 'a restarted feder8 must reuse its launch credential'
    assert resolvesEverywhere(fed)


def testARestartedCentralIsHealthyAgainAndEverythingResolves(fed):
    seen = {name: len(fed.feder8s[name].logText()) for name in fed.siteNames}
    fed.girders['central'].stop()
    eventually(
        lambda: all('retrying in' in fed.feder8s[n].logText()[seen[n] :] for n in fed.siteNames),
        INTERVAL * 10 + 30,
        'both feder8s noticing the central is down and backing off',
    )
    started = time.monotonic()
    fed.startGirder('central')
    eventually(lambda: allHealthy(fed), 60, 'both sites healthy at the restarted central')
    eventually(lambda: resolvesEverywhere(fed), 30, 'resolving at the restarted central')
    print(f'\ncentral back and both sites healthy {time.monotonic() - started:.1f} s after start')
    assertNothingLostOrDuplicated(fed)
    for name in fed.siteNames:
        assert fed.feder8s[name].proc.poll() is None, f'feder8 of {name} gave up'


def testACentralThatLostItsDatabaseIsRefilledByTheSites(fed, db):
    fed.girders['central'].stop()
    client = __import__('pymongo').MongoClient(db.uri)
    database = f'{fed.dbPrefix}_central'
    client[database]['resolver_site'].delete_many({})
    client[database]['resolver_dataset'].delete_many({'local': False})
    client.close()
    fed.startGirder('central')
    eventually(lambda: allHealthy(fed), 60, 'both sites registered again')
    eventually(
        lambda: len(centralEntries(fed)) == len(expectedEntries(fed)), 30, 'every dataset again'
    )
    assertNothingLostOrDuplicated(fed)
    assert resolvesEverywhere(fed)


def testASiteGirderKilledMidLaunchEndsTheLaunchClearlyAndLeavesNothingLive(fed):
    eventually(lambda: allHealthy(fed), 60, 'both sites healthy')
    carol = personSession(fed, 'carol')
    shared = SHARED_DATASET[1]

    def launch(**params):
        params = {'id': shared, **params}
        return carol.post(f'{carol.api}/resolve/launch', params=params, timeout=60)

    def liveAtCentral():
        return carol.get(f'{carol.api}/notebook', params={'live': 'true'}, timeout=40).json()

    def runsAt(resp, site):
        """The launch went to ``site`` and its notebook runs; stopped again after."""
        assert resp.status_code == 200, resp.text
        nb = resp.json()
        assert nb['site'] == site
        assert waitSettled(carol, nb['_id'])['status'] == 'running'
        assert carol.delete(f'{carol.api}/notebook/{nb["_id"]}', timeout=60).status_code == 200

    resp = launch(site='site-a')
    assert resp.status_code == 200, resp.text
    nb = resp.json()
    assert (nb['site'], nb['status']) == ('site-a', 'launching')
    fed.girders['site-a'].kill()  # the Girder of site-a crashes while the server starts

    # The central says what happened, in words, and keeps no live record.
    ended = waitSettled(carol, nb['_id'])
    assert ended['status'] == 'error', ended
    assert ended['message'].startswith('Site "site-a" could not be reached')
    assert 'still starting' in ended['message']
    assert 'Launch again' in ended['message']
    assert ended['url'] is None
    assert liveAtCentral() == []

    # Launching there again by name is a clear error naming the other copy (502 while
    # site-a still counts as healthy, 503 once it missed its heartbeats), and leaves
    # nothing behind; without a site, the other copy is used at once.
    resp = launch(site='site-a')
    assert resp.status_code in (502, 503), resp.text
    assert resp.json()['message'].startswith('Site "site-a"')
    assert 'also held by "site-b"' in resp.json()['message']
    assert liveAtCentral() == []
    runsAt(launch(), 'site-b')

    # site-a comes back: the launch its crashed Girder left half done is settled at
    # once (the server it had started is adopted, or ended), never left "launching".
    fed.startGirder('site-a')
    eventually(lambda: allHealthy(fed), 60, 'site-a healthy again')
    leftovers = liveAt(fed, 'site-a')
    assert all(n['status'] == 'running' for n in leftovers), leftovers
    # ... and launching there again works: the adopted notebook, or a new one.
    runsAt(launch(site='site-a'), 'site-a')
    assert liveAtCentral() == []
    assert liveAt(fed, 'site-a') == []
