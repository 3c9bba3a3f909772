"""``/run``: batch runs next to a dataset, their logs and their results.

A run executes a command (or a script from the person's Girder files) next to a
dataset folder, in the same sandbox as a notebook; what it leaves in
``$RESULTS_DIR`` is uploaded into the person's ``Private/Data DNS runs`` folder
(``resultsFolderId``). Only a run's owner (or an admin) sees it. As for
notebooks, this site's federation service account may act for a person of its
central (``onBehalfOf``), on the datasets this site published.
"""

import time

import cherrypy
from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import getCurrentUser, setRawResponse, setResponseHeader
from girder.constants import AccessType
from girder.exceptions import AccessException
from girder.models.folder import Folder

from .. import errors
from ..constants import LAUNCH_SCOPE
from ..models.dataset import Dataset
from ..models.run import FINAL, STATUSES
from ..primitives import objectId
from ..services import runs
from . import checkPaging, checkSorting
from .errors import DomainResource
from .notebook import callerIdentity, delegated

SORT_FIELDS = {'created', 'updated', 'status', 'ended'}
#: How long one log stream stays open at most (seconds); clients ask again from their offset.
LOG_STREAM_TIMEOUT = 600
#: Seconds between two reads of a running run's log while nothing new came.
LOG_POLL = 0.2


def loadOwn(runId, onBehalfOf):
    """The run, if the caller owns it (or is an admin); else 403/404."""
    user = getCurrentUser()
    doc = runs.get(runId)
    identity = callerIdentity(user, onBehalfOf)
    if delegated():
        allowed = doc['identity'] == identity and doc['userId'] == user['_id']
    else:
        allowed = user.get('admin') or doc['identity'] == identity
    if not allowed:
        raise AccessException('This run belongs to someone else.')
    return doc


class RunResource(DomainResource):
    """Routes under ``/run``."""

    def __init__(self):
        super().__init__()
        self.resourceName = 'run'
        self.route('POST', (), self.submit)
        self.route('GET', (), self.listRuns)
        self.route('GET', (':id',), self.getRun)
        self.route('GET', (':id', 'log'), self.log)
        self.route('DELETE', (':id',), self.cancel)

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description('Run a command or a script next to a dataset; its results go into Girder.')
        .notes(
            'Give "command" (run by bash) or "scriptFileId" (a file you may read, run by the '
            'interpreter its #! line or extension names: bash, sh, python3, Rscript). It runs '
            'sandboxed, without network, with the dataset read-only at $DATASET_DIR; what it '
            'leaves in $RESULTS_DIR is uploaded into your Private/Data DNS runs folder '
            '(resultsFolderId). 201 with the new run (status queued or running); 200 with an '
            'earlier succeeded run (reused: true) when the same tool version ran the same '
            'command or script content on the same, unchanged dataset, unless fresh=true.'
        )
        .modelParam(
            'folderId',
            'The dataset folder.',
            model=Folder,
            level=AccessType.READ,
            paramType='query',
            destName='folder',
        )
        .param('command', 'The command (bash).', required=False)
        .param('scriptFileId', 'A file holding the script to run.', required=False)
        .param(
            'script',
            "The script's text instead of a file (a central sends a script from its files so).",
            required=False,
        )
        .param(
            'scriptName',
            'With script: its file name (its extension may name the interpreter).',
            required=False,
        )
        .param('tool', 'The tool (its id) whose environment or image runs it.', required=False)
        .param(
            'fresh',
            'Run again even if an identical run succeeded before.',
            required=False,
            dataType='boolean',
            default=False,
        )
        .param(
            'onBehalfOf',
            'Federation credential only: the identity "<site>:<user id>" run for.',
            required=False,
        )
        .errorResponse('Bad input: neither or both of command and scriptFileId, a bad id.', 400)
        .errorResponse('No read access to the folder or the script.', 403)
        .errorResponse('No such script file.', 404)
        .errorResponse("The folder's data is not on this server's disk.", 422)
        .errorResponse('The per-person cap of active runs is reached.', 429)
        .errorResponse('The tool is not ready at this site.', 409)
    )
    def submit(self, folder, command, scriptFileId, script, scriptName, tool, fresh, onBehalfOf):
        user = getCurrentUser()
        identity = callerIdentity(user, onBehalfOf)
        if delegated() and not Dataset().isLocalDataset(folder):
            raise AccessException(
                "This site runs on the federation's behalf only on the datasets it published "
                f'(tagged folders); folder "{folder["name"]}" is not one.'
            )
        doc, reused = runs.submit(
            folder,
            user,
            identity,
            command=command,
            scriptFileId=scriptFileId,
            toolId=tool,
            fresh=bool(fresh),
            script=script,
            scriptName=scriptName,
        )
        cherrypy.response.status = 200 if reused else 201
        return runs.view(doc, reused=reused)

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description("List runs: your own, or everyone's for an admin.")
        .param('folderId', 'Only runs on this folder.', required=False)
        .param(
            'status',
            'Only runs of this status (queued, running, succeeded, failed, cancelled).',
            required=False,
        )
        .param('onBehalfOf', 'Federation credential only: whose runs.', required=False)
        .pagingParams(defaultSort='created', defaultSortDir=-1)
        .errorResponse('A bad filter, paging or sort value.', 400)
    )
    def listRuns(self, folderId, status, onBehalfOf, limit, offset, sort):
        checkPaging(limit, offset)
        checkSorting(sort, SORT_FIELDS)
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
            oid = objectId(folderId)
            if oid is None:
                raise errors.InvalidRequest('"folderId" must be 24 hexadecimal characters.')
            query['folderId'] = oid
        if status is not None:
            if status not in STATUSES:
                raise errors.InvalidRequest(f'"status" is one of {", ".join(STATUSES)}.')
            query['status'] = status
        found = runs.find(query, limit=limit, offset=offset, sort=sort)
        # A central's records of runs at other sites follow them while they are active.
        return [runs.view(runs.refreshListed(doc)) for doc in found]

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description('Get a run: status, exitCode, reason, logTail, resultsFolderId, times.')
        .param('id', 'The run id.', paramType='path')
        .param('onBehalfOf', 'Federation credential only: whose run.', required=False)
        .errorResponse('A bad id.', 400)
        .errorResponse('Not yours.', 403)
        .errorResponse('No such run.', 404)
    )
    def getRun(self, id, onBehalfOf):
        return runs.view(runs.refresh(loadOwn(id, onBehalfOf)))

    @access.user(scope=LAUNCH_SCOPE, cookie=True)
    @autoDescribeRoute(
        Description("A run's log (stdout and stderr), streamed as text/plain while it runs.")
        .notes(
            'From byte "offset" on. While the run is queued or running the answer is chunked '
            'and grows as the run writes; it ends when the run has ended (or after '
            f'{LOG_STREAM_TIMEOUT} s: ask again from the offset reached).'
        )
        .param('id', 'The run id.', paramType='path')
        .param('offset', 'Byte offset to start from.', required=False, dataType='integer')
        .param(
            'follow',
            'Keep the answer open while the run runs (default); false: what is there now.',
            required=False,
            dataType='boolean',
            default=True,
        )
        .param('onBehalfOf', 'Federation credential only: whose run.', required=False)
        .produces('text/plain')
        .errorResponse('A bad id or offset.', 400)
        .errorResponse('Not yours.', 403)
        .errorResponse('No such run.', 404)
    )
    def log(self, id, offset, follow, onBehalfOf):
        offset = 0 if offset is None else offset
        if offset < 0:
            raise errors.InvalidRequest('"offset" must be 0 or more.')
        doc = loadOwn(id, onBehalfOf)
        remote = runs.remoteLog(doc, offset, follow) if runs.isRemote(doc) else None
        setResponseHeader('Content-Type', 'text/plain; charset=utf-8')
        setResponseHeader('Cache-Control', 'no-cache')
        setResponseHeader('X-Accel-Buffering', 'no')
        setRawResponse()
        cherrypy.response.stream = True

        if remote is not None:
            # A run at another site: its log as the site streams it.
            return lambda: remote

        def stream():
            position = offset
            current = doc
            deadline = time.monotonic() + LOG_STREAM_TIMEOUT
            while True:
                chunk = runs.readLog(current, position)
                if chunk:
                    position += len(chunk)
                    yield chunk
                    continue
                if current['status'] in FINAL or not follow:
                    return
                if time.monotonic() > deadline:
                    return
                time.sleep(LOG_POLL)
                current = runs.refresh(runs.get(doc['_id']))

        return stream

    @access.user(scope=LAUNCH_SCOPE)
    @autoDescribeRoute(
        Description('Cancel a run; what it left in $RESULTS_DIR so far is still uploaded.')
        .notes('Only its owner or an admin. A run that has ended is answered as it is.')
        .param('id', 'The run id.', paramType='path')
        .param('onBehalfOf', 'Federation credential only: whose run.', required=False)
        .errorResponse('Not yours.', 403)
        .errorResponse('No such run.', 404)
    )
    def cancel(self, id, onBehalfOf):
        return runs.view(runs.cancel(loadOwn(id, onBehalfOf)))
