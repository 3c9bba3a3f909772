"""The one guarded status write that the notebook and run models share.

Each model keeps its own transition table (the statuses each status may be
entered from) and the boolean field derived from the status (``live`` of a
notebook, ``active`` of a run); :func:`transition` is the atomic write both use.
"""

import pymongo

from ..errors import InvalidTransition
from ..primitives import now


def transition(collection, doc, to, table, flag, flagged, what, fromStatus, guard, unset, fields):
    """Move ``doc`` to status ``to`` and write ``fields``, atomically; the stored result.

    Guarded by the statuses ``to`` may be entered from (``table[to]``), narrowed to
    ``fromStatus`` if given, and by the extra query fields ``guard``. ``flag`` is
    the field set to whether ``to`` is in ``flagged``. :class:`InvalidTransition`
    when the guard misses (the document moved on, or is gone). ``doc`` itself gets
    the fields written, as a caller holding it expects.
    """
    allowed = table[to]
    if fromStatus is not None:
        if not set(fromStatus) <= set(allowed):
            raise ValueError(f'A {what} never becomes {to} from {fromStatus}.')
        allowed = tuple(fromStatus)
    fields.update({'status': to, flag: to in flagged, 'updated': now()})
    update = {'$set': fields}
    if unset:
        update['$unset'] = {field: '' for field in unset}
    query = {**(guard or {}), '_id': doc['_id'], 'status': {'$in': list(allowed)}}
    stored = collection.find_one_and_update(
        query, update, return_document=pymongo.ReturnDocument.AFTER
    )
    if stored is None:
        current = collection.find_one({'_id': doc['_id']}, {'status': True})
        raise InvalidTransition((current or {}).get('status'), to, what=what)
    doc.update(fields)
    for field in unset:
        doc.pop(field, None)
    return stored
