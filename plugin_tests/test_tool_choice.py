"""Choosing the tool (#16): the site's list, the dataset's recommendation, tool= at launch.

Real Girder on SecantusDB and real launches with the process backend. The tools run
the environments that ``scripts/build-tools.sh`` builds (``make test`` runs it): the
``python`` one is needed here, and its absence fails these tests with a message that
says so. A second tool, ``python-classic``, runs the same environment with the classic
notebook UI, so that two tools need only one build; ``missing`` names an environment
that does not exist.
"""

import copy
import time

import pytest
from girder.models.folder import Folder
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import settings, tools
from girder_resolver.models.notebook import Notebook
from girder_resolver.services import notebooks
from girder_resolver.services.notebooks import local
from plugin_tests.test_notebook import launch, makeDataset, waitFor

MISSING_ENV = '/nonexistent/datadns-tools/missing'


def siteTools():
    python = tools.default_tools()[0]
    classic = {**copy.deepcopy(python), 'id': 'python-classic', 'name': 'Python (classic)'}
    classic['ui'] = 'notebook'
    missing = {
        'id': 'missing',
        'name': 'Missing',
        'kernels': ['python3'],
        'process': {'env': MISSING_ENV},
        'docker': {'image': 'localhost/datadns-tool-missing:latest'},
    }
    return [python, classic, missing]


@pytest.fixture
def toolSite(server, admin, fsAssetstore, tmp_path):
    Setting().set('resolver.backend', 'process')
    python = tools.default_tools()[0]
    ready, reason = local.launcher().tool_ready(python)
    if not ready:
        pytest.fail(
            f'The python tool is not built here ({reason}). scripts/build-tools.sh builds it '
            '(make test runs it).',
            pytrace=False,
        )
    Setting().set('resolver.tools', siteTools())
    Setting().set('resolver.default_tool', 'python')
    folder, _ = makeDataset(server, admin, fsAssetstore, tmp_path, 'Tool survey')
    yield folder
    deadline = time.monotonic() + 60
    while Notebook().findOne({'status': 'launching'}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for doc in list(Notebook().find({'live': True})):
        notebooks.stop(doc)


def running(server, user, folder, **params):
    resp = launch(server, user, folder, **params)
    assertStatusOk(resp)
    nb = waitFor(server, user, resp.json['_id'])
    assert nb['status'] == 'running', nb['message']
    return nb


def testAToolIsCheckedWhenTheSettingIsSaved():
    good = siteTools()
    assert [t['id'] for t in settings.checkTools(good)] == ['python', 'python-classic', 'missing']
    assert settings.checkTools(good)[2]['ui'] == 'lab'  # the default
    bad = [
        ([], 'a JSON list of 1 to'),
        ([{**good[0], 'id': 'Python'}], 'lowercase'),
        ([good[0], good[0]], 'appear(s) twice'),
        ([{**good[0], 'ui': 'vscode'}], '"ui" is "lab"'),
        ([{**good[0], 'process': {'env': 'relative/env'}}], '"process" is {"env"'),
        ([{**good[0], 'docker': {'image': 'has space'}}], '"docker" is {"image"'),
        ([{**good[0], 'kernels': 'python3'}], '"kernels" is a list'),
        ([{**good[0], 'shell': 'bash'}], 'unknown field(s) shell'),
    ]
    for value, words in bad:
        with pytest.raises(ValueError) as caught:
            settings.checkTools(value)
        assert words in str(caught.value), (value, caught.value)


@pytest.mark.plugin('resolver')
def testABadToolSettingIsAClear400(server, admin):
    def put(key, value):
        return server.request(
            '/system/setting', method='PUT', user=admin, params={'key': key, 'value': value}
        )

    resp = put('resolver.tools', '[{"id": "x", "ui": "vscode"}]')
    assertStatus(resp, 400)
    assert '"ui" is "lab"' in resp.json['message']
    assertStatus(put('resolver.tools', 'not json'), 400)
    resp = put('resolver.default_tool', 'nope')
    assertStatus(resp, 400)
    assert 'python, scientific-python, r' in resp.json['message']
    assertStatus(put('resolver.tool_key', 'a.b'), 400)
    assertStatusOk(put('resolver.default_tool', 'r'))
    # The defaults are the three tools that scripts/build-tools.sh builds.
    assert [t['id'] for t in Setting().get('resolver.tools')] == tools.default_tool_ids()


@pytest.mark.plugin('resolver')
def testTheSiteListsItsToolsWithWhetherEachIsReady(server, user, toolSite):
    Folder().setMetadata(toolSite, {'datadns_tool': 'python-classic'})
    resp = server.request('/resolver/tool', params={'folderId': str(toolSite['_id'])}, user=user)
    assertStatusOk(resp)
    listed = {t['id']: t for t in resp.json}
    assert list(listed) == ['python', 'python-classic', 'missing']
    assert listed['python']['ready'] and listed['python']['reason'] is None
    assert listed['python']['default'] and not listed['python']['recommended']
    assert listed['python-classic']['recommended'] and listed['python-classic']['ui'] == 'notebook'
    assert listed['missing']['ready'] is False
    assert MISSING_ENV in listed['missing']['reason']
    assert 'build-tools.sh' in listed['missing']['reason']
    # Nobody learns of a folder they may not read through it.
    resp = server.request('/resolver/tool', params={'folderId': 'nope'})
    assertStatus(resp, 400)


@pytest.mark.plugin('resolver')
def testAnUnknownOrUnreadyToolIsRefusedBeforeAnythingStarts(server, user, toolSite):
    resp = launch(server, user, toolSite, tool='nope')
    assertStatus(resp, 400)
    assert 'python, python-classic, missing' in resp.json['message']
    resp = server.request(
        '/resolve/launch',
        method='POST',
        user=user,
        params={'id': toolSite['meta']['identifier'], 'tool': 'nope'},
    )
    assertStatus(resp, 400)
    assert 'python, python-classic, missing' in resp.json['message']
    assertStatus(launch(server, user, toolSite, tool='Bad Id{}'), 400)
    resp = launch(server, user, toolSite, tool='missing')
    assertStatus(resp, 409)
    assert 'not ready' in resp.json['message'] and MISSING_ENV in resp.json['message']
    assert Notebook().findOne({}) is None  # nothing was recorded, nothing started


@pytest.mark.plugin('resolver')
def testTheRecommendedToolRunsAndEachToolHasItsOwnNotebook(server, user, toolSite):
    Folder().setMetadata(toolSite, {'datadns_tool': 'python-classic'})
    recommended = running(server, user, toolSite)
    assert recommended['tool'] == 'python-classic'
    stored = Notebook().load(recommended['_id'])
    assert stored['toolEntry']['ui'] == 'notebook'
    chosen = running(server, user, toolSite, tool='python')
    assert chosen['tool'] == 'python' and chosen['_id'] != recommended['_id']
    # One live notebook per (person, dataset, tool): asking again gives the same ones.
    assert launch(server, user, toolSite, tool='python').json['_id'] == chosen['_id']
    assert launch(server, user, toolSite).json['_id'] == recommended['_id']
    # The GET /resolve answer for this site lists its tools and the recommendation.
    resp = server.request('/resolve', params={'id': toolSite['meta']['identifier']}, user=user)
    [location] = resp.json['locations']
    assert location['recommendedTool'] == 'python-classic'
    assert [(t['id'], t['ready']) for t in location['tools']] == [
        ('python', True),
        ('python-classic', True),
        ('missing', False),
    ]
