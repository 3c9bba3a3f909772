"""The slurm backend: each notebook server is a Slurm batch job.

The job runs the same bubblewrap-sandboxed ``jupyter_server`` as the process
backend (this class reuses its working directory layout, configuration and
sandbox), on whichever compute node Slurm picks. Inside its sandbox the server
has no network and listens on a Unix socket, as with the process backend; next
to it, outside the sandbox, the job's own program (:mod:`.slurmjob`) listens on a
TCP port of the node and forwards to that socket, so the kernel stays without
network while the front door, on another host, reaches the server at the node's
host and port, protected by the notebook's token (as batchspawner's servers are).
The job writes that address into ``address.json`` of its working directory,
which the front door's host therefore must see: ``work_root`` is on a file
system shared by Girder's host and the compute nodes, as are the datasets and
the Python environment that runs jupyter_server (see docs/slurm.md).

Each notebook gets ``<work_root>/<notebook_id>/`` as with the process backend,
plus::

    job.py          the batch script (slurmjob.py with a #! line)
    job.json        what it runs: the sandboxed server's argv and environment
    address.json    where the server answers, written by the job once it runs
    server.log      the job's stdout and stderr (sbatch --output)

and the marker ``<work_root>/<notebook_id>.json``. Submission is ``sbatch`` given
an argument list, never a shell string; whether a job still waits, runs or ended
is asked of ``squeue`` by job id (so a restarted Girder adopts its notebooks), and
stopping is ``scancel``. While the job waits in the queue, :meth:`wait_ready`
reports Slurm's reason as launch progress ("Waiting in the queue: Resources").

A server can be bound to its dataset after it started (the warm pool; the pool's
servers are then queued or running jobs) only on a one-node cluster on Girder's own
machine: the dataset is mounted there, as the process backend does it, and would
have to be mounted on the compute node otherwise (:meth:`can_bind_later`).
"""

import datetime
import json
import logging
import math
import os
import re
import socket
import subprocess
import sys
import time

from . import sandbox, slurmjob
from .base import LaunchError, Option
from .process import ProcessLauncher

logger = logging.getLogger(__name__)

#: Job states in which the job waits or runs (squeue's %T); anything else has ended.
LIVE_STATES = {
    'PENDING',
    'CONFIGURING',
    'RUNNING',
    'SUSPENDED',
    'REQUEUED',
    'REQUEUE_HOLD',
    'REQUEUE_FED',
    'RESIZING',
    'SIGNALING',
    'STOPPED',
}
#: Live states in which the job holds no node yet.
QUEUED_STATES = {'PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED'}
_MEMORY = re.compile(r'^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$', re.IGNORECASE)


def slurm_memory(value):
    """A memory size (``'1g'``, ``'512m'``, ``2048`` bytes…) as sbatch's ``--mem`` in MiB, or ''."""
    if value in (None, '', 0, '0'):
        return ''
    match = _MEMORY.match(str(value))
    if not match:
        raise LaunchError(f'Cannot read the memory size {value!r} (e.g. 1g, 512m).')
    number, unit = float(match.group(1)), match.group(2).lower()
    scale = {'': 1 / 2**20, 'k': 1 / 1024, 'm': 1, 'g': 1024, 't': 1024**2}[unit]
    return f'{max(1, math.ceil(number * scale))}M'


def describe_job(job):
    """A sentence on where a job that does not answer yet is, for a person; None if ended."""
    if job is None or job[0] not in LIVE_STATES:
        return None
    state, reason, node, _ = job
    if state in QUEUED_STATES:
        known = reason and reason != 'None'
        return f'Waiting in the queue: {reason}' if known else 'Waiting in the queue'
    return f'Starting on {node}' if node else 'Starting'


def slurm_seconds(text):
    """squeue's time used (``M:SS``, ``H:MM:SS``, ``D-HH:MM:SS``) in seconds; 0 if unreadable."""
    days, _, clock = str(text).strip().rpartition('-')
    try:
        seconds = 0
        for part in clock.split(':'):
            seconds = seconds * 60 + int(part)
        return seconds + int(days or 0) * 86400
    except ValueError:
        return 0


def slurm_time(seconds):
    """A time limit in seconds as sbatch's ``--time`` (minutes:seconds), or '' for none."""
    seconds = int(float(seconds or 0))
    if seconds <= 0:
        return ''
    return f'{seconds // 60}:{seconds % 60:02d}'


class SlurmLauncher(ProcessLauncher):
    """Runs each notebook as a Slurm batch job: the process backend's sandboxed server on a node.

    The server answers on the node's host and a free port (a forwarder outside the
    sandbox, to the server's Unix socket inside it), protected by the notebook's token.
    """

    name = 'slurm'
    options = {
        'partition': Option(
            '',
            "Slurm partition of the notebook jobs (sbatch --partition); '': the cluster's default.",
        ),
        'account': Option('', "Slurm account charged for the jobs (sbatch --account); '': none."),
        'time_limit': Option(
            0, 'Most seconds a notebook job may run (sbatch --time); 0: the partition default.'
        ),
        'mem_limit': Option('1g', "Memory of one notebook job, e.g. 1g (sbatch --mem); '': none."),
        'cpus': Option(1.0, 'CPUs of one notebook job (sbatch --cpus-per-task, rounded up).'),
        'ip': Option(
            '0.0.0.0',
            "Address the job listens on, on its node: '0.0.0.0' answers on the node's host "
            'name (what a real cluster needs); 127.0.0.1 only for a one-node cluster.',
        ),
        'python': Option(
            sys.executable,
            'Python that runs the job program on the compute node (standard library only); '
            'must exist on the nodes.',
        ),
        'sbatch': Option('sbatch', 'The sbatch executable.'),
        'sinfo': Option('sinfo', 'The sinfo executable.'),
        'squeue': Option('squeue', 'The squeue executable.'),
        'scancel': Option('scancel', 'The scancel executable.'),
        'sbatch_args': Option([], 'Further sbatch options, e.g. ["--qos=interactive"].'),
        'queue_timeout': Option(
            0.0,
            'Seconds a launch waits for its job to leave the queue before it gives up; '
            '0: as long as it takes.',
        ),
        'queue_poll_interval': Option(
            1.0, 'Seconds between two squeue calls while a job waits in the queue.'
        ),
        'slurm_timeout': Option(20.0, 'Seconds allowed for each sbatch, squeue or scancel call.'),
    }

    # -- Slurm commands ----------------------------------------------------------

    def _slurm(self, args):
        """Run a Slurm command (an argument list); (exit code, stdout, stderr)."""
        try:
            run = subprocess.run(
                args,
                capture_output=True,
                text=True,
                timeout=float(self.config['slurm_timeout']),
                stdin=subprocess.DEVNULL,
                cwd='/',
            )
        except (OSError, subprocess.SubprocessError) as error:
            raise LaunchError(f'Slurm cannot be reached ({args[0]}: {error}).') from None
        return run.returncode, run.stdout, run.stderr.strip()

    def jobs(self, job_ids):
        """``{job id: (state, reason, node, seconds run)}`` of the given jobs Slurm still knows.

        A job that ended long ago is no longer known (squeue keeps ended jobs for
        MinJobAge); it is missing from the answer. :class:`LaunchError` when Slurm
        cannot be asked.
        """
        job_ids = [str(j) for j in job_ids if j]
        if not job_ids:
            return {}
        code, out, err = self._slurm(
            [
                self.config['squeue'],
                '--noheader',
                '--states=all',
                f'--jobs={",".join(job_ids)}',
                '--format=%i|%T|%r|%N|%M',
            ]
        )
        if code != 0:
            if 'Invalid job id' in err:
                return {}
            raise LaunchError(f'Slurm cannot be reached (squeue: {err or f"exit {code}"}).')
        found = {}
        for line in out.splitlines():
            parts = line.strip().split('|')
            if len(parts) == 5:
                found[parts[0]] = (parts[1], parts[2], parts[3], slurm_seconds(parts[4]))
        return found

    def job(self, handle):
        """(state, reason, node, seconds run) of a handle's job; None once Slurm forgot it."""
        return self.jobs([handle.get('jobId')]).get(str(handle.get('jobId')))

    # -- what the process backend does otherwise ------------------------------------

    def can_bind_later(self):
        """Whether a job can be started before its dataset is known and bound later (the pool).

        Only where the compute nodes are this machine (a one-node cluster here) and
        the process backend could (Girder may mount file systems): the dataset is
        then mounted on this machine and propagates into the job's sandbox. On a
        real cluster the mount would have to be made on the node: False.
        """
        return self.nodes_are_this_host() and super().can_bind_later()

    def nodes_are_this_host(self):
        """Whether every node of the partition is this machine (asked of sinfo once a minute)."""
        now = time.monotonic()
        cached = getattr(self, '_local_nodes', None)
        if cached is not None and now - cached[1] < 60:
            return cached[0]
        args = [self.config['sinfo'], '--noheader', '--Node', '--format=%N']
        if self.config['partition']:
            args.append(f'--partition={self.config["partition"]}')
        try:
            code, out, _ = self._slurm(args)
        except LaunchError:
            return False
        names = set(out.split())
        local = code == 0 and names == {socket.gethostname().split('.')[0]}
        self._local_nodes = (local, now)
        return local

    def start(self, spec, bind_later=False):
        """Submit the notebook's job; returns its handle once Slurm accepted it.

        Handle: ``{'backend': 'slurm', 'notebookId', 'jobId', 'workDir', 'baseUrl',
        'started', 'labels', 'sandboxed', 'bindLater'}`` (and ``'tool'``), plus
        ``'host'``, ``'port'``, ``'node'`` once :meth:`wait_ready` found where the
        server answers.
        """
        spec.check_data_path()
        if spec.tool:
            ready, reason = self.tool_ready(spec.tool)
            if not ready:
                raise LaunchError(reason)
        sandboxed = self.sandboxed()
        if bind_later and not self.can_bind_later():
            raise LaunchError(
                'A Slurm notebook job can be bound to a dataset after it starts only on a '
                "one-node cluster on Girder's own machine, with Girder running as root; the "
                'warm pool is not available here.'
            )
        work_dir = self.new_work_dir(spec.notebook_id)
        try:
            argv, env, cwd = self._prepare(spec, work_dir, sandboxed, bind_later)
            script = self._write_job(work_dir, argv, env, cwd)
            job_id = self._submit(
                self.sbatch_args(f'datadns-{spec.notebook_id}', work_dir), work_dir, script
            )
        except (OSError, LaunchError) as error:
            self._remove_leftovers(spec.notebook_id)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(
                f'Could not submit the notebook job for {spec.notebook_id}: {error}'
            ) from None
        handle = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'jobId': job_id,
            'workDir': work_dir,
            'baseUrl': spec.base_url,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'labels': spec.labels,
            'sandboxed': sandboxed,
            'bindLater': bool(bind_later),
        }
        if spec.tool:
            handle['tool'] = spec.tool['id']
        self._write_marker(handle, spec)
        return handle

    def _write_job(self, work_dir, argv, env, cwd, serve=True):
        """Write the batch script and its ``job.json``; returns the script's path.

        ``serve``: a notebook server, forwarded to from a TCP port; else a batch run.
        """
        job = {'argv': argv, 'env': env, 'cwd': cwd}
        if serve:
            job.update(
                socket=os.path.join(work_dir, 'run', sandbox.SOCKET_NAME),
                address_file=os.path.join(work_dir, 'address.json'),
                listen=str(self.config['ip']),
                stop_grace=float(self.config['stop_grace']),
            )
        fd = os.open(
            os.path.join(work_dir, 'job.json'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600
        )
        with os.fdopen(fd, 'w') as out:
            json.dump(job, out)
        with open(slurmjob.__file__) as source:
            program = source.read()
        script = os.path.join(work_dir, 'job.py')
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
        with os.fdopen(fd, 'w') as out:
            out.write(f'#!{self.config["python"]}\n{program}')
        return script

    def sbatch_args(self, name, work_dir, time_limit=None, log='server.log'):
        """sbatch's options for a job called ``name`` working in ``work_dir``."""
        args = [
            self.config['sbatch'],
            '--parsable',
            f'--job-name={name}',
            f'--output={os.path.join(work_dir, log)}',
            f'--chdir={work_dir}',
            '--nodes=1',
            '--ntasks=1',
            f'--cpus-per-task={max(1, math.ceil(float(self.config["cpus"] or 1)))}',
            # Nothing of Girder's environment goes to the job (the sandbox gets its own).
            '--export=NONE',
        ]
        for option, value in (
            ('--partition', self.config['partition']),
            ('--account', self.config['account']),
            ('--mem', slurm_memory(self.config['mem_limit'])),
            ('--time', slurm_time(self.config['time_limit'] if time_limit is None else time_limit)),
        ):
            if value:
                args.append(f'{option}={value}')
        return args + [str(arg) for arg in self.config['sbatch_args']]

    def _submit(self, args, work_dir, script):
        code, out, err = self._slurm(args + [script, os.path.join(work_dir, 'job.json')])
        job_id = out.strip().split(';')[0]
        if code != 0 or not job_id.isdigit():
            raise LaunchError(f'Slurm refused the notebook job: {err or out or f"exit {code}"}')
        return job_id

    def is_alive(self, handle):
        """Whether the notebook's job waits in the queue or runs."""
        job = self.job(handle)
        return job is not None and job[0] in LIVE_STATES

    def progress(self, handle):
        """A sentence on where a job that does not answer yet is, for a person; None if ended."""
        return describe_job(self.job(handle))

    def address(self, handle):
        """``handle`` with where its server answers (``host``, ``port``) once the job wrote it."""
        if handle.get('host') and handle.get('port'):
            return handle
        try:
            with open(os.path.join(handle['workDir'], 'address.json')) as found:
                address = json.load(found)
        except (OSError, ValueError):
            return handle
        if not isinstance(address, dict) or not address.get('port'):
            return handle
        handle.update(host=str(address['host']), port=int(address['port']))
        if address.get('node'):
            handle['node'] = str(address['node'])
        return handle

    def proxy_target(self, handle):
        """``http://<node host>:<port>``; KeyError while the job has not said where it answers."""
        handle = self.address(dict(handle))
        return f'http://{handle["host"]}:{handle["port"]}'

    def request(self, handle, method, path, **kwargs):
        """As :meth:`Launcher.request`; ``OSError`` while the job does not answer yet."""
        handle = self.address(handle)
        if not handle.get('port'):
            raise OSError('The notebook job does not run yet.')
        return super().request(handle, method, path, **kwargs)

    def wait_ready(self, handle, timeout=None, token=None, progress=None):
        """Wait while the job is queued (telling ``progress``), then until its server answers.

        ``progress(message)`` is called with Slurm's reason while the job waits
        (when it changes, and every 30 s). With ``timeout``, it bounds the whole
        wait; without, the queue wait is bounded by ``queue_timeout`` and the
        server's start by ``ready_timeout``. Completes ``handle`` with the server's
        ``host`` and ``port``.
        """
        started = time.monotonic()
        queue_limit = timeout if timeout is not None else float(self.config['queue_timeout'])
        deadline = started + queue_limit if queue_limit else math.inf
        said, said_at = None, 0.0
        next_check = started
        queued = False
        while not self.address(handle).get('port'):
            now = time.monotonic()
            if now >= next_check:
                job = self.job(handle)
                if job is None or job[0] not in LIVE_STATES:
                    state = job[0] if job else 'no longer known to Slurm'
                    raise LaunchError(
                        f'The notebook job {handle["jobId"]} ended ({state}) before its server '
                        'answered. Its last output:\n' + self.logs_tail(handle)
                    )
                queued = job[0] in QUEUED_STATES
                message = describe_job(job) if queued else None
                if progress and message and (message != said or now - said_at >= 30):
                    progress(message)
                    said, said_at = message, now
                next_check = now + float(
                    self.config['queue_poll_interval' if queued else 'alive_check_interval']
                )
            if now >= deadline:
                raise LaunchError(
                    f'The notebook job {handle["jobId"]} did not start within {queue_limit:g} s '
                    f'({said or "not running yet"}).'
                )
            # A job is queued for a moment at least: the address is read often at first,
            # then, for a job that waits, only when Slurm is asked again (NFS, say).
            pause = float(self.config['ready_poll_interval'])
            if queued and now - started > 5:
                pause = next_check - now
            time.sleep(max(0.0, min(pause, deadline - now)))
        remaining = None if timeout is None else max(0.5, deadline - time.monotonic())
        super().wait_ready(handle, timeout=remaining, token=token)

    def stop(self, handle):
        """``scancel`` the job, wait until Slurm ended it, then remove its files."""
        if self._scancel(handle):
            self._remove_leftovers(handle['notebookId'], handle)

    def _scancel(self, handle):
        """Cancel the handle's job if it waits, runs or ends; True once Slurm ended it."""
        job_id = handle.get('jobId')
        if not job_id or not (self.is_alive(handle) or self._completing(handle)):
            return True
        code, _, err = self._slurm([self.config['scancel'], str(job_id)])
        if code != 0 and 'Invalid job id' not in err:
            raise LaunchError(f'Slurm could not cancel job {job_id}: {err}')
        deadline = time.monotonic() + float(self.config['stop_grace']) + 30
        while self.is_alive(handle) or self._completing(handle):
            if time.monotonic() >= deadline:
                logger.warning('Slurm job %s is still ending; leaving its files', job_id)
                return False
            time.sleep(0.1)
        return True

    def _completing(self, handle):
        job = self.job(handle)
        return job is not None and job[0] == 'COMPLETING'

    # -- batch runs ---------------------------------------------------------------

    def start_run(self, spec):
        """Submit the batch run ``spec`` as a Slurm job; returns its run handle.

        The job runs the process backend's sandboxed command (its exit status
        recorded by the same wrapper) on a node; its output goes to ``run.log`` of
        the run's working directory (shared with the nodes, like ``work_root``).
        Slurm's ``--time`` is the run's limit plus a minute, a backstop to
        :meth:`run_state`'s own check. Handle: ``{'backend': 'slurm', 'runId',
        'jobId', 'runDir', 'started', 'timeLimit', 'sandboxed', 'labels'}``.
        """
        spec.check_paths()
        sandboxed = self.sandboxed()
        run_dir = self._new_run_dir(spec.run_id)
        handle = {
            'backend': self.name,
            'runId': spec.run_id,
            'runDir': run_dir,
            'started': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'timeLimit': spec.time_limit,
            'sandboxed': sandboxed,
            'labels': spec.labels,
        }
        try:
            args, env = self._run_args(spec, run_dir, sandboxed)
            script = self._write_job(run_dir, args, env, os.path.join(run_dir, 'home'), False)
            limit = spec.time_limit + 60 if spec.time_limit else None
            sbatch = self.sbatch_args(f'datadns-run-{spec.run_id}', run_dir, limit, 'run.log')
            handle['jobId'] = self._submit(sbatch, run_dir, script)
        except (OSError, LaunchError) as error:
            super().cleanup_run(handle)
            if isinstance(error, LaunchError):
                raise
            raise LaunchError(f'Could not submit run {spec.run_id}: {error}') from None
        return handle

    def run_state(self, handle):
        """``queued`` (with Slurm's reason) while the job waits, else as the process backend.

        A run past its time limit is cancelled here, and its reason says so; one
        that Slurm ended at its ``--time`` says the same.
        """
        job = self.job(handle)
        limit = int(handle.get('timeLimit') or 0)
        over = f'ran longer than the limit of {limit} s'
        if job is not None and job[0] in QUEUED_STATES:
            return 'queued', None, self.progress(handle)
        if job is not None and job[0] in LIVE_STATES | {'COMPLETING'}:
            if not limit or job[3] <= limit:
                return 'running', None, None
            self._end_run(handle, over)
        elif job is not None and job[0] == 'TIMEOUT':
            _note_ending(handle, over)
        return super().run_state(handle)

    def cancel_run(self, handle):
        """``scancel`` the run's job; its reason becomes 'cancelled' (unless it had ended)."""
        self._end_run(handle, 'cancelled')

    def cleanup_run(self, handle):
        """Cancel the job if it still waits or runs, then remove its working directory."""
        self._end_run(handle, 'cancelled')
        super().cleanup_run(handle)

    def _end_run(self, handle, reason):
        if self.is_alive(handle):
            _note_ending(handle, reason)
        self._scancel(handle)

    def list_running(self):
        """Handles from the marker files whose jobs wait or run; ended ones are cleared."""
        markers = []
        try:
            names = sorted(os.listdir(self.work_root))
        except FileNotFoundError:
            return []
        for name in names:
            if name.endswith('.json'):
                marker = self._read_marker(os.path.join(self.work_root, name))
                if marker and marker.get('backend') == self.name:
                    markers.append(marker['handle'])
        known = self.jobs([handle.get('jobId') for handle in markers])
        running = []
        for handle in markers:
            job = known.get(str(handle.get('jobId')))
            if job is not None and job[0] in LIVE_STATES:
                running.append(self.address(handle))
            elif job is None or job[0] != 'COMPLETING':
                self._remove_leftovers(handle['notebookId'], handle)
        return running

    def _write_marker(self, handle, spec):
        marker = {
            'backend': self.name,
            'notebookId': spec.notebook_id,
            'jobId': handle['jobId'],
            'started': handle['started'],
            'dataPath': spec.data_path,
            'dataName': spec.data_name,
            'labels': spec.labels,
            'handle': handle,
        }
        path = self._marker_path(spec.notebook_id)
        tmp = f'{path}.{os.getpid()}.tmp'
        with open(tmp, 'w') as out:
            json.dump(marker, out, indent=1)
        os.replace(tmp, path)


def _note_ending(handle, reason):
    """Record why a run ends early (``ended`` in its directory), unless it has a reason."""
    path = os.path.join(handle['runDir'], 'ended')
    if os.path.exists(path):
        return
    tmp = f'{path}.{os.getpid()}.tmp'
    try:
        with open(tmp, 'w') as out:
            out.write(reason)
        os.replace(tmp, path)
    except OSError:
        pass
