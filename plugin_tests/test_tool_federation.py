"""Tools across the federation (#16): sites register their tools, /resolve shows them, and a
launch through the central with tool= goes to a site that offers that tool.

Real Girder processes (a central and two sites holding the same dataset) and real feder8
sidecars, which read each site's GET /resolver/tool and register it with the datasets.
Site A offers ``python`` and ``python-classic`` (the same built environment, the classic
UI); site B offers ``python`` and ``missing`` (an environment that is not there). Notebooks
run with the process backend and the ``python`` environment that scripts/build-tools.sh
builds.
"""

import copy
import os

import pytest

from datadns.federation import Federation, setSettings
from datadns.sample import SHARED_DATASET
from girder_resolver import tools
from girder_resolver.launcher import get_launcher
from plugin_tests.federation_helpers import (
    allHealthy,
    eventually,
    getAtCentral,
    personSession,
    stopFederation,
    waitSettled,
)

SHARED = SHARED_DATASET[1]
MISSING_ENV = '/nonexistent/datadns-tools/missing'


def toolsOf(site):
    python = tools.default_tools()[0]
    if site == 'site-a':
        classic = {**copy.deepcopy(python), 'id': 'python-classic', 'name': 'Python (classic)'}
        classic['ui'] = 'notebook'
        return [python, classic]
    missing = {'id': 'missing', 'name': 'Missing', 'process': {'env': MISSING_ENV}}
    return [python, missing]


@pytest.fixture(scope='module')
def fed(mongoUri, tmp_path_factory):
    ready, reason = get_launcher('process').tool_ready(tools.default_tools()[0])
    if not ready:
        pytest.fail(
            f'The python tool is not built here ({reason}). scripts/build-tools.sh builds it '
            '(make test runs it).',
            pytrace=False,
        )
    federation = Federation(
        mongoUri,
        tmp_path_factory.mktemp('tool-federation'),
        dbPrefix=f'toolfed_{os.getpid()}',
        interval=1,
        centralSettings={'resolver.heartbeat_ttl': 600},
        siteSettings={'resolver.backend': 'process', 'resolver.user_cap': 3},
        env={'GIRDER_SERVER_MODE': 'production'},
    )
    try:
        federation.start()
        for name in federation.siteNames:
            setSettings(federation.clients[name], {'resolver.tools': toolsOf(name)})
            federation.startFeder8(name)
        eventually(lambda: allHealthy(federation), 60, 'both sites registered and healthy')
        yield federation
    finally:
        stopFederation(federation)


def locations(fed):
    resp = getAtCentral(fed, 'resolve', id=SHARED)
    assert resp.status_code == 200, resp.text
    return {loc['site']: loc for loc in resp.json()['locations']}


def testResolveShowsTheToolsEachLocationOffers(fed):
    found = locations(fed)
    assert set(found) == {'site-a', 'site-b'}
    offered = {site: [(t['id'], t['ready']) for t in loc['tools']] for site, loc in found.items()}
    assert offered == {
        'site-a': [('python', True), ('python-classic', True)],
        'site-b': [('python', True), ('missing', False)],
    }
    assert all(loc['tools'][0]['default'] for loc in found.values())


def testTheCentralLaunchesAToolAtASiteThatOffersIt(fed):
    alice = personSession(fed, 'alice')
    launch = lambda **params: alice.post(  # noqa: E731
        f'{alice.api}/resolve/launch', params={'id': SHARED, **params}, timeout=60
    )
    # A tool no location offers: a 400 naming what each offers; nothing launched.
    resp = launch(tool='rstudio')
    assert resp.status_code == 400, resp.text
    assert 'site-a: python, python-classic' in resp.json()['message']
    assert 'site-b: python, missing' in resp.json()['message']
    # Offered, but ready nowhere: refused with the reason, not launched broken.
    resp = launch(tool='missing')
    assert resp.status_code == 409, resp.text
    assert 'not ready' in resp.json()['message']
    # Offered by site-a only: it goes there, whichever site ranks first otherwise.
    resp = launch(tool='python-classic', site='site-b')
    assert resp.status_code == 400, resp.text
    resp = launch(tool='python-classic')
    assert resp.status_code == 200, resp.text
    classic = resp.json()
    assert classic['site'] == 'site-a' and classic['tool'] == 'python-classic'
    classic = waitSettled(alice, classic['_id'])
    assert classic['status'] == 'running', classic['message']
    atSite = fed.clients['site-a'].get('notebook', parameters={'live': 'true'})
    assert [(n['_id'], n['tool']) for n in atSite] == [(classic['remoteId'], 'python-classic')]
    # Another tool for the same dataset is another notebook.
    resp = launch(tool='python', site='site-a')
    assert resp.status_code == 200, resp.text
    python = resp.json()
    assert python['_id'] != classic['_id'] and python['tool'] == 'python'
    assert launch(tool='python-classic').json()['_id'] == classic['_id']
    for nb in (classic, python):
        assert alice.delete(f'{alice.api}/notebook/{nb["_id"]}', timeout=60).status_code == 200
