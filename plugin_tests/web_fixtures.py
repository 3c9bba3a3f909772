"""Helpers for the browser tests: a live Girder with sample data, and Debian's Chromium.

test_web_client.py turns them into fixtures. The stack is started once per module: a
``girder serve`` subprocess on the session's test database server (its own database),
provisioned like ``datadns up`` provisions a site, with a second user and two registered
remote sites for the federation views.
"""

import contextlib
import datetime
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import girder_client
import pymongo
import pytest
import requests

from datadns import sample, stack
from datadns.federation import LOOPBACK_SITE_HOSTS, apiKey, launchCredential
from girder_resolver import WEB_CLIENT_DIST, WEB_CLIENT_JS

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / 'test-artifacts' / 'screenshots'
LOGS = REPO / 'test-artifacts' / 'logs'

CHROMIUM_ARGS = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
]

ADMIN = ('admin', 'adminpassword1')
USER = ('alice', 'alicepassword1')
#: The site the browser talks to (it holds datadns.sample's "site-a" datasets and is the
#: central resolver too), a second real site, and a registered site that fell silent.
SITE_A = 'site-a'
SITE_B = 'site-b'
REMOTE_SILENT = 'site-c'
SILENT_ONLY_DOI = 'doi:10.5072/datadns.silent'


def chromiumPath():
    """Debian's Chromium, or a failure in CI and a skip elsewhere when it is missing."""
    path = os.environ.get('DATADNS_CHROMIUM', '/usr/bin/chromium')
    if Path(path).is_file() and os.access(path, os.X_OK):
        return path
    reason = f'Chromium not found at {path} (set DATADNS_CHROMIUM, or apt-get install chromium)'
    if os.environ.get('CI') == 'true':
        pytest.fail(reason)
    pytest.skip(reason)


def ensureWebClientBuilt():
    """Build the web client (scripts/build-web.sh) when its bundle is missing."""
    if (WEB_CLIENT_DIST / WEB_CLIENT_JS).is_file():
        return
    if shutil.which('npm') is None:
        reason = 'npm is missing, so the web client cannot be built'
        if os.environ.get('CI') == 'true':
            pytest.fail(reason)
        pytest.skip(reason)
    subprocess.run([str(REPO / 'scripts' / 'build-web.sh')], check=True, cwd=REPO)
    assert (WEB_CLIENT_DIST / WEB_CLIENT_JS).is_file(), 'the web build did not produce its bundle'


class LiveSite:
    """What the tests need to know about the running stack."""

    def __init__(self, name, girder, adminClient, collection, datasets, userIds):
        self.name = name
        self.girder = girder
        self.url = girder.url
        self.apiUrl = girder.apiUrl
        self.admin = adminClient
        self.collection = collection
        #: [(name, identifier, folder)]
        self.datasets = datasets
        #: login -> user id
        self.userIds = userIds

    def client(self, login, password):
        gc = girder_client.GirderClient(apiUrl=self.apiUrl)
        gc.authenticate(login, password)
        return gc

    def dataset(self, name):
        return next(d for d in self.datasets if d[0] == name)


@contextlib.contextmanager
def startSite(mongoUri, siteName, users=()):
    """Start a Girder (and Redis, when there is one) named ``siteName`` with sample data.

    Its database is its own on the ``mongoUri`` server; ``users`` are (login, password)
    accounts to create besides the admin. Yields a LiveSite; stops what it started.
    The sample data lives in a private temporary directory (not pytest's tmp_path, which
    another pytest session on the machine may prune while this one runs); the logs are
    kept in test-artifacts/logs/.
    """
    ensureWebClientBuilt()
    home = Path(tempfile.mkdtemp(prefix=f'datadns-web-{siteName}-'))
    logDir = LOGS / siteName
    shutil.rmtree(logDir, ignore_errors=True)
    services = []
    # Development mode (girder serve's default) restarts the server whenever a .py file
    # under the working directory changes, which would drop launches in flight.
    extraEnv = {'GIRDER_SERVER_MODE': 'production'}
    try:
        if stack.Redis.available():
            # Girder's notifications (the web client's event stream) go through Redis.
            redis = stack.Redis(logDir=logDir).start()
            services.append(redis)
            extraEnv['GIRDER_NOTIFICATION_REDIS_URL'] = redis.url
        girder = stack.Girder(
            mongoUri,
            dbName=f'web_test_{uuid.uuid4().hex[:10]}',
            logDir=logDir,
            extraEnv=extraEnv,
        )
        services.append(girder)
        girder.start()
        gc = sample.ensureAdmin(girder.apiUrl, *ADMIN)
        gc.put(
            'system/setting',
            parameters={
                'list': json.dumps(
                    [
                        {'key': 'resolver.site_name', 'value': siteName},
                        {'key': 'resolver.allowed_site_hosts', 'value': LOOPBACK_SITE_HOSTS},
                    ]
                )
            },
        )
        datasets = sample.provisionSite(gc, siteName, home / 'data', home / 'assetstore')
        collection = sample.ensureCollection(gc, 'Sample datasets')
        userIds = {}
        for login, password in users:
            user = gc.post(
                'user',
                parameters={
                    'login': login,
                    'password': password,
                    'email': f'{login}@datadns.invalid',
                    'firstName': login.capitalize(),
                    'lastName': 'Researcher',
                },
            )
            userIds[login] = user['_id']
        yield LiveSite(siteName, girder, gc, collection, datasets, userIds)
    finally:
        for service in reversed(services):
            service.stop()
        shutil.rmtree(home, ignore_errors=True)


def heartbeat(central, site):
    """What the site's feder8 sends every few seconds: it is alive, with its capacity."""
    central.admin.put(
        f'resolver/site/{site.name}/heartbeat', parameters={'running': 0, 'capacity': 8}
    )


def registerFederation(central, siteB):
    """Register two sites with the central: ``siteB`` (a real Girder, heartbeating, with a
    launch credential, as its feder8 would) and a silent one, last heard from yesterday."""
    # The launch credential, as feder8 makes it: a launch-scoped key of site B's
    # federation service account.
    key = {
        'key': launchCredential(
            siteB.name,
            siteB.apiUrl,
            apiKey(siteB.admin, 'feder8 site reader'),
            central.apiUrl,
            apiKey(central.admin, 'feder8 registrations'),
        )
    }
    central.admin.post(
        'resolver/site',
        json={
            'name': siteB.name,
            'apiUrl': siteB.apiUrl,
            'credential': key['key'],
            'mode': 'full',
            'datasets': [
                {'identifier': identifier, 'folderId': folder['_id'], 'name': name}
                for name, identifier, folder in siteB.datasets
            ],
        },
    )
    heartbeat(central, siteB)
    central.admin.post(
        'resolver/site',
        json={
            'name': REMOTE_SILENT,
            'apiUrl': 'http://127.0.0.1:9/silent/api/v1',
            'mode': 'full',
            'datasets': [
                {'identifier': SILENT_ONLY_DOI, 'folderId': 'd' * 24, 'name': 'Silent survey'},
            ],
        },
    )
    # Its sidecar stopped a day ago: move its last heartbeat back, as time would.
    yesterday = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=1)
    db = pymongo.MongoClient(central.girder.mongoUri)
    try:
        db[central.girder.dbName]['resolver_site'].update_one(
            {'name': REMOTE_SILENT}, {'$set': {'lastHeartbeat': yesterday}}
        )
    finally:
        db.close()
    return [siteB.name, REMOTE_SILENT]


@contextlib.contextmanager
def launchChromium(extraArgs=()):
    """Debian's Chromium under Playwright (skips or fails when it is missing, see chromiumPath)."""
    executable = chromiumPath()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=[*CHROMIUM_ARGS, *extraArgs])
        try:
            yield chromium
        finally:
            chromium.close()


@contextlib.contextmanager
def newPage(browser, testName):
    """A page in a fresh browser context (no login carried over), failing on JavaScript errors."""
    context = browser.new_context(viewport={'width': 1280, 'height': 900})
    context.set_default_timeout(20000)
    context.set_default_navigation_timeout(45000)
    page = context.new_page()
    errors = []
    page.on('pageerror', lambda exc: errors.append(str(exc)))
    page.screenshots = Screenshots(page, testName)
    try:
        yield page
    finally:
        context.close()
    assert not errors, f'JavaScript errors on the page: {errors}'


class Screenshots:
    """``shot(step)`` saves test-artifacts/screenshots/<test>-<step>.png."""

    def __init__(self, page, testName):
        self.page = page
        self.testName = testName.split('[')[0]
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, step, page=None):
        path = SCREENSHOTS / f'{self.testName}-{step}.png'
        page = page or self.page
        # Girder's header is position: fixed; from the top it stays at the top of the image.
        page.evaluate('window.scrollTo(0, 0)')
        page.screenshot(path=str(path), full_page=True)
        return path


def apiGet(liveSite, path, token=None, **params):
    headers = {'Girder-Token': token} if token else {}
    return requests.get(f'{liveSite.apiUrl}/{path}', params=params, headers=headers, timeout=10)
