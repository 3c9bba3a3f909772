"""Batch runs through ``/run``: a real Girder, real sandboxes (bwrap) and containers (Podman).

What a run's command may not do (read Girder's environment or the host's
processes, reach the network, write the dataset) is shown for each backend in
test_launcher_runs.py; here, the REST contract: results uploaded into Girder,
the log streamed while the run runs, reuse of an identical run, the time limit,
cancel, the caps, who may see what, and bad input.
"""

import os
import subprocess
import sys
import time

import pytest
import requests
from girder.models.folder import Folder
from girder.models.setting import Setting
from girder.models.token import Token
from girder.models.upload import Upload
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver.models.run import Run
from girder_resolver.primitives import processStamp
from girder_resolver.services import runs
from girder_resolver.services.notebooks.local import launcher
from plugin_tests.launcher_helpers import requireSlurm
from plugin_tests.test_notebook import makeDataset, makeUser, requireDocker

RESULT_COMMAND = (
    'echo "reading $DATASET_DIR"; cp "$DATASET_DIR/values.csv" "$RESULTS_DIR/copy.csv"; '
    'mkdir "$RESULTS_DIR/plots"; wc -l < "$DATASET_DIR/values.csv" > "$RESULTS_DIR/plots/n.txt"; '
    'ln -s /etc/passwd "$RESULTS_DIR/leak"; '
    # Nothing of Girder's environment, in its own or any visible process; no dataset writes.
    '(env; cat /proc/[0-9]*/environ) 2>/dev/null | grep -qa girder-secret && echo LEAKED; '
    'touch "$DATASET_DIR/new" 2>/dev/null && echo WROTE; '
    # The tool's environment runs it, not the Python running Girder, which it cannot see.
    f'[ -e {sys.prefix}/pyvenv.cfg ] && echo GIRDER_PYTHON; echo finished'
)


@pytest.fixture
def dataset(server, admin, fsAssetstore, tmp_path):
    return makeDataset(server, admin, fsAssetstore, tmp_path, 'Survey 2016')


@pytest.fixture
def runRoot(tmp_path):
    Setting().set('resolver.run_dir', str(tmp_path / 'runs'))
    yield
    for doc in list(Run().find({'active': True})):
        runs.cancel(doc)


def submit(server, user, folder, **params):
    return server.request(
        '/run', method='POST', user=user, params={'folderId': str(folder['_id']), **params}
    )


def waitFinal(server, user, runId, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        resp = server.request(f'/run/{runId}', user=user)
        assertStatusOk(resp)
        if resp.json['status'] in ('succeeded', 'failed', 'cancelled'):
            return resp.json
        assert time.monotonic() < deadline, f'run stuck at {resp.json}'
        time.sleep(0.1)


def download(server, user, folderId, *path):
    """The content of the file at ``path`` below folder ``folderId``, through the API."""
    for name in path[:-1]:
        resp = server.request(
            '/folder',
            user=user,
            params={'parentType': 'folder', 'parentId': folderId, 'name': name},
        )
        assertStatusOk(resp)
        folderId = resp.json[0]['_id']
    items = server.request('/item', user=user, params={'folderId': folderId, 'name': path[-1]})
    assertStatusOk(items)
    assert len(items.json) == 1, (path, items.json)
    resp = server.request(f'/item/{items.json[0]["_id"]}/download', user=user, isJson=False)
    assertStatusOk(resp)
    return b''.join(resp.body).decode()


@pytest.mark.plugin('resolver')
@pytest.mark.parametrize('backend', ['process', 'docker'])
def testARunWritesItsResultsIntoGirderAndAnIdenticalRunReusesThem(
    server, admin, user, dataset, runRoot, backend, monkeypatch
):
    monkeypatch.setenv('DATADNS_TEST_SECRET', 'girder-secret-no-run-may-see')
    if backend == 'docker':
        requireDocker()
    Setting().set('resolver.backend', backend)
    folder, data = dataset
    resp = submit(server, user, folder, command=RESULT_COMMAND)
    assertStatus(resp, 201)
    assert resp.json['reused'] is False
    assert resp.json['status'] in ('queued', 'running', 'succeeded')
    done = waitFinal(server, user, resp.json['_id'])
    assert done['status'] == 'succeeded', done
    assert done['exitCode'] == 0 and done['reason'] is None
    assert done['backend'] == backend
    assert 'reading /data' in done['logTail'] and 'finished' in done['logTail']
    results = done['resultsFolderId']
    assert download(server, user, results, 'copy.csv') == (data / 'values.csv').read_text()
    assert download(server, user, results, 'plots', 'n.txt').strip() == '2'
    # A symlink the run left is not followed: no file of the host reaches Girder.
    names = {
        i['name'] for i in server.request('/item', user=user, params={'folderId': results}).json
    }
    assert names == {'copy.csv'}
    # In the person's own space: Private/Data DNS runs/<run name>.
    runsFolder = Folder().load(Folder().load(results, force=True)['parentId'], force=True)
    assert runsFolder['name'] == 'Data DNS runs'
    assert Folder().load(runsFolder['parentId'], force=True)['name'] == 'Private'
    log = server.request(f'/run/{done["_id"]}/log', user=user, isJson=False)
    assertStatusOk(log)
    assert b''.join(log.body).decode() == 'reading /data\nfinished\n'

    # The same command on the same, unchanged dataset with the same tool: the earlier run.
    count = Run().collection.count_documents({})
    again = submit(server, user, folder, command=RESULT_COMMAND)
    assertStatus(again, 200)
    assert again.json['reused'] is True
    assert again.json['_id'] == done['_id']
    assert again.json['resultsFolderId'] == results
    assert Run().collection.count_documents({}) == count
    # fresh=true runs again, into a results folder of its own.
    fresh = submit(server, user, folder, command=RESULT_COMMAND, fresh='true')
    assertStatus(fresh, 201)
    assert fresh.json['reused'] is False and fresh.json['_id'] != done['_id']
    rerun = waitFinal(server, user, fresh.json['_id'])
    assert rerun['status'] == 'succeeded'
    assert rerun['resultsFolderId'] != results
    # Another command, or a changed dataset, is not the same run.
    other = submit(server, user, folder, command=RESULT_COMMAND + ' ')
    assertStatus(other, 201)
    waitFinal(server, user, other.json['_id'])
    (data / 'values.csv').write_text('a,b\n1,2\n3,4\n')
    changed = submit(server, user, folder, command=RESULT_COMMAND)
    assertStatus(changed, 201)
    assert (
        download(
            server,
            user,
            waitFinal(server, user, changed.json['_id'])['resultsFolderId'],
            'copy.csv',
        )
        == 'a,b\n1,2\n3,4\n'
    )

    # Nobody else sees, reads or cancels it.
    stranger = makeUser('stranger')
    assertStatus(server.request(f'/run/{done["_id"]}', user=stranger), 403)
    assertStatus(server.request(f'/run/{done["_id"]}/log', user=stranger, isJson=False), 403)
    assertStatus(server.request(f'/run/{done["_id"]}', method='DELETE', user=stranger), 403)
    assert server.request('/run', user=stranger).json == []
    assertStatus(server.request(f'/folder/{results}', user=stranger), 403)
    mine = server.request('/run', user=user, params={'limit': 2})
    assertStatusOk(mine)
    assert len(mine.json) == 2
    assert len(server.request('/run', user=admin).json) == 4


@pytest.mark.plugin('resolver')
def testARunOnSlurmIsAJobWhoseResultsGoIntoGirder(server, user, dataset, runRoot):
    requireSlurm()
    Setting().set('resolver.backend', 'slurm')
    folder, data = dataset
    resp = submit(server, user, folder, command=RESULT_COMMAND)
    assertStatus(resp, 201)
    done = waitFinal(server, user, resp.json['_id'])
    assert done['status'] == 'succeeded', done
    assert done['backend'] == 'slurm'
    assert 'reading /data' in done['logTail'] and 'finished' in done['logTail']
    results = done['resultsFolderId']
    assert download(server, user, results, 'copy.csv') == (data / 'values.csv').read_text()
    assert download(server, user, results, 'plots', 'n.txt').strip() == '2'


@pytest.mark.plugin('resolver')
def testARunsLogStreamsWhileItRuns(boundServer, admin, user, fsAssetstore, tmp_path, runRoot):
    folder, _ = makeDataset(boundServer, admin, fsAssetstore, tmp_path, 'Survey 2016')
    Setting().set('resolver.backend', 'process')
    command = 'echo started; while [ ! -e "$RESULTS_DIR/go" ]; do sleep 0.05; done; echo done'
    resp = submit(boundServer, user, folder, command=command)
    assertStatus(resp, 201)
    runId = resp.json['_id']
    token = Token().createToken(user)['_id']
    url = f'http://127.0.0.1:{boundServer.boundPort}/api/v1/run/{runId}/log'
    session = requests.Session()
    session.trust_env = False
    with session.get(url, headers={'Girder-Token': token}, stream=True, timeout=60) as stream:
        assert stream.status_code == 200
        assert stream.headers['Content-Type'].startswith('text/plain')
        chunks = stream.iter_content(chunk_size=None)
        received = next(chunks)
        while b'started' not in received:
            received += next(chunks)
        # The command is still waiting: the log came while it runs.
        assert Run().load(runId)['status'] in ('queued', 'running')
        open(os.path.join(runs.runDir({'_id': runId}), 'results', 'go'), 'w').close()
        for chunk in chunks:
            received += chunk
    assert received == b'started\ndone\n'
    assert waitFinal(boundServer, user, runId)['status'] == 'succeeded'
    # From an offset, once it has ended.
    tail = session.get(url, headers={'Girder-Token': token}, params={'offset': 8}, timeout=10)
    assert tail.text == 'done\n'


@pytest.mark.plugin('resolver')
def testARunThatEndedWhileNobodyFollowedItIsFinishedAfterARestart(server, user, dataset, runRoot):
    folder, _ = dataset
    Setting().set('resolver.backend', 'process')
    runs.stop()  # Girder is down: nothing follows the run
    try:
        resp = submit(server, user, folder, command='echo out > "$RESULTS_DIR/r.txt"')
        assertStatus(resp, 201)
        doc = Run().load(resp.json['_id'])
        handle = doc['handle']
        deadline = time.monotonic() + 30
        while launcher('process').run_state(handle)[0] != 'exited':
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert Run().load(doc['_id'])['status'] in ('queued', 'running')
        # A cancel that comes after the command ended by itself does not make it cancelled.
        late = submit(server, user, folder, command='echo late')
        late = Run().load(late.json['_id'])
        while launcher('process').run_state(late['handle'])[0] != 'exited':
            assert time.monotonic() < deadline
            time.sleep(0.05)
        resp = server.request(f'/run/{late["_id"]}', method='DELETE', user=user)
        assertStatusOk(resp)
        assert resp.json['status'] == 'succeeded' and resp.json['exitCode'] == 0
        # The process that was finishing it died half-way (its claim names a process gone).
        gone = subprocess.Popen(['true'])
        stamp = processStamp(gone.pid)
        gone.wait()
        Run().collection.update_one({'_id': doc['_id']}, {'$set': {'finisher': stamp}})
    finally:
        runs.start()  # Girder is back: its follower picks the run up
    deadline = time.monotonic() + 30
    while Run().load(doc['_id'])['status'] not in ('succeeded', 'failed', 'cancelled'):
        assert time.monotonic() < deadline, Run().load(doc['_id'])
        time.sleep(0.1)
    done = Run().load(doc['_id'])
    assert done['status'] == 'succeeded'
    assert download(server, user, str(done['resultsFolderId']), 'r.txt') == 'out\n'
    assert not os.path.exists(handle['runDir'])  # the backend's hold released


@pytest.mark.plugin('resolver')
def testTimeLimitCancelAndCap(server, user, dataset, runRoot):
    folder, _ = dataset
    Setting().set('resolver.backend', 'process')
    Setting().set('resolver.run_time_limit', 3)
    Setting().set('resolver.run_cap', 2)
    slow = submit(server, user, folder, command='echo partial > "$RESULTS_DIR/p.txt"; sleep 60')
    assertStatus(slow, 201)
    Setting().set('resolver.run_time_limit', 600)
    toCancel = submit(server, user, folder, command='sleep 61')
    assertStatus(toCancel, 201)
    # A third active run is over the cap.
    over = submit(server, user, folder, command='sleep 62')
    assertStatus(over, 429)
    assert 'resolver.run_cap' in over.json['message']

    cancelled = server.request(f'/run/{toCancel.json["_id"]}', method='DELETE', user=user)
    assertStatusOk(cancelled)
    assert cancelled.json['status'] == 'cancelled'
    assert cancelled.json['reason'] == 'cancelled'
    assertStatusOk(server.request(f'/run/{toCancel.json["_id"]}', method='DELETE', user=user))

    began = time.monotonic()
    limited = waitFinal(server, user, slow.json['_id'], timeout=30)
    assert limited['status'] == 'failed'
    assert limited['reason'] == 'ran longer than the limit of 3 s'
    assert time.monotonic() - began < 20
    # What it left before it was ended is kept.
    assert download(server, user, limited['resultsFolderId'], 'p.txt') == 'partial\n'


@pytest.mark.plugin('resolver')
def testScriptsBadInputAndOtherPeoplesFiles(
    server, admin, user, dataset, runRoot, fsAssetstore, monkeypatch
):
    folder, _ = dataset
    Setting().set('resolver.backend', 'process')
    private = Folder().createFolder(
        user, 'Private', parentType='user', public=False, creator=user, reuseExisting=True
    )
    script = (
        b'#!/usr/bin/env python3\nimport os\nprint(sorted(os.listdir(os.environ["DATASET_DIR"])))\n'
    )
    mine = Upload().uploadFromFile(
        _Bytes(script), len(script), 'list.py', parentType='folder', parent=private, user=user
    )
    resp = submit(server, user, folder, scriptFileId=str(mine['_id']))
    assertStatus(resp, 201)
    done = waitFinal(server, user, resp.json['_id'])
    assert done['status'] == 'succeeded', done
    assert "['readme.txt', 'tables', 'values.csv']" in done['logTail']
    assert done['scriptFileId'] == str(mine['_id']) or str(done['scriptFileId']) == str(mine['_id'])

    # Another person's private file is refused, and nothing runs.
    stranger = makeUser('stranger')
    theirs = Folder().createFolder(
        stranger, 'Private', parentType='user', public=False, creator=stranger, reuseExisting=True
    )
    secret = Upload().uploadFromFile(
        _Bytes(b'echo secret'), 11, 'secret.sh', parentType='folder', parent=theirs, user=stranger
    )
    count = Run().collection.count_documents({})
    assertStatus(submit(server, user, folder, scriptFileId=str(secret['_id'])), 403)
    assert Run().collection.count_documents({}) == count

    bad = [
        {},  # neither command nor script
        {'command': 'true', 'scriptFileId': str(mine['_id'])},
        {'command': '   '},
        {'scriptFileId': 'nope'},
        {'scriptFileId': '{"$ne": null}'},
        {'command': 'true', 'tool': 'no-such-tool'},
    ]
    for params in bad:
        resp = submit(server, user, folder, **params)
        assertStatus(resp, 400)
    assertStatus(
        server.request(
            '/run', method='POST', user=user, params={'folderId': '{"$gt": ""}', 'command': 'true'}
        ),
        400,
    )
    assertStatus(server.request('/run/nope', user=user), 400)
    assertStatus(server.request(f'/run/{"0" * 24}', user=user), 404)
    assertStatus(server.request('/run', user=user, params={'sort': '$where'}), 400)
    assertStatus(server.request('/run', user=user, params={'limit': -1}), 400)
    assertStatus(server.request('/run', user=user, params={'status': 'weird'}), 400)
    assertStatus(server.request('/run', user=user, params={'folderId': 'x'}), 400)
    assertStatus(
        server.request(f'/run/{done["_id"]}/log', user=user, params={'offset': -1}, isJson=False),
        400,
    )
    # A folder that is not a dataset.
    plain = Folder().createFolder(
        user, 'Public', parentType='user', public=True, creator=user, reuseExisting=True
    )
    assertStatus(submit(server, user, plain, command='true'), 422)
    # Runs need a login.
    assertStatus(
        server.request(
            '/run', method='POST', params={'folderId': str(folder['_id']), 'command': 'true'}
        ),
        401,
    )

    # A run that leaves more results than may be uploaded fails, saying so.
    monkeypatch.setattr(runs, 'MAX_RESULT_ENTRIES', 3)
    many = submit(
        server,
        user,
        folder,
        command='touch "$RESULTS_DIR"/f1 "$RESULTS_DIR"/f2 "$RESULTS_DIR"/f3 "$RESULTS_DIR"/f4',
    )
    assertStatus(many, 201)
    capped = waitFinal(server, user, many.json['_id'])
    assert capped['status'] == 'failed'
    assert 'more than 3 files and folders' in capped['reason']
    uploaded = server.request('/item', user=user, params={'folderId': capped['resultsFolderId']})
    assert [i['name'] for i in uploaded.json] == ['f1', 'f2', 'f3']


class _Bytes:
    """A file-like object over bytes (Upload.uploadFromFile reads it)."""

    def __init__(self, data):
        self.data = data

    def read(self, size=-1):
        if size < 0:
            size = len(self.data)
        out, self.data = self.data[:size], self.data[size:]
        return out
