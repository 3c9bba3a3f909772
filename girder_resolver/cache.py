"""Short-lived, per-process memory of database reads on the resolution path.

Each ``GET /resolve`` would otherwise read the plugin's settings, the index
entries of the identifier and the site of each entry: several database round
trips for an answer that changes rarely. The central learns of a site's changes
only every feder8 interval (30 s by default) and judges health against a TTL of
tens of seconds, so reusing a read for ``resolver.cache_seconds`` (2 s by
default) changes nothing a user can tell apart, while a popular identifier is
answered from memory.

What this process writes, it forgets at once (registrations, heartbeats, folder
events, setting changes call :meth:`Recent.discard` or :meth:`Recent.clear`),
so a change is visible here immediately; another Girder process of the same
server sees it within ``resolver.cache_seconds``. Only answers that exist are
kept: an identifier registered a moment ago is never reported missing from
memory. Access to local folders is never cached: it is checked on every request.
"""

import threading
import time

import cachetools

#: Seconds a setting read is reused when ``resolver.cache_seconds`` itself is being read.
SETTINGS_SECONDS = 2.0
#: No read is reused longer than this (the bound of ``resolver.cache_seconds``), so memory
#: holds nothing older.
LONGEST_SECONDS = 60.0


class Recent:
    """A bounded map of recent reads, each valid for a given number of seconds.

    The reads live in a :class:`cachetools.TTLCache` (least recently used go first
    when it is full; none outlives :data:`LONGEST_SECONDS`); each :meth:`get` says
    how old a read it accepts, as the setting that decides it may change at any time.
    A read that started before a :meth:`clear` or :meth:`discard` is not stored,
    so a slow read can never put back a value that a write in this process has
    just made stale.
    """

    def __init__(self, size):
        # key -> (monotonic time of the read, value)
        self._data = cachetools.TTLCache(maxsize=size, ttl=LONGEST_SECONDS, timer=time.monotonic)
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, key, load, seconds, keep=lambda value: True):
        """The value for ``key``: from memory if younger than ``seconds``, else ``load()``.

        Only values for which ``keep(value)`` is true are remembered.
        """
        if seconds <= 0:
            return load()
        now = time.monotonic()
        with self._lock:
            hit = self._data.get(key)
            generation = self._generation
        if hit is not None and now - hit[0] < seconds:
            return hit[1]
        value = load()
        if keep(value):
            with self._lock:
                if generation == self._generation:
                    self._data[key] = (now, value)
        return value

    def discard(self, key):
        """Forget ``key``, and any read of anything still in flight."""
        with self._lock:
            self._data.pop(key, None)
            self._generation += 1

    def clear(self):
        """Forget everything, and any read still in flight."""
        with self._lock:
            self._data.clear()
            self._generation += 1

    def __len__(self):
        with self._lock:
            return len(self._data)


#: Plugin setting values, by key.
settings = Recent(size=256)
#: Site documents, by site name.
sites = Recent(size=10_000)
#: Index entries (a tuple of documents), by canonical identifier.
entries = Recent(size=20_000)
#: Whether a tool is ready on this machine ``(ready, reason)``, by (backend, tool).
tools = Recent(size=256)
#: Seconds a tool's readiness is reused (asking a container engine is not free).
TOOL_SECONDS = 5.0


def clearAll():
    """Forget every read (the plugin starting in this process)."""
    for cache in (settings, sites, entries, tools):
        cache.clear()
