"""Notebooks at other sites, seen from a central resolver: launch, failover, refresh, stop.

A remote record (``site`` = another site) points at a notebook that the site runs
on the person's behalf (``remoteId``); the central launches, refreshes and stops
it at that site through its launch credential (``federation.SiteClient``). Each
call's outcome feeds the site's circuit breaker (``breaker``). What a site
answers is checked field by field before it is kept; the record's status follows
the site's through ``Notebook().transition``.
"""

import logging
import time

from ... import breaker, settings
from ...errors import Conflict, DataDnsError, InvalidTransition, SiteFailed
from ...federation import SiteClient, SiteError, UnsafeUrl, checkNotebookUrl, sanitize
from ...models.notebook import FINAL, LIVE, Notebook, identityOf
from ...models.site import Site
from ...primitives import objectId, parseTime
from ...settings import PluginSettings

logger = logging.getLogger(__name__)


def _refusedUrl(site, exc):
    return (
        f'Site "{site["name"]}" answered with a notebook URL this resolver will not open: '
        f"{exc}. Only http(s) URLs on the site's own host (or its registered front door) "
        "are accepted; ask the site's operator to check resolver.notebook_host there."
    )


def siteNamed(name):
    """The registered site called ``name``, or None."""
    return Site().findOne({'name': name})


def _remoteFields(doc, remote, site):
    """What the central keeps of a site's answer: data checked field by field.

    Raises :class:`UnsafeUrl` for a notebook URL a browser must not be sent to.
    """
    status = remote.get('status')
    if status not in LIVE + FINAL:
        status = 'error'
    url = remote.get('url')
    if url is not None:
        url = checkNotebookUrl(url, site)
    lastActivity = remote.get('lastActivity')
    lastActivity = parseTime(lastActivity) if isinstance(lastActivity, str) else None
    message = sanitize(remote.get('message'), 500) or None
    if doc.get('failover'):
        # What the launch passed over stays in front of the site's own words.
        message = f'{doc["failover"]} {message or ""}'.strip()
    return {
        'status': status,
        'url': url,
        'message': message,
        'lastActivity': lastActivity or doc.get('lastActivity'),
    }


def _move(doc, to, **fields):
    """A remote record's transition; one that moved on meanwhile is handed back as it is."""
    try:
        Notebook().transition(doc, to, **fields)
    except InvalidTransition:
        return Notebook().load(doc['_id']) or doc
    return doc


def _apply(doc, remote, site):
    try:
        fields = _remoteFields(doc, remote, site)
    except UnsafeUrl as exc:
        return _move(doc, 'error', url=None, message=_refusedUrl(site, exc))
    return _move(doc, fields.pop('status'), **fields)


# -- launching -------------------------------------------------------------------------


def launch(site, folderId, user, failover=None, tool=None):
    """Launch, or return, the user's notebook for ``folderId`` at ``site`` (another site).

    ``tool`` is the id of the tool to run there, passed on to the site (None: the
    site chooses); one live record per person, dataset and tool.

    The central records it (site, remoteId, identity) so that it is polled and
    stopped through the central. A site that fails leaves no record behind: a
    :class:`SiteError` when the site is unavailable (no answer within
    ``resolver.site_connect_timeout``, a 5xx, a refused credential; the site is
    then suspect), a :class:`SiteFailed` for a refusal that is the person's (4xx).
    ``failover`` says, in words, which sites this launch passed over first.
    """
    model = Notebook()
    identity = identityOf(user)
    client = SiteClient(site)
    existing = model.findLive(site['name'], identity, folderId, user['_id'], tool)
    if existing is not None:
        doc = refresh(existing, site)
        if doc.get('stopPending'):
            # Its last notebook there is still to be stopped, and the site does not answer.
            raise SiteError(doc['message'])
        if doc['status'] in LIVE:
            return doc
    fields = {'apiUrl': site['apiUrl'], 'remoteId': None, 'tool': tool}
    if failover:
        fields['failover'] = failover
    doc, created = model.claimSlot(site['name'], identity, folderId, user, fields)
    if not created:
        return doc

    def withdraw(remote):
        # The site answered after this launch moved on: stop what it started for
        # nobody (a notebook it already ran for the person is left alone).
        if remote.get('status') == 'launching' and remote.get('_id'):
            client.stop(str(remote['_id']), identity)

    try:
        remote = breaker.answerWithin(
            settings.get(PluginSettings.SITE_CONNECT_TIMEOUT),
            lambda: client.launch(folderId, identity, tool),
            site['name'],
            late=withdraw,
        )
        if remote.get('status') == 'stopping':
            remote = _launchAfterStop(client, site, folderId, identity, remote, tool)
        remoteId = remote.get('_id')
        if not isinstance(remoteId, str) or objectId(remoteId) is None:
            raise SiteError(f'Site "{site["name"]}" answered without a notebook id.')
        fields = _remoteFields(doc, remote, site)
    except SiteError as exc:
        model.collection.delete_one({'_id': doc['_id']})
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc), launch=True)
            raise
        raise SiteFailed(
            f'Site "{site["name"]}" could not launch the notebook: {exc}', status=exc.status
        )
    except DataDnsError:
        model.collection.delete_one({'_id': doc['_id']})
        raise
    except UnsafeUrl as exc:
        # Nothing of the answer is kept, and the site's notebook is not left running.
        model.collection.delete_one({'_id': doc['_id']})
        try:
            client.stop(remoteId, identity)
        except SiteError:
            logger.warning('Could not stop notebook %s at site %s', remoteId, site['name'])
        raise SiteFailed(_refusedUrl(site, exc))
    breaker.succeeded(Site().collection, site)
    model.transition(doc, fields.pop('status'), remoteId=remoteId, **fields)
    return doc


def _launchAfterStop(client, site, folderId, identity, remote, tool=None):
    """Launch again once the person's notebook at the site has finished stopping.

    A site hands back the person's live notebook, and one that is stopping is still
    live there: say one the central withdrew after the site answered too late, just
    before the person launched again. It is not returned to them; the launch waits
    for it to end, within ``resolver.launch_deadline``, then starts a fresh one. A
    :class:`Conflict` if it is still stopping by then.
    """
    deadline = time.monotonic() + settings.get(PluginSettings.LAUNCH_DEADLINE)
    while remote.get('status') == 'stopping' and time.monotonic() < deadline:
        time.sleep(0.25)
        try:
            remote = client.get(str(remote.get('_id')), identity)
        except SiteError as exc:
            if exc.status != 404:
                raise
            remote = {'status': 'stopped'}
        if remote.get('status') not in LIVE:
            remote = client.launch(folderId, identity, tool)
    if remote.get('status') == 'stopping':
        raise Conflict(
            f'Your previous notebook for this dataset at site "{site["name"]}" is still '
            'stopping. Launch again in a moment.'
        )
    return remote


# -- following and stopping ----------------------------------------------------------


def refresh(doc, site=None):
    """Bring a remote notebook's status, URL and message up to date from its site."""
    if doc.get('status') in FINAL or not doc.get('remoteId'):
        return doc
    if doc.get('stopPending'):
        return stop(doc)  # a stop the site missed: try it again
    site = site or siteNamed(doc['site'])
    if site is None:
        return _move(doc, 'error', message=f'Site "{doc["site"]}" is no longer registered.')
    try:
        remote = SiteClient(site).get(doc['remoteId'], doc['identity'])
    except SiteError as exc:
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc))
        if exc.status == 404:
            return _move(doc, 'stopped', message='The site no longer has this notebook.')
        if _siteIsDown(doc, site, exc):
            # Nothing would ever finish this record: end it, so that it neither holds
            # the person's slot nor shows a launch that is not happening.
            what = (
                'Your notebook was still starting there.'
                if doc['status'] == 'launching'
                else 'Nor has it sent a heartbeat lately.'
            )
            return _move(
                doc,
                'error',
                url=None,
                message=(
                    f'{exc} {what} Launch again: you get this notebook back if the site '
                    'kept it, or one at another site that holds the data while this one '
                    'does not answer.'
                ),
            )
        doc['message'] = f'Could not reach the site: {exc}'
        return doc
    breaker.succeeded(Site().collection, site)
    return _apply(doc, remote, site)


def _siteIsDown(doc, site, exc):
    """True when a remote notebook's site failed in a way no retry of ours will mend.

    A launch in progress ends at the first failure to answer (its site restarted, or
    died): a second launch finds the notebook again if the site still has it. A
    running notebook ends only once its site has also stopped sending heartbeats,
    so a passing network fault does not cost anyone their notebook.
    """
    if exc.status is not None and exc.status < 500:
        return False
    return doc['status'] == 'launching' or not Site().healthy(site)


def stop(doc):
    """Stop a remote notebook at its site, then mark the central's record stopped.

    A site that does not answer (or fails with a 5xx) leaves the record ``stopping``
    with ``stopPending``: the stop is tried again by the next GET of the notebook
    and by the culler's rounds, until the site answers.
    """
    site = siteNamed(doc['site'])
    if site is not None and doc.get('remoteId'):
        try:
            SiteClient(site).stop(doc['remoteId'], doc['identity'])
        except SiteError as exc:
            if breaker.unavailable(exc):
                breaker.failed(Site().collection, site, str(exc))
                if doc.get('status') in FINAL:
                    return doc  # it ended here already; nothing is left to retry
                return _move(
                    doc,
                    'stopping',
                    stopPending=True,
                    url=None,
                    message=(
                        f'{exc} The stop is recorded here and tried again until the site answers.'
                    ),
                )
            if exc.status != 404:
                raise SiteFailed(f'Site "{doc["site"]}" could not stop the notebook: {exc}')
        else:
            breaker.succeeded(Site().collection, site)
    if doc.get('status') == 'stopped':
        return doc
    return _move(doc, 'stopped', message='Stopped', url=None, unset=('stopPending',))
