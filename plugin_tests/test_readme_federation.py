"""The README's federation recipe, step by step, with two fresh installs on loopback.

Two Girders with the plugin on fresh databases and no settings at all, then
exactly what README.md's "Running a site in a federation" says: the central's
admin allows the site's loopback host and makes a registrar key; the site's
admin imports and tags data and makes a key; ``feder8 run`` with the README's
variables; a person of the central launches and gets a notebook at the site.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import girder_client
import pytest

from datadns import sample, stack
from datadns.federation import apiKey
from plugin_tests.federation_helpers import http

README = Path(__file__).resolve().parent.parent / 'README.md'
GALAXIES = 'doi:10.5072/datadns.galaxies'


def recipe():
    """The README's section, and the feder8 variables its command sets."""
    text = README.read_text()
    section = text[text.index('## Running a site in a federation') :]
    section = section[: section.index('\n## ', 3)]
    return section, set(re.findall(r'\b(FEDER8_[A-Z_]+)=', section))


@pytest.fixture
def installs(mongoUri, tmp_path):
    girders = {}
    try:
        for name in ('central', 'site'):
            girders[name] = stack.Girder(
                mongoUri,
                dbName=f'readme_{name}_{os.getpid()}',
                logDir=tmp_path / 'logs' / name,
            ).start()
        yield girders
    finally:
        for girder in girders.values():
            girder.stop()


def testTheReadmeRecipeFederatesTwoFreshInstallsAndLaunchesThroughTheCentral(installs, tmp_path):
    section, variables = recipe()
    assert variables == {
        'FEDER8_SITE_NAME',
        'FEDER8_GIRDER_URL',
        'FEDER8_GIRDER_API_KEY',
        'FEDER8_PUBLIC_URL',
        'FEDER8_CENTRAL_URL',
        'FEDER8_CENTRAL_API_KEY',
    }
    assert 'resolver.allowed_site_hosts' in section and 'value=["127.0.0.1"]' in section
    central, site = installs['central'], installs['site']

    # Fresh installs: different names out of the box, neither a shared constant.
    names = {
        name: http().get(f'{g.apiUrl}/resolver/server', timeout=10).json()
        for name, g in installs.items()
    }
    assert names['central']['siteName'] != names['site']['siteName']
    assert not names['central']['siteNameSet'] and not names['site']['siteNameSet']
    assert 'local' not in (names['central']['siteName'], names['site']['siteName'])

    # 1. At the central: a registrar key, and the site's loopback host allowed.
    centralAdmin = sample.ensureAdmin(central.apiUrl, 'admin', 'central-admin-pw')
    centralAdmin.put(
        'system/setting',
        parameters={'key': 'resolver.allowed_site_hosts', 'value': '["127.0.0.1"]'},
    )
    registrarKey = apiKey(centralAdmin, 'feder8 of site-a')

    # 2. At the site: data imported and tagged (public), and a key for feder8.
    siteAdmin = sample.ensureAdmin(site.apiUrl, 'admin', 'site-admin-pw')
    datasets = sample.provisionSite(siteAdmin, 'site-a', tmp_path / 'data', tmp_path / 'assetstore')
    siteKey = apiKey(siteAdmin, 'feder8')

    # 3. feder8 run, with the README's variables.
    env = {
        **os.environ,
        'FEDER8_SITE_NAME': 'site-a',
        'FEDER8_GIRDER_URL': site.apiUrl,
        'FEDER8_GIRDER_API_KEY': siteKey,
        'FEDER8_PUBLIC_URL': site.apiUrl,
        'FEDER8_CENTRAL_URL': central.apiUrl,
        'FEDER8_CENTRAL_API_KEY': registrarKey,
        'FEDER8_INTERVAL': '1',
        'PYTHONUNBUFFERED': '1',
    }
    log = open(tmp_path / 'feder8.log', 'wb')
    feder8 = subprocess.Popen(
        [sys.executable, '-m', 'feder8', 'run'], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:

        def registered():
            sites = http().get(f'{central.apiUrl}/resolver/site', timeout=10).json()
            return [s for s in sites if s['name'] == 'site-a' and s['healthy']]

        stack.waitFor(registered, 60, 'site-a registered at the central', proc=feder8)
        [registration] = registered()
        assert registration['datasetCount'] == len(datasets)
        assert registration['hasCredential'] is True
        assert registration['operator'] == 'admin'
        # The site now carries the name it was registered under.
        assert http().get(f'{site.apiUrl}/resolver/server', timeout=10).json() == {
            'siteName': 'site-a',
            'siteNameSet': True,
        }

        # 4. A person of the central launches; the notebook runs at the site.
        centralAdmin.post(
            'user',
            parameters={
                'login': 'reader',
                'password': 'reader-password',
                'email': 'reader@example.invalid',
                'firstName': 'Reader',
                'lastName': 'One',
            },
        )
        reader = girder_client.GirderClient(apiUrl=central.apiUrl)
        reader.authenticate('reader', 'reader-password')
        resp = http().post(
            f'{central.apiUrl}/resolve/launch',
            params={'id': GALAXIES},
            headers={'Girder-Token': reader.token},
            timeout=60,
        )
        assert resp.status_code == 200, resp.text
        nb = resp.json()
        assert nb['site'] == 'site-a'
        deadline = time.monotonic() + 90
        while nb['status'] == 'launching' and time.monotonic() < deadline:
            time.sleep(0.3)
            nb = reader.get(f'notebook/{nb["_id"]}')
        assert nb['status'] == 'running', nb['message']
        assert nb['url'].startswith('http://127.0.0.1:')
        reader.delete(f'notebook/{nb["_id"]}')
    finally:
        feder8.terminate()
        feder8.wait(15)
        log.close()


def testFeder8RefusesASiteNameThatDiffersFromTheSitesOwnNamingBoth(installs, tmp_path):
    central, site = installs['central'], installs['site']
    centralAdmin = sample.ensureAdmin(central.apiUrl, 'admin', 'central-admin-pw')
    centralAdmin.put(
        'system/setting',
        parameters={'key': 'resolver.allowed_site_hosts', 'value': '["127.0.0.1"]'},
    )
    siteAdmin = sample.ensureAdmin(site.apiUrl, 'admin', 'site-admin-pw')
    siteAdmin.put('system/setting', parameters={'key': 'resolver.site_name', 'value': 'chosen'})
    env = {
        **os.environ,
        'FEDER8_GIRDER_URL': site.apiUrl,
        'FEDER8_GIRDER_API_KEY': apiKey(siteAdmin, 'feder8'),
        'FEDER8_CENTRAL_URL': central.apiUrl,
        'FEDER8_CENTRAL_API_KEY': apiKey(centralAdmin, 'registrations'),
    }

    def sync(**extra):
        return subprocess.run(
            [sys.executable, '-m', 'feder8', 'sync'],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
        )

    result = sync(FEDER8_SITE_NAME='other')
    assert result.returncode == 2, result.stderr
    assert '"chosen"' in result.stderr and '"other"' in result.stderr
    assert 'resolver.site_name' in result.stderr
    # Without --site-name, the site's own name is the registered one.
    result = sync()
    assert result.returncode == 0, result.stderr
    assert 'for site "chosen"' in result.stdout
    # A central of the same name is refused too: it would take the site's users for its own.
    centralAdmin.put('system/setting', parameters={'key': 'resolver.site_name', 'value': 'twin'})
    siteAdmin.put('system/setting', parameters={'key': 'resolver.site_name', 'value': 'twin'})
    time.sleep(2.1)  # the Girders' settings caches
    result = sync()
    assert result.returncode == 2
    assert 'the central is also named "twin"' in result.stderr
