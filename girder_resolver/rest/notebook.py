"""``/notebook``: launch, follow and stop notebooks next to a folder's data.

Two kinds of caller:

- a logged-in person, acting for themselves (identity ``<this site>:<user id>``);
- a central resolver, with this site's federation credential, acting for a
  person of the federation named by ``onBehalfOf``. The credential is a token of
  scope ``LAUNCH_SCOPE`` of this site's federation service account (the
  non-admin user that feder8 made, recorded with the central it serves in
  ``resolver.federation_service``); a launch-scoped token of anyone else is
  refused (Girder lets every user make API keys with any scope). It acts only
  for identities of that central, only on the datasets this site published
  (tagged folders the account may read), and may launch, get and stop those
  notebooks only.

At a central resolver, notebooks launched at other sites through
``POST /resolve/launch`` are listed here too (``site`` names where they run):
``GET /notebook/{id}`` refreshes them from their site and ``DELETE`` stops them
there.
"""

import json
import time
import urllib.parse

import cherrypy
from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import (
    getCurrentToken,
    getCurrentUser,
    setRawResponse,
    setResponseHeader,
)
from girder.constants import AccessType, TokenScope
from girder.exceptions import AccessException, RestException
from girder.models.folder import Folder
from girder.models.token import Token
from girder.utility import JsonEncoder

from .. import errors, settings
from ..constants import LAUNCH_SCOPE
from ..launcher.identity import COOKIE_NAME
from ..models.dataset import Dataset
from ..models.notebook import FINAL, changeCount, identityOf, validIdentity, waitForChange
from ..primitives import objectId
from ..services import notebooks
from ..services.notebooks import tools
from ..settings import PluginSettings
from . import checkPaging, checkSorting
from .errors import DomainResource

SORT_FIELDS = {'created', 'updated', 'status', 'lastActivity'}
#: How long one event stream stays open at most (seconds); clients reconnect.
EVENTS_TIMEOUT = 300


def delegated():
    """Whether the request carries a federation credential rather than a person's login."""
    token = getCurrentToken()
    return token is not None and not Token().hasScope(token, TokenScope.USER_AUTH)


def callerIdentity(user, onBehalfOf):
    """The identity the request acts for, checking who may use ``onBehalfOf``."""
    if delegated():
        service = settings.get(PluginSettings.FEDERATION_SERVICE) or {}
        if not service or user is None or str(user['_id']) != service.get('userId'):
            raise AccessException(
                "Only this site's federation service account (made by feder8, named in the "
                "resolver.federation_service setting) may act on someone's behalf; this "
                'launch-scoped key belongs to another account.'
            )
        if user.get('admin'):
            raise AccessException(
                'The federation service account must not be an admin; give the federation '
                'a non-admin account (feder8 makes one).'
            )
        if onBehalfOf is None:
            raise errors.InvalidRequest(
                'A federation credential acts only on behalf of a person: give '
                'onBehalfOf=<site>:<user id>.'
            )
        if not validIdentity(onBehalfOf):
            raise errors.InvalidRequest('onBehalfOf must look like <site name>:<user id>.')
        home = onBehalfOf.split(':', 1)[0]
        own = settings.get(PluginSettings.SITE_NAME)
        if home == own:
            raise AccessException(
                f'The identity "{onBehalfOf}" names this site ("{own}") as its home: the '
                f'central and this site are both called "{own}". Give one of them another '
                'resolver.site_name, then run feder8 again.'
            )
        if home != service.get('central'):
            raise AccessException(
                "This site's federation credential was registered for the central "
                f'"{service.get("central")}"; it cannot act for people of "{home}".'
            )
        return onBehalfOf
    if onBehalfOf is not None:
        raise AccessException(
            "Only a site's federation credential may act on someone's behalf (onBehalfOf)."
        )
    return identityOf(user)


def loadOwn(notebookId, onBehalfOf):
    """The notebook, if the caller owns it (or is an admin); else 403/404."""
    user = getCurrentUser()
    doc = notebooks.get(notebookId)
    identity = callerIdentity(user, onBehalfOf)
    if delegated():
        allowed = doc['identity'] == identity and doc['userId'] == user['_id']
    else:
        allowed = user.get('admin') or doc['identity'] == identity
    if not allowed:
        raise AccessException('This notebook belongs to someone else.')
    return doc


def _requireObjectId(value, name):
    oid = objectId(value) if isinstance(value, str) else None
    if oid is None:
        raise errors.InvalidRequest(f'"{name}" must be an id of 24 hexadecimal characters.')
    return oid


class NotebookResource(DomainResource):
    """Routes under ``/notebook``."""

    def __init__(self):
        super().__init__()
        self.resourceName = 'notebook'
        self.route('POST', (), self.launch)
        self.route('GET', (), self.listNotebooks)
        self.route('GET', (':id',), self.getNotebook)
        self.route('GET', (':id', 'events'), self.events)
        self.route('GET', (':id', 'open'), self.openNotebook)
        self.route('DELETE', (':id',), self.stop)

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description("Launch, or return, the caller's live notebook for a folder's data.")
        .notes(
            'One live notebook per person, folder and tool: a repeat launch returns the same '
            'one. "tool" chooses the tool it runs (GET /resolver/tool lists them); without '
            'it, the tool the dataset recommends (folder metadata resolver.tool_key), else '
            "the site's default (resolver.default_tool). "
            'The launch runs in the background; follow it with GET /notebook/{id} (status '
            'launching → running, or error with a message) or GET /notebook/{id}/events. '
            "The dataset appears read-only in the notebook. Only the site's federation "
            'service account (token scope resolver.notebook.launch) may use onBehalfOf, '
            'must name the person there (an identity of the central it serves), and may '
            'launch only on the datasets the site published.'
        )
        .modelParam(
            'folderId',
            'The dataset folder.',
            model=Folder,
            level=AccessType.READ,
            paramType='query',
            destName='folder',
        )
        .param(
            'onBehalfOf',
            'Federation credential only: the identity "<site>:<user id>" launched for.',
            required=False,
        )
        .param('tool', "The id of the tool to run (one of the site's tools).", required=False)
        .errorResponse('A bad folder id or onBehalfOf, or an unknown tool.', 400)
        .errorResponse('No read access to the folder, or onBehalfOf not allowed.', 403)
        .errorResponse('The tool is not ready at this site (its environment is missing).', 409)
        .errorResponse("The folder's data is not on this server's disk.", 422)
        .errorResponse('The per-person notebook cap is reached.', 429)
    )
    def launch(self, folder, onBehalfOf, tool):
        tool = tools.checkChoice(tool)
        identity = callerIdentity(getCurrentUser(), onBehalfOf)
        if delegated() and not Dataset().isLocalDataset(folder):
            raise AccessException(
                "This site launches on the federation's behalf only on the datasets it "
                f'published (tagged folders); folder "{folder["name"]}" is not one.'
            )
        doc = notebooks.launch(folder, getCurrentUser(), identity, tool)
        return notebooks.view(doc)

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description("List notebooks: your own, or everyone's for an admin.")
        .param('folderId', 'Only notebooks of this folder.', required=False)
        .param('userId', 'Only notebooks launched by this user.', required=False)
        .param(
            'live',
            'Only live (launching, running, stopping) notebooks, or only ended ones.',
            required=False,
            dataType='boolean',
        )
        .param('onBehalfOf', 'Federation credential only: whose notebooks.', required=False)
        .pagingParams(defaultSort='created', defaultSortDir=-1)
        .errorResponse('A bad filter.', 400)
    )
    def listNotebooks(self, folderId, userId, live, onBehalfOf, limit, offset, sort):
        checkPaging(limit, offset)
        user = getCurrentUser()
        query = {}
        if delegated():
            query['identity'] = callerIdentity(user, onBehalfOf)
            query['userId'] = user['_id']
        elif not user.get('admin'):
            query['identity'] = callerIdentity(user, onBehalfOf)
        elif onBehalfOf is not None:
            callerIdentity(user, onBehalfOf)  # raises: not for people
        if folderId is not None:
            query['folderId'] = str(_requireObjectId(folderId, 'folderId'))
        if userId is not None:
            query['userId'] = _requireObjectId(userId, 'userId')
        if live is not None:
            query['live'] = bool(live)
        if limit < 0 or offset < 0:
            raise errors.InvalidRequest('"limit" and "offset" must not be negative.')
        checkSorting(sort, SORT_FIELDS)
        found = notebooks.find(query, limit=limit, offset=offset, sort=sort)
        return [notebooks.view(doc) for doc in found]

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description('Get a notebook: status, message (the current step), URL with its token.')
        .notes(
            'Only its owner or an admin. A notebook running at another site (launched '
            'through POST /resolve/launch) is refreshed from that site.'
        )
        .param('id', 'The notebook id.', paramType='path')
        .param('onBehalfOf', 'Federation credential only: whose notebook.', required=False)
        .errorResponse('Not yours.', 403)
        .errorResponse('No such notebook.', 404)
    )
    def getNotebook(self, id, onBehalfOf):
        return notebooks.view(notebooks.refresh(loadOwn(id, onBehalfOf)))

    @access.user(scope=LAUNCH_SCOPE, cookie=True)
    @autoDescribeRoute(
        Description("Follow a notebook's launch as server-sent events (text/event-stream).")
        .notes(
            'One "status" event (a JSON notebook, as GET /notebook/{id}) per change of status '
            'or message; the stream ends once the notebook is running, stopped or in error, '
            f'or after {EVENTS_TIMEOUT} s. Polling GET /notebook/{{id}} gives the same '
            'information.'
        )
        .param('id', 'The notebook id.', paramType='path')
        .param('onBehalfOf', 'Federation credential only: whose notebook.', required=False)
        .produces('text/event-stream')
        .errorResponse('Not yours.', 403)
        .errorResponse('No such notebook.', 404)
    )
    def events(self, id, onBehalfOf):
        before = changeCount()
        doc = loadOwn(id, onBehalfOf)
        local = notebooks.isLocal(doc)
        setResponseHeader('Content-Type', 'text/event-stream')
        setResponseHeader('Cache-Control', 'no-cache')
        # Proxies such as nginx would otherwise hold the events back.
        setResponseHeader('X-Accel-Buffering', 'no')
        setRawResponse()
        cherrypy.response.stream = True

        def stream():
            deadline = time.monotonic() + EVENTS_TIMEOUT
            last = None
            current = doc
            seen = before
            while True:
                view = notebooks.view(current)
                # Each view has a fresh single-use link: a new ticket is not a change.
                key = (view['status'], view['message'], (view['url'] or '').split('?')[0])
                if key != last:
                    last = key
                    payload = json.dumps(view, cls=JsonEncoder, sort_keys=True)
                    yield f'event: status\ndata: {payload}\n\n'.encode()
                if view['status'] == 'running' or view['status'] in FINAL:
                    return
                if time.monotonic() > deadline:
                    yield b'event: timeout\ndata: {}\n\n'
                    return
                if local:
                    # Woken by this process's own writes at once (its launch thread,
                    # most often); another process's, at the next read.
                    waitForChange(seen, 0.25)
                    seen = changeCount()
                else:
                    time.sleep(1.0)
                current = notebooks.refresh(notebooks.load(doc['_id']) or current)

        return stream

    @access.public(cookie=True)
    @autoDescribeRoute(
        Description('Open a running notebook in a browser: a single-use link traded for a cookie.')
        .notes(
            "A notebook's url (GET /notebook/{id}) is this route at the site's front door, with "
            'a ticket that works once and for a few minutes. It sets an HttpOnly, SameSite=Lax '
            'cookie scoped to /notebook/{id}/ that lets the browser into the notebook, and '
            'sends it there (303). The Jupyter token never appears in a URL. Without a valid '
            "ticket, the notebook's owner logged in to this Girder (its cookie) may open it too."
        )
        .param('id', 'The notebook id.', paramType='path')
        .param('ticket', "The single-use ticket from the notebook's url.", required=False)
        .errorResponse('A bad notebook id.', 400)
        .errorResponse('The link was used already or expired (and you are not its owner).', 403)
        .errorResponse('No such notebook here.', 404)
        .errorResponse('The notebook is not running.', 409)
    )
    def openNotebook(self, id, ticket):
        doc = notebooks.get(id)
        if not notebooks.isLocal(doc):
            raise errors.NotFound(f'Notebook {id} runs at site "{doc["site"]}", not here.')
        user = getCurrentUser()
        owner = user is not None and doc['identity'] == identityOf(user)
        if doc.get('status') != 'running':
            # Said only to its owner, or to whoever holds a link that was made for it.
            if owner or (ticket and notebooks.ticketIsGenuine(doc, ticket)):
                raise errors.Conflict(
                    f'This notebook is not running (it is {doc.get("status")}). Launch it again '
                    "from the dataset's page (its Launch button) or with POST /notebook?folderId="
                    f'{doc["folderId"]}.'
                )
        elif owner or (ticket and notebooks.redeemTicket(doc, ticket)):
            return self._openCookie(doc)
        raise RestException(
            'This link to the notebook was used already or has expired. Get a fresh one: '
            'GET /notebook/{id} (its url), or the Open button.',
            code=403,
        )

    @staticmethod
    def _openCookie(doc):
        """Set the notebook's cookie and send the browser to it (303)."""
        target = notebooks.frontDoorUrl(doc)
        cookie = cherrypy.response.cookie
        cookie[COOKIE_NAME] = doc['token']
        cookie[COOKIE_NAME]['path'] = urllib.parse.urlsplit(target).path
        cookie[COOKIE_NAME]['httponly'] = True
        cookie[COOKIE_NAME]['samesite'] = 'Lax'
        if target.startswith('https://'):
            cookie[COOKIE_NAME]['secure'] = True
        setResponseHeader('Cache-Control', 'no-store')
        setResponseHeader('Referrer-Policy', 'no-referrer')
        raise cherrypy.HTTPRedirect(target, 303)

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description('Stop a notebook and release everything it held.')
        .notes(
            'Only its owner or an admin. Its process or container is stopped and removed and '
            'its port freed; a notebook at another site is stopped there.'
        )
        .param('id', 'The notebook id.', paramType='path')
        .param('onBehalfOf', 'Federation credential only: whose notebook.', required=False)
        .errorResponse('Not yours.', 403)
        .errorResponse('No such notebook.', 404)
        .errorResponse("The notebook's site could not stop it.", 502)
    )
    def stop(self, id, onBehalfOf):
        return notebooks.view(notebooks.stop(loadOwn(id, onBehalfOf)))
