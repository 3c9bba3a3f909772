"""Sites of the federation, and the registrations that fill the index with their datasets.

A site's launch credential is write-only: it is kept so the central can launch
on a user's behalf at that site, encrypted (``credentialSealed``, see
``girder_resolver.credentials``), never exposed by ``filter``, never returned by
an endpoint, and never logged. A registration with a new ``apiUrl`` and no
credential forgets the old one, so it is never sent to the new address.

The central's admin bounds each site's weight and capacity (``limits``); a
registration that claims an identifier another owner's site (or this server)
already holds is accepted but flagged (``disputed``), and ``/resolve`` shows
who operates each location (``operator``).
"""

import datetime
import re

import pymongo
from girder.api.rest import getApiUrl
from girder.constants import AccessType
from girder.exceptions import AccessException, RestException, ValidationException
from girder.models.group import Group
from girder.models.model_base import Model
from girder.models.user import User

from .. import breaker, cache, credentials, settings
from ..federation import UnsafeUrl, checkApiUrl
from ..identifiers import InvalidIdentifier, normalize
from ..settings import PluginSettings

_FOLDER_ID_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')
#: A host name, IPv4 address or bracketed/bare IPv6 address (no scheme, port or path).
_HOST_RE = re.compile(r'^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.:-]{0,252})$')
MAX_NAME_LENGTH = 512
MAX_CREDENTIAL_LENGTH = 512
#: How many disputed identifiers a site record lists (the count is kept in full).
MAX_DISPUTED_LISTED = 50
#: Upserts per bulk_write: one command for a whole 100,000-entry snapshot can outlast the
#: driver's socket timeout on a slow database, and the registration would answer 500.
_WRITE_BATCH = 1000


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def validateEntry(entry):
    """(identifier, folderId, name) for one registered dataset, or raise ValueError(reason)."""
    if not isinstance(entry, dict):
        raise ValueError('each dataset must be an object')
    try:
        ident = normalize(entry.get('identifier'))
    except InvalidIdentifier as exc:
        raise ValueError(str(exc))
    folderId = entry.get('folderId')
    if not isinstance(folderId, str) or not _FOLDER_ID_RE.match(folderId):
        raise ValueError('folderId must be 1-64 letters, digits, "_" or "-"')
    name = entry.get('name', ident.canonical)
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME_LENGTH:
        raise ValueError(f'name must be a non-empty string of at most {MAX_NAME_LENGTH} characters')
    return ident, folderId, name.strip()


class Site(Model):
    def initialize(self):
        self.name = 'resolver_site'
        self.ensureIndices([([('name', 1)], {'unique': True}), 'ownerId'])
        self.exposeFields(
            level=AccessType.READ,
            fields={
                '_id',
                'name',
                'apiUrl',
                'ownerId',
                'created',
                'lastHeartbeat',
                'lastRegistration',
                'weight',
                'capacity',
                'running',
                'datasetCount',
                'operator',
                'frontDoorUrl',
                'notebookHost',
                'limits',
                'declaredWeight',
                'declaredCapacity',
                'disputed',
                'disputedCount',
            },
        )

    def validate(self, doc):
        if not settings.validSiteName(doc.get('name')):
            raise ValidationException(
                'A site name is 1-64 letters, digits, ".", "_" or "-".', 'name'
            )
        apiUrl = doc.get('apiUrl')
        if not isinstance(apiUrl, str) or not re.match(r'^https?://[^\s/]+(/[^\s]*)?$', apiUrl):
            raise ValidationException('A site apiUrl must be an http(s) URL.', 'apiUrl')
        doc['apiUrl'] = apiUrl.rstrip('/')
        weight = doc.get('weight', 1)
        if (
            not isinstance(weight, int | float)
            or isinstance(weight, bool)
            or not (0 <= weight <= 1000)
        ):
            raise ValidationException('A site weight is a number from 0 to 1000.', 'weight')
        if 'credential' in doc:
            raise ValidationException('A credential is only ever stored encrypted.', 'credential')
        frontDoor = doc.get('frontDoorUrl')
        if frontDoor is not None and (
            not isinstance(frontDoor, str) or not re.match(r'^https?://[^\s/?#@]+/?$', frontDoor)
        ):
            raise ValidationException(
                'A site frontDoorUrl is an http(s) origin, e.g. https://notebooks.site.org.',
                'frontDoorUrl',
            )
        notebookHost = doc.get('notebookHost')
        if notebookHost is not None and (
            not isinstance(notebookHost, str)
            or not re.match(
                r'^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.:-]{0,252}))$', notebookHost
            )
        ):
            raise ValidationException(
                'A site notebookHost is the host name (or address) browsers reach its '
                'notebooks at, e.g. notebooks.site.org.',
                'notebookHost',
            )
        return doc

    # Health --------------------------------------------------------------------------

    def ttl(self):
        return datetime.timedelta(seconds=settings.get(PluginSettings.HEARTBEAT_TTL))

    def healthy(self, site, now=None, ttl=None):
        last = site.get('lastHeartbeat')
        if last is None:
            return False
        if last.tzinfo is None:
            last = last.replace(tzinfo=datetime.timezone.utc)
        return (now or _now()) - last <= (ttl or self.ttl())

    def suspect(self, site, now=None):
        """True while the site's circuit breaker is open (``girder_resolver.breaker``)."""
        return breaker.suspect(site, now)

    def freeCapacity(self, site):
        capacity = site.get('capacity')
        if not capacity:
            return 0
        return max(0, capacity - (site.get('running') or 0))

    def localApiUrl(self):
        return settings.get(PluginSettings.SITE_API_URL) or getApiUrl()

    def publicView(self, site, user):
        doc = self.filter(site, user)
        doc['healthy'] = self.healthy(site)
        doc['hasCredential'] = bool(site.get('credentialSealed'))
        doc['suspect'] = self.suspect(site)
        if doc['suspect']:
            doc['suspectSince'] = site['suspectSince']
            if user is not None and user.get('admin'):
                # What failed, in the words of the call that failed: for admins only.
                doc['suspectReason'] = site.get('suspectReason')
        return doc

    # Limits set by the central's admin ------------------------------------------------

    def setLimits(self, site, weight=None, capacity=None):
        """Bound the site's weight and capacity (None removes a bound); clamps them now."""
        limits = {k: v for k, v in (('weight', weight), ('capacity', capacity)) if v is not None}
        fields = {'limits': limits}
        declaredWeight = site.get('declaredWeight', site.get('weight', 1))
        fields['weight'] = _bounded(declaredWeight, limits.get('weight'))
        if site.get('declaredCapacity', site.get('capacity')) is not None:
            fields['capacity'] = _bounded(
                site.get('declaredCapacity', site.get('capacity')), limits.get('capacity')
            )
        self.collection.update_one({'_id': site['_id']}, {'$set': fields})
        site.update(fields)
        cache.sites.discard(site['name'])
        return site

    # Credentials ----------------------------------------------------------------------

    def sealLegacyCredentials(self):
        """Encrypt credentials an older version stored in clear; how many there were."""
        count = 0
        for site in self.find({'credential': {'$exists': True}}):
            plain = site.get('credential')
            update = {'$unset': {'credential': ''}}
            if isinstance(plain, str) and plain:
                update['$set'] = {'credentialSealed': credentials.seal(plain)}
            self.collection.update_one({'_id': site['_id']}, update)
            count += 1
        if count:
            cache.sites.clear()
        return count

    # Who may do what -------------------------------------------------------------------

    def isRegistrar(self, user):
        if user is None:
            return False
        if user.get('admin'):
            return True
        groupName = settings.get(PluginSettings.REGISTRAR_GROUP)
        if not groupName:
            return False
        group = Group().findOne({'name': groupName})
        return group is not None and group['_id'] in user.get('groups', [])

    def requireOwner(self, site, user):
        if user is None or not (user.get('admin') or site.get('ownerId') == user['_id']):
            raise AccessException(
                f'Site "{site["name"]}" is registered by another account; only its owner or '
                'an admin may change it.'
            )

    # Registration ----------------------------------------------------------------------

    def _claim(self, name, user, fields):
        """Create the site owned by ``user``, or update it if ``user`` owns it."""
        if name == settings.get(PluginSettings.SITE_NAME):
            raise RestException(
                f'"{name}" is the name of this server\'s own site (its resolver.site_name); '
                'register under another name, or change resolver.site_name at one of the '
                'two servers.',
                code=409,
            )
        site = self.findOne({'name': name})
        if site is None:
            site = self.validate(
                {
                    'name': name,
                    'ownerId': user['_id'],
                    'operator': user.get('login'),
                    'created': _now(),
                    'datasetCount': 0,
                    'limits': {},
                    **fields,
                }
            )
            try:
                self.collection.insert_one(site)
                return site
            except pymongo.errors.DuplicateKeyError:
                # Someone registered the same name a moment ago: they own it.
                site = self.findOne({'name': name})
        self.requireOwner(site, user)
        unset = {}
        # A new address without a new credential: the old one must never go there.
        if fields['apiUrl'] != site.get('apiUrl') and 'credentialSealed' not in fields:
            unset['credentialSealed'] = ''
            site.pop('credentialSealed', None)
        limits = site.get('limits') or {}
        if 'declaredWeight' in fields:
            fields['weight'] = _bounded(fields['declaredWeight'], limits.get('weight'))
        if 'operator' not in site:
            owner = User().load(site['ownerId'], force=True) or {}
            fields['operator'] = owner.get('login')
        site.update(fields)
        self.validate(site)
        update = {'$set': fields}
        if unset:
            update['$unset'] = unset
        self.collection.update_one({'_id': site['_id']}, update)
        cache.sites.discard(name)
        return site

    def register(
        self,
        user,
        name,
        apiUrl,
        datasets,
        mode='full',
        removed=(),
        credential=None,
        weight=None,
        frontDoorUrl=None,
        notebookHost=None,
    ):
        """Record a site's datasets; ``full`` replaces the site's set, ``partial`` adds to it.

        Every entry is validated on its own: rejected ones are listed with their
        reason and the valid ones are kept. Returns the counts.
        """
        from .dataset import Dataset

        if mode not in ('full', 'partial'):
            raise RestException('mode must be "full" or "partial".', code=400)
        if not isinstance(datasets, list) or not isinstance(removed, list | tuple):
            raise RestException('"datasets" and "removed" must be lists.', code=400)
        if mode == 'full' and removed:
            raise RestException('"removed" only makes sense with mode "partial".', code=400)
        limit = settings.get(PluginSettings.MAX_REGISTRATION)
        if len(datasets) + len(removed) > limit:
            raise RestException(
                f'A registration holds at most {limit} datasets; send the rest with '
                'mode "partial".',
                code=413,
            )
        # Decided from the URL alone, before anything is stored or sent anywhere.
        try:
            apiUrl = checkApiUrl(apiUrl)
        except UnsafeUrl as exc:
            raise RestException(str(exc), code=400)
        if credential is not None and (
            not isinstance(credential, str) or not 0 < len(credential) <= MAX_CREDENTIAL_LENGTH
        ):
            raise RestException(
                f'"credential" is a non-empty string of at most {MAX_CREDENTIAL_LENGTH} '
                'characters.',
                code=400,
            )
        now = _now()
        fields = {'apiUrl': apiUrl, 'lastHeartbeat': now, 'lastRegistration': now}
        if credential is not None:
            try:
                fields['credentialSealed'] = credentials.seal(credential)
            except (OSError, credentials.CredentialKeyError) as exc:
                raise RestException(
                    'This resolver cannot store launch credentials now: it has no key to '
                    f'encrypt them with ({type(exc).__name__}); its admin must set '
                    f'{credentials.KEY_ENV} or make {credentials.KEY_FILE_ENV} writable.',
                    code=503,
                )
        if weight is not None:
            if (
                not isinstance(weight, int | float)
                or isinstance(weight, bool)
                or not (0 <= weight <= 1000)
            ):
                raise RestException('A site weight is a number from 0 to 1000.', code=400)
            fields['declaredWeight'] = weight
            fields['weight'] = weight
        if frontDoorUrl is not None:
            fields['frontDoorUrl'] = frontDoorUrl
        if notebookHost is not None:
            fields['notebookHost'] = notebookHost
        try:
            site = self._claim(name, user, fields)
        except ValidationException as exc:
            raise RestException(str(exc), code=400)

        wanted, rejected = {}, []
        for entry in datasets:
            try:
                ident, folderId, dsName = validateEntry(entry)
            except ValueError as exc:
                rejected.append({'identifier': _show(entry), 'reason': str(exc)})
                continue
            wanted[(ident.canonical, folderId)] = (ident.scheme, dsName)
        unwanted = []
        for entry in removed:
            try:
                ident, folderId, _ = validateEntry({**entry, 'name': 'x'})
            except (ValueError, TypeError) as exc:
                rejected.append({'identifier': _show(entry), 'reason': str(exc)})
                continue
            unwanted.append((ident.canonical, folderId))

        coll = Dataset().collection
        base = {'site': name, 'local': False}
        existing = {}
        if mode == 'full':
            for doc in coll.find(base, {'identifier': 1, 'folderId': 1, 'name': 1}):
                existing[(doc['identifier'], doc['folderId'])] = doc
        else:
            for ident, folderId in list(wanted) + unwanted:
                doc = coll.find_one(
                    # Keys in the unique index's order: SecantusDB picks its index from the
                    # query's first key, and {site, ...} would scan every entry of the site.
                    {'identifier': ident, 'site': name, 'folderId': folderId, 'local': False},
                    {'identifier': 1, 'folderId': 1, 'name': 1},
                )
                if doc:
                    existing[(ident, folderId)] = doc

        ops, added, updated = [], 0, 0
        for (ident, folderId), (scheme, dsName) in wanted.items():
            old = existing.get((ident, folderId))
            if old is None:
                added += 1
                ops.append(
                    pymongo.UpdateOne(
                        {'identifier': ident, 'site': name, 'folderId': folderId},
                        {
                            '$set': {
                                'scheme': scheme,
                                'name': dsName,
                                'local': False,
                                'updated': now,
                            },
                            '$setOnInsert': {'created': now},
                        },
                        upsert=True,
                    )
                )
            elif old.get('name') != dsName:
                updated += 1
                ops.append(
                    pymongo.UpdateOne(
                        {'_id': old['_id']}, {'$set': {'name': dsName, 'updated': now}}
                    )
                )
        if mode == 'full':
            gone = [doc['_id'] for key, doc in existing.items() if key not in wanted]
        else:
            gone = [existing[key]['_id'] for key in unwanted if key in existing]
        if gone:
            ops.append(pymongo.DeleteMany({'_id': {'$in': gone}}))
        for start in range(0, len(ops), _WRITE_BATCH):
            coll.bulk_write(ops[start : start + _WRITE_BATCH], ordered=False)
        newKeys = [key for key in wanted if key not in existing]
        disputed = self._flagDisputed(site, user, newKeys)
        if ops:
            cache.entries.clear()
        total = coll.count_documents(base)
        siteFields = {'datasetCount': total}
        if disputed or gone or site.get('disputedCount'):
            query = {**base, 'disputed': True}
            siteFields['disputedCount'] = coll.count_documents(query)
            siteFields['disputed'] = [
                d['identifier']
                for d in coll.find(query, {'identifier': 1}).limit(MAX_DISPUTED_LISTED)
            ]
        self.collection.update_one({'_id': site['_id']}, {'$set': siteFields})
        cache.sites.discard(name)
        return {
            'site': name,
            'mode': mode,
            'added': added,
            'updated': updated,
            'removed': len(gone),
            'total': total,
            'rejected': rejected,
            'disputed': disputed,
        }

    def _flagDisputed(self, site, user, keys):
        """Flag new entries whose identifier another owner's site (or this server) holds.

        The claim is kept — the same dataset may well be mirrored — but marked, so
        that /resolve ranks it after undisputed copies and shows who operates it.
        Returns ``[{identifier, heldBy}]`` for the answer.
        """
        from .dataset import Dataset

        coll = Dataset().collection
        flagged = {}
        idents = sorted({ident for ident, _ in keys})
        for start in range(0, len(idents), _WRITE_BATCH):
            batch = idents[start : start + _WRITE_BATCH]
            holders = {}
            for doc in coll.find(
                # A disputed claim holds nothing: only undisputed holders count.
                {
                    'identifier': {'$in': batch},
                    'site': {'$ne': site['name']},
                    'disputed': {'$ne': True},
                },
                {'identifier': 1, 'site': 1, 'local': 1},
            ):
                holders.setdefault(doc['identifier'], []).append(doc)
            owners = {}
            names = {d['site'] for docs in holders.values() for d in docs if not d.get('local')}
            if names:
                query = {'name': {'$in': sorted(names)}}
                for other in self.find(query, fields=['name', 'ownerId']):
                    owners[other['name']] = other.get('ownerId')
            for ident, docs in holders.items():
                for doc in docs:
                    if doc.get('local'):
                        foreign = not user.get('admin')
                    else:
                        foreign = owners.get(doc['site']) not in (None, site['ownerId'])
                    if foreign:
                        flagged[ident] = doc['site']
                        break
        if flagged:
            for start in range(0, len(flagged), _WRITE_BATCH):
                batch = sorted(flagged)[start : start + _WRITE_BATCH]
                coll.update_many(
                    {'identifier': {'$in': batch}, 'site': site['name'], 'local': False},
                    {'$set': {'disputed': True}},
                )
        return [{'identifier': i, 'heldBy': flagged[i]} for i in sorted(flagged)]

    def heartbeat(self, site, running=None, capacity=None):
        fields = {'lastHeartbeat': _now()}
        if running is not None:
            fields['running'] = running
        if capacity is not None:
            fields['declaredCapacity'] = capacity
            fields['capacity'] = _bounded(capacity, (site.get('limits') or {}).get('capacity'))
        update = {'$set': fields}
        if running is not None and (site.get('failures') or site.get('suspectSince')):
            # Its sidecar counted its notebooks, so the site's Girder answers: whatever
            # made it suspect is over.
            update = {
                '$set': {**fields, **breaker.RESET['$set']},
                '$unset': breaker.RESET['$unset'],
            }
            for field in breaker.RESET['$unset']:
                site.pop(field, None)
        self.collection.update_one({'_id': site['_id']}, update)
        site.update(update['$set'])
        cache.sites.discard(site['name'])
        return site

    def remove(self, site, **kwargs):
        from .dataset import Dataset

        Dataset().collection.delete_many({'site': site['name'], 'local': False})
        cache.entries.clear()
        try:
            return super().remove(site, **kwargs)
        finally:
            cache.sites.discard(site['name'])

    # Writes through Girder's generic model methods forget what /resolve remembers too.
    def save(self, document, *args, **kwargs):
        try:
            return super().save(document, *args, **kwargs)
        finally:
            cache.sites.discard(document.get('name'))

    def update(self, query, update, *args, **kwargs):
        try:
            return super().update(query, update, *args, **kwargs)
        finally:
            cache.sites.clear()

    def named(self, name):
        """The site called ``name`` (None if there is none), as /resolve reads it."""
        return cache.sites.get(
            name,
            lambda: self.findOne({'name': name}),
            settings.get(PluginSettings.CACHE_SECONDS),
            keep=lambda site: site is not None,
        )


def _bounded(value, limit):
    return value if limit is None else min(value, limit)


def _show(entry):
    """What to call a rejected entry in the response: its identifier text, cut short."""
    value = entry.get('identifier') if isinstance(entry, dict) else entry
    return str(value)[:200]
