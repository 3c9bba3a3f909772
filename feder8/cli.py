"""feder8's command line: ``run`` (the sidecar), ``sync`` (one registration), ``rotate``.

Every option can also come from the environment (``FEDER8_*``), which is how a
container or a systemd unit configures it.
"""

import logging
import signal
import sys
import threading

import click

from .sidecar import Config, PermanentError, Sidecar, Stopped


def _options(fn):
    options = [
        click.option(
            '--site-name',
            envvar='FEDER8_SITE_NAME',
            default=None,
            help="This site's name in the federation (default: the site's resolver.site_name). "
            "Set at a fresh site; refused if the site's resolver.site_name says otherwise.",
        ),
        click.option(
            '--girder-url',
            envvar='FEDER8_GIRDER_URL',
            required=True,
            help='API URL of the local Girder, e.g. http://localhost:8080/api/v1.',
        ),
        click.option(
            '--girder-api-key',
            envvar='FEDER8_GIRDER_API_KEY',
            required=True,
            help='API key of a local admin (reads datasets, makes the federation service '
            'account and its launch credential).',
        ),
        click.option(
            '--public-url',
            envvar='FEDER8_PUBLIC_URL',
            default=None,
            help="The site's public API URL that the central hands out (default: --girder-url).",
        ),
        click.option(
            '--central-url',
            envvar='FEDER8_CENTRAL_URL',
            required=True,
            help='API URL of the central resolver.',
        ),
        click.option(
            '--central-api-key',
            envvar='FEDER8_CENTRAL_API_KEY',
            required=True,
            help='API key of a registrar at the central.',
        ),
        click.option(
            '--interval',
            envvar='FEDER8_INTERVAL',
            default=30.0,
            show_default=True,
            type=click.FloatRange(min=0.1),
            help='Seconds between heartbeats.',
        ),
        click.option(
            '--collections',
            envvar='FEDER8_COLLECTIONS',
            default='',
            help='Comma-separated collection names or ids to publish (default: all).',
        ),
        click.option(
            '--include-private',
            envvar='FEDER8_INCLUDE_PRIVATE',
            is_flag=True,
            help='Also publish datasets whose folder is not public.',
        ),
        click.option(
            '--no-launch-credential',
            envvar='FEDER8_NO_LAUNCH_CREDENTIAL',
            is_flag=True,
            help='Do not let the central launch notebooks here.',
        ),
        click.option(
            '--front-door-url',
            envvar='FEDER8_FRONT_DOOR_URL',
            default=None,
            help="Origin of the site's notebook front door, if notebook URLs are not on the "
            'host of --public-url (the central accepts notebook URLs only on those).',
        ),
        click.option(
            '--weight',
            envvar='FEDER8_WEIGHT',
            type=click.FloatRange(0, 1000),
            default=None,
            help='Routing weight among sites holding a dataset.',
        ),
        click.option(
            '--capacity',
            envvar='FEDER8_CAPACITY',
            type=click.IntRange(min=0),
            default=None,
            help='Notebooks this site can run at once (sent with each heartbeat beside the '
            'number running, for routing).',
        ),
        click.option(
            '--full-every',
            envvar='FEDER8_FULL_EVERY',
            default=3600.0,
            show_default=True,
            type=click.FloatRange(min=1),
            help='Seconds between full re-registrations (a safety net).',
        ),
        click.option('-v', '--verbose', is_flag=True, help='Log debugging detail.'),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _config(kw):
    logging.basicConfig(
        level=logging.DEBUG if kw['verbose'] else logging.INFO,
        format=f'%(asctime)s feder8[{kw["site_name"] or "site"}] %(levelname)s %(message)s',
        stream=sys.stderr,
    )
    # girder-client logs request URLs with tokens at DEBUG; keep secrets out of logs.
    logging.getLogger('urllib3').setLevel(logging.WARNING)
    return Config(
        siteName=kw['site_name'],
        girderUrl=kw['girder_url'].rstrip('/'),
        girderApiKey=kw['girder_api_key'],
        publicUrl=(kw['public_url'] or kw['girder_url']).rstrip('/'),
        centralUrl=kw['central_url'].rstrip('/'),
        centralApiKey=kw['central_api_key'],
        interval=kw['interval'],
        collections=tuple(c.strip() for c in kw['collections'].split(',') if c.strip()),
        includePrivate=kw['include_private'],
        launchCredential=not kw['no_launch_credential'],
        weight=kw['weight'],
        capacity=kw['capacity'],
        fullEvery=kw['full_every'],
        frontDoorUrl=(kw['front_door_url'] or '').rstrip('/') or None,
    )


@click.group()
def main():
    """feder8: register this site's datasets with a central Data DNS resolver."""


@main.command()
@_options
def run(**kw):
    """Register, then heartbeat and send changes every interval, until SIGTERM/SIGINT."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        Sidecar(_config(kw), stop).run()
    except PermanentError as exc:
        logging.getLogger('feder8').error('giving up: %s', exc)
        sys.exit(2)


#: Seconds ``sync`` and ``rotate`` keep retrying before they give up.
ONCE_SECONDS = 60
#: The longest wait between two tries of ``sync`` and ``rotate``, in seconds.
ONCE_MAX_BACKOFF = 5.0


def _once(kw, command, work):
    """``work(sidecar)`` once, retrying for at most ONCE_SECONDS; exit non-zero on failure."""
    config = _config(kw)
    config.maxBackoff = ONCE_MAX_BACKOFF
    stop = threading.Event()
    # One command gives up after a short while rather than retrying for ever.
    timer = threading.Timer(ONCE_SECONDS, stop.set)
    timer.daemon = True
    timer.start()
    try:
        return work(Sidecar(config, stop))
    except Stopped:
        click.echo(
            f'feder8 {command}: gave up after {ONCE_SECONDS}s; see the retries logged above',
            err=True,
        )
        sys.exit(1)
    except PermanentError as exc:
        click.echo(f'feder8 {command}: {exc}', err=True)
        sys.exit(2)
    finally:
        timer.cancel()


@main.command()
@_options
def sync(**kw):
    """One full registration, then exit (non-zero with a message on failure)."""
    result = _once(kw, 'sync', Sidecar.syncOnce)
    click.echo(
        f'registered {result["total"]} datasets for site "{result["site"]}" '
        f'(added {result["added"]}, updated {result["updated"]}, removed '
        f'{result["removed"]}, rejected {len(result["rejected"])})'
    )


@main.command()
@_options
def rotate(**kw):
    """Replace the launch credential: make a new key, register it, revoke the old ones."""
    result = _once(kw, 'rotate', Sidecar.rotate)
    click.echo(
        f'rotated the launch credential of site "{result["site"]}" '
        f'({result["total"]} datasets registered)'
    )
