"""The dataset index: one document per (canonical identifier, site, folder).

It owns the ``resolver_dataset`` collection: its indexes, validation, the local
entries that mirror folder metadata at this site (kept in step by Girder's model
events, see ``girder_resolver.events``) and the atomic writes of the entries other
sites register (what a registration decides is ``services/registration``). Ranking
an identifier's locations is ``services/resolution``: one indexed query on
``identifier`` here.
"""

import logging
import re

import pymongo
from girder.constants import AccessType
from girder.exceptions import ValidationException
from girder.models.folder import Folder
from girder.models.model_base import Model

from .. import cache, settings
from ..identifiers import InvalidIdentifier, normalize
from ..primitives import now, objectId
from ..settings import PluginSettings

logger = logging.getLogger(__name__)

#: The most identifiers one folder may carry; more is almost surely a mistake.
MAX_IDENTIFIERS_PER_FOLDER = 100
#: Writes per bulk_write: one command for a whole 100,000-entry snapshot can outlast the
#: driver's socket timeout on a slow database, and the registration would answer 500.
WRITE_BATCH = 1000
#: A folder id as sites name them in registrations (a Girder ObjectId is one of them).
_FOLDER_ID_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')


def validFolderId(value):
    """True when ``value`` may be an entry's ``folderId``: 1-64 letters, digits, '_' or '-'."""
    return isinstance(value, str) and bool(_FOLDER_ID_RE.match(value))


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
    """One index entry: an identifier held by a site in one of its folders."""

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
                # The id of the tool the dataset recommends (registered by its site).
                'tool',
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
        moment = now()
        for ident in idents:
            self.collection.update_one(
                {'identifier': ident.canonical, 'site': site, 'folderId': folderId},
                {
                    '$set': {
                        'scheme': ident.scheme,
                        'name': folder['name'],
                        'local': True,
                        'updated': moment,
                    },
                    '$setOnInsert': {'created': moment},
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
        folderId = objectId(doc['folderId']) if doc.get('local') else None
        if folderId is None:
            return None
        folder = Folder().load(folderId, force=True)
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
            folderIds = [objectId(d['folderId']) for d in batch if d.get('local')]
            folderIds = [oid for oid in folderIds if oid is not None]
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

    # Entries other sites register ------------------------------------------------------

    def remoteEntries(self, site, keys=None):
        """``{(identifier, folderId): entry}`` of what ``site`` registered: every entry, or
        only those of ``keys``."""
        fields = {'identifier': 1, 'folderId': 1, 'name': 1, 'tool': 1}
        if keys is None:
            return {
                (doc['identifier'], doc['folderId']): doc
                for doc in self.collection.find({'site': site, 'local': False}, fields)
            }
        found = {}
        for ident, folderId in keys:
            doc = self.collection.find_one(
                # Keys in the unique index's order: SecantusDB picks its index from the
                # query's first key, and {site, ...} would scan every entry of the site.
                {'identifier': ident, 'site': site, 'folderId': folderId, 'local': False},
                fields,
            )
            if doc:
                found[(ident, folderId)] = doc
        return found

    def writeRemote(self, site, added, renamed, gone, moment):
        """Apply one registration to ``site``'s entries, in bulk.

        ``added`` maps ``(identifier, folderId)`` to ``(scheme, name, tool)`` of new (or
        re-added) entries, ``renamed`` maps an entry's id to its new ``(name, tool)``
        (``tool``: the id of the tool it recommends, or None), ``gone`` lists the ids of
        entries to drop. Returns the number of writes.
        """
        ops = [
            pymongo.UpdateOne(
                {'identifier': ident, 'site': site, 'folderId': folderId},
                {
                    '$set': {
                        'scheme': scheme,
                        'name': name,
                        'tool': tool,
                        'local': False,
                        'updated': moment,
                    },
                    '$setOnInsert': {'created': moment},
                },
                upsert=True,
            )
            for (ident, folderId), (scheme, name, tool) in added.items()
        ]
        ops += [
            pymongo.UpdateOne(
                {'_id': entryId}, {'$set': {'name': name, 'tool': tool, 'updated': moment}}
            )
            for entryId, (name, tool) in renamed.items()
        ]
        if gone:
            ops.append(pymongo.DeleteMany({'_id': {'$in': list(gone)}}))
        try:
            for start in range(0, len(ops), WRITE_BATCH):
                self.collection.bulk_write(ops[start : start + WRITE_BATCH], ordered=False)
        finally:
            if ops:
                cache.entries.clear()
        return len(ops)

    def holders(self, identifiers, besides):
        """``{identifier: [entry]}``: the undisputed entries for ``identifiers`` held by any
        site but ``besides`` (this server's local entries included)."""
        found = {}
        for doc in self.collection.find(
            # A disputed claim holds nothing: only undisputed holders count.
            {
                'identifier': {'$in': list(identifiers)},
                'site': {'$ne': besides},
                'disputed': {'$ne': True},
            },
            {'identifier': 1, 'site': 1, 'local': 1},
        ):
            found.setdefault(doc['identifier'], []).append(doc)
        return found

    def flagDisputed(self, site, identifiers):
        """Mark ``site``'s registered entries for ``identifiers`` as disputed."""
        identifiers = sorted(identifiers)
        for start in range(0, len(identifiers), WRITE_BATCH):
            self.collection.update_many(
                {
                    'identifier': {'$in': identifiers[start : start + WRITE_BATCH]},
                    'site': site,
                    'local': False,
                },
                {'$set': {'disputed': True}},
            )
        if identifiers:
            cache.entries.clear()

    def countRemote(self, site, disputed=False):
        """How many entries ``site`` registered (only the disputed ones with ``disputed``)."""
        query = {'site': site, 'local': False}
        if disputed:
            query['disputed'] = True
        return self.collection.count_documents(query)

    def disputedIdentifiers(self, site, limit):
        """Up to ``limit`` identifiers of ``site``'s disputed entries."""
        query = {'site': site, 'local': False, 'disputed': True}
        return [
            d['identifier'] for d in self.collection.find(query, {'identifier': 1}).limit(limit)
        ]

    def removeSite(self, site):
        """Drop every entry ``site`` registered."""
        try:
            self.collection.delete_many({'site': site, 'local': False})
        finally:
            cache.entries.clear()
