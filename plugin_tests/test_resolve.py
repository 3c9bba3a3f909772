"""Resolution of identifiers to folders at this site: the foundation of Data DNS."""

import pytest
from girder.constants import AccessType
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver.models.dataset import Dataset

DOI = '10.5072/FK2ABC'
SPELLINGS = [
    '10.5072/FK2ABC',
    '10.5072/fk2abc',
    'doi:10.5072/FK2ABC',
    'DOI:10.5072/fk2abc',
    'https://doi.org/10.5072/FK2ABC',
    'http://dx.doi.org/10.5072/FK2ABC',
    'https://doi.org/10.5072%2FFK2ABC',
]


@pytest.fixture
def collection(admin):
    return Collection().createCollection('Datasets', admin, public=True)


def makeDataset(owner, parent, name, identifier, public=True, parentType='collection'):
    folder = Folder().createFolder(
        parent, name, parentType=parentType, creator=owner, public=public
    )
    return Folder().setMetadata(folder, {'identifier': identifier})


def resolve(server, identifier, user=None, **params):
    return server.request('/resolve', params={'id': identifier, **params}, user=user)


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize('spelling', SPELLINGS)
def testEverySpellingOfADoiResolvesToTheSameFolder(server, admin, collection, spelling):
    folder = makeDataset(admin, collection, 'Galaxy survey', DOI)
    resp = resolve(server, spelling)
    assertStatusOk(resp)
    assert resp.json['identifier'] == 'doi:10.5072/fk2abc'
    assert resp.json['scheme'] == 'doi'
    [location] = resp.json['locations']
    assert location['folderId'] == str(folder['_id'])
    assert location['name'] == 'Galaxy survey'
    assert location['healthy'] is True
    assert location['site'] == Setting().get('resolver.site_name')


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    ('tag', 'pasted'),
    [
        ('doi:10.5281/zenodo.7568094', 'https://zenodo.org/records/7568094'),
        ('10.5281/zenodo.7568094', 'https://zenodo.org/record/7568094?preview=1'),
        (
            'https://doi.org/10.7910/DVN/DBW86T',
            'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/DBW86T',
        ),
        (
            'doi:10.5061/dryad.8t8s248',
            'https://datadryad.org/stash/dataset/doi:10.5061/dryad.8t8s248',
        ),
        (
            'doi:10.6084/m9.figshare.1512427',
            'https://figshare.com/articles/dataset/brain_tumor_dataset/1512427',
        ),
        ('doi:10.24431/rw1k118', 'https://hdl.handle.net/doi:10.24431/rw1k118'),
        ('ark:/b5072/x9', 'https://n2t.net/ark:b5072/x9'),
    ],
)
def testARepositoryPageResolvesToTheDatasetTaggedWithItsIdentifier(
    server, admin, collection, tag, pasted
):
    folder = makeDataset(admin, collection, 'Pasted', tag)
    resp = resolve(server, pasted)
    assertStatusOk(resp)
    [location] = resp.json['locations']
    assert location['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testAListOfIdentifiersIndexesEachOfThem(server, admin, collection):
    folder = makeDataset(admin, collection, 'Both', ['doi:10.5072/one', 'hdl:2142/99'])
    for ident in ('10.5072/ONE', 'https://hdl.handle.net/2142/99'):
        resp = resolve(server, ident)
        assertStatusOk(resp)
        assert resp.json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testRetaggingMovesResolutionAtOnce(server, admin, collection):
    folder = makeDataset(admin, collection, 'Survey', 'doi:10.5072/old')
    assertStatusOk(resolve(server, 'doi:10.5072/old'))
    Folder().setMetadata(folder, {'identifier': 'doi:10.5072/new'})
    assertStatus(resolve(server, 'doi:10.5072/old'), 404)
    assert resolve(server, 'doi:10.5072/new').json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testUntaggingThroughTheApiRemovesTheLocation(server, admin, collection):
    folder = makeDataset(admin, collection, 'Survey', DOI)
    resp = server.request(
        f'/folder/{folder["_id"]}/metadata',
        method='DELETE',
        user=admin,
        body='["identifier"]',
        type='application/json',
    )
    assertStatusOk(resp)
    resp = resolve(server, DOI)
    assertStatus(resp, 404)
    assert 'No site holds doi:10.5072/fk2abc' in resp.json['message']


@pytest.mark.plugin('resolver')
def testTaggingThroughTheRestApiIsResolvableAtOnce(server, admin, collection):
    folder = Folder().createFolder(collection, 'Fresh', parentType='collection', creator=admin)
    resp = server.request(
        f'/folder/{folder["_id"]}/metadata',
        method='PUT',
        user=admin,
        body='{"identifier": "ark:/13030/tf5p30086k"}',
        type='application/json',
    )
    assertStatusOk(resp)
    resp = resolve(server, 'https://n2t.net/ark:/13030/tf5p30086k')
    assertStatusOk(resp)
    assert resp.json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testDeletingAFolderRemovesItsLocation(server, admin, collection):
    folder = makeDataset(admin, collection, 'Survey', DOI)
    resp = server.request(f'/folder/{folder["_id"]}', method='DELETE', user=admin)
    assertStatusOk(resp)
    assertStatus(resolve(server, DOI), 404)
    assert Dataset().find({'folderId': str(folder['_id'])}).count() == 0


@pytest.mark.plugin('resolver')
def testDeletingTheCollectionRemovesNestedDatasets(server, admin, collection):
    parent = Folder().createFolder(collection, 'Parent', parentType='collection', creator=admin)
    makeDataset(admin, parent, 'Nested', DOI, parentType='folder')
    assertStatusOk(resolve(server, DOI))
    resp = server.request(f'/collection/{collection["_id"]}', method='DELETE', user=admin)
    assertStatusOk(resp)
    assertStatus(resolve(server, DOI), 404)


@pytest.mark.plugin('resolver')
def testMovingAFolderToAPrivateCollectionHidesItFromAnonymous(server, admin, collection):
    folder = makeDataset(admin, collection, 'Survey', DOI, public=True)
    private = Collection().createCollection('Private', admin, public=False)
    resp = server.request(
        f'/folder/{folder["_id"]}',
        method='PUT',
        user=admin,
        params={'parentType': 'collection', 'parentId': str(private['_id'])},
    )
    assertStatusOk(resp)
    # Girder keeps the folder's own public flag on a move; make it private like its new home.
    Folder().setPublic(Folder().load(folder['_id'], force=True), False, save=True)
    assertStatus(resolve(server, DOI), 404)
    resp = resolve(server, DOI, user=admin)
    assertStatusOk(resp)
    assert resp.json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testRenamingAFolderShowsTheNewName(server, admin, collection):
    folder = makeDataset(admin, collection, 'Old name', DOI)
    Folder().updateFolder(dict(folder, name='New name'))
    assert resolve(server, DOI).json['locations'][0]['name'] == 'New name'


@pytest.mark.plugin('resolver')
def testPrivateFoldersAreInvisibleToAnonymousAndToUsersWithoutAccess(
    server, admin, user, collection
):
    private = Collection().createCollection('Embargoed', admin, public=False)
    folder = makeDataset(admin, private, 'Embargoed data', DOI, public=False)
    for caller in (None, user):
        resp = resolve(server, DOI, user=caller)
        assertStatus(resp, 404)
        resp = server.request('/resolver/dataset', user=caller)
        assertStatusOk(resp)
        assert resp.json == []
    assertStatusOk(resolve(server, DOI, user=admin))
    Folder().setUserAccess(folder, user, AccessType.READ, save=True)
    resp = resolve(server, DOI, user=user)
    assertStatusOk(resp)
    assert resp.json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testAPublicCopyIsShownWhileThePrivateOneIsHidden(server, admin, collection):
    public = makeDataset(admin, collection, 'Public copy', DOI, public=True)
    makeDataset(admin, collection, 'Private copy', DOI, public=False)
    resp = resolve(server, DOI)
    assert [loc['folderId'] for loc in resp.json['locations']] == [str(public['_id'])]
    assert len(resolve(server, DOI, user=admin).json['locations']) == 2


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    'params',
    [
        {'id': 'hello world'},
        {'id': ''},
        {'id': '{"$ne": "x"}'},
        {'id': '$where'},
        {'id[$ne]': 'x'},
        {'id': ['doi:10.5072/a', 'doi:10.5072/b']},
        {},
        {'id': 'javascript:alert(1)'},
        {'id': 'x' * 5000},
    ],
)
def testInjectionAttemptsAndGarbageGetA400WithAMessage(server, admin, collection, params):
    makeDataset(admin, collection, 'Survey', DOI)
    resp = server.request('/resolve', params=params)
    assertStatus(resp, 400)
    assert resp.json['message']


@pytest.mark.plugin('resolver')
def testAnUnknownIdentifierIsA404WithAMessage(server):
    resp = resolve(server, 'doi:10.5072/nothing-here')
    assertStatus(resp, 404)
    assert 'doi:10.5072/nothing-here' in resp.json['message']


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    'accept',
    [
        'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
        'text/html',
    ],
)
def testABrowserIsSentToTheResolvePage(server, accept):
    resp = server.request(
        '/resolve',
        params={'id': 'doi:10.5072/FK2ABC', 'autolaunch': 'true'},
        additionalHeaders=[('Accept', accept)],
        isJson=False,
    )
    assertStatus(resp, 303)
    location = resp.headers['Location']
    assert '/#resolve?' in location
    assert 'id=doi%3A10.5072%2FFK2ABC' in location
    assert 'autolaunch=1' in location


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    'accept', ['application/json', '*/*', '', 'application/json, text/html;q=0.5']
)
def testAnApiClientGetsJson(server, admin, collection, accept):
    makeDataset(admin, collection, 'Survey', DOI)
    headers = [('Accept', accept)] if accept else []
    resp = server.request('/resolve', params={'id': DOI}, additionalHeaders=headers)
    assertStatusOk(resp)


@pytest.fixture
def taggedBeforeInstall(db, admin):
    # Created before the server (and so the plugin) starts: no event sees it.
    collection = Collection().createCollection('Legacy', admin, public=True)
    return makeDataset(admin, collection, 'Legacy data', DOI)


@pytest.mark.plugin('resolver')
def testFoldersTaggedBeforeThePluginLoadedAreIndexed(taggedBeforeInstall, server):
    resp = resolve(server, DOI)
    assertStatusOk(resp)
    assert resp.json['locations'][0]['folderId'] == str(taggedBeforeInstall['_id'])


@pytest.mark.plugin('resolver')
def testChangingTheIdentifierKeyReindexes(server, admin, collection):
    folder = Folder().createFolder(
        collection, 'Other key', parentType='collection', creator=admin, public=True
    )
    Folder().setMetadata(folder, {'pid': DOI})
    assertStatus(resolve(server, DOI), 404)
    Setting().set('resolver.identifier_key', 'pid')
    assertStatusOk(resolve(server, DOI))


@pytest.mark.plugin('resolver')
def testAnUnparsableTagIsIgnoredAndTheRestIndexed(server, admin, collection):
    folder = makeDataset(admin, collection, 'Mixed', ['not an identifier', DOI])
    resp = resolve(server, DOI)
    assert resp.json['locations'][0]['folderId'] == str(folder['_id'])


@pytest.mark.plugin('resolver')
def testTheDatasetListingFiltersBySiteAndIdentifier(server, admin, collection):
    makeDataset(admin, collection, 'A', DOI)
    makeDataset(admin, collection, 'B', 'hdl:2142/1')
    resp = server.request('/resolver/dataset', params={'identifier': 'https://doi.org/' + DOI})
    assertStatusOk(resp)
    assert [d['name'] for d in resp.json] == ['A']
    resp = server.request(
        '/resolver/dataset',
        params={'site': Setting().get('resolver.site_name'), 'limit': 1, 'offset': 1},
    )
    assert [d['name'] for d in resp.json] == ['B']
    assertStatus(server.request('/resolver/dataset', params={'site': '{"$gt": ""}'}), 400)
    assertStatus(server.request('/resolver/dataset', params={'sort': 'meta.$x'}), 400)


@pytest.mark.plugin('resolver')
def testTheDatasetListingFiltersByCollectionAndShowsPublicFlags(server, admin, collection):
    makeDataset(admin, collection, 'In here', DOI, public=True)
    other = Collection().createCollection('Elsewhere', admin, public=True)
    makeDataset(admin, other, 'Out there', 'hdl:2142/7', public=False)
    resp = server.request(
        '/resolver/dataset', user=admin, params={'collectionId': str(collection['_id'])}
    )
    assertStatusOk(resp)
    assert [(d['name'], d['public'], d['collectionId']) for d in resp.json] == [
        ('In here', True, str(collection['_id']))
    ]
    resp = server.request('/resolver/dataset', params={'collectionId': '{"$ne": 1}'})
    assertStatus(resp, 400)


@pytest.mark.plugin('resolver')
def testTheDatasetListingPagesAcrossBatches(server, admin, collection):
    for i in range(12):
        makeDataset(admin, collection, f'D{i:02d}', f'doi:10.5072/{i:02d}', public=i % 2 == 0)
    names = [d['name'] for d, _ in Dataset().findVisible({}, None, batchSize=5)]
    assert names == [f'D{i:02d}' for i in range(0, 12, 2)]
    page = [d['name'] for d, _ in Dataset().findVisible({}, None, limit=2, offset=3, batchSize=5)]
    assert page == ['D06', 'D08']


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    ('identifier', 'status'),
    [('doi:10.5072/fk2abc', 200), ('doi:10.5072/nothing-here', 404), ('not an id', 400)],
)
def testAnyWebPageMayReadAnAnonymousResolution(server, admin, collection, identifier, status):
    """The bookmarklet asks from a repository's page: any origin, no credentials."""
    makeDataset(admin, collection, 'Survey', DOI)
    resp = server.request(
        '/resolve',
        params={'id': identifier},
        additionalHeaders=[('Origin', 'https://zenodo.org'), ('Accept', 'application/json')],
    )
    assertStatus(resp, status)
    assert resp.headers['Access-Control-Allow-Origin'] == '*'
    assert 'Access-Control-Allow-Credentials' not in resp.headers


@pytest.mark.plugin('resolver')
def testAnOriginTheAdminAllowsKeepsGirdersCorsAnswer(server, admin, collection):
    Setting().set('core.cors.allow_origin', 'https://portal.example.org')
    resp = server.request(
        '/resolve',
        params={'id': DOI},
        additionalHeaders=[('Origin', 'https://portal.example.org')],
    )
    assertStatus(resp, 404)
    assert resp.headers['Access-Control-Allow-Origin'] == 'https://portal.example.org'
    assert resp.headers['Access-Control-Allow-Credentials'] == 'true'


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    ('pasted', 'scheme'),
    [
        ('https://zenodo.org/records/7568094', 'doi'),
        ('https://example.org/a/page', 'url'),
        ('https://n2t.net/ark:/99152/p0wctqt', 'ark'),
    ],
)
def testA404SaysWhatTheTextWasUnderstoodAs(server, pasted, scheme):
    resp = resolve(server, pasted)
    assertStatus(resp, 404)
    assert resp.json['extra']['scheme'] == scheme
    assert resp.json['extra']['identifier'] in resp.json['message']
