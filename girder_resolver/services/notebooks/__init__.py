"""Notebooks: the one entry point that ``rest/`` calls to launch, follow and stop them.

One live notebook per (site, delegator, identity, folder), next to the data. A
launch here takes a warm server from the pool (``pool.py``) or starts one
through the configured launcher (``local.py``); at a central, ``POST
/resolve/launch`` goes to the best site that holds the data, passing over sites
that fail (:func:`launchFirst`; the calls to other sites are ``remote.py``).
Idle and old notebooks are stopped by ``policy.py`` (the culler), and what a
restart left behind is settled by ``recovery.py``; the warm pool is refilled by
``refill.py``. Status changes are recorded by ``models/notebook.py``.
"""

import logging
import time

from girder.constants import AccessType
from girder.models.folder import Folder

from ... import frontdoor, metrics, settings
from ...errors import Conflict, InvalidRequest, NotFound, SiteFailed, Unavailable
from ...federation import SiteError
from ...models.notebook import Notebook, identityOf
from ...primitives import objectId
from ...settings import PluginSettings
from . import local, pool, remote, tools
from .links import openUrl, redeemTicket, ticketIsGenuine
from .local import frontDoorUrl

#: What ``rest/`` calls.
__all__ = [
    'find',
    'frontDoorUrl',
    'get',
    'isLocal',
    'launch',
    'launchFirst',
    'offeringTool',
    'load',
    'redeemTicket',
    'refresh',
    'stop',
    'ticketIsGenuine',
    'view',
]

logger = logging.getLogger(__name__)

metrics.readNotebookCountsWith(lambda: Notebook().statusCounts())


def get(notebookId):
    """The notebook with this id; :class:`InvalidRequest` or :class:`NotFound` if none."""
    oid = objectId(notebookId)
    if oid is None:
        raise InvalidRequest('A notebook id is 24 hexadecimal characters.')
    doc = Notebook().load(oid)
    if doc is None:
        raise NotFound(f'No notebook {notebookId}.')
    return doc


def load(notebookId):
    """The notebook with this id, or None (a malformed id included)."""
    oid = objectId(notebookId)
    return None if oid is None else Notebook().load(oid)


def find(query, limit=0, offset=0, sort=None):
    """The notebooks that match ``query`` (a Mongo query the caller has vetted)."""
    return Notebook().find(query, limit=limit, offset=offset, sort=sort)


def isLocal(doc):
    """Whether the notebook runs at this site (else it is a record of another site's)."""
    return Notebook().isLocal(doc)


def view(doc):
    """The notebook as its owner sees it.

    ``url`` is what a browser opens: for a running notebook of this site, a
    single-use link through the front door (``links.py``); the Jupyter token itself
    never appears in it.
    """
    out = Notebook().serialize(doc)
    if out['status'] == 'running' and Notebook().isLocal(doc) and doc.get('token'):
        try:
            out['url'] = openUrl(doc)
        except frontdoor.FrontDoorError:
            out['url'] = None
    return out


def launch(folder, user, identity=None, tool=None):
    """Launch, or return, ``identity``'s live notebook for ``folder`` at this site.

    ``identity`` defaults to the user's own; a federation launch passes the remote
    person's. ``tool`` is the id of the tool chosen (checked against the site's list
    by :func:`tools.checkChoice`); without one the dataset's recommended tool runs,
    else the site's default (``tools.choose``). One live notebook per person,
    dataset and tool. From the warm pool (default tool only) the notebook is running
    at once; else the server starts in a background thread.
    """
    identity = identity or identityOf(user)
    site = settings.get(PluginSettings.SITE_NAME)
    folderId = str(folder['_id'])
    toolId = tools.pick(folder, tool)
    existing = Notebook().findLive(site, identity, folderId, user['_id'], toolId)
    if existing is not None:
        return existing
    entry = tools.choose(folder, toolId)
    path = local.datasetPath(folder)
    if entry['id'] == tools.defaultId():
        pooled = pool.launch(site, identity, folderId, user, path, entry['id'])
        if pooled is not None:
            return pooled
    return local.launch(folder, user, identity, path, entry)


def refresh(doc):
    """``doc`` brought up to date: a notebook at another site is asked there."""
    if Notebook().isLocal(doc):
        return doc
    return remote.refresh(doc)


def stop(doc, reason='Stopped', fromStatus=None):
    """Stop a notebook (here, or at its site) and release what it held; the result.

    ``fromStatus``: only from these statuses, else :class:`InvalidTransition` (see
    :func:`local.stop`: the culler's and recovery's stops of local notebooks).
    """
    if Notebook().isLocal(doc):
        return local.stop(doc, reason, fromStatus)
    return remote.stop(doc)


# -- at a central: the best site that holds the data -----------------------------------


def _siteList(names):
    return ', '.join(f'"{name}"' for name in sorted(set(names)))


def launchAt(location, user, failover=None, tool=None):
    """Launch the user's notebook at a location from ``resolution.locations()``.

    ``tool``: the id of the tool to run there (None: the location's own choice).
    :class:`SiteError` when the location's site is unavailable.
    """
    if location.get('local'):
        folder = Folder().load(location['folderId'], user=user, level=AccessType.READ)
        return launch(folder, user, tool=tool)
    site = remote.siteNamed(location['site'])
    if site is None:
        raise SiteError(f'Site "{location["site"]}" is no longer registered.')
    return remote.launch(site, location['folderId'], user, failover, tool=toolAt(location, tool))


def toolAt(location, tool=None):
    """The id of the tool a launch at ``location`` runs: ``tool``, else the dataset's
    recommended tool if its site has it ready, else the site's default; None when the site
    registered no tools (it chooses itself)."""
    if tool is not None:
        return tool
    offered = location.get('tools') or ()
    ready = {t['id'] for t in offered if t.get('ready')}
    if location.get('recommendedTool') in ready:
        return location['recommendedTool']
    return next((t['id'] for t in offered if t.get('default')), None)


def offeringTool(locations, tool):
    """The locations whose site has ``tool`` ready; :class:`InvalidRequest` naming what the
    locations offer when none has it, :class:`Conflict` when it is offered but nowhere ready."""
    offered = {}
    for loc in locations:
        for entry in loc.get('tools') or ():
            offered.setdefault(entry['id'], []).append((loc, entry))
    if not isinstance(tool, str) or tool not in offered:
        listed = '; '.join(
            f'{loc["site"]}: {", ".join(t["id"] for t in loc.get("tools") or ()) or "none listed"}'
            for loc in locations
        )
        raise InvalidRequest(
            f'No site holding this dataset offers the tool {str(tool)[:60]!r}. Choose one '
            f'they offer ({listed}).',
            extra={'tools': sorted(offered)},
        )
    ready = [loc for loc, entry in offered[tool] if entry.get('ready')]
    if not ready:
        raise Conflict(
            f'The tool "{tool}" is offered by {_siteList(loc["site"] for loc, _ in offered[tool])} '
            'but is not ready there (its environment or image is missing). Choose another tool.'
        )
    return [loc for loc in locations if loc in ready]


def launchFirst(locations, user, site=None, tool=None):
    """Launch the user's notebook at the first of ``locations`` that takes it.

    ``locations`` come ranked. With ``tool`` (an id), only the locations whose site
    offers that tool, ready, are tried (:class:`InvalidRequest` naming what they
    offer if none does); without one, each site runs the dataset's recommended tool,
    else its default. A site that fails the launch (no answer, a 5xx) is
    passed over for the next healthy location, until one launches or
    ``resolver.launch_deadline`` passes; the notebook's ``failover`` and message
    say what was passed over. With ``site``, only that site is tried: its failure
    is an error that names the other sites holding the data.
    """
    if tool is not None:
        offering = offeringTool(locations, tool)
        if site is not None and not any(loc['site'] == site for loc in offering):
            raise InvalidRequest(
                f'Site "{site}" does not offer the tool "{tool}" ready for this dataset; '
                f'{_siteList(loc["site"] for loc in offering)} do(es).'
            )
        locations = offering
    if site is not None:
        return _launchAtChosen(locations, user, site, tool)
    healthy = [loc for loc in locations if loc['healthy']]
    if not healthy:
        raise Unavailable(
            f'No healthy site holds this dataset right now (known at: '
            f'{_siteList(loc["site"] for loc in locations)}, none sent a heartbeat '
            'lately). Try again later.'
        )
    deadline = time.monotonic() + settings.get(PluginSettings.LAUNCH_DEADLINE)
    passed = []
    for location in healthy:
        if passed:
            if time.monotonic() >= deadline:
                break
            metrics.FAILOVERS.labels(site=passed[-1][0]).inc()
        note = None
        if passed:
            note = '; '.join(str(exc).rstrip('.') for _, exc in passed)
            note = f'{note}; launched at {location["site"]}.'
        try:
            doc = launchAt(location, user, failover=note, tool=tool)
        except SiteError as exc:
            logger.warning('Launch at %s failed, trying the next site: %s', location, exc)
            passed.append((location['site'], exc))
            continue
        if note and not doc.get('failover'):
            # The person's notebook already lived there: say why this site all the same.
            Notebook().setFields(doc, failover=note)
        return doc
    reasons = ' '.join(str(exc) for _, exc in passed)
    raise SiteFailed(f'No site could launch this dataset: {reasons} Try again in a moment.')


def _launchAtChosen(locations, user, site, tool=None):
    """A launch at the site the request names: no failover, but a clear error naming the
    other sites that hold the data."""
    chosen = [loc for loc in locations if loc['site'] == site]
    others = [loc['site'] for loc in locations if loc['site'] != site and loc['healthy']]
    if others:
        also = (
            f' The dataset is also held by {_siteList(others)}: launch without "site" '
            f'to use the best of them, or with site={others[0]}.'
        )
    else:
        also = ' No other healthy site holds it.'
    if not chosen:
        raise NotFound(f'Site "{site}" does not hold this dataset.{also}')
    location = chosen[0]
    if not location['healthy']:
        raise Unavailable(f'Site "{site}" has not sent a heartbeat lately.{also}')
    try:
        return launchAt(location, user, tool=tool)
    except SiteError as exc:
        raise SiteFailed(f'{exc}{also}')
