"""The warm pool: notebook servers started ahead of time and bound to a person at launch.

tmpnb kept a pool of containers so that a launch is near instant; this is the
same idea for a backend that can bind a running server to a dataset (the
launcher's ``can_bind_later()``: the process backend). With
``resolver.pool_size`` = N > 0, a daemon
thread in every Girder process (started by ``load()``, like the culler) keeps N
``jupyter_server`` processes running that belong to nobody yet. A launch claims
one (``ready → claimed`` with ``find_one_and_update``, so exactly one launch gets
each), binds it to the dataset and records it as the person's running notebook
under the same id; the thread then starts a replacement. An empty pool means a
normal cold launch.

**Binding at claim time.** Each pooled server starts with a token of its own,
made then and handed to the one person who claims it (a claimed server never
goes back to the pool), and with an empty placeholder as its dataset ``data``
(the launcher's ``start_unbound()``; the placeholder is the launcher's); the
read-only contents manager is told that ``data`` is read-only. At claim the
launcher binds the dataset without widening the sandbox (its ``bind_data()``;
for the process backend: for a bubblewrap sandbox, the dataset is
mounted read-only onto the server's ``data/`` directory, a shared mount point
whose copy inside the sandbox receives the mount (this needs Girder to run as
root; elsewhere the pool stays empty and launches are cold); unsandboxed, the
dataset symlink is swapped atomically). The price: in a pooled notebook the
dataset appears as ``data``, not under its folder's name, since that name is
fixed when the server starts.

**Its route.** A server gets its front door route (``/notebook/<id>/``, the id
it keeps when claimed) as soon as it answers, so that a claim has no proxy
request to make (see :func:`_route` for why an unclaimed server's route exposes
nothing); a claim adds it only if the proxy restarted since. Discarding an
unclaimed server removes its route.

**Docker.** A container's bind mounts are fixed when it is created, so a running
container cannot be handed a dataset (its ``can_bind_later()`` is False): with
the docker backend the pool stays empty and every launch is a cold start.

Unclaimed servers live in their own collection, so they are never listed, never
count to anyone's cap and are never culled for idleness. They are stopped when
the pool shrinks (their slot ≥ N) or the backend changes (each by the backend
that started it), when the Girder
process that started them shuts down, and when found dead or half-made by a
round or by :func:`recover` at start-up. Slots 0..N-1 carry a unique index, so
several Girder processes refilling at once never overshoot N.
"""

import atexit
import logging
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pymongo
from girder.exceptions import ValidationException
from girder.models.model_base import Model

from . import frontdoor, settings
from .launcher import LaunchError
from .models.notebook import IDENTITY_LABEL, INSTANCE_LABEL, Notebook, instanceId, launcher
from .primitives import aware, hostId, now, processGone, processStamp
from .settings import PluginSettings

logger = logging.getLogger(__name__)

#: Name under which the dataset appears in a pooled notebook's file tree.
DATA_NAME = 'data'
#: Identity label of a server that nobody has claimed yet.
POOL_IDENTITY = 'pool'
STATES = ('starting', 'ready', 'claimed', 'stopping')
#: Seconds between two rounds when nothing (a claim, a setting) wakes the thread sooner.
INTERVAL = 5
#: A record still starting, claimed or stopping after this many seconds lost its thread.
GRACE = 180

_thread = None
_threadLock = threading.Lock()
# One round at a time per process: a test's refillOnce() and the thread take turns.
_roundLock = threading.RLock()
_wake = threading.Event()
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


class PooledNotebook(Model):
    """An unclaimed (or being claimed) warm notebook server: one per pool slot."""

    def initialize(self):
        self.name = 'resolver_notebook_pool'
        self.ensureIndices(
            [
                'status',
                (
                    [('slot', 1)],
                    {'unique': True, 'name': 'one_server_per_pool_slot'},
                ),
            ]
        )

    def validate(self, doc):
        if doc.get('status') not in STATES:
            raise ValidationException(f'A pooled notebook is one of {", ".join(STATES)}.')
        if not isinstance(doc.get('slot'), int) or doc['slot'] < 0:
            raise ValidationException('A pooled notebook has a slot number >= 0.')
        return doc


_unbindableLogged = False


def targetSize():
    """How many unclaimed servers the pool should hold now.

    0 unless the configured backend's servers can be bound to a dataset after
    they start (see the module's notes).
    """
    global _unbindableLogged
    size = settings.get(PluginSettings.POOL_SIZE)
    if size and not launcher().can_bind_later():
        if not _unbindableLogged:
            logger.warning(
                'Warm pool disabled: the %s backend cannot bind a running server to a dataset '
                'here (the process backend can when Girder may mount file systems, i.e. runs '
                'as root, or runs unsandboxed); every launch is cold',
                settings.get(PluginSettings.BACKEND),
            )
            _unbindableLogged = True
        return 0
    return size


def _launcherOf(entry):
    """The backend that started a pool server (the configured one may have changed since)."""
    return launcher(entry.get('backend'))


# -- claiming (called by the Notebook model's launch) ------------------------------


def take(identity):
    """Claim a ready server for ``identity``: its pool record, or None if the pool is empty.

    The caller then :func:`bind`s it and either :func:`settle`s it (once the
    notebook record exists) or :func:`discard`s it.
    """
    size = targetSize()
    if not size:
        return None
    coll = PooledNotebook().collection
    backend = launcher()
    try:
        while True:
            entry = coll.find_one_and_update(
                {'status': 'ready', 'slot': {'$lt': size}, 'backend': backend.name},
                {'$set': {'status': 'claimed', 'claimedBy': identity, 'updated': now()}},
                return_document=pymongo.ReturnDocument.AFTER,
            )
            if entry is None:
                return None
            if backend.is_alive(entry['handle']):
                return entry
            # It died while waiting: clear it and try the next one.
            discard(entry)
    finally:
        _wake.set()  # refill now, not at the next tick


def bind(entry, dataPath):
    """Show ``dataPath`` read-only as a claimed server's dataset (``LaunchError`` if not)."""
    _launcherOf(entry).bind_data(entry['handle'], dataPath)


def settle(entry):
    """Forget a claimed server's pool record: it is a person's notebook now."""
    PooledNotebook().collection.delete_one({'_id': entry['_id'], 'status': 'claimed'})


def discard(entry, wait=True):
    """Stop a pool server that will not be handed out, and drop its record.

    With ``wait=False`` the stop runs in a background thread (a request need not
    wait for the server to exit).
    """
    if not wait:
        threading.Thread(target=discard, args=(entry,), daemon=True).start()
        return
    if entry.get('routed') is not None:
        try:
            frontdoor.removeRoute(str(entry['_id']))
        except frontdoor.FrontDoorError as exc:
            logger.warning('Warm pool: could not remove the route of %s: %s', entry['_id'], exc)
    if entry.get('handle'):
        try:
            _launcherOf(entry).stop(entry['handle'])
        except LaunchError:
            logger.exception('Could not stop pooled notebook %s', entry['_id'])
            return  # keep the record: a later round retries
    PooledNotebook().collection.delete_one({'_id': entry['_id']})


def _claimForStop(entry, reason):
    claimed = PooledNotebook().collection.find_one_and_update(
        {'_id': entry['_id'], 'status': entry['status']},
        {'$set': {'status': 'stopping', 'message': reason, 'updated': now()}},
        return_document=pymongo.ReturnDocument.AFTER,
    )
    if claimed is None:
        return False
    discard(claimed)
    return True


# -- filling -----------------------------------------------------------------------


def _reserve(slot, backend):
    """Insert a ``starting`` record in ``slot``; None if another process has the slot."""
    at = now()
    entry = {
        'slot': slot,
        'status': 'starting',
        'backend': backend.name,
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
        DATA_NAME,
        labels={INSTANCE_LABEL: instanceId(), IDENTITY_LABEL: POOL_IDENTITY},
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


def routedNow(entry):
    """Whether a claimed server's route, added when it became ready, is surely still in the
    proxy: this process's managed proxy, not restarted since. A proxy run as a service of its
    own may have restarted unseen (its routes come back only for notebooks, within the
    supervisor's interval), so a claim there adds the route again."""
    current = frontdoor.generation()
    return current not in (None, 'external') and entry.get('routed') == current


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
    """Stop surplus, dead and abandoned pool servers (and those of another backend)."""
    configured = settings.get(PluginSettings.BACKEND)
    for entry in list(PooledNotebook().find({})):
        age = (at - (aware(entry.get('updated')) or at)).total_seconds()
        reason = None
        if entry['status'] == 'ready':
            if entry['slot'] >= size or entry.get('backend') != configured:
                reason = 'shrunk'
            elif not _launcherOf(entry).is_alive(entry['handle']):
                reason = 'died'
        elif age > grace:
            if entry['status'] == 'claimed' and Notebook().findOne(
                {'_id': entry['_id'], 'live': True}
            ):
                # The launch made its notebook but died before forgetting this record.
                settle(entry)
                report[str(entry['_id'])] = 'claimed'
                continue
            reason = 'abandoned'
        if reason and _claimForStop(entry, reason):
            report[str(entry['_id'])] = reason


def refillOnce(at=None):
    """One round: stop surplus, dead and abandoned servers, then start the missing ones.

    Waits until the servers it started answer, so that on return they are
    ``ready`` (or stopped again). Returns ``{pool record id: what happened}``.
    """
    report = {}
    with _roundLock:
        size = targetSize()
        _sweep(report, size, GRACE, at or now())
        if _stopping.is_set() or not size:
            return report
        backend = launcher()
        taken = set(PooledNotebook().collection.distinct('slot'))
        started = []
        for slot in range(size):
            if slot in taken:
                continue
            entry = _reserve(slot, backend)
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
            if ready and entry['slot'] < targetSize():
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
            if _claimForStop(entry, 'not started'):
                report[str(entry['_id'])] = 'failed'
    return report


def ready():
    """How many servers wait unclaimed in the pool right now."""
    return PooledNotebook().collection.count_documents({'status': 'ready'})


# -- start-up and shutdown ---------------------------------------------------------


def recover(grace, at=None):
    """Start-up: keep live unclaimed servers, clear dead and half-made ones.

    Live ``ready`` servers whose Girder process is gone are adopted by this one
    (so that its shutdown stops them); records left ``starting``, ``claimed`` or
    ``stopping`` by a crash are settled after ``grace`` seconds. Returns
    ``{pool record id: what happened}``.
    """
    report = {}
    with _roundLock:
        _sweep(report, targetSize(), grace, at or now())
        coll = PooledNotebook().collection
        for entry in coll.find({'status': 'ready'}):
            if not _ownerAlive(entry.get('owner')):
                coll.update_one({'_id': entry['_id']}, {'$set': {'owner': owner()}})
            report.setdefault(str(entry['_id']), 'pool adopted')
    return report


def isPooled(notebookId):
    """Whether a server of this id is a pool record (so not an orphan)."""
    return PooledNotebook().collection.count_documents({'_id': notebookId}, limit=1) > 0


def shutdown():
    """Stop refilling and stop the unclaimed servers this process started (or adopted).

    Runs when the plugin's server stops (CherryPy's ``stop``, interpreter exit);
    the other Girder processes, if any, keep their own and refill the pool.
    """
    _stopping.set()
    _wake.set()
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
                    list(executor.map(lambda e: _claimForStop(e, 'shutdown'), entries))
                logger.info('Warm pool: stopped %d unclaimed notebook(s)', len(entries))
    except Exception as exc:  # noqa: BLE001 - shutdown goes on whatever happens here
        logger.warning('Warm pool: could not stop unclaimed notebooks at shutdown: %s', exc)
    finally:
        _roundLock.release()


def wake():
    """Run a round now (e.g. after ``resolver.pool_size`` changed)."""
    _wake.set()


def _loop():
    while True:
        _wake.wait(INTERVAL)
        _wake.clear()
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
    _wake.set()
    return _thread
