"""Data paths that cannot be widened, tried as an attacker would, with real Girder.

Two datasets live side by side under one directory; one is public, the other is
readable by nobody but the admin. A freshly registered user copies an item of the
public dataset into their own Private folder (``POST /item/{id}/copy``), copies the
whole dataset folder there (``POST /folder/{id}/copy``, which keeps the identifier
tag), tags their folders with identifiers, and launches: every launch on a folder of
theirs is refused, and a notebook of the public dataset, driven from its kernel,
shows that dataset and nothing of its neighbour.
"""

import json
import os
import textwrap

import pytest
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver.models import datapath
from girder_resolver.models.notebook import Notebook
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks.local import dataPath, launcher
from plugin_tests.launcher_helpers import runInKernel, unixSocket
from plugin_tests.test_notebook import importInto, launch, makeUser, requireDocker, waitFor

SECRET_LINE = 'the other dataset: only the admin may read this'


@pytest.fixture
def datasets(server, admin, fsAssetstore, tmp_path):
    """Two tagged, imported datasets under one parent directory: (public, secret, root)."""
    Setting().set('resolver.backend', 'process')
    root = tmp_path / 'datasets'
    (root / 'ocean').mkdir(parents=True)
    (root / 'ocean' / 'temperatures.csv').write_text('t\n12.5\n')
    (root / 'secret').mkdir()
    (root / 'secret' / 'patients.csv').write_text(SECRET_LINE + '\n')
    collection = Collection().createCollection('Data', admin, public=True)
    made = []
    for name, public in (('ocean', True), ('secret', False)):
        folder = Folder().createFolder(
            collection, name, parentType='collection', creator=admin, public=public
        )
        importInto(server, admin, fsAssetstore, root / name, folder)
        folder = Folder().setMetadata(folder, {'identifier': f'doi:10.5072/attack.{name}'})
        made.append(folder)
    yield made[0], made[1], root
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)


def _privateFolder(user):
    return Folder().findOne({'parentId': user['_id'], 'name': 'Private'})


@pytest.mark.plugin('resolver')
def testCopiesIntoAUsersOwnFolderNeverLaunch(server, datasets):
    ocean, secret, root = datasets
    mallory = makeUser('mallory')
    private = _privateFolder(mallory)
    item = server.request('/item', user=mallory, params={'folderId': str(ocean['_id'])}).json[0]
    # An item copied into a sub-folder of Private keeps its file's `imported` and `path`.
    sub = server.request(
        '/folder',
        method='POST',
        user=mallory,
        params={'parentId': str(private['_id']), 'name': 'work'},
    ).json
    copied = server.request(
        f'/item/{item["_id"]}/copy', method='POST', user=mallory, params={'folderId': sub['_id']}
    )
    assertStatusOk(copied)
    # Untagged: not a dataset.
    for folder in (private, sub):
        resp = launch(server, mallory, folder)
        assertStatus(resp, 422)
        assert 'is not a dataset' in resp.json['message']
    # Tagged by mallory (she owns them): still no data path, the copy does not count.
    for folder in (private, Folder().load(sub['_id'], force=True)):
        Folder().setMetadata(folder, {'identifier': 'doi:10.5072/attack.mine'})
        resp = launch(server, mallory, Folder().load(folder['_id'], force=True))
        assertStatus(resp, 422)
        assert "not on this server's disk" in resp.json['message']
    # A copy of the whole dataset folder keeps its tag, but not the import record.
    folderCopy = server.request(
        f'/folder/{ocean["_id"]}/copy',
        method='POST',
        user=mallory,
        params={'parentId': str(private['_id']), 'parentType': 'folder', 'name': 'mine'},
    )
    assertStatusOk(folderCopy)
    copyDoc = Folder().findOne({'parentId': private['_id'], 'name': 'mine'})
    assert copyDoc['meta'].get('identifier')
    assert datapath.importedPath(copyDoc) is None
    resp = launch(server, mallory, copyDoc)
    assertStatus(resp, 422)
    assert Notebook().collection.count_documents({}) == 0
    # The secret dataset itself: no read access, no launch.
    assertStatus(launch(server, mallory, secret), 403)


@pytest.mark.parametrize('backend', ['process', 'docker'])
@pytest.mark.plugin('resolver')
def testANotebookOfTheDatasetSeesThatDatasetAndNothingOfItsNeighbour(server, datasets, backend):
    ocean, secret, root = datasets
    if backend == 'docker':
        requireDocker()
    Setting().set('resolver.backend', backend)
    mallory = makeUser('mallory')
    resp = launch(server, mallory, ocean)
    assertStatusOk(resp)
    nb = waitFor(server, mallory, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    doc = Notebook().load(nb['_id'])
    assert doc['dataPath'] == str(root / 'ocean')
    handle = doc['handle']
    backendLauncher = launcher(backend)
    kernelId = backendLauncher.request(
        handle, 'POST', 'api/kernels', token=doc['token'], body={}
    ).json()['id']
    out = runInKernel(
        f'ws://localhost{handle["baseUrl"]}api/kernels/{kernelId}/channels',
        textwrap.dedent(
            f"""
            import json, os
            home = os.path.expanduser('~')
            seen = {{'home': home}}
            for top, dirs, files in os.walk(home):
                for name in files:
                    path = os.path.join(top, name)
                    try:
                        seen[path] = open(path, errors='replace').read(200)
                    except OSError as e:
                        seen[path] = e.strerror
            for path in ({str(root)!r}, {str(root / 'secret')!r}, home + '/ocean/..',
                         home + '/ocean/../secret'):
                seen[path] = sorted(os.listdir(path)) if os.path.isdir(path) else 'absent'
            print(json.dumps(seen))
            """
        ),
        headers=[f'Authorization: token {doc["token"]}'],
        sock=unixSocket(handle['socket']),
    )
    seen = json.loads(out)
    home = seen['home']
    assert seen[f'{home}/ocean/temperatures.csv'] == 't\n12.5\n'
    assert SECRET_LINE not in out
    assert seen[str(root)] == 'absent' and seen[str(root / 'secret')] == 'absent'
    assert seen[f'{home}/ocean/../secret'] == 'absent'
    assert 'secret' not in seen[f'{home}/ocean/..']


@pytest.mark.plugin('resolver')
def testARecordedPathThatLeavesItsImportRootIsRefused(server, admin, fsAssetstore, tmp_path):
    outside = tmp_path / 'outside'
    outside.mkdir()
    (outside / 'other.txt').write_text('not part of the import\n')
    root = tmp_path / 'root'
    (root / 'real').mkdir(parents=True)
    (root / 'real' / 'a.txt').write_text('a\n')
    os.symlink(outside, root / 'escape')
    collection = Collection().createCollection('Links', admin, public=True)
    folder = Folder().createFolder(collection, 'Root', parentType='collection', public=True)
    importInto(server, admin, fsAssetstore, root, folder)
    real = Folder().findOne({'parentId': folder['_id'], 'name': 'real'})
    escape = Folder().findOne({'parentId': folder['_id'], 'name': 'escape'})
    assert dataPath(real) == str(root / 'real')
    # The import followed the symlink, but its target lies outside the import root.
    assert escape is not None and dataPath(escape) is None
    # A record tampered with to point outside its root is refused too.
    Folder().collection.update_one(
        {'_id': real['_id']}, {'$set': {f'{datapath.FIELD}.path': str(outside)}}
    )
    assert dataPath(Folder().load(real['_id'], force=True)) is None
