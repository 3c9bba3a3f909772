"""What the tests of a running federation share: a central and its sites as real Girder
processes on loopback (``datadns.federation``), reached over HTTP as people and sites reach them.
"""

import contextlib

import girder_client
import requests

from datadns import stack
from datadns.federation import Federation


def http():
    """A requests session that never goes through a proxy named in the environment."""
    session = requests.Session()
    session.trust_env = False
    return session


def eventually(check, timeout=20, what='condition'):
    """``check()``'s first true value within ``timeout`` seconds (polled every 0.2 s)."""
    return stack.waitFor(check, timeout, what, interval=0.2)


def centralUrl(fed):
    return fed.girders['central'].apiUrl


def getAtCentral(fed, path, timeout=10, **params):
    """GET ``path`` of the central's API, anonymously."""
    return http().get(f'{centralUrl(fed)}/{path}', params=params, timeout=timeout)


def sites(fed):
    """The sites the central lists, by name."""
    return {s['name']: s for s in getAtCentral(fed, 'resolver/site').json()}


def allHealthy(fed):
    listed = sites(fed)
    return all(listed.get(n, {}).get('healthy') for n in fed.siteNames)


def makePerson(fed, server, login):
    """An ordinary person of ``server`` (made by an earlier test is fine); returns the password."""
    password = f'{login}-password'
    try:
        fed.clients[server].post(
            'user',
            parameters={
                'login': login,
                'password': password,
                'email': f'{login}@example.invalid',
                'firstName': login,
                'lastName': 'Tester',
            },
        )
    except girder_client.HttpError as exc:
        assert 'already' in exc.responseText, exc.responseText
    return password


def person(fed, server, login):
    """A girder_client logged in as a (new) ordinary person of ``server``."""
    password = makePerson(fed, server, login)
    gc = girder_client.GirderClient(apiUrl=fed.girders[server].apiUrl)
    gc.authenticate(login, password)
    return gc


def personSession(fed, login):
    """A requests session logged in at the central as a (new) person; ``.api`` is the API URL."""
    password = makePerson(fed, 'central', login)
    session = http()
    token = session.get(
        f'{centralUrl(fed)}/user/authentication', auth=(login, password), timeout=10
    ).json()['authToken']['token']
    session.headers['Girder-Token'] = token
    session.api = centralUrl(fed)
    return session


def waitSettled(session, notebookId, timeout=90):
    """The central's notebook once it is no longer launching (polled as its web page does)."""

    def settled():
        nb = session.get(f'{session.api}/notebook/{notebookId}', timeout=40).json()
        return nb if nb['status'] != 'launching' else None

    return eventually(settled, timeout, f'notebook {notebookId} to finish launching')


def liveAt(fed, site):
    """The live notebooks a site's own database holds (its admin sees every one)."""
    return fed.clients[site].get('notebook', parameters={'live': 'true', 'limit': 0})


def stopLiveAt(fed, site):
    for nb in liveAt(fed, site):
        fed.clients[site].delete(f'notebook/{nb["_id"]}')


def stopFederation(fed):
    """Stop the live notebooks of every site that still answers, then every process."""
    try:
        for name in fed.siteNames:
            if fed.clients.get(name) is not None:
                # A site that no longer answers: its processes are stopped all the same.
                with contextlib.suppress(Exception):
                    stopLiveAt(fed, name)
    finally:
        fed.stop()


def registerSite(fed, name, apiUrl, credential=None, datasets=None):
    """Register a site at the central as its admin, with ``fed``'s datasets of ``name`` unless
    ``datasets`` are given; returns the response."""
    body = {
        'name': name,
        'apiUrl': apiUrl,
        'mode': 'full',
        'datasets': datasets
        if datasets is not None
        else [
            {'identifier': ident, 'folderId': folder['_id'], 'name': dsName}
            for dsName, ident, folder in fed.datasets[name]
        ],
    }
    if credential is not None:
        body['credential'] = credential
    return http().post(
        f'{centralUrl(fed)}/resolver/site',
        json=body,
        headers={'Girder-Token': fed.clients['central'].token},
        timeout=30,
    )


@contextlib.contextmanager
def siteBehindCentral(mongoUri, home, dbPrefix, site, siteSettings=None):
    """A central and one site launching with the process backend (or as ``siteSettings`` say),
    the site registered with its launch credential (``fed.launchKey``) as feder8 registers it;
    everything stopped after."""
    federation = Federation(
        mongoUri,
        home,
        sites=(site,),
        dbPrefix=dbPrefix,
        # Production mode: no auto-reload when someone edits the source meanwhile.
        env={'GIRDER_SERVER_MODE': 'production'},
        centralSettings={'resolver.heartbeat_ttl': 3600},
        siteSettings={
            'resolver.backend': 'process',
            'resolver.user_cap': 2,
            **(siteSettings or {}),
        },
    )
    try:
        federation.start()
        federation.launchKey = federation.launchCredential(site)
        resp = registerSite(federation, site, federation.girders[site].apiUrl, federation.launchKey)
        assert resp.status_code == 200, resp.text
        yield federation
    finally:
        stopFederation(federation)
