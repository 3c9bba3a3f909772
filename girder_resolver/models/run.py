"""The batch run document: its statuses, the one table of their changes, and atomic writes.

A run moves ``queued → running → succeeded | failed | cancelled``; ``reason`` says
why a run failed or was cancelled, ``exitCode`` is its command's exit status.
``active`` is true while it is queued or running. ``key`` is the run's identity
for reuse: the same key (tool version, command or script content, dataset and its
content stamp) and owner, succeeded with its results still there, is returned again
instead of running again (``services/runs``).

Every status change goes through :meth:`Run.transition`, guarded by the statuses
:data:`TRANSITIONS` allows it from. This module records runs; it never runs one
(``services/runs`` does, through a launcher backend).
"""

import pymongo
from girder.exceptions import ValidationException
from girder.models.model_base import Model

from ..primitives import now, processStamp
from . import transitions
from .notebook import validIdentity

ACTIVE = ('queued', 'running')
FINAL = ('succeeded', 'failed', 'cancelled')
STATUSES = ACTIVE + FINAL
#: The one table of run status changes: for each status, the statuses it may be entered
#: from. A run is inserted ``queued``; it may end from either active status (a command
#: that ends before it was seen running goes straight from ``queued``).
TRANSITIONS = {
    'queued': ('queued',),
    'running': ('queued', 'running'),
    'succeeded': ('queued', 'running'),
    'failed': ('queued', 'running'),
    'cancelled': ('queued', 'running'),
}
#: Fields of a run that its owner (or an admin) sees.
PUBLIC_FIELDS = (
    '_id',
    'name',
    'folderId',
    'userId',
    'identity',
    'site',
    'status',
    'exitCode',
    'reason',
    'tool',
    'command',
    'scriptFileId',
    'backend',
    'resultsFolderId',
    'timeLimit',
    'created',
    'updated',
    'started',
    'ended',
    # At a central, a run at another site: its id there, its results folder's page there,
    # the identifier it was submitted for, and what the submission passed over on its way.
    'remoteId',
    'resultsUrl',
    'identifier',
    'failover',
)


class Run(Model):
    """A batch run of this site."""

    def initialize(self):
        self.name = 'resolver_run'
        self.ensureIndices(
            [
                'userId',
                'identity',
                'key',
                ([('active', 1), ('site', 1)], {}),
                ([('userId', 1), ('identity', 1), ('active', 1)], {}),
                ([('created', -1)], {}),
            ]
        )

    def validate(self, doc):
        if doc.get('status') not in STATUSES:
            raise ValidationException(f'Run status must be one of {", ".join(STATUSES)}.')
        if not validIdentity(doc.get('identity')):
            raise ValidationException('A run identity is "<site>:<user id>".')
        doc['active'] = doc['status'] in ACTIVE
        return doc

    def serialize(self, doc):
        """The run's public fields."""
        return {field: doc.get(field) for field in PUBLIC_FIELDS}

    def countActive(self, userId, identity, excluding=None):
        """How many queued or running runs ``identity`` has through ``userId`` here (a central's
        records of runs at other sites count at their sites, not here)."""
        query = {'userId': userId, 'identity': identity, 'active': True, 'remoteId': None}
        if excluding is not None:
            query['_id'] = {'$ne': excluding}
        return self.collection.count_documents(query)

    def findReusable(self, key, userId, identity):
        """The latest succeeded run of ``identity`` with this key, or None."""
        found = self.collection.find(
            {'key': key, 'userId': userId, 'identity': identity, 'status': 'succeeded'},
            sort=[('created', -1)],
            limit=1,
        )
        return next(iter(found), None)

    def transition(self, doc, to, fromStatus=None, guard=None, unset=(), **fields):
        """Move ``doc`` to status ``to`` and write ``fields``, atomically; the stored result.

        Guarded by the statuses ``to`` may be entered from (:data:`TRANSITIONS`),
        narrowed to ``fromStatus`` if given, and by ``guard``; :class:`InvalidTransition`
        when the guard misses (the run moved on, or is gone).
        """
        return transitions.transition(
            self.collection,
            doc,
            to,
            TRANSITIONS,
            'active',
            ACTIVE,
            'run',
            fromStatus,
            guard,
            unset,
            fields,
        )

    def setFields(self, doc, **fields):
        """Write fields of ``doc`` that are not its status (its handle, its results folder)."""
        if 'status' in fields or 'active' in fields:
            raise ValueError('A run status changes only through transition().')
        fields['updated'] = now()
        result = self.collection.update_one({'_id': doc['_id']}, {'$set': fields})
        if result.matched_count:
            doc.update(fields)
        return bool(result.matched_count)

    def claimFinish(self, doc, staleWorker=None):
        """Claim the right to finish an active run (upload its results, end it); the claimed
        document, or None when another process holds the claim.

        ``staleWorker``: the claim of a process known to be gone, taken over.
        """
        query = {'_id': doc['_id'], 'active': True}
        if staleWorker is None:
            query['finisher'] = None
        else:
            query['finisher'] = staleWorker
        return self.collection.find_one_and_update(
            query,
            {'$set': {'finisher': processStamp(), 'updated': now()}},
            return_document=pymongo.ReturnDocument.AFTER,
        )
