"""Shared test setup: a real SecantusDB for pytest-girder, started once per session.

Set ``DATADNS_TEST_MONGO_URI`` to test against another MongoDB-wire server
(a real MongoDB, say) instead.
"""

import atexit
import logging
import os
import sys
import threading
import time

import pytest

from datadns import stack


def pytest_configure(config):
    uri = os.environ.get('DATADNS_TEST_MONGO_URI')
    if not uri and not config.getoption('--mock-db'):
        db = stack.SecantusDB(storage=':memory:')
        db.start()
        config._datadnsDb = db
        uri = db.uri
    if uri:
        config.option.mongo_uri = uri


def pytest_unconfigure(config):
    # The warm pool stops its servers at interpreter exit; in a test session the
    # database is gone by then, and the tests stop what they started themselves.
    pool = sys.modules.get('girder_resolver.services.notebooks.refill')
    if pool is not None:
        atexit.unregister(pool.shutdown)
    db = getattr(config, '_datadnsDb', None)
    if db is not None:
        db.stop()


@pytest.fixture(scope='session')
def mongoUri(pytestconfig):
    """Base MongoDB URI of the test database server (no database name)."""
    return pytestconfig.getoption('--mongo-uri')


class _NoTextIndexNoise:
    """SecantusDB has no $text index; Girder logs a traceback per model on every connect."""

    def filter(self, record):
        return 'text search not enabled' not in record.getMessage()


logging.getLogger('girder.models.model_base').addFilter(_NoTextIndexNoise())


@pytest.fixture(autouse=True)
def _eagerLocalTasks(request):
    """Run Girder's "local" Celery tasks (import, folder deletion) in-process, as the
    embedded stack does."""
    if 'db' in request.fixturenames:
        request.getfixturevalue('eagerWorkerTasks')
    yield


@pytest.fixture(autouse=True)
def _freshCaches():
    """Each test starts on an emptied database, so nothing this process remembers of the
    previous test's settings, sites and entries may carry over."""
    from girder_resolver import cache

    cache.clearAll()
    yield


#: The plugin's background threads: each must end with the in-process server that started it.
PLUGIN_THREADS = ('datadns-culler', 'datadns-pool', 'datadns-frontdoor')


@pytest.fixture(autouse=True)
def _noPluginThreadOutlivesItsServer():
    """After a test (and its ``server`` fixture) no culler, pool or front door thread runs in
    this process while no in-process server does: a leftover would cull or refill against the
    next test's database, or log errors against a dropped one."""
    yield
    import cherrypy

    if cherrypy.engine.state == cherrypy.engine.states.STARTED:
        return  # a module-scoped server is still up: its threads are meant to run
    deadline = time.monotonic() + 30
    while left := [t.name for t in threading.enumerate() if t.name in PLUGIN_THREADS]:
        assert time.monotonic() < deadline, f'still running after the server stopped: {left}'
        time.sleep(0.05)
