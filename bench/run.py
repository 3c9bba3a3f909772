"""Benchmark batch runs: what a run through the plugin costs over running the command bare.

    python bench/run.py [--quick] [--runs 10] [--only process,docker,slurm] [--skip-docker]
                        [--poll-ms 20]

Starts SecantusDB and a Girder with the plugin (``common.Central``), imports a
sample dataset (``datadns.sample``) and times the same short command (it counts
the rows of the dataset's tables into a file of ``$RESULTS_DIR``) two ways,
alternating so that drift on a loaded machine hits both alike:

- ``plugin``: ``POST /run?folderId=&command=&fresh=true`` until ``GET /run/{id}``
  (polled every ``--poll-ms``) says ``succeeded``: the submission, the sandbox's
  start, the command, the run's end noticed and its results uploaded into Girder;
- ``bare``: the same command in the same sandbox started by hand, with nothing
  else: ``bwrap`` with the process backend's own run arguments
  (``sandbox.run_bwrap_args``) for ``process``; for ``docker``, ``containers.run``
  of the run image through the Docker API (Podman here), dataset mounted
  read-only and a results directory writable, no network, polled every 20 ms
  until it exited (as the backend polls its runs); for ``slurm``, ``sbatch`` of
  the same bwrap command line (an argument list handed to a two-line job
  script, never a shell string), its state polled with ``scontrol show job``
  every 20 ms until the job has ended.

Each backend's first run is a warm-up, not counted. ``overhead_p50_ms`` is the
plugin's p50 minus the bare p50: what submitting through Girder adds to a run,
whatever the command. Target: at most 1 s at p50 on each backend (the
command itself is tens of milliseconds, so a ratio says little; both are
reported). The last line of stdout is the JSON result.
"""

import argparse
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import log  # noqa: E402

from datadns import sample  # noqa: E402
from datadns.federation import setSettings  # noqa: E402

PHASES = ('process', 'docker', 'slurm')
TARGET_OVERHEAD_MS = 1000
DEFAULT_SOCKET = '/run/datadns/podman.sock'
IMAGE = 'localhost/datadns-notebook:latest'
COMMAND = 'wc -l "$DATASET_DIR"/*.csv > "$RESULTS_DIR/row-counts.txt"; echo counted'
FINAL = ('succeeded', 'failed', 'cancelled')
POLL = 0.02  # seconds between two looks at a bare container or job
#: A bare Slurm job not ended yet (the slurm backend, too, waits out COMPLETING).
WAITING_STATES = ('PENDING', 'CONFIGURING', 'RUNNING', 'COMPLETING')


def parseArgs():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 runs each, a smoke run')
    parser.add_argument('--runs', type=int, help='timed runs per phase (default 10)')
    parser.add_argument('--skip-docker', action='store_true', help='process backend only')
    parser.add_argument(
        '--only', default=','.join(PHASES), help=f'comma-separated phases of {",".join(PHASES)}'
    )
    parser.add_argument(
        '--poll-ms', type=float, default=20, help='milliseconds between two GET /run/{id}'
    )
    parser.add_argument('--run-timeout', type=float, default=120, help='seconds per run')
    parser.add_argument('--time-limit', type=float, help='seconds for the whole benchmark')
    args = parser.parse_args()
    args.only = {phase.strip() for phase in args.only.split(',') if phase.strip()}
    if not args.only or args.only - set(PHASES):
        parser.error(f'--only takes a comma-separated list of {", ".join(PHASES)}')
    if args.runs is None:
        args.runs = 3 if args.quick else 10
    if not 1 <= args.runs <= 100:
        parser.error(f'--runs {args.runs} is out of range 1..100')
    if args.time_limit is None:
        args.time_limit = 600 if args.quick else 1800
    return args


def http():
    import requests

    session = requests.Session()
    session.trust_env = False  # everything runs on this machine: no proxy
    return session


class Person:
    """A Girder user submitting runs through the REST API."""

    def __init__(self, apiUrl, token, poll):
        self.apiUrl = apiUrl
        self.poll = poll
        self.session = http()
        self.session.headers['Girder-Token'] = token

    def run(self, folderId, timeout):
        """Submit a fresh run of COMMAND and wait until it ended; (seconds, run)."""
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        resp = self.session.post(
            f'{self.apiUrl}/run',
            params={'folderId': folderId, 'fresh': 'true'},
            data={'command': COMMAND},
        )
        if resp.status_code not in (200, 201):
            raise RuntimeError(f'POST /run answered {resp.status_code}: {resp.text[:300]}')
        run = resp.json()
        while run['status'] not in FINAL:
            if time.monotonic() > deadline:
                raise RuntimeError(f'run stuck at {run["status"]}')
            time.sleep(self.poll)
            resp = self.session.get(f'{self.apiUrl}/run/{run["_id"]}')
            resp.raise_for_status()
            run = resp.json()
        seconds = time.perf_counter() - t0
        if run['status'] != 'succeeded':
            raise RuntimeError(f'run ended {run["status"]}: {run.get("reason")}')
        return seconds, run


class BareBwrap:
    """COMMAND in the process backend's run sandbox, started by hand (no Girder)."""

    def __init__(self, dataPath, workRoot):
        from girder_resolver.launcher import RUN_DATASET_DIR, RUN_RESULTS_DIR, sandbox

        self.sandbox = sandbox
        self.dataPath = dataPath
        self.workRoot = Path(workRoot)
        self.dirs = (RUN_DATASET_DIR, RUN_RESULTS_DIR)
        self.bwrap = shutil.which('bwrap')
        if self.bwrap is None:
            raise RuntimeError('bwrap (Debian: bubblewrap) is not installed')

    def once(self, timeout):
        run = self.workRoot / secrets.token_hex(4)
        home, results = run / 'home', run / 'results'
        home.mkdir(parents=True)
        results.mkdir()
        # The sandbox runs as nobody: its results directory must be writable to it.
        results.chmod(0o777)
        dataDir, resultsDir = self.dirs
        env = {
            'PATH': '/usr/local/bin:/usr/bin:/bin',
            'HOME': self.sandbox.RUN_HOME,
            'DATASET_DIR': dataDir,
            'RESULTS_DIR': resultsDir,
        }
        args = self.sandbox.run_bwrap_args(
            str(home), self.dataPath, str(results), dataDir, resultsDir, (), env, self.bwrap
        ) + ['bash', '-c', COMMAND]
        t0 = time.perf_counter()
        try:
            done = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
            seconds = time.perf_counter() - t0
            if done.returncode != 0 or not (results / 'row-counts.txt').is_file():
                raise RuntimeError(
                    f'bare bwrap run failed ({done.returncode}): {done.stderr[-300:]!r}'
                )
            return seconds
        finally:
            shutil.rmtree(run, ignore_errors=True)


class BareDocker:
    """COMMAND in the run image, started with the docker SDK's ``containers.run`` and waited
    for: the dataset read-only, a results directory writable, no network."""

    def __init__(self, dataPath, image, workRoot):
        import docker

        self.docker = docker
        self.client = docker.from_env(version='auto')
        self.dataPath = dataPath
        self.image = image
        self.workRoot = Path(workRoot)

    def once(self, timeout):
        Mount = self.docker.types.Mount
        results = self.workRoot / secrets.token_hex(4)
        results.mkdir(parents=True)
        results.chmod(0o777)
        t0 = time.perf_counter()
        container = self.client.containers.run(
            self.image,
            command=['bash', '-c', COMMAND],
            environment={'DATASET_DIR': '/data', 'RESULTS_DIR': '/results'},
            mounts=[
                Mount('/data', self.dataPath, type='bind', read_only=True),
                Mount('/results', str(results), type='bind'),
            ],
            network_mode='none',
            labels={'datadns.bench': '1'},
            detach=True,
        )
        try:
            # Polled as the docker backend's run_state does (Podman answers a blocking
            # wait() late, which would count against the baseline).
            deadline = time.monotonic() + timeout
            while True:
                container.reload()
                if container.status in ('exited', 'stopped', 'dead'):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError('bare container run did not end in time')
                time.sleep(POLL)
            seconds = time.perf_counter() - t0
            code = (container.attrs.get('State') or {}).get('ExitCode')
            if code != 0 or not (results / 'row-counts.txt').is_file():
                raise RuntimeError(f'bare container run failed: exit code {code}')
            return seconds
        finally:
            container.remove(force=True)
            shutil.rmtree(results, ignore_errors=True)


class BareSbatch(BareBwrap):
    """COMMAND in the process backend's run sandbox as a Slurm job submitted by hand."""

    def once(self, timeout):
        run = self.workRoot / secrets.token_hex(4)
        home, results = run / 'home', run / 'results'
        home.mkdir(parents=True)
        results.mkdir()
        results.chmod(0o777)
        script = run / 'job.sh'
        script.write_text('#!/bin/sh\nexec "$@"\n')
        script.chmod(0o755)
        dataDir, resultsDir = self.dirs
        env = {
            'PATH': '/usr/local/bin:/usr/bin:/bin',
            'HOME': self.sandbox.RUN_HOME,
            'DATASET_DIR': dataDir,
            'RESULTS_DIR': resultsDir,
        }
        args = self.sandbox.run_bwrap_args(
            str(home), self.dataPath, str(results), dataDir, resultsDir, (), env, self.bwrap
        ) + ['bash', '-c', COMMAND]
        t0 = time.perf_counter()
        try:
            submitted = subprocess.run(
                ['sbatch', '--parsable', f'--output={run}/job.log', f'--chdir={run}', str(script)]
                + args,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
            if submitted.returncode != 0:
                raise RuntimeError(f'sbatch failed: {submitted.stderr.strip()[:300]}')
            jobId = submitted.stdout.strip().split(';')[0]
            deadline = time.monotonic() + timeout
            while True:
                shown = subprocess.run(
                    ['scontrol', 'show', 'job', '-o', jobId],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout
                state = re.search(r'JobState=(\S+)', shown)
                if state and state.group(1) not in WAITING_STATES:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f'job {jobId} did not end in time')
                time.sleep(POLL)
            seconds = time.perf_counter() - t0
            if state.group(1) != 'COMPLETED' or not (results / 'row-counts.txt').is_file():
                raise RuntimeError(f'bare sbatch run ended {state.group(1)}')
            return seconds
        finally:
            shutil.rmtree(run, ignore_errors=True)


def slurmUnavailable():
    """Why the slurm phase cannot run here, or None."""
    if shutil.which('sbatch') is None or shutil.which('sinfo') is None:
        return 'Slurm is not installed (scripts/slurm.sh start sets up a one-node cluster)'
    shown = subprocess.run(['sinfo', '-h', '-o', '%T'], capture_output=True, text=True)
    if shown.returncode != 0 or not any(
        state.strip('*~#') in ('idle', 'mixed', 'allocated') for state in shown.stdout.split()
    ):
        return f'no Slurm node is up ({(shown.stdout or shown.stderr).strip()[:200]})'
    return None


def dockerUnavailable(image):
    """Why the docker phase cannot run here, or None."""
    try:
        import docker

        client = docker.from_env(version='auto', timeout=10)
        client.ping()
        client.images.get(image)
    except Exception as exc:  # noqa: BLE001 - any failure means: skip docker
        return f'{type(exc).__name__}: {str(exc)[:200]}'
    return None


def summary(seconds, errors=0):
    values = sorted(seconds)
    return {
        'n': len(values),
        'errors': errors,
        'p50_ms': common.ms(common.percentile(values, 50)),
        'p90_ms': common.ms(common.percentile(values, 90)),
        'min_ms': common.ms(values[0]) if values else None,
        'max_ms': common.ms(values[-1]) if values else None,
    }


def pluginVersusBare(name, person, folderId, bare, args):
    """Alternate runs through the plugin with bare runs; their summaries and the overhead."""
    plugin, baseline, errors = [], [], {'plugin': 0, 'bare': 0}
    person.run(folderId, args.run_timeout)  # warm-up
    for n in range(args.runs):
        try:
            plugin.append(person.run(folderId, args.run_timeout)[0])
        except Exception as exc:  # noqa: BLE001 - count it and go on
            errors['plugin'] += 1
            log(f'  {name} plugin run failed: {str(exc)[:300]}')
        try:
            baseline.append(bare.once(args.run_timeout))
        except Exception as exc:  # noqa: BLE001
            errors['bare'] += 1
            log(f'  {name} bare run failed: {str(exc)[:300]}')
        log(
            f'  {name} {n + 1}/{args.runs}: plugin '
            f'{common.ms(plugin[-1]) if plugin else "-"} ms, '
            f'bare {common.ms(baseline[-1]) if baseline else "-"} ms'
        )
    out = {'plugin': summary(plugin, errors['plugin']), 'bare': summary(baseline, errors['bare'])}
    p, b = out['plugin']['p50_ms'], out['bare']['p50_ms']
    out['plugin_vs_bare_p50'] = round(p / b, 3) if p and b else None
    out['overhead_p50_ms'] = round(p - b, 1) if p and b else None
    return out


def main():
    args = parseArgs()
    if 'DOCKER_HOST' not in os.environ and os.path.exists(DEFAULT_SOCKET):
        # Girder inherits this environment: its docker backend needs the same engine.
        os.environ['DOCKER_HOST'] = f'unix://{DEFAULT_SOCKET}'
    started = time.time()
    result = {
        'benchmark': 'run',
        'machine': common.machine(),
        'config': {
            'runs_per_phase': args.runs,
            'phases': [phase for phase in PHASES if phase in args.only],
            'quick': args.quick,
            'poll_interval_ms': args.poll_ms,
            'command': COMMAND,
            'image': IMAGE,
            'measured': 'POST /run (fresh) until GET /run/{id} says succeeded (results '
            'uploaded), against the same command in the same sandbox started by hand',
        },
    }
    settings = {'resolver.backend': 'process'}
    dockerSkip = 'skipped (--skip-docker)' if args.skip_docker else dockerUnavailable(IMAGE)
    with (
        common.interruptible(args.time_limit),
        common.Central(settings=settings) as central,
    ):
        resources = common.Resources(central.serverProcess()).start()
        try:
            gc = central.client
            assetstore = sample.ensureAssetstore(gc, central.home / 'assetstore')
            collection = sample.ensureCollection(gc, 'Sample datasets')
            name, identifier, description = sample.SHARED_DATASET
            directory = sample.writeDataset(
                central.home / 'data' / 'turbulence', name, identifier, description
            )
            folder = sample.importDataset(
                gc, assetstore, collection, directory, name, identifier, description
            )
            person = Person(central.apiUrl, gc.token, args.poll_ms / 1000)
            work = Path(tempfile.mkdtemp(prefix='datadns-bench-run-', dir=central.home))
            log(f'dataset "{name}" imported')
            if 'process' in args.only:
                log('process backend: runs through the plugin against bare bwrap runs')
                result['process'] = pluginVersusBare(
                    'process', person, folder['_id'], BareBwrap(str(directory), work), args
                )
            if 'docker' not in args.only:
                pass
            elif dockerSkip:
                log(f'docker backend skipped: {dockerSkip}')
                result['docker'] = {'skipped': dockerSkip}
            else:
                log('docker backend: runs through the plugin against bare containers.run')
                setSettings(gc, {'resolver.backend': 'docker'})
                result['docker'] = pluginVersusBare(
                    'docker', person, folder['_id'], BareDocker(str(directory), IMAGE, work), args
                )
                setSettings(gc, {'resolver.backend': 'process'})
            slurmSkip = slurmUnavailable() if 'slurm' in args.only else None
            if 'slurm' not in args.only:
                pass
            elif slurmSkip:
                log(f'slurm backend skipped: {slurmSkip}')
                result['slurm'] = {'skipped': slurmSkip}
            else:
                log('slurm backend: runs through the plugin against bare sbatch runs')
                setSettings(gc, {'resolver.backend': 'slurm'})
                result['slurm'] = pluginVersusBare(
                    'slurm', person, folder['_id'], BareSbatch(str(directory), work), args
                )
                setSettings(gc, {'resolver.backend': 'process'})
        except (common.OutOfTime, RuntimeError) as exc:
            log(f'stopped: {exc}')
            result['error'] = str(exc)
        finally:
            resources.stop()
        result['resources'] = resources.summary()
        result['girder_peak_rss_mib'] = result['resources']['server_vmhwm_mib']

    targets = {}
    errors = 0
    for backend in PHASES:
        phase = result.get(backend) or {}
        if backend not in args.only:
            continue
        if 'skipped' in phase:
            targets[f'{backend}_overhead_p50_ms'] = {'value': None, 'target': 'not measured'}
            continue
        errors += sum(phase.get(k, {}).get('errors', 0) for k in ('plugin', 'bare'))
        value = phase.get('overhead_p50_ms')
        targets[f'{backend}_overhead_p50_ms'] = {
            'value': value,
            'target': f'<= {TARGET_OVERHEAD_MS}',
            'met': value is not None and value <= TARGET_OVERHEAD_MS,
        }
    result['targets'] = targets
    result['errors'] = errors
    result['all_targets_met'] = (
        all(t.get('met', False) for t in targets.values() if t['target'] != 'not measured')
        and errors == 0
        and 'error' not in result
    )
    result['seconds'] = round(time.time() - started, 1)
    common.emit(result)
    return 0 if result['all_targets_met'] else 1


if __name__ == '__main__':
    sys.exit(main())
