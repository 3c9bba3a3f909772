"""Lets the front door, not the notebook server, close each connection on the Unix socket.

The front door (configurable-http-proxy, Node.js) opens a fresh connection to
a notebook's Unix socket for each request and sends ``Connection: close``. A
server that honours it closes the socket as soon as it has answered. Node's
HTTP client, though, writes one last, empty chunk when the proxied request's
body ends (``ClientRequest.end()``), which often comes a few milliseconds
after the body itself, when the incoming request's end event is handled: by
then a fast answer (a refusal, a small save) may be written and the socket
closed. On TCP the late empty write is harmless; on a Unix socket whose peer
has closed, it fails with ``EPIPE``, the proxy drops the server's answer and
sends the browser its own 503 (nodejs/node#40553, #41062; measured here:
about 1.5 % of refused ``PUT``/``POST`` requests with a body).

So the notebook server behind the front door keeps such a connection open
after its answer, waiting for the next request as on any HTTP/1.1 keep-alive
connection; the proxy, which does not reuse it, closes it once it has read the
answer, and the server then closes its end. Nothing else changes: upgrades
(websockets) never asked for ``close``, an answer sent before the whole
request body was read still closes the connection, and a connection nobody
uses is closed by tornado's idle timeout.

Standalone, like ``readonly.py`` (tornado only; works with the docker image's
older tornado too): both launchers copy it next to the server's config file,
which loads it by file path and calls :func:`install`.
"""

import logging

from tornado import http1connection

log = logging.getLogger(__name__)


def install():
    """Make the notebook server's HTTP/1.1 connections outlive a ``Connection: close``.

    Returns whether tornado had the hook this relies on (it logs a warning if not,
    and the server then behaves as stock tornado does).
    """
    cls = http1connection.HTTP1Connection
    original = getattr(cls, '_can_keep_alive', None)
    if original is None:
        log.warning('datadns: tornado has no HTTP1Connection._can_keep_alive; not installed')
        return False
    if getattr(original, '_datadns', False):
        return True

    def _can_keep_alive(self, start_line, headers):
        if (
            not self.is_client
            and not self.params.no_keep_alive
            and getattr(start_line, 'version', None) == 'HTTP/1.1'
        ):
            return True
        return original(self, start_line, headers)

    _can_keep_alive._datadns = True
    cls._can_keep_alive = _can_keep_alive
    return True
