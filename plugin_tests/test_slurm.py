"""The slurm backend with a real Slurm: notebooks are batch jobs of a one-node cluster.

``scripts/slurm.sh start`` (run by ``scripts/setup.sh --test``) brings up munged,
slurmctld and slurmd on this machine; the session fixture fails, never skips, when
Slurm does not answer. A central and one site (real Girder processes) launch
through the federation; the site's notebooks run as Slurm jobs that fill the node
(their CPUs are all the node's), so a second one waits in the queue.
"""

import subprocess
import time

import pytest

from plugin_tests.federation_helpers import eventually, http, person, siteBehindCentral
from plugin_tests.launcher_helpers import requireSlurm
from plugin_tests.test_notebook_federation import (
    GALAXIES,
    call,
    contents,
    stoppedAtTheFrontDoor,
    waitRunning,
)

SITE = 'site-a'


@pytest.fixture(scope='session')
def slurm():
    """The one-node cluster, up: its CPUs."""
    return requireSlurm()


@pytest.fixture(scope='module')
def fed(slurm, mongoUri, tmp_path_factory):
    with siteBehindCentral(
        mongoUri,
        tmp_path_factory.mktemp('slurm'),
        'slurmfed',
        SITE,
        # One notebook job takes every CPU of the node: a second one queues.
        siteSettings={
            'resolver.backend': 'slurm',
            'resolver.cpu_limit': slurm,
            'resolver.memory_limit': '512m',
        },
    ) as federation:
        federation.responses = []
        yield federation


def jobOf(notebook):
    """(job id, state, reason) of the site notebook's Slurm job, or None if Slurm has none."""
    out = subprocess.run(
        [
            'squeue',
            '--noheader',
            f'--name=datadns-{notebook["remoteId"]}',
            '--format=%i|%T|%r',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return tuple(out[0].split('|')) if out else None


def testANotebookLaunchedAtTheCentralIsASlurmJobAtTheSiteAndStopCancelsIt(fed):
    alice = person(fed, 'central', 'alice')
    resp = call(fed, alice, 'POST', 'resolve/launch', id=GALAXIES)
    assert resp.status_code == 200, resp.text
    nb = waitRunning(fed, alice, resp.json()['_id'])
    assert nb['status'] == 'running', nb['message']
    jobId, state, _ = jobOf(nb)
    assert state == 'RUNNING'

    # Through the site's front door, to the node's port, with the person's cookie only.
    listing = contents(nb, 'Galaxy survey')
    assert listing.status_code == 200, listing.text
    assert 'part-1.csv' in {e['name'] for e in listing.json()['content']}
    assert http().get(f'{nb["url"].split("/api/")[0]}/notebook/x/api/contents').status_code in (
        404,
        410,
    )

    stopped = call(fed, alice, 'DELETE', f'notebook/{nb["_id"]}')
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()['status'] == 'stopped'
    assert jobOf(nb) is None  # squeue no longer lists it: cancelled, not merely left
    ended = subprocess.run(
        ['squeue', '-h', '--states=all', f'--jobs={jobId}', '-o', '%T'],
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert ended in ('CANCELLED', '')
    assert stoppedAtTheFrontDoor(nb)


def testASecondLaunchWaitsInTheQueueWithSlurmsReasonUntilTheFirstStops(fed):
    alice = person(fed, 'central', 'alice')
    bob = person(fed, 'central', 'bobby')
    first = waitRunning(
        fed, alice, call(fed, alice, 'POST', 'resolve/launch', id=GALAXIES).json()['_id']
    )
    assert first['status'] == 'running', first['message']

    second = call(fed, bob, 'POST', 'resolve/launch', id=GALAXIES).json()

    def queued():
        nb = call(fed, bob, 'GET', f'notebook/{second["_id"]}').json()
        # Slurm gives its reason once its scheduler has looked at the job (none before):
        # the node is full (or, with other jobs queued on a shared machine, theirs are first).
        reason = (nb.get('message') or '').partition('Waiting in the queue: ')[2]
        return nb if reason in ('Resources', 'Priority') else None

    waiting = eventually(queued, 30, "the second notebook's queue message")
    assert waiting['status'] == 'launching'
    assert jobOf(waiting)[1] == 'PENDING'

    # A launch stopped while it waits in the queue is stopped, its job cancelled.
    carol = person(fed, 'central', 'carol')
    third = call(fed, carol, 'POST', 'resolve/launch', id=GALAXIES).json()
    eventually(lambda: jobOf(third) and jobOf(third)[1] == 'PENDING', 30, 'the third job')
    stopped = call(fed, carol, 'DELETE', f'notebook/{third["_id"]}').json()
    assert stopped['status'] == 'stopped', stopped
    assert jobOf(third) is None
    time.sleep(1)
    assert call(fed, carol, 'GET', f'notebook/{third["_id"]}').json()['status'] == 'stopped'

    assert call(fed, bob, 'GET', f'notebook/{second["_id"]}').json()['status'] == 'launching'
    call(fed, alice, 'DELETE', f'notebook/{first["_id"]}')
    running = waitRunning(fed, bob, second['_id'], timeout=120)
    assert running['status'] == 'running', running['message']
    assert contents(running, 'Galaxy survey').status_code == 200
    fed.running = running


def testARunningNotebookJobIsAdoptedAfterTheSiteGirderRestarts(fed):
    bob = person(fed, 'central', 'bobby')
    nb = getattr(fed, 'running', None)
    if nb is None or call(fed, bob, 'GET', f'notebook/{nb["_id"]}').json()['status'] != 'running':
        nb = waitRunning(
            fed, bob, call(fed, bob, 'POST', 'resolve/launch', id=GALAXIES).json()['_id']
        )
    jobId = jobOf(nb)[0]

    fed.girders[SITE].stop()
    fed.startGirder(SITE)

    atSite = fed.clients[SITE].get(f'notebook/{nb["remoteId"]}')
    assert atSite['status'] == 'running', atSite['message']
    assert jobOf(nb)[:2] == (jobId, 'RUNNING')

    def answers():
        fresh = call(fed, bob, 'GET', f'notebook/{nb["_id"]}').json()  # a new open link
        return contents(fresh, 'Galaxy survey').status_code == 200

    assert eventually(answers, 30, 'the notebook through the front door')
    call(fed, bob, 'DELETE', f'notebook/{nb["_id"]}')
    assert jobOf(nb) is None
