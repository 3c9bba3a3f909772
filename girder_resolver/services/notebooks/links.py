"""Single-use links that open a running notebook of this site (its *tickets*).

A notebook's ``url`` is ``<front door>/api/v1/notebook/<id>/open?ticket=…``: the
ticket names this notebook (no other launch shares its id and creation time),
expires after :data:`TICKET_SECONDS` and is signed with this installation's key;
``GET /notebook/{id}/open`` trades it, once, for the notebook's cookie. The
Jupyter token never appears in a URL.
"""

import base64
import hashlib
import hmac
import secrets
import time
import urllib.parse

from girder.models.setting import Setting

from ... import frontdoor
from ...models.notebook import Notebook
from ...primitives import aware

#: Seconds a notebook's open link (its ticket) stays valid; each works once.
TICKET_SECONDS = 600
# The key that signs the links (a random value kept in the settings collection).
_TICKET_KEY = 'resolver.ticket_key'


def _key():
    """The signing key, made once per database (atomically)."""
    coll = Setting().collection
    doc = coll.find_one({'key': _TICKET_KEY})
    if doc is None:
        coll.update_one(
            {'key': _TICKET_KEY}, {'$setOnInsert': {'value': secrets.token_hex(32)}}, upsert=True
        )
        doc = coll.find_one({'key': _TICKET_KEY})
    return doc['value'].encode()


def _signature(doc, expires, nonce):
    # In milliseconds: the database keeps no finer time, and a ticket made from the
    # record in memory (a pooled launch's answer) must match the one read back.
    created = int(aware(doc['created']).timestamp() * 1000)
    message = f'{doc["_id"]}.{created}.{expires}.{nonce}'.encode()
    digest = hmac.new(_key(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip('=')


def openUrl(doc):
    """A link that opens a running local notebook once, within ``TICKET_SECONDS``."""
    expires = int(time.time()) + TICKET_SECONDS
    nonce = secrets.token_urlsafe(12)
    ticket = f'{expires}.{nonce}.{_signature(doc, expires, nonce)}'
    query = urllib.parse.urlencode({'ticket': ticket})
    return f'{frontdoor.publicUrl()}/api/v1/notebook/{doc["_id"]}/open?{query}'


def ticketIsGenuine(doc, ticket):
    """Whether ``ticket`` was made for this notebook and has not expired (used or not)."""
    parts = ticket.split('.') if isinstance(ticket, str) else ()
    if len(parts) != 3 or not parts[0].isdigit():
        return False
    expires, nonce, signature = int(parts[0]), parts[1], parts[2]
    if expires < time.time() or expires > time.time() + TICKET_SECONDS + 60:
        return False
    return hmac.compare_digest(signature, _signature(doc, expires, nonce))


def redeemTicket(doc, ticket):
    """True once for a genuine ticket of this running notebook; else False."""
    if doc.get('status') != 'running' or not ticketIsGenuine(doc, ticket):
        return False
    # Single use: the first redemption records the nonce, atomically.
    return Notebook().recordTicketUse(doc, ticket.split('.')[1])
