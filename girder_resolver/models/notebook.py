"""Notebooks: one live notebook per (site, delegator, identity, folder), next to the data.

A notebook document moves through ``launching → running → stopping → stopped``,
or ends in ``error`` with the reason in ``message``. ``live`` is true while it
launches, runs or stops; a unique partial index on (site, userId, identity,
folderId) over live documents makes "one live notebook per person and folder"
hold even when requests race. ``userId`` is who asked for it: the person, or at
a site the federation service account that delegated the launch; a notebook is
only ever found again by the same delegator and identity. The launch itself
runs in a background thread, so a request returns at once and the client
follows ``status`` and ``message``.

Local notebooks (``site`` = this site) run through a launcher backend
(``girder_resolver.launcher``) chosen by settings; the model never knows which.
With ``resolver.pool_size`` > 0 a launch first claims a warm server from the
pool (``girder_resolver.pool``) and is running at once; an empty pool means a
cold launch.
Remote notebooks (``site`` = another site, recorded at a central resolver)
point at a notebook that the site runs on the person's behalf (``remoteId``);
they are refreshed from and stopped at that site through its launch credential.

An *identity* names a person across the federation: ``<site name>:<user id>``
of the site where they log in. :func:`identityOf` is the one place that forms
it.
"""

import base64
import datetime
import hashlib
import hmac
import logging
import os
import re
import secrets
import socket
import threading
import time
import urllib.parse

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from girder.constants import AccessType
from girder.exceptions import RestException, ValidationException
from girder.models.folder import Folder
from girder.models.model_base import Model
from girder.models.setting import Setting

from .. import breaker, frontdoor, metrics, settings
from ..errors import InvalidTransition
from ..federation import SiteClient, SiteError, UnsafeUrl, checkNotebookUrl, sanitize
from ..launcher import LaunchError, LaunchSpec, get_configured_launcher
from ..settings import PluginSettings
from . import datapath
from .dataset import identifiersFromMetadata

logger = logging.getLogger(__name__)

LIVE = ('launching', 'running', 'stopping')
FINAL = ('stopped', 'error')
STATUSES = LIVE + FINAL
#: The one table of notebook status changes: for each status, the statuses it may be
#: entered from. :meth:`Notebook.transition` applies it to every status write, guarded
#: by the allowed previous statuses (a new notebook is inserted ``launching``, or
#: ``running`` from the warm pool, and enters no status). A status may be entered from
#: itself where a write keeps it (a launch's progress, activity, a stop claimed again).
#: A caller may narrow the allowed previous statuses (``fromStatus``): a local
#: notebook is marked stopped only once claimed ``stopping``; the wider rows are for a
#: central's records of notebooks at other sites, which follow what their site says.
TRANSITIONS = {
    'launching': ('launching',),
    'running': ('launching', 'running'),
    'stopping': ('launching', 'running', 'stopping'),
    # From error: a remote record that ended in error is stopped at its site on request.
    'stopped': ('launching', 'running', 'stopping', 'error'),
    'error': ('launching', 'running', 'stopping'),
}
#: Fields of a notebook that its owner (or an admin) sees.
PUBLIC_FIELDS = (
    '_id',
    'folderId',
    'userId',
    'identity',
    'site',
    'status',
    'url',
    'created',
    'updated',
    'lastActivity',
    'message',
    # At a central, the id of a notebook run at another site, there.
    'remoteId',
    # At a central, what a launch passed over on its way to this site, in words.
    'failover',
)
#: The unique partial index behind "one live notebook per (site, delegator, identity,
#: folder)".
LIVE_INDEX = 'one_live_notebook_per_delegator_identity_and_folder'
RETIRED_LIVE_INDEX = 'one_live_notebook_per_identity_and_folder'
#: A launch still "launching" after this many seconds has lost its thread (a crash).
LAUNCH_GRACE = 180

_IDENTITY_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}:[A-Za-z0-9_-]{1,64}$')
_LOOPBACK = {'127.0.0.1', 'localhost', '::1', '[::1]'}
# settings.instanceId(), a random id per database, labels this installation's
# notebooks, so that orphan clean-up never touches notebooks of another Girder
# sharing the machine (or the container engine).
# The key that signs single-use links to running notebooks (a random setting, too).
_TICKET_KEY = 'resolver.ticket_key'
#: Seconds a notebook's open link (its ticket) stays valid; each works once.
TICKET_SECONDS = 600
INSTANCE_LABEL = 'datadns.instance'
IDENTITY_LABEL = 'datadns.identity'

_launchers = {}
_launchersLock = threading.Lock()


def _now():
    return datetime.datetime.now(datetime.timezone.utc)


def _aware(value):
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def identityOf(user, siteName=None):
    """The federation-wide identity of a user of this site: ``<site name>:<user id>``."""
    return f'{siteName or settings.get(PluginSettings.SITE_NAME)}:{user["_id"]}'


def validIdentity(text):
    return isinstance(text, str) and bool(_IDENTITY_RE.match(text))


def instanceId():
    """This installation's random id (made once per database, atomically)."""
    return settings.instanceId()


def _randomSetting(key, size):
    """A random value kept under ``key`` in the settings collection (made once, atomically)."""
    coll = Setting().collection
    doc = coll.find_one({'key': key})
    if doc is None:
        coll.update_one(
            {'key': key},
            {'$setOnInsert': {'value': secrets.token_hex(size)}},
            upsert=True,
        )
        doc = coll.find_one({'key': key})
    return doc['value']


#: Notebook changes made by this process, so that an events stream of this process
#: sends a change the moment it is written rather than at its next database poll.
_changes = threading.Condition()
_changeCount = 0


def _changed():
    global _changeCount
    with _changes:
        _changeCount += 1
        _changes.notify_all()


def changeCount():
    """How many notebook changes this process has written so far."""
    return _changeCount


def waitForChange(since, timeout):
    """Wait until this process writes a notebook change after ``since``, or ``timeout``.

    True when there was a change.
    """
    with _changes:
        return _changes.wait_for(lambda: _changeCount != since, timeout)


def _processStart(pid):
    """When process ``pid`` started (clock ticks after boot), or None if there is none."""
    try:
        with open(f'/proc/{pid}/stat') as stat:
            # The command name (field 2) may hold spaces and parentheses: split after it.
            return int(stat.read().rsplit(')', 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _hostId():
    try:
        with open('/proc/sys/kernel/random/boot_id') as boot:
            bootId = boot.read().strip()
    except OSError:
        bootId = ''
    return f'{socket.gethostname()}/{bootId}'


def workerStamp():
    """This server process, as recorded on the launches and stops it carries out."""
    return {'host': _hostId(), 'pid': os.getpid(), 'started': _processStart(os.getpid())}


def workerGone(doc):
    """True when the process that was launching or stopping ``doc`` is known to be dead.

    Only a process of this machine (same host name and boot) can be judged; for any
    other, or a record without the stamp, the answer is False and the caller waits
    out its grace period instead.
    """
    stamp = doc.get('worker')
    if not isinstance(stamp, dict) or stamp.get('host') != _hostId():
        return False
    if stamp.get('started') is None or not isinstance(stamp.get('pid'), int):
        return False
    return _processStart(stamp['pid']) != stamp['started']


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
    }
    key = (name, tuple(sorted(config.items())))
    with _launchersLock:
        if key not in _launchers:
            _launchers[key] = get_configured_launcher(name, **config)
        return _launchers[key]


def _launcherOf(doc):
    return launcher((doc.get('handle') or {}).get('backend') or doc.get('backend'))


class Notebook(Model):
    def initialize(self):
        self.name = 'resolver_notebook'
        self.ensureIndices(
            [
                'identity',
                'status',
                'userId',
                ([('folderId', 1), ('identity', 1)], {}),
                (
                    [('site', 1), ('userId', 1), ('identity', 1), ('folderId', 1)],
                    {
                        'unique': True,
                        'partialFilterExpression': {'live': True},
                        'name': LIVE_INDEX,
                    },
                ),
            ]
        )

    def reconnect(self):
        super().reconnect()
        # The key before this one did not name who delegated: it would refuse a second
        # delegator's notebook for the same identity and folder, so it goes.
        try:
            if RETIRED_LIVE_INDEX in self.collection.index_information():
                self.collection.drop_index(RETIRED_LIVE_INDEX)
        except pymongo.errors.PyMongoError:
            logger.warning('Could not drop the old live-notebook index', exc_info=True)

    def validate(self, doc):
        if doc.get('status') not in LIVE + FINAL:
            raise ValidationException(f'Notebook status must be one of {", ".join(LIVE + FINAL)}.')
        if not validIdentity(doc.get('identity')):
            raise ValidationException('A notebook identity is "<site>:<user id>".')
        doc['live'] = doc['status'] in LIVE
        return doc

    # -- views -----------------------------------------------------------------

    def serialize(self, doc):
        """The notebook as its owner sees it.

        ``url`` is what a browser opens: for a running notebook of this site, a
        single-use link through the front door (see :meth:`openUrl`); the Jupyter
        token itself never appears in it.
        """
        out = {field: doc.get(field) for field in PUBLIC_FIELDS}
        if doc.get('status') != 'running':
            out['url'] = None
        elif self.isLocal(doc) and doc.get('token'):
            try:
                out['url'] = self.openUrl(doc)
            except frontdoor.FrontDoorError:
                out['url'] = None
        return out

    # -- opening through the front door -------------------------------------------

    @staticmethod
    def _ticketSignature(doc, expires, nonce):
        key = _randomSetting(_TICKET_KEY, 32).encode()
        # In milliseconds: the database keeps no finer time, and a ticket made from the
        # record in memory (a pooled launch's answer) must match the one read back.
        created = int(_aware(doc['created']).timestamp() * 1000)
        message = f'{doc["_id"]}.{created}.{expires}.{nonce}'.encode()
        digest = hmac.new(key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip('=')

    def openUrl(self, doc):
        """A link that opens a running local notebook once, within ``TICKET_SECONDS``.

        ``<front door>/api/v1/notebook/<id>/open?ticket=…``: the ticket is signed
        with this installation's key and names this notebook, which no other
        launch shares; :meth:`redeemTicket` accepts each ticket once.
        """
        expires = int(time.time()) + TICKET_SECONDS
        nonce = secrets.token_urlsafe(12)
        ticket = f'{expires}.{nonce}.{self._ticketSignature(doc, expires, nonce)}'
        query = urllib.parse.urlencode({'ticket': ticket})
        return f'{frontdoor.publicUrl()}/api/v1/notebook/{doc["_id"]}/open?{query}'

    def ticketIsGenuine(self, doc, ticket):
        """Whether ``ticket`` was made for this notebook and has not expired (used or not)."""
        parts = ticket.split('.') if isinstance(ticket, str) else ()
        if len(parts) != 3 or not parts[0].isdigit():
            return False
        expires, nonce, signature = int(parts[0]), parts[1], parts[2]
        if expires < time.time() or expires > time.time() + TICKET_SECONDS + 60:
            return False
        return hmac.compare_digest(signature, self._ticketSignature(doc, expires, nonce))

    def redeemTicket(self, doc, ticket):
        """True once for a genuine ticket of this running notebook; else False."""
        if doc.get('status') != 'running' or not self.ticketIsGenuine(doc, ticket):
            return False
        # Single use: the first redemption records the nonce, atomically.
        nonce = ticket.split('.')[1]
        used = self.collection.update_one(
            {'_id': doc['_id'], 'status': 'running', 'usedTickets': {'$ne': nonce}},
            {'$push': {'usedTickets': {'$each': [nonce], '$slice': -200}}},
        )
        return used.modified_count == 1

    def frontDoorUrl(self, doc):
        """The notebook's address at the front door (no ticket, no token)."""
        return f'{frontdoor.publicUrl()}{frontdoor.routePath(doc["_id"])}/'

    def publish(self, doc, backend, handle):
        """Route the front door's ``/notebook/<id>/`` to a server; returns its front door URL.

        Raises :class:`LaunchError` when the front door cannot take the route.
        """
        try:
            frontdoor.addRoute(str(doc['_id']), backend.proxy_target(handle))
            return self.frontDoorUrl(doc)
        except frontdoor.FrontDoorError as exc:
            raise LaunchError(f'The notebook runs but the front door cannot reach it: {exc}')

    def unpublish(self, doc):
        """Remove the front door's route: at once, ``/notebook/<id>/`` says it was stopped."""
        try:
            frontdoor.removeRoute(str(doc['_id']))
        except frontdoor.FrontDoorError as exc:
            logger.warning('Front door: could not remove the route of %s: %s', doc['_id'], exc)

    def frontDoorRoutes(self):
        """``{notebook id: proxy target}`` of this site's running notebooks (for the proxy)."""
        site = settings.get(PluginSettings.SITE_NAME)
        routes = {}
        for doc in self.find({'site': site, 'status': 'running', 'handle': {'$exists': True}}):
            try:
                routes[str(doc['_id'])] = _launcherOf(doc).proxy_target(doc['handle'])
            except (KeyError, ValueError):
                continue
        return routes

    def isLocal(self, doc):
        return doc.get('site') == settings.get(PluginSettings.SITE_NAME)

    # -- where the data is -------------------------------------------------------

    def dataPath(self, folder):
        """The directory on this machine that holds dataset ``folder``'s data, or None.

        The ``resolver.data_paths`` setting (an admin's mapping) wins; otherwise the
        directory that the folder's own filesystem import came from, as recorded
        on the folder when it was imported (``models/datapath.py``). Never derived
        from files found below the folder: copied files keep their original path.
        """
        explicit = (settings.get(PluginSettings.DATA_PATHS) or {}).get(str(folder['_id']))
        if explicit:
            return explicit if os.path.isdir(explicit) else None
        return datapath.importedPath(folder)

    @staticmethod
    def isDatasetFolder(folder):
        """A folder tagged with an identifier, or one an admin mapped in resolver.data_paths."""
        if str(folder['_id']) in (settings.get(PluginSettings.DATA_PATHS) or {}):
            return True
        key = settings.get(PluginSettings.IDENTIFIER_KEY)
        identifiers, _ = identifiersFromMetadata((folder.get('meta') or {}).get(key))
        return bool(identifiers)

    # -- launching ---------------------------------------------------------------

    def _liveQuery(self, site, identity, folderId, userId):
        return {
            'site': site,
            'userId': userId,
            'identity': identity,
            'folderId': folderId,
            'live': True,
        }

    def findLive(self, site, identity, folderId, userId):
        """The live notebook of ``identity`` for the folder, launched through ``userId``.

        ``userId`` is who asked: the person, or at a site the federation service
        account that delegated the launch. A notebook is found again only by the
        same delegator and identity that launched it.
        """
        return self.findOne(self._liveQuery(site, identity, folderId, userId))

    def _checkCap(self, site, identity, userId, excluding=None):
        cap = settings.get(PluginSettings.USER_CAP)
        query = {'site': site, 'userId': userId, 'identity': identity, 'live': True}
        if excluding is not None:
            query['_id'] = {'$ne': excluding}
        if self.collection.count_documents(query) >= cap:
            raise RestException(
                f'You already have {cap} notebook(s) running at this site, the most allowed '
                f'(setting resolver.user_cap = {cap}). Stop one first: DELETE /notebook/<id> '
                '(or its Stop button); GET /notebook lists yours.',
                code=429,
            )

    def _checkSiteCap(self, site, excluding=None):
        """503 when this site already runs ``resolver.site_cap`` live notebooks (0 = no cap)."""
        cap = settings.get(PluginSettings.SITE_CAP)
        if not cap or site != settings.get(PluginSettings.SITE_NAME):
            return
        query = {'site': site, 'live': True}
        if excluding is not None:
            query['_id'] = {'$ne': excluding}
        if self.collection.count_documents(query) >= cap:
            raise RestException(
                f'This site is running as many notebooks as it may ({cap}, setting '
                'resolver.site_cap). Try again later, when some have stopped, or at another '
                'site that holds the dataset.',
                code=503,
            )

    def _claimSlot(self, site, identity, folderId, user, fields, checked=False):
        """Insert a live notebook for (site, identity, folder), or return the live one.

        Returns ``(doc, created)``. The unique partial index settles races; the cap
        is checked before and re-checked after the insert, so two concurrent
        launches cannot both slip past it. ``checked``: the caller has just looked
        for a live notebook and checked the caps (a pooled launch), so only the
        insert and the re-check after it are left.
        """
        if not checked:
            existing = self.findLive(site, identity, folderId, user['_id'])
            if existing is not None:
                return existing, False
            self._checkCap(site, identity, user['_id'])
            self._checkSiteCap(site)
        now = _now()
        doc = self.validate(
            {
                'site': site,
                'identity': identity,
                'folderId': folderId,
                'userId': user['_id'],
                'status': 'launching',
                'message': 'Queued',
                'url': None,
                'created': now,
                'updated': now,
                'lastActivity': now,
                'worker': workerStamp(),
                **fields,
            }
        )
        try:
            self.collection.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            existing = self.findLive(site, identity, folderId, user['_id'])
            if existing is None:  # it ended in between: very unlikely, let the caller retry
                raise RestException('The notebook changed state meanwhile; try again.', code=409)
            return existing, False
        try:
            self._checkCap(site, identity, user['_id'], excluding=doc['_id'])
            self._checkSiteCap(site, excluding=doc['_id'])
        except RestException:
            self.collection.delete_one({'_id': doc['_id']})
            raise
        return doc, True

    def launch(self, folder, user, identity=None):
        """Launch, or return, ``identity``'s live notebook for ``folder`` at this site.

        ``identity`` defaults to the user's own; a federation launch passes the
        remote person's. The server starts in a background thread.
        """
        identity = identity or identityOf(user)
        site = settings.get(PluginSettings.SITE_NAME)
        folderId = str(folder['_id'])
        existing = self.findLive(site, identity, folderId, user['_id'])
        if existing is not None:
            return existing
        if not self.isDatasetFolder(folder):
            key = settings.get(PluginSettings.IDENTIFIER_KEY)
            raise RestException(
                f'Folder "{folder["name"]}" is not a dataset: notebooks start only for folders '
                f'tagged with an identifier (metadata "{key}") or mapped by an admin in the '
                'resolver.data_paths setting.',
                code=422,
            )
        path = self.dataPath(folder)
        if path is None:
            raise RestException(
                f'This dataset\'s data is not on this server\'s disk: folder "{folder["name"]}" '
                'was not itself imported from a filesystem assetstore (a copy of a dataset, or '
                'files copied into it, do not count) and has no entry in the '
                'resolver.data_paths setting, so no notebook can be started next to it.',
                code=422,
            )
        pooled = self._launchFromPool(site, identity, folderId, user, path)
        if pooled is not None:
            return pooled
        doc, created = self._claimSlot(
            site,
            identity,
            folderId,
            user,
            {
                'backend': settings.get(PluginSettings.BACKEND),
                'dataPath': path,
                'dataName': folder['name'],
                'token': secrets.token_urlsafe(24),
            },
        )
        if created:
            thread = threading.Thread(
                target=self._launchInBackground, args=(doc,), name=f'notebook-{doc["_id"]}'
            )
            thread.daemon = True
            thread.start()
        return doc

    def _launchFromPool(self, site, identity, folderId, user, path):
        """Hand ``identity`` a warm server from the pool, bound to ``path``; None if none.

        The notebook is running on return, under the pool server's id, token and
        handle (see ``girder_resolver.pool``).
        """
        # The pool builds on this model, so it is imported here rather than at the top.
        from .. import pool

        if not pool.targetSize():
            return None
        # Checked first so that a launch over a cap does not use up a pooled server.
        timer = metrics.StepTimer(metrics.POOL_CLAIM_STEPS)
        started = time.monotonic()
        self._checkCap(site, identity, user['_id'])
        self._checkSiteCap(site)
        timer.step('checks')
        entry = pool.take(identity)
        if entry is None:
            return None
        try:
            timer.step('claim')
            pool.bind(entry, path)
            timer.step('bind')
            if pool.routedNow(entry):
                url = self.frontDoorUrl(entry)  # routed when it became ready
            else:
                url = self.publish(
                    {'_id': entry['_id']}, launcher(entry['backend']), entry['handle']
                )
            timer.step('route')
            doc, created = self._claimSlot(
                site,
                identity,
                folderId,
                user,
                {
                    '_id': entry['_id'],
                    'backend': entry['backend'],
                    'dataPath': path,
                    'dataName': pool.DATA_NAME,
                    'token': entry['token'],
                    'handle': entry['handle'],
                    'pooled': True,
                    'status': 'running',
                    'message': 'Running',
                    'url': url,
                },
                checked=True,
            )
            timer.step('record')
        except BaseException as exc:
            # Bound but never handed out: stopped, never offered to anyone else.
            self.unpublish(entry)
            pool.discard(entry, wait=False)
            if isinstance(exc, LaunchError):
                raise RestException(f'The notebook could not be started: {exc}', code=503)
            raise
        if not created:
            self.unpublish(entry)
            pool.discard(entry, wait=False)  # a concurrent launch made the notebook first
            return doc
        pool.settle(entry)
        timer.step('settle')
        metrics.LAUNCHES.labels(backend=f'{entry["backend"]}-pool', outcome='running').observe(
            time.monotonic() - started
        )
        logger.info('Notebook %s (warm pool) is running for %s', doc['_id'], identity)
        return doc

    def transition(self, doc, to, fromStatus=None, guard=None, unset=(), **fields):
        """Move ``doc`` to status ``to`` and write ``fields``, atomically; the stored result.

        Guarded by the statuses ``to`` may be entered from (:data:`TRANSITIONS`),
        narrowed to ``fromStatus`` if given, and by the extra query fields ``guard``.
        :class:`InvalidTransition` when the guard misses (the notebook moved on, or is
        gone). ``doc`` itself gets the fields written, as a caller holding it expects.
        """
        allowed = TRANSITIONS[to]
        if fromStatus is not None:
            if not set(fromStatus) <= set(allowed):
                raise ValueError(f'A notebook never becomes {to} from {fromStatus}.')
            allowed = tuple(fromStatus)
        fields.update(status=to, live=to in LIVE, updated=_now())
        update = {'$set': fields}
        if unset:
            update['$unset'] = {field: '' for field in unset}
        query = {**(guard or {}), '_id': doc['_id'], 'status': {'$in': list(allowed)}}
        stored = self.collection.find_one_and_update(
            query, update, return_document=pymongo.ReturnDocument.AFTER
        )
        if stored is None:
            current = self.collection.find_one({'_id': doc['_id']}, {'status': True})
            raise InvalidTransition((current or {}).get('status'), to)
        doc.update(fields)
        for field in unset:
            doc.pop(field, None)
        _changed()
        return stored

    def setFields(self, doc, **fields):
        """Write fields of ``doc`` that are not its status (a message, a failover note)."""
        if 'status' in fields or 'live' in fields:
            raise ValueError('A notebook status changes only through transition().')
        fields['updated'] = _now()
        result = self.collection.update_one({'_id': doc['_id']}, {'$set': fields})
        if result.matched_count:
            doc.update(fields)
            _changed()
        return bool(result.matched_count)

    def _launchInBackground(self, doc):
        started = time.monotonic()
        try:
            self._launch(doc)
        except Exception as exc:  # the thread must leave no notebook "launching"
            logger.exception('Notebook %s failed to launch', doc['_id'])
            self._fail(doc, f'The notebook could not be started: {exc}')
        final = self.collection.find_one({'_id': doc['_id']}, {'status': True}) or {}
        outcome = {'running': 'running', 'error': 'error'}.get(final.get('status'), 'stopped')
        metrics.LAUNCHES.labels(backend=doc.get('backend', 'unknown'), outcome=outcome).observe(
            time.monotonic() - started
        )

    def _launch(self, doc):
        notebookId = str(doc['_id'])
        backend = _launcherOf(doc)
        try:
            self.transition(doc, 'launching', message='Starting the notebook server')
        except InvalidTransition:
            return self.finishStopping(doc)
        try:
            spec = LaunchSpec(
                notebookId,
                doc['token'],
                doc['dataPath'],
                doc['dataName'],
                labels={INSTANCE_LABEL: instanceId(), IDENTITY_LABEL: doc['identity']},
            )
            handle = backend.start(spec)
        except LaunchError as exc:
            return self._fail(doc, str(exc))
        try:
            self.transition(
                doc, 'launching', handle=handle, message='Waiting for Jupyter to answer'
            )
        except InvalidTransition:
            # Stopped while starting: the stop found no handle, so it is ours to release.
            backend.stop(handle)
            doc['handle'] = handle
            return self.finishStopping(doc)
        try:
            self._waitReady(backend, handle, doc['token'])
            url = self.publish(doc, backend, handle)
        except LaunchError as exc:
            backend.stop(handle)
            return self._fail(doc, str(exc))
        try:
            self.transition(
                doc,
                'running',
                fromStatus=('launching',),
                url=url,
                message='Running',
                lastActivity=_now(),
            )
        except InvalidTransition:
            # Stopped while waiting: whoever stopped it released the handle (and may have
            # removed the route before it was added).
            self.unpublish(doc)
            return None
        logger.info('Notebook %s is running for %s', notebookId, doc['identity'])

    def _waitReady(self, backend, handle, token):
        """Wait until the new server answers to its token; :class:`LaunchError` if it does not.

        The launcher polls HTTP every ``ready_poll_interval`` (25 ms) and asks
        its engine whether the server still runs only while it does not answer.
        """
        backend.wait_ready(handle, token=token)

    def _fail(self, doc, reason):
        try:
            self.transition(doc, 'error', message=reason, url=None, unset=('token',))
        except InvalidTransition:
            pass  # stopped meanwhile: the stop's outcome stands

    def finishStopping(self, doc, message='Stopped'):
        """Mark a notebook claimed ``stopping`` stopped (its server is released); ``doc``."""
        try:
            self.transition(
                doc,
                'stopped',
                fromStatus=('stopping',),
                message=message,
                url=None,
                unset=('token',),
            )
        except InvalidTransition:
            pass  # not claimed for stopping (ended otherwise): nothing to finish
        return doc

    # -- stopping ----------------------------------------------------------------

    def claimForStop(self, doc, fromStatus=('launching', 'running'), message='Stopping'):
        """Move ``doc`` to ``stopping`` atomically; the claimed document, or None if taken."""
        try:
            return self.transition(
                dict(doc), 'stopping', fromStatus=fromStatus, message=message, worker=workerStamp()
            )
        except InvalidTransition:
            return None

    def stop(self, doc, reason='Stopped'):
        """Stop a local notebook and release its process or container and port.

        Safe against concurrent stops: only the caller that claims it stops it.
        A notebook still starting without a handle is left to its launch thread,
        which sees the claim and releases what it started.
        """
        claimed = self.claimForStop(doc)
        if claimed is None:
            return self.load(doc['_id']) or doc
        return self.release(claimed, reason)

    def release(self, claimed, reason='Stopped'):
        """Release a notebook claimed as ``stopping``: stop its backend, mark it stopped."""
        handle = claimed.get('handle')
        if handle:
            self.unpublish(claimed)
            try:
                _launcherOf(claimed).stop(handle)
            except LaunchError as exc:
                # The engine is down: keep the claim, so the culler retries later.
                self.setFields(claimed, message=f'Could not stop yet: {exc}')
                return claimed
            return self.finishStopping(claimed, reason)
        # Still starting, with no handle yet: its launch thread releases it.
        return claimed

    # -- remote notebooks (at the central) ---------------------------------------

    def _remoteFields(self, doc, remote, site):
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
        lastActivity = _parseTime(lastActivity) if isinstance(lastActivity, str) else None
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

    def _applyRemote(self, doc, remote, site):
        try:
            fields = self._remoteFields(doc, remote, site)
        except UnsafeUrl as exc:
            return self._moveRemote(doc, 'error', url=None, message=_refusedUrl(site, exc))
        return self._moveRemote(doc, fields.pop('status'), **fields)

    def _moveRemote(self, doc, to, **fields):
        """A remote record's transition; one that moved on meanwhile is handed back as it is."""
        try:
            self.transition(doc, to, **fields)
        except InvalidTransition:
            return self.load(doc['_id']) or doc
        return doc

    def launchRemote(self, site, folderId, user, failover=None):
        """Launch, or return, the user's notebook for ``folderId`` at ``site`` (another site).

        The central records it (site, remoteId, identity) so that it is polled and
        stopped through the central. A site that fails leaves no record behind: a
        :class:`SiteError` when the site is unavailable (no answer within
        ``resolver.site_connect_timeout``, a 5xx, a refused credential; the site is
        then suspect), a ``RestException`` for a refusal that is the person's (4xx).
        ``failover`` says, in words, which sites this launch passed over first.
        """
        identity = identityOf(user)
        client = SiteClient(site)
        existing = self.findLive(site['name'], identity, folderId, user['_id'])
        if existing is not None:
            doc = self.refreshRemote(existing, site)
            if doc.get('stopPending'):
                # Its last notebook there is still to be stopped, and the site does not answer.
                raise SiteError(doc['message'])
            if doc['status'] in LIVE:
                return doc
        fields = {'apiUrl': site['apiUrl'], 'remoteId': None}
        if failover:
            fields['failover'] = failover
        doc, created = self._claimSlot(site['name'], identity, folderId, user, fields)
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
                lambda: client.launch(folderId, identity),
                site['name'],
                late=withdraw,
            )
            if remote.get('status') == 'stopping':
                remote = self._launchAfterStop(client, site, folderId, identity, remote)
            remoteId = remote.get('_id')
            if not isinstance(remoteId, str) or not ObjectId.is_valid(remoteId):
                raise SiteError(f'Site "{site["name"]}" answered without a notebook id.')
            fields = self._remoteFields(doc, remote, site)
        except SiteError as exc:
            self.collection.delete_one({'_id': doc['_id']})
            if breaker.unavailable(exc):
                breaker.failed(_sites(), site, str(exc), launch=True)
                raise
            raise RestException(
                f'Site "{site["name"]}" could not launch the notebook: {exc}', code=exc.status
            )
        except RestException:
            self.collection.delete_one({'_id': doc['_id']})
            raise
        except UnsafeUrl as exc:
            # Nothing of the answer is kept, and the site's notebook is not left running.
            self.collection.delete_one({'_id': doc['_id']})
            try:
                client.stop(remoteId, identity)
            except SiteError:
                logger.warning('Could not stop notebook %s at site %s', remoteId, site['name'])
            raise RestException(_refusedUrl(site, exc), code=502)
        breaker.succeeded(_sites(), site)
        self.transition(doc, fields.pop('status'), remoteId=remoteId, **fields)
        return doc

    @staticmethod
    def _launchAfterStop(client, site, folderId, identity, remote):
        """Launch again once the person's notebook at the site has finished stopping.

        A site hands back the person's live notebook, and one that is stopping is
        still live there: say one the central withdrew after the site answered too
        late, just before the person launched again. It is not returned to them;
        the launch waits for it to end, within ``resolver.launch_deadline``, then
        starts a fresh one. A 409 if it is still stopping by then.
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
                remote = client.launch(folderId, identity)
        if remote.get('status') == 'stopping':
            raise RestException(
                f'Your previous notebook for this dataset at site "{site["name"]}" is still '
                'stopping. Launch again in a moment.',
                code=409,
            )
        return remote

    def launchAt(self, location, user, failover=None):
        """Launch the user's notebook at a location from ``Dataset().locations()``.

        :class:`SiteError` when the location's site is unavailable.
        """
        if location.get('local'):
            folder = Folder().load(location['folderId'], user=user, level=AccessType.READ)
            return self.launch(folder, user)
        site = _siteNamed(location['site'])
        if site is None:
            raise SiteError(f'Site "{location["site"]}" is no longer registered.')
        return self.launchRemote(site, location['folderId'], user, failover)

    def launchFirst(self, locations, user, site=None):
        """Launch the user's notebook at the first of ``locations`` that takes it.

        ``locations`` come ranked from ``Dataset().locations()``. A site that fails
        the launch (no answer, a 5xx) is passed over for the next healthy location,
        until one launches or ``resolver.launch_deadline`` passes; the notebook's
        ``failover`` and message say what was passed over. With ``site``, only that
        site is tried: its failure is an error that names the other sites holding
        the data.
        """
        if site is not None:
            return self._launchAtChosen(locations, user, site)
        healthy = [loc for loc in locations if loc['healthy']]
        if not healthy:
            raise RestException(
                f'No healthy site holds this dataset right now (known at: '
                f'{_siteList(loc["site"] for loc in locations)}, none sent a heartbeat '
                'lately). Try again later.',
                code=503,
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
                doc = self.launchAt(location, user, failover=note)
            except SiteError as exc:
                logger.warning('Launch at %s failed, trying the next site: %s', location, exc)
                passed.append((location['site'], exc))
                continue
            if note and not doc.get('failover'):
                # The person's notebook already lived there: say why this site all the same.
                self.setFields(doc, failover=note)
            return doc
        reasons = ' '.join(str(exc) for _, exc in passed)
        raise RestException(
            f'No site could launch this dataset: {reasons} Try again in a moment.', code=502
        )

    def _launchAtChosen(self, locations, user, site):
        """A launch at the site the request names: no failover, but a clear error naming
        the other sites that hold the data."""
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
            raise RestException(f'Site "{site}" does not hold this dataset.{also}', code=404)
        location = chosen[0]
        if not location['healthy']:
            raise RestException(f'Site "{site}" has not sent a heartbeat lately.{also}', code=503)
        try:
            return self.launchAt(location, user)
        except SiteError as exc:
            raise RestException(f'{exc}{also}', code=502)

    def refreshRemote(self, doc, site=None):
        """Bring a remote notebook's status, URL and message up to date from its site."""
        if doc.get('status') in FINAL or not doc.get('remoteId'):
            return doc
        if doc.get('stopPending'):
            return self.stopRemote(doc)  # a stop the site missed: try it again
        site = site or _siteNamed(doc['site'])
        if site is None:
            return self._moveRemote(
                doc, 'error', message=f'Site "{doc["site"]}" is no longer registered.'
            )
        try:
            remote = SiteClient(site).get(doc['remoteId'], doc['identity'])
        except SiteError as exc:
            if breaker.unavailable(exc):
                breaker.failed(_sites(), site, str(exc))
            if exc.status == 404:
                return self._moveRemote(
                    doc, 'stopped', message='The site no longer has this notebook.'
                )
            if self._siteIsDown(doc, site, exc):
                # Nothing would ever finish this record: end it, so that it neither holds
                # the person's slot nor shows a launch that is not happening.
                what = (
                    'Your notebook was still starting there.'
                    if doc['status'] == 'launching'
                    else 'Nor has it sent a heartbeat lately.'
                )
                return self._moveRemote(
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
        breaker.succeeded(_sites(), site)
        return self._applyRemote(doc, remote, site)

    @staticmethod
    def _siteIsDown(doc, site, exc):
        """True when a remote notebook's site failed in a way no retry of ours will mend.

        A launch in progress ends at the first failure to answer (its site restarted, or
        died): a second launch finds the notebook again if the site still has it. A
        running notebook ends only once its site has also stopped sending heartbeats,
        so a passing network fault does not cost anyone their notebook.
        """
        from .site import Site

        if exc.status is not None and exc.status < 500:
            return False
        return doc['status'] == 'launching' or not Site().healthy(site)

    def stopRemote(self, doc):
        """Stop a remote notebook at its site, then mark the central's record stopped.

        A site that does not answer (or fails with a 5xx) leaves the record
        ``stopping`` with ``stopPending``: the stop is tried again by the next
        GET of the notebook and by the culler's rounds, until the site answers.
        """
        site = _siteNamed(doc['site'])
        if site is not None and doc.get('remoteId'):
            try:
                SiteClient(site).stop(doc['remoteId'], doc['identity'])
            except SiteError as exc:
                if breaker.unavailable(exc):
                    breaker.failed(_sites(), site, str(exc))
                    if doc.get('status') in FINAL:
                        return doc  # it ended here already; nothing is left to retry
                    return self._moveRemote(
                        doc,
                        'stopping',
                        stopPending=True,
                        url=None,
                        message=(
                            f'{exc} The stop is recorded here and tried again until the site '
                            'answers.'
                        ),
                    )
                if exc.status != 404:
                    raise RestException(
                        f'Site "{doc["site"]}" could not stop the notebook: {exc}', code=502
                    )
            else:
                breaker.succeeded(_sites(), site)
        if doc.get('status') == 'stopped':
            return doc
        return self._moveRemote(doc, 'stopped', message='Stopped', url=None, unset=('stopPending',))

    # -- loading -----------------------------------------------------------------

    def loadById(self, notebookId):
        """The notebook with this id, or a 400/404 RestException."""
        try:
            oid = ObjectId(notebookId) if isinstance(notebookId, str) else None
        except InvalidId:
            oid = None
        if oid is None:
            raise RestException('A notebook id is 24 hexadecimal characters.', code=400)
        doc = self.load(oid)
        if doc is None:
            raise RestException(f'No notebook {notebookId}.', code=404)
        return doc


def _refusedUrl(site, exc):
    return (
        f'Site "{site["name"]}" answered with a notebook URL this resolver will not open: '
        f"{exc}. Only http(s) URLs on the site's own host (or its registered front door) "
        "are accepted; ask the site's operator to check resolver.notebook_host there."
    )


def _siteNamed(name):
    from .site import Site

    return Site().findOne({'name': name})


def _sites():
    """The sites' collection, where their circuit breakers are kept."""
    from .site import Site

    return Site().collection


def _siteList(names):
    names = sorted(set(names))
    return ', '.join(f'"{name}"' for name in names)


def _parseTime(text):
    try:
        return _aware(datetime.datetime.fromisoformat(str(text).replace('Z', '+00:00')))
    except ValueError:
        return None
