"""The README's first command, as a new user runs it: `make run` in a fresh clone.

A clone of this checkout (committed files, plus uncommitted changes to them) with no
``.venv``, no built web client and no data: ``make run`` must create the environment,
install everything (the embedded database included), build the web client, start the
federation and print ``/resolve`` links that work. Ctrl-C (SIGINT to the foreground
process group, as a terminal sends it) must leave nothing running, and a second
``make run`` must find the data of the first.

It installs from the same package indexes and caches as the machine's own setup (pip's
and npm's caches, ``PIP_FIND_LINKS``), so it costs a few minutes, not a download of the
world.
"""

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from datadns import stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parent.parent
PASSWORD = 'first-run-password'
#: A fresh install (venv, pip, npm, web build) on a loaded two-core machine.
FIRST_UP_TIMEOUT = 900
UP_TIMEOUT = 300
LINK = re.compile(r'(http://127\.0\.0\.1:\d+/api/v1/resolve\?id=\S+)')


def _freshClone(dest):
    """Clone this checkout; uncommitted changes to tracked files come along."""
    subprocess.run(['git', 'clone', '--quiet', str(REPO), str(dest)], check=True)
    changes = subprocess.run(
        ['git', 'diff', 'HEAD', '--binary'], cwd=REPO, capture_output=True, check=True
    ).stdout
    if changes:
        subprocess.run(['git', 'apply', '-'], cwd=dest, input=changes, check=True)
    assert not (dest / '.venv').exists()
    assert not (dest / 'girder_resolver' / 'web_client_dist').exists()
    assert not (dest / 'web_client' / 'node_modules').exists()


def _userEnvironment(home, port):
    """The environment of a new user's shell: none of this test run's venv, make or paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME', 'MAKEFLAGS', 'MFLAGS', 'MAKELEVEL')
        and not k.startswith(('PYTEST_', 'DATADNS_', 'GIRDER_'))
    }
    venvBin = str(Path(os.environ.get('VIRTUAL_ENV', REPO / '.venv')) / 'bin')
    env['PATH'] = os.pathsep.join(
        p for p in env.get('PATH', '').split(os.pathsep) if p and not p.startswith(venvBin)
    )
    env.update(
        DATADNS_HOME=str(home),
        DATADNS_PORT=str(port),
        DATADNS_ADMIN_PASSWORD=PASSWORD,
        DATADNS_INTERVAL='1',
        PYTHONUNBUFFERED='1',
    )
    return env


class MakeRun:
    """``make run`` in its own process group, its output collected as it comes."""

    def __init__(self, clone, env):
        self.proc = subprocess.Popen(
            ['make', 'run'],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def waitUp(self, timeout):
        deadline = time.monotonic() + timeout
        while 'Press Ctrl-C' not in self.output:
            assert self.proc.poll() is None, f'make run exited:\n{self.output}'
            assert time.monotonic() < deadline, f'make run not up in {timeout}s:\n{self.output}'
            time.sleep(0.5)

    def started(self):
        """Every process `make run` started and still runs, with the ports they listen on."""
        procs = [psutil.Process(self.proc.pid)]
        procs += procs[0].children(recursive=True)
        ports = set()
        for p in procs:
            try:
                ports |= {c.laddr.port for c in p.net_connections('inet') if c.status == 'LISTEN'}
            except psutil.NoSuchProcess:
                pass
        return procs, ports

    def abandon(self):
        """After a failure: Ctrl-C, and if that does not end it, kill what is left."""
        procs, _ = self.started() if self.proc.poll() is None else ([], set())
        try:
            self.interrupt()
        except subprocess.TimeoutExpired:
            pass
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def interrupt(self, timeout=120):
        """Ctrl-C: SIGINT to the foreground process group (make and what it runs)."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:  # it has ended already (say, it failed to start)
            pass
        return self.proc.wait(timeout)


def _leftovers(procs, ports, *paths, timeout=30):
    """Processes of ``procs`` still alive, listening ports still open, and any process whose
    command line or directory mentions ``paths`` — after waiting up to ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        listening = {
            c.laddr.port
            for c in psutil.net_connections('inet')
            if c.status == 'LISTEN' and c.laddr.port in ports
        }
        strays = []
        for p in psutil.process_iter(['pid', 'cmdline', 'cwd']):
            text = ' '.join(p.info['cmdline'] or []) + ' ' + (p.info['cwd'] or '')
            if p.pid != os.getpid() and any(str(path) in text for path in paths):
                strays.append(p)
        if not (alive or listening or strays) or time.monotonic() > deadline:
            return alive, listening, strays
        time.sleep(0.5)


def _stopsCleanly(run, clone, home):
    procs, ports = run.started()
    assert len(procs) >= 5, procs  # make, datadns, SecantusDB, three Girders, two feder8s
    code = run.interrupt()
    # make reports the interrupt of its recipe by dying of the same signal.
    assert code in (0, 2, -signal.SIGINT), run.output
    assert 'Stopped. Data kept in' in run.output, run.output
    alive, listening, strays = _leftovers(procs, ports, clone, home)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]
    assert not listening, listening
    assert not strays, [(p.pid, p.info['cmdline']) for p in strays]


def testMakeRunFromAFreshCloneResolvesStopsOnCtrlCAndReusesItsData(tmp_path):
    clone, home = tmp_path / 'datadns', tmp_path / 'home'
    _freshClone(clone)
    port = stack.freePortBlock()
    env = _userEnvironment(home, port)

    first = MakeRun(clone, env)
    try:
        first.waitUp(FIRST_UP_TIMEOUT)
        assert (clone / '.venv' / 'bin' / 'datadns').exists()
        assert (clone / 'girder_resolver' / 'web_client_dist').is_dir()
        links = LINK.findall(first.output)
        assert links, first.output
        link = links[0]
        assert link.startswith(f'http://127.0.0.1:{port}/api/v1/resolve?id=')

        # A program gets the locations as JSON ...
        answer = requests.get(link, headers={'Accept': 'application/json'}, timeout=30)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body['identifier'] == link.split('id=', 1)[1]
        assert body['locations'] and all(loc['healthy'] for loc in body['locations'])
        assert {loc['site'] for loc in body['locations']} <= {'site-a', 'site-b'}
        # ... and a browser is sent to the web client's page for it, which is served.
        page = requests.get(
            link, headers={'Accept': 'text/html,*/*;q=0.8'}, allow_redirects=False, timeout=30
        )
        assert page.status_code == 303, page.text
        assert page.headers['Location'].startswith(f'http://127.0.0.1:{port}/#resolve?id=')
        assert requests.get(f'http://127.0.0.1:{port}/', timeout=30).status_code == 200
        plugin = requests.get(
            f'http://127.0.0.1:{port}/plugin_static/resolver/girder-plugin-resolver.umd.cjs',
            timeout=30,
        )
        assert plugin.status_code == 200 and 'g-resolver-resolve' in plugin.text

        # Something only this run's database can remember.
        api = f'http://127.0.0.1:{port}/api/v1'
        token = requests.get(f'{api}/user/authentication', auth=('admin', PASSWORD), timeout=30)
        headers = {'Girder-Token': token.json()['authToken']['token']}
        marker = requests.post(
            f'{api}/collection',
            params={'name': 'first-run marker', 'public': 'false'},
            headers=headers,
            timeout=30,
        )
        assert marker.status_code == 200, marker.text
    except BaseException:
        first.abandon()
        raise
    _stopsCleanly(first, clone, home)

    second = MakeRun(clone, env)
    try:
        second.waitUp(UP_TIMEOUT)
        assert 'Installing' not in second.output and 'Building' not in second.output
        answer = requests.get(link, headers={'Accept': 'application/json'}, timeout=30)
        assert answer.status_code == 200, answer.text
        token = requests.get(f'{api}/user/authentication', auth=('admin', PASSWORD), timeout=30)
        headers = {'Girder-Token': token.json()['authToken']['token']}
        collections = requests.get(f'{api}/collection', headers=headers, timeout=30).json()
        assert 'first-run marker' in {c['name'] for c in collections}
    except BaseException:
        second.abandon()
        raise
    _stopsCleanly(second, clone, home)
