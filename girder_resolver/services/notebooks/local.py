"""Launching and stopping notebooks here, through a launcher backend.

The backend (``girder_resolver.launcher``) is chosen by the ``resolver.backend``
setting (:func:`launcher`); nothing else here knows which one runs. A cold launch
inserts the ``launching`` record and starts the server in a background thread, so
a request returns at once and the client follows ``status`` and ``message``; the
thread moves the record on through ``Notebook().transition`` and, once the server
answers, gives it its front door route (``/notebook/<id>/``). A stop claims the
record (``stopping``), stops the server and marks it stopped.
"""

import logging
import os
import secrets
import threading
import time

from ... import frontdoor, metrics, settings
from ...errors import InvalidTransition, NotADataset
from ...launcher import LaunchError, LaunchSpec, get_configured_launcher
from ...models import datapath
from ...models.dataset import identifiersFromMetadata
from ...models.notebook import Notebook
from ...primitives import now
from ...settings import PluginSettings

logger = logging.getLogger(__name__)

#: A launch still "launching" after this many seconds has lost its thread (a crash).
LAUNCH_GRACE = 180
# settings.instanceId(), a random id per database, labels this installation's
# notebooks, so that orphan clean-up never touches notebooks of another Girder
# sharing the machine (or the container engine).
INSTANCE_LABEL = 'datadns.instance'
IDENTITY_LABEL = 'datadns.identity'
_LOOPBACK = {'127.0.0.1', 'localhost', '::1', '[::1]'}

_launchers = {}
_launchersLock = threading.Lock()


def instanceId():
    """This installation's random id (made once per database, atomically)."""
    return settings.instanceId()


def launcher(name=None):
    """The launcher backend named ``name`` (default: the ``resolver.backend`` setting).

    Configured from the site's settings; one instance per configuration, shared,
    since a process launcher keeps its children to reap them.
    """
    name = name or settings.get(PluginSettings.BACKEND)
    host = settings.get(PluginSettings.NOTEBOOK_HOST)
    listen = '127.0.0.1' if host in _LOOPBACK else '0.0.0.0'
    config = {
        'public_host': host,
        'image': settings.get(PluginSettings.IMAGE),
        'mem_limit': settings.get(PluginSettings.MEMORY_LIMIT),
        'cpus': settings.get(PluginSettings.CPU_LIMIT),
        'pids_limit': settings.get(PluginSettings.PIDS_LIMIT),
        'ip': listen,
        'host_ip': listen,
        'allow_unsandboxed': bool(settings.get(PluginSettings.ALLOW_UNSANDBOXED)),
        'partition': settings.get(PluginSettings.SLURM_PARTITION),
        'account': settings.get(PluginSettings.SLURM_ACCOUNT),
        'time_limit': settings.get(PluginSettings.SLURM_TIME_LIMIT),
    }
    if settings.get(PluginSettings.WORK_ROOT):
        config['work_root'] = settings.get(PluginSettings.WORK_ROOT)
    key = (name, tuple(sorted(config.items())))
    with _launchersLock:
        if key not in _launchers:
            _launchers[key] = get_configured_launcher(name, **config)
        return _launchers[key]


def launcherOf(doc):
    """The backend that started a notebook (the configured one may have changed since)."""
    return launcher((doc.get('handle') or {}).get('backend') or doc.get('backend'))


# -- where the data is -------------------------------------------------------------


def dataPath(folder):
    """The directory on this machine that holds dataset ``folder``'s data, or None.

    The ``resolver.data_paths`` setting (an admin's mapping) wins; otherwise the
    directory that the folder's own filesystem import came from, as recorded on the
    folder when it was imported (``models/datapath.py``). Never derived from files
    found below the folder: copied files keep their original path.
    """
    explicit = (settings.get(PluginSettings.DATA_PATHS) or {}).get(str(folder['_id']))
    if explicit:
        return explicit if os.path.isdir(explicit) else None
    return datapath.importedPath(folder)


def isDatasetFolder(folder):
    """A folder tagged with an identifier, or one an admin mapped in resolver.data_paths."""
    if str(folder['_id']) in (settings.get(PluginSettings.DATA_PATHS) or {}):
        return True
    key = settings.get(PluginSettings.IDENTIFIER_KEY)
    identifiers, _ = identifiersFromMetadata((folder.get('meta') or {}).get(key))
    return bool(identifiers)


def datasetPath(folder):
    """Where ``folder``'s data is on this machine; :class:`NotADataset` if no notebook may
    start next to it."""
    if not isDatasetFolder(folder):
        key = settings.get(PluginSettings.IDENTIFIER_KEY)
        raise NotADataset(
            f'Folder "{folder["name"]}" is not a dataset: notebooks start only for folders '
            f'tagged with an identifier (metadata "{key}") or mapped by an admin in the '
            'resolver.data_paths setting.'
        )
    path = dataPath(folder)
    if path is None:
        raise NotADataset(
            f'This dataset\'s data is not on this server\'s disk: folder "{folder["name"]}" '
            'was not itself imported from a filesystem assetstore (a copy of a dataset, or '
            'files copied into it, do not count) and has no entry in the '
            'resolver.data_paths setting, so no notebook can be started next to it.'
        )
    return path


# -- the front door ------------------------------------------------------------------


def frontDoorUrl(doc):
    """The notebook's address at the front door (no ticket, no token)."""
    return f'{frontdoor.publicUrl()}{frontdoor.routePath(doc["_id"])}/'


def publish(doc, backend, handle):
    """Route the front door's ``/notebook/<id>/`` to a server; returns its front door URL.

    Raises :class:`LaunchError` when the front door cannot take the route.
    """
    try:
        frontdoor.addRoute(str(doc['_id']), backend.proxy_target(handle))
        return frontDoorUrl(doc)
    except frontdoor.FrontDoorError as exc:
        raise LaunchError(f'The notebook runs but the front door cannot reach it: {exc}')


def unpublish(doc):
    """Remove the front door's route: at once, ``/notebook/<id>/`` says it was stopped."""
    try:
        frontdoor.removeRoute(str(doc['_id']))
    except frontdoor.FrontDoorError as exc:
        logger.warning('Front door: could not remove the route of %s: %s', doc['_id'], exc)


def frontDoorRoutes():
    """``{notebook id: proxy target}`` of this site's running notebooks (for the proxy)."""
    site = settings.get(PluginSettings.SITE_NAME)
    routes = {}
    for doc in Notebook().find({'site': site, 'status': 'running', 'handle': {'$exists': True}}):
        try:
            routes[str(doc['_id'])] = launcherOf(doc).proxy_target(doc['handle'])
        except (KeyError, ValueError):
            continue
    return routes


# -- a cold launch -----------------------------------------------------------------


def launch(folder, user, identity, path, tool=None):
    """Launch ``identity``'s notebook for ``folder`` (data at ``path``), or return the live one.

    ``tool`` is the tool entry to run (one of ``resolver.tools``), or None for the
    backend's own default. The server starts in a background thread.
    """
    doc, created = Notebook().claimSlot(
        settings.get(PluginSettings.SITE_NAME),
        identity,
        str(folder['_id']),
        user,
        {
            'backend': settings.get(PluginSettings.BACKEND),
            'dataPath': path,
            'dataName': folder['name'],
            'token': secrets.token_urlsafe(24),
            'tool': tool['id'] if tool else None,
            # The entry as it was at launch: what the launcher ran, whatever the setting says later.
            'toolEntry': tool,
        },
    )
    if created:
        thread = threading.Thread(
            target=_launchInBackground, args=(doc,), name=f'notebook-{doc["_id"]}'
        )
        thread.daemon = True
        thread.start()
    return doc


def _launchInBackground(doc):
    started = time.monotonic()
    try:
        _launch(doc)
    except Exception as exc:  # the thread must leave no notebook "launching"
        logger.exception('Notebook %s failed to launch', doc['_id'])
        Notebook().fail(doc, f'The notebook could not be started: {exc}')
    final = Notebook().collection.find_one({'_id': doc['_id']}, {'status': True}) or {}
    outcome = {'running': 'running', 'error': 'error'}.get(final.get('status'), 'stopped')
    metrics.LAUNCHES.labels(backend=doc.get('backend', 'unknown'), outcome=outcome).observe(
        time.monotonic() - started
    )


def _launch(doc):
    model = Notebook()
    backend = launcherOf(doc)
    try:
        model.transition(doc, 'launching', message='Starting the notebook server')
    except InvalidTransition:
        return model.finishStopping(doc)
    try:
        spec = LaunchSpec(
            str(doc['_id']),
            doc['token'],
            doc['dataPath'],
            doc['dataName'],
            labels={INSTANCE_LABEL: instanceId(), IDENTITY_LABEL: doc['identity']},
            tool=doc.get('toolEntry'),
        )
        handle = backend.start(spec)
    except LaunchError as exc:
        return model.fail(doc, str(exc))
    try:
        model.transition(doc, 'launching', handle=handle, message='Waiting for Jupyter to answer')
    except InvalidTransition:
        # Stopped while starting: the stop found no handle, so it is ours to release.
        backend.stop(handle)
        doc['handle'] = handle
        return model.finishStopping(doc)
    try:
        # The launcher polls HTTP every ``ready_poll_interval`` (25 ms) and asks its
        # engine whether the server still runs only while it does not answer.
        backend.wait_ready(handle, token=doc['token'], progress=_progressOf(doc))
        url = publish(doc, backend, handle)
    except LaunchError as exc:
        try:
            # Only a launch still launching fails: one stopped meanwhile (which ended the
            # wait, e.g. a cancelled batch job) is the stop's to finish as stopped.
            model.transition(
                doc,
                'error',
                fromStatus=('launching',),
                message=str(exc),
                url=None,
                unset=('token',),
            )
        except InvalidTransition:
            return None
        backend.stop(handle)
        return None
    try:
        model.transition(
            doc,
            'running',
            fromStatus=('launching',),
            url=url,
            message='Running',
            lastActivity=now(),
            # As completed while it started (a batch job's node and port, say).
            handle=handle,
        )
    except InvalidTransition:
        # Stopped while waiting: whoever stopped it released the handle (and may have
        # removed the route before it was added).
        unpublish(doc)
        return None
    logger.info('Notebook %s is running for %s', doc['_id'], doc['identity'])


def _progressOf(doc):
    """What the launcher calls with news of a launch's wait: the record's message."""

    def progress(message):
        try:
            Notebook().transition(doc, 'launching', fromStatus=('launching',), message=message)
        except InvalidTransition:
            pass  # stopped meanwhile: the stop ends the wait

    return progress


# -- stopping ------------------------------------------------------------------------


def stop(doc, reason='Stopped', fromStatus=None):
    """Stop a local notebook and release its process or container and port.

    Safe against concurrent stops: only the caller that claims it stops it. A
    notebook still starting without a handle is left to its launch thread, which
    sees the claim and releases what it started. With ``fromStatus`` (the statuses
    the caller saw), a notebook that another stop claimed first raises
    :class:`InvalidTransition` instead of being handed back: the culler and recovery
    count only the stops they made.
    """
    claimed = Notebook().claimForStop(doc, fromStatus or ('launching', 'running'))
    if claimed is None:
        current = Notebook().load(doc['_id'])
        if fromStatus is not None:
            raise InvalidTransition((current or {}).get('status'), 'stopping')
        return current or doc
    return release(claimed, reason)


def release(claimed, reason='Stopped'):
    """Release a notebook claimed as ``stopping``: stop its backend, mark it stopped."""
    handle = claimed.get('handle')
    if handle:
        unpublish(claimed)
        try:
            launcherOf(claimed).stop(handle)
        except LaunchError as exc:
            # The engine is down: keep the claim, so the culler retries later.
            Notebook().setFields(claimed, message=f'Could not stop yet: {exc}')
            return claimed
        return Notebook().finishStopping(claimed, reason)
    # Still starting, with no handle yet: its launch thread releases it.
    return claimed
