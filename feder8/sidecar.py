"""What feder8 does: read this site's datasets, register them with the central, keep fresh.

feder8 talks to both Girders only over HTTP (girder-client); it never imports
the plugin. The site's datasets come from the site's own ``GET
/resolver/dataset?local=true``; the central learns them through ``POST
/resolver/site`` (a full snapshot first, then only what changed) and sees the
site alive through ``PUT /resolver/site/{name}/heartbeat``. With its datasets it
registers the tools the site offers (its ``GET /resolver/tool``: id, name, whether
ready, which is the default) and the tool each dataset recommends.

Before registering it settles two things at the site:

- **one name**: the site's ``resolver.site_name`` and the name registered at the
  central are the same. feder8 sets it at a fresh site (still on its default
  name), or refuses with a message naming both;
- **the launch credential**: a dedicated, non-admin *federation service
  account* (login ``federation-service``) with READ on the private datasets it
  publishes (public ones anyone may read), recorded with the central's name in
  the site's ``resolver.federation_service`` setting, and an API key of that
  account whose only scope is launching notebooks. ``feder8 rotate`` replaces
  the key.
"""

import json
import logging
import secrets
import threading
import time
import urllib.parse
from dataclasses import dataclass

import girder_client
import requests
import tenacity

logger = logging.getLogger('feder8')

#: Token scope of the launch credential (the plugin's constants.LAUNCH_SCOPE; feder8
#: does not import the plugin).
LAUNCH_SCOPE = 'resolver.notebook.launch'
#: How long a token made from the launch credential lives, in days.
LAUNCH_TOKEN_DAYS = 1
#: Login of the site's federation service account.
SERVICE_LOGIN = 'federation-service'
#: The site setting that records the service account and the central it serves.
SERVICE_SETTING = 'resolver.federation_service'
SITE_NAME_SETTING = 'resolver.site_name'


class PermanentError(Exception):
    """A failure that retrying will not mend (bad credentials, a name owned by someone else)."""


class Stopped(Exception):
    """The sidecar was asked to stop while waiting."""


@dataclass
class Config:
    siteName: str | None
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
    frontDoorUrl: str | None = None


#: The first retry waits up to this many seconds; each next one up to twice as long.
FIRST_BACKOFF = 0.5
#: The shortest wait between two tries, in seconds.
MIN_BACKOFF = 0.05


def backoff(cap):
    """Exponential backoff with full jitter: a random wait up to 0.5 s, 1 s, 2 s ... ``cap``."""
    return tenacity.wait_random_exponential(multiplier=FIRST_BACKOFF, max=cap, min=MIN_BACKOFF)


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


def _registered(key, value):
    """One dataset of a registration: ``value`` is its name, or (name, recommended tool)."""
    name, tool = value if isinstance(value, tuple) else (value, None)
    out = {'identifier': key[0], 'folderId': key[1], 'name': name}
    if tool:
        out['tool'] = tool
    return out


class Sidecar:
    def __init__(self, config, stopEvent=None):
        self.config = config
        self.stopEvent = stopEvent or threading.Event()
        # {(identifier, folderId): name or (name, tool)} as the central has it
        self.registered = None
        self.tools = None  # the site's tools as last read: [{id, name, ready, default}]
        self.registeredTools = None  # ... and as the central has them
        self.lastFull = 0.0
        self.credential = None
        self.centralName = None
        self.notebookHost = None
        self._serviceUser = None
        self._granted = set()
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
        """Call ``fn`` until it succeeds, backing off on failures worth retrying.

        A failure not worth retrying is raised at once; a refused key (401, 403)
        as a :class:`PermanentError`. Waits end early, with :class:`Stopped`, when
        the sidecar is asked to stop.
        """

        def logRetry(state):
            logger.warning(
                '%s failed (%s); retrying in %.1fs',
                what,
                _describe(state.outcome.exception()),
                state.next_action.sleep,
            )

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(_retryable),
            wait=backoff(self.config.maxBackoff),
            sleep=self.sleep,
            before_sleep=logRetry,
            reraise=True,
        )
        try:
            return retrying(fn)
        except girder_client.HttpError as exc:
            if exc.status in (401, 403):
                raise PermanentError(f'{what}: {_describe(exc)}') from exc
            raise

    # The work ---------------------------------------------------------------------------

    def waitForGirder(self):
        def ping():
            return requests.get(
                f'{self.config.girderUrl}/system/version', timeout=5
            ).raise_for_status()

        self.retry('waiting for the local Girder', ping)

    def snapshot(self):
        """This site's datasets as the central should have them.

        ``{(identifier, folderId): name}``, or ``(name, tool)`` for a dataset that
        recommends a tool. Reads the site's tools too (:meth:`readTools`).
        """
        self.readTools()
        entries = self.site.get('resolver/dataset', parameters={'local': 'true', 'limit': 0})
        collections = self._collectionIds()
        out, private = {}, set()
        for entry in entries:
            if not self.config.includePrivate and not entry.get('public'):
                continue
            if collections is not None and entry.get('collectionId') not in collections:
                continue
            out[_key(entry)] = (
                (entry['name'], entry['tool']) if entry.get('tool') else entry['name']
            )
            if not entry.get('public'):
                private.add(entry['folderId'])
        self.grantRead(sorted(private))
        return out

    def readTools(self):
        """The site's tools, ``[{id, name, ready, default}]`` (None from a site without them)."""
        try:
            listed = self.site.get('resolver/tool')
        except girder_client.HttpError as exc:
            if exc.status in (400, 404):
                self.tools = None  # a site whose plugin predates tools
                return None
            raise
        self.tools = [
            {key: tool.get(key) for key in ('id', 'name', 'ready', 'default')} for tool in listed
        ]
        return self.tools

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

    # One name for the site ------------------------------------------------------------

    def settleSiteName(self):
        """Make the site's ``resolver.site_name`` and the registered name one; return it."""
        here = self.site.get('resolver/server')
        wanted = self.config.siteName
        if not wanted or wanted == here['siteName']:
            self.config.siteName = here['siteName']
        elif not here['siteNameSet']:
            self.site.put('system/setting', parameters={'key': SITE_NAME_SETTING, 'value': wanted})
            logger.info('named this site "%s" (resolver.site_name was its default)', wanted)
        else:
            raise PermanentError(
                f'this site is named "{here["siteName"]}" (its resolver.site_name) but feder8 '
                f'was told to register it as "{wanted}": a site has one name. Change '
                f'--site-name to "{here["siteName"]}" (or leave it out), or change the site\'s '
                'resolver.site_name'
            )
        central = self.central.get('resolver/server')['siteName']
        if central == self.config.siteName:
            raise PermanentError(
                f'the central is also named "{central}": the two would take each other\'s '
                "users for their own. Give this site another name (--site-name, or the site's "
                'resolver.site_name)'
            )
        self.centralName = central
        return self.config.siteName

    def _siteSetting(self, key):
        try:
            return self.site.get('system/setting', parameters={'key': key})
        except girder_client.HttpError as exc:
            if exc.status == 400:
                return None  # a setting this site's plugin does not have
            raise

    def learnNotebookPlaces(self):
        """Where browsers reach this site's notebooks, for the central to accept their URLs.

        The central keeps only notebook URLs on the host of ``--public-url``, on the
        site's notebook host, or on its front door: feder8 reads the last two from
        the site's settings (``resolver.notebook_host``, ``resolver.frontdoor_url``)
        unless ``--front-door-url`` was given.
        """
        if not self.config.frontDoorUrl:
            door = self._siteSetting('resolver.frontdoor_url')
            if isinstance(door, str) and door.strip():
                parts = urllib.parse.urlsplit(door.strip())
                if parts.scheme in ('http', 'https') and parts.netloc:
                    self.config.frontDoorUrl = f'{parts.scheme}://{parts.netloc}'
        host = self._siteSetting('resolver.notebook_host')
        publicHost = urllib.parse.urlsplit(self.config.publicUrl).hostname or ''
        if isinstance(host, str) and host.strip() and host.strip().lower() != publicHost.lower():
            self.notebookHost = host.strip()

    # The launch credential -------------------------------------------------------------

    def _keyName(self):
        return f'feder8 launch credential (for {self.centralName})'

    def serviceAccount(self):
        """The site's federation service account (made if missing), recorded with the central."""
        recorded = self.site.get('system/setting', parameters={'key': SERVICE_SETTING}) or {}
        user = None
        if recorded.get('userId'):
            try:
                user = self.site.get(f'user/{recorded["userId"]}')
            except girder_client.HttpError as exc:
                if exc.status not in (400, 404):
                    raise
        if user is None:
            user = next(
                (
                    u
                    for u in self.site.get('user', parameters={'limit': 0})
                    if u['login'] == SERVICE_LOGIN
                ),
                None,
            )
        if user is None:
            user = self.site.post(
                'user',
                parameters={
                    'login': SERVICE_LOGIN,
                    'email': f'{SERVICE_LOGIN}@datadns.invalid',
                    'firstName': 'Federation',
                    'lastName': 'service account',
                    # Nobody logs in as it: it acts only through its launch-scoped key.
                    'password': secrets.token_urlsafe(32),
                    'admin': 'false',
                },
            )
            logger.info('created the federation service account "%s"', SERVICE_LOGIN)
        if user.get('admin'):
            raise PermanentError(
                f'the account "{user["login"]}" is an admin; the federation service account '
                'must not be one (its key would reach every folder here)'
            )
        wanted = {'userId': user['_id'], 'central': self.centralName}
        if recorded != wanted:
            if recorded.get('central') and recorded.get('central') != self.centralName:
                # Keys given to another central are withdrawn with the old record.
                self._revokeKeys(user, keep=None)
            self.site.put(
                'system/setting', parameters={'key': SERVICE_SETTING, 'value': json.dumps(wanted)}
            )
            logger.info('this site delegates launches to the central "%s" only', self.centralName)
        return user

    def _launchKeys(self, user):
        return [
            key
            for key in self.site.get('api_key', parameters={'userId': user['_id'], 'limit': 0})
            if key['name'].startswith('feder8 launch credential')
        ]

    def _revokeKeys(self, user, keep):
        for key in self._launchKeys(user):
            if key['key'] != keep:
                self.site.delete(f'api_key/{key["_id"]}')

    def _newKey(self, user):
        key = self.site.post(
            'api_key',
            parameters={
                'name': self._keyName(),
                'scope': json.dumps([LAUNCH_SCOPE]),
                'tokenDuration': LAUNCH_TOKEN_DAYS,
                'active': 'true',
                'targetUserId': user['_id'],
            },
        )
        logger.info('created the launch credential of "%s" (scope %s)', SERVICE_LOGIN, LAUNCH_SCOPE)
        return key['key']

    def _dropLegacyAdminKeys(self):
        """Launch keys older feder8s made on the site admin's own account: revoked."""
        me = self.site.get('user/me')
        for key in self.site.get('api_key', parameters={'userId': me['_id'], 'limit': 0}):
            if key['name'].startswith('feder8 launch credential'):
                self.site.delete(f'api_key/{key["_id"]}')
                logger.info("revoked an old launch credential made on the admin's account")

    def ensureCredential(self):
        """The service account's launch-scoped API key, made once and reused."""
        if not self.config.launchCredential:
            return None
        user = self._serviceUser = self.serviceAccount()
        self._dropLegacyAdminKeys()
        for key in self._launchKeys(user):
            if (
                key['name'] == self._keyName()
                and key.get('active', True)
                and key.get('scope') == [LAUNCH_SCOPE]
            ):
                return key['key']
        return self._newKey(user)

    def rotate(self):
        """Replace the launch credential: a new key registered, then the old ones revoked."""
        self.prepare()
        user = self._serviceUser = self.retry('the federation service account', self.serviceAccount)
        self.credential = self.retry('creating a new launch credential', lambda: self._newKey(user))
        snapshot = self.retry("reading the site's datasets", self.snapshot)
        result = self.registerFull(snapshot)
        keep = self.credential
        self.retry('revoking the old launch credentials', lambda: self._revokeKeys(user, keep))
        return result

    def grantRead(self, folderIds):
        """READ for the service account on private datasets this site publishes."""
        folderIds = [f for f in folderIds if f not in self._granted]
        if not self.config.launchCredential or not folderIds:
            return
        user = self._serviceUser or self.serviceAccount()
        for folderId in folderIds:
            access = self.site.get(f'folder/{folderId}/access')
            if any(entry['id'] == user['_id'] for entry in access.get('users', [])):
                continue
            access['users'] = access.get('users', []) + [
                {'id': user['_id'], 'level': 0, 'flags': []}
            ]
            self.site.put(
                f'folder/{folderId}/access',
                parameters={'access': json.dumps(access)},
            )
            self._granted.add(folderId)

    def _post(self, body):
        return self.central.sendRestRequest('POST', 'resolver/site', json=body)

    def registerFull(self, snapshot):
        body = {
            'name': self.config.siteName,
            'apiUrl': self.config.publicUrl,
            'mode': 'full',
            'datasets': [_registered(key, value) for key, value in snapshot.items()],
        }
        if self.tools is not None:
            body['tools'] = self.tools
        if self.credential:
            body['credential'] = self.credential
        if self.config.weight is not None:
            body['weight'] = self.config.weight
        if self.config.frontDoorUrl:
            body['frontDoorUrl'] = self.config.frontDoorUrl
        if self.notebookHost:
            body['notebookHost'] = self.notebookHost
        result = self.retry('registering with the central', lambda: self._post(body))
        self._report('registered a full snapshot', result)
        self.registered = dict(snapshot)
        self.registeredTools = self.tools
        self.lastFull = time.monotonic()
        return result

    def registerChanges(self, snapshot):
        """Send only what changed since the central last heard from us; None if nothing did."""
        changed = {k: n for k, n in snapshot.items() if self.registered.get(k) != n}
        gone = [k for k in self.registered if k not in snapshot]
        toolsChanged = self.tools is not None and self.tools != self.registeredTools
        if not changed and not gone and not toolsChanged:
            return None
        body = {
            'name': self.config.siteName,
            'apiUrl': self.config.publicUrl,
            'mode': 'partial',
            'datasets': [_registered(key, value) for key, value in changed.items()],
            'removed': [{'identifier': i, 'folderId': f} for i, f in gone],
        }
        if toolsChanged:
            body['tools'] = self.tools
        result = self.retry('sending changes to the central', lambda: self._post(body))
        self._report('sent changes', result)
        self.registered = dict(snapshot)
        self.registeredTools = self.tools
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
        for disputed in result.get('disputed') or []:
            logger.warning(
                'the central flagged %s: site "%s", of another operator, holds it too',
                disputed['identifier'],
                disputed['heldBy'],
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

    def prepare(self):
        """What comes before any registration: the local Girder up, one name, notebook places."""
        self.waitForGirder()
        self.retry('settling the site name', self.settleSiteName)
        self.retry("reading where the site's notebooks are", self.learnNotebookPlaces)

    def syncOnce(self):
        """One full registration (what ``feder8 sync`` does)."""
        self.prepare()
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
