"""Benchmark ``GET /resolve?id=`` at the central with a large dataset index.

    python bench/resolve.py [--quick] [--sizes 100000,1000000] [--clients 16] ...

Starts SecantusDB and a central Girder with the plugin, registers ``--sites``
sites through ``POST /resolver/site`` (so they have owners and real heartbeats,
which a background thread keeps sending), then fills the dataset index straight
into the database with pymongo bulk inserts, in the shape ``Site.register`` writes
(``{identifier, site, folderId, scheme, name, local: false, updated, created}``).
For each size, in increasing order on the same server, it measures throughput and
latency under ``--clients`` concurrent keep-alive clients of

- ``GET /system/version`` (baseline: Girder's cheapest route),
- ``GET /folder/{id}`` on a public folder (baseline: one indexed document read),
- ``GET /resolve?id=`` for uniformly random identifiers (``cold``),
- ``GET /resolve?id=`` for a small hot set (``hot``),

in ``--rounds`` rounds whose order rotates, so that drift on a noisy machine hits
every phase alike; targets are judged on the median of the per-round ratios.

Loading: documents are inserted with the collection's secondary indexes dropped,
then the indexes Girder made (read back from the collection, same names, keys
and options) are rebuilt; SecantusDB builds an index about twice as fast as it
maintains it insert by insert. The last line of stdout is the JSON result.
"""

import argparse
import datetime
import random
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import log  # noqa: E402

PHASES = ('version', 'folder', 'cold', 'hot')
TARGETS = {
    'cold_vs_folder': 1.0,  # cold resolve throughput >= 1.0x the folder read's
    'hot_vs_version': 0.8,  # hot resolve throughput >= 0.8x /system/version's
    'largest_vs_smallest': 0.9,  # the largest size within 10% of the smallest
}


def identifier(i):
    """The canonical identifier of synthetic dataset ``i`` (zero-padded: sorted like i)."""
    return f'doi:10.5072/bench.{i:07d}'


def folderIdFor(i):
    return f'{i:024x}'


def parseArgs():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, a smoke run')
    parser.add_argument('--sizes', help='comma-separated index sizes (default 100000,1000000)')
    parser.add_argument('--clients', type=int, default=16, help='concurrent clients')
    parser.add_argument('--requests', type=int, help='requests per client per phase per round')
    parser.add_argument('--rounds', type=int, help='rounds of the four phases per size')
    parser.add_argument('--hot', type=int, default=100, help='identifiers in the hot set')
    parser.add_argument('--sites', type=int, default=2, help='registered sites holding the data')
    parser.add_argument('--phase-time-limit', type=float, default=60, help='seconds per phase')
    parser.add_argument('--batch', type=int, default=2000, help='documents per insert_many')
    common.addCentralArguments(parser)
    parser.add_argument('--seed', type=int, default=1)
    parser.add_argument('--time-limit', type=float, help='seconds for the whole run')
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = '10000,30000' if args.quick else '100000,1000000'
    args.sizes = sorted(int(s) for s in args.sizes.split(','))
    if args.requests is None:
        args.requests = 40 if args.quick else 150
    if args.rounds is None:
        args.rounds = 2 if args.quick else 3
    if args.time_limit is None:
        args.time_limit = 300 if args.quick else 3000
    bounds = (1, 256), (1, 100000), (1, 20), (1, args.sizes[0]), (1, 50)
    values = args.clients, args.requests, args.rounds, args.hot, args.sites
    for (low, high), value in zip(bounds, values, strict=True):
        if not low <= value <= high:
            parser.error(f'{value} is out of range {low}..{high}')
    if args.sizes[-1] > 10_000_000:
        parser.error('sizes are capped at 10,000,000')
    return args


class Heartbeats:
    """Keeps the registered sites healthy, as their feder8s would."""

    def __init__(self, gc, names, every=20.0):
        self.gc, self.names, self.every = gc, names, every
        self.stop = threading.Event()
        self.sent = self.failed = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.wait(self.every):
            self.beat()

    def beat(self):
        for name in self.names:
            try:
                self.gc.put(f'resolver/site/{name}/heartbeat')
                self.sent += 1
            except Exception as exc:  # noqa: BLE001 - report and keep beating
                self.failed += 1
                log(f'heartbeat for {name} failed: {str(exc)[:200]}')


class Index:
    """The central's dataset collection, filled straight through pymongo.

    Entries go in with Girder's indexes in place, in batches. Dropping the indexes
    and building them afterwards would be faster, but SecantusDB (0.7) can stall
    for good while it builds an index over a large collection and another client
    sends a request (the build holds its storage lock inside WiredTiger, while
    that client's thread waits on the lock to release the read snapshot the build
    is waiting on); Girder's own threads make that happen.
    """

    def __init__(self, db, sites, batch):
        self.coll = db['resolver_dataset']
        self.sites = sites
        self.batch = batch
        self.count = 0
        self.indexes = sorted(name for name in self.coll.index_information() if name != '_id_')

    def grow(self, size):
        """Add documents until the collection holds ``size`` bench entries; returns timings."""
        now = datetime.datetime.now(datetime.timezone.utc)
        t0 = time.perf_counter()
        start = self.count
        while self.count < size:
            end = min(size, self.count + self.batch)
            docs = [
                {
                    'identifier': identifier(i),
                    'site': self.sites[i % len(self.sites)],
                    'folderId': folderIdFor(i),
                    'scheme': 'doi',
                    'name': f'Synthetic dataset {i}',
                    'local': False,
                    'updated': now,
                    'created': now,
                }
                for i in range(self.count, end)
            ]
            self.coll.insert_many(docs, ordered=False)
            self.count = end
            if end % (self.batch * 25) == 0 or end == size:
                elapsed = time.perf_counter() - t0
                log(f'  inserted {end:,} of {size:,} ({(end - start) / elapsed:,.0f}/s)')
        t1 = time.perf_counter()
        return {
            'inserted': size - start,
            'insert_seconds': round(t1 - t0, 1),
            'insert_docs_per_s': round((size - start) / (t1 - t0)) if t1 > t0 else None,
            'indexes': self.indexes,
        }


def measureSize(args, central, size, folderId, resources, dbResources):
    api = central.apiUrl
    rng = random.Random(args.seed + size)
    hotSet = rng.sample(range(size), args.hot)
    per = args.requests

    def coldUrl(client, n, seed=rng.random()):
        r = random.Random(f'{seed}-{client}-{n}')
        return f'{api}/resolve?id={identifier(r.randrange(size))}'

    urls = {
        'version': lambda c, n: f'{api}/system/version',
        'folder': lambda c, n: f'{api}/folder/{folderId}',
        'cold': coldUrl,
        'hot': lambda c, n: f'{api}/resolve?id={identifier(hotSet[(c * 7919 + n) % len(hotSet)])}',
    }
    # Every URL answers 200 before anything is timed.
    import requests

    for phase in PHASES:
        resp = requests.get(urls[phase](0, 0), timeout=30)
        if resp.status_code != 200:
            raise RuntimeError(f'{phase}: {resp.status_code} {resp.text[:300]}')
        if phase in ('cold', 'hot'):
            locations = resp.json()['locations']
            if not locations or not all(loc['healthy'] for loc in locations):
                raise RuntimeError(f'{phase}: expected a healthy location, got {locations}')
    log(f'size {size:,}: warm-up')
    for phase in PHASES:
        common.load(urls[phase], args.clients, max(5, per // 5), args.phase_time_limit)

    rounds = {phase: [] for phase in PHASES}
    latencies = {phase: [] for phase in PHASES}
    for r in range(args.rounds):
        order = PHASES[r % len(PHASES) :] + PHASES[: r % len(PHASES)]
        log(f'size {size:,}: round {r + 1}/{args.rounds} ({", ".join(order)})')
        for phase in order:
            out = common.load(
                urls[phase],
                args.clients,
                per,
                args.phase_time_limit,
                watch={'server': resources, 'db': dbResources},
                label=phase,
            )
            latencies[phase].extend(out.pop('latencies'))
            rounds[phase].append(out)

    phases = {}
    for phase in PHASES:
        lat = sorted(latencies[phase])
        phases[phase] = {
            'rps_median': common.median([o['rps'] for o in rounds[phase]]),
            'rps_rounds': [o['rps'] for o in rounds[phase]],
            'p50_ms': common.ms(common.percentile(lat, 50)),
            'p99_ms': common.ms(common.percentile(lat, 99)),
            'requests': sum(o['requests'] for o in rounds[phase]),
            'errors': sum(o['errors'] for o in rounds[phase]),
            'client_cpu_pct': common.median([o['client_cpu_pct'] for o in rounds[phase]]),
            'server_cpu_pct': common.median([o['cpu_pct']['server'] for o in rounds[phase]]),
            'db_cpu_pct': common.median([o['cpu_pct']['db'] for o in rounds[phase]]),
        }

    def ratio(a, b):
        return common.median(
            [x['rps'] / y['rps'] for x, y in zip(rounds[a], rounds[b], strict=True) if y['rps']]
        )

    return {
        'size': size,
        'phases': phases,
        'ratios': {
            'cold_vs_folder': ratio('cold', 'folder'),
            'hot_vs_version': ratio('hot', 'version'),
            'cold_vs_version': ratio('cold', 'version'),
            'folder_vs_version': ratio('folder', 'version'),
        },
    }


def main():
    args = parseArgs()
    started = time.time()
    result = {
        'benchmark': 'resolve',
        'machine': common.machine(),
        'config': {
            'sizes': args.sizes,
            'clients': args.clients,
            'requests_per_client_per_phase': args.requests,
            'rounds': args.rounds,
            'hot_set': args.hot,
            'sites': args.sites,
            **common.Central.describe(args),
            'quick': args.quick,
            'client': 'python threads, one requests.Session (keep-alive) each',
        },
    }
    siteNames = [f'bench-site-{n}' for n in range(args.sites)]
    heartbeats = index = None
    sizes = []
    size = loadStart = None
    with (
        common.interruptible(args.time_limit),
        common.Central.fromArgs(args) as central,
    ):
        gc = central.client
        resources = common.Resources(central.serverProcess()).start()
        dbResources = common.Resources(common.psutil.Process(central.db.proc.pid)).start()
        try:
            collection = gc.createCollection('Bench', public=True)
            folder = gc.createFolder(
                collection['_id'], 'Public folder', parentType='collection', public=True
            )
            for name in siteNames:
                gc.sendRestRequest(
                    'POST',
                    'resolver/site',
                    json={
                        'name': name,
                        'apiUrl': f'https://{name}.invalid/api/v1',
                        'mode': 'full',
                        'datasets': [],
                    },
                )
            heartbeats = Heartbeats(gc, siteNames)
            heartbeats.thread.start()
            index = Index(central.mongo(), siteNames, args.batch)
            for size in args.sizes:
                log(f'loading the index up to {size:,} datasets')
                loadStart = time.perf_counter()
                loading = index.grow(size)
                sites = central.mongo()['resolver_site']
                for name in siteNames:
                    count = index.coll.count_documents({'site': name})
                    sites.update_one({'name': name}, {'$set': {'datasetCount': count}})
                log(f'  loaded in {loading["insert_seconds"]}s')
                # Heartbeats sent while SecantusDB was busy loading may have failed:
                # beat now, before measuring.
                heartbeats.beat()
                measured = measureSize(args, central, size, folder['_id'], resources, dbResources)
                measured['loading'] = loading
                measured['server_rss_mib_now'] = round(resources.rss() / 2**20, 1)
                measured['db_rss_mib_now'] = round(dbResources.rss() / 2**20, 1)
                sizes.append(measured)
        except (common.OutOfTime, RuntimeError) as exc:
            # Report what was measured, and how far the run got.
            log(f'stopped: {exc}')
            result['error'] = str(exc)
            result['stopped_at'] = {
                'size': size,
                'documents_in_index': index.count if index else None,
                'seconds_into_loading': (
                    round(time.perf_counter() - loadStart, 1) if loadStart else None
                ),
            }
        finally:
            if heartbeats:
                heartbeats.stop.set()
            resources.stop()
            dbResources.stop()
        result['sizes'] = sizes
        result['resources'] = resources.summary()
        result['resources']['db_peak_rss_mib_sampled'] = round(dbResources.peakRss / 2**20, 1)
        result['resources']['heartbeats_sent'] = heartbeats.sent
        result['resources']['heartbeats_failed_while_loading'] = heartbeats.failed

    targets = {}
    for entry in sizes:
        for key in ('cold_vs_folder', 'hot_vs_version'):
            value = entry['ratios'][key]
            targets[f'{key}@{entry["size"]}'] = {
                'value': value,
                'target': f'>= {TARGETS[key]}',
                'met': value is not None and value >= TARGETS[key],
            }
    for missing in args.sizes[len(sizes) :]:
        for key in ('cold_vs_folder', 'hot_vs_version'):
            targets[f'{key}@{missing}'] = {'value': None, 'target': 'not measured', 'met': False}
    if len(args.sizes) > 1 and len(sizes) < len(args.sizes):
        targets[f'cold_{args.sizes[-1]}_vs_{args.sizes[0]}'] = {
            'value': None,
            'target': 'not measured',
            'met': False,
        }
    if len(sizes) > 1:
        smallest, largest = sizes[0], sizes[-1]
        # Compared through the cold/folder ratio, which cancels the machine's drift
        # between the two sizes; the raw throughputs are listed beside it.
        small, large = smallest['ratios']['cold_vs_folder'], largest['ratios']['cold_vs_folder']
        value = round(large / small, 3) if small and large else None
        targets[f'cold_{largest["size"]}_vs_{smallest["size"]}'] = {
            'value': value,
            'target': f'>= {TARGETS["largest_vs_smallest"]} (normalised cold/folder ratio)',
            'met': value is not None and value >= TARGETS['largest_vs_smallest'],
            'raw_rps_ratio': round(
                largest['phases']['cold']['rps_median'] / smallest['phases']['cold']['rps_median'],
                3,
            ),
            'p50_ms': [smallest['phases']['cold']['p50_ms'], largest['phases']['cold']['p50_ms']],
        }
    errors = sum(p['errors'] for s in sizes for p in s['phases'].values())
    result['targets'] = targets
    result['all_targets_met'] = (
        all(t['met'] for t in targets.values()) and errors == 0 and 'error' not in result
    )
    result['errors'] = errors
    result['seconds'] = round(time.time() - started, 1)
    common.emit(result)
    return 0 if result['all_targets_met'] else 1


if __name__ == '__main__':
    sys.exit(main())
