"""The README's first command: `datadns up` brings up a federation that resolves and launches."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests

from datadns import stack
from plugin_tests.launcher_helpers import requireSlurm

pytestmark = pytest.mark.slow
PASSWORD = 'readme-test-password'


class Up:
    def __init__(self, home, port, *extra):
        env = {**os.environ, 'DATADNS_ADMIN_PASSWORD': PASSWORD, 'PYTHONUNBUFFERED': '1'}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                '-m',
                'datadns',
                'up',
                '--home',
                str(home),
                '--port',
                str(port),
                '--interval',
                '1',
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self):
        return ''.join(self.lines)

    def waitUp(self, timeout=240):
        deadline = time.monotonic() + timeout
        while 'Press Ctrl-C' not in self.output:
            assert self.proc.poll() is None, self.output
            assert time.monotonic() < deadline, self.output
            time.sleep(0.5)

    def interrupt(self):
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(90)


@pytest.fixture
def home(tmp_path):
    return tmp_path / 'var'


def testDatadnsUpResolvesLaunchesStopsCleanlyAndReusesItsData(home):
    port = stack.freePortBlock()
    up = Up(home, port)
    try:
        up.waitUp()
        links = re.findall(r'(http://\S+/api/v1/resolve\?id=\S+)', up.output)
        assert len(links) == 4, up.output
        for link in links:
            resp = requests.get(link, timeout=10)
            assert resp.status_code == 200, (link, resp.text)
        shared = requests.get(
            f'http://127.0.0.1:{port}/api/v1/resolve?id=doi:10.5072/datadns.turbulence', timeout=10
        ).json()
        assert sorted(loc['site'] for loc in shared['locations']) == ['site-a', 'site-b']

        api = f'http://127.0.0.1:{port}/api/v1'
        token = requests.get(
            f'{api}/user/authentication', auth=('admin', PASSWORD), timeout=10
        ).json()['authToken']['token']
        headers = {'Girder-Token': token}
        notebook = requests.post(
            f'{api}/resolve/launch',
            headers=headers,
            timeout=30,
            params={'id': 'https://doi.org/10.5072/DATADNS.GALAXIES'},
        ).json()
        for _ in range(120):
            notebook = requests.get(
                f'{api}/notebook/{notebook["_id"]}', headers=headers, timeout=10
            ).json()
            if notebook['status'] in ('running', 'error'):
                break
            time.sleep(1)
        assert notebook['status'] == 'running', notebook
        # The URL is the site's single-use open link at its front door: it sets the
        # notebook's cookie and sends the browser to /notebook/<id>/.
        browser = requests.Session()
        opened = browser.get(notebook['url'], timeout=30)
        assert opened.status_code == 200, opened.text
        base = re.sub(r'/(lab|tree)/?$', '', opened.url)
        listing = browser.get(f'{base}/api/contents/Galaxy survey', timeout=10).json()
        assert {'README.md', 'part-1.csv', 'part-2.csv'} <= {c['name'] for c in listing['content']}
    finally:
        code = up.interrupt()
    assert code == 0, up.output
    assert 'stopped 1 notebook(s) at central' in up.output
    with pytest.raises(requests.ConnectionError):
        requests.get(f'{base}/api/status', timeout=5)
    for p in (port, port + 1, port + 2):
        with pytest.raises(requests.ConnectionError):
            requests.get(f'http://127.0.0.1:{p}/api/v1/system/version', timeout=5)

    again = Up(home, port)
    try:
        again.waitUp()
        assert '3 tagged folders' in again.output and '2 tagged folders' in again.output
        resp = requests.get(links[0], timeout=10)
        assert resp.status_code == 200
    finally:
        assert again.interrupt() == 0, again.output


def status(home):
    result = subprocess.run(
        [sys.executable, '-m', 'datadns', 'status', '--home', str(home), '--json'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    state = json.loads(result.stdout)
    return result.returncode, {s['name']: s for s in (state or {}).get('services', [])}


def testUnderDatadnsUpAKilledSiteGirderComesBackWhileTheCentralKeepsResolving(home):
    port = stack.freePortBlock()
    up = Up(home, port)
    shared = f'http://127.0.0.1:{port}/api/v1/resolve?id=doi:10.5072/datadns.turbulence'
    try:
        up.waitUp()
        code, services = status(home)
        assert code == 0
        assert {'SecantusDB', 'Girder central', 'Girder site-a', 'Girder site-b'} <= set(services)
        assert {'feder8 site-a', 'feder8 site-b'} <= set(services)
        assert all(s['alive'] and s['status'] == 'running' for s in services.values()), services
        killed = services['Girder site-a']['pid']
        os.killpg(killed, signal.SIGKILL)

        siteA = f'http://127.0.0.1:{port + 1}/api/v1/system/version'
        answers, deadline = [], time.monotonic() + 120
        while True:
            answers.append(requests.get(shared, timeout=10).status_code)
            try:
                if requests.get(siteA, timeout=2).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, up.output
            time.sleep(0.5)
        assert set(answers) == {200}, answers
        assert 'Girder site-a exited (code -9); restarting it' in up.output
        code, services = status(home)
        assert services['Girder site-a']['pid'] != killed
        assert services['Girder site-a']['restarts'] == 1
        assert services['Girder central']['restarts'] == 0
        plain = subprocess.run(
            [sys.executable, '-m', 'datadns', 'status', '--home', str(home)],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout
        assert 'Data DNS is running' in plain and 'restarted 1 time(s)' in plain
        # Back in the federation: site-a heartbeats again and is healthy at the central.
        for _ in range(60):
            locations = requests.get(shared, timeout=10).json()['locations']
            if all(loc['healthy'] for loc in locations):
                break
            time.sleep(1)
        assert sorted(loc['site'] for loc in locations if loc['healthy']) == ['site-a', 'site-b']
    finally:
        assert up.interrupt() == 0, up.output
    assert status(home)[0] == 3


def testDatadnsUpWithTheSlurmBackendRunsNotebooksAsSlurmJobs(home):
    requireSlurm()
    port = stack.freePortBlock()
    up = Up(home, port, '--backend', 'slurm')
    try:
        up.waitUp()
        assert 'starting Slurm' in up.output
        api = f'http://127.0.0.1:{port}/api/v1'
        headers = {
            'Girder-Token': requests.get(
                f'{api}/user/authentication', auth=('admin', PASSWORD), timeout=10
            ).json()['authToken']['token']
        }
        notebook = requests.post(
            f'{api}/resolve/launch',
            headers=headers,
            timeout=30,
            params={'id': 'doi:10.5072/datadns.galaxies'},
        ).json()
        for _ in range(120):
            notebook = requests.get(
                f'{api}/notebook/{notebook["_id"]}', headers=headers, timeout=10
            ).json()
            if notebook['status'] in ('running', 'error'):
                break
            time.sleep(1)
        assert notebook['status'] == 'running', notebook
        jobs = subprocess.run(
            ['squeue', '-h', f'--name=datadns-{notebook["remoteId"]}', '-o', '%T'],
            capture_output=True,
            text=True,
        ).stdout.split()
        assert jobs == ['RUNNING']
    finally:
        assert up.interrupt() == 0, up.output
