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


@pytest.mark.plugin('resolver')
def testASiteRegistersItsToolsAndEachDatasetsRecommendation(server, admin):
    offered = [
        {'id': 'python', 'name': 'Python', 'ready': True, 'default': True},
        {'id': 'r', 'name': 'R', 'ready': False, 'default': False},
    ]
    recommends = {**entry('doi:10.5072/abc', 'f1', 'A'), 'tool': 'r'}
    badTool = {**entry('doi:10.5072/bad', 'f2', 'B'), 'tool': {'$ne': 1}}
    resp = register(server, admin, datasets=[recommends, badTool], tools=offered)
    assertStatusOk(resp)
    assert [r['identifier'] for r in resp.json['rejected']] == ['doi:10.5072/bad']
    assert 'tool must be a tool id' in resp.json['rejected'][0]['reason']
    [location] = server.request('/resolve', params={'id': 'doi:10.5072/abc'}).json['locations']
    assert location['tools'] == offered and location['recommendedTool'] == 'r'
    # A partial registration may change the tools alone, and a dataset's recommendation.
    changed = [{**offered[1], 'ready': True}]
    resp = register(
        server, admin, mode='partial', tools=changed, datasets=[{**recommends, 'tool': None}]
    )
    assertStatusOk(resp)
    assert resp.json['updated'] == 1
    [location] = server.request('/resolve', params={'id': 'doi:10.5072/abc'}).json['locations']
    assert location['tools'] == changed and location['recommendedTool'] is None
    # Malformed tools change nothing and say why.
    for bad in (
        'python',
        [{'id': 'Bad Id', 'name': 'x'}],
        [{'id': 'r'}, {'id': 'r'}],
        [{'id': 'r', 'image': 'x'}],
        [{'id': 'r', 'name': ''}],
    ):
        resp = register(server, admin, tools=bad, datasets=[recommends])
        assertStatus(resp, 400)
        assert '"tools"' in resp.json['message'], resp.json
    assert Site().findOne({'name': 'site-a'})['tools'] == changed


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
            'suspect': False,
            'lastSeen': resp.json['locations'][0]['lastSeen'],
            'local': False,
            'operator': admin['login'],
            'disputed': False,
            # A site that registered no tools offers none (it chooses its own at launch).
            'tools': [],
            'recommendedTool': None,
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


@pytest.mark.plugin('resolver')
def testAClaimOnAnIdentifierAnotherOwnersSiteHoldsIsKeptButFlagged(server, admin, user):
    Group().createGroup('registrars', admin)
    Setting().set('resolver.registrar_group', 'registrars')
    group = Group().findOne({'name': 'registrars'})
    mallory = User().createUser('mallory', 'password', 'M', 'M', 'mallory@example.org')
    for member in (user, mallory):
        Group().addUser(group, member)
    register(server, user, 'honest', datasets=[entry('doi:10.5072/famous', 'f1', 'Famous')])
    resp = register(
        server,
        mallory,
        'grabber',
        datasets=[entry('doi:10.5072/famous', 'x1', 'Famous!'), entry('doi:10.5072/own', 'x2')],
    )
    assertStatusOk(resp)
    assert resp.json['added'] == 2
    assert resp.json['disputed'] == [{'identifier': 'doi:10.5072/famous', 'heldBy': 'honest'}]
    # The same owner's second site is no hijack.
    resp = register(server, user, 'mirror', datasets=[entry('doi:10.5072/famous', 'm1')])
    assert resp.json['disputed'] == []
    # /resolve lists the disputed claim last, and says who operates each location.
    resp = server.request('/resolve', params={'id': 'doi:10.5072/famous'})
    locations = [(loc['site'], loc['operator'], loc['disputed']) for loc in resp.json['locations']]
    assert locations[-1] == ('grabber', 'mallory', True)
    assert sorted(locations[:2]) == [
        ('honest', user['login'], False),
        ('mirror', user['login'], False),
    ]
    sites = {s['name']: s for s in server.request('/resolver/site').json}
    assert sites['grabber']['disputedCount'] == 1
    assert sites['grabber']['disputed'] == ['doi:10.5072/famous']
    assert not sites['honest'].get('disputedCount')


@pytest.mark.plugin('resolver')
def testTheCentralsAdminBoundsASitesWeightAndCapacity(server, admin):
    register(server, admin, 'greedy', datasets=[entry('doi:10.5072/w')], weight=1000)
    server.request(
        '/resolver/site/greedy/heartbeat', method='PUT', user=admin, params={'capacity': 10**6}
    )
    resp = server.request(
        '/resolver/site/greedy/limits',
        method='PUT',
        user=admin,
        params={'weight': 5, 'capacity': 20},
    )
    assertStatusOk(resp)
    assert (resp.json['weight'], resp.json['capacity']) == (5, 20)
    assert resp.json['declaredWeight'] == 1000
    # What the site declares next is bounded too.
    register(server, admin, 'greedy', datasets=[entry('doi:10.5072/w')], weight=900)
    server.request(
        '/resolver/site/greedy/heartbeat', method='PUT', user=admin, params={'capacity': 500}
    )
    [site] = server.request('/resolver/site').json
    assert (site['weight'], site['capacity'], site['limits']) == (
        5,
        20,
        {'weight': 5, 'capacity': 20},
    )
    # Lifting a bound gives the declared value back.
    resp = server.request(
        '/resolver/site/greedy/limits', method='PUT', user=admin, params={'capacity': 20}
    )
    assert resp.json['weight'] == 900
    assertStatus(
        server.request(
            '/resolver/site/greedy/limits', method='PUT', user=admin, params={'weight': -1}
        ),
        400,
    )
    assertStatus(server.request('/resolver/site/nope/limits', method='PUT', user=admin), 404)


@pytest.mark.plugin('resolver')
def testANewApiUrlWithoutACredentialForgetsTheOldOne(server, admin):
    register(server, admin, datasets=[], credential=SECRET)
    assert Site().findOne({'name': 'site-a'})['credentialSealed']
    register(server, admin, datasets=[], credential=None)  # same apiUrl: kept
    assert Site().findOne({'name': 'site-a'}).get('credentialSealed')
    body = {'name': 'site-a', 'apiUrl': 'https://moved.example.org/api/v1', 'datasets': []}
    server.request(
        '/resolver/site', method='POST', user=admin, body=json.dumps(body), type='application/json'
    )
    assert 'credentialSealed' not in Site().findOne({'name': 'site-a'})
    assert server.request('/resolver/site').json[0]['hasCredential'] is False


@pytest.mark.plugin('resolver')
def testTheAllowedSiteHostsSettingTakesNamesAndRangesOnly(server, admin):
    for bad in ('not json', '{"a": 1}', '["10.0.0.0/33"]', '["bad host!"]', '[1]'):
        resp = server.request(
            '/system/setting',
            method='PUT',
            user=admin,
            params={'key': 'resolver.allowed_site_hosts', 'value': bad},
        )
        assertStatus(resp, 400)
    resp = server.request(
        '/system/setting',
        method='PUT',
        user=admin,
        params={
            'key': 'resolver.allowed_site_hosts',
            'value': '["site.example.org", "10.1.0.0/16", "::1"]',
        },
    )
    assertStatusOk(resp)
    resp = register(server, admin, 'inside', datasets=[])
    body = {'name': 'lan', 'apiUrl': 'http://10.1.2.3:8080/api/v1', 'datasets': []}
    resp = server.request(
        '/resolver/site', method='POST', user=admin, body=json.dumps(body), type='application/json'
    )
    assertStatusOk(resp)
    body = {'name': 'lan2', 'apiUrl': 'http://10.2.2.3:8080/api/v1', 'datasets': []}
    resp = server.request(
        '/resolver/site', method='POST', user=admin, body=json.dumps(body), type='application/json'
    )
    assertStatus(resp, 400)
    assert 'resolver.allowed_site_hosts' in resp.json['message']


@pytest.mark.plugin('resolver')
def testTheFederationServiceAccountMustNotBeAnAdmin(server, admin, user):
    for value, code in (
        ({'userId': str(admin['_id']), 'central': 'hub'}, 400),
        ({'userId': str(user['_id']), 'central': 'bad name!'}, 400),
        ({'userId': 'f' * 24, 'central': 'hub'}, 400),
        ({'userId': str(user['_id']), 'central': 'hub'}, 200),
        ({}, 200),
    ):
        resp = server.request(
            '/system/setting',
            method='PUT',
            user=admin,
            params={'key': 'resolver.federation_service', 'value': json.dumps(value)},
        )
        assertStatus(resp, code)


@pytest.mark.plugin('resolver')
def testASiteThatFailsCallsIsSuspectRankedLastAmongHealthyAndClearedByAHeartbeat(server, admin):
    from girder_resolver import breaker

    for name in ('site-a', 'site-b'):
        assertStatusOk(register(server, admin, name=name, datasets=[entry('doi:10.5072/two')]))

    def listed():
        resp = server.request('/resolve', params={'id': 'doi:10.5072/two'})
        assertStatusOk(resp)
        return [(loc['site'], loc['healthy'], loc['suspect']) for loc in resp.json['locations']]

    assert listed() == [('site-a', True, False), ('site-b', True, False)]
    coll = Site().collection
    # Failed status calls: suspect only after resolver.suspect_after (3) in a row.
    siteA = Site().findOne({'name': 'site-a'})
    breaker.failed(coll, siteA, 'Site "site-a" did not answer in 5 s.')
    breaker.failed(coll, siteA, 'Site "site-a" did not answer in 5 s.')
    assert listed()[0] == ('site-a', True, False)
    breaker.succeeded(coll, Site().findOne({'name': 'site-a'}))  # an answer forgives them
    breaker.failed(coll, Site().findOne({'name': 'site-a'}), 'again')
    assert listed()[0] == ('site-a', True, False)
    # One failed launch is enough: ranked after the healthy site, shown as suspect.
    breaker.failed(coll, Site().findOne({'name': 'site-a'}), 'no answer', launch=True)
    assert listed() == [('site-b', True, False), ('site-a', True, True)]
    sites = {s['name']: s for s in server.request('/resolver/site').json}
    assert sites['site-a']['suspect'] is True and 'suspectReason' not in sites['site-a']
    asAdmin = {s['name']: s for s in server.request('/resolver/site', user=admin).json}
    assert asAdmin['site-a']['suspectReason'] == 'no answer'

    # A heartbeat that could not count the site's notebooks (its Girder is down) changes
    # nothing; one that could ends the suspicion.
    url = '/resolver/site/site-a/heartbeat'
    assertStatusOk(server.request(url, method='PUT', user=admin))
    assert listed()[1] == ('site-a', True, True)
    assertStatusOk(server.request(url, method='PUT', user=admin, params={'running': 0}))
    assert listed() == [('site-a', True, False), ('site-b', True, False)]


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize(
    ('key', 'value'),
    [
        ('resolver.site_connect_timeout', 'soon'),
        ('resolver.site_connect_timeout', 0),
        ('resolver.site_read_timeout', 601),
        ('resolver.launch_deadline', -1),
        ('resolver.suspect_seconds', 'later'),
        ('resolver.suspect_after', 0),
    ],
)
def testFailoverSettingsRefuseNonsense(server, admin, key, value):
    resp = server.request(
        '/system/setting', method='PUT', user=admin, params={'key': key, 'value': json.dumps(value)}
    )
    assertStatus(resp, 400)


@pytest.mark.plugin('resolver')
def testASiteMayNameWhereItsNotebooksAreReached(server, admin):
    resp = register(
        server,
        admin,
        datasets=[],
        notebookHost='notebooks.site-a.example.org',
        frontDoorUrl='https://door.site-a.example.org',
    )
    assertStatusOk(resp)
    [site] = server.request('/resolver/site').json
    assert site['notebookHost'] == 'notebooks.site-a.example.org'
    assert site['frontDoorUrl'] == 'https://door.site-a.example.org'
    for field, bad in (
        ('notebookHost', 'http://x.org'),
        ('notebookHost', 'x.org/path'),
        ('notebookHost', 12),
        ('frontDoorUrl', 'javascript:alert(1)'),
        ('frontDoorUrl', 'https://door.example.org/path'),
    ):
        assertStatus(register(server, admin, datasets=[], **{field: bad}), 400)
