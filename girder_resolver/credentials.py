"""Sites' launch credentials at rest: encrypted with a key kept outside the database.

The central stores each site's credential only as a Fernet token
(``cryptography``: AES-128-CBC with an HMAC-SHA256). The key comes from the
environment variable ``DATADNS_CREDENTIAL_KEY`` (a Fernet key), or else from the
file named by ``DATADNS_CREDENTIAL_KEY_FILE`` (default
``$XDG_CONFIG_HOME/datadns/credential.key``, i.e. ``~/.config/datadns/...``),
which is created, readable by its owner only, the first time the plugin
starts. A database dump or backup therefore holds no usable credential; whoever
replaces or loses the key makes the stored credentials unreadable, and each
site's feder8 sends its credential again at its next full registration (or at
once with ``feder8 rotate``).
"""

import os
import threading
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_ENV = 'DATADNS_CREDENTIAL_KEY'
KEY_FILE_ENV = 'DATADNS_CREDENTIAL_KEY_FILE'

_lock = threading.Lock()
_cached = {}


class CredentialKeyError(RuntimeError):
    """The encryption key is missing or malformed: say where it was looked for."""


def keyFile():
    """Where the key file is (whether or not it exists yet)."""
    if os.environ.get(KEY_FILE_ENV):
        return Path(os.environ[KEY_FILE_ENV])
    base = os.environ.get('XDG_CONFIG_HOME') or Path.home() / '.config'
    return Path(base) / 'datadns' / 'credential.key'


def _readOrCreate(path):
    try:
        return path.read_bytes().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Fernet.generate_key()
    try:
        # O_EXCL: of several Girder processes starting at once, one writes the key.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    with os.fdopen(fd, 'wb') as out:
        out.write(key + b'\n')
    return key


def _fernet():
    source = os.environ.get(KEY_ENV) or str(keyFile())
    with _lock:
        if source not in _cached:
            key = (
                os.environ[KEY_ENV].encode()
                if os.environ.get(KEY_ENV)
                else _readOrCreate(keyFile())
            )
            try:
                _cached[source] = Fernet(key)
            except ValueError:
                where = KEY_ENV if os.environ.get(KEY_ENV) else str(keyFile())
                raise CredentialKeyError(
                    f'The credential key in {where} is not a Fernet key (32 url-safe '
                    'base64-encoded bytes).'
                )
        return _cached[source]


def ensureKey():
    """Make sure the key exists (creating the key file on first start); where it is."""
    _fernet()
    return KEY_ENV if os.environ.get(KEY_ENV) else str(keyFile())


def seal(plaintext):
    """The credential as stored: a Fernet token (text)."""
    return _fernet().encrypt(plaintext.encode()).decode('ascii')


def unseal(token):
    """The credential from its stored token; None if there is none or the key cannot read it."""
    if not isinstance(token, str) or not token:
        return None
    try:
        return _fernet().decrypt(token.encode('ascii')).decode()
    except (InvalidToken, ValueError, UnicodeError):
        return None
