"""``/resolver``: the dataset index (paged and filtered by access), the sites, the metrics.

It owns the ``/resolver`` resource: ``/resolver/dataset`` and ``/resolver/metrics``
here, the site routes mixed in from :mod:`.site` and the tools from :mod:`.tool`.
"""

import hmac

import cherrypy
from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import getCurrentUser, setRawResponse, setResponseHeader
from girder.exceptions import AccessException
from girder.models.folder import Folder

from .. import errors, metrics, ratelimit, settings
from ..models.dataset import Dataset, validFolderId
from ..primitives import objectId, validSiteName
from ..services.notebooks import tools
from ..settings import PluginSettings
from . import checkPaging, checkSorting, parseIdentifier
from .errors import DomainResource
from .site import SiteRoutes
from .tool import ToolRoutes

SORT_FIELDS = {'identifier', 'site', 'name', 'updated'}


class Resolver(DomainResource, SiteRoutes, ToolRoutes):
    """Routes under ``/resolver``: the dataset index, the federation's sites, the tools."""

    def __init__(self):
        super().__init__()
        self.resourceName = 'resolver'
        self.route('GET', ('dataset',), self.listDatasets)
        self.addSiteRoutes()
        self.addToolRoutes()
        self.route('GET', ('metrics',), self.metrics)

    @access.public
    @autoDescribeRoute(
        Description('List the dataset index: one entry per (identifier, site, folder).')
        .notes(
            'Local entries whose folder the caller may not read are left out. "tool" is the '
            "id of the tool the dataset recommends (a local folder's resolver.tool_key "
            'metadata, or what its site registered), or null.'
        )
        .param('site', 'Only entries held by this site.', required=False)
        .param('identifier', 'Only entries for this identifier (any spelling).', required=False)
        .param(
            'collectionId',
            'Only local entries whose folder lies in this collection.',
            required=False,
        )
        .param('folderId', 'Only entries of this folder.', required=False)
        .param(
            'local',
            'Only entries of this site (true) or registered by others (false).',
            required=False,
            dataType='boolean',
        )
        .pagingParams(defaultSort='identifier')
        .errorResponse('A filter does not parse.', 400)
        .errorResponse('Too many anonymous requests from your address (see Retry-After).', 429)
    )
    def listDatasets(self, site, identifier, collectionId, folderId, local, limit, offset, sort):
        ratelimit.check()
        checkPaging(limit, offset)
        query = {}
        if site is not None:
            if not validSiteName(site):
                raise errors.InvalidRequest('"site" must be a site name.')
            query['site'] = site
        if identifier is not None:
            query['identifier'] = parseIdentifier(identifier, 'identifier').canonical
        if local is not None:
            query['local'] = bool(local)
        checkSorting(sort, SORT_FIELDS)
        if collectionId is not None:
            query['local'] = True
            query['folderId'] = {'$in': self._taggedFolders(collectionId)}
        if folderId is not None:
            if not validFolderId(folderId):
                raise errors.InvalidRequest('"folderId" must be a folder id.')
            inCollection = query.get('folderId', {}).get('$in')
            query['folderId'] = (
                folderId if inCollection is None or folderId in inCollection else {'$in': []}
            )
        user = getCurrentUser()
        model = Dataset()
        out = []
        for doc, folder in model.findVisible(query, user, limit=limit, offset=offset, sort=sort):
            entry = model.filter(doc, user)
            if folder is not None:
                entry['public'] = bool(folder.get('public'))
                entry['collectionId'] = (
                    str(folder['baseParentId'])
                    if folder.get('baseParentType') == 'collection'
                    else None
                )
                entry['tool'] = tools.recommended(folder)
            out.append(entry)
        return out

    def _taggedFolders(self, collectionId):
        collection = objectId(collectionId)
        if collection is None:
            raise errors.InvalidRequest('"collectionId" must be a collection id.')
        key = settings.get(PluginSettings.IDENTIFIER_KEY)
        folders = Folder().find(
            {
                'baseParentType': 'collection',
                'baseParentId': collection,
                f'meta.{key}': {'$exists': True},
            },
            fields={'_id': True},
        )
        return [str(f['_id']) for f in folders]

    @access.public
    @autoDescribeRoute(
        Description('Prometheus metrics of this server (text exposition format).')
        .notes(
            'Admins may read it; so may a scraper that sends "Authorization: Bearer <secret>" '
            'where the secret is the setting resolver.metrics_token.'
        )
        .produces('text/plain')
        .errorResponse('Neither an admin nor the metrics secret.', 403)
    )
    def metrics(self):
        user = getCurrentUser()
        if not (user and user.get('admin')):
            secret = settings.get(PluginSettings.METRICS_TOKEN)
            header = cherrypy.request.headers.get('Authorization', '')
            given = header[len('Bearer ') :] if header.startswith('Bearer ') else ''
            if not secret or not hmac.compare_digest(given.encode(), secret.encode()):
                raise AccessException(
                    'Metrics are for admins, or for a scraper sending the bearer secret set in '
                    'resolver.metrics_token.'
                )
        setResponseHeader('Content-Type', 'text/plain; version=0.0.4; charset=utf-8')
        setRawResponse()
        return metrics.exposition()
