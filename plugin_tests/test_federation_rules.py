"""The federation's rules as plain functions: which URLs the central talks to or hands out,
and how credentials are kept. No server needed; the end-to-end proofs are in
test_federation_trust.py."""

import ipaddress
import os
import socket
import stat

import pytest
from cryptography.fernet import Fernet

from girder_resolver import credentials
from girder_resolver.federation import (
    SiteClient,
    SiteError,
    UnsafeUrl,
    checkApiUrl,
    checkNotebookUrl,
    sanitize,
)
from girder_resolver.settings import parseAllowedHosts

NOTHING = parseAllowedHosts([])


@pytest.mark.parametrize(
    'url',
    [
        'https://127.0.0.1/api/v1',
        'https://127.8.9.10/api/v1',
        'https://localhost:8080/api/v1',
        'https://LOCALHOST./api/v1',
        'https://nb.localhost/api/v1',
        'https://[::1]/api/v1',
        'https://[::ffff:127.0.0.1]/api/v1',
        'https://[::ffff:169.254.169.254]/api/v1',
        'https://169.254.169.254/latest/meta-data/',
        'https://[fe80::1]/api/v1',
        'https://10.1.2.3/api/v1',
        'https://172.31.255.255/api/v1',
        'https://192.168.0.1/api/v1',
        'https://100.64.0.1/api/v1',
        'https://[fd12:3456::1]/api/v1',
        'https://0.0.0.0/api/v1',
        'https://224.0.0.1/api/v1',
        'http://girder.example.org/api/v1',
        'https://user:secret@girder.example.org/api/v1',
        'https://girder.example.org:99999/api/v1',
        'https://girder.example.org/api/v1?x=1',
        'ftp://girder.example.org/api/v1',
        'javascript:alert(1)',
        'https:///api/v1',
        None,
    ],
)
def testUrlsOnNonGlobalAddressesOrNotHttpsAreRefused(url):
    with pytest.raises(UnsafeUrl):
        checkApiUrl(url, NOTHING)


def testAHostNameIsLookedUpAndRefusedWhenItResolvesToAPrivateAddress():
    name = socket.gethostname()
    addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    if all(ipaddress.ip_address(a).is_global for a in addresses):
        pytest.skip(f'{name} resolves to a public address here')
    with pytest.raises(UnsafeUrl, match='resolver.allowed_site_hosts'):
        checkApiUrl(f'https://{name}/api/v1', NOTHING)
    # Listed by name, it is accepted (plain http too).
    assert checkApiUrl(f'http://{name}:8/api/v1/', parseAllowedHosts([name])) == (
        f'http://{name}:8/api/v1'
    )


def testPublicHttpsUrlsAndListedHostsAreAccepted():
    assert checkApiUrl('https://8.8.8.8/api/v1/', NOTHING) == 'https://8.8.8.8/api/v1'
    # A name that does not resolve reaches nothing; it is checked again on each request.
    assert checkApiUrl('https://site-a.example.invalid/api/v1', NOTHING)
    allowed = parseAllowedHosts(['127.0.0.0/8', 'fd00::/8', 'girder.lan'])
    assert checkApiUrl('http://127.0.0.1:8080/api/v1', allowed)
    assert checkApiUrl('http://[fd00::5]:8080/api/v1', allowed)
    assert checkApiUrl('http://GIRDER.LAN/api/v1', allowed)
    with pytest.raises(UnsafeUrl):
        checkApiUrl('http://10.0.0.1/api/v1', allowed)


@pytest.mark.parametrize('value', [['not a host!'], ['10.0.0.0/33'], [1], [''], ['a' * 300]])
def testTheAllowedHostsSettingRefusesWhatIsNeitherANameNorARange(value):
    with pytest.raises(ValueError):
        parseAllowedHosts(value)


SITE = {'name': 'site-a', 'apiUrl': 'https://girder.site-a.org/api/v1'}


@pytest.mark.parametrize(
    'url',
    [
        'https://girder.site-a.org:8443/notebook/x/?token=t',
        'http://GIRDER.site-a.org/notebook/x/',
        'https://notebooks.site-a.org/notebook/x/',
    ],
)
def testNotebookUrlsOnTheSitesHostOrFrontDoorAreKept(url):
    site = {**SITE, 'frontDoorUrl': 'https://notebooks.site-a.org'}
    assert checkNotebookUrl(url, site) == url


def testNotebookUrlsOnTheSitesRegisteredNotebookHostAreKeptOnAnyPort():
    site = {**SITE, 'notebookHost': 'nb.site-a.org'}
    assert checkNotebookUrl('http://nb.site-a.org:49152/?token=t', site)
    assert checkNotebookUrl('https://NB.site-a.org/x/', site)
    with pytest.raises(UnsafeUrl):
        checkNotebookUrl('http://nb.site-a.org.evil.org:49152/', site)
    with pytest.raises(UnsafeUrl):
        checkNotebookUrl('javascript://nb.site-a.org/%0Aalert(1)', site)


@pytest.mark.parametrize(
    'url',
    [
        'javascript:alert(1)',
        ' javascript:alert(1)',
        'java\tscript:alert(1)',
        'data:text/html,<script>alert(1)</script>',
        'vbscript:msgbox(1)',
        'https://evil.example.org/notebook/',
        'https://girder.site-a.org.evil.example.org/',
        'https://girder.site-a.org@evil.example.org/',
        'https://x:y@girder.site-a.org/',
        'http://notebooks.site-a.org/notebook/x/',  # the front door's scheme is https
        'https://notebooks.site-a.org:8443/notebook/x/',  # and its port 443
        '//evil.example.org/',
        '/notebook/x/',
        12,
    ],
)
def testAnyOtherNotebookUrlIsRefused(url):
    site = {**SITE, 'frontDoorUrl': 'https://notebooks.site-a.org'}
    with pytest.raises(UnsafeUrl):
        checkNotebookUrl(url, site)


def testASitesMessageBecomesOneShortPlainLine():
    text = sanitize('bad\x1b[31m\u202e\n\tthing ' + 'x' * 1000)
    assert '\x1b' not in text and '\u202e' not in text and '\n' not in text
    assert len(text) <= 200 and text.startswith('bad [31m thing')


@pytest.fixture
def keyFile(tmp_path, monkeypatch):
    monkeypatch.delenv(credentials.KEY_ENV, raising=False)
    path = tmp_path / 'keys' / 'credential.key'
    monkeypatch.setenv(credentials.KEY_FILE_ENV, str(path))
    return path


def testTheKeyFileIsMadeOnFirstUseReadableByItsOwnerOnly(keyFile):
    assert credentials.ensureKey() == str(keyFile)
    assert stat.S_IMODE(os.stat(keyFile).st_mode) == 0o600
    sealed = credentials.seal('the-credential')
    assert 'the-credential' not in sealed
    assert credentials.unseal(sealed) == 'the-credential'
    # The same file next time: what was sealed stays readable.
    assert Fernet(keyFile.read_bytes().strip()).decrypt(sealed.encode()) == b'the-credential'


def testAnotherKeyCannotReadACredentialAndTheCentralSaysWhatToDo(keyFile, monkeypatch):
    sealed = credentials.seal('the-credential')
    monkeypatch.setenv(credentials.KEY_ENV, Fernet.generate_key().decode())
    assert credentials.unseal(sealed) is None
    client = SiteClient({**SITE, 'credentialSealed': sealed})
    with pytest.raises(SiteError, match='feder8 rotate'):
        client.launch('f' * 24, 'central:' + 'a' * 24)
    monkeypatch.setenv(credentials.KEY_ENV, 'not a fernet key')
    with pytest.raises(credentials.CredentialKeyError, match=credentials.KEY_ENV):
        credentials.seal('x')
