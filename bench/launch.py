"""Benchmark notebook launches: ``POST /notebook`` to a notebook that answers.

    python bench/launch.py [--quick] [--launches 10] [--concurrent 10] [--pool-size 2]
                           [--only process,concurrent,pooled,docker,slurm,failover]
                           [--skip-docker]
                           [--follow events|poll] [--poll-ms 20]

Starts SecantusDB and a Girder with the plugin (``common.Central``), imports a
sample dataset (``datadns.sample``) through a filesystem assetstore, and times,
from ``POST /notebook`` until ``GET /notebook/{id}`` says ``running`` *and*
a browser-like session that opens the notebook's single-use ``url`` (a cookie
and a 303 to ``/notebook/<id>/``) gets 200 from ``api/status`` through the
site's front door:

- ``process``: cold launches with the (sandboxed) process backend, one at a
  time, each stopped after; against the same ``jupyter_server`` started by the
  process launcher without a sandbox (``allow_unsandboxed``, no bubblewrap; its
  config file, arguments and socket) and without Girder, timed from ``start()``
  to the first 200 from ``api/status``;
- ``docker``: cold launches with the docker backend; against a bare Docker-API
  start of the same image (docker SDK ``containers.run``, same arguments and
  mounts) to the first 200 from ``api/status``;
- ``slurm``: cold launches with the slurm backend (each notebook a batch job of
  the one-node cluster that ``scripts/slurm.sh`` runs: the sandboxed server on a
  Unix socket and the job's TCP forwarder); against a bare ``sbatch`` of the same
  ``jupyter_server`` (the default tool's, with the launcher's config file and
  arguments, no sandbox, no forwarder, listening on a TCP port itself), timed from
  ``sbatch`` to the first 200 from ``api/status``; both wait for Slurm's scheduler;
- ``concurrent``: ``--concurrent`` people launching at the same moment
  (process backend);
- ``pooled``: launches served by the warm pool (``resolver.pool_size``), each
  taken once the pool has refilled, so that every one is a claim;
- ``failover``: federated launches (``POST /resolve/launch`` at a central with
  two sites holding the dataset, process backend) while the first-ranked site's
  Girder is frozen (SIGSTOP), alternating with launches while it answers; the
  extra time of a failover is what ``resolver.site_connect_timeout`` (2 s)
  costs;
- ``tools``: cold starts of each default tool (``python``, ``scientific-python``,
  ``r``; JupyterLab, built by ``scripts/build-tools.sh``) through the launcher
  (``start()`` until ``api/status`` answers 200 to the token, no Girder), on the
  process and the docker backend, alternating with the backend's default server
  (no tool: the classic notebook UI of Girder's own environment, or of the
  notebook image): ``<tool>_vs_default_p50`` is what a tool costs over it. A tool
  that is not built is reported as skipped, with the reason.

Cold and bare starts alternate, so that drift on a loaded machine hits both
alike; each backend's first launch is a warm-up, not counted (it makes the
backend's engine client, for instance). ``--only`` runs some of the phases.
The client follows a launch as the web page can: on ``GET /notebook/{id}/events``
(``--follow events``, the default), which sends each change as Girder writes it;
or by polling ``GET /notebook/{id}`` every ``--poll-ms`` (20) (``--follow
poll``), where each poll is work for Girder and the database that the bare start
does not cause. ``cold_server`` also gives each cold launch as its record saw it
(created until running), Girder's side without the client. Targets: pooled p50 <= 50 ms
through the front door; process cold p50 <= 1.15x the unsandboxed start's p50; docker cold
p50 <= 1.2x the bare container start's; slurm cold p50 <= 1.2x the bare sbatch's; a
failover launch's p50 at most the connect timeout plus 1 s above a normal federated launch's.
The last line of stdout is the JSON result.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bson import ObjectId

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import log  # noqa: E402

from datadns import sample, stack  # noqa: E402
from datadns.federation import setSettings  # noqa: E402

TARGETS = {
    # A pooled launch answers through the front door within 50 ms at p50 (issue 11).
    'pooled_p50_ms': 50,
    # A sandboxed cold launch within 1.15x of the same server started unsandboxed (issue 11).
    'process_cold_vs_bare': 1.15,
    # A kernel's execute round trip through the front door within 1.1x of the direct one.
    'kernel_front_door_vs_direct': 1.1,
    # A docker cold launch within 1.2x of starting the container by hand.
    'docker_cold_vs_bare': 1.2,
    # A slurm cold launch within 1.2x of a bare sbatch of the same server (issue 15).
    'slurm_cold_vs_bare': 1.2,
    # A federated launch (central to the site's front door) within 1.3x of the same launch
    # made at the site, cold; within 300 ms at p50 from the site's warm pool (issue 11).
    'federated_cold_vs_site': 1.3,
    'federated_pool_p50_ms': 300,
}
DEFAULT_SOCKET = '/run/datadns/podman.sock'
PHASES = (
    'process',
    'concurrent',
    'pooled',
    'kernel',
    'docker',
    'slurm',
    'federated',
    'failover',
    'tools',
)
#: resolver.site_connect_timeout at the failover phase's central (its default).
CONNECT_TIMEOUT = 2.0
POLL = 0.02  # seconds between two polls of the notebook and of api/status


def parseArgs():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--quick', action='store_true', help='3 launches each, a smoke run')
    parser.add_argument('--launches', type=int, help='launches per phase (default 10)')
    parser.add_argument('--concurrent', type=int, help='people launching at once (default 10)')
    parser.add_argument('--pool-size', type=int, default=2, help='resolver.pool_size when pooled')
    parser.add_argument('--skip-docker', action='store_true', help='process backend only')
    parser.add_argument(
        '--only',
        default=','.join(PHASES),
        help=f'comma-separated phases to run (default: all of {",".join(PHASES)})',
    )
    parser.add_argument(
        '--poll-ms',
        type=float,
        default=POLL * 1000,
        help='milliseconds between two GET /notebook/{id} while a launch is under way',
    )
    parser.add_argument(
        '--follow',
        choices=('events', 'poll'),
        default='events',
        help='how the client follows a launch: GET /notebook/{id}/events (as it happens) '
        'or polling GET /notebook/{id} every --poll-ms',
    )
    parser.add_argument('--launch-timeout', type=float, default=120, help='seconds per launch')
    parser.add_argument('--time-limit', type=float, help='seconds for the whole run')
    args = parser.parse_args()
    args.only = {phase.strip() for phase in args.only.split(',') if phase.strip()}
    if not args.only or args.only - set(PHASES):
        parser.error(f'--only takes a comma-separated list of {", ".join(PHASES)}')
    if args.launches is None:
        args.launches = 3 if args.quick else 10
    if args.concurrent is None:
        args.concurrent = 3 if args.quick else 10
    if args.time_limit is None:
        args.time_limit = 600 if args.quick else 1800
    for name, value, high in (
        ('launches', args.launches, 100),
        ('concurrent', args.concurrent, 30),
        ('pool-size', args.pool_size, 20),
    ):
        if not 1 <= value <= high:
            parser.error(f'--{name} {value} is out of range 1..{high}')
    return args


def http():
    import requests

    session = requests.Session()
    session.trust_env = False  # everything runs on this machine: no proxy
    return session


def waitAnswers(session, url, token, deadline, proc=None):
    """Poll ``url`` with the token until it answers 200."""
    import requests

    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f'the server exited with code {proc.returncode}')
        try:
            headers = {'Authorization': f'token {token}'} if token else {}
            resp = session.get(url, headers=headers, timeout=5)
            if resp.status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(POLL)
    raise RuntimeError(f'{url} did not answer in time')


class Person:
    """A Girder user with a token, launching through the REST API."""

    def __init__(self, apiUrl, token, poll=POLL, follow='events'):
        self.apiUrl = apiUrl
        self.token = token
        self.poll = poll
        self.follow = follow
        self.session = http()
        self.session.headers['Girder-Token'] = token
        self.lastSteps = {}

    def launch(self, folderId, timeout):
        """Launch and wait until the notebook answers; (seconds, notebook)."""
        return self._timed('notebook', {'folderId': folderId}, timeout)

    def resolveLaunch(self, identifier, timeout, site=None):
        """Launch through ``POST /resolve/launch`` (at a central: at a site holding the data)."""
        params = {'id': identifier, **({'site': site} if site else {})}
        return self._timed('resolve/launch', params, timeout)

    def _timed(self, path, params, timeout):
        t0 = time.perf_counter()
        deadline = time.monotonic() + timeout
        resp = self.session.post(f'{self.apiUrl}/{path}', params=params)
        resp.raise_for_status()
        nb = resp.json()
        tPost = time.perf_counter()
        if self.follow == 'events' and nb['status'] != 'running':
            nb = self._events(nb, deadline)
        while nb['status'] != 'running':
            if nb['status'] in ('stopped', 'error'):
                raise RuntimeError(f'launch ended {nb["status"]}: {nb["message"]}')
            if time.monotonic() > deadline:
                raise RuntimeError(f'launch stuck at {nb["status"]}: {nb["message"]}')
            time.sleep(self.poll)
            resp = self.session.get(f'{self.apiUrl}/notebook/{nb["_id"]}')
            resp.raise_for_status()
            nb = resp.json()
        # What a browser does: open the single-use link (a cookie and a 303), then the
        # notebook answers through the front door.
        tRunning = time.perf_counter()
        browser = http()
        opened = browser.get(nb['url'], allow_redirects=False, timeout=10)
        if opened.status_code != 303:
            raise RuntimeError(f'the open link answered {opened.status_code}: {opened.text[:200]}')
        tOpened = time.perf_counter()
        waitAnswers(browser, opened.headers['Location'] + 'api/status', None, deadline)
        end = time.perf_counter()
        # Where the time went, as the client saw it.
        self.lastSteps = {
            'post': tPost - t0,
            'until_running': tRunning - tPost,
            'open_link': tOpened - tRunning,
            'first_answer': end - tOpened,
        }
        return end - t0, nb

    def _events(self, nb, deadline):
        """Follow the launch on its event stream; the notebook as its last event gave it."""
        with self.session.get(
            f'{self.apiUrl}/notebook/{nb["_id"]}/events',
            stream=True,
            timeout=max(1.0, deadline - time.monotonic()),
        ) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines(chunk_size=None):
                if line.startswith(b'data: '):
                    event = json.loads(line[6:])
                    if 'status' in event:
                        nb = event
                    if nb['status'] == 'running' or nb['status'] in ('stopped', 'error'):
                        break
        return nb

    def stop(self, nb):
        self.session.delete(f'{self.apiUrl}/notebook/{nb["_id"]}').raise_for_status()


def people(central, count, poll=POLL, follow='events'):
    """``count`` ordinary users, each with a login token."""
    import girder_client

    gc = central.client
    out = []
    for n in range(count):
        login, password = f'bench{n}', secrets.token_urlsafe(12)
        gc.post(
            'user',
            parameters={
                'login': login,
                'password': password,
                'email': f'{login}@example.invalid',
                'firstName': 'Bench',
                'lastName': str(n),
            },
        )
        client = girder_client.GirderClient(apiUrl=central.apiUrl)
        client.authenticate(login, password)
        out.append(Person(central.apiUrl, client.token, poll, follow))
    return out


# -- baselines: the same server, started without Girder --------------------------


class BareProcess:
    """``jupyter_server`` with the process launcher's own config, arguments and socket, but
    no sandbox and no Girder: the baseline of a sandboxed cold launch."""

    def __init__(self, dataPath, workRoot):
        from girder_resolver.launcher import LaunchSpec, ProcessLauncher

        # A bubblewrap that does not exist, and permission to run without it.
        self.launcher = ProcessLauncher(
            work_root=str(workRoot), bwrap='/nonexistent/bwrap', allow_unsandboxed=True
        )
        self.dataPath = dataPath
        self.LaunchSpec = LaunchSpec

    def once(self, timeout):
        token = secrets.token_urlsafe(24)
        spec = self.LaunchSpec(f'bare-{secrets.token_hex(4)}', token, self.dataPath, 'data')
        t0 = time.perf_counter()
        handle = self.launcher.start(spec)
        try:
            self.launcher.wait_ready(handle, timeout=timeout, token=token)
            return time.perf_counter() - t0
        finally:
            self.launcher.stop(handle)


class BareDocker:
    """The notebook image's jupyter_server started with the docker SDK's ``containers.run``.

    The baseline of the docker backend's sandbox: the launcher's own server
    options, but none of its confinement (default network and a published TCP
    port instead of no network and a Unix socket, the image's root user, no
    dropped capabilities, no read-only root, no limits but memory).
    """

    def __init__(self, dataPath, image, workRoot):
        import docker
        from girder_resolver.launcher import DockerLauncher, LaunchSpec

        self.docker = docker
        self.client = docker.from_env(version='auto')
        self.launcher = DockerLauncher(image=image)
        self.dataPath = dataPath
        self.image = image
        self.LaunchSpec = LaunchSpec
        self.workRoot = Path(workRoot)

    def once(self, timeout):
        from girder_resolver.launcher.docker import ETC_DIR

        token = secrets.token_urlsafe(24)
        spec = self.LaunchSpec(f'bare-{secrets.token_hex(4)}', token, self.dataPath, 'data')
        home = self.launcher.config['home']
        # The launcher's configuration file and arguments, so that both servers do the
        # same work; TCP rather than its socket.
        etc = self.workRoot / spec.notebook_id
        etc.mkdir(parents=True)
        for module in self.launcher.modules():
            shutil.copyfile(module.__file__, etc / os.path.basename(module.__file__))
        (etc / 'jupyter_server_config.py').write_text(self.launcher.server_config(spec))
        args = [
            arg for arg in self.launcher.server_args(spec) if not arg.startswith('--ServerApp.sock')
        ] + ['--ip=0.0.0.0', '--ServerApp.port=8888', '--allow-root']
        Mount = self.docker.types.Mount
        session = http()
        t0 = time.perf_counter()
        container = self.client.containers.run(
            self.image,
            command=args,
            environment={'PYTHONUNBUFFERED': '1'},
            mounts=[
                Mount(f'{home}/data', self.dataPath, type='bind', read_only=True),
                Mount(ETC_DIR, str(etc), type='bind', read_only=True),
            ],
            ports={'8888/tcp': ('127.0.0.1', None)},
            working_dir=home,
            mem_limit='1g',
            labels={'datadns.bench': '1'},
            detach=True,
        )
        try:
            deadline = time.monotonic() + timeout
            port = None
            while port is None and time.monotonic() < deadline:
                container.reload()
                bindings = (container.attrs['NetworkSettings']['Ports'] or {}).get('8888/tcp')
                if bindings:
                    port = int(bindings[0]['HostPort'])
                else:
                    time.sleep(POLL)
            if port is None:
                raise RuntimeError('the container published no port')
            waitAnswers(
                session, f'http://127.0.0.1:{port}{spec.base_url}api/status', token, deadline
            )
            return time.perf_counter() - t0
        finally:
            container.remove(force=True)
            shutil.rmtree(etc, ignore_errors=True)


class BareSbatch:
    """``jupyter_server`` submitted with a bare ``sbatch``: the baseline of a slurm launch.

    The process launcher's config file and arguments (unsandboxed), listening on a
    TCP port of its own (chosen free here: one node) instead of the sandbox's Unix
    socket and the job's forwarder; no Girder. The same sbatch options as the slurm
    backend's jobs (one task, its CPUs and memory, no exported environment).
    """

    def __init__(self, dataPath, workRoot):
        from girder_resolver import tools
        from girder_resolver.launcher import LaunchSpec, ProcessLauncher, SlurmLauncher

        self.launcher = ProcessLauncher(
            work_root=str(workRoot), bwrap='/nonexistent/bwrap', allow_unsandboxed=True
        )
        self.slurm = SlurmLauncher(mem_limit='1g')
        self.dataPath = dataPath
        self.LaunchSpec = LaunchSpec
        # The tool a launch gets by default (resolver.default_tool), so that both start
        # the same server (its environment, JupyterLab); none if it is not built here.
        default = {t['id']: t for t in tools.default_tools()}.get('python')
        self.tool = default if default and self.launcher.tool_ready(default)[0] else None

    def once(self, timeout):
        import subprocess

        token = secrets.token_urlsafe(24)
        spec = self.LaunchSpec(
            f'bare-{secrets.token_hex(4)}', token, self.dataPath, 'data', tool=self.tool
        )
        workDir = self.launcher.new_work_dir(spec.notebook_id)
        # The launcher's own server command line, bar its socket (a bench may reach in).
        args, env, cwd = self.launcher._prepare(spec, workDir, False, False)
        port = stack.freePort()
        args = [a for a in args if not a.startswith('--ServerApp.sock')] + [
            '--ServerApp.ip=127.0.0.1',
            f'--ServerApp.port={port}',
            '--ServerApp.port_retries=0',
        ]
        script = Path(workDir) / 'bare.sh'
        script.write_text('#!/bin/sh\nexec "$@"\n')
        script.chmod(0o700)
        argv = ['/usr/bin/env', '-i', *(f'{k}={v}' for k, v in sorted(env.items())), *args]
        sbatch = self.slurm.sbatch_args(f'bare-{spec.notebook_id}', workDir)
        session = http()
        t0 = time.perf_counter()
        submitted = subprocess.run(
            [*sbatch, str(script), *argv], capture_output=True, text=True, cwd='/'
        )
        jobId = submitted.stdout.strip().split(';')[0]
        try:
            if submitted.returncode != 0:
                raise RuntimeError(f'sbatch failed: {submitted.stderr.strip()}')
            waitAnswers(
                session,
                f'http://127.0.0.1:{port}{spec.base_url}api/status',
                token,
                time.monotonic() + timeout,
            )
            return time.perf_counter() - t0
        finally:
            if jobId:
                self.slurm.stop({'jobId': jobId, 'notebookId': spec.notebook_id})
            self.launcher.stop({'notebookId': spec.notebook_id, 'workDir': workDir})


def slurmUnavailable():
    """Why the slurm phase cannot run here (Slurm does not answer), or None."""
    import subprocess

    try:
        state = subprocess.run(['sinfo', '-h', '-N', '-o', '%T'], capture_output=True, text=True)
    except OSError as exc:
        return str(exc)
    if state.returncode != 0 or not state.stdout.split():
        return f'Slurm does not answer (run scripts/slurm.sh start): {state.stderr.strip()}'
    return None


def dockerUnavailable(image):
    """Why the docker phases cannot run here, or None."""
    try:
        import docker

        client = docker.from_env(version='auto', timeout=10)
        client.ping()
        client.images.get(image)
    except Exception as exc:  # noqa: BLE001 - any failure means: skip docker
        return f'{type(exc).__name__}: {str(exc)[:200]}'
    return None


# -- phases ----------------------------------------------------------------------


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


def serverSeconds(db, nb):
    """Seconds from the notebook record's creation to its last update (to running)."""
    record = db['resolver_notebook'].find_one(
        {'_id': ObjectId(nb['_id'])}, {'created': True, 'updated': True, 'status': True}
    )
    if not record or record.get('status') != 'running':
        return None
    return (record['updated'] - record['created']).total_seconds()


def coldVersusBare(name, person, folderId, bare, args, db):
    """Alternate cold launches through Girder with bare starts; the summaries.

    ``cold_server`` is the same cold launches as the notebook record saw them
    (created until set running): Girder's side, without the client's requests
    and polling.
    """
    cold, server, baseline, errors = [], [], [], {'cold': 0, 'bare': 0}
    for n in range(args.launches):
        try:
            seconds, nb = person.launch(folderId, args.launch_timeout)
            cold.append(seconds)
            onServer = serverSeconds(db, nb)
            if onServer is not None:
                server.append(onServer)
            person.stop(nb)
        except Exception as exc:  # noqa: BLE001 - count it and go on
            errors['cold'] += 1
            log(f'  {name} cold launch failed: {str(exc)[:300]}')
        try:
            baseline.append(bare.once(args.launch_timeout))
        except Exception as exc:  # noqa: BLE001
            errors['bare'] += 1
            log(f'  {name} bare start failed: {str(exc)[:300]}')
        log(
            f'  {name} {n + 1}/{args.launches}: cold {common.ms(cold[-1]) if cold else "-"} ms, '
            f'bare {common.ms(baseline[-1]) if baseline else "-"} ms'
        )
    out = {
        'cold': summary(cold, errors['cold']),
        'cold_server': summary(server),
        'bare': summary(baseline, errors['bare']),
    }
    c, b = out['cold']['p50_ms'], out['bare']['p50_ms']
    out['cold_vs_bare_p50'] = round(c / b, 3) if c and b else None
    return out


def warmUp(central, person, folderId, args):
    """One launch, not counted, then stop every notebook of ``person``."""
    person.launch(folderId, args.launch_timeout)
    for nb in person.session.get(f'{central.apiUrl}/notebook').json():
        person.stop(nb)


def concurrentLaunches(persons, folderId, args):
    """Everyone launches at once; per-launch times and the wall time until all answer."""
    barrier = threading.Barrier(len(persons))

    def one(person):
        barrier.wait(30)
        return person.launch(folderId, args.launch_timeout)

    t0 = time.perf_counter()
    results, errors = [], 0
    with ThreadPoolExecutor(len(persons)) as executor:
        futures = [executor.submit(one, p) for p in persons]
        for person, future in zip(persons, futures, strict=True):
            try:
                results.append((person, *future.result()))
            except Exception as exc:  # noqa: BLE001
                errors += 1
                log(f'  concurrent launch failed: {str(exc)[:300]}')
    wall = time.perf_counter() - t0
    for person, _, nb in results:
        person.stop(nb)
    out = summary([seconds for _, seconds, _ in results], errors)
    out['people'] = len(persons)
    out['wall_ms'] = common.ms(wall)
    return out


def waitPool(db, size, timeout):
    deadline = time.monotonic() + timeout
    coll = db['resolver_notebook_pool']
    while time.monotonic() < deadline:
        if (
            coll.count_documents({'status': 'ready'}) == size
            and coll.count_documents({'status': {'$ne': 'ready'}}) == 0
        ):
            return
        time.sleep(0.1)
    raise RuntimeError(f'the pool did not reach {size} ready servers in {timeout} s')


def claimSteps(central):
    """``{step: (count, seconds)}`` of Girder's ``datadns_pool_claim_step_seconds``."""
    text = central.client.get('resolver/metrics', jsonResp=False).text
    out = {}
    for line in text.splitlines():
        for kind in ('sum', 'count'):
            prefix = f'datadns_pool_claim_step_seconds_{kind}{{step="'
            if line.startswith(prefix):
                step = line[len(prefix) :].split('"', 1)[0]
                count, total = out.get(step, (0, 0.0))
                value = float(line.rsplit(' ', 1)[1])
                out[step] = (value, total) if kind == 'count' else (count, value)
    return out


def stepMeans(before, after):
    """Mean milliseconds of each claim step between two :func:`claimSteps` readings."""
    out = {}
    for step, (count, total) in after.items():
        c0, s0 = before.get(step, (0, 0.0))
        if count > c0:
            out[step] = round((total - s0) / (count - c0) * 1000, 2)
    return out


def pooledLaunches(central, person, folderId, args):
    """Launches served by the warm pool, each once the pool is full again; with where the
    time went: the client's requests (p50 of each) and Girder's claim steps (mean of each,
    from its metrics)."""
    db = central.mongo()
    setSettings(central.client, {'resolver.pool_size': args.pool_size})
    seconds, errors, fromPool = [], 0, 0
    steps = {}
    before = claimSteps(central)
    try:
        for n in range(args.launches):
            waitPool(db, args.pool_size, args.launch_timeout)
            try:
                took, nb = person.launch(folderId, args.launch_timeout)
            except Exception as exc:  # noqa: BLE001
                errors += 1
                log(f'  pooled launch failed: {str(exc)[:300]}')
                continue
            seconds.append(took)
            for step, value in person.lastSteps.items():
                steps.setdefault(step, []).append(value)
            record = db['resolver_notebook'].find_one({'_id': ObjectId(nb['_id'])}) or {}
            fromPool += bool(record.get('pooled'))
            person.stop(nb)
            log(f'  pooled {n + 1}/{args.launches}: {common.ms(took)} ms')
    finally:
        setSettings(central.client, {'resolver.pool_size': 0})
        waitPool(db, 0, 60)
    out = summary(seconds, errors)
    out['pool_size'] = args.pool_size
    out['served_from_pool'] = fromPool
    out['client_steps_p50_ms'] = {
        step: common.ms(common.percentile(sorted(values), 50)) for step, values in steps.items()
    }
    out['server_steps_mean_ms'] = stepMeans(before, claimSteps(central))
    return out


def _execute(ws, code='1 + 1'):
    """One execute request on a kernel's websocket, until the kernel is idle again."""
    msgId = secrets.token_hex(8)
    ws.send(
        json.dumps(
            {
                'header': {
                    'msg_id': msgId,
                    'username': 'bench',
                    'session': 'bench',
                    'msg_type': 'execute_request',
                    'version': '5.3',
                },
                'parent_header': {},
                'metadata': {},
                'content': {'code': code, 'silent': False, 'store_history': False},
                'channel': 'shell',
                'buffers': [],
            }
        )
    )
    while True:
        message = json.loads(ws.recv())
        if (
            message.get('parent_header', {}).get('msg_id') == msgId
            and message['header']['msg_type'] == 'status'
            and message['content']['execution_state'] == 'idle'
        ):
            return


def kernelRoundTrips(central, person, folderId, args):
    """Execute round trips in one kernel: through the front door (the browser's cookie)
    against straight at the server's Unix socket (its token), alternating."""
    import socket as socketModule

    import websocket

    db = central.mongo()
    _, nb = person.launch(folderId, args.launch_timeout)
    record = db['resolver_notebook'].find_one({'_id': ObjectId(nb['_id'])})
    handle, token = record['handle'], record['token']
    browser = http()
    url = person.session.get(f'{person.apiUrl}/notebook/{nb["_id"]}').json()['url']
    page = browser.get(url, timeout=30)  # the cookie, then the tool's UI (/lab or /tree)
    base = re.sub(r'(lab|tree)/?$', '', page.url)
    kernel = browser.post(
        f'{base}api/kernels', json={}, headers={'Authorization': f'token {token}'}, timeout=30
    ).json()['id']
    path = f'api/kernels/{kernel}/channels'
    origin = base.split('/notebook/')[0]
    cookie = '; '.join(f'{c.name}={c.value}' for c in browser.cookies)
    front = websocket.create_connection(
        base.replace('http://', 'ws://') + path, header=[f'Cookie: {cookie}'], origin=origin
    )
    sock = socketModule.socket(socketModule.AF_UNIX)
    sock.connect(handle['socket'])
    direct = websocket.create_connection(
        f'ws://localhost{handle["baseUrl"]}{path}',
        socket=sock,
        header=[f'Authorization: token {token}'],
    )
    times = {'front_door': [], 'direct': []}
    try:
        for ws in (front, direct):  # warm-up
            _execute(ws)
        for _ in range(max(10, args.launches * 5)):
            for name, ws in (('front_door', front), ('direct', direct)):
                t0 = time.perf_counter()
                _execute(ws)
                times[name].append(time.perf_counter() - t0)
    finally:
        front.close()
        direct.close()
        person.stop(nb)
    out = {name: summary(seconds) for name, seconds in times.items()}
    f, d = out['front_door']['p50_ms'], out['direct']['p50_ms']
    out['front_door_vs_direct_p50'] = round(f / d, 3) if f and d else None
    return out


def failoverLaunches(args):
    """Federated launches through a central whose first-ranked site is frozen, against
    launches while it answers, alternating in one run; the summaries.

    A central, ``site-a`` and ``site-b`` (both hold the shared sample dataset) and a
    feder8 each. Normal: the launch goes to ``site-a``. Failover: ``site-a``'s Girder
    is stopped (SIGSTOP) first, so the central waits ``resolver.site_connect_timeout``
    for it, then launches at ``site-b``. ``resolver.suspect_seconds`` is at its
    minimum, so that every failover launch tries ``site-a`` first again.
    """
    import tempfile

    from datadns import stack
    from datadns.federation import Federation

    home = Path(tempfile.mkdtemp(prefix='datadns-bench-failover-'))
    db = stack.SecantusDB(storage=':memory:', logDir=home / 'logs').start()
    fed = Federation(
        db.uri,
        home,
        dbPrefix='benchfailover',
        interval=1,
        centralSettings={
            'resolver.heartbeat_ttl': 600,
            'resolver.site_connect_timeout': CONNECT_TIMEOUT,
            'resolver.suspect_seconds': 0.1,
        },
        siteSettings={'resolver.backend': 'process', 'resolver.user_cap': 2},
        env={'GIRDER_SERVER_MODE': 'production'},
    )
    normal, failover, errors = [], [], {'normal': 0, 'failover': 0}
    tooLate = 0
    try:
        fed.start()
        for name in fed.siteNames:
            fed.startFeder8(name)
        central = types.SimpleNamespace(
            client=fed.clients['central'], apiUrl=fed.girders['central'].apiUrl
        )
        stack.waitFor(
            lambda: (
                all(s['healthy'] for s in central.client.get('resolver/site'))
                and len(central.client.get('resolver/site')) == 2
            ),
            60,
            'both sites registered',
        )
        [person] = people(central, 1, 0.05, 'poll')

        def liveAt(site):
            return fed.clients[site].get('notebook', parameters={'live': 'true', 'limit': 0})

        identifier = sample.SHARED_DATASET[1]
        siteA = fed.girders['site-a']
        # Warm-up, not counted: the central's tokens at both sites, each site's launcher.
        for site in ('site-a', 'site-b'):
            _, nb = person.resolveLaunch(identifier, args.launch_timeout, site=site)
            person.stop(nb)
        for n in range(args.launches):
            try:
                took, nb = person.resolveLaunch(identifier, args.launch_timeout)
                assert nb['site'] == 'site-a', nb['site']
                normal.append(took)
                person.stop(nb)
            except Exception as exc:  # noqa: BLE001 - count it and go on
                errors['normal'] += 1
                log(f'  normal federated launch failed: {str(exc)[:300]}')
            os.kill(siteA.proc.pid, signal.SIGSTOP)
            try:
                took, nb = person.resolveLaunch(identifier, args.launch_timeout)
                assert nb['site'] == 'site-b', nb['site']
                failover.append(took)
            except Exception as exc:  # noqa: BLE001
                errors['failover'] += 1
                nb = None
                log(f'  failover launch failed: {str(exc)[:300]}')
            finally:
                os.kill(siteA.proc.pid, signal.SIGCONT)
            if nb is not None:
                person.stop(nb)
            # site-a answers again: the launch it answered late is stopped by the central
            # (or here, if it answered too late for that), and its heartbeat (with its
            # notebook count) ends the suspicion before the next round.
            try:
                stack.waitFor(
                    lambda: not liveAt('site-a'),
                    10,
                    'site-a to have stopped the launch it answered late',
                )
            except TimeoutError:
                for late in liveAt('site-a'):
                    tooLate += 1
                    log(f'  stopping a notebook site-a launched too late: {late["_id"]}')
                    fed.clients['site-a'].delete(f'notebook/{late["_id"]}')
            stack.waitFor(
                lambda: (
                    not {s['name']: s for s in central.client.get('resolver/site')}['site-a'].get(
                        'suspect'
                    )
                ),
                60,
                'site-a no longer suspect',
            )
            log(
                f'  failover {n + 1}/{args.launches}: normal '
                f'{common.ms(normal[-1]) if normal else "-"} ms, failover '
                f'{common.ms(failover[-1]) if failover else "-"} ms'
            )
    finally:
        if fed.girders.get('site-a') is not None and fed.girders['site-a'].proc is not None:
            try:
                os.kill(fed.girders['site-a'].proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        for name in fed.siteNames:
            try:
                gc = fed.clients[name]
                for nb in gc.get('notebook', parameters={'live': 'true', 'limit': 0}):
                    gc.delete(f'notebook/{nb["_id"]}')
            except Exception as exc:  # noqa: BLE001 - cleaning up
                log(f'  could not stop the notebooks at {name}: {exc}')
        fed.stop()
        db.stop()
        shutil.rmtree(home, ignore_errors=True)
    out = {
        'normal': summary(normal, errors['normal']),
        'failover': summary(failover, errors['failover']),
        'connect_timeout_s': CONNECT_TIMEOUT,
        'measured': 'POST /resolve/launch at the central until GET /notebook/{id} (polled every '
        '50 ms) is running and, its single-use url opened, api/status answers 200 through the '
        "site's front door",
        # Launches site-a carried out once resumed, after the central's request had timed
        # out (so the central could not withdraw them); stopped by the benchmark.
        'late_launches_left_at_site_a': tooLate,
    }
    f, n = out['failover']['p50_ms'], out['normal']['p50_ms']
    out['extra_p50_ms'] = round(f - n, 1) if f is not None and n is not None else None
    return out


def federatedLaunches(args):
    """Launches through a central (``POST /resolve/launch``) against the same launch made at
    the site (``POST /notebook``), alternating in one run: cold, then from the site's warm
    pool; the summaries.

    A central and ``site-a`` (which holds the shared sample dataset) with its feder8.
    Both clients follow their launch alike (polling ``GET /notebook/{id}`` every 20 ms,
    at the central or at the site), then open the single-use link the answer gave
    (a ticket for the site's front door: cookie and 303) and wait for ``api/status``
    to answer 200 through the site's front door.
    """
    import tempfile

    import pymongo

    from datadns import stack
    from datadns.federation import Federation

    home = Path(tempfile.mkdtemp(prefix='datadns-bench-federated-'))
    db = stack.SecantusDB(storage=':memory:', logDir=home / 'logs').start()
    fed = Federation(
        db.uri,
        home,
        sites=('site-a',),
        dbPrefix='benchfederated',
        interval=1,
        centralSettings={'resolver.heartbeat_ttl': 600},
        siteSettings={'resolver.backend': 'process', 'resolver.user_cap': 2},
        env={'GIRDER_SERVER_MODE': 'production'},
    )
    times = {name: [] for name in ('cold_federated', 'cold_site', 'pool_federated', 'pool_site')}
    errors = dict.fromkeys(times, 0)
    fromPool = 0
    try:
        fed.start()
        fed.startFeder8('site-a')
        central = types.SimpleNamespace(
            client=fed.clients['central'], apiUrl=fed.girders['central'].apiUrl
        )
        site = types.SimpleNamespace(
            client=fed.clients['site-a'], apiUrl=fed.girders['site-a'].apiUrl
        )
        stack.waitFor(
            lambda: (
                [s['name'] for s in central.client.get('resolver/site') if s['healthy']]
                == ['site-a']
            ),
            60,
            'site-a registered',
        )
        [remote] = people(central, 1, POLL, 'poll')
        [local] = people(site, 1, POLL, 'poll')
        identifier = sample.SHARED_DATASET[1]
        folderId = next(
            str(folder['_id']) for _, ident, folder in fed.datasets['site-a'] if ident == identifier
        )
        siteDb = pymongo.MongoClient(db.uri)[fed.girders['site-a'].dbName]

        def launches(kind, count, before=None):
            nonlocal fromPool
            federated, atSite = f'{kind}_federated', f'{kind}_site'
            for n in range(count):
                for name, person, run in (
                    (federated, remote, lambda: remote.resolveLaunch(identifier, timeout)),
                    (atSite, local, lambda: local.launch(folderId, timeout)),
                ):
                    if before:
                        before()
                    try:
                        took, nb = run()
                    except Exception as exc:  # noqa: BLE001 - count it and go on
                        errors[name] = errors.get(name, 0) + 1
                        log(f'  {name} launch failed: {str(exc)[:300]}')
                        continue
                    times.setdefault(name, []).append(took)
                    # The central's answer has its own id: the site's record is its one live one.
                    live = {'pooled': True, 'live': True}
                    pooled = siteDb['resolver_notebook'].count_documents(live)
                    fromPool += bool(pooled) and name == 'pool_federated'
                    person.stop(nb)  # where it was launched (the central forwards the stop)
                last = {
                    k: common.ms(times[k][-1]) if times.get(k) else '-' for k in (federated, atSite)
                }
                log(
                    f'  {kind} {n + 1}/{count}: federated {last[federated]} ms, '
                    f'at the site {last[atSite]} ms'
                )

        # Warm-up, not counted: the central's token at the site, the site's launcher.
        timeout = args.launch_timeout
        launches('warmup', 1)
        launches('cold', args.launches)
        setSettings(site.client, {'resolver.pool_size': args.pool_size})
        try:
            launches(
                'pool',
                args.launches,
                before=lambda: waitPool(siteDb, args.pool_size, args.launch_timeout),
            )
        finally:
            setSettings(site.client, {'resolver.pool_size': 0})
    finally:
        try:
            gc = fed.clients['site-a']
            for nb in gc.get('notebook', parameters={'live': 'true', 'limit': 0}):
                gc.delete(f'notebook/{nb["_id"]}')
        except Exception as exc:  # noqa: BLE001 - cleaning up
            log(f'  could not stop the notebooks at site-a: {exc}')
        fed.stop()
        db.stop()
        shutil.rmtree(home, ignore_errors=True)
    out = {
        name: summary(times.get(name, []), errors.get(name, 0))
        for name in ('cold_federated', 'cold_site', 'pool_federated', 'pool_site')
    }
    out['pool_size'] = args.pool_size
    out['pool_federated_served_from_pool'] = fromPool
    f, d = out['cold_federated']['p50_ms'], out['cold_site']['p50_ms']
    out['cold_federated_vs_site_p50'] = round(f / d, 3) if f and d else None
    f, d = out['pool_federated']['p50_ms'], out['pool_site']['p50_ms']
    out['pool_federated_vs_site_p50'] = round(f / d, 3) if f and d else None
    out['measured'] = (
        'POST /resolve/launch at the central (federated) or POST /notebook at the site, until '
        'GET /notebook/{id} (polled every 20 ms) is running and, its single-use url opened, '
        "api/status answers 200 through the site's front door"
    )
    return out


def toolLaunches(args, dataPath, workRoot, dockerSkip):
    """Cold starts of each default tool against the backend's default server, per backend."""
    from girder_resolver import tools
    from girder_resolver.launcher import LaunchSpec, get_launcher

    out = {}
    for backend in ('process', 'docker'):
        if backend == 'docker' and dockerSkip:
            out[backend] = {'skipped': dockerSkip}
            continue
        if backend == 'process':
            launcher = get_launcher(backend, work_root=str(workRoot / 'tools'))
        else:
            launcher = get_launcher(backend, labels={'datadns.bench': '1'})
        entries = [t for t in tools.default_tools() if launcher.tool_ready(t)[0]]
        out[backend] = {
            t['id']: {'skipped': launcher.tool_ready(t)[1]}
            for t in tools.default_tools()
            if t not in entries
        }

        def once(tool, launcher=launcher):
            token = secrets.token_urlsafe(24)
            spec = LaunchSpec(f'bench-{secrets.token_hex(4)}', token, dataPath, 'data', tool=tool)
            t0 = time.perf_counter()
            handle = launcher.start(spec)
            try:
                launcher.wait_ready(handle, timeout=args.launch_timeout, token=token)
                return time.perf_counter() - t0
            finally:
                launcher.stop(handle)

        runs = {t['id']: [] for t in entries}
        runs['default'] = []
        errors = {name: 0 for name in runs}
        for tool in [None, *entries]:  # warm-up: the engine client, the page cache
            try:
                once(tool)
            except Exception as exc:  # noqa: BLE001 - counted below if it keeps failing
                log(f'  {backend} warm-up of {(tool or {}).get("id", "default")} failed: {exc}')
        for n in range(args.launches):
            for name, tool in [('default', None), *((t['id'], t) for t in entries)]:
                try:
                    runs[name].append(once(tool))
                except Exception as exc:  # noqa: BLE001 - count it and go on
                    errors[name] += 1
                    log(f'  {backend} {name} start failed: {str(exc)[:300]}')
            log(
                f'  {backend} {n + 1}/{args.launches}: '
                + ', '.join(
                    f'{name} {common.ms(values[-1]) if values else "-"} ms'
                    for name, values in runs.items()
                )
            )
        for name, values in runs.items():
            out[backend][name] = summary(values, errors[name])
        base = out[backend]['default']['p50_ms']
        for tool in entries:
            p50 = out[backend][tool['id']]['p50_ms']
            out[backend][f'{tool["id"]}_vs_default_p50'] = (
                round(p50 / base, 3) if p50 and base else None
            )
    return out


def target(value, limit):
    return {'value': value, 'target': f'<= {limit}', 'met': value is not None and value <= limit}


def main():
    args = parseArgs()
    if 'DOCKER_HOST' not in os.environ and os.path.exists(DEFAULT_SOCKET):
        # Girder inherits this environment: its docker backend needs the same engine.
        os.environ['DOCKER_HOST'] = f'unix://{DEFAULT_SOCKET}'
    started = time.time()
    image = 'localhost/datadns-notebook:latest'
    result = {
        'benchmark': 'launch',
        'machine': common.machine(),
        'config': {
            'launches_per_phase': args.launches,
            'concurrent_people': args.concurrent,
            'pool_size': args.pool_size,
            'phases': [phase for phase in PHASES if phase in args.only],
            'quick': args.quick,
            'poll_interval_ms': POLL * 1000,
            'follow': args.follow,
            'notebook_poll_interval_ms': args.poll_ms,
            'image': image,
            'measured': 'POST /notebook until GET /notebook/{id} is running and, its single-use '
            "url opened (cookie, 303), api/status answers 200 through the site's front door",
        },
    }
    settings = {'resolver.backend': 'process', 'resolver.user_cap': 2}
    dockerSkip = 'skipped (--skip-docker)' if args.skip_docker else dockerUnavailable(image)
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
            folderId = folder['_id']
            persons = people(central, max(args.concurrent, 2), args.poll_ms / 1000, args.follow)
            log(f'dataset "{name}" imported; {len(persons)} people')

            person = persons[0]
            if 'process' in args.only:
                log('process backend: cold launches against bare jupyter_server starts')
                warmUp(central, person, folderId, args)
                bare = BareProcess(str(directory), central.home / 'bare')
                result['process'] = coldVersusBare(
                    'process', person, folderId, bare, args, central.mongo()
                )

            if 'concurrent' in args.only:
                log(f'process backend: {args.concurrent} people launching at once')
                result['concurrent'] = concurrentLaunches(
                    persons[: args.concurrent], folderId, args
                )
                together = result['concurrent']
                log(f'  wall {together["wall_ms"]} ms, p50 {together["p50_ms"]} ms')

            if 'pooled' in args.only:
                log(f'warm pool of {args.pool_size}: pooled launches')
                result['pooled'] = pooledLaunches(central, persons[1], folderId, args)

            if 'kernel' in args.only:
                log('kernel execute round trips: through the front door against direct')
                result['kernel'] = kernelRoundTrips(central, persons[1], folderId, args)
                log(f'  {result["kernel"]["front_door_vs_direct_p50"]}x')

            if 'docker' not in args.only:
                pass
            elif dockerSkip:
                log(f'docker backend skipped: {dockerSkip}')
                result['docker'] = {'skipped': dockerSkip}
            else:
                log('docker backend: cold launches against bare containers.run starts')
                setSettings(gc, {'resolver.backend': 'docker'})
                warmUp(central, person, folderId, args)
                result['docker'] = coldVersusBare(
                    'docker',
                    person,
                    folderId,
                    BareDocker(str(directory), image, central.home / 'bare-docker'),
                    args,
                    central.mongo(),
                )
                setSettings(gc, {'resolver.backend': 'process'})
            if 'slurm' in args.only:
                slurmSkip = slurmUnavailable()
                if slurmSkip:
                    log(f'slurm backend skipped: {slurmSkip}')
                    result['slurm'] = {'skipped': slurmSkip}
                else:
                    log('slurm backend: cold launches against bare sbatch starts')
                    setSettings(gc, {'resolver.backend': 'slurm'})
                    warmUp(central, person, folderId, args)
                    result['slurm'] = coldVersusBare(
                        'slurm',
                        person,
                        folderId,
                        BareSbatch(str(directory), central.home / 'bare-slurm'),
                        args,
                        central.mongo(),
                    )
                    setSettings(gc, {'resolver.backend': 'process'})
        except (common.OutOfTime, RuntimeError) as exc:
            log(f'stopped: {exc}')
            result['error'] = str(exc)
        finally:
            resources.stop()
        result['resources'] = resources.summary()
        result['resources']['note'] = (
            'server_vmhwm_mib is the Girder process alone; the sampled peak includes its '
            'children, i.e. the notebook servers of the process backend'
        )
        result['girder_peak_rss_mib'] = result['resources']['server_vmhwm_mib']

    if 'tools' in args.only:
        log('tools: cold starts of each default tool against the default server, per backend')
        try:
            with common.interruptible(args.time_limit), tempfile.TemporaryDirectory() as tmp:
                scratch = Path(tmp)
                scratch.chmod(0o755)  # the docker backend's user reads the dataset below it
                dataPath = scratch / 'data'
                dataPath.mkdir(mode=0o755)
                (dataPath / 'values.csv').write_text('a,b\n1,2\n')
                result['tools'] = toolLaunches(args, str(dataPath), scratch, dockerSkip)
        except (common.OutOfTime, RuntimeError) as exc:
            log(f'stopped: {exc}')
            result['error'] = str(exc)

    if 'federated' in args.only:
        log('federated launches through a central against launches at the site: cold, pooled')
        try:
            with common.interruptible(args.time_limit):
                result['federated'] = federatedLaunches(args)
        except (common.OutOfTime, RuntimeError) as exc:
            log(f'stopped: {exc}')
            result['error'] = str(exc)

    if 'failover' in args.only:
        log('federated launches: first site frozen (failover) against it answering (normal)')
        try:
            with common.interruptible(args.time_limit):
                result['failover'] = failoverLaunches(args)
        except (common.OutOfTime, RuntimeError) as exc:
            log(f'stopped: {exc}')
            result['error'] = str(exc)

    targets = {}
    pooled = result.get('pooled') or {}
    if 'pooled' in args.only:
        targets['pooled_p50_ms'] = target(pooled.get('p50_ms'), TARGETS['pooled_p50_ms'])
    if 'kernel' in args.only:
        targets['kernel_front_door_vs_direct_p50'] = target(
            (result.get('kernel') or {}).get('front_door_vs_direct_p50'),
            TARGETS['kernel_front_door_vs_direct'],
        )
    for backend in ('process', 'docker', 'slurm'):
        phase = result.get(backend) or {}
        if backend not in args.only:
            continue
        if 'skipped' in phase:
            targets[f'{backend}_cold_vs_bare_p50'] = {'value': None, 'target': 'not measured'}
            continue
        targets[f'{backend}_cold_vs_bare_p50'] = target(
            phase.get('cold_vs_bare_p50'), TARGETS[f'{backend}_cold_vs_bare']
        )
    if 'federated' in args.only:
        federated = result.get('federated') or {}
        targets['federated_cold_vs_site_p50'] = target(
            federated.get('cold_federated_vs_site_p50'), TARGETS['federated_cold_vs_site']
        )
        targets['federated_pool_p50_ms'] = target(
            (federated.get('pool_federated') or {}).get('p50_ms'), TARGETS['federated_pool_p50_ms']
        )
    if 'failover' in args.only:
        targets['failover_extra_p50_ms'] = target(
            (result.get('failover') or {}).get('extra_p50_ms'), (CONNECT_TIMEOUT + 1) * 1000
        )
    errors = (
        sum(
            (result.get('failover') or {}).get(k, {}).get('errors', 0)
            for k in ('normal', 'failover')
        )
        + sum(
            (result.get('federated') or {}).get(k, {}).get('errors', 0)
            for k in ('cold_federated', 'cold_site', 'pool_federated', 'pool_site')
        )
        + sum(
            phase.get('errors', 0)
            for phase in (result.get('concurrent') or {}, pooled)
            if isinstance(phase, dict)
        )
        + sum(
            (result.get(b) or {}).get(k, {}).get('errors', 0)
            for b in ('process', 'docker', 'slurm')
            for k in ('cold', 'bare')
        )
        + sum(
            figures.get('errors', 0)
            for backend in (result.get('tools') or {}).values()
            for figures in backend.values()
            if isinstance(figures, dict)
        )
    )
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
