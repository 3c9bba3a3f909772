"""A per-address token bucket for anonymous requests that query the index.

``/resolve`` and ``/resolver/dataset`` are public: a repository link must work
without logging in. Each call is cheap, but an unbounded stream of them from
one address (a runaway harvester, a scraper that ignores 404s) would load the
database of a server that also runs notebooks. So each client address gets a
bucket of ``resolver.anonymous_burst`` requests, refilled at
``resolver.anonymous_rate`` per second; an empty bucket answers 429 with
``Retry-After`` and a message saying how to avoid it.

Who is limited, and who is not:

- logged-in callers (a Girder token, an API key, feder8) are never limited:
  they are accountable, and feder8 must never be throttled by its own central;
- requests from the machine itself (loopback: health checks, a reverse proxy on
  the same host that does not send X-Forwarded-For) are not limited, so that a
  proxy left unconfigured fails open rather than throttling every visitor
  through one shared bucket;
- the address is the TCP peer as uvicorn reports it, which honours
  X-Forwarded-For only from ``FORWARDED_ALLOW_IPS`` (the reverse proxy); a
  header sent by anyone else is ignored, so it cannot be used to get fresh
  buckets. IPv6 clients are bucketed per /64, what one host usually holds.

Buckets live in memory, per Girder process (no database write per request: the
thing being protected). Several processes behind a load balancer each allow
the configured rate. At most ``MAX_CLIENTS`` buckets are kept, least recently
used dropped first.
"""

import ipaddress
import math
import threading
import time
from collections import OrderedDict

import cherrypy
from girder.api.rest import getCurrentUser, setResponseHeader
from girder.exceptions import RestException

from . import settings
from .settings import PluginSettings

#: Most client addresses remembered at once (about 100 bytes each).
MAX_CLIENTS = 100_000


class TokenBuckets:
    """Token buckets keyed by client, thread-safe, with a bounded number of keys."""

    def __init__(self, maxClients=MAX_CLIENTS, clock=time.monotonic):
        self.maxClients = maxClients
        self.clock = clock
        self._buckets = OrderedDict()  # key -> (tokens, time of last refill)
        self._lock = threading.Lock()

    def take(self, key, rate, burst, cost=1.0):
        """Take ``cost`` tokens for ``key``: 0 when allowed, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            tokens, stamp = self._buckets.pop(key, (float(burst), now))
            tokens = min(float(burst), tokens + (now - stamp) * rate)
            if tokens >= cost:
                tokens -= cost
                wait = 0.0
            else:
                wait = (cost - tokens) / rate
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self.maxClients:
                self._buckets.popitem(last=False)
        return wait

    def clear(self):
        with self._lock:
            self._buckets.clear()


buckets = TokenBuckets()


def clientAddress():
    """The client's address as the TCP connection (through a trusted proxy) gives it.

    Not ``cherrypy.request.remote.ip``: Girder turns on CherryPy's proxy tool,
    which takes it from an X-Forwarded-For header that any client can send.
    """
    environ = getattr(cherrypy.request, 'wsgi_environ', None) or {}
    return environ.get('REMOTE_ADDR') or cherrypy.request.remote.ip


def bucketKey(address):
    """The bucket of an address: itself for IPv4, its /64 for IPv6; None for loopback."""
    try:
        ip = ipaddress.ip_address((address or '').strip('[]'))
    except ValueError:
        return address or 'unknown'
    if ip.version == 6 and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return None
    if ip.version == 6:
        return str(ipaddress.ip_network(f'{ip}/64', strict=False))
    return str(ip)


def check(cost=1.0):
    """Count an anonymous request against its address; raise 429 when over the limit."""
    rate = float(settings.get(PluginSettings.ANONYMOUS_RATE) or 0)
    if rate <= 0 or getCurrentUser() is not None:
        return
    key = bucketKey(clientAddress())
    if key is None:
        return
    burst = max(1, int(settings.get(PluginSettings.ANONYMOUS_BURST) or 1))
    wait = buckets.take(key, rate, burst, cost)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        setResponseHeader('Retry-After', str(seconds))
        raise RestException(
            f'Too many requests from your address without logging in (at most {rate:g} per '
            f'second, {burst} at once). Try again in {seconds} s, or log in or use an API '
            'key: requests of logged-in users are not limited.',
            code=429,
        )
