"""Prometheus metrics: what an operator watches on a resolver or a site.

Counters and histograms live in this process's registry and are updated where
things happen; gauges that describe shared state (running notebooks, site
health) are read from the database at scrape time, so every Girder process of
a site reports the same figures. Metrics sits below the models: the layers that
own that state register how to read it (:func:`readSitesWith`,
:func:`readNotebookCountsWith`).
"""

import time

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily

from . import primitives

REGISTRY = CollectorRegistry(auto_describe=True)

RESOLUTIONS = Counter(
    'datadns_resolutions', 'Identifier resolutions by outcome.', ['outcome'], registry=REGISTRY
)
LAUNCHES = Histogram(
    'datadns_launch_seconds',
    'Time from a launch request to a notebook that answers.',
    ['backend', 'outcome'],
    registry=REGISTRY,
    buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120),
)
POOL_CLAIM_STEPS = Histogram(
    'datadns_pool_claim_step_seconds',
    'Time of each step of a launch served by the warm pool (checks, claim, bind, route, '
    'record, settle).',
    ['step'],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
)
CULLS = Counter(
    'datadns_culls', 'Notebooks stopped by the culler, by reason.', ['reason'], registry=REGISTRY
)
FAILOVERS = Counter(
    'datadns_failovers',
    'Launches that moved on from a site that failed them, by the site passed over.',
    ['site'],
    registry=REGISTRY,
)
SUSPECTED = Counter(
    'datadns_site_suspected',
    'Times a site became suspect (its circuit breaker opened), by site.',
    ['site'],
    registry=REGISTRY,
)
REGISTRATIONS = Counter(
    'datadns_registrations', 'Site registrations received, by mode.', ['mode'], registry=REGISTRY
)


class StepTimer:
    """Observes the time since the previous step into ``histogram`` under each step's name."""

    def __init__(self, histogram):
        self.histogram = histogram
        self.last = time.perf_counter()

    def step(self, name):
        now = time.perf_counter()
        self.histogram.labels(step=name).observe(now - self.last)
        self.last = now


#: How the state gauges are read, registered by the layers that own the state.
_readers = {'sites': lambda moment: (), 'notebooks': dict}


def readSitesWith(reader):
    """Read the site gauges with ``reader(now)``: rows ``(name, healthy, datasets, suspect)``."""
    _readers['sites'] = reader


def readNotebookCountsWith(reader):
    """Read the notebook gauge with ``reader()``: ``{status: count}`` of live notebooks."""
    _readers['notebooks'] = reader


class _StateCollector:
    """Gauges computed from the database when Prometheus scrapes."""

    def describe(self):
        # Without this, registering the collector would call collect(): a database
        # query at import time.
        return []

    def collect(self):
        sites = GaugeMetricFamily(
            'datadns_site_healthy',
            'Whether a registered site sent a heartbeat within the TTL.',
            labels=['site'],
        )
        datasets = GaugeMetricFamily(
            'datadns_site_datasets', 'Datasets a site has registered.', labels=['site']
        )
        suspects = GaugeMetricFamily(
            'datadns_site_suspect',
            "Whether a site's circuit breaker is open: it failed calls lately and is passed "
            'over until its cool-down ends or it sends a heartbeat.',
            labels=['site'],
        )
        for name, healthy, count, suspect in _readers['sites'](primitives.now()):
            sites.add_metric([name], 1 if healthy else 0)
            datasets.add_metric([name], count)
            suspects.add_metric([name], 1 if suspect else 0)
        yield sites
        yield datasets
        yield suspects
        running = GaugeMetricFamily(
            'datadns_notebooks', 'Notebooks at this site by status.', labels=['status']
        )
        for status, count in _readers['notebooks']().items():
            running.add_metric([status], count)
        yield running


REGISTRY.register(_StateCollector())


def exposition():
    """The metrics in Prometheus' text format."""
    return generate_latest(REGISTRY)
