"""Sites of the federation: their documents, health and the limits the central sets.

It owns the ``resolver_site`` collection: validation, the atomic writes of a site's
fields (a claim, a heartbeat, limits), health as read from a document (heartbeat age,
circuit breaker) and who may change a site. What a registration decides, and the
datasets it writes into the index, is ``services/registration``.

A site's launch credential is write-only: it is kept so the central can launch
on a user's behalf at that site, encrypted (``credentialSealed``, see
``girder_resolver.credentials``), never exposed by ``filter``, never returned by
an endpoint, and never logged.
"""

import datetime
import re

import pymongo
from girder.api.rest import getApiUrl
from girder.constants import AccessType
from girder.exceptions import AccessException, ValidationException
from girder.models.group import Group
from girder.models.model_base import Model

from .. import breaker, cache, credentials, settings
from ..primitives import aware, now, validSiteName
from ..settings import PluginSettings

#: A host name, IPv4 address or bracketed/bare IPv6 address (no scheme, port or path).
HOST_RE = re.compile(r'^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.:-]{0,252})$')


def bounded(value, limit):
    """``value``, at most ``limit`` (no bound when ``limit`` is None)."""
    return value if limit is None else min(value, limit)


class Site(Model):
    """A site of the federation: its address, owner, declared and bounded capacity, health."""

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
                # The tools it offers: [{id, name, ready, default}].
                'tools',
            },
        )

    def validate(self, doc):
        if not validSiteName(doc.get('name')):
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
            not isinstance(notebookHost, str) or not HOST_RE.match(notebookHost)
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

    def healthy(self, site, moment=None, ttl=None):
        last = aware(site.get('lastHeartbeat'))
        if last is None:
            return False
        return (moment or now()) - last <= (ttl or self.ttl())

    def suspect(self, site, moment=None):
        """True while the site's circuit breaker is open (``girder_resolver.breaker``)."""
        return breaker.suspect(site, moment)

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
        fields['weight'] = bounded(declaredWeight, limits.get('weight'))
        if site.get('declaredCapacity', site.get('capacity')) is not None:
            fields['capacity'] = bounded(
                site.get('declaredCapacity', site.get('capacity')), limits.get('capacity')
            )
        return self.setFields(site, fields)

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

    # Atomic writes -----------------------------------------------------------------------

    def create(self, doc):
        """Insert the new site ``doc`` (validated); None if the name was taken meanwhile."""
        doc = self.validate(doc)
        try:
            self.collection.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            return None
        return doc

    def setFields(self, site, fields, unset=()):
        """Write ``fields`` (and remove the ``unset`` ones) on ``site``, in the database and
        in ``site``; /resolve reads the change at once."""
        update = {'$set': fields}
        if unset:
            update['$unset'] = {field: '' for field in unset}
        self.collection.update_one({'_id': site['_id']}, update)
        site.update(fields)
        for field in unset:
            site.pop(field, None)
        cache.sites.discard(site['name'])
        return site

    def owners(self, names):
        """``{name: ownerId}`` of the sites called ``names``."""
        query = {'name': {'$in': sorted(names)}}
        return {s['name']: s.get('ownerId') for s in self.find(query, fields=['name', 'ownerId'])}

    def heartbeat(self, site, running=None, capacity=None):
        fields = {'lastHeartbeat': now()}
        if running is not None:
            fields['running'] = running
        if capacity is not None:
            fields['declaredCapacity'] = capacity
            fields['capacity'] = bounded(capacity, (site.get('limits') or {}).get('capacity'))
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
        """Remove the site's document only; ``services.registration.withdraw`` also removes
        the datasets it registered."""
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
