"""Runs at other sites, seen from a central resolver: submit (with failover), refresh, cancel, log.

``POST /resolve/run`` at a central sends a batch run to a healthy site that holds
the dataset, with that site's launch credential and on the person's behalf
(``federation.SiteClient``), as launches are sent (``services/notebooks/remote.py``).
The site runs it and keeps its results; the central keeps a record (a Run document
whose ``site`` names the site, with ``remoteId``, the run's id there) that follows
the site's status and links to the results folder at the site (``resultsUrl``).

What a site answers is checked field by field before it is kept: only known
statuses, an integer exit code, short sanitized texts, and a results URL only if it
is ``http(s)`` on the site's own host (``federation.checkNotebookUrl``'s rule), so a
browser is never handed a ``javascript:`` link. Each call's outcome feeds the site's
circuit breaker.
"""

import logging
import re
import time

from .. import breaker, settings
from ..errors import InvalidRequest, InvalidTransition, NotFound, SiteFailed, Unavailable
from ..federation import SiteClient, SiteError, UnsafeUrl, checkNotebookUrl, sanitize
from ..models.notebook import identityOf
from ..models.run import ACTIVE, FINAL, STATUSES, Run
from ..models.site import Site
from ..primitives import now, objectId, parseTime
from ..settings import PluginSettings
from .notebooks import offeringTool

logger = logging.getLogger(__name__)

#: The most characters of a site's log tail kept at the central.
LOG_TAIL_LIMIT = 4000
_LOG_CONTROL = re.compile(r'[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+')


def siteNamed(name):
    """The registered site called ``name``, or None."""
    return Site().findOne({'name': name})


def isRemote(doc):
    """Whether ``doc`` is a central's record of a run at another site."""
    return bool(doc.get('remoteId')) and doc.get('site') != settings.get(PluginSettings.SITE_NAME)


def _refusedUrl(site, exc):
    return (
        f'Site "{site["name"]}" answered with a results URL this resolver will not link to: '
        f"{exc}. Only http(s) URLs on the site's own host are accepted; ask the site's "
        'operator to check it.'
    )


def _logTail(text):
    if not isinstance(text, str):
        return None
    text = _LOG_CONTROL.sub('', text)
    return text[-LOG_TAIL_LIMIT:]


def _remoteFields(remote, site):
    """What the central keeps of a site's answer about a run: data checked field by field.

    Raises :class:`UnsafeUrl` for a results URL a browser must not be sent to.
    """
    status = remote.get('status')
    reason = sanitize(remote.get('reason'), 500) or None
    if status not in STATUSES:
        reason = f'The site answered an unknown status ({sanitize(status, 30)}).'
        status = 'failed'
    exitCode = remote.get('exitCode')
    if not isinstance(exitCode, int) or isinstance(exitCode, bool):
        exitCode = None
    url = remote.get('resultsUrl')
    if url is not None:
        url = checkNotebookUrl(url, site)
    fields = {
        'status': status,
        'exitCode': exitCode,
        'reason': reason,
        'logTail': _logTail(remote.get('logTail')),
        'resultsUrl': url,
        'reused': remote.get('reused') is True,
    }
    tool = remote.get('tool')
    if isinstance(tool, str):
        fields['tool'] = sanitize(tool, 40)
    for name in ('started', 'ended'):
        value = remote.get(name)
        fields[name] = parseTime(value) if isinstance(value, str) else None
    return fields


def _move(doc, fields):
    """Follow the site: the record's status and fields written; a record that moved on meanwhile
    (ended here already) is handed back as stored."""
    fields = dict(fields)
    to = fields.pop('status')
    model = Run()
    if to == doc.get('status') and to in FINAL:
        model.setFields(doc, **fields)
        return doc
    try:
        return model.transition(doc, to, **fields)
    except InvalidTransition:
        current = model.load(doc['_id']) or doc
        if current.get('status') in ACTIVE and to in ACTIVE:
            # A site that says "queued" of a run seen running: keep the rest of its answer.
            model.setFields(current, **fields)
        return current


def _apply(doc, remote, site):
    try:
        fields = _remoteFields(remote, site)
    except UnsafeUrl as exc:
        fields = _remoteFields({**remote, 'resultsUrl': None}, site)
        fields['reason'] = _refusedUrl(site, exc)
    return _move(doc, fields)


# -- submitting ------------------------------------------------------------------------


def submit(site, location, identifier, user, request, failover=None):
    """Submit ``request`` (``command`` or ``script``, ``tool``, ``fresh``) at ``site``
    (another site) for the dataset of ``location``; the central's record of it.

    A :class:`SiteError` when the site is unavailable (no answer, a 5xx, a refused
    credential: the site is then suspect), a :class:`SiteFailed` for a refusal that
    is the person's (4xx) or an answer this resolver will not keep.
    """
    identity = identityOf(user)
    client = SiteClient(site)
    remoteId = None
    try:
        remote = client.startRun(location['folderId'], identity, request)
        remoteId = remote.get('_id')
        if not isinstance(remoteId, str) or objectId(remoteId) is None:
            raise SiteError(f'Site "{site["name"]}" answered without a run id.')
        fields = _remoteFields(remote, site)
    except SiteError as exc:
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc), launch=True)
            raise
        raise SiteFailed(f'Site "{site["name"]}" could not start the run: {exc}', status=exc.status)
    except UnsafeUrl as exc:
        # Nothing of the answer is kept, and the run is not left going at the site.
        try:
            client.cancelRun(remoteId, identity)
        except SiteError:
            logger.warning('Could not cancel run %s at site %s', remoteId, site['name'])
        raise SiteFailed(_refusedUrl(site, exc))
    breaker.succeeded(Site().collection, site)
    moment = now()
    doc = {
        'site': site['name'],
        'apiUrl': site['apiUrl'],
        'remoteId': remoteId,
        'identifier': identifier,
        'folderId': location['folderId'],
        'userId': user['_id'],
        'identity': identity,
        'command': request.get('command'),
        'scriptFileId': request.get('scriptFileId'),
        'tool': request.get('tool'),
        'failover': failover,
        'created': moment,
        'updated': moment,
        **fields,
    }
    return Run().save(doc)


def submitFirst(locations, identifier, user, request, submitLocal, site=None):
    """Submit the run at the first of ``locations`` (ranked) that takes it.

    As launches go (``notebooks.launchFirst``): with a ``tool`` in ``request``, only the
    locations that offer it ready; healthy locations only; a site that
    fails (no answer, a 5xx) is passed over for the next, until one takes the run or
    ``resolver.launch_deadline`` passes; the record's ``failover`` says what was passed
    over. With ``site``, only that site is tried. ``submitLocal(folderId)`` runs it
    here when this server holds the data.
    """
    tool = request.get('tool')
    if tool:
        # As launches: only the sites that offer the tool, ready (400/409 naming them if none).
        offering = offeringTool(locations, tool)
        if site is not None and site not in [loc['site'] for loc in offering]:
            raise InvalidRequest(
                f'Site "{site}" does not offer the tool "{tool}" ready for this dataset; '
                'GET /resolve lists the tools each location offers.'
            )
        locations = offering
    if site is not None:
        chosen = [loc for loc in locations if loc['site'] == site]
        if not chosen:
            raise NotFound(f'Site "{site}" does not hold this dataset.')
        if not chosen[0]['healthy']:
            raise Unavailable(f'Site "{site}" has not sent a heartbeat lately. Try again later.')
        try:
            return _submitAt(chosen[0], identifier, user, request, submitLocal)
        except SiteError as exc:
            raise SiteFailed(f'{exc} Try again in a moment, or without "site".')
    healthy = [loc for loc in locations if loc['healthy']]
    if not healthy:
        names = ', '.join(sorted({f'"{loc["site"]}"' for loc in locations}))
        raise Unavailable(
            f'No healthy site holds this dataset right now (known at: {names}, none sent a '
            'heartbeat lately). Try again later.'
        )
    deadline = time.monotonic() + settings.get(PluginSettings.LAUNCH_DEADLINE)
    passed = []
    for location in healthy:
        if passed and time.monotonic() >= deadline:
            break
        note = None
        if passed:
            note = '; '.join(str(exc).rstrip('.') for exc in passed)
            note = f'{note}; submitted at {location["site"]}.'
        try:
            return _submitAt(location, identifier, user, request, submitLocal, note)
        except SiteError as exc:
            logger.warning('Run at %s failed, trying the next site: %s', location['site'], exc)
            passed.append(exc)
    reasons = ' '.join(str(exc) for exc in passed)
    raise SiteFailed(f'No site could run this: {reasons} Try again in a moment.')


def _submitAt(location, identifier, user, request, submitLocal, failover=None):
    if location.get('local'):
        return submitLocal(location['folderId'])
    site = siteNamed(location['site'])
    if site is None:
        raise SiteError(f'Site "{location["site"]}" is no longer registered.')
    return submit(site, location, identifier, user, request, failover)


# -- following -------------------------------------------------------------------------


def refresh(doc, skipSuspect=False):
    """The record brought up to date from its site (an ended run is kept as it ended).

    ``skipSuspect``: a site whose calls failed lately (``breaker``) is not asked.
    """
    if doc.get('status') in FINAL:
        return doc
    site = siteNamed(doc['site'])
    if skipSuspect and site is not None and breaker.suspect(site):
        return doc
    if site is None:
        return _move(
            doc,
            {'status': 'failed', 'reason': f'Site "{doc["site"]}" is no longer registered here.'},
        )
    try:
        remote = SiteClient(site).getRun(doc['remoteId'], doc['identity'])
    except SiteError as exc:
        if exc.status == 404:
            return _move(doc, {'status': 'failed', 'reason': 'The site no longer has this run.'})
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc))
        # Shown, not stored: the next refresh asks again.
        doc['reason'] = f'Could not reach the site just now: {exc}'
        return doc
    breaker.succeeded(Site().collection, site)
    return _apply(doc, remote, site)


def cancel(doc):
    """Cancel the run at its site; the record as the site then answers."""
    if doc.get('status') in FINAL:
        return doc
    site = siteNamed(doc['site'])
    if site is None:
        return _move(
            doc,
            {'status': 'cancelled', 'reason': f'Site "{doc["site"]}" is no longer registered.'},
        )
    try:
        remote = SiteClient(site).cancelRun(doc['remoteId'], doc['identity'])
    except SiteError as exc:
        if exc.status == 404:
            return _move(doc, {'status': 'cancelled', 'reason': 'The site no longer has this run.'})
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc))
        raise SiteFailed(
            f'Site "{doc["site"]}" could not cancel the run: {exc} Try again in a moment.',
            status=exc.status if exc.status and exc.status < 500 else None,
        )
    breaker.succeeded(Site().collection, site)
    return _apply(doc, remote, site)


def log(doc, offset=0, follow=True):
    """The run's log at its site from byte ``offset``: an iterator of bytes, streamed while
    the run runs (``follow``), else what the site has now."""
    site = siteNamed(doc['site'])
    if site is None:
        raise NotFound(f'Site "{doc["site"]}" is no longer registered here.')
    try:
        return SiteClient(site).runLog(doc['remoteId'], doc['identity'], offset, follow)
    except SiteError as exc:
        if breaker.unavailable(exc):
            breaker.failed(Site().collection, site, str(exc))
        raise SiteFailed(
            f'Site "{doc["site"]}" did not give the log: {exc}',
            status=exc.status if exc.status and exc.status < 500 else None,
        )


def view(doc):
    """The central's record as its owner sees it (as ``runs.view`` shows a run of this site)."""
    out = Run().serialize(doc)
    out['reused'] = bool(doc.get('reused'))
    out['queueReason'] = None
    out['logTail'] = doc.get('logTail') or ''
    return out
