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

#: Seconds a setting read is reused when ``resolver.cache_seconds`` itself is being read.
SETTINGS_SECONDS = 2.0


class Recent:
    """A bounded map of recent reads, each valid for a given number of seconds.

    A read that started before a :meth:`clear` or :meth:`discard` is not stored,
    so a slow read can never put back a value that a write in this process has
    just made stale.
    """

    def __init__(self, size):
        self.size = size
        self._data = {}  # key -> (monotonic time of the read, value)
        self._generation = 0
        self._lock = threading.Lock()

    def get(self, key, load, seconds, keep=lambda value: True):
        """The value for ``key``: from memory if younger than ``seconds``, else ``load()``."""
        if seconds <= 0:
            return load()
        now = time.monotonic()
        hit = self._data.get(key)
        if hit is not None and now - hit[0] < seconds:
            return hit[1]
        generation = self._generation
        value = load()
        if keep(value):
            self.put(key, value, now, generation)
        return value

    def put(self, key, value, when=None, generation=None):
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            self._data.pop(key, None)
            while len(self._data) >= self.size:
                self._data.pop(next(iter(self._data)))  # the oldest read
            self._data[key] = (time.monotonic() if when is None else when, value)

    def discard(self, key):
        with self._lock:
            self._data.pop(key, None)
            self._generation += 1

    def clear(self):
        with self._lock:
            self._data.clear()
            self._generation += 1

    def __len__(self):
        return len(self._data)


#: Plugin setting values, by key.
settings = Recent(size=256)
#: Site documents, by site name.
sites = Recent(size=10_000)
#: Index entries (a tuple of documents), by canonical identifier.
entries = Recent(size=20_000)


def clearAll():
    for cache in (settings, sites, entries):
        cache.clear()
