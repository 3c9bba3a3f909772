"""``/resolve``: from a persistent identifier to the places that hold the data.

It owns the HTTP side of resolution: content negotiation (a browser goes to the web
client), CORS for anonymous answers, the rate limit and the 404 a person can act on.
The ranking is ``services/resolution``.
"""

import urllib.parse

import cherrypy
from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import getApiUrl, getCurrentUser
from girder.constants import AccessType
from girder.models.folder import Folder

from .. import errors, metrics, ratelimit
from ..models.notebook import identityOf
from ..services import notebooks, resolution, runs, runs_remote
from ..settings import validToolId
from . import parseIdentifier
from .errors import DomainResource


def _quality(accept, mediaType):
    """The q-value an Accept header gives ``mediaType`` (0 if it is not accepted)."""
    best, bestSpecificity = 0.0, -1
    major = mediaType.split('/')[0]
    for part in accept.split(','):
        fields = [f.strip() for f in part.split(';')]
        rangeType = fields[0].lower()
        q = 1.0
        for f in fields[1:]:
            if f.startswith('q='):
                try:
                    q = float(f[2:])
                except ValueError:
                    q = 0.0
        if rangeType == mediaType:
            specificity = 2
        elif rangeType == f'{major}/*':
            specificity = 1
        elif rangeType == '*/*':
            specificity = 0
        else:
            continue
        if specificity > bestSpecificity:
            best, bestSpecificity = q, specificity
    return best


def prefersHtml(accept):
    """True for a browser navigating to a link: it ranks HTML above JSON."""
    if not accept:
        return False
    return _quality(accept, 'text/html') > _quality(accept, 'application/json')


def webClientUrl():
    apiUrl = getApiUrl()
    return apiUrl[: -len('/api/v1')] if apiUrl.endswith('/api/v1') else apiUrl


def _allowAnyOrigin():
    """Let any web page read a resolution, as the bookmarklet does from a repository's page.

    Only anonymous answers can be read that way: with ``*`` a browser neither sends the
    visitor's cookies nor shows the answer to a request made with credentials, so a page never
    learns of a private dataset. An origin the admin allowed in Girder's CORS setting (which
    may carry credentials) keeps Girder's own answer.
    """
    if cherrypy.request.headers.get('Origin') and not cherrypy.response.headers.get(
        'Access-Control-Allow-Origin'
    ):
        cherrypy.response.headers['Access-Control-Allow-Origin'] = '*'


class Resolve(DomainResource):
    def __init__(self):
        super().__init__()
        self.resourceName = 'resolve'
        self.route('GET', (), self.resolve)
        self.route('POST', ('launch',), self.launch)
        self.route('POST', ('run',), self.run)

    @access.public
    @autoDescribeRoute(
        Description('Resolve a persistent identifier to the sites and folders that hold it.')
        .notes(
            'DOIs, Handles, ARKs, URNs, PURLs and http(s) URLs are accepted in any common '
            'spelling. A browser (Accept preferring text/html) is sent with a 303 to the '
            "web client's #resolve page; other clients get JSON. Locations are listed "
            'healthy first; folders the caller may not read are left out. Each location '
            'lists "tools", the tools its site offers ({id, name, ready, default}), and '
            '"recommendedTool", the id of the tool its dataset recommends. A 404 carries '
            '"extra": {"identifier", "scheme"}, what the text was understood as. Any web '
            'page may read the anonymous answer (Access-Control-Allow-Origin: *).'
        )
        .param('id', 'The identifier, e.g. doi:10.5072/FK2ABC or https://doi.org/10.5072/fk2abc')
        .param('site', 'Preferred site, ranked first among healthy ones.', required=False)
        .param(
            'autolaunch',
            'Passed on to the web page: launch once logged in.',
            required=False,
            dataType='boolean',
            default=False,
        )
        .errorResponse('The identifier does not parse.', 400)
        .errorResponse('No location is known for the identifier.', 404)
        .errorResponse('Too many anonymous requests from your address (see Retry-After).', 429)
    )
    def resolve(self, id, site, autolaunch):
        _allowAnyOrigin()
        ratelimit.check()
        if prefersHtml(cherrypy.request.headers.get('Accept', '')):
            query = {'id': id if isinstance(id, str) else ''}
            if site:
                query['site'] = site
            if autolaunch:
                query['autolaunch'] = '1'
            target = f'{webClientUrl()}/#resolve?{urllib.parse.urlencode(query)}'
            raise cherrypy.HTTPRedirect(target, 303)
        try:
            identifier = parseIdentifier(id)
            if site is not None and not isinstance(site, str):
                raise errors.InvalidRequest('Give at most one "site" parameter.')
        except errors.InvalidRequest:
            metrics.RESOLUTIONS.labels(outcome='invalid').inc()
            raise
        locations = resolution.locations(identifier.canonical, getCurrentUser(), preferSite=site)
        if not locations:
            metrics.RESOLUTIONS.labels(outcome='not_found').inc()
            raise errors.NotFound(
                f'No site holds {identifier.canonical}, or you may not read it. Check the '
                'identifier, or log in if the dataset is private.',
                # What the text was understood as: the bookmarklet tells a repository page's
                # identifier that no site holds from a page that carries none.
                extra={'identifier': identifier.canonical, 'scheme': identifier.scheme},
            )
        metrics.RESOLUTIONS.labels(outcome='found').inc()
        return {
            'identifier': identifier.canonical,
            'scheme': identifier.scheme,
            'locations': locations,
        }

    @access.user
    @autoDescribeRoute(
        Description('Launch, or return, your notebook for a dataset at the best healthy site.')
        .notes(
            'Picks the first healthy location of GET /resolve. Here, it launches like POST '
            '/notebook; at another site, this resolver asks that site to launch on your behalf '
            'with the site\'s federation credential, and records the notebook (its "site" '
            'field names where it runs). A site that does not answer in time or fails (5xx) '
            "is passed over for the next healthy site holding the data, and the notebook's "
            '"failover" and message say so. With "site", only that site is tried, and its '
            'failure is an error naming the other sites that hold the data. With "tool", only '
            'the sites that offer that tool, ready, are tried (GET /resolve lists each '
            "location's tools); without it, each site runs the dataset's recommended tool, "
            'else its default. Either way the answer is a notebook: follow it with GET '
            '/notebook/{id} and stop it with DELETE /notebook/{id}, here.'
        )
        .param('id', 'The identifier, in any common spelling.')
        .param('site', 'Launch at this site only (no failover).', required=False)
        .param('tool', 'The id of the tool to run.', required=False)
        .errorResponse('The identifier does not parse, or no location offers the tool.', 400)
        .errorResponse('No location is known for the identifier.', 404)
        .errorResponse('The tool is offered but not ready at any site holding the data.', 409)
        .errorResponse('The notebook cap is reached (at the chosen site).', 429)
        .errorResponse('The chosen site, or every healthy site, failed to launch.', 502)
        .errorResponse('No healthy site (or not the chosen one) holds the dataset.', 503)
    )
    def launch(self, id, site, tool):
        identifier = parseIdentifier(id)
        if site is not None and not isinstance(site, str):
            raise errors.InvalidRequest('Give at most one "site" parameter.')
        if tool is not None and not validToolId(tool):
            raise errors.InvalidRequest(
                'Give at most one "tool" parameter: a tool id (1-40 lowercase letters, digits '
                'or "-"); GET /resolve lists the tools each location offers.'
            )
        user = getCurrentUser()
        locations = resolution.locations(identifier.canonical, user, preferSite=site)
        if not locations:
            raise errors.NotFound(f'No site holds {identifier.canonical}, or you may not read it.')
        return notebooks.view(notebooks.launchFirst(locations, user, site=site, tool=tool))

    @access.user
    @autoDescribeRoute(
        Description('Run a command or a script next to a dataset, at the best healthy site.')
        .notes(
            'Goes where POST /resolve/launch would: here, it runs like POST /run; at another '
            "site, this resolver submits it there on your behalf with the site's federation "
            'credential and keeps a record of it (its "site" names where it runs, "remoteId" '
            'its id there). The site runs it and keeps its results: "resultsUrl" is their '
            "folder's page at the site (only an http(s) URL on the site's own host is kept). "
            'Follow it with GET /run/{id} and GET /run/{id}/log, cancel it with DELETE '
            '/run/{id}, here. A script from your files here (scriptFileId) is sent to the site '
            'as its text. A site that does not answer or fails (5xx) is passed over for the '
            'next healthy one; with "site", only that site is tried.'
        )
        .param('id', 'The identifier, in any common spelling.')
        .param('site', 'Run at this site only (no failover).', required=False)
        .param('command', 'The command (bash).', required=False)
        .param('script', "The script's text (a #! line names its interpreter).", required=False)
        .param('scriptFileId', 'A file of yours at this server holding the script.', required=False)
        .param('tool', "The tool (its id) of the site's list that runs it.", required=False)
        .param(
            'fresh',
            'Run again even if an identical run succeeded before.',
            required=False,
            dataType='boolean',
            default=False,
        )
        .errorResponse('Bad input: no command or script, or more than one; a bad identifier.', 400)
        .errorResponse('No location is known for the identifier; no such script file.', 404)
        .errorResponse('The cap of active runs is reached (at the chosen site).', 429)
        .errorResponse('The chosen site, or every healthy site, failed to take the run.', 502)
        .errorResponse('No healthy site (or not the chosen one) holds the dataset.', 503)
    )
    def run(self, id, site, command, script, scriptFileId, tool, fresh):
        identifier = parseIdentifier(id)
        if site is not None and not isinstance(site, str):
            raise errors.InvalidRequest('Give at most one "site" parameter.')
        given = [command, script, scriptFileId]
        if sum(value is not None for value in given) != 1:
            raise errors.InvalidRequest(
                'Give one of "command", "script" (its text) or "scriptFileId".'
            )
        user = getCurrentUser()
        locations = resolution.locations(identifier.canonical, user, preferSite=site)
        if not locations:
            raise errors.NotFound(f'No site holds {identifier.canonical}, or you may not read it.')
        request = {'command': command, 'script': script, 'tool': tool, 'fresh': bool(fresh)}
        if scriptFileId is not None:
            # A file of this server: another site is sent its text.
            request['script'], scriptFile = runs.readScript(scriptFileId, user)
            request['scriptName'] = scriptFile['name']

        reused = []

        def submitHere(folderId):
            folder = Folder().load(folderId, user=user, level=AccessType.READ, exc=True)
            doc, again = runs.submit(
                folder,
                user,
                identityOf(user),
                command=command,
                script=script,
                scriptFileId=scriptFileId,
                toolId=tool,
                fresh=bool(fresh),
            )
            reused.append(again)
            return doc

        doc = runs_remote.submitFirst(
            locations, identifier.canonical, user, request, submitHere, site=site
        )
        return runs.view(doc, reused=bool(reused and reused[0]))
