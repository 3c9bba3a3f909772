"""Sites of the federation: who registered them, where they answer, how alive they are.

A site's launch credential is write-only: it is stored here so the central can
launch on a user's behalf, and is never returned by ``filter`` or logged.
"""

import datetime

from girder.api.rest import getApiUrl
from girder.constants import AccessType
from girder.exceptions import ValidationException
from girder.models.model_base import Model

from .. import settings
from ..settings import PluginSettings


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
                'weight',
                'capacity',
                'running',
                'datasetCount',
            },
        )

    def validate(self, doc):
        if not settings.validSiteName(doc.get('name')):
            raise ValidationException(
                'A site name is 1-64 letters, digits, ".", "_" or "-".', 'name'
            )
        if not isinstance(doc.get('apiUrl'), str) or not doc['apiUrl'].startswith(
            ('http://', 'https://')
        ):
            raise ValidationException('A site apiUrl must be an http(s) URL.', 'apiUrl')
        return doc

    def ttl(self):
        return datetime.timedelta(seconds=settings.get(PluginSettings.HEARTBEAT_TTL))

    def healthy(self, site, now=None):
        last = site.get('lastHeartbeat')
        if last is None:
            return False
        if last.tzinfo is None:
            last = last.replace(tzinfo=datetime.timezone.utc)
        now = now or datetime.datetime.now(datetime.timezone.utc)
        return now - last <= self.ttl()

    def freeCapacity(self, site):
        capacity = site.get('capacity')
        if not capacity:
            return 0
        return max(0, capacity - site.get('running', 0))

    def localApiUrl(self):
        return settings.get(PluginSettings.SITE_API_URL) or getApiUrl()
