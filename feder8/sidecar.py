"""What feder8 does: read this site's datasets, register them with the central, keep fresh.

feder8 talks to both Girders only over HTTP (girder-client); it never imports
the plugin. The site's datasets come from the site's own ``GET
/resolver/dataset?local=true``; the central learns them through ``POST
/resolver/site`` (a full snapshot first, then only what changed) and sees the
site alive through ``PUT /resolver/site/{name}/heartbeat``.
"""

import json
import logging
import random
import threading
import time
from dataclasses import dataclass, field

import girder_client
import requests

logger = logging.getLogger('feder8')

#: Token scope of the launch credential (the plugin's constants.LAUNCH_SCOPE; feder8
#: does not import the plugin).
LAUNCH_SCOPE = 'resolver.notebook.launch'
#: How long a token made from the launch credential lives, in days.
LAUNCH_TOKEN_DAYS = 1


class PermanentError(Exception):
    """A failure that retrying will not mend (bad credentials, a name owned by someone else)."""


class Stopped(Exception):
    """The sidecar was asked to stop while waiting."""


@dataclass
class Config:
    siteName: str
    girderUrl: str
    girderApiKey: str
    publicUrl: str
    centralUrl: str
    centralApiKey: str
    interval: float = 30.0
    collections: tuple = ()
    includePrivate: bool = False
    launchCredential: bool = True
    fullEvery: float = 3600.0
    maxBackoff: float = 60.0
    weight: float | None = None
    capacity: int | None = None


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped."""

    base: float = 0.5
    cap: float = 60.0
    attempt: int = field(default=0)

    def next(self):
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempt))
        self.attempt += 1
        return max(delay, 0.05)

    def reset(self):
        self.attempt = 0


def _describe(exc):
    if isinstance(exc, girder_client.HttpError):
        try:
            message = json.loads(exc.responseText)['message']
        except Exception:
            message = (exc.responseText or '')[:200]
        return f'HTTP {exc.status}: {message}'
    if isinstance(exc, requests.ConnectionError):
        return 'connection refused or unreachable'
    if isinstance(exc, requests.Timeout):
        return 'timed out'
    return f'{type(exc).__name__}: {exc}'


def _retryable(exc):
    if isinstance(exc, girder_client.HttpError):
        return exc.status >= 500 or exc.status in (408, 429)
    return isinstance(exc, requests.RequestException | OSError)


def _key(entry):
    return (entry['identifier'], entry['folderId'])


class Sidecar:
    def __init__(self, config, stopEvent=None):
        self.config = config
        self.stopEvent = stopEvent or threading.Event()
        self.registered = None  # {(identifier, folderId): name} as the central has it
        self.lastFull = 0.0
        self.credential = None
        self._site = None
        self._central = None

    # Plumbing ---------------------------------------------------------------------------

    def _client(self, url, apiKey, what):
        gc = girder_client.GirderClient(apiUrl=url)
        # Not gc.authenticate(apiKey=...): that puts the key in the URL, and so in
        # Girder's access log. A form body keeps it out of every log.
        resp = requests.post(f'{url}/api_key/token', data={'key': apiKey}, timeout=30)
        if resp.status_code in (400, 401, 403):
            raise PermanentError(f'{what} refused the API key (HTTP {resp.status_code})')
        resp.raise_for_status()
        gc.setToken(resp.json()['authToken']['token'])
        return gc

    @property
    def site(self):
        if self._site is None:
            self._site = self._client(
                self.config.girderUrl, self.config.girderApiKey, 'the local Girder'
            )
        return self._site

    @property
    def central(self):
        if self._central is None:
            self._central = self._client(
                self.config.centralUrl, self.config.centralApiKey, 'the central resolver'
            )
        return self._central

    def sleep(self, seconds):
        if self.stopEvent.wait(seconds):
            raise Stopped()

    def retry(self, what, fn):
        """Call ``fn`` until it succeeds, backing off on failures worth retrying."""
        backoff = Backoff(cap=self.config.maxBackoff)
        while True:
            try:
                return fn()
            except PermanentError:
                raise
            except Exception as exc:
                if not _retryable(exc):
                    if isinstance(exc, girder_client.HttpError) and exc.status in (401, 403):
                        raise PermanentError(f'{what}: {_describe(exc)}')
                    raise
                delay = backoff.next()
                logger.warning('%s failed (%s); retrying in %.1fs', what, _describe(exc), delay)
                self.sleep(delay)

    # The work ---------------------------------------------------------------------------

    def waitForGirder(self):
        def ping():
            return requests.get(
                f'{self.config.girderUrl}/system/version', timeout=5
            ).raise_for_status()

        self.retry('waiting for the local Girder', ping)

    def snapshot(self):
        """This site's datasets as the central should have them: {(identifier, folderId): name}."""
        entries = self.site.get('resolver/dataset', parameters={'local': 'true', 'limit': 0})
        collections = self._collectionIds()
        out = {}
        for entry in entries:
            if not self.config.includePrivate and not entry.get('public'):
                continue
            if collections is not None and entry.get('collectionId') not in collections:
                continue
            out[_key(entry)] = entry['name']
        return out

    def _collectionIds(self):
        """Ids of the collections to publish (given by name or id), or None for all."""
        if not self.config.collections:
            return None
        wanted = set(self.config.collections)
        return {
            c['_id']
            for c in self.site.get('collection', parameters={'limit': 0})
            if c['_id'] in wanted or c['name'] in wanted
        }

    def ensureCredential(self):
        """A site API key that may only launch notebooks, made once and reused."""
        if not self.config.launchCredential:
            return None
        name = f'feder8 launch credential ({self.config.siteName})'
        me = self.site.get('user/me')
        for key in self.site.get('api_key', parameters={'userId': me['_id'], 'limit': 0}):
            if key['name'] == name and key.get('active', True):
                return key['key']
        key = self.site.post(
            'api_key',
            parameters={
                'name': name,
                'scope': '["%s"]' % LAUNCH_SCOPE,
                'tokenDuration': LAUNCH_TOKEN_DAYS,
                'active': 'true',
            },
        )
        logger.info('created the launch credential at the local Girder (scope %s)', LAUNCH_SCOPE)
        return key['key']

    def _post(self, body):
        return self.central.sendRestRequest('POST', 'resolver/site', json=body)

    def registerFull(self, snapshot):
        body = {
            'name': self.config.siteName,
            'apiUrl': self.config.publicUrl,
            'mode': 'full',
            'datasets': [
                {'identifier': i, 'folderId': f, 'name': n} for (i, f), n in snapshot.items()
            ],
        }
        if self.credential:
            body['credential'] = self.credential
        if self.config.weight is not None:
            body['weight'] = self.config.weight
        result = self.retry('registering with the central', lambda: self._post(body))
        self._report('registered a full snapshot', result)
        self.registered = dict(snapshot)
        self.lastFull = time.monotonic()
        return result

    def registerChanges(self, snapshot):
        """Send only what changed since the central last heard from us; None if nothing did."""
        changed = {k: n for k, n in snapshot.items() if self.registered.get(k) != n}
        gone = [k for k in self.registered if k not in snapshot]
        if not changed and not gone:
            return None
        body = {
            'name': self.config.siteName,
            'apiUrl': self.config.publicUrl,
            'mode': 'partial',
            'datasets': [
                {'identifier': i, 'folderId': f, 'name': n} for (i, f), n in changed.items()
            ],
            'removed': [{'identifier': i, 'folderId': f} for i, f in gone],
        }
        result = self.retry('sending changes to the central', lambda: self._post(body))
        self._report('sent changes', result)
        self.registered = dict(snapshot)
        return result

    def _report(self, what, result):
        logger.info(
            '%s: %d datasets at the central (added %d, updated %d, removed %d, rejected %d)',
            what,
            result['total'],
            result['added'],
            result['updated'],
            result['removed'],
            len(result['rejected']),
        )
        for rejected in result['rejected']:
            logger.warning(
                'the central rejected %s: %s', rejected['identifier'], rejected['reason']
            )

    def heartbeat(self):
        """Tell the central we are alive; False when it no longer knows this site."""

        params = {'running': self.runningNotebooks()}
        if self.config.capacity is not None:
            params['capacity'] = self.config.capacity
        params = {k: v for k, v in params.items() if v is not None}

        def beat():
            try:
                self.central.put(
                    f'resolver/site/{self.config.siteName}/heartbeat', parameters=params
                )
                return True
            except girder_client.HttpError as exc:
                if exc.status == 404:
                    return False
                raise

        return self.retry('heartbeat', beat)

    def runningNotebooks(self):
        """How many notebooks the site runs now (None if it cannot say)."""
        try:
            return len(self.site.get('notebook', parameters={'live': 'true', 'limit': 0}))
        except Exception as exc:  # noqa: BLE001 - capacity is a hint, never a failure
            logger.debug('could not count running notebooks: %s', _describe(exc))
            return None

    def syncOnce(self):
        """One full registration (what ``feder8 sync`` does)."""
        self.waitForGirder()
        self.credential = self.retry('creating the launch credential', self.ensureCredential)
        snapshot = self.retry("reading the site's datasets", self.snapshot)
        return self.registerFull(snapshot)

    def run(self):
        """Register, then heartbeat and re-sync every interval until stopped."""
        logger.info(
            'feder8 for site "%s": local Girder %s, central %s, every %ss',
            self.config.siteName,
            self.config.girderUrl,
            self.config.centralUrl,
            self.config.interval,
        )
        try:
            self.syncOnce()
            while True:
                self.sleep(self.config.interval)
                snapshot = self.retry("reading the site's datasets", self.snapshot)
                if time.monotonic() - self.lastFull >= self.config.fullEvery:
                    self.registerFull(snapshot)
                    continue
                if not self.heartbeat():
                    logger.warning(
                        'the central does not know this site (restarted with a '
                        'fresh database?); registering again'
                    )
                    self.registerFull(snapshot)
                    continue
                self.registerChanges(snapshot)
        except Stopped:
            logger.info('stopping')
