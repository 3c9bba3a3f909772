"""``datadns``: run an embedded Data DNS federation on one machine.

``datadns up`` starts SecantusDB (data kept under ``--home``), a central resolver
and two sites (each a Girder with the plugin), gives each site sample datasets
on disk, and prints where to go. It restarts a process that dies (see
``datadns.supervisor``); Ctrl-C stops every process it started; a second run
reuses the data. ``datadns status`` shows what runs.
"""

import json
import os
import secrets
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import click
import requests

from . import sample, stack
from .federation import Federation
from .supervisor import Supervisor, readState

SITES = ('site-a', 'site-b')


def _adminPassword(home):
    """The admin password: from the environment, else generated once and kept on disk."""
    if os.environ.get('DATADNS_ADMIN_PASSWORD'):
        return os.environ['DATADNS_ADMIN_PASSWORD']
    path = Path(home) / 'admin-password'
    if not path.exists():
        path.write_text(secrets.token_urlsafe(12) + '\n')
        path.chmod(0o600)
    return path.read_text().strip()


@click.group()
def main():
    """Run Data DNS on this machine."""


@main.command()
@click.option(
    '--home',
    default=lambda: os.environ.get('DATADNS_HOME', 'var'),
    show_default='var (or $DATADNS_HOME)',
    type=click.Path(file_okay=False),
    help='Where the database, the sample data and the logs are kept.',
)
@click.option(
    '--port',
    default=8080,
    show_default=True,
    envvar='DATADNS_PORT',
    help='Port of the central resolver; the sites take the next ones.',
)
@click.option(
    '--admin',
    'adminLogin',
    default='admin',
    show_default=True,
    envvar='DATADNS_ADMIN_LOGIN',
    help='Admin login at every server.',
)
@click.option(
    '--interval',
    default=10.0,
    show_default=True,
    envvar='DATADNS_INTERVAL',
    help="Seconds between each feder8's heartbeats.",
)
@click.option(
    '--backend',
    default='process',
    show_default=True,
    envvar='DATADNS_BACKEND',
    type=click.Choice(['process', 'slurm']),
    help='How the sites start notebooks; slurm starts a one-node Slurm cluster on this '
    'machine first (scripts/slurm.sh, as root) unless one answers already.',
)
def up(home, port, adminLogin, interval, backend):
    """Start a central resolver and two sites with sample data; Ctrl-C stops them.

    A process that dies is restarted (with backoff) while the others keep serving;
    `datadns status` shows what runs.
    """
    home = Path(home).resolve()
    (home / 'logs').mkdir(parents=True, exist_ok=True)
    password = _adminPassword(home)
    stopping = threading.Event()

    def stopAll(*_):
        stopping.set()

    signal.signal(signal.SIGTERM, stopAll)
    signal.signal(signal.SIGINT, stopAll)

    def report(message, error=False):
        click.secho(message, fg='red' if error else 'green', err=error)

    supervisor = Supervisor(report=report, stateFile=_stateFile(home))

    def start(service, what, label, url=None):
        click.echo(f'  starting {what} ...', nl=False)
        service.start()
        supervisor.add(label, service, url)
        click.echo(' ok')
        return service

    fed = None
    startedSlurm = False
    try:
        click.secho(f'Data DNS: starting the embedded stack in {home}', bold=True)
        if backend == 'slurm':
            click.echo('  starting Slurm (one node: munged, slurmctld, slurmd) ...', nl=False)
            startedSlurm = _startSlurm()
            click.echo(' ok' if startedSlurm else ' already running')
        db = start(
            stack.SecantusDB(storage=home / 'db', port=_free(port + 100), logDir=home / 'logs'),
            'SecantusDB (data kept on disk)',
            'SecantusDB',
        )
        env = {}
        if stack.Redis.available():
            redis = start(stack.Redis(logDir=home / 'logs'), 'Redis (notifications)', 'Redis')
            env['GIRDER_NOTIFICATION_REDIS_URL'] = redis.url
        fed = Federation(
            db.uri,
            home,
            sites=SITES,
            password=password,
            basePort=port,
            interval=interval,
            env=env,
            withSampleData=False,
            siteSettings={'resolver.backend': backend},
        )
        for name in fed.names():
            click.echo(
                f'  starting Girder "{name}" on port {port + fed.names().index(name)} ...', nl=False
            )
            girder = fed.startGirder(name)
            supervisor.add(f'Girder {name}', girder, girder.url)
            click.echo(' ok')
        for name in SITES:
            click.echo(f'  sample datasets at {name} ...', nl=False)
            fed.datasets[name] = sample.provisionSite(
                fed.clients[name], name, home / 'data' / name, home / 'assetstore' / name
            )
            click.echo(f' {len(fed.datasets[name])} tagged folders')
        fed.start(girders=False)
        for name in SITES:
            click.echo(f'  starting feder8 for {name} ...', nl=False)
            supervisor.add(f'feder8 {name}', fed.startFeder8(name))
            click.echo(' ok')
        click.echo('  waiting for the sites to register ...', nl=False)
        stack.waitFor(
            lambda: len(fed.clients['central'].get('resolver/site')) == len(SITES),
            60,
            'site registration',
        )
        click.echo(' ok')
        _printWelcome(fed.girders, fed.datasets, adminLogin, password, home)
        while not stopping.wait(0.5):
            supervisor.check()
    except Exception as exc:
        click.secho(f'Failed: {exc}', fg='red', err=True)
        raise SystemExit(1)
    finally:
        click.echo('Stopping ...')
        if fed is not None:
            _stopNotebooks(fed)
        supervisor.stop()
        if startedSlurm:
            _slurm('stop')
        click.echo('Stopped. Data kept in %s' % home)


#: The one-node Slurm cluster's script, in a checkout (the tests and demos use it).
SLURM_SCRIPT = Path(__file__).resolve().parent.parent / 'scripts' / 'slurm.sh'


def _slurm(action):
    if not SLURM_SCRIPT.exists():
        raise click.ClickException(
            f'{SLURM_SCRIPT} is missing: --backend slurm needs a checkout of Data DNS, or a '
            'running Slurm (sinfo answers).'
        )
    # From /, as the daemons keep the directory they start in.
    result = subprocess.run(
        [str(SLURM_SCRIPT), action], capture_output=True, text=True, cwd='/', timeout=120
    )
    if result.returncode != 0:
        raise click.ClickException(f'scripts/slurm.sh {action} failed: {result.stderr.strip()}')


def _startSlurm():
    """Start the one-node Slurm cluster unless Slurm answers already; True if started here."""
    if (
        shutil.which('sinfo')
        and subprocess.run(['sinfo', '-h'], capture_output=True).returncode == 0
    ):
        return False
    _slurm('start')
    return True


def _stateFile(home):
    return Path(home) / 'state.json'


@main.command()
@click.option(
    '--home',
    default=lambda: os.environ.get('DATADNS_HOME', 'var'),
    show_default='var (or $DATADNS_HOME)',
    type=click.Path(file_okay=False),
    help='The home of the `datadns up` to look at.',
)
@click.option('--json', 'asJson', is_flag=True, help='Print the state as JSON.')
def status(home, asJson):
    """Show what `datadns up` runs: each process, its pid, restarts, and whether it answers.

    Exits with 0 while `datadns up` runs, 3 when it does not.
    """
    home = Path(home).resolve()
    state = readState(_stateFile(home))
    if state is not None:
        for service in state['services']:
            service['answers'] = _answers(service) if service['alive'] else False
    if asJson:
        click.echo(json.dumps(state, indent=1))
    elif state is None:
        click.echo(f'Data DNS is not running in {home} (no state file).')
    else:
        if state['running']:
            click.secho(
                f'Data DNS is running in {home} (datadns up: pid {state["pid"]}, '
                f'since {state["started"]}).',
                bold=True,
            )
        else:
            click.secho(
                f'Data DNS is not running in {home}: the datadns up with pid {state["pid"]} '
                'is gone. What it had started:',
                fg='red',
            )
        for service in state['services']:
            if not service['alive']:
                what = service['status'] if service['status'] != 'running' else 'not running'
            elif service['answers'] is False:
                what = 'running, not answering'
            else:
                what = 'running'
            line = f'  {service["name"]:16s} pid {service["pid"]!s:8s} {what}'
            if service['restarts']:
                line += f', restarted {service["restarts"]} time(s)'
            if service['url']:
                line += f'  {service["url"]}/'
            click.echo(line)
    raise SystemExit(0 if state is not None and state['running'] else 3)


def _answers(service):
    """Whether a Girder answers (None for a process with no URL to ask)."""
    if not service.get('url'):
        return None
    try:
        return requests.get(f'{service["url"]}/api/v1/system/version', timeout=2).ok
    except requests.RequestException:
        return False


def _stopNotebooks(fed):
    """Stop the notebooks the servers started: they outlive a Girder restart by design,
    but Ctrl-C on the whole stack should leave nothing running."""
    for name, gc in fed.clients.items():
        try:
            live = gc.get('notebook', parameters={'live': 'true', 'limit': 0})
            for notebook in live:
                gc.delete(f'notebook/{notebook["_id"]}')
            if live:
                click.echo(f'  stopped {len(live)} notebook(s) at {name}')
        except Exception as exc:  # noqa: BLE001 - shutting down: report, go on
            click.echo(f'  could not stop the notebooks at {name}: {exc}', err=True)


def _free(port):
    return port if stack.portFree(port) else stack.freePort()


def _printWelcome(girders, datasets, login, password, home):
    central = girders['central']
    click.echo()
    click.secho('Data DNS is up.', bold=True, fg='green')
    for name, girder in girders.items():
        click.echo(f'  {name:8s} {girder.url}/')
    click.echo(f'  admin login: {login}   password: {password}   (kept in {home}/admin-password)')
    click.echo()
    click.echo('Resolve a dataset at the central (JSON for API clients, a page in a browser):')
    shown = {}
    for site in ('site-a', 'site-b'):
        for name, identifier, _folder in datasets[site]:
            shown.setdefault(identifier, (name, []))[1].append(site)
    for identifier, (name, where) in shown.items():
        click.echo(f'  {central.apiUrl}/resolve?id={identifier}')
        click.echo(f'      {name}, held by {" and ".join(where)}')
    click.echo()
    click.echo(f'Launch from a browser: {central.url}/#resolve?id={datasets["site-a"][0][1]}')
    click.echo()
    click.echo('Press Ctrl-C to stop everything.')
