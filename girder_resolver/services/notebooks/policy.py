"""The culler: which notebooks to stop for idleness or age, and its thread.

Policy only, as jupyterhub-idle-culler is: a round (:func:`cullOnce`) reads this
site's running notebooks and their activity, decides which to stop, and asks the
lifecycle's entry point (:func:`girder_resolver.services.notebooks.stop`) to stop
them. It changes no status itself (it records the activity of running notebooks,
which stay running); the entry point claims each notebook atomically
(``running → stopping``), so when several Girder processes cull at once exactly one
stops it.

Activity comes from the notebook server itself (``/api/status`` → ``last_activity``,
through the launcher), as JupyterHub's culler does. A round also stops notebooks
whose server vanished, settles launches and stops that lost their thread
(:func:`recovery.settleAll <girder_resolver.services.notebooks.recovery.settleAll>`,
after ``LAUNCH_GRACE``) and, at a central, refreshes the records of notebooks run at
other sites (culled there).

The rounds run in a daemon thread of every Girder process (``datadns-culler``),
every ``resolver.cull_interval`` seconds; ``load()`` starts it with :func:`start`
and the server's ``stop`` ends it with :func:`stop`.
"""

import logging
import threading

from ... import metrics, settings
from ...errors import InvalidTransition
from ...models.notebook import Notebook
from ...primitives import aware
from ...primitives import now as clock
from ...settings import PluginSettings
from .. import notebooks
from . import local, recovery

logger = logging.getLogger(__name__)

VANISHED = 'The notebook server had stopped (its process or container is gone).'

_thread = None
_threadLock = threading.Lock()
_stop = threading.Event()


def _lastActivity(doc):
    """When the notebook was last used: its server's word, else what the record says."""
    activity = local.launcherOf(doc).last_activity(doc['handle'], doc.get('token'))
    times = (aware(activity), aware(doc.get('lastActivity')), aware(doc['created']))
    last = max(t for t in times if t)
    if activity is not None:
        try:
            Notebook().transition(doc, 'running', fromStatus=('running',), lastActivity=last)
        except InvalidTransition:
            pass  # stopped meanwhile: the stop below finds nothing to do
    return last


def _reason(doc, last, now, idle, maxAge):
    """Why ``doc`` should stop now: ``(in words, metric label)``, or ``(None, None)``."""
    if (now - last).total_seconds() > idle:
        return f'Stopped after {idle} s without activity.', 'idle'
    if maxAge and (now - aware(doc['created'])).total_seconds() > maxAge:
        return f'Stopped at the maximum age of {maxAge} s.', 'max_age'
    return None, None


def cullOnce(now=None):
    """One round of culling; returns ``{notebook id: what happened}``.

    ``now`` (an aware datetime) lets tests stand in the future.
    """
    now = now or clock()
    idle = settings.get(PluginSettings.IDLE_TIMEOUT)
    maxAge = settings.get(PluginSettings.MAX_AGE)
    report = {}
    for doc in recovery.localLive(['running']):
        alive = recovery.serverAlive(doc)
        if alive is None:
            continue  # the container engine is unreachable: judge nothing
        if not alive:
            if recovery.stopRunning(doc, VANISHED):
                report[str(doc['_id'])] = 'vanished'
                metrics.CULLS.labels(reason='vanished').inc()
            continue
        reason, kind = _reason(doc, _lastActivity(doc), now, idle, maxAge)
        if reason and recovery.stopRunning(doc, reason):
            report[str(doc['_id'])] = 'culled'
            metrics.CULLS.labels(reason=kind).inc()
    report.update(recovery.settleAll(local.LAUNCH_GRACE, now))
    # At a central: notebooks run at other sites are culled there; keep their records current.
    elsewhere = {'site': {'$ne': settings.get(PluginSettings.SITE_NAME)}, 'live': True}
    for doc in Notebook().find(elsewhere):
        if notebooks.refresh(doc)['status'] in ('stopped', 'error'):
            report[str(doc['_id'])] = 'ended at its site'
    return report


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
