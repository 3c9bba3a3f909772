"""Site registration, ownership, heartbeats and health-aware resolution across sites."""

import datetime
import json

import pytest
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.group import Group
from girder.models.setting import Setting
from girder.models.user import User
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import credentials
from girder_resolver.models.dataset import Dataset
from girder_resolver.models.site import Site

SECRET = 'site-a-launch-credential-do-not-leak'


def register(server, user, name='site-a', datasets=(), mode='full', **extra):
    body = {
        'name': name,
        'apiUrl': f'https://{name}.example.org/api/v1',
        'mode': mode,
        'datasets': list(datasets),
        **extra,
    }
    return server.request(
        '/resolver/site', method='POST', user=user, body=json.dumps(body), type='application/json'
    )


def entry(identifier, folderId='f1', name='Dataset'):
    return {'identifier': identifier, 'folderId': folderId, 'name': name}


@pytest.fixture
def otherAdmin(admin):
    return User().createUser('other', 'password', 'Other', 'Admin', 'other@example.org', admin=True)


@pytest.mark.plugin('resolver')
def testARegisteredDatasetResolvesToTheSite(server, admin):
    resp = register(server, admin, datasets=[entry('https://doi.org/10.5072/ABC', 'f1', 'A')])
    assertStatusOk(resp)
    assert resp.json == {
        'site': 'site-a',
        'mode': 'full',
        'added': 1,
        'updated': 0,
        'removed': 0,
        'total': 1,
        'rejected': [],
        'disputed': [],
    }
    resp = server.request('/resolve', params={'id': 'doi:10.5072/abc'})
    assertStatusOk(resp)
    assert resp.json['locations'] == [
        {
            'site': 'site-a',
            'apiUrl': 'https://site-a.example.org/api/v1',
            'folderId': 'f1',
            'name': 'A',
            'healthy': True,
            'lastSeen': resp.json['locations'][0]['lastSeen'],
            'local': False,
            'operator': admin['login'],
            'disputed': False,
        }
    ]


@pytest.mark.plugin('resolver')
def testAFullRegistrationReplacesTheSitesSet(server, admin):
    register(server, admin, datasets=[entry('doi:10.5072/a', 'f1'), entry('doi:10.5072/b', 'f2')])
    resp = register(
        server,
        admin,
        datasets=[entry('doi:10.5072/b', 'f2', 'Renamed'), entry('doi:10.5072/c', 'f3')],
    )
    assert (resp.json['added'], resp.json['updated'], resp.json['removed'], resp.json['total']) == (
        1,
        1,
        1,
        2,
    )
    assertStatus(server.request('/resolve', params={'id': 'doi:10.5072/a'}), 404)
    assert (
        server.request('/resolve', params={'id': 'doi:10.5072/b'}).json['locations'][0]['name']
        == 'Renamed'
    )


@pytest.mark.plugin('resolver')
def testAPartialRegistrationAddsAndRemovesOnlyWhatItNames(server, admin):
    register(server, admin, datasets=[entry('doi:10.5072/a', 'f1'), entry('doi:10.5072/b', 'f2')])
    resp = register(
        server,
        admin,
        mode='partial',
        datasets=[entry('doi:10.5072/c', 'f3')],
        removed=[{'identifier': 'doi:10.5072/a', 'folderId': 'f1'}],
    )
    assertStatusOk(resp)
    assert (resp.json['added'], resp.json['removed'], resp.json['total']) == (1, 1, 2)
    assertStatus(server.request('/resolve', params={'id': 'doi:10.5072/a'}), 404)
    assertStatusOk(server.request('/resolve', params={'id': 'doi:10.5072/b'}))


@pytest.mark.plugin('resolver')
def testInvalidEntriesAreRejectedWithReasonsAndTheRestKept(server, admin):
    resp = register(
        server,
        admin,
        datasets=[
            entry('doi:10.5072/good', 'f1'),
            entry('not an identifier', 'f2'),
            entry('doi:10.5072/bad-folder', {'$ne': 1}),
            {'identifier': {'$gt': ''}, 'folderId': 'f3'},
            'just a string',
        ],
    )
    assertStatusOk(resp)
    assert resp.json['added'] == 1
    assert len(resp.json['rejected']) == 4
    assert all(r['reason'] for r in resp.json['rejected'])
    assert Dataset().find({'site': 'site-a'}).count() == 1


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    'body',
    [
        {'name': '../etc', 'apiUrl': 'https://x.org', 'datasets': []},
        {'name': {'$ne': 1}, 'apiUrl': 'https://x.org', 'datasets': []},
        {'name': 'ok', 'apiUrl': 'javascript:alert(1)', 'datasets': []},
        {'name': 'ok', 'apiUrl': 'https://x.org', 'datasets': 'all of them'},
        {'name': 'ok', 'apiUrl': 'https://x.org', 'datasets': [], 'mode': 'sideways'},
        {'name': 'ok', 'apiUrl': 'https://x.org', 'datasets': [], '$where': '1'},
        {'name': 'ok', 'apiUrl': 'https://x.org', 'datasets': [], 'weight': 'heavy'},
    ],
)
def testMalformedRegistrationsAreA400AndChangeNothing(server, admin, body):
    resp = server.request(
        '/resolver/site', method='POST', user=admin, body=json.dumps(body), type='application/json'
    )
    assertStatus(resp, 400)
    assert resp.json['message']
    assert Site().find({}).count() == 0
    assert Dataset().find({}).count() == 0


@pytest.mark.plugin('resolver')
def testABodyThatIsNotJsonIsA400(server, admin):
    resp = server.request(
        '/resolver/site', method='POST', user=admin, body='{"name": ', type='application/json'
    )
    assertStatus(resp, 400)


@pytest.mark.plugin('resolver')
def testAnOversizedRegistrationIsA413AndChangesNothing(server, admin):
    Setting().set('resolver.max_registration', 5)
    resp = register(server, admin, datasets=[entry(f'doi:10.5072/{i}', f'f{i}') for i in range(6)])
    assertStatus(resp, 413)
    assert 'partial' in resp.json['message']
    assert Site().find({}).count() == 0
    assert Dataset().find({}).count() == 0


@pytest.mark.plugin('resolver')
def testAnonymousRegistrationIsRefused(server):
    assertStatus(register(server, None), 401)
    assert Site().find({}).count() == 0


@pytest.mark.plugin('resolver')
def testOnlyRegistrarsMayRegister(server, admin, user):
    assertStatus(register(server, user), 403)
    group = Group().createGroup('registrars', admin)
    Group().addUser(group, user)
    Setting().set('resolver.registrar_group', 'registrars')
    assertStatusOk(register(server, User().load(user['_id'], force=True)))


@pytest.mark.plugin('resolver')
def testNobodyCanTakeOverASiteOwnedBySomeoneElse(server, admin, user):
    group = Group().createGroup('registrars', admin)
    Group().addUser(group, user)
    Setting().set('resolver.registrar_group', 'registrars')
    user = User().load(user['_id'], force=True)
    assertStatusOk(register(server, user, datasets=[entry('doi:10.5072/a')]))
    other = User().createUser('mallory', 'password', 'M', 'M', 'm@example.org')
    Group().addUser(group, other)
    other = User().load(other['_id'], force=True)
    assertStatus(register(server, other, datasets=[]), 403)
    assertStatus(server.request('/resolver/site/site-a/heartbeat', method='PUT', user=other), 403)
    assertStatus(server.request('/resolver/site/site-a', method='DELETE', user=other), 403)
    assertStatusOk(server.request('/resolve', params={'id': 'doi:10.5072/a'}))
    # An admin may remove it, and its datasets go with it.
    assertStatusOk(server.request('/resolver/site/site-a', method='DELETE', user=admin))
    assertStatus(server.request('/resolve', params={'id': 'doi:10.5072/a'}), 404)


@pytest.mark.plugin('resolver')
def testTheLocalSiteNameCannotBeRegistered(server, admin):
    resp = register(server, admin, name=Setting().get('resolver.site_name'))
    assertStatus(resp, 409)


@pytest.mark.plugin('resolver')
def testTheCredentialIsNeverReturned(server, admin):
    resp = register(server, admin, datasets=[entry('doi:10.5072/a')], credential=SECRET)
    assert SECRET not in resp.body[0].decode()
    responses = [
        server.request('/resolver/site', user=admin),
        server.request('/resolver/site'),
        server.request('/resolver/site/site-a/heartbeat', method='PUT', user=admin),
        server.request('/resolve', params={'id': 'doi:10.5072/a'}, user=admin),
        server.request('/resolver/dataset', user=admin),
    ]
    for resp in responses:
        assertStatusOk(resp)
        assert SECRET not in resp.body[0].decode()
    assert server.request('/resolver/site', user=admin).json[0]['hasCredential'] is True
    # Kept encrypted: the key is outside the database.
    stored = Site().findOne({'name': 'site-a'})
    assert 'credential' not in stored
    assert SECRET not in json.dumps(stored, default=str)
    assert credentials.unseal(stored['credentialSealed']) == SECRET


@pytest.mark.plugin('resolver')
def testAStaleSiteIsListedUnhealthyAfterHealthyOnes(server, admin, otherAdmin):
    register(server, admin, 'stale', datasets=[entry('doi:10.5072/shared', 'f1')])
    register(server, otherAdmin, 'fresh', datasets=[entry('doi:10.5072/shared', 'f9')])
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    Site().update({'name': 'stale'}, {'$set': {'lastHeartbeat': old}})
    resp = server.request('/resolve', params={'id': 'doi:10.5072/shared', 'site': 'stale'})
    assert [(loc['site'], loc['healthy']) for loc in resp.json['locations']] == [
        ('fresh', True),
        ('stale', False),
    ]
    sites = {s['name']: s for s in server.request('/resolver/site').json}
    assert sites['stale']['healthy'] is False
    assert sites['fresh']['healthy'] is True
    # A heartbeat brings it back.
    assertStatusOk(server.request('/resolver/site/stale/heartbeat', method='PUT', user=admin))
    assert server.request('/resolver/site').json[1]['healthy'] is True


@pytest.mark.plugin('resolver')
def testAnExplicitSiteChoiceWinsThenWeightThenFreeCapacity(server, admin):
    for name, weight in (('small', 1), ('big', 5), ('roomy', 1)):
        register(server, admin, name, datasets=[entry('doi:10.5072/x', 'f')], weight=weight)
    server.request(
        '/resolver/site/small/heartbeat',
        method='PUT',
        user=admin,
        params={'running': 9, 'capacity': 10},
    )
    server.request(
        '/resolver/site/roomy/heartbeat',
        method='PUT',
        user=admin,
        params={'running': 1, 'capacity': 10},
    )

    def order(**params):
        resp = server.request('/resolve', params={'id': 'doi:10.5072/x', **params})
        return [loc['site'] for loc in resp.json['locations']]

    assert order() == ['big', 'roomy', 'small']
    assert order(site='small') == ['small', 'big', 'roomy']


@pytest.mark.plugin('resolver')
def testLocalAndRemoteLocationsResolveTogether(server, admin):
    coll = Collection().createCollection('Here', admin, public=True)
    folder = Folder().createFolder(
        coll, 'Here', parentType='collection', creator=admin, public=True
    )
    Folder().setMetadata(folder, {'identifier': 'doi:10.5072/both'})
    register(server, admin, datasets=[entry('doi:10.5072/both', 'remote1')])
    resp = server.request('/resolve', params={'id': 'doi:10.5072/both'})
    assert {loc['site'] for loc in resp.json['locations']} == {
        Setting().get('resolver.site_name'),
        'site-a',
    }
    resp = server.request('/resolver/site')
    assert resp.json[0]['datasetCount'] == 1


@pytest.mark.plugin('resolver')
def testAHeartbeatForAnUnknownSiteIsA404(server, admin):
    resp = server.request('/resolver/site/nowhere/heartbeat', method='PUT', user=admin)
    assertStatus(resp, 404)
    assert 'register' in resp.json['message'].lower() or 'No site' in resp.json['message']
