"""Who may call what, what hostile input does, and where secrets never go.

- An authorization matrix over every route of the plugin, enumerated from
  Girder's own OpenAPI document (``GET /describe``), so a new route fails here
  until it has a row of expectations.
- Injection attempts in every parameter: 4xx, never a 5xx, never a wider answer.
- Oversized and malformed registrations.
- Secrets (site credentials, API keys, notebook tokens) never in responses or logs.
- The anonymous rate limit (``girder_resolver.ratelimit``).
"""

import datetime
import json
import os
import re
import secrets
import subprocess
import sys
import time

import girder_client
import pytest
import requests
from girder.constants import AccessType
from girder.models.collection import Collection
from girder.models.folder import Folder
from girder.models.group import Group
from girder.models.setting import Setting
from girder.models.token import Token
from girder.models.user import User

from datadns import stack
from datadns.federation import apiKey
from datadns.sample import ensureAdmin
from girder_resolver.constants import LAUNCH_SCOPE
from girder_resolver.models.site import Site
from girder_resolver.services.registration import register as registerSite

PREFIXES = ('/resolve', '/resolver', '/notebook', '/run')
CALLERS = ('anonymous', 'user', 'other', 'siteOwner', 'otherSiteOwner', 'admin', 'credential')
SECRET = 'site-credential-that-must-never-leak-0123456789'
PUBLIC_ID = 'doi:10.5072/security.public'
PRIVATE_ID = 'doi:10.5072/security.private'
REGISTRARS = 'Registrars'


# The world every cell runs in -----------------------------------------------------------


class World:
    """Users, sites, folders and notebooks for the matrix; made once per test."""

    def __init__(self, admin, user, tmp_path):
        self.admin = admin
        self.user = user
        self.other = User().createUser('other', 'password', 'Other', 'User', 'other@example.org')
        self.siteOwner = User().createUser('owner', 'password', 'Site', 'Owner', 'o@example.org')
        self.otherSiteOwner = User().createUser(
            'owner2', 'password', 'Other', 'Owner', 'o2@example.org'
        )
        group = Group().createGroup(REGISTRARS, admin)
        for member in (self.siteOwner, self.otherSiteOwner):
            Group().addUser(group, member)
            member['groups'] = [group['_id']]
        Setting().set('resolver.registrar_group', REGISTRARS)
        # The federation credential a site hands the central: a launch-scoped key of the
        # site's non-admin federation service account, recorded as such (as feder8 does).
        self.service = User().createUser(
            'federation-service', 'password', 'Federation', 'Service', 'fs@example.org'
        )
        Setting().set(
            'resolver.federation_service', {'userId': str(self.service['_id']), 'central': 'hub'}
        )
        self.credentialToken = Token().createToken(
            user=self.service, days=1, scope=[LAUNCH_SCOPE], apiKey=None
        )
        self.sites = {}
        self.sites['site-x'] = self.register(self.siteOwner, 'site-x')
        self.sites['site-y'] = self.register(self.otherSiteOwner, 'site-y')

        collection = Collection().createCollection('Data', admin, public=True)
        self.public = self.folder(collection, 'Public data', PUBLIC_ID, tmp_path, public=True)
        self.private = self.folder(collection, 'Private data', PRIVATE_ID, tmp_path, public=False)
        Folder().setUserAccess(self.private, user, AccessType.READ, save=True)
        Setting().set(
            'resolver.data_paths',
            {str(f['_id']): str(tmp_path / f['name']) for f in (self.public, self.private)},
        )
        self.notebook = self.stoppedNotebook(user)
        self.run = self.finishedRun(user)

    def register(self, owner, name):
        registerSite(
            owner,
            name,
            f'https://{name}.example.org/api/v1',
            [{'identifier': f'doi:10.5072/{name}', 'folderId': 'f1', 'name': name}],
            credential=SECRET,
        )
        return name

    def folder(self, collection, name, identifier, tmp_path, public):
        (tmp_path / name).mkdir()
        (tmp_path / name / 'readme.txt').write_text('data\n')
        folder = Folder().createFolder(
            collection, name, parentType='collection', creator=self.admin, public=public
        )
        return Folder().setMetadata(folder, {'identifier': identifier})

    def stoppedNotebook(self, owner):
        from girder_resolver.models.notebook import Notebook, identityOf

        now = datetime.datetime.now(datetime.timezone.utc)
        doc = Notebook().save(
            {
                'site': Setting().get('resolver.site_name'),
                'identity': identityOf(owner),
                'folderId': str(self.private['_id']),
                'userId': owner['_id'],
                'status': 'stopped',
                'message': 'Stopped',
                'url': None,
                'created': now,
                'updated': now,
                'lastActivity': now,
            }
        )
        return str(doc['_id'])

    def finishedRun(self, owner):
        from girder_resolver.models.notebook import identityOf
        from girder_resolver.models.run import Run

        now = datetime.datetime.now(datetime.timezone.utc)
        doc = Run().save(
            {
                'name': 'a finished run',
                'site': Setting().get('resolver.site_name'),
                'identity': identityOf(owner),
                'folderId': self.private['_id'],
                'userId': owner['_id'],
                'status': 'succeeded',
                'exitCode': 0,
                'command': 'true',
                'created': now,
                'updated': now,
            }
        )
        return str(doc['_id'])

    def caller(self, name):
        """request() keyword arguments that make the call as ``name``."""
        if name == 'anonymous':
            return {}
        if name == 'credential':
            return {'token': self.credentialToken}
        return {'user': getattr(self, name)}


@pytest.fixture
def world(server, admin, user, tmp_path):
    from girder_resolver.models.notebook import Notebook
    from girder_resolver.models.run import Run
    from girder_resolver.services import notebooks, runs

    world = World(admin, user, tmp_path)
    yield world
    # Launches run in background threads: let them finish before the database goes away.
    deadline = time.monotonic() + 60
    while Notebook().findOne({'status': 'launching'}) and time.monotonic() < deadline:
        time.sleep(0.2)
    for doc in Notebook().find({'live': True}):
        notebooks.stop(doc)
    for doc in Run().find({'active': True}):
        runs.cancel(doc)


# The expectations ---------------------------------------------------------------------

OK = '2xx'
ANY4 = '4xx'


def expect(anonymous, user, other, siteOwner, otherSiteOwner, admin, credential):
    values = (anonymous, user, other, siteOwner, otherSiteOwner, admin, credential)
    return dict(zip(CALLERS, values, strict=True))


def freshSite(world, caller):
    name = f'doomed-{caller.lower()}'
    world.register(world.siteOwner, name)
    return name


def freshNotebook(world, caller):
    return world.stoppedNotebook(world.user)


def registration(name):
    return {
        'name': name,
        'apiUrl': f'https://{name}.example.org/api/v1',
        'mode': 'full',
        'datasets': [{'identifier': 'doi:10.5072/registered', 'folderId': 'f9', 'name': 'R'}],
    }


#: (method, path as in /describe) -> cases; a case is
#: (what, build(world, caller) -> request kwargs, expectations per caller).
MATRIX = {
    ('GET', '/resolve'): [
        (
            'a public dataset',
            lambda w, c: {'params': {'id': PUBLIC_ID}},
            expect(OK, OK, OK, OK, OK, OK, OK),
        ),
        (
            'a private dataset is invisible to those who may not read it',
            lambda w, c: {'params': {'id': PRIVATE_ID}},
            expect(404, OK, 404, 404, 404, OK, 404),
        ),
    ],
    ('POST', '/resolve/launch'): [
        (
            'a public dataset',
            lambda w, c: {'params': {'id': PUBLIC_ID}},
            expect(401, OK, OK, OK, OK, OK, 401),
        ),
        (
            'a private dataset',
            lambda w, c: {'params': {'id': PRIVATE_ID}},
            expect(401, OK, 404, 404, 404, OK, 401),
        ),
    ],
    ('POST', '/resolve/run'): [
        (
            'a public dataset',
            lambda w, c: {'params': {'id': PUBLIC_ID, 'command': 'true'}},
            expect(401, OK, OK, OK, OK, OK, 401),
        ),
        (
            'a private dataset',
            lambda w, c: {'params': {'id': PRIVATE_ID, 'command': 'true'}},
            expect(401, OK, 404, 404, 404, OK, 401),
        ),
    ],
    ('GET', '/resolver/dataset'): [
        ('the index', lambda w, c: {}, expect(OK, OK, OK, OK, OK, OK, OK)),
    ],
    ('GET', '/resolver/metrics'): [
        (
            'Prometheus metrics: admins only (or a scraper with the bearer secret)',
            lambda w, c: {'isJson': False},
            expect(401, 403, 403, 403, 403, OK, 401),
        ),
    ],
    ('GET', '/resolver/setting'): [
        (
            "the plugin's settings with their values: admins only",
            lambda w, c: {},
            expect(401, 403, 403, 403, 403, OK, 401),
        ),
    ],
    ('GET', '/resolver/site'): [
        ('the sites', lambda w, c: {}, expect(OK, OK, OK, OK, OK, OK, OK)),
    ],
    ('GET', '/resolver/tool'): [
        ("the site's tools", lambda w, c: {}, expect(OK, OK, OK, OK, OK, OK, OK)),
        (
            'the tool a private dataset recommends: only to those who may read it',
            lambda w, c: {'params': {'folderId': str(w.private['_id'])}},
            expect(401, OK, 403, 403, 403, OK, 401),
        ),
    ],
    ('GET', '/resolver/server'): [
        ("this server's own name", lambda w, c: {}, expect(OK, OK, OK, OK, OK, OK, OK)),
    ],
    ('PUT', '/resolver/site/{name}/limits'): [
        (
            "bounds on site-x's weight and capacity: the central's admin only",
            lambda w, c: {'path': '/resolver/site/site-x/limits', 'params': {'weight': 2}},
            expect(401, 403, 403, 403, 403, OK, 401),
        ),
    ],
    ('POST', '/resolver/site'): [
        (
            'a new name',
            lambda w, c: {'body': registration(f'new-{c.lower()}')},
            expect(401, 403, 403, OK, OK, OK, 401),
        ),
        (
            'a name someone else owns',
            lambda w, c: {'body': registration('site-x')},
            expect(401, 403, 403, OK, 403, OK, 401),
        ),
    ],
    ('PUT', '/resolver/site/{name}/heartbeat'): [
        (
            'site-x, owned by siteOwner',
            lambda w, c: {'path': '/resolver/site/site-x/heartbeat'},
            expect(401, 403, 403, OK, 403, OK, 401),
        ),
    ],
    ('DELETE', '/resolver/site/{name}'): [
        (
            'a site owned by siteOwner',
            lambda w, c: {'path': f'/resolver/site/{freshSite(w, c)}'},
            expect(401, 403, 403, OK, 403, OK, 401),
        ),
    ],
    ('POST', '/notebook'): [
        (
            'a private folder only user may read (the service account may not)',
            lambda w, c: {'params': {'folderId': str(w.private['_id'])}},
            expect(401, OK, 403, 403, 403, OK, 403),
        ),
        (
            'a public dataset (the credential must name a person)',
            lambda w, c: {'params': {'folderId': str(w.public['_id'])}},
            expect(401, OK, OK, OK, OK, OK, 400),
        ),
    ],
    ('GET', '/notebook'): [
        ("one's own notebooks", lambda w, c: {}, expect(401, OK, OK, OK, OK, OK, 400)),
    ],
    ('GET', '/notebook/{id}'): [
        (
            "user's notebook",
            lambda w, c: {'path': f'/notebook/{w.notebook}'},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
    ('GET', '/notebook/{id}/events'): [
        (
            "user's notebook",
            lambda w, c: {'path': f'/notebook/{w.notebook}/events', 'isJson': False},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
    ('GET', '/notebook/{id}/open'): [
        (
            "user's stopped notebook, no ticket: only its owner learns it is not running",
            lambda w, c: {'path': f'/notebook/{w.notebook}/open'},
            expect(403, 409, 403, 403, 403, 403, 403),
        ),
        (
            'a forged ticket',
            lambda w, c: {
                'path': f'/notebook/{w.notebook}/open',
                'params': {'ticket': '9999999999.x.forged'},
            },
            expect(403, 409, 403, 403, 403, 403, 403),
        ),
    ],
    ('DELETE', '/notebook/{id}'): [
        (
            "user's notebook",
            lambda w, c: {'path': f'/notebook/{freshNotebook(w, c)}'},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
    ('POST', '/run'): [
        (
            'a private folder only user may read (the service account may not)',
            lambda w, c: {'params': {'folderId': str(w.private['_id']), 'command': 'true'}},
            expect(401, OK, 403, 403, 403, OK, 403),
        ),
        (
            'a public dataset (the credential must name a person)',
            lambda w, c: {'params': {'folderId': str(w.public['_id']), 'command': 'true'}},
            expect(401, OK, OK, OK, OK, OK, 400),
        ),
    ],
    ('GET', '/run'): [
        ("one's own runs", lambda w, c: {}, expect(401, OK, OK, OK, OK, OK, 400)),
    ],
    ('GET', '/run/{id}'): [
        (
            "user's run",
            lambda w, c: {'path': f'/run/{w.run}'},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
    ('GET', '/run/{id}/log'): [
        (
            "user's run",
            lambda w, c: {'path': f'/run/{w.run}/log', 'isJson': False},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
    ('DELETE', '/run/{id}'): [
        (
            "user's run (ended: answered as it is)",
            lambda w, c: {'path': f'/run/{w.run}'},
            expect(401, OK, 403, 403, 403, OK, 400),
        ),
    ],
}


def pluginRoutes(server, admin):
    resp = server.request('/describe', user=admin)
    assert resp.status == '200 OK'
    routes = set()
    for path, methods in resp.json['paths'].items():
        if path.split('/')[1] in {p.strip('/') for p in PREFIXES}:
            routes.update((method.upper(), path) for method in methods if method != 'parameters')
    return routes, resp.json


def statusClass(code):
    return f'{code // 100}xx'


def matches(expected, code):
    if expected == ANY4:
        return 400 <= code < 500
    if isinstance(expected, str):
        return statusClass(code) == expected
    return code == expected


def call(server, method, path, kwargs):
    kwargs = dict(kwargs)
    path = kwargs.pop('path', path)
    body = kwargs.pop('body', None)
    if body is not None:
        kwargs.update(body=json.dumps(body), type='application/json')
    return server.request(path, method=method, **kwargs)


def statusOf(resp):
    return int(resp.status.split()[0])


@pytest.mark.plugin('resolver')
def testEveryPluginRouteHasARowOfExpectations(server, admin):
    routes, _ = pluginRoutes(server, admin)
    assert len(routes) >= 8, routes
    missing = sorted(routes - set(MATRIX))
    assert not missing, f'add an expectation to MATRIX in {__file__} for: ' + ', '.join(
        f'{m} {p}' for m, p in missing
    )
    gone = sorted(set(MATRIX) - routes)
    assert not gone, f'MATRIX names routes that /describe does not list: {gone}'


@pytest.mark.plugin('resolver')
def testTheAuthorizationMatrix(server, admin, world):
    routes, _ = pluginRoutes(server, admin)
    failures, cells = [], 0
    for method, path in sorted(routes & set(MATRIX)):
        for what, build, expectations in MATRIX[(method, path)]:
            assert set(expectations) == set(CALLERS), (method, path, what)
            for caller in CALLERS:
                resp = call(server, method, path, {**build(world, caller), **world.caller(caller)})
                got = statusOf(resp)
                cells += 1
                if not matches(expectations[caller], got):
                    failures.append(
                        f'{method} {path} ({what}) as {caller}: expected '
                        f'{expectations[caller]}, got {got} {_message(resp)}'
                    )
    assert not failures, f'{len(failures)} of {cells} cells differ:\n' + '\n'.join(failures)
    assert cells == sum(len(cases) for cases in MATRIX.values()) * len(CALLERS)


def _message(resp):
    try:
        return (resp.json or {}).get('message', '')[:160]
    except Exception:  # noqa: BLE001 - a streamed or non-JSON body
        return ''


# Injection ---------------------------------------------------------------------------

#: Values that reach Mongo queries if a parameter is not validated.
INJECTIONS = [
    '{"$ne": null}',
    '{"$gt": ""}',
    '["doi:10.5072/a", "doi:10.5072/b"]',
    '{"$where": "sleep(1000) || true"}',
    '$where',
    '$ne',
    "'; return true; var x='",
    'this.site != null',
    '.*',
    'x' * 100_000,
    'doi:10.5072/ünïcødé-\u202e-\U0001d521',
    'doi:10.5072/a\x00b',
    '\x00',
    '',
    ' ',
    '../../../../etc/passwd',
    '000000000000000000000000',
    'ffffffffffffffffffffffff',
    '-1',
    '-879843981',
    '1e999',
]
#: Parameters whose value is a filter or a key: hostile values must be refused (4xx).
FILTERS = {'id', 'identifier', 'site', 'collectionId', 'folderId', 'userId', 'name', 'sort'}
FILTERS |= {'offset', 'scriptFileId', 'status'}


def hostile(value, param):
    """Not a value a filter may legitimately take.

    A well-formed id that matches nothing is legitimate, and so is a number where a
    registered folderId (letters, digits, "_", "-") is expected; a negative or huge
    number is hostile only as a paging value.
    """
    if param == 'offset':
        return value.strip() != '' and not value.isdigit() and value != '0' * 24
    return value.strip() != '' and not re.fullmatch(r'[0-9a-f]{24}|-?[0-9]+|1e999', value)


def parameterTargets(describe):
    """(method, path, parameter, in) for every parameter of every plugin route."""
    out = []
    for path, methods in describe['paths'].items():
        if path.split('/')[1] not in {p.strip('/') for p in PREFIXES}:
            continue
        for method, op in methods.items():
            for param in op.get('parameters', []):
                if param['in'] in ('query', 'path'):
                    out.append((method.upper(), path, param['name'], param['in']))
    return out


def baseline(world, path):
    """Valid values for a route's other parameters, so the hostile one is what is tested."""
    return {
        '/resolve': {'id': PUBLIC_ID},
        '/resolve/launch': {'id': PUBLIC_ID},
        '/resolve/run': {'id': PRIVATE_ID, 'command': 'true'},
        '/notebook': {'folderId': str(world.private['_id'])},
        '/run': {'folderId': str(world.private['_id']), 'command': 'true'},
    }.get(path, {})


def pathFor(path, param, value, world):
    defaults = {'name': 'site-x', 'id': world.notebook}
    filled = path
    for name in ('name', 'id'):
        token = '{' + name + '}'
        if token in filled:
            filled = filled.replace(
                token, requests.utils.quote(value if name == param else defaults[name], safe='')
            )
    return filled


@pytest.mark.plugin('resolver')
def testHostileParameterValuesAreRefusedAndNeverCauseA5xx(server, admin, world):
    _, describe = pluginRoutes(server, admin)
    targets = parameterTargets(describe)
    assert len(targets) >= 20
    problems = []
    for method, path, param, where in targets:
        for value in INJECTIONS:
            if where == 'path' and (not value.strip() or '\x00' in value):
                continue  # not a routable path at all
            params = dict(baseline(world, path))
            if where == 'query':
                params[param] = value
            for caller in ('anonymous', 'admin'):
                resp = call(
                    server,
                    method,
                    pathFor(path, param, value, world),
                    {'params': params, 'isJson': False, 'exception': True, **world.caller(caller)},
                )
                got = statusOf(resp)
                shown = f'{method} {path} {param}={value[:40]!r} as {caller}: {got}'
                if got >= 500:
                    problems.append(shown)
                elif param in FILTERS and hostile(value, param) and 200 <= got < 300:
                    if param == 'site' and path.startswith('/resolve'):
                        continue  # only a preference among the locations, never a filter
                    if param == 'name' and method == 'GET':
                        continue
                    problems.append(f'{shown} (accepted a hostile filter)')
    assert not problems, '\n'.join(problems)


@pytest.mark.plugin('resolver')
def testOperatorKeysInParameterNamesAndRepeatsAreHarmless(server, admin, world):
    attempts = [
        ('/resolve', [('id[$ne]', 'x')]),
        ('/resolve', [('id', PUBLIC_ID), ('id', PRIVATE_ID)]),
        ('/resolver/dataset', [('identifier[$ne]', 'x'), ('site[$regex]', '.*')]),
        ('/resolver/dataset', [('identifier', PUBLIC_ID), ('identifier', PRIVATE_ID)]),
        ('/resolver/dataset', [('site', 'site-x'), ('site', 'site-y')]),
    ]
    for path, params in attempts:
        for caller in ('anonymous', 'other'):
            resp = server.request(path, params=params, **world.caller(caller))
            got = statusOf(resp)
            assert got < 500, (path, params, got)
            assert PRIVATE_ID not in json.dumps(resp.json), (path, params, caller)
    # A repeated filter is refused rather than silently picking one.
    resp = server.request('/resolve', params=[('id', PUBLIC_ID), ('id', PRIVATE_ID)])
    assert statusOf(resp) == 400


# Registrations ----------------------------------------------------------------------


def post(server, user, raw, contentType='application/json', exception=False):
    return server.request(
        '/resolver/site',
        method='POST',
        user=user,
        body=raw,
        type=contentType,
        isJson=False,
        exception=exception,
    )


MALFORMED = [
    ('', 'empty'),
    ('not json', 'not-json'),
    ('[]', 'a-list'),
    ('"a string"', 'a-string'),
    ('null', 'null'),
    ('{"name": "x"', 'truncated'),
    ('[' * 100_000 + ']' * 100_000, 'deeply-nested-list'),
    ('{"a":' * 50_000 + '1' + '}' * 50_000, 'deeply-nested-object'),
    ('{"name": "x", "apiUrl": "https://x.org/api/v1", "bogus": 1}', 'unknown'),
    ('{"name": {"$ne": 1}, "apiUrl": "https://x.org/api/v1"}', 'name-object'),
    ('{"name": "' + 'n' * 100 + '", "apiUrl": "https://x.org"}', 'long-name'),
    ('{"name": "x\\u0000y", "apiUrl": "https://x.org"}', 'name-nul'),
    ('{"name": "x", "apiUrl": "javascript:alert(1)"}', 'javascript-url'),
    ('{"name": "x", "apiUrl": "https://x.org/\\nInjected: 1"}', 'newline-url'),
    ('{"name": "x", "apiUrl": ["https://x.org"]}', 'url-list'),
    ('{"name": "x", "apiUrl": "https://x.org", "weight": NaN}', 'weight-nan'),
    ('{"name": "x", "apiUrl": "https://x.org", "weight": 1e999}', 'weight-inf'),
    ('{"name": "x", "apiUrl": "https://x.org", "weight": "1"}', 'weight-str'),
    ('{"name": "x", "apiUrl": "https://x.org", "mode": "all"}', 'bad-mode'),
    ('{"name": "x", "apiUrl": "https://x.org", "datasets": {}}', 'sets-obj'),
    ('{"name": "x", "apiUrl": "https://x.org", "credential": {}}', 'cred-obj'),
    ('{"name": "x", "apiUrl": "https://x.org", "credential": "' + 'c' * 4096 + '"}', 'cred-long'),
    ('{"name": "x", "apiUrl": "https://x.org", "removed": [{}]}', 'removed-in-full'),
]


@pytest.mark.plugin('resolver')
def testMalformedRegistrationsAre4xxAndChangeNothing(server, admin):
    before = Site().collection.count_documents({})
    problems = []
    for raw, what in MALFORMED:
        resp = post(server, admin, raw, exception=True)
        got = statusOf(resp)
        if not 400 <= got < 500:
            problems.append(f'{what}: {got} {resp.collapse_body()[:200]!r}')
    assert not problems, '\n'.join(problems)
    assert Site().collection.count_documents({}) == before


@pytest.mark.plugin('resolver')
def testOversizedRegistrationsAre413AndChangeNothing(server, admin):
    Setting().set('resolver.max_registration', 50)
    entries = [
        {'identifier': f'doi:10.5072/big{i}', 'folderId': f'f{i}', 'name': 'n'} for i in range(51)
    ]
    body = {'name': 'big', 'apiUrl': 'https://big.example.org/api/v1', 'datasets': entries}
    resp = post(server, admin, json.dumps(body))
    assert statusOf(resp) == 413
    # Few entries, but a body far beyond what the entry limit allows (1 KiB per entry).
    body['datasets'] = [{'identifier': 'doi:10.5072/x', 'folderId': 'f', 'name': 'n' * 200_000}]
    resp = post(server, admin, json.dumps(body))
    assert statusOf(resp) == 413
    assert Site().findOne({'name': 'big'}) is None


@pytest.mark.plugin('resolver')
def testHostileEntriesAreRejectedOneByOneAndNeverStored(server, admin):
    hostile = [
        {'identifier': {'$gt': ''}, 'folderId': 'f1'},
        {'identifier': 'doi:10.5072/ok', 'folderId': {'$ne': None}},
        {'identifier': 'doi:10.5072/ok', 'folderId': '$where'},
        {'identifier': 'doi:10.5072/ok', 'folderId': 'f1', 'name': {'$set': 1}},
        {'identifier': 'doi:10.5072/ok', 'folderId': 'f1', 'name': 'n' * 10_000},
        {'identifier': 'x' * 100_000, 'folderId': 'f1'},
        {'identifier': 'doi:10.5072/a\x00b', 'folderId': 'f1'},
        ['a list'],
        None,
        42,
    ]
    body = {'name': 'hostile', 'apiUrl': 'https://h.example.org/api/v1', 'datasets': hostile}
    resp = post(server, admin, json.dumps(body))
    assert statusOf(resp) == 200, resp.body
    result = json.loads(resp.collapse_body())
    assert result['total'] == 0 and len(result['rejected']) == len(hostile)
    assert all(len(r['identifier']) <= 200 for r in result['rejected'])


# Secrets ------------------------------------------------------------------------------


@pytest.mark.plugin('resolver')
def testNoRouteEverAnswersWithASiteCredentialOrANotebookToken(server, admin, world):
    from girder_resolver.models.notebook import Notebook

    routes, _ = pluginRoutes(server, admin)
    tokens = [doc.get('token') for doc in Notebook().find({}) if doc.get('token')]
    for method, path in sorted(routes):
        if method != 'GET':
            continue
        for what, build, _expectations in MATRIX[(method, path)]:
            for caller in CALLERS:
                resp = call(server, method, path, {**build(world, caller), **world.caller(caller)})
                body = resp.collapse_body().decode('utf8', 'replace')
                assert SECRET not in body, (path, what, caller)
                for token in tokens:
                    assert token not in body, (path, what, caller)
    sites = server.request('/resolver/site', user=admin).json
    assert all(s['hasCredential'] and 'credential' not in s for s in sites)


# Against a live server: logs, proxies and the rate limit --------------------------------


@pytest.fixture(scope='module')
def live(mongoUri, tmp_path_factory):
    """A real Girder listening on every address, so that a non-loopback peer can be used."""
    home = tmp_path_factory.mktemp('security')
    girder = stack.Girder(
        mongoUri, dbName=f'security_{os.getpid()}', host='0.0.0.0', logDir=home / 'logs'
    )
    girder.start()
    try:
        gc = ensureAdmin(girder.apiUrl, 'admin', 'admin-password')
        gc.put('system/setting', parameters={'key': 'resolver.site_name', 'value': 'security'})
        yield girder, gc, home
    finally:
        girder.stop()


def outsideAddress():
    """An address of this machine other than loopback, or None."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(('192.0.2.1', 9))  # no packet is sent: this only picks a route
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith('127.') else address


@pytest.fixture(scope='module')
def limited(live):
    """The live server with a small limit: 5 at once, then 1 per second."""
    _girder, gc, _home = live
    values = [
        {'key': 'resolver.anonymous_rate', 'value': 1},
        {'key': 'resolver.anonymous_burst', 'value': 5},
    ]
    try:
        gc.put('system/setting', parameters={'list': json.dumps(values)})
    except Exception as exc:  # noqa: BLE001 - say what is missing
        pytest.fail(f'the rate limit settings are missing ({exc}); apply the ratelimit wiring')
    return live


def burst(url, n, headers=None):
    session = requests.Session()
    session.trust_env = False
    return [
        session.get(url, params={'id': PUBLIC_ID}, headers=headers or {}, timeout=10)
        for _ in range(n)
    ]


def testAnonymousResolvingIsRateLimitedPerAddressWithRetryAfter(limited):
    girder, _gc, _home = limited
    address = outsideAddress()
    if address is None:
        pytest.skip('this machine has no address but loopback')
    url = f'http://{address}:{girder.port}/api/v1/resolve'
    answers = burst(url, 8)
    codes = [r.status_code for r in answers]
    assert codes[:5] == [404] * 5, codes  # the burst: unknown identifier, but served
    limited = [r for r in answers if r.status_code == 429]
    assert limited, codes
    assert int(limited[0].headers['Retry-After']) >= 1
    assert 'log in' in limited[0].json()['message']
    # Spoofed X-Forwarded-For from a peer that is not a trusted proxy buys nothing.
    spoofed = burst(url, 3, {'X-Forwarded-For': '203.0.113.99'})
    assert [r.status_code for r in spoofed] == [429] * 3
    # ... and a logged-in caller is never limited.
    token = _gc.token
    assert {r.status_code for r in burst(url, 10, {'Girder-Token': token})} == {404}
    time.sleep(2.2)  # refilled at 1 per second
    assert burst(url, 1)[0].status_code == 404


def testBehindATrustedProxyEachClientHasItsOwnBucket(limited):
    girder, _gc, _home = limited
    url = f'{girder.apiUrl}/resolve'  # loopback: the proxy uvicorn trusts by default
    first = [r.status_code for r in burst(url, 7, {'X-Forwarded-For': '198.51.100.1'})]
    assert first[:5] == [404] * 5 and 429 in first, first
    assert burst(url, 1, {'X-Forwarded-For': '198.51.100.2'})[0].status_code == 404
    # The proxy's own requests (health checks) are not limited.
    assert {r.status_code for r in burst(url, 10)} == {404}


def testTheDatasetListingIsRateLimitedToo(limited):
    girder, _gc, _home = limited
    session = requests.Session()
    session.trust_env = False
    codes = [
        session.get(
            f'{girder.apiUrl}/resolver/dataset',
            headers={'X-Forwarded-For': '198.51.100.77'},
            timeout=10,
        ).status_code
        for _ in range(7)
    ]
    assert codes[:5] == [200] * 5 and codes[-1] == 429, codes


def _waitForAccessLog(girder, timeout=30):
    """Until the server's log shows a request made now, so every earlier one is there too."""
    marker = secrets.token_hex(8)
    requests.get(f'{girder.apiUrl}/system/version', params={'marker': marker}, timeout=10)
    stack.waitFor(
        lambda: marker in girder.log.read_text(errors='replace'), timeout, 'the access log'
    )


def testApiKeysAndTheLaunchCredentialNeverReachTheLog(live, mongoUri):
    """feder8 authenticates with API keys at both ends; none may be written to a log."""
    girder, gc, home = live
    gc.put(
        'system/setting',
        parameters={'key': 'resolver.allowed_site_hosts', 'value': '["127.0.0.1"]'},
    )
    key = apiKey(gc, 'security feder8')
    site = stack.Girder(mongoUri, dbName=f'security_site_{os.getpid()}', logDir=home / 'site')
    site.start()
    try:
        siteAdmin = ensureAdmin(site.apiUrl, 'admin', 'admin-password')
        siteKey = apiKey(siteAdmin, 'security feder8 at the site')
        env = {
            **os.environ,
            'FEDER8_SITE_NAME': 'security-site',
            'FEDER8_GIRDER_URL': site.apiUrl,
            'FEDER8_GIRDER_API_KEY': siteKey,
            'FEDER8_CENTRAL_URL': girder.apiUrl,
            'FEDER8_CENTRAL_API_KEY': key,
        }
        result = subprocess.run(
            [sys.executable, '-m', 'feder8', 'sync'],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert result.returncode == 0, result.stderr
        service = siteAdmin.get('system/setting', parameters={'key': 'resolver.federation_service'})
        launch = [
            k['key']
            for k in siteAdmin.get('api_key', parameters={'userId': service['userId'], 'limit': 0})
            if k['name'].startswith('feder8 launch credential')
        ]
        assert launch
        _waitForAccessLog(girder)
        _waitForAccessLog(site)
        logs = (
            girder.log.read_text(errors='replace')
            + site.log.read_text(errors='replace')
            + result.stdout
            + result.stderr
        )
        for secret in [key, siteKey, *launch]:
            assert secret not in logs, 'an API key was written to the log'
    finally:
        site.stop()


def testAnApiKeyInAQueryStringIsMaskedInTheAccessLog(live):
    """girder-client's authenticate(apiKey=) puts the key in the URL; Girder must not log it."""
    girder, gc, _home = live
    key = apiKey(gc, 'security girder-client')
    client = girder_client.GirderClient(apiUrl=girder.apiUrl)
    client.authenticate(apiKey=key)
    assert client.get('user/me')['login'] == 'admin'
    requests.get(f'{girder.apiUrl}/user/me', params={'token': client.token}, timeout=10)
    _waitForAccessLog(girder)
    log = girder.log.read_text(errors='replace')
    assert 'api_key/token?key=[redacted]' in log
    assert key not in log
    assert client.token not in log
