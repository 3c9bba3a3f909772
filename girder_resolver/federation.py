"""Talking to another site's notebook API with that site's launch credential.

The central launches, polls and stops notebooks at a site on a user's behalf.
It holds the site's credential: a Girder API key *at that site*, of the site's
federation service account, whose only scope is ``LAUNCH_SCOPE``. The key is
exchanged for a short-lived token, sent in a request body (never in a URL,
which proxies and logs keep), and neither ever appears in an error message.

What a site sends back is data, never trusted further than it must be:

- the central talks only to ``https`` sites, or to hosts an admin listed in
  ``resolver.allowed_site_hosts``; loopback, private, link-local and other
  non-global addresses are refused unless listed there (:func:`checkApiUrl`),
  before any connection is made;
- it follows no redirect;
- it keeps only ``http(s)`` notebook URLs on the site's own host, or on the
  front door the site registered (:func:`checkNotebookUrl`);
- a site's error body reaches users only as a short, sanitized message
  (:func:`sanitize`).
"""

import ipaddress
import re
import socket
import threading
import time
import urllib.parse

import requests

from . import credentials, settings
from .settings import PluginSettings, parseAllowedHosts

#: Days a token obtained from a site's API key lives; refreshed well before it expires.
TOKEN_DAYS = 1
_TOKEN_REUSE_SECONDS = 6 * 3600
#: The most characters of a site's own message shown to a user.
MESSAGE_LIMIT = 200

_tokens = {}
_tokensLock = threading.Lock()
_CONTROL = re.compile(r'[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069]+')
_NOTEBOOK_SCHEMES = ('http', 'https')


class SiteError(Exception):
    """A site refused or failed a request; ``status`` is the site's HTTP status or None."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class UnsafeUrl(ValueError):
    """A URL the central will not talk to, or will not hand to a browser; says why."""


def sanitize(text, limit=MESSAGE_LIMIT):
    """``text`` as one short line of plain text: control and bidi characters removed."""
    text = _CONTROL.sub(' ', str(text or ''))
    text = ' '.join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + '…'


def timeouts():
    """(connect, read) seconds for each request to a site, from the plugin's settings."""
    return (
        settings.get(PluginSettings.SITE_CONNECT_TIMEOUT),
        settings.get(PluginSettings.SITE_READ_TIMEOUT),
    )


def _noAnswer(name, exc, timeout):
    """The error for a request to site ``name`` that got no answer."""
    if isinstance(exc, requests.ConnectTimeout):
        what = f'did not accept a connection in {timeout[0]:g} s'
    elif isinstance(exc, requests.Timeout):
        what = f'did not answer in {timeout[1]:g} s'
    elif isinstance(exc, requests.ConnectionError):
        what = f'could not be reached ({type(exc).__name__})'
    else:
        what = f'did not answer ({type(exc).__name__})'
    return SiteError(f'Site "{name}" {what}.')


def _message(response):
    """The site's own short message (JSON ``message`` only; any other body is not shown)."""
    try:
        body = response.json()
    except ValueError:
        return ''
    return sanitize(body.get('message')) if isinstance(body, dict) else ''


# Which hosts the central may talk to ------------------------------------------------------


def _address(host):
    """``host`` as an IP address (IPv4-mapped IPv6 unwrapped), or None for a name."""
    try:
        addr = ipaddress.ip_address(host.strip('[]'))
    except ValueError:
        return None
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _allowed(host, addr, allowed):
    names, networks = allowed
    if host in names:
        return True
    return addr is not None and any(addr in net for net in networks if net.version == addr.version)


def _public(addr):
    """False for loopback, private, link-local (cloud metadata), shared, reserved addresses."""
    return addr.is_global and not addr.is_multicast


def _resolve(host):
    """The addresses ``host`` resolves to (a DNS lookup; nothing is sent to the host)."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return []
    return [a for a in (_address(info[4][0]) for info in infos) if a is not None]


def checkApiUrl(url, allowed=None):
    """``url`` (trailing ``/`` removed) if the central may send requests there; else UnsafeUrl.

    Decided from the URL alone, never by connecting to it: ``https`` unless the
    host is listed in ``resolver.allowed_site_hosts`` (names, or CIDR ranges for
    literal addresses); a literal address, ``localhost``, or a name that resolves
    (DNS only) to a loopback, private, link-local or other non-global address is
    refused unless listed. A name that does not resolve is let through: nothing
    can be reached there, and every request checks again.
    """
    if allowed is None:
        allowed = parseAllowedHosts(settings.get(PluginSettings.ALLOWED_SITE_HOSTS))
    if not isinstance(url, str) or not re.match(r'^https?://[^\s/?#]+(/[^\s?#]*)?$', url):
        raise UnsafeUrl('A site apiUrl must be an http(s) URL without query or fragment.')
    parts = urllib.parse.urlsplit(url)
    if parts.username is not None or parts.password is not None or '@' in parts.netloc:
        raise UnsafeUrl('A site apiUrl must not carry a user name or password.')
    try:
        parts.port  # noqa: B018 - raises for a bad port
    except ValueError:
        raise UnsafeUrl('A site apiUrl has a bad port.')
    host = (parts.hostname or '').lower().rstrip('.')
    if not host:
        raise UnsafeUrl('A site apiUrl must name a host.')
    addr = _address(host)
    listed = _allowed(host, addr, allowed)
    if parts.scheme != 'https' and not listed:
        raise UnsafeUrl(
            f'A site apiUrl must be https ("{host}" is not in resolver.allowed_site_hosts, '
            'the only hosts this resolver talks to over plain http).'
        )
    if not listed:
        if host == 'localhost' or host.endswith('.localhost'):
            addresses = [ipaddress.ip_address('127.0.0.1')]
        elif addr is not None:
            addresses = [addr]
        else:
            addresses = _resolve(host)
        for candidate in addresses:
            if not _public(candidate) and not _allowed(host, candidate, allowed):
                raise UnsafeUrl(
                    f'A site apiUrl on "{host}" reaches a loopback, private or link-local '
                    f'address ({candidate}); an admin must list it in '
                    'resolver.allowed_site_hosts first.'
                )
    return url.rstrip('/')


def checkNotebookUrl(url, site):
    """``url`` if a browser may be sent there for a notebook of ``site``; else UnsafeUrl.

    Only ``http(s)`` URLs on the host of the site's registered ``apiUrl`` or on
    the ``notebookHost`` it registered (any port: notebooks are served beside
    Girder, each on a port of its own), or on the origin of the front door it
    registered (``frontDoorUrl``); no user name or password in them.
    """
    if not isinstance(url, str) or len(url) > 4096 or _CONTROL.search(url) or ' ' in url:
        raise UnsafeUrl('not a URL')
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() not in _NOTEBOOK_SCHEMES:
        raise UnsafeUrl(f'its scheme is "{sanitize(parts.scheme, 20)}", not http or https')
    if parts.username is not None or parts.password is not None or '@' in parts.netloc:
        raise UnsafeUrl('it carries a user name or password')
    try:
        port = parts.port
    except ValueError:
        raise UnsafeUrl('it has a bad port')
    host = (parts.hostname or '').lower().rstrip('.')
    siteHost = (urllib.parse.urlsplit(site['apiUrl']).hostname or '').lower().rstrip('.')
    notebookHost = str(site.get('notebookHost') or '').lower().strip('[]').rstrip('.')
    if host and host in (siteHost, notebookHost):
        return url
    frontDoor = site.get('frontDoorUrl')
    if frontDoor:
        door = urllib.parse.urlsplit(frontDoor)
        if (
            parts.scheme.lower() == door.scheme
            and host == (door.hostname or '').lower().rstrip('.')
            and (port or _defaultPort(parts.scheme)) == (door.port or _defaultPort(door.scheme))
        ):
            return url
    raise UnsafeUrl(f'its host "{sanitize(host, 80)}" is not the site\'s host "{siteHost}"')


def _defaultPort(scheme):
    return 443 if scheme.lower() == 'https' else 80


class SiteClient:
    """The notebook API of one site, used with that site's launch credential."""

    def __init__(self, site):
        self.name = site['name']
        self.apiUrl = site['apiUrl'].rstrip('/')
        sealed = site.get('credentialSealed')
        self._credential = credentials.unseal(sealed)
        self._unreadable = bool(sealed) and self._credential is None

    def _check(self):
        try:
            checkApiUrl(self.apiUrl)
        except UnsafeUrl as exc:
            raise SiteError(f'Site "{self.name}" is not reachable from this resolver: {exc}')

    def _send(self, method, url, **kwargs):
        self._check()
        timeout = timeouts()
        try:
            resp = requests.request(method, url, timeout=timeout, allow_redirects=False, **kwargs)
        except requests.RequestException as exc:
            raise _noAnswer(self.name, exc, timeout)
        if 300 <= resp.status_code < 400:
            raise SiteError(
                f'Site "{self.name}" answered with a redirect (HTTP {resp.status_code}), which '
                'this resolver does not follow; the site must register its real API URL.',
                502,
            )
        return resp

    def _token(self, fresh=False):
        if self._unreadable:
            raise SiteError(
                f'The launch credential of site "{self.name}" cannot be decrypted with this '
                "resolver's credential key (was the key replaced?); the site's feder8 must "
                'register it again (feder8 rotate).'
            )
        if not self._credential:
            raise SiteError(
                f'Site "{self.name}" has no launch credential here, so this resolver cannot '
                "launch there; the site's feder8 must register one."
            )
        key = (self.apiUrl, self._credential)
        with _tokensLock:
            cached = _tokens.get(key)
        if cached and not fresh and cached[1] > time.monotonic():
            return cached[0]
        resp = self._send(
            'POST',
            f'{self.apiUrl}/api_key/token',
            data={'key': self._credential, 'duration': TOKEN_DAYS},
        )
        if resp.status_code != 200:
            raise SiteError(
                f'Site "{self.name}" refused this resolver\'s launch credential '
                f'(HTTP {resp.status_code}); the site must register a valid one '
                '(feder8 rotate).',
                resp.status_code,
            )
        try:
            token = resp.json()['authToken']['token']
            if not isinstance(token, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise SiteError(f'Site "{self.name}" answered its token request with nonsense.')
        with _tokensLock:
            _tokens[key] = (token, time.monotonic() + _TOKEN_REUSE_SECONDS)
        return token

    def _answer(self, method, path, params, data=None, stream=False):
        """The site's answer (status < 400) to a request with its credential; else SiteError."""
        for attempt in (0, 1):
            headers = {'Girder-Token': self._token(fresh=attempt > 0)}
            resp = self._send(
                method,
                f'{self.apiUrl}/{path}',
                params=params,
                data=data,
                headers=headers,
                stream=stream,
            )
            # A cached token the site forgot (restart on a new database): get a new one once.
            if resp.status_code == 401 and attempt == 0:
                resp.close()
                continue
            if resp.status_code >= 400:
                message = _message(resp)
                resp.close()
                raise SiteError(
                    f'Site "{self.name}" answered HTTP {resp.status_code}'
                    + (f': {message}' if message else '.'),
                    resp.status_code,
                )
            return resp

    def _request(self, method, path, params, data=None):
        resp = self._answer(method, path, params, data=data)
        try:
            body = resp.json()
        except ValueError:
            raise SiteError(f'Site "{self.name}" answered something that is not JSON.')
        if not isinstance(body, dict):
            raise SiteError(f'Site "{self.name}" answered something that is not a notebook.')
        return body

    def launch(self, folderId, identity, tool=None):
        """Launch (or find) the notebook of ``identity`` for ``folderId`` at the site."""
        params = {'folderId': folderId, 'onBehalfOf': identity}
        if tool is not None:
            params['tool'] = tool
        return self._request('POST', 'notebook', params)

    def get(self, notebookId, identity):
        return self._request('GET', f'notebook/{notebookId}', {'onBehalfOf': identity})

    def stop(self, notebookId, identity):
        return self._request('DELETE', f'notebook/{notebookId}', {'onBehalfOf': identity})

    # Batch runs ---------------------------------------------------------------------------

    def startRun(self, folderId, identity, run):
        """Submit a run of ``identity`` for ``folderId`` at the site.

        ``run``: ``command`` or ``script`` (the script's text), optional ``tool`` and
        ``fresh``; sent in the request body (a script may be long, and bodies are not logged).
        """
        body = {key: value for key, value in run.items() if value is not None}
        if 'fresh' in body:
            body['fresh'] = 'true' if body['fresh'] else 'false'
        return self._request(
            'POST', 'run', {'folderId': folderId, 'onBehalfOf': identity}, data=body
        )

    def getRun(self, runId, identity):
        return self._request('GET', f'run/{runId}', {'onBehalfOf': identity})

    def cancelRun(self, runId, identity):
        return self._request('DELETE', f'run/{runId}', {'onBehalfOf': identity})

    def runLog(self, runId, identity, offset=0, follow=True, chunkSize=8192):
        """The run's log from byte ``offset``, as the site sends it (an iterator of bytes).

        The site streams the log while the run runs; a pause longer than
        ``resolver.site_read_timeout`` ends the iteration (the caller asks again from
        where it got to), as does the end of the site's answer.
        """
        params = {'onBehalfOf': identity, 'offset': offset, 'follow': 'true' if follow else 'false'}
        resp = self._answer('GET', f'run/{runId}/log', params, stream=True)

        def chunks():
            try:
                yield from resp.iter_content(chunkSize)
            except requests.RequestException:
                return
            finally:
                resp.close()

        return chunks()
