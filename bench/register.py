"""Benchmark site registration at the central: feder8 full snapshots, re-syncs, many sites.

    python bench/register.py [--quick] [--size 100000] [--sites 50] [--site-size 1000] ...

Starts SecantusDB and a central Girder with the plugin, then, against that one
server:

1. ``raw``: a pymongo bulk upsert of ``--size`` index documents (the operations
   ``Site.register`` itself sends: ``UpdateOne(..., upsert=True)``, unordered)
   straight into the central's database, timed, into ``resolver_dataset_raw``: a
   twin of ``resolver_dataset`` with the same indexes (deleting them from the real
   collection would leave index tombstones that slow the registration down).
2. ``full``: feder8's ``Sidecar.registerFull`` with a synthetic snapshot of the
   same ``--size`` datasets (``POST /resolver/site``, mode ``full``), timed from
   building the request body to the parsed answer. A real ``feder8 sync`` would
   first read the site's own index (``GET /resolver/dataset?local=true``); that
   is the site's cost, not the central's, and tagging 100,000 real folders
   through a site's API would take far longer than the benchmark itself, so the
   snapshot is synthetic and the central's work is what is measured.
   ``full_again`` repeats it with nothing changed (what the hourly full re-sync
   costs).
3. ``no_change``: ``Sidecar.registerChanges`` (sends nothing: nothing changed)
   plus ``Sidecar.heartbeat``, as one interval of ``feder8 run``.
4. ``one_percent``: the same after ``--change-fraction`` of the datasets changed
   (half renamed, a quarter removed, a quarter added): one partial registration
   plus the heartbeat.
5. ``concurrent``: ``--sites`` sidecars with different site names call
   ``registerFull`` at the same moment (a barrier), ``--site-size`` datasets
   each; every one must succeed with no retry and the central must then list
   every site with its full count.

The last line of stdout is the JSON result.
"""

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import log  # noqa: E402

from feder8.sidecar import Config, Sidecar  # noqa: E402

TARGETS = {
    'full_vs_raw': 2.0,  # full registration <= 2x the raw bulk upsert
    'no_change_vs_full': 0.01,  # a re-sync with nothing changed <= 1% of a full one
}


def identifier(prefix, i):
    return f'doi:10.5072/{prefix}.{i:07d}'


def folderIdFor(n, i):
    return f'{n:08x}{i:016x}'


def snapshotFor(prefix, n, size):
    """A site's snapshot as feder8 builds it: {(identifier, folderId): name}."""
    return {(identifier(prefix, i), folderIdFor(n, i)): f'Dataset {i}' for i in range(size)}


def parseArgs():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='small sizes, a smoke run')
    parser.add_argument('--size', type=int, help='datasets in the full registration')
    parser.add_argument('--change-fraction', type=float, default=0.01)
    parser.add_argument('--sites', type=int, default=50, help='sites registering at once')
    parser.add_argument('--site-size', type=int, help='datasets per concurrent site')
    parser.add_argument('--no-change-repeats', type=int, default=5)
    parser.add_argument('--time-limit', type=float, help='seconds for the whole run')
    parser.add_argument(
        '--phase-time-limit', type=float, default=300, help='seconds for the 1%% re-sync'
    )
    common.addCentralArguments(parser)
    args = parser.parse_args()
    if args.size is None:
        args.size = 10000 if args.quick else 100000
    if args.site_size is None:
        args.site_size = 100 if args.quick else 1000
    if args.time_limit is None:
        args.time_limit = 300 if args.quick else 1500
    if not 1 <= args.size <= 200000:
        parser.error('--size must be 1..200000 (the central refuses larger registrations)')
    if not 1 <= args.sites <= 200 or not 1 <= args.site_size <= 200000:
        parser.error('--sites must be 1..200 and --site-size 1..200000')
    if not 0 < args.change_fraction <= 1 or not 1 <= args.no_change_repeats <= 100:
        parser.error('--change-fraction must be in (0, 1] and --no-change-repeats 1..100')
    return args


class RetryCounter(logging.Handler):
    """Counts feder8's 'retrying' warnings: a registration that needed a retry."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.retries = []

    def emit(self, record):
        message = record.getMessage()
        if 'retrying' in message:
            self.retries.append(message[:300])


def sidecar(central, name, stopEvent=None):
    config = Config(
        siteName=name,
        girderUrl=central.apiUrl,  # unused: the snapshot is given, not read from a site
        girderApiKey=central.apiKey,
        publicUrl=f'https://{name}.invalid/api/v1',
        centralUrl=central.apiUrl,
        centralApiKey=central.apiKey,
        launchCredential=False,
        maxBackoff=5.0,
    )
    car = Sidecar(config, stopEvent=stopEvent)
    car.central  # noqa: B018 - log in before anything is timed
    return car


def withinTime(fn, seconds):
    """``fn()`` in a thread; its result, or None when it takes longer than ``seconds``."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()), daemon=True)
    thread.start()
    thread.join(seconds)
    return box[0] if box else None


def timed(resources, fn):
    """(result, seconds, server cpu seconds, server peak MiB) of ``fn()``."""
    phase = resources.phase()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    cpu, peak = phase()
    return result, seconds, cpu, peak


def rawUpsert(coll, site, snapshot):
    """The operations Site.register sends for a new site, straight through pymongo."""
    import datetime

    import pymongo

    now = datetime.datetime.now(datetime.timezone.utc)
    ops = [
        pymongo.UpdateOne(
            {'identifier': ident, 'site': site, 'folderId': folderId},
            {
                '$set': {'scheme': 'doi', 'name': name, 'local': False, 'updated': now},
                '$setOnInsert': {'created': now},
            },
            upsert=True,
        )
        for (ident, folderId), name in snapshot.items()
    ]
    result = coll.bulk_write(ops, ordered=False)
    return result.upserted_count


def main():
    args = parseArgs()
    started = time.time()
    result = {
        'benchmark': 'register',
        'machine': common.machine(),
        'config': {
            'size': args.size,
            'change_fraction': args.change_fraction,
            'sites': args.sites,
            'site_size': args.site_size,
            **common.Central.describe(args),
            'quick': args.quick,
            'snapshot': 'synthetic, given to feder8 Sidecar.registerFull/registerChanges',
        },
    }
    retries = RetryCounter()
    logging.getLogger('feder8').addHandler(retries)
    phases = {}
    with (
        common.interruptible(args.time_limit),
        common.Central.fromArgs(args) as central,
    ):
        resources = common.Resources(central.serverProcess()).start()
        dbResources = common.Resources(common.psutil.Process(central.db.proc.pid)).start()
        try:
            runPhases(args, central, resources, dbResources, retries, phases)
        except (common.OutOfTime, RuntimeError) as exc:
            # Report what was measured, and why the rest is missing.
            log(f'stopped: {exc}')
            result['error'] = str(exc)
        finally:
            resources.stop()
            dbResources.stop()
        result['resources'] = resources.summary()
        result['resources']['db_peak_rss_mib_sampled'] = round(dbResources.peakRss / 2**20, 1)

    def seconds(phase, key='seconds'):
        return (phases.get(phase) or {}).get(key)

    def ratio(a, b, digits=4):
        return round(a / b, digits) if a is not None and b else None

    full = seconds('full')
    ratios = {
        'full_vs_raw': ratio(full, seconds('raw'), 3),
        'full_again_vs_raw': ratio(seconds('full_again'), seconds('raw'), 3),
        'no_change_vs_full': ratio(seconds('no_change', 'seconds_median'), full, 5),
        'one_percent_vs_full': ratio(seconds('one_percent'), full),
        # CPU seconds SecantusDB spent: steadier than wall time on a shared machine.
        'full_vs_raw_db_cpu': ratio(seconds('full', 'db_cpu_s'), seconds('raw', 'db_cpu_s'), 3),
    }
    conc = phases.get('concurrent') or {}
    targets = {}
    for key in ('full_vs_raw', 'no_change_vs_full'):
        targets[key] = {
            'value': ratios[key],
            'target': f'<= {TARGETS[key]}',
            'met': ratios[key] is not None and ratios[key] <= TARGETS[key],
        }
    targets['concurrent_all_succeed'] = {
        'value': f'{conc.get("succeeded")}/{args.sites}',
        'target': f'{args.sites}/{args.sites}, no retry, every count right',
        'met': conc.get('succeeded') == args.sites
        and conc.get('retries') == 0
        and bool(conc.get('central_counts_ok')),
    }
    result['phases'] = phases
    # feder8 retries a registration the central answered with a 5xx: list them.
    result['feder8_retries'] = retries.retries[:10]
    result['ratios'] = ratios
    result['targets'] = targets
    result['all_targets_met'] = all(t['met'] for t in targets.values()) and 'error' not in result
    result['seconds'] = round(time.time() - started, 1)
    common.emit(result)
    return 0 if result['all_targets_met'] else 1


def runPhases(args, central, resources, dbResources, retries, phases):
    """Measure every phase against ``central``, filling ``phases`` as each one ends."""
    db = central.mongo()
    snapshot = snapshotFor('reg', 0, args.size)
    # The raw baseline writes the same documents to a twin of the index collection
    # (same database, same indexes): deleting them from the real one afterwards
    # would leave tombstones in its indexes that slow down the registration.
    raw = db['resolver_dataset_raw']
    for name, info in db['resolver_dataset'].index_information().items():
        if name != '_id_':
            options = {k: info[k] for k in ('unique', 'sparse') if info.get(k)}
            raw.create_index(list(info['key']), name=name, **options)

    log(f'raw: pymongo bulk upsert of {args.size:,} documents')
    db0 = dbResources.cpuSeconds()
    upserted, seconds, cpu, peak = timed(resources, lambda: rawUpsert(raw, 'bench-site', snapshot))
    if upserted != args.size:
        raise RuntimeError(f'raw upsert wrote {upserted} of {args.size}')
    phases['raw'] = {
        'seconds': round(seconds, 2),
        'docs_per_s': round(args.size / seconds),
        'db_cpu_s': round(dbResources.cpuSeconds() - db0, 1),
    }
    log(f'  {seconds:.1f}s')

    car = sidecar(central, 'bench-site')
    for label in ('full', 'full_again'):
        log(f'{label}: Sidecar.registerFull with {args.size:,} datasets')
        db0 = dbResources.cpuSeconds()
        answer, seconds, cpu, peak = timed(resources, lambda: car.registerFull(snapshot))
        expected = args.size if label == 'full' else 0
        if answer['total'] != args.size or answer['added'] != expected:
            raise RuntimeError(f'{label}: unexpected answer {answer}')
        phases[label] = {
            'seconds': round(seconds, 2),
            'datasets_per_s': round(args.size / seconds),
            'server_cpu_s': round(cpu, 1),
            'db_cpu_s': round(dbResources.cpuSeconds() - db0, 1),
            'server_peak_rss_mib': peak,
            'answer': {k: answer[k] for k in ('added', 'updated', 'removed', 'total')},
        }
        log(f'  {seconds:.1f}s  {answer}'[:200])

    log(f'no_change: registerChanges + heartbeat, {args.no_change_repeats} times')
    times = []
    for _ in range(args.no_change_repeats):
        t0 = time.perf_counter()
        sent = car.registerChanges(snapshot)
        alive = car.heartbeat()
        times.append(time.perf_counter() - t0)
        if sent is not None or not alive:
            raise RuntimeError(f'no_change: sent {sent}, heartbeat answered {alive}')
    phases['no_change'] = {
        'seconds_median': round(common.median(times), 4),
        'seconds_max': round(max(times), 4),
        'requests': 'one heartbeat (PUT), no registration',
    }
    log(f'  median {phases["no_change"]["seconds_median"] * 1000:.1f} ms')

    phases['concurrent'] = concurrent(args, central, resources, retries)

    changed = max(1, int(args.size * args.change_fraction))
    renamed, removed = changed // 2, changed // 4
    added = changed - renamed - removed
    newSnapshot = dict(snapshot)
    keys = list(snapshot)
    for key in keys[:renamed]:
        newSnapshot[key] = newSnapshot[key] + ' (renamed)'
    for key in keys[renamed : renamed + removed]:
        del newSnapshot[key]
    newSnapshot.update(snapshotFor('reg-new', 1, added))
    log(f'one_percent: {renamed} renamed, {removed} removed, {added} added')

    def changes():
        sent = car.registerChanges(newSnapshot)
        return sent, car.heartbeat()

    outcome, seconds, cpu, peak = timed(
        resources, lambda: withinTime(changes, args.phase_time_limit)
    )
    if outcome is None:
        phases['one_percent'] = {
            'seconds': None,
            'changed': changed,
            'timed_out_after_s': args.phase_time_limit,
        }
        raise common.OutOfTime(f'one_percent: no answer within {args.phase_time_limit} s')
    answer, alive = outcome
    want = (added, renamed, removed, len(newSnapshot))
    got = (answer['added'], answer['updated'], answer['removed'], answer['total'])
    if got != want or not alive:
        raise RuntimeError(f'one_percent: expected {want}, got {got}')
    phases['one_percent'] = {
        'seconds': round(seconds, 3),
        'changed': changed,
        'server_cpu_s': round(cpu, 2),
        'answer': {k: answer[k] for k in ('added', 'updated', 'removed', 'total')},
    }
    log(f'  {seconds:.2f}s')


def concurrent(args, central, resources, retries):
    """``--sites`` full registrations released at the same moment; all must succeed."""
    log(f'concurrent: {args.sites} sites x {args.site_size:,} datasets at once')
    stop = threading.Event()
    names = [f'bench-many-{n:03d}' for n in range(args.sites)]
    cars = [sidecar(central, name, stop) for name in names]
    snapshots = [snapshotFor(f'many{n}', n + 2, args.site_size) for n in range(args.sites)]
    barrier = threading.Barrier(args.sites + 1)
    outcomes = [None] * args.sites
    ends = [None] * args.sites
    before = len(retries.retries)

    def register(n):
        try:
            barrier.wait(60)
            outcomes[n] = cars[n].registerFull(snapshots[n])
        except BaseException as exc:  # noqa: BLE001 - reported as a failure
            outcomes[n] = exc
        ends[n] = time.perf_counter()

    threads = [threading.Thread(target=register, args=(n,), daemon=True) for n in range(args.sites)]
    for thread in threads:
        thread.start()
    phase = resources.phase()
    barrier.wait(60)
    t0 = time.perf_counter()
    deadline = time.monotonic() + max(120.0, args.site_size * args.sites / 500)
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stop.set()  # a sidecar still backing off stops now
    for thread in threads:
        thread.join(10)
    elapsed = time.perf_counter() - t0
    cpu, peak = phase()
    failures = []
    succeeded = 0
    for name, outcome in zip(names, outcomes, strict=True):
        if (
            isinstance(outcome, dict)
            and outcome['total'] == args.site_size
            and not outcome['rejected']
        ):
            succeeded += 1
        else:
            failures.append({'site': name, 'outcome': repr(outcome)[:300]})
    listed = {
        s['name']: s['datasetCount']
        for s in central.client.get('resolver/site', parameters={'limit': 0})
        if s['name'].startswith('bench-many-')
    }
    countsOk = listed == {name: args.site_size for name in names}
    latencies = sorted(end - t0 for end in ends if end is not None)
    out = {
        'sites': args.sites,
        'site_size': args.site_size,
        'succeeded': succeeded,
        'failures': failures[:10],
        'retries': len(retries.retries) - before,
        'retry_messages': retries.retries[before : before + 5],
        'central_counts_ok': countsOk,
        'seconds_all': round(elapsed, 2),
        'seconds_first_done': round(latencies[0], 2) if latencies else None,
        'seconds_median_done': round(latencies[len(latencies) // 2], 2) if latencies else None,
        'datasets_per_s': round(args.sites * args.site_size / elapsed),
        'server_cpu_s': round(cpu, 1),
        'server_peak_rss_mib': peak,
    }
    log(f'  {succeeded}/{args.sites} succeeded in {elapsed:.1f}s, {out["retries"]} retries')
    return out


if __name__ == '__main__':
    sys.exit(main())
