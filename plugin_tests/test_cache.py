"""What a Girder process remembers of /resolve's reads, and when it forgets.

A write in this process is seen at once; a write behind its back (another Girder
process of the same server, here pymongo) within ``resolver.cache_seconds``; an
identifier that was missing is never remembered as missing.
"""

import datetime
import threading

import pytest
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import cache
from girder_resolver.models.dataset import Dataset
from girder_resolver.models.site import Site
from plugin_tests.test_site import entry, register

DOI = 'doi:10.5072/cached'


def resolve(server, identifier=DOI, user=None):
    return server.request('/resolve', params={'id': identifier}, user=user)


def sitesOf(resp):
    return [(loc['site'], loc['folderId'], loc['healthy']) for loc in resp.json['locations']]


def behindItsBack(collection, query, update):
    """Write as another Girder process of the same server would: not through this one."""
    collection.update_many(query, update)


@pytest.mark.plugin('resolver')
def testWritesHereAreSeenAtOnceEvenWithALongReuse(server, admin):
    Setting().set('resolver.cache_seconds', 60)
    assertStatusOk(register(server, admin, 'site-a', datasets=[entry(DOI, 'f1')]))
    assert sitesOf(resolve(server)) == [('site-a', 'f1', True)]
    # A silence, a heartbeat, a second site, a moved folder and an unregistered site:
    # each seen at once.
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)
    Site().update({'name': 'site-a'}, {'$set': {'lastHeartbeat': old}})
    assert sitesOf(resolve(server)) == [('site-a', 'f1', False)]
    assertStatusOk(server.request('/resolver/site/site-a/heartbeat', method='PUT', user=admin))
    assert sitesOf(resolve(server)) == [('site-a', 'f1', True)]
    assertStatusOk(register(server, admin, 'site-b', datasets=[entry(DOI, 'f7')]))
    assert [s for s, _, _ in sitesOf(resolve(server))] == ['site-a', 'site-b']
    assertStatusOk(register(server, admin, 'site-a', datasets=[entry(DOI, 'f2')]))
    assert ('site-a', 'f2', True) in sitesOf(resolve(server))
    assertStatusOk(server.request('/resolver/site/site-b', method='DELETE', user=admin))
    assert sitesOf(resolve(server)) == [('site-a', 'f2', True)]
    assertStatusOk(register(server, admin, 'site-a', datasets=[]))
    assertStatus(resolve(server), 404)


@pytest.mark.plugin('resolver')
def testLocalFoldersAreCheckedOnEveryRequest(server, admin, user):
    Setting().set('resolver.cache_seconds', 60)
    collection = Collection().createCollection('Data', admin, public=True)
    folder = Folder().createFolder(collection, 'Survey', parentType='collection', public=True)
    Folder().setMetadata(folder, {'identifier': DOI})
    assert sitesOf(resolve(server, user=user)) == [
        (Setting().get('resolver.site_name'), str(folder['_id']), True)
    ]
    # Made private behind this process's back (no folder event here): hidden at once.
    behindItsBack(Folder().collection, {'_id': folder['_id']}, {'$set': {'public': False}})
    assertStatus(resolve(server, user=user), 404)
    assertStatusOk(resolve(server, user=admin))
    # Untagged here: gone at once.
    Folder().deleteMetadata(Folder().load(folder['_id'], force=True), ['identifier'])
    assertStatus(resolve(server, user=admin), 404)


@pytest.mark.plugin('resolver')
def testWritesElsewhereAreSeenOnceTheReuseIsOver(server, admin):
    assertStatusOk(register(server, admin, 'site-a', datasets=[entry(DOI, 'f1')]))
    old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=1)

    Setting().set('resolver.cache_seconds', 60)
    assert sitesOf(resolve(server)) == [('site-a', 'f1', True)]
    behindItsBack(Site().collection, {'name': 'site-a'}, {'$set': {'lastHeartbeat': old}})
    behindItsBack(Dataset().collection, {'identifier': DOI}, {'$set': {'folderId': 'f9'}})
    # Within the reuse period, the last read stands ...
    assert sitesOf(resolve(server)) == [('site-a', 'f1', True)]
    # ... and with no reuse, every request reads the database.
    Setting().set('resolver.cache_seconds', 0)
    assert sitesOf(resolve(server)) == [('site-a', 'f9', False)]


@pytest.mark.plugin('resolver')
def testAMissingIdentifierIsNeverRememberedAsMissing(server, admin):
    Setting().set('resolver.cache_seconds', 60)
    assertStatusOk(register(server, admin, 'site-a', datasets=[entry('doi:10.5072/other')]))
    assertStatus(resolve(server), 404)
    now = datetime.datetime.now(datetime.timezone.utc)
    Dataset().collection.insert_one(
        {
            'identifier': DOI,
            'site': 'site-a',
            'folderId': 'f3',
            'scheme': 'doi',
            'name': 'Registered by another process',
            'local': False,
            'updated': now,
            'created': now,
        }
    )
    assert sitesOf(resolve(server)) == [('site-a', 'f3', True)]


@pytest.mark.parametrize('value', [-1, 61, 'soon', None, float('nan')])
@pytest.mark.plugin('resolver')
def testTheReuseSettingIsBounded(server, admin, value):
    resp = server.request(
        '/system/setting',
        method='PUT',
        user=admin,
        params={'key': 'resolver.cache_seconds', 'value': str(value)},
    )
    assertStatus(resp, 400)
    assert 'resolver.cache_seconds' in resp.json['message']


@pytest.mark.plugin('resolver')
def testASettingSavedHereIsReadAtOnce(server, admin):
    from girder_resolver import settings

    assert settings.get('resolver.heartbeat_ttl') == 90
    Setting().set('resolver.heartbeat_ttl', 30)
    assert settings.get('resolver.heartbeat_ttl') == 30
    Setting().unset('resolver.heartbeat_ttl')
    assert settings.get('resolver.heartbeat_ttl') == 90


def testAReadOverlappingAWriteIsNotKept():
    recent = cache.Recent(size=10)
    loading, release = threading.Event(), threading.Event()

    def slowLoad():
        loading.set()
        release.wait(10)
        return 'before the write'

    reader = threading.Thread(target=lambda: recent.get('k', slowLoad, 60))
    reader.start()
    loading.wait(10)
    recent.discard('k')  # a write lands while the read is in flight
    release.set()
    reader.join(10)
    assert recent.get('k', lambda: 'after the write', 60) == 'after the write'
    assert recent.get('k', lambda: 'not read again', 60) == 'after the write'


def testTheMemoryIsBounded():
    recent = cache.Recent(size=3)
    for key in range(10):
        recent.get(key, lambda key=key: key * 10, 60)
    assert len(recent) == 3
    # The oldest reads went first.
    assert recent.get(9, lambda: 'reloaded', 60) == 90
    assert recent.get(0, lambda: 'reloaded', 60) == 'reloaded'
