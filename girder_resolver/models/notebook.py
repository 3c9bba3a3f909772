"""The notebook document: its statuses, the one table of their changes, and atomic writes.

A notebook moves through ``launching → running → stopping → stopped``, or ends in
``error`` with the reason in ``message``. ``live`` is true while it launches, runs
or stops; a unique partial index on (site, userId, identity, folderId, tool) over
live documents makes "one live notebook per person, folder and tool" hold even when
requests race (``tool`` is the id of the tool it runs; None for a notebook of
before tools, or a central's record of a launch that left the choice to the site).
``userId`` is who asked for it: the person, or at a site the federation
service account that delegated the launch; a notebook is only ever found again by
the same delegator and identity.

Every status change goes through :meth:`Notebook.transition`, guarded by the
statuses :data:`TRANSITIONS` allows it from. This module records notebooks; it
never runs one (``services/notebooks`` does).

An *identity* names a person across the federation: ``<site name>:<user id>`` of
the site where they log in. :func:`identityOf` is the one place that forms it.
"""

import logging
import re
import threading

import pymongo
from girder.exceptions import ValidationException
from girder.models.model_base import Model

from .. import settings
from ..errors import Conflict, InvalidTransition, LimitReached, Unavailable
from ..primitives import now, processStamp, validSiteName
from ..settings import PluginSettings, validToolId
from . import transitions

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
    # The id of the tool it runs (resolver.tools).
    'tool',
)
#: The unique partial index behind "one live notebook per (site, delegator, identity,
#: folder, tool)".
LIVE_INDEX = 'one_live_notebook_per_delegator_identity_folder_and_tool'
#: Earlier keys, dropped at start-up: each would refuse a notebook the current one allows.
RETIRED_LIVE_INDEXES = (
    'one_live_notebook_per_identity_and_folder',
    'one_live_notebook_per_delegator_identity_and_folder',
)

_USER_ID_RE = re.compile(r'^[A-Za-z0-9_-]{1,64}$')


def identityOf(user, siteName=None):
    """The federation-wide identity of a user of this site: ``<site name>:<user id>``."""
    return f'{siteName or settings.get(PluginSettings.SITE_NAME)}:{user["_id"]}'


def validIdentity(text):
    """Whether ``text`` is an identity: a site name, ':', a user id."""
    if not isinstance(text, str):
        return False
    site, colon, userId = text.partition(':')
    return bool(colon) and validSiteName(site) and bool(_USER_ID_RE.match(userId))


# Notebook changes made by this process, so that an events stream of this process
# sends a change the moment it is written rather than at its next database poll.
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


class Notebook(Model):
    """A notebook of this site, or (at a central) the record of one at another site."""

    def initialize(self):
        self.name = 'resolver_notebook'
        self.ensureIndices(
            [
                'identity',
                'status',
                'userId',
                ([('folderId', 1), ('identity', 1)], {}),
                (
                    [
                        ('site', 1),
                        ('userId', 1),
                        ('identity', 1),
                        ('folderId', 1),
                        ('tool', 1),
                    ],
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
        # The keys before this one named neither who delegated nor the tool: they would
        # refuse a second delegator's (or a second tool's) notebook, so they go.
        try:
            present = self.collection.index_information()
            for name in RETIRED_LIVE_INDEXES:
                if name in present:
                    self.collection.drop_index(name)
        except pymongo.errors.PyMongoError:
            logger.warning('Could not drop an old live-notebook index', exc_info=True)

    def validate(self, doc):
        if doc.get('status') not in STATUSES:
            raise ValidationException(f'Notebook status must be one of {", ".join(STATUSES)}.')
        if not validIdentity(doc.get('identity')):
            raise ValidationException('A notebook identity is "<site>:<user id>".')
        if doc.get('tool') is not None and not validToolId(doc['tool']):
            raise ValidationException('A notebook tool is the id of a tool (resolver.tools).')
        doc['live'] = doc['status'] in LIVE
        return doc

    def serialize(self, doc):
        """The notebook's public fields; ``url`` only while it runs.

        A running notebook of this site is opened through a single-use link, which
        ``services/notebooks`` puts in ``url``; its stored URL is never shown.
        """
        out = {field: doc.get(field) for field in PUBLIC_FIELDS}
        if doc.get('status') != 'running':
            out['url'] = None
        return out

    def isLocal(self, doc):
        """Whether the notebook runs at this site (else it is a record of another site's)."""
        return doc.get('site') == settings.get(PluginSettings.SITE_NAME)

    def statusCounts(self):
        """``{status: count}`` of live notebooks (for the metrics)."""
        pipeline = [{'$group': {'_id': '$status', 'n': {'$sum': 1}}}]
        return {
            row['_id']: row['n']
            for row in self.collection.aggregate(pipeline)
            if row['_id'] in LIVE
        }

    # -- one live notebook per (site, delegator, identity, folder, tool) ------------

    def findLive(self, site, identity, folderId, userId, tool=None):
        """The live notebook of ``identity`` for the folder and tool, launched through ``userId``.

        ``userId`` is who asked: the person, or at a site the federation service
        account that delegated the launch. A notebook is found again only by the
        same delegator and identity that launched it, for the same tool (``tool``,
        its id; None matches only a notebook recorded without one).
        """
        query = {'site': site, 'userId': userId, 'identity': identity, 'folderId': folderId}
        return self.findOne({**query, 'tool': tool, 'live': True})

    def checkCaps(self, site, identity, userId, excluding=None):
        """:class:`LimitReached` at the person's cap, :class:`Unavailable` at the site's."""
        cap = settings.get(PluginSettings.USER_CAP)
        query = {'site': site, 'userId': userId, 'identity': identity, 'live': True}
        if excluding is not None:
            query['_id'] = {'$ne': excluding}
        if self.collection.count_documents(query) >= cap:
            raise LimitReached(
                f'You already have {cap} notebook(s) running at this site, the most allowed '
                f'(setting resolver.user_cap = {cap}). Stop one first: DELETE /notebook/<id> '
                '(or its Stop button); GET /notebook lists yours.'
            )
        siteCap = settings.get(PluginSettings.SITE_CAP)
        if not siteCap or site != settings.get(PluginSettings.SITE_NAME):
            return
        query = {'site': site, 'live': True}
        if excluding is not None:
            query['_id'] = {'$ne': excluding}
        if self.collection.count_documents(query) >= siteCap:
            raise Unavailable(
                f'This site is running as many notebooks as it may ({siteCap}, setting '
                'resolver.site_cap). Try again later, when some have stopped, or at another '
                'site that holds the dataset.'
            )

    def claimSlot(self, site, identity, folderId, user, fields, checked=False):
        """Insert a live notebook for (site, identity, folder, tool), or return the live one.

        The tool is ``fields['tool']`` (its id, or None).

        Returns ``(doc, created)``. The unique partial index settles races; the caps
        are checked before and re-checked after the insert, so two concurrent
        launches cannot both slip past them. ``checked``: the caller has just looked
        for a live notebook and checked the caps (a pooled launch), so only the
        insert and the re-check after it are left.
        """
        tool = fields.get('tool')
        if not checked:
            existing = self.findLive(site, identity, folderId, user['_id'], tool)
            if existing is not None:
                return existing, False
            self.checkCaps(site, identity, user['_id'])
        at = now()
        doc = self.validate(
            {
                'site': site,
                'identity': identity,
                'folderId': folderId,
                'userId': user['_id'],
                'status': 'launching',
                'message': 'Queued',
                'url': None,
                'created': at,
                'updated': at,
                'lastActivity': at,
                'worker': processStamp(),
                'tool': tool,
                **fields,
            }
        )
        try:
            self.collection.insert_one(doc)
        except pymongo.errors.DuplicateKeyError:
            existing = self.findLive(site, identity, folderId, user['_id'], tool)
            if existing is None:  # it ended in between: very unlikely, let the caller retry
                raise Conflict('The notebook changed state meanwhile; try again.')
            return existing, False
        try:
            self.checkCaps(site, identity, user['_id'], excluding=doc['_id'])
        except (LimitReached, Unavailable):
            self.collection.delete_one({'_id': doc['_id']})
            raise
        return doc, True

    # -- writes --------------------------------------------------------------------

    def transition(self, doc, to, fromStatus=None, guard=None, unset=(), **fields):
        """Move ``doc`` to status ``to`` and write ``fields``, atomically; the stored result.

        Guarded by the statuses ``to`` may be entered from (:data:`TRANSITIONS`),
        narrowed to ``fromStatus`` if given, and by the extra query fields ``guard``.
        :class:`InvalidTransition` when the guard misses (the notebook moved on, or is
        gone). ``doc`` itself gets the fields written, as a caller holding it expects.
        """
        stored = transitions.transition(
            self.collection,
            doc,
            to,
            TRANSITIONS,
            'live',
            LIVE,
            'notebook',
            fromStatus,
            guard,
            unset,
            fields,
        )
        _changed()
        return stored

    def setFields(self, doc, **fields):
        """Write fields of ``doc`` that are not its status (a message, a failover note)."""
        if 'status' in fields or 'live' in fields:
            raise ValueError('A notebook status changes only through transition().')
        fields['updated'] = now()
        result = self.collection.update_one({'_id': doc['_id']}, {'$set': fields})
        if result.matched_count:
            doc.update(fields)
            _changed()
        return bool(result.matched_count)

    def claimForStop(self, doc, fromStatus=('launching', 'running'), message='Stopping'):
        """Move ``doc`` to ``stopping`` atomically; the claimed document, or None if taken.

        The claim records this process (``worker``): whoever finds the stop unfinished
        later can tell whether its process still runs.
        """
        try:
            return self.transition(
                dict(doc), 'stopping', fromStatus=fromStatus, message=message, worker=processStamp()
            )
        except InvalidTransition:
            return None

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

    def fail(self, doc, reason):
        """End a live notebook in ``error`` with ``reason``; one stopped meanwhile stays so."""
        try:
            self.transition(doc, 'error', message=reason, url=None, unset=('token',))
        except InvalidTransition:
            pass

    def recordTicketUse(self, doc, nonce):
        """Record that the open link ``nonce`` of a running notebook was used: True the
        first time only (atomic, so a link opens once however many race)."""
        used = self.collection.update_one(
            {'_id': doc['_id'], 'status': 'running', 'usedTickets': {'$ne': nonce}},
            {'$push': {'usedTickets': {'$each': [nonce], '$slice': -200}}},
        )
        return used.modified_count == 1
