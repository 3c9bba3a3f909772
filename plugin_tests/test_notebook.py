"""Notebooks next to the data, through ``/notebook``, for both launcher backends.

Real notebook servers: ``jupyter_server`` subprocesses (process backend) and
containers of the notebook image (docker backend: needs DOCKER_HOST and the
image, see test_launcher_docker.py; skipped without them, except in CI where
they fail).
"""

import datetime
import os
import socket
import subprocess
import time
import urllib.parse

import pytest
import requests
from girder.constants import AccessType
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.setting import Setting
from girder.models.user import User
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import frontdoor
from girder_resolver.launcher import LaunchSpec
from girder_resolver.launcher.identity import COOKIE_NAME
from girder_resolver.models.notebook import Notebook, changeCount, waitForChange
from girder_resolver.primitives import processStamp
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks import policy, recovery
from girder_resolver.services.notebooks.local import (
    IDENTITY_LABEL,
    INSTANCE_LABEL,
    dataPath,
    instanceId,
    launcher,
)
from plugin_tests.test_launcher_docker import _docker_unavailable
from plugin_tests.web_fixtures import launchChromium

BACKENDS = ['process', 'docker']
FILES = {'readme.txt': 'hello\n', 'values.csv': 'a,b\n1,2\n'}


def requireDocker():
    reason = _docker_unavailable()
    if reason:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'The docker notebook tests must run in CI, but {reason}', pytrace=False)
        pytest.skip(reason)


def http():
    """A requests session that ignores proxy settings: notebooks run on this machine."""
    session = requests.Session()
    session.trust_env = False
    return session


def serverRefused(handle):
    """True when nothing answers where the notebook server listened (socket or port)."""
    if handle.get('socket'):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            return sock.connect_ex(handle['socket']) != 0
    host, port = handle['host'], handle['port']
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host if host not in ('0.0.0.0', '') else '127.0.0.1', port)) != 0


def makeDataset(server, admin, assetstore, root, name, public=True):
    """A dataset folder: filled by a filesystem-assetstore import of a real directory, and
    tagged with an identifier."""
    data = root / name.replace(' ', '_')
    (data / 'tables').mkdir(parents=True)
    for fname, text in FILES.items():
        (data / fname).write_text(text)
    (data / 'tables' / 'more.csv').write_text('x\n1\n')
    collection = Collection().findOne({'name': 'Data'}) or Collection().createCollection(
        'Data', admin, public=True
    )
    folder = Folder().createFolder(
        collection, name, parentType='collection', creator=admin, public=public
    )
    importInto(server, admin, assetstore, data, folder)
    slug = ''.join(c for c in name.lower() if c.isalnum())
    folder = Folder().setMetadata(folder, {'identifier': f'doi:10.5072/test.{slug}'})
    return folder, data


def importInto(server, admin, assetstore, data, folder):
    """Import the directory ``data`` into ``folder`` through the filesystem assetstore."""
    resp = server.request(
        f'/assetstore/{assetstore["_id"]}/import',
        method='POST',
        user=admin,
        params={
            'importPath': str(data),
            'destinationId': str(folder['_id']),
            'destinationType': 'folder',
        },
    )
    assertStatusOk(resp)


def launch(server, user, folder, **params):
    return server.request(
        '/notebook', method='POST', user=user, params={'folderId': str(folder['_id']), **params}
    )


def waitFor(server, user, notebookId, statuses=('running', 'error'), timeout=120):
    deadline = time.monotonic() + timeout
    while True:
        resp = server.request(f'/notebook/{notebookId}', user=user)
        assertStatusOk(resp)
        if resp.json['status'] in statuses:
            return resp.json
        assert time.monotonic() < deadline, f'notebook stuck at {resp.json}'
        time.sleep(0.2)


def runningNotebook(server, user, folder):
    resp = launch(server, user, folder)
    assertStatusOk(resp)
    nb = waitFor(server, user, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    return nb


def frontDoorUrl(nb):
    """``<front door>/notebook/<id>/``: where a local notebook is reached."""
    return notebooks.frontDoorUrl(Notebook().load(nb['_id']))


def apiUrl(nb, path):
    """``{base_url}api/{path}`` of a notebook, through the front door."""
    return f'{frontDoorUrl(nb)}api/{path}'


def tokenOf(nb):
    """The notebook's Jupyter token (never in its URL: test_frontdoor.py opens that link)."""
    return Notebook().load(nb['_id'])['token']


def handleOf(nb):
    return Notebook().load(nb['_id'])['handle']


def makeUser(login):
    return User().createUser(login, 'password12345', 'A', 'User', f'{login}@example.invalid')


@pytest.fixture(params=BACKENDS)
def backend(request, server):
    if request.param == 'docker':
        requireDocker()
    Setting().set('resolver.backend', request.param)
    yield request.param
    # Leave nothing running: wait for launches in flight, then stop every live notebook.
    deadline = time.monotonic() + 60
    while Notebook().findOne({'status': 'launching'}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)


@pytest.fixture(scope='module')
def browser():
    """Debian's Chromium through Playwright; fails in CI, skips elsewhere, when missing."""
    with launchChromium() as chromium:
        yield chromium


@pytest.fixture
def dataset(server, admin, fsAssetstore, tmp_path):
    return makeDataset(server, admin, fsAssetstore, tmp_path, 'Survey 2016')


@pytest.mark.plugin('resolver')
def testANotebookRunsNextToTheDataReadOnlyBehindItsToken(
    server, admin, user, dataset, backend, browser
):
    folder, _ = dataset
    started = time.monotonic()
    resp = launch(server, user, folder)
    assertStatusOk(resp)
    # The launch runs in the background: the request answers at once.
    assert time.monotonic() - started < 5
    assert resp.json['status'] == 'launching'
    # Keyed by this site's name (a fresh install's default names its host) and the user.
    assert resp.json['identity'] == f'{Setting().get("resolver.site_name")}:{user["_id"]}'
    assert set(resp.json) >= {
        '_id',
        'folderId',
        'userId',
        'identity',
        'status',
        'url',
        'created',
        'lastActivity',
        'message',
    }
    nb = waitFor(server, user, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    token = tokenOf(nb)
    session = http()

    listing = session.get(
        apiUrl(nb, 'contents/Survey 2016'), headers={'Authorization': f'token {token}'}
    )
    assert listing.status_code == 200
    assert {e['name'] for e in listing.json()['content']} == set(FILES) | {'tables'}
    # A fresh session: the first one now holds Jupyter's login cookie.
    assert http().get(apiUrl(nb, 'contents/Survey 2016')).status_code == 403
    write = session.put(
        apiUrl(nb, 'contents/Survey 2016/new.txt'),
        headers={'Authorization': f'token {token}'},
        json={'type': 'file', 'format': 'text', 'content': 'x'},
    )
    assert write.status_code == 403
    # The notebook's address opens the default tool's UI (JupyterLab), whose file browser
    # shows the dataset, to a browser holding the notebook's cookie (what its open link
    # sets: test_frontdoor.py).
    assert token not in nb['url']
    page = session.get(frontDoorUrl(nb), headers={'Authorization': f'token {token}'})
    assert page.status_code == 200
    assert urllib.parse.urlsplit(page.url).path.endswith('/lab')
    context = browser.new_context()
    try:
        context.add_cookies([{'name': COOKIE_NAME, 'value': token, 'url': frontDoorUrl(nb)}])
        tab = context.new_page()
        tab.goto(frontDoorUrl(nb))
        tab.get_by_text('Survey 2016', exact=True).first.wait_for(timeout=20000)
    finally:
        context.close()

    # The same person launching again gets the same notebook.
    again = launch(server, user, folder)
    assertStatusOk(again)
    assert again.json['_id'] == nb['_id']
    # Nobody else sees it, nor its token.
    other = makeUser('other')
    assertStatus(server.request(f'/notebook/{nb["_id"]}', user=other), 403)
    assert server.request('/notebook', user=other).json == []
    assert [n['_id'] for n in server.request('/notebook', user=admin).json] == [nb['_id']]

    handle = handleOf(nb)
    resp = server.request(f'/notebook/{nb["_id"]}', method='DELETE', user=user)
    assertStatusOk(resp)
    assert resp.json['status'] == 'stopped'
    assert resp.json['url'] is None
    assert not launcher(backend).is_alive(handle)
    assert serverRefused(handle)
    # The front door no longer routes there (test_frontdoor.py: Girder's "stopped" page).
    assert f'/notebook/{nb["_id"]}' not in frontdoor.routes()
    assert http().get(apiUrl(nb, 'contents')).status_code != 200
    assert Notebook().load(nb['_id']).get('token') is None


@pytest.mark.plugin('resolver')
def testEachPersonGetsTheirOwnNotebookAndTheCapHolds(
    server, admin, user, fsAssetstore, tmp_path, backend
):
    Setting().set('resolver.user_cap', 1)
    first, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'First')
    second, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Second')
    other = makeUser('other')
    mine = launch(server, user, first)
    theirs = launch(server, other, first)
    assertStatusOk(mine)
    assertStatusOk(theirs)
    assert mine.json['_id'] != theirs.json['_id']
    refused = launch(server, user, second)
    assertStatus(refused, 429)
    assert 'resolver.user_cap = 1' in refused.json['message']
    assert 'DELETE /notebook/' in refused.json['message']
    for person, resp in ((user, mine), (other, theirs)):
        assert waitFor(server, person, resp.json['_id'])['status'] == 'running'
    assertStatusOk(server.request(f'/notebook/{mine.json["_id"]}', method='DELETE', user=user))
    # Stopping one frees a place under the cap.
    assertStatusOk(launch(server, user, second))


@pytest.mark.plugin('resolver')
def testConcurrentLaunchesOfTheSameFolderMakeOneNotebook(server, user, dataset, backend):
    import concurrent.futures

    folder, _ = dataset
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: launch(server, user, folder), range(6)))
    for resp in answers:
        assertStatusOk(resp)
    assert len({resp.json['_id'] for resp in answers}) == 1
    assert Notebook().collection.count_documents({'live': True}) == 1
    waitFor(server, user, answers[0].json['_id'])


@pytest.mark.plugin('resolver')
def testTheCullerStopsIdleNotebooksSparesActiveOnesAndNoticesVanishedOnes(
    server, admin, user, fsAssetstore, tmp_path, backend
):
    Setting().set('resolver.idle_timeout', 60)
    idleFolder, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Idle')
    activeFolder, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Active')
    idle = runningNotebook(server, user, idleFolder)
    active = runningNotebook(server, user, activeFolder)
    time.sleep(3)  # time passing, not a wait: the active one's activity comes 3 s later
    resp = http().get(
        apiUrl(active, 'contents'), headers={'Authorization': f'token {tokenOf(active)}'}
    )
    assert resp.status_code == 200
    # 57 s from now the idle one has been idle over 60 s; the active one for under 60.
    now = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=57)
    report = policy.cullOnce(now=now)
    assert report == {idle['_id']: 'culled'}
    gone = server.request(f'/notebook/{idle["_id"]}', user=user).json
    assert gone['status'] == 'stopped'
    assert 'without activity' in gone['message']
    assert not launcher(backend).is_alive(handleOf(idle))
    assert server.request(f'/notebook/{active["_id"]}', user=user).json['status'] == 'running'

    # A server that dies behind our back is noticed and marked stopped. (The culler
    # thread of this process may notice first: hence .get with a default.)
    launcher(backend).stop(handleOf(active))
    assert policy.cullOnce().get(active['_id'], 'vanished') == 'vanished'
    assert server.request(f'/notebook/{active["_id"]}', user=user).json['status'] == 'stopped'


@pytest.mark.plugin('resolver')
def testTheCullerStopsNotebooksOlderThanTheMaxAge(server, user, dataset, backend):
    Setting().set('resolver.max_age', 30)
    nb = runningNotebook(server, user, dataset[0])
    assert policy.cullOnce() == {}
    later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=40)
    assert policy.cullOnce(now=later) == {nb['_id']: 'culled'}
    assert 'maximum age' in server.request(f'/notebook/{nb["_id"]}', user=user).json['message']


@pytest.mark.plugin('resolver')
def testARestartAdoptsLiveNotebooksEndsDeadAndInterruptedOnesAndStopsOrphans(
    server, admin, user, fsAssetstore, tmp_path, backend
):
    liveFolder, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Live')
    deadFolder, data = makeDataset(server, admin, fsAssetstore, tmp_path, 'Dead')
    live = runningNotebook(server, user, liveFolder)
    dead = runningNotebook(server, user, deadFolder)
    # The server of one dies while Girder is down.
    launcher(backend).stop(handleOf(dead))
    # A launch was under way when Girder crashed: a record with no server.
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=5)
    interrupted = (
        Notebook()
        .collection.insert_one(
            {
                'site': Setting().get('resolver.site_name'),
                'identity': f'local:{admin["_id"]}',
                'folderId': str(deadFolder['_id']),
                'userId': admin['_id'],
                'status': 'launching',
                'live': True,
                'message': 'Starting the notebook server',
                'backend': backend,
                'created': old,
                'updated': old,
                'token': 'x',
            }
        )
        .inserted_id
    )
    # Two launches that were just under way (well within the start-up grace): one by a
    # process of this machine that has since died (the Girder that crashed), which is
    # ended at once; one by a process still alive (this one), which is left to it.
    crashedNow = _launchRecord(admin, liveFolder, backend, processStamp())
    worker = subprocess.Popen(['sleep', '0.5'])
    deadWorker = processStamp(worker.pid)
    worker.wait()
    Notebook().collection.update_one({'_id': crashedNow}, {'$set': {'worker': deadWorker}})
    busyFolder, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Busy')
    underWay = _launchRecord(admin, busyFolder, backend, processStamp())
    # A server labelled as ours whose record was lost.
    orphan = launcher(backend).start(
        LaunchSpec(
            'orphan-' + backend,
            'orphan-token',
            str(data),
            'data',
            labels={INSTANCE_LABEL: instanceId(), IDENTITY_LABEL: 'local:nobody'},
        )
    )
    # ... and one of another installation, which must be left alone.
    foreign = launcher(backend).start(
        LaunchSpec('foreign-' + backend, 'tok', str(data), 'data', labels={INSTANCE_LABEL: 'x'})
    )
    try:
        report = recovery.recover()
        assert report[live['_id']] == 'adopted'
        # The culler thread of this process may get to these first.
        assert report.get(dead['_id'], 'stopped') == 'stopped'
        assert report.get(str(interrupted), 'error') == 'error'
        assert report['orphan-' + backend] == 'orphan stopped'
        assert report.get(str(crashedNow), 'error') == 'error'
        crashed = server.request(f'/notebook/{crashedNow}', user=admin).json
        assert 'interrupted' in crashed['message']
        assert str(underWay) not in report
        assert Notebook().load(underWay)['status'] == 'launching'
        assert 'foreign-' + backend not in report
        nb = server.request(f'/notebook/{live["_id"]}', user=user).json
        assert nb['status'] == 'running'
        listing = http().get(
            apiUrl(nb, 'contents/Live'), headers={'Authorization': f'token {tokenOf(nb)}'}
        )
        assert listing.status_code == 200
        assert server.request(f'/notebook/{dead["_id"]}', user=user).json['status'] == 'stopped'
        crashed = server.request(f'/notebook/{interrupted}', user=admin).json
        assert crashed['status'] == 'error'
        assert 'interrupted' in crashed['message']
        assert not launcher(backend).is_alive(orphan)
        assert launcher(backend).is_alive(foreign)
        # Adopted notebooks are still culled.
        Setting().set('resolver.idle_timeout', 1)
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=30)
        assert policy.cullOnce(now=later).get(live['_id'], 'culled') == 'culled'
        assert server.request(f'/notebook/{live["_id"]}', user=user).json['status'] == 'stopped'
    finally:
        launcher(backend).stop(foreign)
        launcher(backend).stop(orphan)


def _launchRecord(user, folder, backend, worker):
    """A launch in progress, as ``Notebook.launch`` records it before its server starts."""
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        Notebook()
        .collection.insert_one(
            {
                'site': Setting().get('resolver.site_name'),
                'identity': f'local:{user["_id"]}',
                'folderId': str(folder['_id']),
                'userId': user['_id'],
                'status': 'launching',
                'live': True,
                'message': 'Starting the notebook server',
                'backend': backend,
                'created': now,
                'updated': now,
                'token': 'x',
                'worker': worker,
            }
        )
        .inserted_id
    )


@pytest.mark.plugin('resolver')
def testAFolderThatIsNoDatasetOrHasNoDataOnDiskIsAClear422(server, admin, user):
    collection = Collection().createCollection('Empty', admin, public=True)
    folder = Folder().createFolder(collection, 'Nothing here', parentType='collection', public=True)
    resp = launch(server, user, folder)
    assertStatus(resp, 422)
    assert 'is not a dataset' in resp.json['message']
    folder = Folder().setMetadata(folder, {'identifier': 'doi:10.5072/nothing.here'})
    resp = launch(server, user, folder)
    assertStatus(resp, 422)
    assert "not on this server's disk" in resp.json['message']
    assert Notebook().collection.count_documents({}) == 0


@pytest.mark.plugin('resolver')
def testTheDataPathsSettingPointsAFolderAtADirectory(server, admin, user, tmp_path):
    collection = Collection().createCollection('Mapped', admin, public=True)
    folder = Folder().createFolder(collection, 'Mapped', parentType='collection', public=True)
    (tmp_path / 'mapped').mkdir()
    Setting().set('resolver.data_paths', {str(folder['_id']): str(tmp_path / 'mapped')})
    assert dataPath(folder) == str(tmp_path / 'mapped')


@pytest.mark.plugin('resolver')
def testTheDataPathOfANestedImportIsTheImportedDirectory(server, admin, fsAssetstore, tmp_path):
    data = tmp_path / 'outer'
    (data / 'inner').mkdir(parents=True)
    (data / 'inner' / 'only.txt').write_text('x')
    collection = Collection().createCollection('Nested', admin, public=True)
    folder = Folder().createFolder(collection, 'Outer', parentType='collection', public=True)
    importInto(server, admin, fsAssetstore, data, folder)
    assert dataPath(Folder().load(folder['_id'], force=True)) == str(data)
    # The folder the import made for a sub-directory has that sub-directory as its own.
    inner = Folder().findOne({'parentId': folder['_id'], 'name': 'inner'})
    assert dataPath(inner) == str(data / 'inner')


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    'params',
    [
        {'folderId': 'garbage'},
        {'folderId[$ne]': 'x'},
        {'folderId': '{"$ne": null}'},
        {'folderId': 'f' * 24},
        {},
    ],
)
def testBadFolderIdsAreRefusedWithA400(server, user, params):
    resp = server.request('/notebook', method='POST', user=user, params=params)
    assertStatus(resp, 400)
    assert resp.json['message']


@pytest.mark.plugin('resolver')
def testAccessIsCheckedOnEveryRoute(server, admin, user, fsAssetstore, tmp_path):
    private, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Private', public=False)
    assertStatus(launch(server, None, private), 401)
    assertStatus(launch(server, user, private), 403)
    # Only a federation credential may act for someone else.
    Folder().setUserAccess(private, user, AccessType.READ, save=True)
    resp = launch(server, user, private, onBehalfOf='central:abc')
    assertStatus(resp, 403)
    assert 'federation credential' in resp.json['message']
    assertStatus(server.request('/notebook/nonsense', user=user), 400)
    assertStatus(server.request('/notebook/' + 'a' * 24, user=user), 404)
    assertStatus(server.request('/notebook/' + 'a' * 24, method='DELETE', user=user), 404)
    assertStatus(server.request('/notebook', user=user, params={'folderId': 'x'}), 400)
    assertStatus(server.request('/notebook', user=user, params={'sort': 'token'}), 400)
    assertStatus(server.request('/notebook', user=user, params={'offset': -1}), 400)


@pytest.mark.plugin('resolver')
def testResolveLaunchOfALocalDatasetLaunchesHere(server, admin, user, dataset):
    folder, _ = dataset
    Folder().setMetadata(folder, {'identifier': 'doi:10.5072/local.survey'})
    resp = server.request(
        '/resolve/launch',
        method='POST',
        user=user,
        params={'id': 'https://doi.org/10.5072/LOCAL.SURVEY'},
    )
    assertStatusOk(resp)
    assert resp.json['site'] == Setting().get('resolver.site_name')
    assert resp.json['folderId'] == str(folder['_id'])
    try:
        assert waitFor(server, user, resp.json['_id'])['status'] == 'running'
    finally:
        notebooks.stop(Notebook().load(resp.json['_id']))
    assertStatus(
        server.request('/resolve/launch', method='POST', params={'id': 'doi:10.5072/x'}), 401
    )


@pytest.mark.plugin('resolver')
def testAnEventStreamOfThisProcessIsWokenByEachWriteNotByItsPoll(server, admin):
    """What lets GET /notebook/{id}/events send a change as soon as it is written."""
    import threading

    collection = Collection().createCollection('Woken', admin, public=True)
    folder = Folder().createFolder(collection, 'Woken', parentType='collection', public=True)
    doc = Notebook().collection.find_one(
        {'_id': _launchRecord(admin, folder, 'process', processStamp())}
    )
    since = changeCount()
    assert waitForChange(since, 0.05) is False  # nothing written: it times out
    woken = []
    waiter = threading.Thread(target=lambda: woken.append(waitForChange(since, 60)))
    waiter.start()
    Notebook().transition(doc, 'error', message='Failed')
    waiter.join(30)  # far less than the 60 s it would otherwise wait
    assert woken == [True]
    # A claim to stop is a change too; a write that matched nothing is not.
    since = changeCount()
    assert Notebook().claimForStop(doc, ('running',)) is None
    assert changeCount() == since
