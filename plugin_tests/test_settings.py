"""The plugin's settings, declared once: the list the admin page renders, from the server."""

import pytest
from girder.models.setting import Setting
from pytest_girder.assertions import assertStatus, assertStatusOk

from girder_resolver import settings
from girder_resolver.launcher import BACKENDS

SECRET = 'metrics-secret-0123456789abcdef'


def testEverySettingIsDeclaredOnceWithAHelpText():
    keys = [declared.key for declared in settings.SETTINGS]
    constants = {value for name, value in vars(settings.PluginSettings).items() if name.isupper()}
    assert len(keys) == len(set(keys))
    assert set(keys) == constants
    for declared in settings.SETTINGS:
        assert declared.kind in settings.KINDS, declared.key
        assert declared.label and declared.group and declared.help.endswith('.'), declared.key


@pytest.mark.plugin('resolver')
def testAdminsReadEverySettingWithItsHelpAndCurrentValue(server, admin):
    Setting().set('resolver.user_cap', 5)
    resp = server.request('/resolver/setting', user=admin)
    assertStatusOk(resp)
    listed = {entry['key']: entry for entry in resp.json}
    assert [entry['key'] for entry in resp.json] == [d.key for d in settings.SETTINGS]
    cap = listed['resolver.user_cap']
    assert cap['value'] == 5
    assert (cap['label'], cap['kind'], cap['group']) == (
        'Notebooks per person',
        'number',
        'Notebooks',
    )
    assert cap['help'] == settings.DECLARED['resolver.user_cap'].help
    assert listed['resolver.idle_timeout']['value'] == 3600  # the default
    assert listed['resolver.site_name']['value'] == Setting().get('resolver.site_name')
    assert listed['resolver.federation_service']['editable'] is False


@pytest.mark.plugin('resolver')
def testTheBackendChoicesAreTheServersLaunchers(server, admin):
    resp = server.request('/resolver/setting', user=admin)
    [backend] = [entry for entry in resp.json if entry['key'] == 'resolver.backend']
    assert backend['kind'] == 'choice'
    assert [c['value'] for c in backend['choices']] == list(BACKENDS)
    assert all(c['label'].startswith(f'{c["value"]}: ') for c in backend['choices'])


@pytest.mark.plugin('resolver')
def testASecretIsNeverReturnedOnlyWhetherItIsSet(server, admin):
    resp = server.request('/resolver/setting', user=admin)
    [token] = [entry for entry in resp.json if entry['key'] == 'resolver.metrics_token']
    assert token['set'] is False and 'value' not in token
    Setting().set('resolver.metrics_token', SECRET)
    resp = server.request('/resolver/setting', user=admin)
    assertStatusOk(resp)
    assert SECRET not in resp.body[0].decode()
    [token] = [entry for entry in resp.json if entry['key'] == 'resolver.metrics_token']
    assert token['set'] is True and 'value' not in token


@pytest.mark.plugin('resolver')
def testOnlyAdminsReadTheSettings(server, user):
    assertStatus(server.request('/resolver/setting'), 401)
    resp = server.request('/resolver/setting', user=user)
    assertStatus(resp, 403)
    assert SECRET not in resp.body[0].decode()
