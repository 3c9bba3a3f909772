"""A circuit breaker per site: a site that fails calls is *suspect* for a while.

A site is suspect at once after a failed launch, or after
``resolver.suspect_after`` failed calls in a row (status, stop); a call that
succeeds resets the count. A suspect site is ranked after the healthy ones and
tried again after ``resolver.suspect_seconds`` (its next failure makes it
suspect again at once), or as soon as its sidecar sends a heartbeat that shows
it reached the site's Girder.

The state is kept on the site's document (``failures``, ``suspectSince``,
``suspectReason``), so every Girder process of a central sees it; writes happen
only when a call fails or the first success after failures, never on the happy
path.
"""

import threading

import pymongo

from . import cache, metrics, settings
from .federation import SiteError
from .primitives import aware, now
from .settings import PluginSettings

#: Fields a heartbeat from a site whose Girder answers its sidecar resets.
RESET = {'$set': {'failures': 0}, '$unset': {'suspectSince': '', 'suspectReason': ''}}


def suspect(site, moment=None):
    """True while ``site`` (a site document) is suspect: failed lately, cool-down not over."""
    since = aware(site.get('suspectSince'))
    if since is None:
        return False
    seconds = settings.get(PluginSettings.SUSPECT_SECONDS)
    return ((moment or now()) - since).total_seconds() < seconds


def unavailable(exc):
    """True for a failure that another site may not have: no answer, a 5xx, or a refused
    launch credential (the site's fault, not the person's)."""
    return exc.status is None or exc.status >= 500 or exc.status in (401, 403)


def failed(collection, site, reason, launch=False):
    """Record a failed call to ``site``; it becomes suspect after a failed launch or after
    ``resolver.suspect_after`` failures in a row, or at once if it was suspect before."""
    updated = collection.find_one_and_update(
        {'_id': site['_id']},
        {'$inc': {'failures': 1}},
        projection={'failures': 1, 'suspectSince': 1},
        return_document=pymongo.ReturnDocument.AFTER,
    )
    if updated is None:
        return
    wasSuspect = updated.get('suspectSince') is not None
    if launch or wasSuspect or updated['failures'] >= settings.get(PluginSettings.SUSPECT_AFTER):
        fields = {'suspectSince': now(), 'suspectReason': str(reason)[:500]}
        collection.update_one({'_id': site['_id']}, {'$set': fields})
        site.update(fields)
        if not suspect(updated):
            metrics.SUSPECTED.labels(site=site['name']).inc()
    site['failures'] = updated['failures']
    cache.sites.discard(site['name'])


def succeeded(collection, site):
    """Record a call ``site`` answered: its failures are forgiven (written only if it had
    any, so that the happy path costs nothing)."""
    if not site.get('failures') and site.get('suspectSince') is None:
        return
    collection.update_one({'_id': site['_id']}, RESET)
    site['failures'] = 0
    site.pop('suspectSince', None)
    site.pop('suspectReason', None)
    cache.sites.discard(site['name'])


def answerWithin(seconds, call, siteName, late=None):
    """``call()``'s result if it comes within ``seconds``; else :class:`SiteError` (status
    None) saying that site ``siteName`` did not answer.

    The call goes on in the background up to its own timeouts; if it then succeeds,
    its result is handed to ``late`` (to undo it: a launch nobody waits for any more).
    """
    box = {}
    lock = threading.Lock()
    done = threading.Event()

    def run():
        try:
            box['result'] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the caller as is
            box['error'] = exc
        with lock:
            done.set()
            abandoned = box.get('abandoned', False)
        if abandoned and 'result' in box and late is not None:
            try:
                late(box['result'])
            except Exception:  # noqa: BLE001 - best effort: the site's culler ends it anyway
                pass

    threading.Thread(target=run, name=f'call {siteName}', daemon=True).start()
    done.wait(seconds)
    with lock:
        if not done.is_set():
            box['abandoned'] = True
            raise SiteError(f'Site "{siteName}" did not answer in {seconds:g} s.')
    if 'error' in box:
        raise box['error']
    return box['result']
