"""``/resolver/dataset``: the dataset index, paged and filtered by access."""

from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import Resource, getCurrentUser
from girder.exceptions import RestException

from .. import settings
from ..models.dataset import Dataset
from . import parseIdentifier
from .site import SiteRoutes

SORT_FIELDS = {'identifier', 'site', 'name', 'updated'}


class Resolver(Resource, SiteRoutes):
    """Routes under ``/resolver``: the dataset index and the federation's sites."""

    def __init__(self):
        super().__init__()
        self.resourceName = 'resolver'
        self.route('GET', ('dataset',), self.listDatasets)
        self._addSiteRoutes()

    @access.public
    @autoDescribeRoute(
        Description('List the dataset index: one entry per (identifier, site, folder).')
        .notes('Local entries whose folder the caller may not read are left out.')
        .param('site', 'Only entries held by this site.', required=False)
        .param('identifier', 'Only entries for this identifier (any spelling).', required=False)
        .param(
            'local',
            'Only entries of this site (true) or registered by others (false).',
            required=False,
            dataType='boolean',
        )
        .pagingParams(defaultSort='identifier')
        .errorResponse('A filter does not parse.', 400)
    )
    def listDatasets(self, site, identifier, local, limit, offset, sort):
        query = {}
        if site is not None:
            if not settings.validSiteName(site):
                raise RestException('"site" must be a site name.', code=400)
            query['site'] = site
        if identifier is not None:
            query['identifier'] = parseIdentifier(identifier, 'identifier').canonical
        if local is not None:
            query['local'] = bool(local)
        for field, _direction in sort:
            if field not in SORT_FIELDS:
                raise RestException(f'Sort by one of: {", ".join(sorted(SORT_FIELDS))}.', code=400)
        user = getCurrentUser()
        model = Dataset()
        out = []
        for doc in model.findVisible(query, user, limit=limit, offset=offset, sort=sort):
            entry = model.filter(doc, user)
            entry['folderId'] = doc['folderId']
            if doc.get('local'):
                folder = model.readableFolder(doc, user)
                entry['public'] = bool(folder and folder.get('public'))
            out.append(entry)
        return out
