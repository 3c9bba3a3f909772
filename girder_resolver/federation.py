"""Talking to another site's notebook API with that site's launch credential.

The central launches, polls and stops notebooks at a site on a user's behalf.
It holds the site's credential: a Girder API key *at that site* whose only
scope is ``LAUNCH_SCOPE``. The key is exchanged for a short-lived token, sent
in a request body (never in a URL, which proxies and logs keep), and neither
ever appears in an error message.
"""

import threading
import time

import requests

#: (connect, read) seconds for each request to a site.
TIMEOUT = (5, 30)
#: Days a token obtained from a site's API key lives; refreshed well before it expires.
TOKEN_DAYS = 1
_TOKEN_REUSE_SECONDS = 6 * 3600

_tokens = {}
_tokensLock = threading.Lock()


class SiteError(Exception):
    """A site refused or failed a request; ``status`` is the site's HTTP status or None."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def _message(response):
    try:
        return str(response.json().get('message') or '')[:500]
    except ValueError:
        return response.text[:200]


class SiteClient:
    """The notebook API of one site, used with that site's launch credential."""

    def __init__(self, site):
        self.name = site['name']
        self.apiUrl = site['apiUrl'].rstrip('/')
        self._credential = site.get('credential')

    def _token(self, fresh=False):
        if not self._credential:
            raise SiteError(
                f'Site "{self.name}" registered no launch credential, so this resolver cannot '
                "launch there; the site's feder8 must register one."
            )
        key = (self.apiUrl, self._credential)
        with _tokensLock:
            cached = _tokens.get(key)
        if cached and not fresh and cached[1] > time.monotonic():
            return cached[0]
        try:
            resp = requests.post(
                f'{self.apiUrl}/api_key/token',
                data={'key': self._credential, 'duration': TOKEN_DAYS},
                timeout=TIMEOUT,
            )
        except requests.RequestException as exc:
            raise SiteError(f'Site "{self.name}" did not answer: {type(exc).__name__}.')
        if resp.status_code != 200:
            raise SiteError(
                f'Site "{self.name}" refused this resolver\'s launch credential '
                f'(HTTP {resp.status_code}); the site must register a valid one.',
                resp.status_code,
            )
        token = resp.json()['authToken']['token']
        with _tokensLock:
            _tokens[key] = (token, time.monotonic() + _TOKEN_REUSE_SECONDS)
        return token

    def _request(self, method, path, params):
        for attempt in (0, 1):
            headers = {'Girder-Token': self._token(fresh=attempt > 0)}
            try:
                resp = requests.request(
                    method,
                    f'{self.apiUrl}/{path}',
                    params=params,
                    headers=headers,
                    timeout=TIMEOUT,
                )
            except requests.RequestException as exc:
                raise SiteError(f'Site "{self.name}" did not answer: {type(exc).__name__}.')
            # A cached token the site forgot (restart on a new database): get a new one once.
            if resp.status_code == 401 and attempt == 0:
                continue
            if resp.status_code >= 400:
                raise SiteError(
                    f'Site "{self.name}" answered HTTP {resp.status_code}: {_message(resp)}',
                    resp.status_code,
                )
            try:
                return resp.json()
            except ValueError:
                raise SiteError(f'Site "{self.name}" answered something that is not JSON.')

    def launch(self, folderId, identity):
        """Launch (or find) the notebook of ``identity`` for ``folderId`` at the site."""
        return self._request('POST', 'notebook', {'folderId': folderId, 'onBehalfOf': identity})

    def get(self, notebookId, identity):
        return self._request('GET', f'notebook/{notebookId}', {'onBehalfOf': identity})

    def stop(self, notebookId, identity):
        return self._request('DELETE', f'notebook/{notebookId}', {'onBehalfOf': identity})
