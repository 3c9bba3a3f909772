"""Data DNS: a Girder plugin that resolves dataset identifiers to notebooks next to the data."""

import logging
from pathlib import Path

import cherrypy
from girder import events as girderEvents
from girder.constants import TokenScope
from girder.plugin import GirderPlugin, registerPluginStaticContent
from girder.utility.model_importer import ModelImporter

from . import (  # (settings: registers validators)
    cache,
    credentials,
    events,
    frontdoor,
    logredact,
    metrics,
    settings,
)
from .constants import LAUNCH_SCOPE
from .models.dataset import Dataset
from .models.notebook import Notebook
from .models.run import Run
from .models.site import Site
from .rest.dataset import Resolver
from .rest.frontdoor import StoppedNotebookPages
from .rest.notebook import NotebookResource
from .rest.resolve import Resolve
from .rest.run import RunResource
from .rest.settings import SettingResource
from .services import resolution, runs
from .services.notebooks import local as localNotebooks
from .services.notebooks import policy, pool, recovery, refill
from .settings import PluginSettings

logger = logging.getLogger(__name__)

#: Where the web client's Vite build lands (see web_client/vite.config.js).
WEB_CLIENT_DIST = Path(__file__).parent / 'web_client_dist'
WEB_CLIENT_JS = 'girder-plugin-resolver.umd.cjs'
WEB_CLIENT_CSS = 'style.css'


def registerWebClient(tree):
    """Serve the built web client, if there is one.

    Girder refuses to start when a plugin registers static files that do not
    exist, and the API must work before anyone has run the web build.
    """
    if not (WEB_CLIENT_DIST / WEB_CLIENT_JS).is_file():
        logger.warning(
            'Data DNS web client not built (%s missing): serving the API only',
            WEB_CLIENT_DIST / WEB_CLIENT_JS,
        )
        return False
    css = [f'/{WEB_CLIENT_CSS}'] if (WEB_CLIENT_DIST / WEB_CLIENT_CSS).is_file() else []
    registerPluginStaticContent(
        plugin='resolver', css=css, js=[f'/{WEB_CLIENT_JS}'], staticDir=WEB_CLIENT_DIST, tree=tree
    )
    return True


class ResolverPlugin(GirderPlugin):
    DISPLAY_NAME = 'Data DNS resolver'

    def load(self, info):
        # First of the plugin's handlers: the others must read settings just saved.
        cache.clearAll()
        settings.bind('resolver.cache')
        ModelImporter.registerModel('resolver_dataset', Dataset, 'resolver')
        ModelImporter.registerModel('resolver_site', Site, 'resolver')
        ModelImporter.registerModel('resolver_notebook', Notebook, 'resolver')
        ModelImporter.registerModel('resolver_run', Run, 'resolver')

        info['apiRoot'].resolve = Resolve()
        info['apiRoot'].resolver = Resolver()
        SettingResource().mountOn(info['apiRoot'].resolver)
        info['apiRoot'].notebook = NotebookResource()
        info['apiRoot'].run = RunResource()
        # What the front door shows at /notebook/<id>/ once that notebook has stopped.
        info['serverRoot'].mount(StoppedNotebookPages(), '/notebook', {'/': {}})

        TokenScope.describeScope(
            LAUNCH_SCOPE,
            'Launch notebooks for federation users',
            'Lets a central resolver launch and stop notebooks at this site on behalf of its '
            'users, and nothing else.',
        )
        events.bind('resolver')
        # Girder's access log records query strings: keep API keys and tokens out of it.
        logredact.install()
        registerWebClient(info['serverRoot'])

        try:
            where = credentials.ensureKey()
            logger.info('Data DNS: site credentials are encrypted with the key in %s', where)
            sealed = Site().sealLegacyCredentials()
            if sealed:
                logger.info('Data DNS: %d site credential(s) stored in clear encrypted', sealed)
        except (OSError, credentials.CredentialKeyError) as exc:
            # Resolving and local launches work without it; registrations with a
            # credential are refused (503) until the key can be read or made.
            logger.error('Data DNS: no key to encrypt site credentials with: %s', exc)
        girderEvents.bind('model.setting.save.after', 'resolver.siteName', _siteNameSaved)

        metrics.readSitesWith(resolution.siteStates)

        count = Dataset().reindexLocal()
        logger.info('Data DNS: %d tagged folders indexed', count)

        # Adopt notebooks that outlived a restart, end dead ones, then cull periodically.
        try:
            logger.info('Data DNS notebooks after start-up: %s', recovery.recover() or 'none')
        except Exception:  # a broken container engine must not keep Girder from starting
            logger.exception('Data DNS: notebook recovery failed')
        # Both threads end with the server (CherryPy's 'stop'; with uvicorn, with the process).
        cherrypy.engine.subscribe('stop', policy.stop)
        policy.start()

        # The warm pool refills in its own thread; a change of its size or backend
        # wakes it, and this process's unclaimed servers stop with the server.
        girderEvents.bind('model.setting.save.after', 'resolver.pool', _poolSettingSaved)
        cherrypy.engine.subscribe('stop', refill.shutdown)
        refill.start()

        # Batch runs are followed in a thread of their own, those that outlived a restart too.
        cherrypy.engine.subscribe('stop', runs.stop)
        runs.start()

        # The front door starts with the server when notebooks already run (adopted after
        # a restart), else with the first route; it gets every running notebook's route,
        # and stops with the server.
        frontdoor.setRouteSource(localNotebooks.frontDoorRoutes)
        cherrypy.engine.subscribe('start', _startFrontDoor)
        cherrypy.engine.subscribe('stop', frontdoor.shutdown)
        # Girder 5 runs under uvicorn: only a request tells which port this Girder is on.
        girderEvents.bind('auth.user.get', 'resolver.frontdoor', _learnGirderAddress)


def _startFrontDoor():
    try:
        if localNotebooks.frontDoorRoutes():
            frontdoor.ensure()
    except Exception:  # noqa: BLE001 - Girder serves its API without the front door
        logger.exception('Data DNS: the front door did not start; notebooks cannot be opened')


def _learnGirderAddress(event):
    local = getattr(cherrypy.request, 'local', None)
    if local is not None:
        frontdoor.learnGirderAddress(local.name, local.port)


def _siteNameSaved(event):
    """Local index entries carry the site's name: a new name re-labels them."""
    if (event.info or {}).get('key') == PluginSettings.SITE_NAME:
        Dataset().reindexLocal()


def _poolSettingSaved(event):
    if (event.info or {}).get('key') in (PluginSettings.POOL_SIZE, PluginSettings.BACKEND):
        pool.wake()
