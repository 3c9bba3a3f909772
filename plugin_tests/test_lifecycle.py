"""The notebook state machine, with no processes: the lifecycle against a fake launcher.

A real Girder server on SecantusDB (pytest-girder's fixtures), the real models, services,
REST routes and front door; only the launcher is replaced, by an in-memory one
(plugin_tests/fake_launcher.py, like JupyterHub's ``MockSpawner``), injected through the
launcher selection function. The real backends are covered by test_notebook.py and
test_launcher_*.py.
"""

import concurrent.futures
import datetime
import threading
import time

import pytest
from bson import ObjectId
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver.errors import InvalidTransition
from girder_resolver.launcher import LaunchSpec
from girder_resolver.models.notebook import LIVE, Notebook
from girder_resolver.primitives import now, processStamp
from girder_resolver.rest.errors import httpStatus
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks import local, policy, recovery
from plugin_tests.fake_launcher import FakeLauncher

pytestmark = pytest.mark.plugin('resolver')


@pytest.fixture
def fake(server, monkeypatch):
    """The in-memory launcher, whatever backend a notebook names (the one allowed fake)."""
    backend = FakeLauncher()
    monkeypatch.setattr(local, 'launcher', lambda name=None: backend)
    yield backend
    # Leave nothing half-done: let hung launches go, wait for their threads, stop the rest.
    backend.release()
    deadline = time.monotonic() + 30
    while [t for t in threading.enumerate() if t.name.startswith('notebook-')]:
        assert time.monotonic() < deadline, 'a launch thread outlived its test'
        time.sleep(0.05)
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)


@pytest.fixture
def folder(admin, tmp_path):
    """A dataset folder that anyone may read, its data an (empty) directory on this machine."""
    collection = Collection().createCollection('Data', admin, public=True)
    folder = Folder().createFolder(
        collection, 'Survey', parentType='collection', creator=admin, public=True
    )
    Setting().set('resolver.data_paths', {str(folder['_id']): str(tmp_path)})
    return folder


def record(user, status, **fields):
    """A notebook record in ``status``, as the lifecycle would have left it."""
    site = Setting().get('resolver.site_name')
    at = now()
    doc = {
        'site': site,
        'identity': f'{site}:{user["_id"]}',
        'folderId': str(ObjectId()),
        'userId': user['_id'],
        'status': status,
        'live': status in LIVE,
        'message': f'was {status}',
        'url': None,
        'created': at,
        'updated': at,
        **fields,
    }
    Notebook().collection.insert_one(doc)
    return doc


def launch(server, user, folder):
    resp = server.request(
        '/notebook', method='POST', user=user, params={'folderId': str(folder['_id'])}
    )
    assertStatusOk(resp)
    return resp.json


def waitFor(server, user, notebookId, statuses=('running', 'stopped', 'error'), timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        resp = server.request(f'/notebook/{notebookId}', user=user)
        assertStatusOk(resp)
        if resp.json['status'] in statuses:
            return resp.json
        assert time.monotonic() < deadline, f'notebook stuck at {resp.json}'
        time.sleep(0.05)


def running(server, user, folder):
    nb = waitFor(server, user, launch(server, user, folder)['_id'])
    assert nb['status'] == 'running', nb['message']
    return nb


def stored(nb):
    return Notebook().load(ObjectId(nb['_id']))


# -- racing claims (the table itself: test_notebook_transitions.py) --------------------


def testOfConcurrentClaimsToStopExactlyOneWins(server, user):
    doc = record(user, 'running')

    def claim(_):
        try:
            Notebook().transition(dict(doc), 'stopping', fromStatus=('running',))
            return True
        except InvalidTransition:
            return False

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(claim, range(8))) == [False] * 7 + [True]


# -- launching and stopping through REST ---------------------------------------------


def testALaunchRunsAndAStopEndsIt(server, user, folder, fake):
    nb = running(server, user, folder)
    assert fake.alive() == {nb['_id']}
    assert stored(nb)['handle']['backend'] == 'fake'
    resp = server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)
    assertStatusOk(resp)
    assert (resp.json['status'], resp.json['url']) == ('stopped', None)
    assert fake.alive() == set()
    assert 'token' not in stored(nb)


def testALaunchWhoseStartFailsEndsInErrorWithTheReason(server, user, folder, fake):
    fake.failStart = 'No room on this machine for another notebook server.'
    nb = waitFor(server, user, launch(server, user, folder)['_id'])
    assert nb['status'] == 'error'
    assert fake.failStart in nb['message']
    doc = stored(nb)
    assert doc['live'] is False and 'token' not in doc
    assert fake.alive() == set()
    # The slot is free again: the next launch is a new notebook, and it runs.
    fake.failStart = None
    again = running(server, user, folder)
    assert again['_id'] != nb['_id']


def testAStopWhileTheServerStartsWinsOverTheLaunch(server, user, folder, fake):
    fake.hangStarts()
    nb = launch(server, user, folder)
    assert fake.started.wait(10)
    resp = server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)
    assertStatusOk(resp)
    # No handle yet: the launch thread releases what it starts.
    assert resp.json['status'] == 'stopping'
    fake.release()
    assert waitFor(server, user, nb['_id'])['status'] == 'stopped'
    assert fake.alive() == set() and fake.count('stop') == 1


def testAStopWhileJupyterStartsWinsOverTheLaunch(server, user, folder, fake):
    fake.hangReadiness()
    nb = launch(server, user, folder)
    deadline = time.monotonic() + 10
    while 'handle' not in stored(nb):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    resp = server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)
    assert resp.json['status'] == 'stopped'
    fake.release()
    # The launch thread finds its server gone and its record stopped: it stays stopped.
    deadline = time.monotonic() + 10
    while [t for t in threading.enumerate() if t.name == f'notebook-{nb["_id"]}']:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert waitFor(server, user, nb['_id'])['status'] == 'stopped'
    assert fake.alive() == set()


def testAStopTheEngineRefusedIsFinishedByALaterRound(server, user, folder, fake):
    nb = running(server, user, folder)
    fake.failStop = 'The engine is not answering.'
    resp = server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)
    assertStatusOk(resp)
    # The claim is kept, so that nobody else hands the notebook out meanwhile.
    assert resp.json['status'] == 'stopping'
    assert 'Could not stop yet' in resp.json['message']
    fake.failStop = None
    # Within the grace its stopping process (this one) may still finish it ...
    assert policy.cullOnce() == {}
    # ... after it, a culler round does.
    later = now() + datetime.timedelta(seconds=local.LAUNCH_GRACE + 10)
    assert policy.cullOnce(now=later) == {nb['_id']: 'stopped'}
    assert stored(nb)['status'] == 'stopped'
    assert fake.alive() == set()


def testConcurrentStopsHaveOneWinner(server, user, folder, fake, monkeypatch):
    nb = running(server, user, folder)
    claims = spyTransitions(monkeypatch)

    def delete(_):
        return server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(delete, range(6)))
    for resp in answers:
        assertStatusOk(resp)
        assert resp.json['status'] in ('stopping', 'stopped')
    assert [to for to, ok, _ in claims if ok and to == 'stopping'] == ['stopping']
    assert [to for to, ok, _ in claims if ok and to == 'stopped'] == ['stopped']
    assert fake.count('stop') == 1
    assert stored(nb)['status'] == 'stopped'


def testOpeningANotebookThatIsNotRunningIsA409WithAMessage(server, user, folder, fake):
    nb = running(server, user, folder)
    assertStatusOk(server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user))
    # Opening a stopped notebook: a conflict with its state, said in words.
    resp = server.request(f'/notebook/{nb["_id"]}/open', user=user)
    assertStatus(resp, 409)
    assert 'not running (it is stopped)' in resp.json['message']
    # Every InvalidTransition a route lets through is mapped the same way, in rest/errors.py.
    error = InvalidTransition('stopped', 'running')
    assert httpStatus(error) == 409
    assert error.message == (
        'The notebook is stopped; it cannot become running. Reload it and try again.'
    )


# -- the culler and recovery ---------------------------------------------------------


def spyTransitions(monkeypatch, inside=None):
    """Record every ``Notebook().transition``: ``(to, applied, within the entry point)``."""
    seen = []
    real = Notebook.transition

    def transition(self, doc, to, *args, **kwargs):
        within = bool(inside and inside.depth)
        try:
            result = real(self, doc, to, *args, **kwargs)
        except InvalidTransition:
            seen.append((to, False, within))
            raise
        seen.append((to, True, within))
        return result

    monkeypatch.setattr(Notebook, 'transition', transition)
    return seen


def testTheCullerStopsAnIdleNotebookOnlyThroughTheEntryPoint(
    server, admin, user, folder, fake, monkeypatch
):
    Setting().set('resolver.idle_timeout', 60)
    idle = running(server, user, folder)
    active = running(server, admin, folder)
    fake.touch(active['_id'], now() + datetime.timedelta(seconds=30))
    asked = []
    inside = threading.local()
    inside.depth = 0
    real = notebooks.stop

    def stop(doc, *args, **kwargs):
        asked.append(str(doc['_id']))
        inside.depth += 1
        try:
            return real(doc, *args, **kwargs)
        finally:
            inside.depth -= 1

    monkeypatch.setattr(notebooks, 'stop', stop)
    writes = spyTransitions(monkeypatch, inside)
    report = policy.cullOnce(now=now() + datetime.timedelta(seconds=70))
    assert report == {idle['_id']: 'culled'}
    assert asked == [idle['_id']]
    # The culler itself wrote no status: only activity (running stays running).
    assert {to for to, ok, within in writes if ok and not within} <= {'running'}
    assert {to for to, ok, within in writes if ok and within} == {'stopping', 'stopped'}
    gone = server.request(f'/notebook/{idle["_id"]}', user=user).json
    assert gone['status'] == 'stopped' and 'without activity' in gone['message']
    assert fake.alive() == {active['_id']}
    # A server that vanished is stopped the same way.
    fake.die(active['_id'])
    assert policy.cullOnce() == {active['_id']: 'vanished'}
    assert asked == [idle['_id'], active['_id']]
    assert stored(active)['status'] == 'stopped'


def testWhenTheEngineCannotBeReachedNothingIsJudgedDead(server, user, folder, fake):
    Setting().set('resolver.idle_timeout', 60)
    nb = running(server, user, folder)
    fake.die(nb['_id'])
    fake.engineDown = True
    assert policy.cullOnce(now=now() + datetime.timedelta(seconds=70)) == {}
    assert recovery.recover() == {}
    assert stored(nb)['status'] == 'running'
    fake.engineDown = False
    assert policy.cullOnce() == {nb['_id']: 'vanished'}


def testRecoverySettlesWhatACrashLeftBehind(server, admin, user, folder, fake):
    survivor = running(server, user, folder)
    died = running(server, admin, folder)
    fake.die(died['_id'])
    old = now() - datetime.timedelta(minutes=5)
    # A launch whose Girder died after its server started: the server answers.
    answering = record(user, 'launching', token='t1', updated=old, worker=processStamp())
    answering['handle'] = fake.start(spec(answering, 't1'))
    Notebook().collection.update_one(
        {'_id': answering['_id']}, {'$set': {'handle': answering['handle']}}
    )
    # One whose server never started, and a stop left half-done.
    interrupted = record(user, 'launching', token='t2', updated=old)
    halfStopped = record(admin, 'stopping', token='t3', updated=old)
    # A launch under way in this (live) process, within the grace: left alone.
    underWay = record(admin, 'launching', token='t4', worker=processStamp())
    # A server labelled as ours with no record, and one of another installation.
    orphan = fake.start(
        spec({'_id': ObjectId()}, 'o', labels={local.INSTANCE_LABEL: local.instanceId()})
    )
    foreign = fake.start(spec({'_id': ObjectId()}, 'f', labels={local.INSTANCE_LABEL: 'another'}))

    report = recovery.recover()
    assert report[survivor['_id']] == 'adopted'
    assert report[died['_id']] == 'stopped'
    assert report[str(answering['_id'])] == 'adopted'
    assert report[str(interrupted['_id'])] == 'error'
    assert report[str(halfStopped['_id'])] == 'stopped'
    assert report[orphan['notebookId']] == 'orphan stopped'
    assert str(underWay['_id']) not in report and foreign['notebookId'] not in report
    assert stored(survivor)['status'] == 'running'
    assert 'while this server was down' in stored(died)['message']
    assert stored(died)['status'] == 'stopped'
    assert Notebook().load(answering['_id'])['status'] == 'running'
    assert Notebook().load(interrupted['_id'])['status'] == 'error'
    assert 'interrupted' in Notebook().load(interrupted['_id'])['message']
    assert Notebook().load(halfStopped['_id'])['status'] == 'stopped'
    assert Notebook().load(underWay['_id'])['status'] == 'launching'
    assert fake.alive() == {survivor['_id'], str(answering['_id']), foreign['notebookId']}
    Notebook().collection.delete_one({'_id': underWay['_id']})


def spec(doc, token, labels=None):
    return LaunchSpec(str(doc['_id']), token, '/', 'data', labels=labels or {})
