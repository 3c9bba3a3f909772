"""The plugin loads and serves its API whether or not the web client was built."""

import pytest
from pytest_girder.assertions import assertStatusOk

import girder_resolver


def testAMissingWebClientBuildIsSkippedNotFatal(tmp_path, monkeypatch):
    monkeypatch.setattr(girder_resolver, 'WEB_CLIENT_DIST', tmp_path / 'nothing-here')

    class Tree:
        def mount(self, *args, **kwargs):
            raise AssertionError('nothing should be mounted without a build')

    assert girder_resolver.registerWebClient(Tree()) is False


@pytest.mark.plugin('resolver')
def testThePluginIsLoadedAndItsRoutesAnswer(server, admin):
    resp = server.request('/system/plugins', user=admin)
    assertStatusOk(resp)
    assert 'resolver' in resp.json['loaded']
    assertStatusOk(server.request('/resolver/dataset'))
