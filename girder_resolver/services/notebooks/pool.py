"""The warm pool: notebook servers started ahead of time, handed to a person at launch.

tmpnb kept a pool of containers so that a launch is near instant; this is the
same idea for a backend that can bind a running server to a dataset (the
launcher's ``can_bind_later()``: the process backend). With
``resolver.pool_size`` = N > 0, ``refill.py`` keeps N servers running that belong
to nobody yet (``models/pooled.py``). A launch claims one here (``ready →
claimed`` with ``find_one_and_update``, so exactly one launch gets each), binds it
to the dataset and records it as the person's running notebook under the same
id; the refill thread then starts a replacement. An empty pool means a normal
cold launch.

**Binding at claim time.** Each pooled server starts with a token of its own,
made then and handed to the one person who claims it (a claimed server never
goes back to the pool), and with an empty placeholder as its dataset ``data``
(the launcher's ``start_unbound()``). At claim the launcher binds the dataset
without widening the sandbox (its ``bind_data()``). The price: in a pooled
notebook the dataset appears as ``data``, not under its folder's name, since that
name is fixed when the server starts.

**Its route.** A server gets its front door route (``/notebook/<id>/``, the id it
keeps when claimed) as soon as it answers, so that a claim has no proxy request
to make; a claim adds it only if the proxy restarted since (:func:`routedNow`).

**Docker.** A container's bind mounts are fixed when it is created, so a running
container cannot be handed a dataset (its ``can_bind_later()`` is False): with
the docker backend the pool stays empty and every launch is a cold start.
"""

import logging
import threading
import time

import pymongo

from ... import frontdoor, metrics, settings
from ...errors import Unavailable
from ...launcher import LaunchError
from ...models.notebook import Notebook
from ...models.pooled import PooledNotebook
from ...primitives import now
from ...settings import PluginSettings
from . import local

logger = logging.getLogger(__name__)

#: Name under which the dataset appears in a pooled notebook's file tree.
DATA_NAME = 'data'

_wake = threading.Event()
_unbindableLogged = False


def targetSize():
    """How many unclaimed servers the pool should hold now.

    0 unless the configured backend's servers can be bound to a dataset after
    they start (see the module's notes).
    """
    global _unbindableLogged
    size = settings.get(PluginSettings.POOL_SIZE)
    if size and not local.launcher().can_bind_later():
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


def wake():
    """Have the refill thread run a round now (a claim, a change of ``resolver.pool_size``)."""
    _wake.set()


def awaitWake(timeout):
    """Wait until :func:`wake` is called, or ``timeout`` seconds (the refill thread's tick)."""
    _wake.wait(timeout)
    _wake.clear()


def ready():
    """How many servers wait unclaimed in the pool right now."""
    return PooledNotebook().collection.count_documents({'status': 'ready'})


def isPooled(notebookId):
    """Whether a server of this id is a pool record (so not an orphan)."""
    return PooledNotebook().collection.count_documents({'_id': notebookId}, limit=1) > 0


# -- claiming ------------------------------------------------------------------------


def take(identity, tool):
    """Claim a ready server of tool ``tool`` (its id) for ``identity``: its pool record, or
    None if the pool has none.

    The caller then :func:`bind`s it and either :func:`settle`s it (once the
    notebook record exists) or :func:`discard`s it.
    """
    size = targetSize()
    if not size:
        return None
    coll = PooledNotebook().collection
    backend = local.launcher()
    try:
        while True:
            entry = coll.find_one_and_update(
                {'status': 'ready', 'slot': {'$lt': size}, 'backend': backend.name, 'tool': tool},
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
        wake()  # refill now, not at the next tick


def bind(entry, dataPath):
    """Show ``dataPath`` read-only as a claimed server's dataset (``LaunchError`` if not)."""
    local.launcherOf(entry).bind_data(entry['handle'], dataPath)


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
            local.launcherOf(entry).stop(entry['handle'])
        except LaunchError:
            logger.exception('Could not stop pooled notebook %s', entry['_id'])
            return  # keep the record: a later round retries
    PooledNotebook().collection.delete_one({'_id': entry['_id']})


def claimForStop(entry, reason):
    """Claim a pool server in its current state for stopping, and stop it; False if taken."""
    claimed = PooledNotebook().collection.find_one_and_update(
        {'_id': entry['_id'], 'status': entry['status']},
        {'$set': {'status': 'stopping', 'message': reason, 'updated': now()}},
        return_document=pymongo.ReturnDocument.AFTER,
    )
    if claimed is None:
        return False
    discard(claimed)
    return True


def routedNow(entry):
    """Whether a claimed server's route, added when it became ready, is surely still in the
    proxy: this process's managed proxy, not restarted since. A proxy run as a service of its
    own may have restarted unseen (its routes come back only for notebooks, within the
    supervisor's interval), so a claim there adds the route again."""
    current = frontdoor.generation()
    return current not in (None, 'external') and entry.get('routed') == current


def launch(site, identity, folderId, user, path, tool):
    """Hand ``identity`` a warm server of tool ``tool`` (the site's default tool, the only
    one the pool serves) from the pool, bound to ``path``; None if none.

    The notebook is running on return, under the pool server's id, token and
    handle. :class:`Unavailable` if the server cannot be bound.
    """
    if not targetSize():
        return None
    model = Notebook()
    # Checked first so that a launch over a cap does not use up a pooled server.
    timer = metrics.StepTimer(metrics.POOL_CLAIM_STEPS)
    started = time.monotonic()
    model.checkCaps(site, identity, user['_id'])
    timer.step('checks')
    entry = take(identity, tool)
    if entry is None:
        return None
    try:
        timer.step('claim')
        bind(entry, path)
        timer.step('bind')
        if routedNow(entry):
            url = local.frontDoorUrl(entry)  # routed when it became ready
        else:
            backend = local.launcher(entry['backend'])
            url = local.publish({'_id': entry['_id']}, backend, entry['handle'])
        timer.step('route')
        fields = {
            '_id': entry['_id'],
            'backend': entry['backend'],
            'dataPath': path,
            'dataName': DATA_NAME,
            'token': entry['token'],
            'handle': entry['handle'],
            'tool': entry.get('tool'),
            'toolEntry': entry.get('toolEntry'),
            'pooled': True,
            'status': 'running',
            'message': 'Running',
            'url': url,
        }
        doc, created = model.claimSlot(site, identity, folderId, user, fields, checked=True)
        timer.step('record')
    except BaseException as exc:
        # Bound but never handed out: stopped, never offered to anyone else.
        local.unpublish(entry)
        discard(entry, wait=False)
        if isinstance(exc, LaunchError):
            raise Unavailable(f'The notebook could not be started: {exc}') from exc
        raise
    if not created:
        local.unpublish(entry)
        discard(entry, wait=False)  # a concurrent launch made the notebook first
        return doc
    settle(entry)
    timer.step('settle')
    metrics.LAUNCHES.labels(backend=f'{entry["backend"]}-pool', outcome='running').observe(
        time.monotonic() - started
    )
    logger.info('Notebook %s (warm pool) is running for %s', doc['_id'], identity)
    return doc
