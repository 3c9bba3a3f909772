"""The web client in a real browser: Debian's Chromium driven by Playwright against a live
Girder with the plugin and sample datasets (see web_fixtures.py).

Each step saves a screenshot to test-artifacts/screenshots/<test>-<step>.png.
"""

import datetime
import json
import re
import time
import urllib.parse

import pymongo
import pytest
import requests
from playwright.sync_api import expect

from girder_resolver import tools

from .web_fixtures import (
    ADMIN,
    REMOTE_SILENT,
    SILENT_ONLY_DOI,
    SITE_A,
    SITE_B,
    USER,
    apiGet,
    heartbeat,
    launchChromium,
    newPage,
    registerFederation,
    startSite,
)

# The machine may be busy with other test servers; give the UI time.
expect.set_options(timeout=20000)

GALAXY = 'Galaxy survey'
LAUNCH_TIMEOUT_MS = 90000


@pytest.fixture(scope='module')
def liveSite(mongoUri):
    """The site the browser uses; it is the central resolver too."""
    with startSite(mongoUri, SITE_A, users=[USER]) as site:
        yield site


@pytest.fixture(scope='module')
def siteB(mongoUri):
    with startSite(mongoUri, SITE_B) as site:
        yield site


@pytest.fixture(scope='module')
def registeredSites(liveSite, siteB):
    return registerFederation(liveSite, siteB)


@pytest.fixture
def federation(registeredSites, liveSite, siteB):
    """The registered sites, site B having just sent a heartbeat (as its feder8 does)."""
    heartbeat(liveSite, siteB)
    return registeredSites


@pytest.fixture(scope='module')
def browser():
    with launchChromium() as chromium:
        yield chromium


@pytest.fixture
def page(browser, request):
    failedBefore = request.session.testsfailed
    with newPage(browser, request.node.name) as page:
        yield page
        if request.session.testsfailed > failedBefore:
            # The test's outcome is known by teardown: keep what the browser showed.
            for i, each in enumerate(page.context.pages):
                page.screenshots(f'failed-{i}', page=each)


def logIn(page, credentials, opener='.g-login'):
    """Log in through Girder's own login dialog, opened by clicking ``opener``."""
    login, password = credentials
    page.locator(opener).first.click()
    dialog = page.locator('#g-login-form')
    # Once shown, the dialog focuses the login field; filling before that loses keystrokes.
    expect(dialog.locator('#g-login')).to_be_focused()
    dialog.locator('#g-login').fill(login)
    dialog.locator('#g-password').fill(password)
    dialog.locator('#g-login-button').click()
    expect(page.locator('.g-user-dropdown-link')).to_contain_text(login)
    # The dialog fades out and then tidies the URL; navigate only once it is gone.
    expect(dialog).to_be_hidden()
    expect(page.locator('.modal-backdrop')).to_have_count(0)


def openApp(page, liveSite, fragment=''):
    page.goto(f'{liveSite.url}/#{fragment}')
    expect(page.locator('#g-app-header-container')).to_be_visible()


def datasetRow(page, name):
    return page.locator('.g-resolver-dataset', has=page.locator(f'text="{name}"'))


def tokenOf(liveSite, credentials):
    return liveSite.client(*credentials).token


# Collection and folder pages -----------------------------------------------------------


def testCollectionPageListsItsDatasetsWithTheirIdentifiers(page, liveSite):
    openApp(page, liveSite)
    logIn(page, USER)
    page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}')
    panel = page.locator('.g-resolver-datasets-collection')
    expect(panel).to_be_visible()
    expect(panel.locator('.g-resolver-dataset')).to_have_count(len(liveSite.datasets))
    for name, identifier, _folder in liveSite.datasets:
        row = datasetRow(page, name)
        expect(row.locator('.g-resolver-identifier')).to_have_text(identifier)
        expect(row.locator('.g-resolver-launch')).to_be_visible()
        # The site's tools, its default preselected (scripts/build-tools.sh built them all).
        expect(row.locator('select.g-resolver-tool')).to_have_value(tools.DEFAULT_TOOL)
        expect(row.locator('select.g-resolver-tool option:enabled')).to_have_count(
            len(tools.default_tool_ids())
        )
    # The folder list beside it carries the same badges.
    folderLink = page.locator('.g-folder-list-entry', has_text=GALAXY)
    expect(folderLink.locator('.g-resolver-identifier')).to_have_text(liveSite.dataset(GALAXY)[1])
    page.screenshots('collection')


def testFolderPageShowsTheIdentifierOfItsDataset(page, liveSite):
    openApp(page, liveSite)
    logIn(page, USER)
    name, identifier, folder = liveSite.dataset(GALAXY)
    # The dataset recommends the R tool: its menu preselects it.
    liveSite.admin.addMetadataToFolder(folder['_id'], {'datadns_tool': 'r'})
    try:
        page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}/folder/{folder["_id"]}')
        panel = page.locator('.g-resolver-datasets-folder')
        expect(panel).to_contain_text('This folder is a dataset')
        expect(panel.locator('.g-resolver-identifier')).to_have_text(identifier)
        expect(panel.locator('.g-resolver-launch')).to_be_visible()
        expect(panel.locator('select.g-resolver-tool')).to_have_value('r')
        expect(panel.locator('select.g-resolver-tool option[value="r"]')).to_contain_text(
            'recommended'
        )
        page.screenshots('folder')
    finally:
        liveSite.admin.addMetadataToFolder(folder['_id'], {'datadns_tool': None})


def testAnonymousVisitorIsAskedToLogInOnACollectionPage(page, liveSite):
    openApp(page, liveSite, f'collection/{liveSite.collection["_id"]}')
    row = datasetRow(page, GALAXY)
    expect(row.locator('.g-resolver-identifier')).to_be_visible()
    expect(row.locator('.g-resolver-launch')).to_have_count(0)
    row.locator('.g-resolver-login').click()
    expect(page.locator('#g-login-form')).to_be_visible()
    page.screenshots('login-dialog')


# Until the page knows who is visiting, the panel offers nothing to click: a logged-in
# visitor must never see (and click) "Log in to launch", an anonymous one never "Launch".
WATCH_PANEL = """
window.__panelSeen = [];
new MutationObserver(() => {
    for (const sel of ['.g-resolver-login', '.g-resolver-launch']) {
        if (document.querySelector(sel) && !window.__panelSeen.includes(sel)) {
            window.__panelSeen.push(sel);
        }
    }
}).observe(document, {childList: true, subtree: true});
"""


def testALoggedInVisitorNeverSeesTheLoggedOutPanel(page, liveSite):
    # A returning visitor: Girder's client keeps its token in localStorage.
    token = json.dumps(tokenOf(liveSite, USER))
    page.add_init_script(f'localStorage.setItem("girderToken", {token});' + WATCH_PANEL)
    page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}')
    expect(datasetRow(page, GALAXY).locator('.g-resolver-launch')).to_be_visible()
    assert page.evaluate('window.__panelSeen') == ['.g-resolver-launch']
    page.screenshots('logged-in')


def testAnAnonymousVisitorNeverSeesLaunchUntilLoggedInThenNeverLogIn(page, liveSite):
    page.add_init_script(WATCH_PANEL)
    page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}')
    row = datasetRow(page, GALAXY)
    expect(row.locator('.g-resolver-login')).to_be_visible()
    assert page.evaluate('window.__panelSeen') == ['.g-resolver-login']
    logIn(page, USER, opener='.g-resolver-login')
    expect(row.locator('.g-resolver-launch')).to_be_visible()
    expect(page.locator('.g-resolver-datasets .g-resolver-login')).to_have_count(0)


# The #resolve page ----------------------------------------------------------------------


def testResolveLinkTakesAnAnonymousVisitorThroughLoginBackToTheDataset(page, liveSite):
    name, identifier, folder = liveSite.dataset(GALAXY)
    # The link a repository publishes, in a spelling other than the canonical one.
    link = f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode(
        {'id': 'https://doi.org/10.5072/DataDNS.Galaxies'}
    )
    page.goto(link)
    expect(page).to_have_url(re.compile(r'#resolve\?id='))
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-dataset-title .g-resolver-dataset-name')).to_have_text(name)
    expect(view.locator('.g-resolver-dataset-title .g-resolver-identifier')).to_have_text(
        identifier
    )
    expect(view.locator('.g-resolver-location')).to_have_count(1)
    expect(view.locator('.g-resolver-location')).to_contain_text('reachable')
    expect(view.locator('.g-resolver-login-prompt')).to_be_visible()
    expect(view.locator('.g-resolver-launch')).to_have_count(0)
    page.screenshots('1-anonymous')

    view.locator('.g-resolver-login-button').click()
    dialog = page.locator('#g-login-form')
    expect(dialog.locator('#g-login')).to_be_focused()
    dialog.locator('#g-login').fill(USER[0])
    dialog.locator('#g-password').fill(USER[1])
    page.screenshots('2-login-dialog')
    dialog.locator('#g-login-button').click()

    expect(page.locator('.g-user-dropdown-link')).to_contain_text(USER[0])
    expect(page).to_have_url(re.compile(r'#resolve\?id=https'))
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-dataset-title .g-resolver-dataset-name')).to_have_text(name)
    expect(view.locator('.g-resolver-login-prompt')).to_have_count(0)
    expect(view.locator('.g-resolver-launch')).to_be_visible()
    page.screenshots('3-logged-in')


def testUnknownIdentifierIsExplainedInWords(page, liveSite):
    openApp(page, liveSite, 'resolve?id=doi:10.5072/no-such-dataset')
    failure = page.locator('.g-resolver-failure')
    expect(failure).to_contain_text('No site in this federation holds this dataset')
    expect(failure).to_contain_text('doi:10.5072/no-such-dataset')
    page.screenshots('unknown')

    openApp(page, liveSite, 'resolve?id=' + urllib.parse.quote('not an identifier at all'))
    failure = page.locator('.g-resolver-failure')
    expect(failure).to_contain_text('This is not an identifier we can read')
    page.screenshots('unparsable')


def testDatasetWithNoHealthySiteIsExplainedInWords(page, liveSite, federation):
    openApp(page, liveSite)
    logIn(page, USER)
    page.goto(f'{liveSite.url}/#resolve?id={SILENT_ONLY_DOI}')
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-no-healthy')).to_contain_text(
        'None of the sites holding this dataset is reachable right now'
    )
    expect(view.locator('.g-resolver-location')).to_contain_text('unreachable')
    expect(view.locator('.g-resolver-launch')).to_have_count(0)
    page.screenshots('no-healthy-site')


# Admin pages ----------------------------------------------------------------------------


def testAdminChangesASettingOnTheSettingsPage(page, liveSite):
    openApp(page, liveSite)
    logIn(page, ADMIN)
    # Reached from Girder's plugin list, like every plugin's settings.
    page.goto(f'{liveSite.url}/#plugins')
    page.locator('.g-plugin-config-link[g-route="plugins/resolver/config"]').click()
    expect(page).to_have_url(re.compile(r'#plugins/resolver/config$'))
    form = page.locator('.g-resolver-settings-form')
    idle = form.locator('#g-resolver-idle-timeout')
    expect(idle).to_have_value('3600')
    expect(form.locator('#g-resolver-cpu-limit')).to_have_value('1')
    expect(form.locator('#g-resolver-pids-limit')).to_have_value('512')
    page.screenshots('1-loaded')

    # A value the server refuses is shown next to its field, in the server's words.
    cap = form.locator('#g-resolver-user-cap')
    cap.fill('0')
    idle.fill('1234')
    form.locator('.g-resolver-settings-save').click()
    capGroup = form.locator('.g-resolver-setting[data-key="resolver.user_cap"]')
    expect(capGroup).to_have_class(re.compile('has-error'))
    expect(capGroup.locator('.g-resolver-setting-error')).to_contain_text('at least 1')
    expect(form.locator('.g-resolver-settings-error')).to_contain_text('Notebooks per person')
    page.screenshots('2-validation-error')

    cap.fill('3')
    form.locator('#g-resolver-backend').select_option('docker')
    form.locator('.g-resolver-settings-save').click()
    expect(page.locator('#g-alerts-container')).to_contain_text('Settings saved')
    expect(capGroup).not_to_have_class(re.compile('has-error'))
    page.screenshots('3-saved')

    settings = liveSite.admin.get(
        'system/setting',
        parameters={'list': '["resolver.idle_timeout", "resolver.user_cap", "resolver.backend"]'},
    )
    assert settings == {
        'resolver.idle_timeout': 1234,
        'resolver.user_cap': 3,
        'resolver.backend': 'docker',
    }
    liveSite.admin.put(
        'system/setting',
        parameters={
            'list': '[{"key": "resolver.backend", "value": "process"},'
            ' {"key": "resolver.idle_timeout", "value": 3600},'
            ' {"key": "resolver.user_cap", "value": 2}]'
        },
    )


def testTheSettingsPageShowsEverySettingTheServerDeclaresAndNeverASecret(page, liveSite):
    secret = 'page-secret-0123456789abcdef'
    declared = liveSite.admin.get('resolver/setting')
    # The live site is shared with later tests, which launch at loopback sites.
    siteHosts = liveSite.admin.get(
        'system/setting', parameters={'key': 'resolver.allowed_site_hosts'}
    )
    openApp(page, liveSite, 'plugins/resolver/config')
    logIn(page, ADMIN)
    form = page.locator('.g-resolver-settings-form')
    expect(form.locator('.g-resolver-setting')).to_have_count(len(declared))
    hosts = form.locator('.g-resolver-setting[data-key="resolver.allowed_site_hosts"]')
    expect(hosts.locator('.g-resolver-setting-help')).to_contain_text('CIDR ranges')
    expect(form.locator('#g-resolver-federation-service')).to_be_disabled()
    # Every value round-trips through its field unchanged: an untouched form saves nothing.
    form.locator('.g-resolver-settings-save').click()
    expect(page.locator('#g-alerts-container')).to_contain_text('Nothing to save')

    # A secret is typed, saved, never shown back; a JSON list the server refuses says why.
    form.locator('#g-resolver-metrics-token').fill(secret)
    form.locator('#g-resolver-allowed-site-hosts').fill('["not a host!"]')
    form.locator('#g-resolver-allow-unsandboxed').select_option('true')
    form.locator('.g-resolver-settings-save').click()
    expect(hosts.locator('.g-resolver-setting-error')).to_contain_text('neither a host name')
    expect(form.locator('.g-resolver-settings-error')).to_contain_text('Allowed site hosts')
    token = form.locator('.g-resolver-setting[data-key="resolver.metrics_token"]')
    expect(token.locator('.g-resolver-secret-clear')).to_have_count(1)
    page.screenshots('1-secret-saved')
    assert secret not in page.content()
    stored = liveSite.admin.get(
        'system/setting',
        parameters={'list': '["resolver.metrics_token", "resolver.allow_unsandboxed"]'},
    )
    assert stored == {'resolver.metrics_token': secret, 'resolver.allow_unsandboxed': True}

    # Removed from the page: admins only again; the hosts field is put back as it was.
    form.locator('#g-resolver-allowed-site-hosts').fill(json.dumps(siteHosts))
    form.locator('#g-resolver-allow-unsandboxed').select_option('false')
    token.locator('.g-resolver-secret-clear').check()
    form.locator('.g-resolver-settings-save').click()
    expect(page.locator('#g-alerts-container')).to_contain_text('Settings saved')
    expect(token.locator('.g-resolver-secret-clear')).to_have_count(0)
    stored = liveSite.admin.get(
        'system/setting',
        parameters={'list': '["resolver.metrics_token", "resolver.allow_unsandboxed"]'},
    )
    assert stored == {'resolver.metrics_token': '', 'resolver.allow_unsandboxed': False}
    assert (
        liveSite.admin.get('system/setting', parameters={'key': 'resolver.allowed_site_hosts'})
        == siteHosts
    )


def testFederationPageListsTheSitesWithTheirHealth(page, liveSite, federation):
    openApp(page, liveSite)
    logIn(page, ADMIN)
    page.goto(f'{liveSite.url}/#admin')
    page.locator('.g-resolver-admin-federation a').click()
    expect(page).to_have_url(re.compile(r'#resolver/federation$'))
    table = page.locator('.g-resolver-sites')
    healthy = table.locator(f'.g-resolver-site[data-site="{SITE_B}"]')
    silent = table.locator(f'.g-resolver-site[data-site="{REMOTE_SILENT}"]')
    expect(healthy.locator('.g-resolver-health')).to_have_text('healthy')
    expect(healthy.locator('.g-resolver-site-datasets')).to_have_text('2')
    expect(healthy.locator('.g-resolver-site-running')).to_have_text('0 of 8')
    expect(silent.locator('.g-resolver-health')).to_have_text('unreachable')
    expect(silent.locator('.g-resolver-site-datasets')).to_have_text('1')
    # Who operates each site, and what deserves a look.
    expect(healthy.locator('.g-resolver-site-operator')).to_have_text(ADMIN[0])
    expect(healthy.locator('.g-resolver-site-no-credential')).to_have_count(0)
    expect(silent.locator('.g-resolver-site-no-credential')).to_have_text('no credential')
    page.screenshots('sites')


def markSuspect(liveSite, siteName, reason):
    """What the central's circuit breaker writes after a failed launch at ``siteName``;
    None as ``reason`` clears it (as a heartbeat from the site does)."""
    db = pymongo.MongoClient(liveSite.girder.mongoUri)
    try:
        if reason is None:
            update = {'$set': {'failures': 0}, '$unset': {'suspectSince': '', 'suspectReason': ''}}
        else:
            now = datetime.datetime.now(datetime.UTC)
            update = {'$set': {'failures': 1, 'suspectSince': now, 'suspectReason': reason}}
        db[liveSite.girder.dbName]['resolver_site'].update_one({'name': siteName}, update)
    finally:
        db.close()
    # Written behind the server's back: it may reuse its last read of a site for 2 s.
    time.sleep(2.1)


def testASuspectSiteIsShownSoOnTheFederationAndResolvePages(page, liveSite, siteB, federation):
    reason = f'Site "{SITE_B}" did not answer in 2 s.'
    markSuspect(liveSite, SITE_B, reason)
    try:
        openApp(page, liveSite)
        logIn(page, ADMIN)
        page.goto(f'{liveSite.url}/#resolver/federation')
        row = page.locator(f'.g-resolver-sites .g-resolver-site[data-site="{SITE_B}"]')
        expect(row.locator('.g-resolver-health')).to_have_text('suspect')
        expect(row.locator('.g-resolver-suspect')).to_have_attribute(
            'title', f'Failed calls lately: {reason}'
        )
        expect(page.locator('.g-resolver-suspect-count')).to_have_text('1')
        page.screenshots('federation')

        _name, identifier, _folder = siteB.dataset('Climate reanalysis')
        page.goto(f'{liveSite.url}/#resolve?' + urllib.parse.urlencode({'id': identifier}))
        location = page.locator(f'.g-resolver-location[data-site="{SITE_B}"]')
        expect(location.locator('.g-resolver-health')).to_have_text('suspect')
        page.screenshots('resolve')
    finally:
        markSuspect(liveSite, SITE_B, None)


# Notebooks ------------------------------------------------------------------------------


def assertNotebookPage(notebookPage, url, datasetName):
    """The page a notebook URL leads to is the notebook server's own, with the dataset in it.

    ``url`` is the notebook's single-use open link; the page ends at the front door's
    ``/notebook/<id>/``, logged in by the cookie that the link set, with no token in sight.
    """
    notebookId = re.search(r'/notebook/([0-9a-f]{24})/open\?ticket=', url).group(1)
    expect(notebookPage).to_have_url(re.compile(rf'/notebook/{notebookId}/'))
    expect(notebookPage.locator('body')).to_contain_text('Jupyter')
    assert 'token' not in notebookPage.url
    base = notebookPage.url.split(f'/notebook/{notebookId}/')[0] + f'/notebook/{notebookId}/'
    # Whatever the notebook's front end, its contents API lists the mounted dataset, to
    # this browser (its cookie) and to nobody else.
    resp = notebookPage.request.get(f'{base}api/contents')
    assert resp.ok, resp.status
    names = [entry['name'] for entry in resp.json()['content']]
    assert any(datasetName.split()[0] in name for name in names), names
    assert requests.get(f'{base}api/contents', timeout=10).status_code == 403


def notebooksOf(liveSite, credentials, folderId):
    token = tokenOf(liveSite, credentials)
    resp = apiGet(liveSite, 'notebook', token, folderId=folderId)
    resp.raise_for_status()
    return resp.json()


@pytest.mark.timeout(300)
def testCollectionPageLaunchesOpensAndStopsANotebook(page, liveSite):
    name, identifier, folder = liveSite.dataset(GALAXY)
    openApp(page, liveSite)
    logIn(page, USER)
    page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}')
    row = datasetRow(page, name)
    expect(row.locator('.g-resolver-launch')).to_be_visible()
    page.screenshots('1-before')

    row.locator('.g-resolver-launch').click()
    status = row.locator('.g-resolver-status-launching')
    expect(status).to_be_visible()
    expect(status.locator('.g-resolver-progress-message')).not_to_be_empty()
    page.screenshots('2-launching')

    openLink = row.locator('.g-resolver-open')
    expect(openLink).to_be_visible(timeout=LAUNCH_TIMEOUT_MS)
    expect(row.locator('.g-resolver-stop')).to_be_visible()
    url = openLink.get_attribute('href')
    page.screenshots('3-running')

    with page.context.expect_page() as popup:
        openLink.click()
    notebookPage = popup.value
    notebookPage.wait_for_load_state()
    assertNotebookPage(notebookPage, url, name)
    page.screenshots('4-notebook', page=notebookPage)
    notebookPage.close()

    # Each answer carries a fresh single-use link: the same notebook, another ticket.
    [running] = [
        nb
        for nb in notebooksOf(liveSite, USER, folder['_id'])
        if nb['url'] and nb['url'].split('?')[0] == url.split('?')[0]
    ]
    assert running['status'] == 'running'

    row.locator('.g-resolver-stop').click()
    expect(row.locator('.g-resolver-launch')).to_be_visible(timeout=60000)
    page.screenshots('5-stopped')
    token = tokenOf(liveSite, USER)
    resp = apiGet(liveSite, f'notebook/{running["_id"]}', token)
    assert resp.status_code == 404 or resp.json()['status'] == 'stopped'


@pytest.mark.timeout(300)
def testResolveLinkLaunchesANotebookAfterLogin(page, liveSite):
    name, identifier, folder = liveSite.dataset('Ocean temperatures')
    link = f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode({'id': identifier})
    page.goto(link)
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-dataset-title .g-resolver-dataset-name')).to_have_text(name)
    logIn(page, USER, opener='.g-resolver-login-button')
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-launch')).to_be_visible()
    page.screenshots('1-ready')

    view.locator('.g-resolver-launch').click()
    expect(view.locator('.g-resolver-status-launching')).to_be_visible()
    page.screenshots('2-launching')

    # Once it runs, the page goes to the notebook by itself.
    page.wait_for_url(lambda url: not url.startswith(liveSite.url + '/'), timeout=LAUNCH_TIMEOUT_MS)
    page.wait_for_load_state()
    [nb] = [n for n in notebooksOf(liveSite, USER, folder['_id']) if n['status'] == 'running']
    assertNotebookPage(page, nb['url'], name)
    page.screenshots('3-notebook')
    liveSite.client(*USER).delete(f'notebook/{nb["_id"]}')


@pytest.mark.timeout(300)
def testAutolaunchLinkStartsTheNotebookRightAfterLogin(page, liveSite):
    name, identifier, folder = liveSite.dataset(GALAXY)
    link = f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode(
        {'id': identifier, 'autolaunch': '1'}
    )
    page.goto(link)
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-login-prompt')).to_contain_text(
        'a notebook with this dataset will start for you'
    )
    page.screenshots('1-anonymous')
    logIn(page, USER, opener='.g-resolver-login-button')
    # No click on Launch: the link asked for it.
    expect(page.locator('.g-resolver-status-launching')).to_be_visible()
    page.screenshots('2-launching')
    page.wait_for_url(lambda url: not url.startswith(liveSite.url + '/'), timeout=LAUNCH_TIMEOUT_MS)
    page.wait_for_load_state()
    [nb] = [n for n in notebooksOf(liveSite, USER, folder['_id']) if n['status'] == 'running']
    assertNotebookPage(page, nb['url'], name)
    page.screenshots('3-notebook')
    liveSite.client(*USER).delete(f'notebook/{nb["_id"]}')


# The bookmarklet of docs/repository-integration.md: test_bookmarklet.py.


@pytest.mark.timeout(300)
def testResolvePageLaunchesAtTheSiteThatHoldsTheData(page, liveSite, siteB, federation):
    """The central holds no copy: it asks site B to launch on the visitor's behalf."""
    name, identifier, _folder = siteB.dataset('Climate reanalysis')
    page.goto(f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode({'id': identifier}))
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-dataset-title .g-resolver-dataset-name')).to_have_text(name)
    logIn(page, USER, opener='.g-resolver-login-button')
    expect(view.locator('.g-resolver-launch-box')).to_contain_text(f'start at {SITE_B}')
    page.screenshots('1-ready')

    view.locator('.g-resolver-launch').click()
    expect(view.locator('.g-resolver-status-launching')).to_be_visible()
    page.screenshots('2-launching')
    page.wait_for_url(lambda url: not url.startswith(liveSite.url + '/'), timeout=LAUNCH_TIMEOUT_MS)
    page.wait_for_load_state()
    alice = liveSite.client(*USER)
    [nb] = [n for n in alice.get('notebook') if n['status'] == 'running']
    assert nb['site'] == SITE_B
    assertNotebookPage(page, nb['url'], name)
    page.screenshots('3-notebook')
    alice.delete(f'notebook/{nb["_id"]}')


@pytest.mark.timeout(300)
def testTheToolMenuOfTheResolvePageLaunchesTheChosenToolThroughTheCentral(
    page, liveSite, siteB, federation
):
    """Site B offers three tools, one not ready; its dataset recommends one: the menu shows
    them, preselects the recommendation, disables the one not ready with its reason, and the
    launch through the central runs the chosen tool at site B."""
    name, identifier, folder = siteB.dataset('Climate reanalysis')
    python = tools.default_tools()[0]
    # A second tool on the same built environment (JupyterLab): only the choice differs.
    other = {**python, 'id': 'python-alt', 'name': 'Python (alternative)'}
    missing = {'id': 'missing', 'name': 'Missing', 'process': {'env': '/nonexistent/tools/x'}}
    siteB.admin.put(
        'system/setting',
        parameters={'key': 'resolver.tools', 'value': json.dumps([python, other, missing])},
    )
    siteB.admin.addMetadataToFolder(folder['_id'], {'datadns_tool': 'python-alt'})

    def register(offered, recommended):
        # What site B's feder8 sends: its tools (GET /resolver/tool), each dataset's tool.
        entry = {'identifier': identifier, 'folderId': folder['_id'], 'name': name}
        if recommended:
            entry['tool'] = recommended
        liveSite.admin.post(
            'resolver/site',
            json={
                'name': SITE_B,
                'apiUrl': siteB.apiUrl,
                'mode': 'partial',
                'tools': [{k: t[k] for k in ('id', 'name', 'ready', 'default')} for t in offered],
                'datasets': [entry],
            },
        )

    offered = siteB.admin.get('resolver/tool')
    assert [(t['id'], t['ready']) for t in offered] == [
        ('python', True),
        ('python-alt', True),
        ('missing', False),
    ], 'the python tool must be built (scripts/build-tools.sh; make test runs it)'
    register(offered, 'python-alt')
    alice = liveSite.client(*USER)
    try:
        page.goto(f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode({'id': identifier}))
        view = page.locator('.g-resolver-resolve')
        logIn(page, USER, opener='.g-resolver-login-button')
        menu = view.locator('select.g-resolver-tool')
        expect(menu).to_have_value('python-alt')
        expect(menu.locator('option[value="python"]')).to_be_enabled()
        expect(menu.locator('option[value="missing"]')).to_be_disabled()
        expect(menu.locator('option[value="python-alt"]')).to_contain_text('recommended')
        expect(view.locator('.g-resolver-tool-reason[data-tool="missing"]')).to_contain_text(
            'not ready'
        )
        expect(view.locator('.g-resolver-location-tool[data-tool="missing"]')).to_contain_text(
            'not ready'
        )
        page.screenshots('1-menu')
        view.locator('.g-resolver-launch').click()
        page.wait_for_url(
            lambda url: not url.startswith(liveSite.url + '/'), timeout=LAUNCH_TIMEOUT_MS
        )
        page.wait_for_load_state()
        [nb] = [n for n in alice.get('notebook') if n['status'] == 'running']
        assert (nb['site'], nb['tool']) == (SITE_B, 'python-alt')
        assertNotebookPage(page, nb['url'], name)
        page.screenshots('2-notebook')
    finally:
        for nb in alice.get('notebook', parameters={'live': 'true'}):
            alice.delete(f'notebook/{nb["_id"]}')
        register([], None)
        siteB.admin.put(
            'system/setting',
            parameters={'key': 'resolver.tools', 'value': json.dumps(tools.default_tools())},
        )


# Federation trust in the browser -----------------------------------------------------------


@pytest.mark.timeout(300)
def testAnAutolaunchLinkNamingASiteAsksBeforeLaunchingThere(page, liveSite, siteB, federation):
    """A link chose the site, not the person: they see who operates it and confirm."""
    name, identifier, _folder = siteB.dataset('Climate reanalysis')
    link = f'{liveSite.apiUrl}/resolve?' + urllib.parse.urlencode(
        {'id': identifier, 'site': SITE_B, 'autolaunch': '1'}
    )
    page.goto(link)
    view = page.locator('.g-resolver-resolve')
    expect(view.locator('.g-resolver-dataset-title .g-resolver-dataset-name')).to_have_text(name)
    logIn(page, USER, opener='.g-resolver-login-button')
    confirm = view.locator('.g-resolver-confirm')
    expect(confirm).to_contain_text(f'launch a notebook at {SITE_B}')
    expect(confirm).to_contain_text(f'operated by {ADMIN[0]}')
    expect(view.locator('.g-resolver-location .g-resolver-operator')).to_contain_text(ADMIN[0])
    page.screenshots('1-asks')
    # Nothing started while it asks.
    page.wait_for_timeout(1000)
    alice = liveSite.client(*USER)
    assert [n for n in alice.get('notebook') if n['status'] in ('launching', 'running')] == []
    view.locator('.g-resolver-cancel-launch').click()
    expect(confirm).to_have_count(0)
    assert [n for n in alice.get('notebook') if n['status'] in ('launching', 'running')] == []
    page.screenshots('2-declined')


def testTheResolvePageNeverNavigatesToANotebookUrlThatIsNotHttp(page, liveSite):
    """Even if a server answered one, a javascript: notebook URL is not followed."""
    name, identifier, folder = liveSite.dataset(GALAXY)
    hostile = {
        '_id': 'f' * 24,
        'folderId': folder['_id'],
        'site': SITE_A,
        'status': 'running',
        'url': 'javascript:window.__pwned=1',
        'message': 'Running',
    }

    def fake(route):
        if route.request.method == 'POST':
            route.fulfill(json=hostile)
        else:
            route.continue_()

    page.route(re.compile(r'.*/api/v1/(notebook|resolve/launch)\?.*'), fake)
    page.goto(f'{liveSite.url}/#resolve?' + urllib.parse.urlencode({'id': identifier}))
    view = page.locator('.g-resolver-resolve')
    logIn(page, USER, opener='.g-resolver-login-button')
    view.locator('.g-resolver-launch').click()
    expect(view.locator('.g-resolver-refused')).to_be_visible()
    expect(view.locator('.g-resolver-open')).to_have_count(0)
    assert page.evaluate('window.__pwned') is None
    assert page.url.startswith(liveSite.url)
    page.screenshots('refused')


# Batch runs --------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def testTheRunFormSubmitsARunAndMyRunsFollowsItsLogToTheResults(page, liveSite):
    name, _identifier, _folder = liveSite.dataset(GALAXY)
    openApp(page, liveSite)
    logIn(page, USER)
    page.goto(f'{liveSite.url}/#collection/{liveSite.collection["_id"]}')
    row = datasetRow(page, name)
    row.locator('.g-resolver-run').click()
    form = row.locator('.g-resolver-run-form')
    expect(form).to_be_visible()
    expect(form.locator('.g-resolver-run-tool option').first).to_have_text("The site's default")
    # The tool the Launch menu chose is chosen here too.
    launchTool = row.locator('select.g-resolver-tool').input_value()
    expect(form.locator('.g-resolver-run-tool')).to_have_value(launchTool)
    form.locator('.g-resolver-run-command textarea').fill(
        'echo "counting rows"; for i in 1 2 3; do echo "step $i"; sleep 1; done; '
        'wc -l "$DATASET_DIR"/*.csv > "$RESULTS_DIR/rows.txt"'
    )
    form.locator('.g-resolver-run-fresh').check()
    page.screenshots('1-form')
    form.locator('.g-resolver-run-submit').click()
    follow = row.locator('.g-resolver-run-follow')
    expect(follow).to_be_visible()
    page.screenshots('2-submitted')

    follow.click()
    detail = page.locator('.g-resolver-run-detail')
    expect(detail).to_be_visible()
    log = detail.locator('.g-resolver-run-log')
    # The log shows while the run still runs.
    expect(log).to_contain_text('step 1', timeout=60000)
    page.screenshots('3-running')
    expect(detail.locator('.g-resolver-run-status')).to_have_text('succeeded', timeout=90000)
    expect(log).to_contain_text('step 3')
    expect(page.locator('.g-resolver-run-row .g-resolver-run-status').first).to_have_text(
        'succeeded'
    )
    page.screenshots('4-succeeded')

    results = detail.locator('.g-resolver-run-results')
    href = results.get_attribute('href')
    assert href.startswith(f'{liveSite.url}/#folder/') or href.startswith('#folder/'), href
    # The global navigation leads back here.
    expect(page.locator('.g-resolver-nav-runs')).to_be_visible()
    page.goto(f'{liveSite.url}/#folder/{href.rsplit("/", 1)[1]}')
    expect(page.locator('.g-item-list-link', has_text='rows.txt')).to_be_visible()
    page.screenshots('5-results')


def testMyRunsNeverLinksToAResultsUrlThatIsNotHttp(page, liveSite):
    """Even if a server answered one, a javascript: results URL never becomes a link."""
    hostile = {
        '_id': 'e' * 24,
        'status': 'succeeded',
        'site': SITE_B,
        'remoteId': 'f' * 24,
        'command': 'true',
        'exitCode': 0,
        'resultsUrl': 'javascript:window.__pwned=1',
        'resultsFolderId': None,
        'logTail': '',
        'created': '2026-01-01T00:00:00+00:00',
    }

    def fake(route):
        path = urllib.parse.urlsplit(route.request.url).path
        if path.endswith('/run'):
            route.fulfill(json=[hostile])
        elif path.endswith('/log'):
            route.fulfill(body='done\n', content_type='text/plain')
        else:
            route.fulfill(json=hostile)

    page.route(re.compile(r'.*/api/v1/run(/[0-9a-f]{24}(/log)?)?(\?.*)?$'), fake)
    openApp(page, liveSite)
    logIn(page, USER)
    page.goto(f'{liveSite.url}/#runs/{hostile["_id"]}')
    detail = page.locator('.g-resolver-run-detail')
    expect(detail.locator('.g-resolver-run-status')).to_have_text('succeeded')
    expect(detail.locator('.g-resolver-run-log')).to_contain_text('done')
    expect(page.locator('.g-resolver-run-row')).to_have_count(1)
    expect(page.locator('.g-resolver-run-results')).to_have_count(0)
    expect(page.locator('.g-resolver-runs-page a[href^="javascript"]')).to_have_count(0)
    assert page.evaluate('window.__pwned') is None
    page.screenshots('refused')


@pytest.mark.timeout(300)
def testTheResolvePageRunsAtTheSiteThatHoldsTheDataAndLinksToItsResultsThere(
    page, liveSite, siteB, federation
):
    """The central holds no copy: the run goes to site B, which keeps the results."""
    _name, identifier, _folder = siteB.dataset('Climate reanalysis')
    page.goto(f'{liveSite.url}/#resolve?' + urllib.parse.urlencode({'id': identifier}))
    view = page.locator('.g-resolver-resolve')
    logIn(page, USER, opener='.g-resolver-login-button')
    view.locator('.g-resolver-run').click()
    form = view.locator('.g-resolver-run-form')
    form.locator('.g-resolver-run-command textarea').fill(
        'ls "$DATASET_DIR" > "$RESULTS_DIR/listing.txt"; echo "listed at the site"'
    )
    form.locator('.g-resolver-run-fresh').check()
    form.locator('.g-resolver-run-submit').click()
    view.locator('.g-resolver-run-follow').click()
    detail = page.locator('.g-resolver-run-detail')
    expect(detail.locator('.g-resolver-run-status')).to_have_text('succeeded', timeout=90000)
    expect(detail).to_contain_text(f'At {SITE_B}')
    expect(detail.locator('.g-resolver-run-log')).to_contain_text('listed at the site')
    results = detail.locator('.g-resolver-run-results')
    expect(results).to_contain_text(f'Results at {SITE_B}')
    assert results.get_attribute('href').startswith(f'{siteB.url}/#folder/')
    assert results.get_attribute('target') == '_blank'
    page.screenshots('succeeded')
