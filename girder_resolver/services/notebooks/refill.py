"""Keeps the warm pool full: the refill thread, its rounds, start-up and shutdown.

With ``resolver.pool_size`` = N > 0 a daemon thread in every Girder process
(started by ``load()``, like the culler) keeps N servers running that belong to
nobody yet (see ``pool.py`` for how a launch claims one). A ready server gets its
front door route at once (see :func:`_route` for why that exposes nothing).
Unclaimed servers are stopped when the pool shrinks (their slot >= N) or the
backend changes (each by the backend that started it), when the Girder process
that started them shuts down, and when found dead or half-made by a round or by
:func:`recover` at start-up.
"""

import atexit
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pymongo

from ... import frontdoor, settings
from ...launcher import LaunchError
from ...models.notebook import Notebook
from ...models.pooled import PooledNotebook
from ...primitives import aware, hostId, now, processGone, processStamp
from ...settings import PluginSettings
from . import local, pool, tools

logger = logging.getLogger(__name__)

#: Identity label of a server that nobody has claimed yet.
POOL_IDENTITY = 'pool'
#: Seconds between two rounds when nothing (a claim, a setting) wakes the thread sooner.
INTERVAL = 5
#: A record still starting, claimed or stopping after this many seconds lost its thread.
GRACE = 180

_thread = None
_threadLock = threading.Lock()
# One round at a time per process: a test's refillOnce() and the thread take turns.
_roundLock = threading.RLock()
_stopping = threading.Event()
#: Whether this process ever started a pooled server: shutdown has nothing to stop
#: otherwise, and must not query a database that may be gone at interpreter exit.
_startedAny = False
_atexitRegistered = False


def owner():
    """This Girder process, as recorded on the servers it starts (``primitives.processStamp``)."""
    return processStamp()


def _ownerAlive(stamp):
    """Whether the Girder process that ``stamp`` names runs on this machine (a reused pid
    does not count)."""
    return isinstance(stamp, dict) and stamp.get('host') == hostId() and not processGone(stamp)


# -- filling -----------------------------------------------------------------------


def _reserve(slot, backend, tool=None):
    """Insert a ``starting`` record in ``slot``; None if another process has the slot.

    ``tool`` is the site's default tool (its entry; looked up if not given): the only
    one the pool serves.
    """
    tool = tool or tools.byId(tools.defaultId())
    at = now()
    entry = {
        'slot': slot,
        'status': 'starting',
        'backend': backend.name,
        'tool': tool['id'],
        'toolEntry': tool,
        'owner': owner(),
        # Made now, handed only to the person who claims this server.
        'token': secrets.token_urlsafe(24),
        'created': at,
        'updated': at,
    }
    try:
        PooledNotebook().collection.insert_one(PooledNotebook().validate(entry))
    except pymongo.errors.DuplicateKeyError:
        return None
    return entry


def _start(entry, backend):
    global _startedAny
    _startedAny = True
    handle = backend.start_unbound(
        str(entry['_id']),
        entry['token'],
        pool.DATA_NAME,
        labels={local.INSTANCE_LABEL: local.instanceId(), local.IDENTITY_LABEL: POOL_IDENTITY},
        tool=entry.get('toolEntry'),
    )
    entry['handle'] = handle
    result = PooledNotebook().collection.update_one(
        {'_id': entry['_id'], 'status': 'starting'},
        {'$set': {'handle': handle, 'updated': now()}},
    )
    if not result.matched_count:
        # Claimed for stopping meanwhile (shutdown, recovery): the server is ours to stop.
        backend.stop(handle)
        return False
    return True


def _route(entry, backend):
    """Give a ready server its front door route now, so that a claim need not.

    The route is ``/notebook/<pool record id>/``, the id the notebook takes when
    claimed. Before the claim it exposes nothing: the server answers only
    requests that carry its token (header, or the front door's cookie, which holds
    it), and that token is in this record alone until it is handed to the one
    person who claims the server; its dataset is the empty placeholder until then.
    Returns the proxy's generation the route was added to, or None.
    """
    try:
        frontdoor.addRoute(str(entry['_id']), backend.proxy_target(entry['handle']))
    except frontdoor.FrontDoorError as exc:
        logger.warning('Warm pool: no front door route yet for %s: %s', entry['_id'], exc)
        return None
    return frontdoor.generation()


def _waitReady(entry, backend, deadline):
    while not _stopping.is_set():
        try:
            backend.wait_ready(entry['handle'], timeout=1.0, token=entry['token'])
            return True
        except LaunchError as exc:
            if not backend.is_alive(entry['handle']) or time.monotonic() > deadline:
                logger.warning('Pooled notebook %s did not start: %s', entry['_id'], exc)
                return False
    return False


def _sweep(report, size, grace, at):
    """Stop surplus, dead and abandoned pool servers (and those of another backend or of a
    tool that is no longer the default)."""
    configured = settings.get(PluginSettings.BACKEND)
    toolId = tools.defaultId()
    for entry in list(PooledNotebook().find({})):
        age = (at - (aware(entry.get('updated')) or at)).total_seconds()
        reason = None
        if entry['status'] == 'ready':
            if entry['slot'] >= size or entry.get('backend') != configured:
                reason = 'shrunk'
            elif entry.get('tool') != toolId:
                reason = 'another tool'
            elif not local.launcherOf(entry).is_alive(entry['handle']):
                reason = 'died'
        elif age > grace:
            if entry['status'] == 'claimed' and Notebook().findOne(
                {'_id': entry['_id'], 'live': True}
            ):
                # The launch made its notebook but died before forgetting this record.
                pool.settle(entry)
                report[str(entry['_id'])] = 'claimed'
                continue
            reason = 'abandoned'
        if reason and pool.claimForStop(entry, reason):
            report[str(entry['_id'])] = reason


def refillOnce(at=None):
    """One round: stop surplus, dead and abandoned servers, then start the missing ones.

    Waits until the servers it started answer, so that on return they are
    ``ready`` (or stopped again). Returns ``{pool record id: what happened}``.
    """
    report = {}
    with _roundLock:
        size = pool.targetSize()
        _sweep(report, size, GRACE, at or now())
        if _stopping.is_set() or not size:
            return report
        backend = local.launcher()
        tool = tools.byId(tools.defaultId())
        if tool is None or not tools.readiness(tool, backend)[0]:
            return report  # the default tool cannot run here: launches say why
        taken = set(PooledNotebook().collection.distinct('slot'))
        started = []
        for slot in range(size):
            if slot in taken:
                continue
            entry = _reserve(slot, backend, tool)
            if entry is None:
                continue  # another Girder process filled this slot
            try:
                if _start(entry, backend):
                    started.append(entry)
            except LaunchError as exc:
                logger.warning('Could not start a pooled notebook: %s', exc)
                PooledNotebook().collection.delete_one({'_id': entry['_id']})
                report[str(entry['_id'])] = 'failed'
        deadline = time.monotonic() + backend.config['ready_timeout']
        for entry in started:
            ready = _waitReady(entry, backend, deadline)
            # Shrunk while starting: stop it rather than offer it.
            if ready and entry['slot'] < pool.targetSize():
                fields = {'status': 'ready', 'updated': now()}
                routed = _route(entry, backend)
                if routed is not None:
                    fields['routed'] = entry['routed'] = routed
                result = PooledNotebook().collection.update_one(
                    {'_id': entry['_id'], 'status': 'starting'}, {'$set': fields}
                )
                if result.matched_count:
                    report[str(entry['_id'])] = 'ready'
                    continue
            entry['status'] = 'starting'
            if pool.claimForStop(entry, 'not started'):
                report[str(entry['_id'])] = 'failed'
    return report


def recover(grace, at=None):
    """Start-up: keep live unclaimed servers, clear dead and half-made ones.

    Live ``ready`` servers whose Girder process is gone are adopted by this one
    (so that its shutdown stops them); records left ``starting``, ``claimed`` or
    ``stopping`` by a crash are settled after ``grace`` seconds. Returns
    ``{pool record id: what happened}``.
    """
    report = {}
    with _roundLock:
        _sweep(report, pool.targetSize(), grace, at or now())
        coll = PooledNotebook().collection
        for entry in coll.find({'status': 'ready'}):
            if not _ownerAlive(entry.get('owner')):
                coll.update_one({'_id': entry['_id']}, {'$set': {'owner': owner()}})
            report.setdefault(str(entry['_id']), 'pool adopted')
    return report


def shutdown():
    """Stop refilling and stop the unclaimed servers this process started (or adopted).

    Runs when the plugin's server stops (CherryPy's ``stop``, interpreter exit);
    the other Girder processes, if any, keep their own and refill the pool.
    """
    _stopping.set()
    pool.wake()
    thread = _thread
    if thread is not None and thread is not threading.current_thread():
        # The refill thread ends with its server: after this round, if one is under way.
        thread.join(30)
    if not _startedAny:
        return
    if not _roundLock.acquire(timeout=15):
        logger.warning('Warm pool: a refill round is still running at shutdown')
        return
    try:
        # Bounded: at interpreter exit the database may already be gone.
        with pymongo.timeout(5):
            entries = list(
                PooledNotebook().collection.find(
                    {'owner': owner(), 'status': {'$in': ['ready', 'starting']}}
                )
            )
            if entries:
                with ThreadPoolExecutor(min(8, len(entries))) as executor:
                    list(executor.map(lambda e: pool.claimForStop(e, 'shutdown'), entries))
                logger.info('Warm pool: stopped %d unclaimed notebook(s)', len(entries))
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever happens here
        logger.warning('Warm pool: could not stop unclaimed notebooks at shutdown: %s', exc)
    finally:
        _roundLock.release()


def _loop():
    while True:
        pool.awaitWake(INTERVAL)
        if _stopping.is_set():
            return
        try:
            report = refillOnce()
            if report:
                logger.info('Warm pool: %s', report)
        except Exception:  # noqa: BLE001 - a failed round must not end the thread
            logger.exception('Warm pool round failed')
            _stopping.wait(INTERVAL)


def start():
    """Start the refill thread once per process (``load()`` may run more than once)."""
    global _thread, _atexitRegistered
    _stopping.clear()
    with _threadLock:
        if not _atexitRegistered:
            atexit.register(shutdown)
            _atexitRegistered = True
        if _thread is None or not _thread.is_alive():
            _thread = threading.Thread(target=_loop, name='datadns-pool', daemon=True)
            _thread.start()
    pool.wake()
    return _thread
