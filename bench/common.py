"""What the benchmarks share: a throwaway central, load generation, CPU and memory readings.

Every benchmark starts its own SecantusDB and Girder (through ``datadns.stack`` and
``datadns.federation``), stops them on exit (also on Ctrl-C, SIGTERM or an
exception), writes progress to stderr and prints its figures as one JSON object on
the last line of stdout. Load goes to 127.0.0.1 only, and every loop is bounded in
count and in time.
"""

import contextlib
import json
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from datadns import stack  # noqa: E402
from datadns.federation import Federation  # noqa: E402

_T0 = time.monotonic()


def log(message):
    """A progress line on stderr, stamped with seconds since the benchmark started."""
    print(f'[{time.monotonic() - _T0:7.1f}s] {message}', file=sys.stderr, flush=True)


def emit(figures):
    """The benchmark's result: one JSON object, the last line of stdout."""
    sys.stdout.flush()
    print(json.dumps(figures, sort_keys=False, default=str), flush=True)


def percentile(sortedValues, q):
    if not sortedValues:
        return None
    index = min(len(sortedValues) - 1, max(0, round(q / 100 * (len(sortedValues) - 1))))
    return sortedValues[index]


def ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


class OutOfTime(Exception):
    """The benchmark ran past its overall time limit."""


@contextlib.contextmanager
def interruptible(timeLimit=None):
    """Stop cleanly on SIGTERM (as on Ctrl-C) and after ``timeLimit`` seconds.

    SIGTERM becomes KeyboardInterrupt and the time limit raises OutOfTime in the
    main thread, so the ``finally`` blocks that stop the child processes run.
    """

    def onTerm(signum, frame):
        raise KeyboardInterrupt(f'signal {signum}')

    started = time.monotonic()

    def onAlarm(signum, frame):
        raise OutOfTime(
            f'stopped after {time.monotonic() - started:.0f} s '
            f'(SIGALRM; the time limit is {timeLimit} s)'
        )

    previous = signal.signal(signal.SIGTERM, onTerm)
    previousAlarm = signal.signal(signal.SIGALRM, onAlarm)
    if timeLimit:
        signal.alarm(int(timeLimit))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGALRM, previousAlarm)


def addCentralArguments(parser):
    """The options of the central a benchmark starts: SecantusDB's storage and cache,
    Girder's server mode. :meth:`Central.fromArgs` reads them back."""
    parser.add_argument(
        '--storage', choices=('memory', 'disk'), default='memory', help='SecantusDB storage'
    )
    parser.add_argument(
        '--db-cache', default='6G', help="SecantusDB's WiredTiger cache (its default is 1G)"
    )
    parser.add_argument(
        '--mode',
        choices=('production', 'development'),
        default='production',
        help="Girder's server mode",
    )


class Central:
    """SecantusDB plus one Girder with the plugin (the central resolver), for one run.

    ``mode`` is Girder's server mode. ``production`` is the default here: in
    ``development`` mode ``girder serve`` runs uvicorn with its file-watching
    reloader, which adds a second process and restarts the server whenever a
    ``.py`` file under the working directory changes.
    """

    def __init__(self, mode='production', storage='disk', settings=None, keep=False, cache='6G'):
        self.home = Path(tempfile.mkdtemp(prefix='datadns-bench-'))
        self.mode = mode
        # SecantusDB's default 1G cache is too small for a million entries in memory:
        # the index builds stall (see datadns.stack.SecantusDB).
        self.cache = cache
        self.storage = ':memory:' if storage == 'memory' else self.home / 'db'
        self.settings = settings or {}
        self.keep = keep
        self.db = None
        self.fed = None

    @classmethod
    def fromArgs(cls, args):
        """The central as :func:`addCentralArguments`' options describe it."""
        return cls(mode=args.mode, storage=args.storage, cache=args.db_cache)

    @staticmethod
    def describe(args):
        """Those options, for a benchmark's ``config``."""
        return {'storage': args.storage, 'db_cache': args.db_cache, 'girder_mode': args.mode}

    def start(self):
        log(
            f'starting SecantusDB ({self.storage}, {self.cache} cache) and the central Girder '
            f'({self.mode} mode)'
        )
        self.db = stack.SecantusDB(
            storage=self.storage, logDir=self.home / 'logs', cacheSize=self.cache
        ).start()
        self.fed = Federation(
            self.db.uri,
            self.home,
            sites=(),
            dbPrefix='bench',
            centralSettings=self.settings,
            env={'GIRDER_SERVER_MODE': self.mode},
            withSampleData=False,
        )
        self.fed.start()
        log(f'central up at {self.apiUrl}')
        return self

    def stop(self):
        if self.fed is not None:
            self.fed.stop()
        if self.db is not None:
            self.db.stop()
        if not self.keep:
            shutil.rmtree(self.home, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()

    @property
    def girder(self):
        return self.fed.girders['central']

    @property
    def apiUrl(self):
        return self.girder.apiUrl

    @property
    def client(self):
        """girder-client logged in as the admin."""
        return self.fed.clients['central']

    @property
    def apiKey(self):
        """An admin API key at the central (a registrar)."""
        return self.fed.keys['central']

    @property
    def dbName(self):
        return self.girder.dbName

    def mongo(self):
        import pymongo

        return pymongo.MongoClient(self.db.uri)[self.dbName]

    def serverProcess(self):
        """The process that serves requests (uvicorn's worker when the reloader runs)."""
        root = psutil.Process(self.girder.proc.pid)
        for child in root.children(recursive=True):
            if 'spawn_main' in ' '.join(child.cmdline()):
                return child
        return root


class Resources:
    """CPU seconds and resident memory of a process tree, sampled in the background."""

    def __init__(self, process, interval=0.2):
        self.process = process
        self.interval = interval
        self.peakRss = 0
        self._phasePeak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _tree(self):
        procs = [self.process]
        with contextlib.suppress(psutil.Error):
            procs += self.process.children(recursive=True)
        return procs

    def rss(self):
        total = 0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpuSeconds(self):
        total = 0.0
        for proc in self._tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def vmHwm(self):
        """Peak RSS of the serving process since it started (kernel's VmHWM), in MiB."""
        try:
            for line in Path(f'/proc/{self.process.pid}/status').read_text().splitlines():
                if line.startswith('VmHWM:'):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            return None
        return None

    def _run(self):
        while not self._stop.wait(self.interval):
            value = self.rss()
            self.peakRss = max(self.peakRss, value)
            self._phasePeak = max(self._phasePeak, value)

    def start(self):
        self.peakRss = self._phasePeak = self.rss()
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(2)

    def phase(self):
        """Start a measured phase: returns a function that gives its (cpu seconds, peak MiB)."""
        cpu0 = self.cpuSeconds()
        self._phasePeak = self.rss()

        def done():
            self._phasePeak = max(self._phasePeak, self.rss())
            return self.cpuSeconds() - cpu0, round(self._phasePeak / 2**20, 1)

        return done

    def summary(self):
        return {
            'server_pid': self.process.pid,
            'server_peak_rss_mib_sampled': round(self.peakRss / 2**20, 1),
            'server_vmhwm_mib': self.vmHwm(),
            'server_rss_mib_now': round(self.rss() / 2**20, 1),
        }


def load(urlFor, clients, perClient, timeLimit, watch=None, label=''):
    """Send ``clients * perClient`` GETs from ``clients`` threads with keep-alive sessions.

    ``urlFor(clientIndex, requestIndex)`` gives each URL. Each client stops early
    when ``timeLimit`` seconds have passed. Returns throughput, latency
    percentiles, errors, the raw latencies, and the CPU used by this process and by
    each ``watch`` entry (name -> :class:`Resources`), as a percentage of one core.
    """
    watch = watch or {}
    start = threading.Barrier(clients + 1)
    deadline = [None]
    me = psutil.Process()

    def client(index):
        session = requests.Session()
        latencies, errors, statuses = [], 0, {}
        try:
            start.wait(30)
            for n in range(perClient):
                if time.monotonic() > deadline[0]:
                    break
                url = urlFor(index, n)
                t0 = time.perf_counter()
                try:
                    resp = session.get(url, timeout=30)
                    resp.content  # noqa: B018 - read the whole body
                    ok = resp.status_code == 200
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                except requests.RequestException:
                    ok = False
                latency = time.perf_counter() - t0
                if ok:
                    latencies.append(latency)
                else:
                    errors += 1
        finally:
            session.close()
        return latencies, errors, statuses

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(client, i) for i in range(clients)]
        clientCpu0 = sum(me.cpu_times()[:2])
        watchCpu0 = {name: res.cpuSeconds() for name, res in watch.items()}
        deadline[0] = time.monotonic() + timeLimit
        start.wait(30)
        t0 = time.perf_counter()
        results = [f.result() for f in futures]
        elapsed = time.perf_counter() - t0
        clientCpu = sum(me.cpu_times()[:2]) - clientCpu0
        watchCpu = {name: res.cpuSeconds() - watchCpu0[name] for name, res in watch.items()}
    latencies = sorted(x for r in results for x in r[0])
    errors = sum(r[1] for r in results)
    statuses = {}
    for r in results:
        for code, count in r[2].items():
            statuses[str(code)] = statuses.get(str(code), 0) + count
    out = {
        'requests': len(latencies) + errors,
        'errors': errors,
        'statuses': statuses,
        'seconds': round(elapsed, 3),
        'rps': round(len(latencies) / elapsed, 1) if elapsed else None,
        'p50_ms': ms(percentile(latencies, 50)),
        'p99_ms': ms(percentile(latencies, 99)),
        'client_cpu_pct': round(100 * clientCpu / elapsed, 1),
        'cpu_pct': {name: round(100 * cpu / elapsed, 1) for name, cpu in watchCpu.items()},
        'timed_out': elapsed >= timeLimit,
        'latencies': latencies,
    }
    if label:
        others = '  '.join(f'{name} cpu {pct}%' for name, pct in out['cpu_pct'].items())
        log(
            f'  {label:<8} {out["rps"]:>8} req/s  p50 {out["p50_ms"]} ms  '
            f'p99 {out["p99_ms"]} ms  errors {errors}  client cpu {out["client_cpu_pct"]}%  '
            f'{others}'
        )
    return out


def median(values):
    values = [v for v in values if v is not None]
    return round(statistics.median(values), 3) if values else None


def machine():
    return {
        'cpus': os.cpu_count(),
        'load_avg_1m_at_start': round(os.getloadavg()[0], 2),
        'python': sys.version.split()[0],
    }
