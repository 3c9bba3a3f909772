"""Prometheus metrics: what an operator scrapes, and who may scrape it."""

import json

import pytest
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

SECRET = 'a-scrape-secret-of-some-length'


def scrape(server, user=None, headers=()):
    resp = server.request(
        '/resolver/metrics', user=user, isJson=False, additionalHeaders=list(headers)
    )
    return resp


def body(resp):
    return b''.join(resp.body).decode() if isinstance(resp.body, list) else resp.body


def sample(text, name, **labels):
    """The value of one metric sample in a Prometheus text exposition, or None."""
    want = ','.join(f'{k}="{v}"' for k, v in labels.items())
    prefix = f'{name}{{{want}}}' if want else name
    for line in text.splitlines():
        if line.startswith(prefix + ' '):
            return float(line.split()[-1])
    return None


@pytest.mark.plugin('resolver')
def testMetricsAreForAdminsOrTheScrapeSecret(server, admin, user):
    assertStatus(scrape(server), 401)
    assertStatus(scrape(server, user), 403)
    assertStatusOk(scrape(server, admin))
    assertStatus(scrape(server, headers=[('Authorization', f'Bearer {SECRET}')]), 401)
    Setting().set('resolver.metrics_token', SECRET)
    assertStatusOk(scrape(server, headers=[('Authorization', f'Bearer {SECRET}')]))
    assertStatus(scrape(server, headers=[('Authorization', 'Bearer wrong-secret-wrong')]), 401)


@pytest.mark.plugin('resolver')
def testResolutionsRegistrationsAndSiteHealthAreCounted(server, admin):
    text = body(scrape(server, admin))
    before = {
        o: sample(text, 'datadns_resolutions_total', outcome=o) or 0
        for o in ('found', 'not_found', 'invalid')
    }
    registrations = sample(text, 'datadns_registrations_total', mode='full') or 0
    server.request(
        '/resolver/site',
        method='POST',
        user=admin,
        type='application/json',
        body=json.dumps(
            {
                'name': 'site-m',
                'apiUrl': 'https://m.example.org/api/v1',
                'datasets': [{'identifier': 'doi:10.5072/m', 'folderId': 'f1', 'name': 'M'}],
            }
        ),
    )
    server.request('/resolve', params={'id': 'doi:10.5072/m'})
    server.request('/resolve', params={'id': 'doi:10.5072/unknown'})
    server.request('/resolve', params={'id': 'not an identifier'})
    text = body(scrape(server, admin))
    assert sample(text, 'datadns_resolutions_total', outcome='found') == before['found'] + 1
    assert sample(text, 'datadns_resolutions_total', outcome='not_found') == (
        before['not_found'] + 1
    )
    assert sample(text, 'datadns_resolutions_total', outcome='invalid') == (before['invalid'] + 1)
    assert sample(text, 'datadns_registrations_total', mode='full') == registrations + 1
    assert sample(text, 'datadns_site_healthy', site='site-m') == 1
    assert sample(text, 'datadns_site_datasets', site='site-m') == 1
