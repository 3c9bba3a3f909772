"""``/resolver/site`` and ``/resolver/server``: the HTTP side of the federation's sites.

It owns the routes for registration, heartbeats, limits and removal (mixed into the
``/resolver`` resource), the checks of their parameters and of a registration's body
size. What a registration decides is ``services/registration``.
"""

import functools

import cherrypy
from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import getCurrentUser
from girder.exceptions import AccessException

from .. import errors, metrics, settings
from ..models.site import Site
from ..primitives import validSiteName
from ..services import registration
from ..settings import PluginSettings
from . import checkPaging, checkSorting

#: Fields GET /resolver/site may sort by (anything else reached Mongo: a 500 for "$where").
SORT_FIELDS = {'name', 'created', 'lastHeartbeat', 'lastRegistration', 'datasetCount', 'weight'}
#: Bytes allowed per registered dataset when sizing the largest accepted body.
_BYTES_PER_ENTRY = 1024


def loadSite(name):
    """The site called ``name``, or an error saying why there is none."""
    if not validSiteName(name):
        raise errors.InvalidRequest('A site name is 1-64 letters, digits, ".", "_" or "-".')
    site = Site().findOne({'name': name})
    if site is None:
        raise errors.NotFound(f'No site named "{name}" is registered.')
    return site


def _checkBodySize():
    limit = settings.get(PluginSettings.MAX_REGISTRATION) * _BYTES_PER_ENTRY + 65536
    length = cherrypy.request.headers.get('Content-Length')
    if length and length.isdigit() and int(length) > limit:
        raise errors.TooLarge(
            f'The registration body is {int(length)} bytes; at most {limit} are accepted. '
            'Send the datasets in several "partial" registrations.'
        )


def checkedBody(fun):
    """Refuse an oversized or absurdly nested registration before Girder parses it.

    ``jsonParam`` parses the whole body before the handler runs: a 100 MB body
    would be parsed before its 413, and ``[[[[…`` nested 100,000 deep raised a
    RecursionError that Girder answered with a 500.
    """

    @functools.wraps(fun)
    def wrapper(*args, **kwargs):
        _checkBodySize()
        try:
            return fun(*args, **kwargs)
        except RecursionError:
            raise errors.InvalidRequest('The registration is nested too deeply to be read.')

    return wrapper


class SiteRoutes:
    """Mixed into the ``/resolver`` resource."""

    def addSiteRoutes(self):
        self.route('GET', ('site',), self.listSites)
        self.route('POST', ('site',), self.registerSite)
        self.route('PUT', ('site', ':name', 'heartbeat'), self.heartbeat)
        self.route('PUT', ('site', ':name', 'limits'), self.setLimits)
        self.route('DELETE', ('site', ':name'), self.deleteSite)
        self.route('GET', ('server',), self.describeServer)

    @access.public
    @autoDescribeRoute(
        Description("This server's own name in the federation.").notes(
            '"siteName" is resolver.site_name: the name its local datasets carry and the '
            'prefix of its users\' federation identities ("<siteName>:<user id>"). '
            '"siteNameSet" is false while it is still the unique default of a fresh '
            "install. feder8 reads it at its site (to set the site's name, or refuse) and "
            'at the central (the name its delegated identities must carry).'
        )
    )
    def describeServer(self):
        return {
            'siteName': settings.get(PluginSettings.SITE_NAME),
            'siteNameSet': settings.siteNameIsSet(),
        }

    @access.public
    @autoDescribeRoute(
        Description("List the federation's sites with their health and dataset counts.")
        .notes('A site is healthy while its last heartbeat is younger than the TTL setting.')
        .pagingParams(defaultSort='name')
    )
    def listSites(self, limit, offset, sort):
        checkSorting(sort, SORT_FIELDS)
        checkPaging(limit, offset)
        user = getCurrentUser()
        return [
            Site().publicView(site, user)
            for site in Site().find({}, limit=limit, offset=offset, sort=sort)
        ]

    @access.user
    @checkedBody
    @autoDescribeRoute(
        Description('Register a site and its datasets (full snapshot or partial update).')
        .notes(
            'Body: {name, apiUrl, credential?, weight?, frontDoorUrl?, notebookHost?, '
            'tools?: [{id, name, ready, default}], mode: "full"|"partial", '
            'datasets: [{identifier, folderId, name, tool?}], removed?: [{identifier, '
            'folderId}]}. "tools" (the site\'s tools, as its GET /resolver/tool lists them) '
            'replaces those recorded; a dataset\'s "tool" is the id of the tool it '
            'recommends. '
            'The first registrar of a name owns it. "full" replaces the site\'s datasets; '
            '"partial" adds or updates those given and drops those in "removed". Invalid '
            'entries are listed in "rejected" with a reason; the valid ones are kept; new '
            "entries whose identifier another owner's site holds are kept and listed in "
            '"disputed". apiUrl must be https, unless its host is listed in '
            'resolver.allowed_site_hosts; loopback, private and link-local addresses are '
            'refused unless listed there. The credential is stored encrypted for launching '
            "on users' behalf and never returned; a new apiUrl without a credential clears "
            'the stored one.'
        )
        .jsonParam('body', 'The registration.', paramType='body', requireObject=True)
        .errorResponse('Malformed registration.', 400)
        .errorResponse('Not a registrar, or the site belongs to another account.', 403)
        .errorResponse("The name belongs to this server's own site.", 409)
        .errorResponse('Too many datasets in one request.', 413)
    )
    def registerSite(self, body):
        user = getCurrentUser()
        if not Site().isRegistrar(user):
            raise AccessException(
                'Only admins and members of the registrar group may register sites.'
            )
        unknown = set(body) - {
            'name',
            'apiUrl',
            'credential',
            'weight',
            'frontDoorUrl',
            'notebookHost',
            'tools',
            'mode',
            'datasets',
            'removed',
        }
        if unknown:
            raise errors.InvalidRequest(f'Unknown fields: {", ".join(sorted(unknown))}.')
        name = body.get('name')
        if not validSiteName(name):
            raise errors.InvalidRequest('"name" must be 1-64 letters, digits, ".", "_" or "-".')
        apiUrl = body.get('apiUrl')
        if not isinstance(apiUrl, str):
            raise errors.InvalidRequest('"apiUrl" must be the site\'s public API URL.')
        mode = body.get('mode', 'full')
        metrics.REGISTRATIONS.labels(mode=mode if mode in ('full', 'partial') else 'invalid').inc()
        return registration.register(
            user,
            name,
            apiUrl,
            body.get('datasets', []),
            mode=body.get('mode', 'full'),
            removed=body.get('removed', []),
            credential=body.get('credential'),
            weight=body.get('weight'),
            frontDoorUrl=body.get('frontDoorUrl'),
            notebookHost=body.get('notebookHost'),
            tools=body.get('tools'),
        )

    @access.user
    @autoDescribeRoute(
        Description('Mark a site alive, optionally reporting its notebook capacity.')
        .param('name', 'The site name.', paramType='path')
        .param('running', 'Notebooks running at the site.', required=False, dataType='integer')
        .param('capacity', 'Notebooks the site can run.', required=False, dataType='integer')
        .errorResponse("Not the site's owner.", 403)
        .errorResponse('No such site (register it first).', 404)
    )
    def heartbeat(self, name, running, capacity):
        site = loadSite(name)
        Site().requireOwner(site, getCurrentUser())
        for label, value in (('running', running), ('capacity', capacity)):
            if value is not None and not 0 <= value <= 10**6:
                raise errors.InvalidRequest(f'"{label}" must be between 0 and 1000000.')
        site = Site().heartbeat(site, running=running, capacity=capacity)
        return Site().publicView(site, getCurrentUser())

    @access.admin
    @autoDescribeRoute(
        Description("Bound a site's weight and capacity (the central's admin only).")
        .notes(
            'A site declares its weight (at registration) and capacity (with heartbeats); '
            'routing uses the smaller of what it declares and these limits. Leave a '
            'parameter out to remove that bound.'
        )
        .param('name', 'The site name.', paramType='path')
        .param('weight', 'Largest weight (0-1000).', required=False, dataType='number')
        .param('capacity', 'Largest capacity (0-1000000).', required=False, dataType='integer')
        .errorResponse('A value out of range.', 400)
        .errorResponse('Not an admin.', 403)
        .errorResponse('No such site.', 404)
    )
    def setLimits(self, name, weight, capacity):
        site = loadSite(name)
        if weight is not None and not 0 <= weight <= 1000:
            raise errors.InvalidRequest('"weight" must be between 0 and 1000.')
        if capacity is not None and not 0 <= capacity <= 10**6:
            raise errors.InvalidRequest('"capacity" must be between 0 and 1000000.')
        site = Site().setLimits(site, weight=weight, capacity=capacity)
        return Site().publicView(site, getCurrentUser())

    @access.user
    @autoDescribeRoute(
        Description('Remove a site and every dataset it registered.')
        .param('name', 'The site name.', paramType='path')
        .errorResponse("Not the site's owner or an admin.", 403)
        .errorResponse('No such site.', 404)
    )
    def deleteSite(self, name):
        site = loadSite(name)
        Site().requireOwner(site, getCurrentUser())
        registration.withdraw(site)
        return {'message': f'Site "{name}" and its datasets were removed.'}
