"""A jupyter_server identity provider that also accepts the front door's notebook cookie.

The notebook URL a person gets never carries the Jupyter token: Girder trades a
single-use link for an HttpOnly, SameSite=Lax cookie scoped to the notebook's
path (``/notebook/<id>/``), holding the token. jupyter_server accepts a token
from the URL or an ``Authorization`` header only; this provider also accepts
that cookie.

A request authenticated by the cookie counts as *cookie*-authenticated, not
token-authenticated, so jupyter_server's XSRF check and websocket origin check
still apply to it (a token-authenticated request skips them).

Standalone, like ``readonly.py``: the process launcher copies it next to the
server's config file, which loads it by file path. Needs jupyter_server >= 2.
"""

import hmac

from jupyter_server.auth.identity import PasswordIdentityProvider, User
from traitlets import Unicode

COOKIE_NAME = 'datadns-notebook-token'


class FrontDoorCookieIdentityProvider(PasswordIdentityProvider):
    """Token or login cookie as usual, or the front door's notebook cookie."""

    front_door_cookie = Unicode(
        COOKIE_NAME, config=True, help='Name of the cookie that holds the notebook token.'
    )

    def get_user_cookie(self, handler):
        user = super().get_user_cookie(handler)
        if user is not None:
            return user
        value = handler.get_cookie(self.front_door_cookie)
        token = self.token
        if value and token and hmac.compare_digest(value.encode(), token.encode()):
            return User(username='datadns', name='Data DNS', display_name='Data DNS')
        return None
