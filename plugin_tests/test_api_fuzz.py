"""Property-based fuzzing of the plugin's routes with schemathesis: never a 5xx.

The schema is Girder's own OpenAPI document (``GET /describe``) of a live
server (a real ``girder serve`` over the session's SecantusDB), cut down to the
plugin's paths (/resolve, /resolver, /notebook), so new routes are fuzzed as
soon as they exist. Each operation is called anonymously and as an admin (the
deepest code paths) with generated parameters and bodies. Bounded and
deterministic: a fixed number of examples per operation, derandomized.
"""

import collections
import json
import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from datadns import stack
from datadns.sample import ensureAdmin

PREFIXES = {'resolve', 'resolver', 'notebook'}
#: Examples per operation and caller; the whole file stays well under two minutes.
MAX_EXAMPLES = 25


@pytest.fixture(scope='module')
def live(mongoUri, tmp_path_factory):
    home = tmp_path_factory.mktemp('fuzz')
    girder = stack.Girder(mongoUri, dbName=f'fuzz_{os.getpid()}', logDir=home / 'logs')
    girder.start()
    try:
        gc = ensureAdmin(girder.apiUrl, 'admin', 'admin-password')
        gc.put('system/setting', parameters={'key': 'resolver.site_name', 'value': 'fuzz'})
        # Something to find, so that generated requests reach past the empty cases.
        gc.sendRestRequest(
            'POST',
            'resolver/site',
            json={
                'name': 'site-f',
                'apiUrl': 'https://f.example.org/api/v1',
                'credential': 'fuzz-credential-' + 'x' * 24,
                'datasets': [
                    {'identifier': f'doi:10.5072/fuzz{i}', 'folderId': f'f{i}', 'name': f'F{i}'}
                    for i in range(20)
                ],
            },
        )
        yield girder, gc.token
    finally:
        girder.stop()


@pytest.fixture(scope='module')
def pluginSchema(live):
    girder, _token = live
    doc = requests.get(f'{girder.apiUrl}/describe', timeout=30).json()
    doc['paths'] = {p: ops for p, ops in doc['paths'].items() if p.split('/')[1] in PREFIXES}
    assert doc['paths'], 'the plugin published no routes'
    # Girder names its host and base path from the request; call the live server instead.
    doc.pop('host', None)
    doc['basePath'] = '/api/v1'
    return schemathesis.openapi.from_dict(json.loads(json.dumps(doc)))


def testNoPluginRouteAnswersA5xx(live, pluginSchema):
    girder, token = live
    failures, operations, calls = [], 0, collections.Counter()
    for result in pluginSchema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=MAX_EXAMPLES,
            derandomize=True,
            deadline=None,
            database=None,
            phases=[Phase.explicit, Phase.generate],  # no shrinking: keep the time bounded
            suppress_health_check=list(HealthCheck),
        )
        def noServerError(case):
            for headers in ({}, {'Girder-Token': token}):
                resp = case.call(
                    base_url=girder.apiUrl,
                    timeout=30,
                    headers={**headers, 'Accept': 'application/json'},
                )
                calls[(case.method, case.path, resp.status_code)] += 1
                assert resp.status_code < 500, (
                    f'{case.method} {case.formatted_path} query={case.query} '
                    f'body={case.body!r:.200} '
                    f'{"as admin" if headers else "anonymously"}: '
                    f'{resp.status_code} {resp.text[:300]}'
                )

        try:
            noServerError()
        except AssertionError as exc:
            failures.append(str(exc).splitlines()[0])
    assert operations >= 8
    print('\n'.join(f'{m} {p} {c}: {n}' for (m, p, c), n in sorted(calls.items())))
    assert sum(calls.values()) >= operations * 10, calls
    assert not failures, '\n'.join(failures)
