"""The one table of notebook status changes, applied by ``Notebook().transition``.

No notebook server runs here: these are the model's guarded writes alone.
"""

import datetime
import itertools

import pytest
from bson import ObjectId

from girder_resolver.errors import InvalidTransition
from girder_resolver.models.notebook import LIVE, STATUSES, TRANSITIONS, Notebook


def record(admin, status, **fields):
    now = datetime.datetime.now(datetime.timezone.utc)
    doc = {
        'site': 'transitions',
        'identity': f'transitions:{admin["_id"]}',
        'folderId': str(ObjectId()),
        'userId': admin['_id'],
        'status': status,
        'live': status in LIVE,
        'message': 'as it was',
        'created': now,
        'updated': now,
        **fields,
    }
    doc['_id'] = Notebook().collection.insert_one(doc).inserted_id
    return doc


@pytest.mark.plugin('resolver')
def testTheTableNamesEveryStatusAndOnlyKnownOnes(server):
    assert set(TRANSITIONS) == set(STATUSES)
    assert all(set(previous) <= set(STATUSES) for previous in TRANSITIONS.values())
    # An ended notebook is never live again, and the only move between ended statuses is
    # a remote record's error -> stopped (the stop at its site on request).
    assert not any(ended in TRANSITIONS[live] for live in LIVE for ended in ('stopped', 'error'))
    assert [
        (old, new)
        for new in ('stopped', 'error')
        for old in TRANSITIONS[new]
        if old in ('stopped', 'error')
    ] == [('error', 'stopped')]


@pytest.mark.plugin('resolver')
def testEveryMoveTheTableAllowsIsWrittenAndEveryOtherIsRefusedUntouched(server, admin):
    for current, wanted in itertools.product(STATUSES, STATUSES):
        doc = record(admin, current)
        if current in TRANSITIONS[wanted]:
            stored = Notebook().transition(doc, wanted, message='moved')
            assert stored['status'] == wanted and stored['live'] == (wanted in LIVE)
            assert doc['status'] == wanted and doc['message'] == 'moved'
        else:
            with pytest.raises(InvalidTransition) as raised:
                Notebook().transition(doc, wanted, message='moved')
            assert raised.value.current == current and raised.value.wanted == wanted
            stored = Notebook().collection.find_one({'_id': doc['_id']})
            assert stored['status'] == current and stored['message'] == 'as it was'
        Notebook().collection.delete_one({'_id': doc['_id']})


@pytest.mark.plugin('resolver')
def testACallerMayNarrowTheAllowedStatusesButNeverWidenThem(server, admin):
    doc = record(admin, 'running')
    with pytest.raises(InvalidTransition):
        Notebook().transition(doc, 'stopped', fromStatus=('stopping',))
    with pytest.raises(ValueError):
        Notebook().transition(doc, 'running', fromStatus=('stopped',))
    assert Notebook().collection.find_one({'_id': doc['_id']})['status'] == 'running'


@pytest.mark.plugin('resolver')
def testAnExtraGuardFieldMustMatchTooAndAGoneNotebookIsNoTransition(server, admin):
    doc = record(admin, 'stopping', stopPending=True)
    with pytest.raises(InvalidTransition):
        Notebook().transition(doc, 'stopped', guard={'stopPending': False})
    stored = Notebook().transition(
        doc, 'stopped', guard={'stopPending': True}, unset=('stopPending',)
    )
    assert 'stopPending' not in stored and 'stopPending' not in doc
    Notebook().collection.delete_one({'_id': doc['_id']})
    with pytest.raises(InvalidTransition) as raised:
        Notebook().transition(doc, 'error')
    assert raised.value.current is None
    assert 'gone' in raised.value.message


@pytest.mark.plugin('resolver')
def testOnlyOneOfTwoRacingStopClaimsWins(server, admin):
    doc = record(admin, 'running')
    first = Notebook().claimForStop(doc)
    second = Notebook().claimForStop(doc, ('running',))
    assert first is not None and first['status'] == 'stopping'
    assert second is None
    with pytest.raises(ValueError):
        Notebook().setFields(doc, status='running')
