"""A jupyter_server identity provider that also accepts the front door's notebook cookie.

The notebook URL a person gets never carries the Jupyter token: Girder trades a
single-use link for an HttpOnly, SameSite=Lax cookie scoped to the notebook's
path (``/notebook/<id>/``), holding the token. jupyter_server accepts a token
from the URL or an ``Authorization`` header only; this provider also accepts
that cookie.

A request authenticated by the cookie counts as *cookie*-authenticated, not
token-authenticated, so jupyter_server's XSRF check and websocket origin check
still apply to it (a token-authenticated request skips them).

Standalone, like ``readonly.py``: the launchers copy it next to the server's
config file, which loads it by file path. jupyter_server >= 2 gets
:class:`FrontDoorCookieIdentityProvider`; jupyter_server 1.x (Debian bookworm's,
in the docker backend's image), which has no identity providers, gets
:class:`FrontDoorCookieLoginHandler` instead (``configure(c)`` picks the one).
"""

import hmac

from traitlets import Unicode

try:
    from jupyter_server.auth.identity import PasswordIdentityProvider, User
except ImportError:  # jupyter_server 1.x
    PasswordIdentityProvider = None
    from jupyter_server.auth.login import LoginHandler

COOKIE_NAME = 'datadns-notebook-token'


def _matches(value, token):
    return bool(value and token and hmac.compare_digest(value.encode(), token.encode()))


def configure(c, token):
    """Install the cookie-accepting identity in config ``c``, with the notebook's ``token``."""
    if PasswordIdentityProvider is not None:
        c.ServerApp.identity_provider_class = FrontDoorCookieIdentityProvider
        c.IdentityProvider.token = token
    else:
        c.ServerApp.login_handler_class = FrontDoorCookieLoginHandler
        c.ServerApp.token = token


if PasswordIdentityProvider is None:

    class FrontDoorCookieLoginHandler(LoginHandler):
        """jupyter_server 1.x: token or login cookie as usual, or the front door's cookie.

        Not token-authenticated either (``_token_authenticated`` stays unset), so the
        XSRF and websocket origin checks apply.
        """

        @classmethod
        def get_user(cls, handler):
            user = super().get_user(handler)
            if user is None and _matches(handler.get_cookie(COOKIE_NAME), handler.token):
                user = handler._user_id = 'datadns'
            return user

else:

    class FrontDoorCookieIdentityProvider(PasswordIdentityProvider):
        """Token or login cookie as usual, or the front door's notebook cookie."""

        front_door_cookie = Unicode(
            COOKIE_NAME, config=True, help='Name of the cookie that holds the notebook token.'
        )

        def get_user_cookie(self, handler):
            user = super().get_user_cookie(handler)
            if user is not None:
                return user
            if _matches(handler.get_cookie(self.front_door_cookie), self.token):
                return User(username='datadns', name='Data DNS', display_name='Data DNS')
            return None
