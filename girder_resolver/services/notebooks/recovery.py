"""Start-up recovery and adoption: putting notebook records and their servers back in step.

A notebook server outlives the Girder process that launched it (a process or a
container runs on), and a launch or a stop under way dies with its process. This
module owns settling what that leaves behind:

- :func:`recover`, once at start-up (``load()``): the warm pool's unclaimed servers
  first (``refill.recover``), then running notebooks whose server survived are adopted
  (and culled as usual later) and those whose server died are stopped; interrupted
  launches and stops are settled; servers labelled as this installation's with no live
  record (orphans) are stopped. Servers of another installation are never touched.
- :func:`settleDangling`, a launch or stop that no thread finishes any more: a launch
  whose server answers is adopted as running, any other ends in ``error``; a stop is
  completed. The culler's rounds call :func:`settleAll` too, after ``LAUNCH_GRACE``.

Every status written here goes through ``Notebook().transition``; a notebook whose
server vanished is stopped through the lifecycle's entry point, as any stop is.
"""

import logging

from ... import settings
from ...errors import InvalidTransition
from ...launcher import BACKENDS, LaunchError
from ...models.notebook import Notebook
from ...primitives import aware, objectId, processGone, processStamp
from ...primitives import now as clock
from ...settings import PluginSettings
from .. import notebooks
from . import local, pool, refill

logger = logging.getLogger(__name__)

#: Seconds after which a launch that has not even started its server counts as lost at start-up.
STARTUP_GRACE = 30
INTERRUPTED = 'The launch was interrupted (the server restarted or crashed); launch again.'
DIED_WHILE_DOWN = 'The notebook server had stopped while this server was down.'


def localLive(statuses):
    """This site's notebooks in one of ``statuses``."""
    return Notebook().find(
        {'site': settings.get(PluginSettings.SITE_NAME), 'status': {'$in': list(statuses)}}
    )


def serverAlive(doc):
    """Whether the notebook's process or container runs; None if the backend cannot tell."""
    handle = doc.get('handle')
    if not handle:
        return False
    try:
        return local.launcherOf(doc).is_alive(handle)
    except LaunchError:
        return None


def stopRunning(doc, reason):
    """Ask the lifecycle's entry point to stop a notebook seen running; True if this call
    stopped it (False: another stop, a person's or another process's, got there first)."""
    try:
        notebooks.stop(doc, reason, fromStatus=('running',))
    except InvalidTransition:
        return False
    return True


def _finishStop(doc):
    """Complete a stop that its process left half-done (claimed, server maybe running)."""
    if doc.get('handle'):
        local.release(doc, 'Stopped')
    else:
        Notebook().finishStopping(doc, 'Stopped')
    return 'stopped'


def _adopt(doc, backend, now):
    """A launch whose server answers: route it and mark it running; None if it moved on."""
    try:
        backend.wait_ready(doc['handle'], timeout=2, token=doc.get('token'))
        url = local.publish(doc, backend, doc['handle'])
    except LaunchError:
        return False
    try:
        Notebook().transition(
            doc, 'running', fromStatus=('launching',), url=url, message='Running', lastActivity=now
        )
    except InvalidTransition:
        return None
    return 'adopted'


def _endInterrupted(doc, backend):
    """A launch nobody finishes and whose server does not answer: stop it, end in error."""
    model = Notebook()
    try:
        claimed = model.transition(
            dict(doc),
            'stopping',
            fromStatus=('launching',),
            message='The launch was interrupted',
            worker=processStamp(),
        )
    except InvalidTransition:
        return None
    if claimed.get('handle'):
        try:
            backend.stop(claimed['handle'])
        except LaunchError:
            return None  # the engine is down: the next round retries the stop
    try:
        model.transition(
            claimed,
            'error',
            fromStatus=('stopping',),
            url=None,
            message=INTERRUPTED,
            unset=('token',),
        )
    except InvalidTransition:
        return None
    return 'error'


def settleDangling(doc, grace, now):
    """End a launch or stop that no thread is finishing any more (its process crashed).

    Returns what happened (``'stopped'``, ``'adopted'``, ``'error'``) or None when
    nothing was settled: still within ``grace`` seconds and its process may be alive, the
    engine cannot tell, or another process settled it first.
    """
    updated = aware(doc.get('updated')) or now
    # Within its grace, a launch or stop may still be under way in another process,
    # unless that process is known to be dead (a crash or kill on this machine).
    if (now - updated).total_seconds() < grace and not processGone(doc.get('worker')):
        return None
    if doc['status'] == 'stopping':
        if Notebook().findOne({'_id': doc['_id'], 'status': 'stopping'}) is None:
            return None  # finished meanwhile
        return _finishStop(doc)
    alive = serverAlive(doc)
    if alive is None:
        return None
    backend = local.launcherOf(doc)
    if alive:
        adopted = _adopt(doc, backend, now)
        if adopted is not False:
            return adopted
    return _endInterrupted(doc, backend)


def settleAll(grace, now):
    """:func:`settleDangling` for every launch and stop of this site: ``{id: outcome}``."""
    report = {}
    for doc in localLive(['launching', 'stopping']):
        outcome = settleDangling(doc, grace, now)
        if outcome:
            report[str(doc['_id'])] = outcome
    return report


def _stopOrphans(report):
    """Stop servers labelled as this installation's that have no live record (nor a pool one)."""
    ours = local.instanceId()
    names = {settings.get(PluginSettings.BACKEND)}
    names.update(n for n in Notebook().collection.distinct('backend') if n in BACKENDS)
    for name in sorted(names):
        backend = local.launcher(name)
        try:
            running = backend.list_running()
        except LaunchError as exc:
            logger.warning('Cannot list %s notebooks for clean-up: %s', name, exc)
            continue
        for handle in running:
            if (handle.get('labels') or {}).get(local.INSTANCE_LABEL) != ours:
                continue  # another installation's notebook: not ours to judge
            notebookId = handle['notebookId']
            oid = objectId(notebookId) or notebookId
            if Notebook().findOne({'_id': oid, 'live': True}) or pool.isPooled(oid):
                continue
            logger.info('Stopping orphan notebook %s (no live record)', notebookId)
            try:
                backend.stop(handle)
                report[notebookId] = 'orphan stopped'
            except LaunchError as exc:
                logger.warning('Could not stop orphan notebook %s: %s', notebookId, exc)


def recover(now=None):
    """Start-up: adopt live notebooks, end dead and interrupted ones, stop orphans.

    Returns ``{notebook id: what happened}`` (orphans under their notebook id).
    """
    now = now or clock()
    # Unclaimed warm servers first: the orphan check below must know which are pooled.
    report = refill.recover(STARTUP_GRACE, now)
    for doc in localLive(['running']):
        alive = serverAlive(doc)
        if alive is None:
            continue
        if alive:
            report[str(doc['_id'])] = 'adopted'
        elif stopRunning(doc, DIED_WHILE_DOWN):
            report[str(doc['_id'])] = 'stopped'
    report.update(settleAll(STARTUP_GRACE, now))
    _stopOrphans(report)
    return report
