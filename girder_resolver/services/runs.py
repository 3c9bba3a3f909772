"""Batch runs: submit one command next to a dataset, follow it, keep its results in Girder.

A run executes through the configured launcher backend (``resolver.backend``), in
the same sandbox as a notebook: the dataset read-only at ``$DATASET_DIR``, a
writable ``$RESULTS_DIR`` (a directory under ``resolver.run_dir`` on this machine).
:func:`submit` records it (``models/run.py``) and starts it; the follower thread
(:func:`start`, every :data:`FOLLOW_INTERVAL` seconds in each Girder process)
asks the backend how each active run of this site is doing, and once it has
ended :func:`finish` uploads everything left in its results directory into the
owner's Girder space (``Private/Data DNS runs/<run name>``), keeps its log and
marks it ``succeeded``, ``failed`` (with the reason) or ``cancelled``. Runs are
followed by their stored handle, so a restarted Girder picks them up again; a
finish cut short by a crash is taken over once its process is known to be gone.

**Reuse.** A run is identified by its *key*: the tool and its version (the
backend's :meth:`~girder_resolver.launcher.Launcher.tool_identity`), the content
of the command or script, the dataset folder and a stamp of its content (the
folder's ``updated`` time and the count, size and newest change of its files on
disk). A submission whose key matches an earlier succeeded run of the same
person, whose results folder still exists, returns that run (``reused: true``)
without running anything, unless ``fresh`` is asked.
"""

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import threading

from girder.constants import AccessType
from girder.models.file import File
from girder.models.folder import Folder
from girder.models.item import Item
from girder.models.upload import Upload
from girder.models.user import User

from .. import settings
from ..errors import (
    Conflict,
    InvalidRequest,
    InvalidTransition,
    LimitReached,
    NotFound,
    Unavailable,
)
from ..launcher import LaunchError, RunSpec
from ..models.run import ACTIVE, FINAL, Run
from ..models.site import Site
from ..primitives import aware, now, objectId, processGone
from ..settings import PluginSettings
from . import runs_remote
from .notebooks import local
from .notebooks import tools as toolChoice

logger = logging.getLogger(__name__)

#: Seconds between two rounds of the follower.
FOLLOW_INTERVAL = 1.0
#: A run still queued without a handle this long after it was made lost its start (a crash).
START_GRACE = 300
#: The largest command or script (bytes): it is passed to the interpreter as an argument.
MAX_SCRIPT = 100_000
#: Most bytes of a log shown as ``logTail``.
LOG_TAIL = 4000
RESULTS_PARENT = 'Data DNS runs'
#: Most files and folders of a run's results that are uploaded; a run that left more fails.
MAX_RESULT_ENTRIES = 10_000
#: Interpreters a script may name (by its #! line or its file name's extension).
INTERPRETERS = {
    'bash': ['bash', '-c'],
    'sh': ['sh', '-c'],
    'python': ['python3', '-c'],
    'python3': ['python3', '-c'],
    'Rscript': ['Rscript', '-e'],
}
EXTENSIONS = {'.sh': 'bash', '.bash': 'bash', '.py': 'python3', '.r': 'Rscript'}
_SHEBANG = re.compile(r'^#!\s*(\S+)(?:\s+(\S+))?')

_thread = None
_threadLock = threading.Lock()
_stop = threading.Event()


# -- where runs keep their files ---------------------------------------------------


def runRoot():
    """The directory holding each run's results directory and log on this machine."""
    return settings.get(PluginSettings.RUN_DIR) or os.path.join(
        tempfile.gettempdir(), 'datadns-runs'
    )


def runDir(doc):
    return os.path.join(runRoot(), str(doc['_id']))


# -- what a submission names ---------------------------------------------------------


def scriptArgv(content, name):
    """The argument list that runs a script's text: its #! line, else its extension, else bash."""
    interpreter = None
    match = _SHEBANG.match(content)
    if match:
        program = os.path.basename(match.group(1))
        if program == 'env' and match.group(2):
            program = os.path.basename(match.group(2))
        interpreter = program
    else:
        interpreter = EXTENSIONS.get(os.path.splitext(name)[1].lower(), 'bash')
    if interpreter not in INTERPRETERS:
        raise InvalidRequest(
            f'The script names the interpreter {interpreter!r}; runs know '
            f"{', '.join(sorted(INTERPRETERS))} (by a #! line or the file name's extension)."
        )
    argv = INTERPRETERS[interpreter] + [content]
    if interpreter in ('bash', 'sh'):
        argv.append(name)  # its $0
    return argv


def readScript(fileId, user):
    """(content, file document) of a Girder file the person may read; 4xx otherwise."""
    oid = objectId(fileId)
    if oid is None:
        raise InvalidRequest('"scriptFileId" must be an id of 24 hexadecimal characters.')
    script = File().load(oid, user=user, level=AccessType.READ, exc=False)
    if script is None:
        raise NotFound(f'No file {fileId}.')
    if (script.get('size') or 0) > MAX_SCRIPT:
        raise InvalidRequest(f'A script may be at most {MAX_SCRIPT} bytes.')
    if script.get('linkUrl'):
        raise InvalidRequest('A script must be a file held by Girder, not a link.')
    data = b''.join(File().download(script, headers=False)())
    try:
        return data.decode('utf-8'), script
    except UnicodeDecodeError:
        raise InvalidRequest('A script must be text (UTF-8).') from None


def datasetStamp(folder, path):
    """What changes when the dataset's content does: the folder's update time and the
    count, size and newest change of the files below its directory on disk."""
    count = size = newest = 0
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                info = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            count += 1
            size += info.st_size if stat.S_ISREG(info.st_mode) else 0
            newest = max(newest, info.st_mtime_ns)
    return f'{aware(folder.get("updated"))}/{count}/{size}/{newest}'


def runKey(toolIdentity, content, folder, stamp):
    """The identity of a run for reuse (a hex digest)."""
    digest = hashlib.sha256(content.encode()).hexdigest()
    parts = [toolIdentity, digest, str(folder['_id']), stamp]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


# -- the entry points that rest/ calls ----------------------------------------------


def get(runId):
    """The run with this id; :class:`InvalidRequest` or :class:`NotFound` if none."""
    oid = objectId(runId)
    if oid is None:
        raise InvalidRequest('A run id is 24 hexadecimal characters.')
    doc = Run().load(oid)
    if doc is None:
        raise NotFound(f'No run {runId}.')
    return doc


def find(query, limit=0, offset=0, sort=None):
    """The runs that match ``query`` (a Mongo query the caller has vetted)."""
    return Run().find(query, limit=limit, offset=offset, sort=sort)


def submit(
    folder,
    user,
    identity,
    command=None,
    scriptFileId=None,
    toolId=None,
    fresh=False,
    script=None,
    scriptName=None,
):
    """Run ``command`` (or the script file) next to dataset ``folder``; ``(doc, reused)``.

    The tool is chosen as for a notebook (``toolId``, else the one the dataset
    recommends, else the site's default). Returns an earlier succeeded run of the
    same key (see the module's docstring) unless ``fresh``. Raises
    :class:`InvalidRequest`, :class:`NotFound`, :class:`NotADataset`,
    :class:`LimitReached` (the person's cap of active runs) or :class:`Conflict`
    (the tool is not ready here).
    """
    if sum(value is not None for value in (command, scriptFileId, script)) != 1:
        raise InvalidRequest('Give one of "command", "scriptFileId" or "script" (its text).')
    if command is not None:
        if not isinstance(command, str) or not command.strip():
            raise InvalidRequest('"command" must be a non-empty string.')
        if len(command.encode()) > MAX_SCRIPT or '\0' in command:
            raise InvalidRequest(f'A command is at most {MAX_SCRIPT} bytes of text.')
        content, argv, script = command, ['bash', '-c', command], None
    elif script is not None:
        # A script's text, as a central sends one from its own files.
        if not isinstance(script, str) or not script.strip():
            raise InvalidRequest('"script" must be a non-empty text.')
        if len(script.encode()) > MAX_SCRIPT or '\0' in script:
            raise InvalidRequest(f'A script is at most {MAX_SCRIPT} bytes of text.')
        name = scriptName if isinstance(scriptName, str) and scriptName else 'script'
        content, argv, script = script, scriptArgv(script, name), None
    else:
        content, script = readScript(scriptFileId, user)
        if '\0' in content:
            raise InvalidRequest('A script must be text without NUL characters.')
        argv = scriptArgv(content, script['name'])
    dataPath = local.datasetPath(folder)
    tool = toolChoice.choose(folder, toolId)
    launcher = local.launcher()
    try:
        toolIdentity = launcher.tool_identity(tool)
    except LaunchError as error:
        raise Conflict(f'The tool cannot run at this site now: {error}') from None
    key = runKey(toolIdentity, content, folder, datasetStamp(folder, dataPath))
    if not fresh:
        earlier = Run().findReusable(key, user['_id'], identity)
        if earlier is not None and _resultsExist(earlier):
            return earlier, True
    cap = settings.get(PluginSettings.RUN_CAP)
    if Run().countActive(user['_id'], identity) >= cap:
        raise _capReached(cap)
    created = now()
    doc = Run().save(
        {
            'name': '',
            'site': settings.get(PluginSettings.SITE_NAME),
            'folderId': folder['_id'],
            'userId': user['_id'],
            'identity': identity,
            'status': 'queued',
            'tool': tool['id'] if tool else None,
            'command': command,
            'scriptFileId': script['_id'] if script else None,
            'backend': launcher.name,
            'key': key,
            'timeLimit': int(settings.get(PluginSettings.RUN_TIME_LIMIT)),
            'created': created,
            'updated': created,
            'exitCode': None,
            'reason': None,
            'resultsFolderId': None,
            'finisher': None,
        }
    )
    if Run().countActive(user['_id'], identity, excluding=doc['_id']) >= cap:
        Run().remove(doc)  # another submission got in first
        raise _capReached(cap)
    Run().setFields(doc, name=f'{created:%Y-%m-%d %H-%M-%S} {doc["_id"]}')
    _start(doc, launcher, argv, dataPath, tool)
    return doc, False


def _capReached(cap):
    return LimitReached(
        f'You already have {cap} run(s) queued or running at this site, the most allowed '
        f'(setting resolver.run_cap = {cap}). Wait for one to end, or cancel one: '
        'DELETE /run/<id>; GET /run lists yours.'
    )


def _start(doc, launcher, argv, dataPath, tool):
    results = os.path.join(runDir(doc), 'results')
    try:
        # Private to Girder's user all the way down: logs and results wait here.
        os.makedirs(runRoot(), mode=0o700, exist_ok=True)
        os.chmod(runRoot(), 0o700)
        os.makedirs(runDir(doc), mode=0o700)
        os.mkdir(results, mode=0o700)
        spec = RunSpec(
            str(doc['_id']),
            argv,
            dataPath,
            results,
            tool=tool,
            time_limit=doc['timeLimit'],
            labels={local.INSTANCE_LABEL: local.instanceId()},
        )
        handle = launcher.start_run(spec)
    except (LaunchError, OSError) as error:
        _removeRunDir(doc)
        _end(doc, 'failed', reason=f'The run could not start: {error}')
        return
    Run().setFields(doc, handle=handle)
    follow(doc)


def view(doc, reused=False):
    """The run as its owner sees it: its fields, ``reused`` and the tail of its log."""
    if runs_remote.isRemote(doc):
        return runs_remote.view(doc)
    out = Run().serialize(doc)
    out['resultsUrl'] = resultsUrl(doc)
    out['reused'] = bool(reused)
    out['queueReason'] = doc.get('queueReason')
    tail = readLog(doc, max(0, logSize(doc) - LOG_TAIL))
    out['logTail'] = tail.decode('utf-8', 'replace') if tail else ''
    return out


def resultsUrl(doc):
    """The web page of the run's results folder at this site, or None (none yet)."""
    if not doc.get('resultsFolderId'):
        return None
    apiUrl = Site().localApiUrl().rstrip('/')
    web = apiUrl[: -len('/api/v1')] if apiUrl.endswith('/api/v1') else apiUrl
    return f'{web}/#folder/{doc["resultsFolderId"]}'


def isRemote(doc):
    """Whether the run is a central's record of a run at another site."""
    return runs_remote.isRemote(doc)


def remoteLog(doc, offset=0, follow=True):
    """The log of a run at another site (a central's record), streamed from there."""
    return runs_remote.log(doc, offset, follow)


def refreshListed(doc):
    """``doc`` as a listing shows it: a central's active record of a run at another site is
    refreshed from there, unless that site failed calls lately (a listing must not wait on
    every dead site; ``GET /run/{id}`` always asks)."""
    if runs_remote.isRemote(doc):
        return runs_remote.refresh(doc, skipSuspect=True)
    return doc


def refresh(doc):
    """``doc`` brought up to date with its backend (an active run of this site), or (a
    central's record of a run at another site) with that site."""
    if runs_remote.isRemote(doc):
        return runs_remote.refresh(doc)
    if doc['status'] in ACTIVE and doc.get('handle'):
        follow(doc)
        doc = Run().load(doc['_id']) or doc
    return doc


def cancel(doc):
    """Cancel an active run (its results so far are kept); a run that ended stays as it is."""
    if runs_remote.isRemote(doc):
        return runs_remote.cancel(doc)
    if doc['status'] in FINAL:
        return doc
    Run().setFields(doc, cancelRequested=True)
    if not doc.get('handle'):
        _end(doc, 'cancelled', reason='cancelled')
        return Run().load(doc['_id'])
    launcher = local.launcherOf(doc)
    try:
        launcher.cancel_run(doc['handle'])
    except LaunchError as error:
        raise Unavailable(f'The run could not be cancelled: {error}') from None
    follow(doc)
    return Run().load(doc['_id'])


def logSize(doc):
    """How many bytes of log the run has (so far)."""
    if doc['status'] in ACTIVE and doc.get('handle'):
        return _launcherLogSize(doc)
    try:
        return os.path.getsize(os.path.join(runDir(doc), 'run.log'))
    except OSError:
        return 0


def _launcherLogSize(doc):
    launcher = local.launcherOf(doc)
    size = 0
    while True:
        chunk = launcher.run_log(doc['handle'], size)
        if not chunk:
            return size
        size += len(chunk)


def readLog(doc, offset=0):
    """Bytes of the run's log from ``offset`` (a piece: ask again from where it ends)."""
    if doc['status'] in ACTIVE:
        if not doc.get('handle'):
            return b''
        try:
            return local.launcherOf(doc).run_log(doc['handle'], offset)
        except LaunchError:
            return b''
    try:
        with open(os.path.join(runDir(doc), 'run.log'), 'rb') as log:
            log.seek(offset)
            return log.read(1 << 20)
    except OSError:
        return b''


# -- following runs ------------------------------------------------------------------


def follow(doc):
    """Ask the backend how an active run is doing; record its start, finish it once ended."""
    if not doc.get('handle'):
        if (now() - aware(doc['created'])).total_seconds() > START_GRACE:
            _end(doc, 'failed', reason='The run did not start (Girder stopped while starting it).')
        return
    launcher = local.launcherOf(doc)
    state, code, reason = launcher.run_state(doc['handle'])
    if state == 'queued':
        if reason != doc.get('queueReason'):
            Run().setFields(doc, queueReason=reason)
    elif state == 'running':
        if doc['status'] == 'queued':
            try:
                Run().transition(doc, 'running', fromStatus=('queued',), started=now())
            except InvalidTransition:
                pass
    else:
        finish(doc, code, reason)


def finish(doc, code, reason):
    """Upload an ended run's results, keep its log, end it, and release the backend's hold.

    Done by the one process that claims it (:meth:`Run.claimFinish`); a claim whose
    process is gone is taken over.
    """
    claimed = Run().claimFinish(doc)
    if claimed is None:
        current = Run().load(doc['_id']) or {}
        stale = current.get('finisher')
        if not current.get('active') or not stale or not processGone(stale):
            return
        claimed = Run().claimFinish(current, staleWorker=stale)
        if claimed is None:
            return
    launcher = local.launcherOf(claimed)
    handle = claimed['handle']
    directory = runDir(claimed)
    _keepLog(launcher, handle, directory)
    # Cancelled when the cancel ended it, not when the command had ended by itself first.
    if reason == 'cancelled' or (claimed.get('cancelRequested') and code is None):
        status, reason = 'cancelled', 'cancelled'
    elif code == 0 and not reason:
        status = 'succeeded'
    else:
        status = 'failed'
        reason = reason or 'the run ended without an exit status'
    fields = {'exitCode': code, 'reason': reason}
    try:
        folderId, complete = uploadResults(claimed, os.path.join(directory, 'results'))
        fields['resultsFolderId'] = folderId
        if not complete:
            status = 'failed'
            fields['reason'] = (
                f'The run left more than {MAX_RESULT_ENTRIES} files and folders in RESULTS_DIR; '
                f'only the first {MAX_RESULT_ENTRIES} were uploaded.'
            )
    except Exception as error:  # the run is over either way; say why nothing was kept
        logger.exception('Could not upload the results of run %s', claimed['_id'])
        status = 'failed'
        fields['reason'] = f'The results could not be uploaded into Girder: {error}'
    _end(claimed, status, **fields)
    try:
        launcher.cleanup_run(handle)
    except LaunchError:
        logger.warning('Could not clean up run %s', claimed['_id'], exc_info=True)
    shutil.rmtree(os.path.join(directory, 'results'), ignore_errors=True)


def _end(doc, status, **fields):
    try:
        Run().transition(doc, status, ended=now(), **fields)
    except InvalidTransition:
        pass  # ended meanwhile


def _keepLog(launcher, handle, directory):
    """Copy the backend's log of the run into the run's directory, which outlives it."""
    path = os.path.join(directory, 'run.log')
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        with open(path, 'wb') as out:
            offset = 0
            while True:
                chunk = launcher.run_log(handle, offset)
                if not chunk:
                    break
                out.write(chunk)
                offset += len(chunk)
    except (OSError, LaunchError):
        logger.warning('Could not keep the log of a run in %s', directory, exc_info=True)


def _removeRunDir(doc):
    shutil.rmtree(runDir(doc), ignore_errors=True)


# -- results -------------------------------------------------------------------------


def _resultsExist(doc):
    folderId = doc.get('resultsFolderId')
    return folderId is not None and Folder().load(folderId, force=True) is not None


def uploadResults(doc, resultsPath):
    """Upload the tree ``resultsPath`` into ``Private/Data DNS runs/<run name>`` of the
    run's owner; ``(results folder id, whether all of it was uploaded)``.

    At most :data:`MAX_RESULT_ENTRIES` files and folders are taken.
    Only regular files and directories are taken, never through a symlink: the run
    wrote this tree, and a link in it could point at any file of this machine.
    """
    user = User().load(doc['userId'], force=True)
    if user is None:
        raise NotFound('The owner of this run no longer exists.')
    private = Folder().createFolder(
        user, 'Private', parentType='user', public=False, creator=user, reuseExisting=True
    )
    parent = Folder().createFolder(
        private, RESULTS_PARENT, creator=user, public=False, reuseExisting=True
    )
    target = Folder().createFolder(
        parent, doc['name'] or str(doc['_id']), creator=user, public=False, reuseExisting=True
    )
    budget = [MAX_RESULT_ENTRIES]
    _uploadTree(resultsPath, target, user, 0, budget)
    return target['_id'], budget[0] >= 0


def _uploadTree(path, folder, user, depth, budget):
    if depth > 32:
        return
    try:
        entries = sorted(os.scandir(path), key=lambda entry: entry.name)
    except OSError:
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        budget[0] -= 1
        if budget[0] < 0:
            return
        if entry.is_dir(follow_symlinks=False):
            sub = Folder().createFolder(folder, entry.name, creator=user, reuseExisting=True)
            _uploadTree(entry.path, sub, user, depth + 1, budget)
        elif entry.is_file(follow_symlinks=False):
            if Item().findOne({'folderId': folder['_id'], 'name': entry.name}) is not None:
                continue  # uploaded before a restart cut the finish short
            _uploadFile(entry.path, entry.name, folder, user)


def _uploadFile(path, name, folder, user):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return
    with os.fdopen(fd, 'rb') as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            return
        Upload().uploadFromFile(
            source, info.st_size, name, parentType='folder', parent=folder, user=user
        )


# -- the follower thread ---------------------------------------------------------------


def followOnce():
    """One round: follow every active run of this site."""
    site = settings.get(PluginSettings.SITE_NAME)
    for doc in list(Run().find({'active': True, 'site': site})):
        if _stop.is_set():
            return
        try:
            follow(doc)
        except Exception:  # one run's trouble must not stop the others being followed
            logger.exception('Could not follow run %s', doc['_id'])


def _loop():
    while not _stop.wait(FOLLOW_INTERVAL):
        try:
            followOnce()
        except Exception:
            logger.exception('Data DNS: a round of the run follower failed')


def start():
    """Start the follower thread of this process (once)."""
    global _thread
    with _threadLock:
        if _thread is not None and _thread.is_alive():
            return
        _stop.clear()
        _thread = threading.Thread(target=_loop, name='datadns-runs', daemon=True)
        _thread.start()


def stop():
    """End the follower thread (the server stops)."""
    global _thread
    _stop.set()
    with _threadLock:
        thread, _thread = _thread, None
    if thread is not None:
        thread.join(timeout=10)


__all__ = [
    'cancel',
    'find',
    'get',
    'readLog',
    'refresh',
    'submit',
    'view',
]
