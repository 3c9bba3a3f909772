"""The girder-client examples of docs/girder-client.md run, as written, against a live server.

The fenced ``python`` blocks are executed in order in one namespace, with
``API_URL`` and ``API_KEY`` given, against a real ``girder serve`` holding the
sample datasets (process backend), so the docs cannot rot.
"""

import re
from pathlib import Path

import pytest

from datadns import sample, stack
from datadns.federation import apiKey, setSettings

DOC = Path(__file__).resolve().parents[1] / 'docs' / 'girder-client.md'
BLOCK = re.compile(r'^```python\n(.*?)^```', re.MULTILINE | re.DOTALL)


def pythonBlocks():
    return BLOCK.findall(DOC.read_text())


def testTheDocHasExamplesOfEveryStep():
    code = '\n'.join(pythonBlocks())
    for step in (
        "gc.get('resolve'",
        "gc.post('resolve/launch'",
        "gc.get(f'notebook/",
        'gc.delete(',
        "gc.post(\n    'resolve/run'",
        'f\'run/{run["_id"]}\'',
        '/log',
        'gc.downloadFolderRecursive(',
    ):
        assert step in code


@pytest.fixture(scope='module')
def girder(mongoUri, tmp_path_factory):
    home = tmp_path_factory.mktemp('girder-client-docs')
    server = stack.Girder(
        mongoUri,
        dbName='nbdocs',
        logDir=home / 'logs',
        extraEnv={'GIRDER_SERVER_MODE': 'production'},
    )
    server.start()
    try:
        gc = sample.ensureAdmin(server.apiUrl, 'admin', 'admin-password')
        setSettings(gc, {'resolver.backend': 'process'})
        sample.provisionSite(gc, 'site-a', home / 'data', home / 'assetstore')
        yield server, gc
    finally:
        try:
            for nb in gc.get('notebook', parameters={'live': 'true'}):
                gc.delete(f'notebook/{nb["_id"]}')
        finally:
            server.stop()


def testTheGirderClientExamplesRunAgainstALiveServer(girder, capsys):
    server, admin = girder
    namespace = {'API_URL': server.apiUrl, 'API_KEY': apiKey(admin, 'docs')}
    for number, block in enumerate(pythonBlocks(), 1):
        try:
            exec(compile(block, f'{DOC.name} block {number}', 'exec'), namespace)
        except Exception as exc:
            raise AssertionError(f'Block {number} of {DOC.name} failed:\n{block}') from exc
    out = capsys.readouterr().out
    assert 'Open this in your browser: http://' in out
    assert namespace['notebook']['status'] == 'running'
    assert namespace['run']['status'] == 'succeeded'
    assert 'row-counts.txt' in out
