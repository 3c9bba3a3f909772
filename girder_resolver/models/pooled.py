"""The warm pool's documents: unclaimed notebook servers, one per pool slot.

They live in their own collection, so they are never listed, never count to
anyone's cap and are never culled for idleness. Slots 0..N-1 carry a unique
index, so several Girder processes refilling at once never overshoot N. The pool
itself (filling, claiming) is ``services/notebooks/pool.py`` and ``refill.py``.
"""

from girder.exceptions import ValidationException
from girder.models.model_base import Model

STATES = ('starting', 'ready', 'claimed', 'stopping')


class PooledNotebook(Model):
    """An unclaimed (or being claimed) warm notebook server: one per pool slot."""

    def initialize(self):
        self.name = 'resolver_notebook_pool'
        self.ensureIndices(
            [
                'status',
                (
                    [('slot', 1)],
                    {'unique': True, 'name': 'one_server_per_pool_slot'},
                ),
            ]
        )

    def validate(self, doc):
        if doc.get('status') not in STATES:
            raise ValidationException(f'A pooled notebook is one of {", ".join(STATES)}.')
        if not isinstance(doc.get('slot'), int) or doc['slot'] < 0:
            raise ValidationException('A pooled notebook has a slot number >= 0.')
        return doc
