"""The warm pool: notebook servers started ahead of time, bound to a person at launch.

Real ``jupyter_server`` subprocesses (process backend). The refill thread of
this process runs too, so tests wait for the pool to reach a state rather than
assume who filled it; no timing is asserted.
"""

import datetime
import time
import urllib.parse

import pytest
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import frontdoor, tools
from girder_resolver.launcher.identity import COOKIE_NAME
from girder_resolver.models.notebook import Notebook
from girder_resolver.models.pooled import PooledNotebook
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks import pool, recovery, refill
from girder_resolver.services.notebooks.local import INSTANCE_LABEL, instanceId, launcher
from plugin_tests.test_notebook import (
    FILES,
    apiUrl,
    http,
    launch,
    makeDataset,
    makeUser,
    tokenOf,
    waitFor,
)


def waitForPool(ready, timeout=120):
    """Run refill rounds until exactly ``ready`` servers wait unclaimed; their records."""
    deadline = time.monotonic() + timeout
    while True:
        refill.refillOnce()
        entries = list(PooledNotebook().find({'status': 'ready'}))
        if len(entries) == ready and not PooledNotebook().findOne({'status': {'$ne': 'ready'}}):
            return entries
        assert time.monotonic() < deadline, f'pool stuck at {entries}'
        time.sleep(0.2)


def ourServers():
    """Handles of the running notebook servers labelled as this installation's."""
    return [
        h
        for h in launcher('process').list_running()
        if (h.get('labels') or {}).get(INSTANCE_LABEL) == instanceId()
    ]


def session(token):
    s = http()
    s.headers['Authorization'] = f'token {token}'
    return s


@pytest.fixture
def warmPool(server):
    Setting().set('resolver.backend', 'process')
    Setting().set('resolver.pool_size', 1)
    yield
    Setting().set('resolver.pool_size', 0)
    waitForPool(0)
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)
    assert ourServers() == []


@pytest.fixture
def dataset(server, admin, fsAssetstore, tmp_path):
    return makeDataset(server, admin, fsAssetstore, tmp_path, 'Survey 2016')


@pytest.mark.plugin('resolver')
def testALaunchClaimsAWarmServerBoundToTheDatasetAndItsClaimerOnly(
    server, admin, user, dataset, warmPool
):
    folder, _ = dataset
    [entry] = waitForPool(1)

    resp = launch(server, user, folder)
    assertStatusOk(resp)
    nb = resp.json
    # Running at once, as the pooled server itself, with the token made for it.
    assert nb['status'] == 'running'
    assert nb['_id'] == str(entry['_id'])
    assert tokenOf(nb) == entry['token']
    assert PooledNotebook().load(entry['_id']) is None
    # The open link in this very answer (made from the record in memory) works, once.
    ticket = urllib.parse.parse_qs(urllib.parse.urlsplit(nb['url']).query)['ticket'][0]
    assert notebooks.redeemTicket(Notebook().load(nb['_id']), ticket)
    assert not notebooks.redeemTicket(Notebook().load(nb['_id']), ticket)

    mine = session(tokenOf(nb))
    listing = mine.get(apiUrl(nb, f'contents/{pool.DATA_NAME}'))
    assert listing.status_code == 200
    assert {e['name'] for e in listing.json()['content']} == set(FILES) | {'tables'}
    assert all(not e['writable'] for e in listing.json()['content'])
    assert http().get(apiUrl(nb, f'contents/{pool.DATA_NAME}')).status_code == 403
    assert session('wrong').get(apiUrl(nb, 'contents')).status_code == 403
    # The dataset is read-only: writes, renames and deletes below it are refused ...
    body = {'type': 'file', 'format': 'text', 'content': 'x'}
    assert mine.put(apiUrl(nb, f'contents/{pool.DATA_NAME}/new.txt'), json=body).status_code == 403
    assert (
        mine.put(apiUrl(nb, f'contents/{pool.DATA_NAME}/tables/new.csv'), json=body).status_code
        == 403
    )
    renamed = mine.patch(apiUrl(nb, f'contents/{pool.DATA_NAME}'), json={'path': 'elsewhere'})
    assert renamed.status_code == 403
    assert mine.delete(apiUrl(nb, f'contents/{pool.DATA_NAME}/readme.txt')).status_code == 403
    # ... while the notebook's own working directory stays writable.
    assert mine.put(apiUrl(nb, 'contents/notes.txt'), json=body).status_code in (200, 201)

    # The same person launching again gets the same notebook; it counts to their cap.
    assert launch(server, user, folder).json['_id'] == nb['_id']
    assert Notebook().collection.count_documents({'identity': nb['identity'], 'live': True}) == 1

    # The pool refills with a new server, which a second person gets, with their own token.
    [refill] = waitForPool(1)
    assert refill['_id'] != entry['_id']
    assert refill['token'] != entry['token']
    other = makeUser('other')
    theirs = launch(server, other, folder).json
    assert theirs['status'] == 'running'
    assert theirs['_id'] == str(refill['_id'])
    assert tokenOf(theirs) != tokenOf(nb)
    assert session(tokenOf(theirs)).get(apiUrl(nb, 'contents')).status_code == 403
    assertStatus(server.request(f'/notebook/{theirs["_id"]}', user=user), 403)

    # Unclaimed servers are nobody's: not listed, not even to an admin.
    waitForPool(1)
    listed = {n['_id'] for n in server.request('/notebook', user=admin).json}
    assert listed == {nb['_id'], theirs['_id']}

    # Stopping a claimed notebook stops its server: it never goes back to the pool.
    handle = Notebook().load(nb['_id'])['handle']
    assertStatusOk(server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user))
    assert not launcher('process').is_alive(handle)
    assert PooledNotebook().findOne({'_id': entry['_id']}) is None


@pytest.mark.plugin('resolver')
def testAnUnclaimedServersEarlyRouteOpensNothingToSomeoneWhoFindsIt(
    server, user, dataset, warmPool
):
    """An attacker who learns an unclaimed pooled server's id (its route is added when
    it becomes ready) gets nothing through the front door: no listing, no kernel, no
    open link, no login by a guessed cookie; and the claimer's data is not there yet."""
    [entry] = waitForPool(1)
    notebookId = str(entry['_id'])
    route = frontdoor.routePath(notebookId)
    assert route in frontdoor.routes(), 'the early route this test attacks is not there'
    base = f'{frontdoor.publicUrl()}{route}/'
    anyone = http()
    for path in ('api/contents', f'api/contents/{pool.DATA_NAME}', 'api/kernels', 'api/sessions'):
        resp = anyone.get(base + path, allow_redirects=False)
        assert resp.status_code == 403, (path, resp.status_code)
    resp = anyone.post(base + 'api/kernels', json={}, allow_redirects=False)
    assert resp.status_code == 403
    # The UI sends a stranger to the login page, which a guessed token does not pass.
    tree = anyone.get(base + 'tree', allow_redirects=False)
    assert tree.status_code in (302, 303) and 'login' in tree.headers['Location']
    anyone.cookies.set(COOKIE_NAME, 'guessed-' + 'x' * 32, path=f'{route}/')
    assert anyone.get(base + 'api/contents', allow_redirects=False).status_code == 403
    assert session('guessed').get(base + 'api/contents').status_code == 403
    # No open link can be made for it: there is no notebook record to redeem a ticket on.
    resp = server.request(f'/notebook/{notebookId}/open', params={'ticket': 'forged'}, isJson=False)
    assert resp.output_status.split()[0] in (b'400', b'403', b'404')
    assert not any(name.lower() == 'set-cookie' for name, _ in resp.header_list)
    # Even with its token, the unclaimed server shows an empty placeholder, not a dataset.
    listing = session(entry['token']).get(base + f'api/contents/{pool.DATA_NAME}')
    assert listing.status_code == 200 and listing.json()['content'] == []


@pytest.mark.plugin('resolver')
def testAnEmptyPoolFallsBackToAColdLaunch(server, user, dataset, warmPool):
    folder, _ = dataset
    waitForPool(1)
    other = makeUser('other')
    # Holding the round lock keeps the refill thread from refilling meanwhile.
    with refill._roundLock:
        assert launch(server, user, folder).json['status'] == 'running'
        cold = launch(server, other, folder).json
    assert cold['status'] == 'launching'
    nb = waitFor(server, other, cold['_id'])
    assert nb['status'] == 'running', nb['message']
    listing = session(tokenOf(nb)).get(apiUrl(nb, 'contents/Survey 2016'))
    assert listing.status_code == 200


@pytest.mark.plugin('resolver')
def testLoweringThePoolSizeStopsUnclaimedServers(server, warmPool):
    Setting().set('resolver.pool_size', 2)
    entries = waitForPool(2)
    # The setting wakes the refill thread, which may get there first: wait for the state.
    Setting().set('resolver.pool_size', 1)
    [kept] = waitForPool(1)
    assert kept['slot'] == 0
    [surplus] = [e for e in entries if e['slot'] == 1]
    assert not launcher('process').is_alive(surplus['handle'])
    Setting().set('resolver.pool_size', 0)
    waitForPool(0)
    assert pool.ready() == 0
    for entry in entries:
        assert not launcher('process').is_alive(entry['handle'])
    assert ourServers() == []


@pytest.mark.plugin('resolver')
def testRecoveryKeepsLiveServersSettlesHalfClaimedOnesAndLeaksNothing(
    server, user, dataset, warmPool
):
    waitForPool(1)
    nb = launch(server, user, dataset[0]).json
    assert nb['status'] == 'running'
    [unclaimed] = waitForPool(1)
    backend = launcher('process')
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=90)
    coll = PooledNotebook().collection
    # Holding the round lock keeps the refill thread out while we play a crash.
    with refill._roundLock:
        # The Girder process that started the unclaimed server is gone.
        coll.update_one({'_id': unclaimed['_id']}, {'$set': {'owner': 'elsewhere:1'}})
        # A launch claimed a server, then crashed before making its notebook ...
        lost = refill._reserve(7, backend)
        assert refill._start(lost, backend)
        coll.update_one({'_id': lost['_id']}, {'$set': {'status': 'claimed', 'updated': old}})
        # ... and another crashed after making it, before forgetting the pool record.
        coll.insert_one(
            {'_id': Notebook().load(nb['_id'])['_id'], 'slot': 8, 'status': 'claimed'}
            | {'updated': old, 'token': 'x', 'handle': Notebook().load(nb['_id'])['handle']}
        )

        report = recovery.recover()
        assert report[str(unclaimed['_id'])] == 'pool adopted'
        assert report[str(lost['_id'])] == 'abandoned'
        assert report[nb['_id']] == 'adopted'
        assert PooledNotebook().load(unclaimed['_id'])['owner'] == refill.owner()
        assert not backend.is_alive(lost['handle'])
        assert coll.count_documents({'_id': {'$in': [lost['_id'], nb['_id']]}}) == 0
        assert {h['notebookId'] for h in ourServers()} == {nb['_id'], str(unclaimed['_id'])}
        Setting().set('resolver.pool_size', 0)
    waitForPool(0)
    assert {h['notebookId'] for h in ourServers()} == {nb['_id']}
    listing = session(tokenOf(nb)).get(apiUrl(nb, f'contents/{pool.DATA_NAME}'))
    assert listing.status_code == 200


@pytest.mark.plugin('resolver')
def testTheDockerBackendHasNoPool(server):
    Setting().set('resolver.backend', 'docker')
    Setting().set('resolver.pool_size', 3)
    assert pool.targetSize() == 0
    assert refill.refillOnce() == {}
    assert PooledNotebook().collection.count_documents({}) == 0


@pytest.mark.plugin('resolver')
def testThePoolServesTheDefaultToolOnly(server, admin, user, dataset, warmPool):
    folder, _ = dataset
    python = tools.default_tools()[0]
    classic = {**python, 'id': 'python-classic', 'name': 'Python (classic)', 'ui': 'notebook'}
    Setting().set('resolver.tools', [python, classic])
    [entry] = waitForPool(1)
    assert (entry['tool'], entry['toolEntry']['id']) == ('python', 'python')
    # Another tool: a cold start; the warm server stays for the default tool.
    other = launch(server, user, folder, tool='python-classic').json
    assert other['status'] == 'launching' and other['tool'] == 'python-classic'
    assert PooledNotebook().load(entry['_id'])['status'] == 'ready'
    assert waitFor(server, user, other['_id'])['status'] == 'running'
    # The default tool: the warm server, at once.
    nb = launch(server, user, folder).json
    assert (nb['_id'], nb['status'], nb['tool']) == (str(entry['_id']), 'running', 'python')
    assert Notebook().load(nb['_id'])['toolEntry']['id'] == 'python'
    # A new default tool: the pool's servers are replaced by servers of that tool.
    [refilled] = waitForPool(1)
    assert refilled['tool'] == 'python'
    Setting().set('resolver.default_tool', 'python-classic')
    [fresh] = waitForPool(1)
    assert fresh['tool'] == 'python-classic' and fresh['_id'] != refilled['_id']
