"""The dataset index: one document per (canonical identifier, site, folder).

Local entries mirror folder metadata at this site and are kept in step by
Girder's model events (see ``girder_resolver.events``); remote entries arrive
through site registrations. Resolution is one indexed query on ``identifier``.
"""

import datetime
import logging

from bson import ObjectId
from girder.constants import AccessType
from girder.exceptions import ValidationException
from girder.models.folder import Folder
from girder.models.model_base import Model

from .. import cache, settings
from ..identifiers import InvalidIdentifier, normalize
from ..settings import PluginSettings

logger = logging.getLogger(__name__)

#: The most identifiers one folder may carry; more is almost surely a mistake.
MAX_IDENTIFIERS_PER_FOLDER = 100


def identifiersFromMetadata(value):
    """Return (identifiers, rejected) for a folder's identifier metadata value.

    ``value`` may be a string or a list of strings; anything unparsable is
    returned in ``rejected`` as ``(text, reason)`` rather than raising, so one bad
    entry never hides the good ones.
    """
    if value is None:
        return [], []
    values = value if isinstance(value, list) else [value]
    found, rejected = {}, []
    for text in values[:MAX_IDENTIFIERS_PER_FOLDER]:
        try:
            ident = normalize(text)
        except InvalidIdentifier as exc:
            rejected.append((text, str(exc)))
            continue
        found[ident.canonical] = ident
    return list(found.values()), rejected


class Dataset(Model):
    def initialize(self):
        self.name = 'resolver_dataset'
        self.ensureIndices(
            [
                'identifier',
                'site',
                'folderId',
                ([('site', 1), ('folderId', 1)], {}),
                (
                    [('identifier', 1), ('site', 1), ('folderId', 1)],
                    {'unique': True, 'name': 'identifier_site_folder'},
                ),
            ]
        )
        self.exposeFields(
            level=AccessType.READ,
            fields={
                '_id',
                'identifier',
                'scheme',
                'site',
                'folderId',
                'name',
                'local',
                'updated',
                'disputed',
            },
        )

    def validate(self, doc):
        for field in ('identifier', 'scheme', 'site', 'folderId', 'name'):
            if not isinstance(doc.get(field), str) or not doc[field]:
                raise ValidationException(f'Dataset field "{field}" must be a non-empty string.')
        if normalize(doc['identifier']).canonical != doc['identifier']:
            raise ValidationException('Dataset identifiers are stored in canonical form.')
        return doc

    # Writes through Girder's generic model methods forget what /resolve remembers too.
    def save(self, document, *args, **kwargs):
        try:
            return super().save(document, *args, **kwargs)
        finally:
            cache.entries.clear()

    def update(self, query, update, *args, **kwargs):
        try:
            return super().update(query, update, *args, **kwargs)
        finally:
            cache.entries.clear()

    def remove(self, document, *args, **kwargs):
        try:
            return super().remove(document, *args, **kwargs)
        finally:
            cache.entries.clear()

    # Local entries ---------------------------------------------------------

    def syncFolder(self, folder):
        """Make the local entries of ``folder`` match its identifier metadata.

        Returns the list of canonical identifiers now indexed for it.
        """
        key = settings.get(PluginSettings.IDENTIFIER_KEY)
        site = settings.get(PluginSettings.SITE_NAME)
        folderId = str(folder['_id'])
        idents, rejected = identifiersFromMetadata((folder.get('meta') or {}).get(key))
        for text, reason in rejected:
            logger.warning('Folder %s: ignoring identifier %r: %s', folderId, text, reason)
        wanted = [i.canonical for i in idents]
        removed = self.collection.delete_many(
            {
                'folderId': folderId,
                'local': True,
                '$or': [{'identifier': {'$nin': wanted}}, {'site': {'$ne': site}}],
            }
        ).deleted_count
        now = datetime.datetime.now(datetime.timezone.utc)
        for ident in idents:
            self.collection.update_one(
                {'identifier': ident.canonical, 'site': site, 'folderId': folderId},
                {
                    '$set': {
                        'scheme': ident.scheme,
                        'name': folder['name'],
                        'local': True,
                        'updated': now,
                    },
                    '$setOnInsert': {'created': now},
                },
                upsert=True,
            )
        if removed or idents:
            cache.entries.clear()
        return wanted

    def removeFolder(self, folderId):
        if self.collection.delete_many({'folderId': str(folderId), 'local': True}).deleted_count:
            cache.entries.clear()

    def reindexLocal(self):
        """Rebuild local entries from folder metadata.

        Picks up folders tagged before the plugin was installed or while it was
        not running, and drops entries whose folder was untagged or deleted.
        Returns the number of folders indexed.
        """
        key = settings.get(PluginSettings.IDENTIFIER_KEY)
        seen = set()
        for folder in Folder().find({f'meta.{key}': {'$exists': True}}):
            if self.syncFolder(folder):
                seen.add(str(folder['_id']))
        stale = [
            d['folderId']
            for d in self.collection.find({'local': True}, {'folderId': True})
            if d['folderId'] not in seen
        ]
        if stale:
            self.collection.delete_many({'local': True, 'folderId': {'$in': stale}})
        cache.entries.clear()
        return len(seen)

    # Queries ----------------------------------------------------------------

    def isLocalDataset(self, folder):
        """Whether ``folder`` is a dataset this site publishes (it carries an identifier)."""
        return (
            self.collection.find_one({'folderId': str(folder['_id']), 'local': True}, {'_id': 1})
            is not None
        )

    def readableFolder(self, doc, user):
        """The folder of a local entry if ``user`` may read it, else None."""
        if not doc.get('local'):
            return None
        try:
            folder = Folder().load(ObjectId(doc['folderId']), force=True)
        except Exception:
            return None
        if folder is None or not Folder().hasAccess(folder, user, AccessType.READ):
            return None
        return folder

    def findVisible(self, query, user, limit=0, offset=0, sort=None, batchSize=500):
        """(entry, folder) pairs matching ``query`` that ``user`` may see, paged after filtering.

        Remote entries are public by registration and come with ``folder=None``;
        local ones come with their folder when ``user`` may read it. Folders are
        loaded in batches, one query per batch rather than one per entry.
        """
        cursor = self.find(query, sort=sort or [('identifier', 1), ('site', 1)])
        skipped = returned = 0
        while True:
            batch = [doc for _, doc in zip(range(batchSize), cursor, strict=False)]
            if not batch:
                return
            folderIds = [
                ObjectId(d['folderId'])
                for d in batch
                if d.get('local') and ObjectId.is_valid(d['folderId'])
            ]
            folders = (
                {str(f['_id']): f for f in Folder().find({'_id': {'$in': folderIds}})}
                if folderIds
                else {}
            )
            for doc in batch:
                folder = None
                if doc.get('local'):
                    folder = folders.get(doc['folderId'])
                    if folder is None or not Folder().hasAccess(folder, user, AccessType.READ):
                        continue
                if skipped < offset:
                    skipped += 1
                    continue
                yield doc, folder
                returned += 1
                if limit and returned >= limit:
                    return

    def locations(self, identifier, user, preferSite=None):
        """Where ``identifier`` lives, as seen by ``user``, best location first.

        Healthy locations come first, then suspect ones (``girder_resolver.breaker``);
        among them an explicit ``preferSite`` wins, then undisputed ones, then higher
        weight, then more free capacity. Local entries the user may not read are left
        out, so private data never leaks.
        """
        from .site import Site

        siteModel = Site()
        now = datetime.datetime.now(datetime.timezone.utc)
        localSite = ttl = None
        locations = []
        # Entries and sites come from this process's recent reads when fresh enough
        # (girder_resolver.cache); access to local folders is checked every time.
        entries = cache.entries.get(
            identifier,
            lambda: tuple(self.find({'identifier': identifier})),
            settings.get(PluginSettings.CACHE_SECONDS),
            keep=bool,
        )
        for doc in entries:
            if doc.get('local'):
                folder = self.readableFolder(doc, user)
                if folder is None:
                    continue
                if localSite is None:
                    localSite = settings.get(PluginSettings.SITE_NAME)
                locations.append(
                    {
                        'site': localSite,
                        'apiUrl': siteModel.localApiUrl(),
                        'folderId': doc['folderId'],
                        'name': folder['name'],
                        'healthy': True,
                        'suspect': False,
                        'lastSeen': now,
                        'local': True,
                        'operator': None,
                        'disputed': False,
                        # Locality before weight: the copy at this server needs no hop.
                        '_rank': (float('-inf'), 0),
                    }
                )
                continue
            site = siteModel.named(doc['site'])
            if site is None:
                continue
            if ttl is None:
                ttl = siteModel.ttl()
            locations.append(
                {
                    'site': site['name'],
                    'apiUrl': site['apiUrl'],
                    'folderId': doc['folderId'],
                    'name': doc['name'],
                    'healthy': siteModel.healthy(site, now, ttl),
                    'suspect': siteModel.suspect(site, now),
                    'lastSeen': site.get('lastHeartbeat'),
                    'local': False,
                    # Who registered the site: a person decides whom to trust.
                    'operator': site.get('operator'),
                    'disputed': bool(doc.get('disputed')),
                    '_rank': (-site.get('weight', 1), -siteModel.freeCapacity(site)),
                }
            )

        def rank(loc):
            # Healthy sites first, then suspect ones (they failed calls lately), then the
            # silent ones; an explicit choice only reorders sites of the same standing.
            standing = 2 if not loc['healthy'] else 1 if loc['suspect'] else 0
            return (
                standing,
                loc['site'] != preferSite,
                loc['disputed'],
                loc['_rank'],
                loc['site'],
            )

        locations.sort(key=rank)
        for loc in locations:
            del loc['_rank']
        return locations
