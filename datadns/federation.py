"""A whole federation on one machine: a central, N sites, a feder8 per site.

Shared by ``datadns up``, the integration tests and the benchmarks.
"""

import json
from pathlib import Path

from feder8.sidecar import Config, Sidecar

from . import sample, stack

ADMIN_LOGIN = 'admin'
#: Everything here runs on loopback over plain http: the embedded stack's servers
#: accept each other as sites (a real central refuses such apiUrls unless listed).
LOOPBACK_SITE_HOSTS = ['127.0.0.0/8', '::1/128', 'localhost']


def apiKey(gc, name, scope=None):
    """The client user's API key called ``name``, made if missing (full access by default)."""
    me = gc.get('user/me')
    for key in gc.get('api_key', parameters={'userId': me['_id'], 'limit': 0}):
        if key['name'] == name and key.get('active', True):
            return key['key']
    params = {'name': name, 'tokenDuration': 30, 'active': 'true'}
    if scope is not None:
        params['scope'] = json.dumps(scope)
    return gc.post('api_key', parameters=params)['key']


def setSettings(gc, values):
    gc.put(
        'system/setting',
        parameters={'list': json.dumps([{'key': k, 'value': v} for k, v in values.items()])},
    )


def launchCredential(siteName, siteUrl, siteKey, centralUrl, centralKey):
    """The launch credential feder8 would register for a site, made exactly as it makes it.

    The site's federation service account (non-admin), the site's record of the
    central it serves, and that account's launch-scoped API key; nothing is
    registered at the central.
    """
    sidecar = Sidecar(
        Config(
            siteName=siteName,
            girderUrl=siteUrl,
            girderApiKey=siteKey,
            publicUrl=siteUrl,
            centralUrl=centralUrl,
            centralApiKey=centralKey,
        )
    )
    sidecar.settleSiteName()
    return sidecar.ensureCredential()


class Federation:
    """Start with ``start()``; every process is stopped by ``stop()``."""

    def __init__(
        self,
        mongoUri,
        home,
        sites=('site-a', 'site-b'),
        password='admin-password',
        dbPrefix='datadns',
        basePort=None,
        interval=30,
        centralSettings=None,
        siteSettings=None,
        env=None,
        withSampleData=True,
    ):
        self.mongoUri = mongoUri
        self.home = Path(home)
        self.siteNames = tuple(sites)
        self.password = password
        self.dbPrefix = dbPrefix
        self.basePort = basePort
        self.interval = interval
        self.centralSettings = centralSettings or {}
        self.siteSettings = siteSettings or {}
        self.env = env or {}
        self.withSampleData = withSampleData
        self.girders = {}
        self.clients = {}
        self.feder8s = {}
        self.datasets = {}
        self.keys = {}

    def names(self):
        return ('central',) + self.siteNames

    def _port(self, index):
        return self.basePort + index if self.basePort else None

    def startGirder(self, name, onStart=None):
        index = self.names().index(name)
        girder = stack.Girder(
            self.mongoUri,
            dbName=f'{self.dbPrefix}_{name.replace("-", "_")}',
            port=self._port(index) or (self.girders[name].port if name in self.girders else None),
            logDir=self.home / 'logs' / name,
            extraEnv=self.env,
        )
        if onStart:
            onStart(name, girder)
        girder.start()
        self.girders[name] = girder
        gc = sample.ensureAdmin(girder.apiUrl, ADMIN_LOGIN, self.password)
        self.clients[name] = gc
        settings = {
            'resolver.site_name': name,
            'resolver.site_api_url': girder.apiUrl,
            'resolver.allowed_site_hosts': LOOPBACK_SITE_HOSTS,
        }
        settings.update(self.centralSettings if name == 'central' else self.siteSettings)
        setSettings(gc, settings)
        return girder

    def start(self, onStart=None, girders=True):
        """Start the Girders, give the sites sample data, and make the API keys feder8 uses."""
        if girders:
            for name in self.names():
                self.startGirder(name, onStart)
        if self.withSampleData:
            for name in self.siteNames:
                self.datasets[name] = sample.provisionSite(
                    self.clients[name],
                    name,
                    self.home / 'data' / name,
                    self.home / 'assetstore' / name,
                )
        self.keys['central'] = apiKey(self.clients['central'], 'feder8 registrations')
        for name in self.siteNames:
            self.keys[name] = apiKey(self.clients[name], 'feder8 site reader')
        return self

    def feder8(self, site, interval=None, extraArgs=()):
        return stack.Feder8(
            site,
            self.girders[site].apiUrl,
            self.keys[site],
            self.girders['central'].apiUrl,
            self.keys['central'],
            interval=interval or self.interval,
            logDir=self.home / 'logs',
            extraArgs=extraArgs,
        )

    def launchCredential(self, site):
        """What feder8 registers for ``site``: its federation service account's launch key."""
        return launchCredential(
            site,
            self.girders[site].apiUrl,
            self.keys[site],
            self.girders['central'].apiUrl,
            self.keys['central'],
        )

    def startFeder8(self, site, **kwargs):
        self.stopFeder8(site)
        self.feder8s[site] = self.feder8(site, **kwargs).start()
        return self.feder8s[site]

    def stopFeder8(self, site):
        if site in self.feder8s:
            self.feder8s.pop(site).stop()

    def stop(self):
        for site in list(self.feder8s):
            self.stopFeder8(site)
        for girder in reversed(list(self.girders.values())):
            girder.stop()
