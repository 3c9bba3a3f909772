"""The culler: stops idle and old notebooks, and clears what crashes left behind.

Runs as a daemon thread in every Girder process (started by the plugin's
``load()``, ended when the server stops), one round every
``resolver.cull_interval`` seconds. Several processes may cull at once: each
notebook is claimed atomically (``running → stopping``) before it is stopped,
so exactly one of them stops it.

Activity comes from the notebook server itself (``/api/status`` →
``last_activity``, through the launcher), as JupyterHub's culler does.

:func:`recover` runs once at start-up: notebooks whose process or container
has gone are marked stopped, live ones are adopted (and culled as usual),
launches that a crash interrupted are ended, and containers or processes
labelled as this installation's with no notebook record are stopped; the
warm pool's unclaimed servers are settled by ``refill.recover()`` and are not
orphans.
"""

import datetime
import logging
import threading

from . import metrics, settings
from .errors import InvalidTransition
from .launcher import BACKENDS, LaunchError
from .models.notebook import Notebook
from .primitives import aware as _aware
from .primitives import processGone
from .services.notebooks import local, pool, refill
from .services.notebooks import remote as remoteNotebooks
from .services.notebooks.local import INSTANCE_LABEL, LAUNCH_GRACE, instanceId, launcher
from .services.notebooks.local import launcherOf as _launcherOf
from .settings import PluginSettings

logger = logging.getLogger(__name__)

#: Seconds after which a launch that has not even started its server counts as lost at start-up.
STARTUP_GRACE = 30

_thread = None
_threadLock = threading.Lock()
_stop = threading.Event()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _alive(doc):
    """Whether the notebook's process or container runs; None if the backend cannot tell."""
    handle = doc.get('handle')
    if not handle:
        return False
    try:
        return _launcherOf(doc).is_alive(handle)
    except LaunchError:
        return None


def _localLive(statuses):
    return Notebook().find(
        {'site': settings.get(PluginSettings.SITE_NAME), 'status': {'$in': list(statuses)}}
    )


def _endGone(doc, message):
    """A notebook whose server vanished: claim it, clear its leftovers, mark it stopped."""
    model = Notebook()
    claimed = model.claimForStop(doc, ('running', 'launching', 'stopping'), message)
    if claimed is None:
        return False
    if claimed.get('handle'):
        local.release(claimed, message)
    else:
        model.finishStopping(claimed, message)
    return True


def _settleDangling(doc, grace, now):
    """End a launch or stop that no thread is finishing any more (its process crashed)."""
    updated = _aware(doc.get('updated')) or now
    # Within its grace, a launch or stop may still be under way in another process,
    # unless that process is known to be dead (a crash or kill on this machine).
    if (now - updated).total_seconds() < grace and not processGone(doc.get('worker')):
        return None
    model = Notebook()
    if doc['status'] == 'stopping':
        claimed = model.collection.find_one({'_id': doc['_id'], 'status': 'stopping'})
        if claimed is None:
            return None
        if claimed.get('handle'):
            local.release(claimed, 'Stopped')
        else:
            model.finishStopping(claimed, 'Stopped')
        return 'stopped'
    # A launch: adopt it if its server answers, else end it with an error.
    alive = _alive(doc)
    if alive is None:
        return None
    backend = _launcherOf(doc)
    if alive:
        try:
            backend.wait_ready(doc['handle'], timeout=2, token=doc.get('token'))
            url = local.publish(doc, backend, doc['handle'])
            model.transition(
                doc,
                'running',
                fromStatus=('launching',),
                url=url,
                message='Running',
                lastActivity=now,
            )
            return 'adopted'
        except InvalidTransition:
            return None
        except LaunchError:
            pass
    claimed = model.claimForStop(doc, ('launching',), 'The launch was interrupted')
    if claimed is None:
        return None
    if claimed.get('handle'):
        try:
            backend.stop(claimed['handle'])
        except LaunchError:
            return None
    try:
        model.transition(
            claimed,
            'error',
            fromStatus=('stopping',),
            url=None,
            message='The launch was interrupted (the server restarted or crashed); launch again.',
            unset=('token',),
        )
    except InvalidTransition:
        pass
    return 'error'


def cullOnce(now=None):
    """One round of culling; returns ``{notebook id: what happened}``.

    ``now`` (an aware datetime) lets tests stand in the future.
    """
    now = now or _now()
    idle = settings.get(PluginSettings.IDLE_TIMEOUT)
    maxAge = settings.get(PluginSettings.MAX_AGE)
    model = Notebook()
    report = {}
    for doc in _localLive(['running']):
        alive = _alive(doc)
        if alive is None:
            continue  # the container engine is unreachable: judge nothing
        if not alive:
            if _endGone(doc, 'The notebook server had stopped (its process or container is gone).'):
                report[str(doc['_id'])] = 'vanished'
                metrics.CULLS.labels(reason='vanished').inc()
            continue
        activity = _launcherOf(doc).last_activity(doc['handle'], doc.get('token'))
        times = (_aware(activity), _aware(doc.get('lastActivity')), _aware(doc['created']))
        last = max(t for t in times if t)
        if activity is not None:
            try:
                model.transition(doc, 'running', fromStatus=('running',), lastActivity=last)
            except InvalidTransition:
                pass  # stopped meanwhile: the claim below misses too
        reason = None
        if (now - last).total_seconds() > idle:
            reason = f'Stopped after {idle} s without activity.'
        elif maxAge and (now - _aware(doc['created'])).total_seconds() > maxAge:
            reason = f'Stopped at the maximum age of {maxAge} s.'
        if reason is None:
            continue
        claimed = model.claimForStop(doc, ('running',), 'Stopping: ' + reason)
        if claimed is not None:
            local.release(claimed, reason)
            report[str(doc['_id'])] = 'culled'
            metrics.CULLS.labels(reason='idle' if 'activity' in reason else 'max_age').inc()
    for doc in _localLive(['launching', 'stopping']):
        outcome = _settleDangling(doc, LAUNCH_GRACE, now)
        if outcome:
            report[str(doc['_id'])] = outcome
    # At a central: notebooks run at other sites are culled there; keep their records current.
    remote = {'site': {'$ne': settings.get(PluginSettings.SITE_NAME)}, 'live': True}
    for doc in model.find(remote):
        if remoteNotebooks.refresh(doc)['status'] in ('stopped', 'error'):
            report[str(doc['_id'])] = 'ended at its site'
    return report


def recover(now=None):
    """Start-up: adopt live notebooks, end dead and interrupted ones, stop orphans.

    Returns ``{notebook id: what happened}`` (orphans under their notebook id).
    """
    now = now or _now()
    model = Notebook()
    # Unclaimed warm servers first: the orphan check below must know which are pooled.
    report = refill.recover(STARTUP_GRACE, now)
    for doc in _localLive(['running']):
        alive = _alive(doc)
        if alive is None:
            continue
        if alive:
            report[str(doc['_id'])] = 'adopted'
        elif _endGone(doc, 'The notebook server had stopped while this server was down.'):
            report[str(doc['_id'])] = 'stopped'
    for doc in _localLive(['launching', 'stopping']):
        outcome = _settleDangling(doc, STARTUP_GRACE, now)
        if outcome:
            report[str(doc['_id'])] = outcome
    ours = instanceId()
    names = {settings.get(PluginSettings.BACKEND)}
    names.update(n for n in model.collection.distinct('backend') if n in BACKENDS)
    for name in names:
        backend = launcher(name)
        try:
            running = backend.list_running()
        except LaunchError as exc:
            logger.warning('Cannot list %s notebooks for clean-up: %s', name, exc)
            continue
        for handle in running:
            if (handle.get('labels') or {}).get(INSTANCE_LABEL) != ours:
                continue  # another installation's notebook: not ours to judge
            notebookId = handle['notebookId']
            record = model.collection.find_one({'_id': _oid(notebookId), 'live': True})
            if record is None and not pool.isPooled(_oid(notebookId)):
                logger.info('Stopping orphan notebook %s (no live record)', notebookId)
                try:
                    backend.stop(handle)
                    report[notebookId] = 'orphan stopped'
                except LaunchError as exc:
                    logger.warning('Could not stop orphan notebook %s: %s', notebookId, exc)
    return report


def _oid(text):
    from bson import ObjectId
    from bson.errors import InvalidId

    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return text


def _loop():
    while True:
        try:
            interval = settings.get(PluginSettings.CULL_INTERVAL)
        except Exception:  # noqa: BLE001 - the database may be briefly unreachable
            interval = 60
        if _stop.wait(interval):
            return
        try:
            report = cullOnce()
            if report:
                logger.info('Culler: %s', report)
        except Exception:  # noqa: BLE001 - a failed round must not end the thread
            logger.exception('Culler round failed')


def start():
    """Start the culler thread once per process (``load()`` may run more than once)."""
    global _thread
    with _threadLock:
        _stop.clear()
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name='datadns-culler', daemon=True)
            _thread.start()
    return _thread


def stop(timeout=30):
    """End the culler thread, after the round it may be in (the server stops: CherryPy's
    ``stop``). A thread that outlived its server would cull against a database that is gone,
    or belongs to someone else by then (tests give each server its own)."""
    with _threadLock:
        _stop.set()
        thread = _thread
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
        if thread.is_alive():
            logger.warning('Culler: a round is still running %ss after the server stopped', timeout)
