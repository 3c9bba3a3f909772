"""Plugin settings: keys, defaults and validators.

Every setting an operator can change lives here, with its default beside it, so
the admin page, the docs and the code agree on one list.
"""

import ipaddress
import json
import re
import secrets
import socket

from bson import ObjectId
from girder import events
from girder.exceptions import ValidationException
from girder.models.setting import Setting
from girder.models.user import User
from girder.utility import setting_utilities

from . import cache


class PluginSettings:
    #: Folder metadata key that carries a dataset's identifier (a string or a list).
    IDENTIFIER_KEY = 'resolver.identifier_key'
    #: This site's name in the federation; local dataset entries carry it.
    SITE_NAME = 'resolver.site_name'
    #: Public API URL of this site (what the central hands out); empty = derived from requests.
    SITE_API_URL = 'resolver.site_api_url'
    #: Seconds after its last heartbeat that a site stops counting as healthy.
    HEARTBEAT_TTL = 'resolver.heartbeat_ttl'
    #: Name of the Girder group whose members may register sites (admins always may).
    REGISTRAR_GROUP = 'resolver.registrar_group'
    #: Largest number of datasets accepted in one registration request.
    MAX_REGISTRATION = 'resolver.max_registration'
    #: Launcher backend: 'process' or 'docker'.
    BACKEND = 'resolver.backend'
    #: Notebook image for the docker backend.
    IMAGE = 'resolver.image'
    #: Memory limit of a notebook container, e.g. '1g'.
    MEMORY_LIMIT = 'resolver.memory_limit'
    #: CPU limit of a notebook container, in CPUs (e.g. 1.5); 0 = no limit.
    CPU_LIMIT = 'resolver.cpu_limit'
    #: Most processes and threads one notebook container may hold; 0 = no limit.
    PIDS_LIMIT = 'resolver.pids_limit'
    #: Host name or address put in notebook URLs handed to browsers.
    NOTEBOOK_HOST = 'resolver.notebook_host'
    #: Seconds of inactivity after which the culler stops a notebook.
    IDLE_TIMEOUT = 'resolver.idle_timeout'
    #: Seconds after which a notebook is stopped whatever its activity (0 = never).
    MAX_AGE = 'resolver.max_age'
    #: Seconds between two rounds of the notebook culler.
    CULL_INTERVAL = 'resolver.cull_interval'
    #: How many live notebooks one person may hold at a site.
    USER_CAP = 'resolver.user_cap'
    #: Number of warm, unclaimed notebooks kept ready (0 = no pool).
    POOL_SIZE = 'resolver.pool_size'
    #: JSON object mapping a folder id to a dataset path on disk, for folders not imported
    #: from a filesystem assetstore.
    DATA_PATHS = 'resolver.data_paths'
    #: Sustained requests per second one client address may make without logging in to
    #: the routes that query the index (/resolve, /resolver/dataset); 0 = no limit.
    ANONYMOUS_RATE = 'resolver.anonymous_rate'
    #: How many of those requests one address may make at once before the rate applies.
    ANONYMOUS_BURST = 'resolver.anonymous_burst'
    #: Bearer secret that lets a Prometheus scraper read /resolver/metrics (empty = admins only).
    METRICS_TOKEN = 'resolver.metrics_token'
    #: Seconds a Girder process reuses the index entries and site records it read for
    #: /resolve (0 = read them on every request); see girder_resolver.cache.
    CACHE_SECONDS = 'resolver.cache_seconds'
    #: JSON list of host names and CIDR ranges this resolver may talk to although they are
    #: plain http or loopback/private/link-local (see girder_resolver.federation).
    ALLOWED_SITE_HOSTS = 'resolver.allowed_site_hosts'
    #: This site's federation service account: {"userId": <id>, "central": <central name>}.
    #: Only that (non-admin) account's launch-scoped keys may launch on someone's behalf,
    #: and only for identities of that central. Written by feder8; empty = no delegation.
    FEDERATION_SERVICE = 'resolver.federation_service'
    #: Seconds a site has to take a call: to accept the connection, and for a launch to
    #: answer it (a site records a launch and answers at once). A launch that gets no
    #: answer in this time moves on to the next site that holds the dataset.
    SITE_CONNECT_TIMEOUT = 'resolver.site_connect_timeout'
    #: Seconds to wait for a site's answer to any other call (status, stop, token).
    SITE_READ_TIMEOUT = 'resolver.site_read_timeout'
    #: Seconds within which a launch tries the sites holding a dataset, one after the other.
    LAUNCH_DEADLINE = 'resolver.launch_deadline'
    #: Failed calls in a row after which a site is suspect (one failed launch is enough).
    SUSPECT_AFTER = 'resolver.suspect_after'
    #: Seconds a suspect site is passed over before it is tried again (a heartbeat from a
    #: site whose Girder answers its sidecar ends it sooner).
    SUSPECT_SECONDS = 'resolver.suspect_seconds'
    #: Most live notebooks this site runs at once, everyone's together (0 = no cap).
    SITE_CAP = 'resolver.site_cap'
    #: Where bubblewrap cannot run, start process-backend notebooks unsandboxed rather
    #: than refuse (trusted users only: see docs/security.md).
    ALLOW_UNSANDBOXED = 'resolver.allow_unsandboxed'
    #: Whether this Girder starts and supervises the front door (configurable-http-proxy).
    FRONTDOOR_MANAGED = 'resolver.frontdoor_managed'
    #: The front door's public URL, what browsers open ('' = http://<notebook_host>:<port>).
    FRONTDOOR_URL = 'resolver.frontdoor_url'
    #: Port of the managed front door (0 = a free port chosen when it starts).
    FRONTDOOR_PORT = 'resolver.frontdoor_port'
    #: Address the managed front door listens on ('' = loopback when notebook_host is).
    FRONTDOOR_IP = 'resolver.frontdoor_ip'
    #: REST API URL of a front door run as a service of its own (frontdoor_managed false).
    FRONTDOOR_API_URL = 'resolver.frontdoor_api_url'
    #: The configurable-http-proxy executable ('' = the one scripts/setup.sh installed).
    FRONTDOOR_COMMAND = 'resolver.frontdoor_command'


_DEFAULTS = {
    PluginSettings.IDENTIFIER_KEY: 'identifier',
    PluginSettings.SITE_API_URL: '',
    PluginSettings.HEARTBEAT_TTL: 90,
    PluginSettings.REGISTRAR_GROUP: '',
    PluginSettings.MAX_REGISTRATION: 200000,
    PluginSettings.BACKEND: 'process',
    PluginSettings.IMAGE: 'localhost/datadns-notebook:latest',
    PluginSettings.MEMORY_LIMIT: '1g',
    PluginSettings.CPU_LIMIT: 1.0,
    PluginSettings.PIDS_LIMIT: 512,
    PluginSettings.NOTEBOOK_HOST: '127.0.0.1',
    PluginSettings.IDLE_TIMEOUT: 3600,
    PluginSettings.MAX_AGE: 0,
    PluginSettings.CULL_INTERVAL: 60,
    PluginSettings.USER_CAP: 2,
    PluginSettings.POOL_SIZE: 0,
    PluginSettings.DATA_PATHS: {},
    PluginSettings.ANONYMOUS_RATE: 10,
    PluginSettings.ANONYMOUS_BURST: 100,
    PluginSettings.METRICS_TOKEN: '',
    PluginSettings.CACHE_SECONDS: 2,
    PluginSettings.ALLOWED_SITE_HOSTS: [],
    PluginSettings.FEDERATION_SERVICE: {},
    PluginSettings.SITE_CONNECT_TIMEOUT: 2,
    PluginSettings.SITE_READ_TIMEOUT: 5,
    PluginSettings.LAUNCH_DEADLINE: 15,
    PluginSettings.SUSPECT_AFTER: 3,
    PluginSettings.SUSPECT_SECONDS: 30,
    PluginSettings.SITE_CAP: 50,
    PluginSettings.ALLOW_UNSANDBOXED: False,
    PluginSettings.FRONTDOOR_MANAGED: True,
    PluginSettings.FRONTDOOR_URL: '',
    PluginSettings.FRONTDOOR_PORT: 0,
    PluginSettings.FRONTDOOR_IP: '',
    PluginSettings.FRONTDOOR_API_URL: '',
    PluginSettings.FRONTDOOR_COMMAND: '',
}
# Not a setting an operator changes: a random id per database (see instanceId).
INSTANCE_KEY = 'resolver.instance_id'

_SITE_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
_METADATA_KEY_RE = re.compile(r'^[^.$\x00]{1,128}$')


def get(key):
    """A setting's value; read from the database at most every couple of seconds.

    This process forgets a value as soon as it is saved here (see :func:`bind`);
    other Girder processes see the change within ``cache.SETTINGS_SECONDS``.
    """
    return cache.settings.get(key, lambda: Setting().get(key), cache.SETTINGS_SECONDS)


def _forget(event):
    key = (event.info or {}).get('key')
    if isinstance(key, str):
        cache.settings.discard(key)


def bind(name):
    """Forget cached values when settings are saved or removed in this process.

    Bound before any other handler of the plugin, so that those handlers, reacting
    to the same save, already read the new value.
    """
    for event in ('model.setting.save', 'model.setting.save.after', 'model.setting.remove'):
        events.bind(event, name, _forget)


def validSiteName(name):
    """True when ``name`` may name a site: 1-64 letters, digits, '.', '_' or '-'."""
    return isinstance(name, str) and bool(_SITE_NAME_RE.match(name))


def _default(key):
    return lambda: _DEFAULTS[key]


for _key in _DEFAULTS:
    setting_utilities.default(_key)(_default(_key))


def instanceId():
    """This installation's random id (made once per database, atomically)."""
    coll = Setting().collection
    doc = coll.find_one({'key': INSTANCE_KEY})
    if doc is None:
        coll.update_one(
            {'key': INSTANCE_KEY},
            {'$setOnInsert': {'value': secrets.token_hex(8)}},
            upsert=True,
        )
        doc = coll.find_one({'key': INSTANCE_KEY})
    return doc['value']


@setting_utilities.default(PluginSettings.SITE_NAME)
def defaultSiteName():
    """A fresh install's name: its host name and instance id, unique without any setup.

    Never a shared constant: two installs that both kept a constant default would
    take each other's users for their own when federated.
    """
    host = re.sub(r'[^A-Za-z0-9-]+', '-', socket.gethostname().split('.')[0]).strip('-_.')
    return f'{(host or "site")[:40]}-{instanceId()[:8]}'


def siteNameIsSet():
    """Whether an admin (or feder8) chose this site's name, rather than it being the default."""
    return Setting().findOne({'key': PluginSettings.SITE_NAME}) is not None


def _positiveInt(doc, minimum=0):
    try:
        doc['value'] = int(doc['value'])
    except (TypeError, ValueError):
        raise ValidationException(f'{doc["key"]} must be a whole number.', 'value')
    if doc['value'] < minimum:
        raise ValidationException(f'{doc["key"]} must be at least {minimum}.', 'value')


@setting_utilities.validator(PluginSettings.IDENTIFIER_KEY)
def _validateIdentifierKey(doc):
    if not isinstance(doc['value'], str) or not _METADATA_KEY_RE.match(doc['value']):
        raise ValidationException(
            'The identifier key must be a metadata key of 1-128 characters without "." or "$".',
            'value',
        )


@setting_utilities.validator(PluginSettings.SITE_NAME)
def _validateSiteName(doc):
    if not validSiteName(doc['value']):
        raise ValidationException(
            'A site name is 1-64 letters, digits, ".", "_" or "-", starting with a letter '
            'or digit.',
            'value',
        )


@setting_utilities.validator(PluginSettings.SITE_API_URL)
def _validateSiteApiUrl(doc):
    value = doc['value'] or ''
    if not isinstance(value, str) or (value and not re.match(r'^https?://[^\s]+$', value)):
        raise ValidationException('The site API URL must be an http(s) URL.', 'value')
    doc['value'] = value.rstrip('/')


@setting_utilities.validator(PluginSettings.REGISTRAR_GROUP)
def _validateRegistrarGroup(doc):
    if not isinstance(doc['value'] or '', str):
        raise ValidationException('The registrar group must be a group name.', 'value')
    doc['value'] = (doc['value'] or '').strip()


@setting_utilities.validator(PluginSettings.BACKEND)
def _validateBackend(doc):
    from .launcher import BACKENDS

    if doc['value'] not in BACKENDS:
        raise ValidationException(
            f'The backend must be one of: {", ".join(sorted(BACKENDS))}.', 'value'
        )


@setting_utilities.validator(
    {PluginSettings.IMAGE, PluginSettings.MEMORY_LIMIT, PluginSettings.NOTEBOOK_HOST}
)
def _validateNonEmptyString(doc):
    if not isinstance(doc['value'], str) or not doc['value'].strip():
        raise ValidationException(f'{doc["key"]} must be a non-empty string.', 'value')
    doc['value'] = doc['value'].strip()


@setting_utilities.validator(PluginSettings.CPU_LIMIT)
def _validateCpuLimit(doc):
    try:
        doc['value'] = float(doc['value'])
    except (TypeError, ValueError):
        raise ValidationException(f'{doc["key"]} must be a number of CPUs, e.g. 1.5.', 'value')
    if not (doc['value'] == 0 or 0.01 <= doc['value'] <= 1024):
        raise ValidationException(
            f'{doc["key"]} must be from 0.01 to 1024 CPUs, or 0 for no limit.', 'value'
        )


@setting_utilities.validator(PluginSettings.PIDS_LIMIT)
def _validatePidsLimit(doc):
    _positiveInt(doc, 0)
    if 0 < doc['value'] < 32:
        raise ValidationException(
            f'{doc["key"]} must be at least 32 (a server and a kernel need about 20), '
            'or 0 for no limit.',
            'value',
        )


@setting_utilities.validator(
    {
        PluginSettings.IDLE_TIMEOUT,
        PluginSettings.HEARTBEAT_TTL,
        PluginSettings.USER_CAP,
        PluginSettings.CULL_INTERVAL,
    }
)
def _validateAtLeastOne(doc):
    _positiveInt(doc, 1)


@setting_utilities.validator(
    {
        PluginSettings.MAX_AGE,
        PluginSettings.POOL_SIZE,
        PluginSettings.MAX_REGISTRATION,
        PluginSettings.SITE_CAP,
    }
)
def _validateNonNegative(doc):
    _positiveInt(doc, 0)


@setting_utilities.validator(PluginSettings.ANONYMOUS_RATE)
def _validateAnonymousRate(doc):
    try:
        doc['value'] = float(doc['value'])
    except (TypeError, ValueError):
        raise ValidationException(f'{doc["key"]} must be a number of requests per second.', 'value')
    if not 0 <= doc['value'] <= 1e6:
        raise ValidationException(f'{doc["key"]} must be from 0 (no limit) to 1000000.', 'value')


@setting_utilities.validator(PluginSettings.ANONYMOUS_BURST)
def _validateAnonymousBurst(doc):
    _positiveInt(doc, 1)


@setting_utilities.validator(PluginSettings.CACHE_SECONDS)
def _validateCacheSeconds(doc):
    try:
        doc['value'] = float(doc['value'])
    except (TypeError, ValueError):
        raise ValidationException(f'{doc["key"]} must be a number of seconds.', 'value')
    if not 0 <= doc['value'] <= 60:
        raise ValidationException(
            f'{doc["key"]} must be between 0 (no reuse) and 60 seconds.', 'value'
        )


@setting_utilities.validator(
    {
        PluginSettings.SITE_CONNECT_TIMEOUT,
        PluginSettings.SITE_READ_TIMEOUT,
        PluginSettings.LAUNCH_DEADLINE,
        PluginSettings.SUSPECT_SECONDS,
    }
)
def _validateSiteSeconds(doc):
    try:
        doc['value'] = float(doc['value'])
    except (TypeError, ValueError):
        raise ValidationException(f'{doc["key"]} must be a number of seconds.', 'value')
    if not 0.1 <= doc['value'] <= 600:
        raise ValidationException(f'{doc["key"]} must be between 0.1 and 600 seconds.', 'value')


@setting_utilities.validator(PluginSettings.SUSPECT_AFTER)
def _validateSuspectAfter(doc):
    _positiveInt(doc, 1)


@setting_utilities.validator(PluginSettings.DATA_PATHS)
def _validateDataPaths(doc):
    value = doc['value']
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value or '{}')
        except ValueError:
            raise ValidationException('Data paths must be a JSON object.', 'value')
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.startswith('/') for k, v in value.items()
    ):
        raise ValidationException(
            'Data paths must map folder ids to absolute paths on disk.', 'value'
        )
    doc['value'] = value


def parseAllowedHosts(value):
    """``resolver.allowed_site_hosts`` as (names, networks); ValueError for a bad entry."""
    names, networks = set(), []
    for entry in value or ():
        if not isinstance(entry, str) or not entry.strip():
            raise ValueError('each entry is a host name or a CIDR range, as a string')
        entry = entry.strip().lower().rstrip('.')
        try:
            networks.append(ipaddress.ip_network(entry.strip('[]'), strict=False))
            continue
        except ValueError:
            pass
        if not re.match(r'^[a-z0-9]([a-z0-9.-]{0,252})$', entry):
            raise ValueError(f'"{entry}" is neither a host name nor a CIDR range')
        names.add(entry)
    return names, networks


def _jsonValue(doc, what):
    value = doc['value']
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except ValueError:
            raise ValidationException(f'{doc["key"]} must be {what} in JSON.', 'value')
    return value


@setting_utilities.validator(PluginSettings.ALLOWED_SITE_HOSTS)
def _validateAllowedSiteHosts(doc):
    value = _jsonValue(doc, 'a list of host names and CIDR ranges') or []
    if not isinstance(value, list) or len(value) > 1000:
        raise ValidationException(
            f'{doc["key"]} must be a JSON list of host names and CIDR ranges, '
            'e.g. ["127.0.0.1", "10.0.0.0/8", "site.example.org"].',
            'value',
        )
    try:
        parseAllowedHosts(value)
    except ValueError as exc:
        raise ValidationException(f'{doc["key"]}: {exc}.', 'value')
    doc['value'] = [entry.strip() for entry in value]


@setting_utilities.validator(PluginSettings.FEDERATION_SERVICE)
def _validateFederationService(doc):
    value = _jsonValue(doc, 'an object') or {}
    if not isinstance(value, dict) or set(value) - {'userId', 'central'}:
        raise ValidationException(
            f'{doc["key"]} is {{"userId": <user id>, "central": <central name>}}, or {{}}.',
            'value',
        )
    if value:
        userId, central = value.get('userId'), value.get('central')
        if not isinstance(userId, str) or not ObjectId.is_valid(userId):
            raise ValidationException(f'{doc["key"]}: "userId" must be a user id.', 'value')
        user = User().load(userId, force=True)
        if user is None:
            raise ValidationException(f'{doc["key"]}: no user {userId}.', 'value')
        if user.get('admin'):
            raise ValidationException(
                f'{doc["key"]}: the federation service account must not be an admin (an '
                "admin's key would let the central launch on every folder here).",
                'value',
            )
        if not validSiteName(central):
            raise ValidationException(
                f'{doc["key"]}: "central" must be the central\'s site name.', 'value'
            )
    doc['value'] = value


@setting_utilities.validator(PluginSettings.METRICS_TOKEN)
def _validateMetricsToken(doc):
    value = doc['value'] or ''
    if not isinstance(value, str) or (value and len(value) < 16):
        raise ValidationException(
            'The metrics secret must be empty (admins only) or at least 16 characters.', 'value'
        )
    doc['value'] = value


@setting_utilities.validator({PluginSettings.ALLOW_UNSANDBOXED, PluginSettings.FRONTDOOR_MANAGED})
def _validateBoolean(doc):
    value = doc['value']
    if isinstance(value, str) and value.strip().lower() in ('true', 'false'):
        value = value.strip().lower() == 'true'
    if not isinstance(value, bool):
        raise ValidationException(f'{doc["key"]} must be true or false.', 'value')
    doc['value'] = value


@setting_utilities.validator({PluginSettings.FRONTDOOR_URL, PluginSettings.FRONTDOOR_API_URL})
def _validateFrontDoorUrl(doc):
    value = doc['value'] or ''
    if not isinstance(value, str) or (value and not re.match(r'^https?://[^\s/?#]+/?$', value)):
        raise ValidationException(
            f'{doc["key"]} must be empty or an http(s) URL of a host (and port), no path.', 'value'
        )
    doc['value'] = value.rstrip('/')


@setting_utilities.validator(PluginSettings.FRONTDOOR_PORT)
def _validateFrontDoorPort(doc):
    _positiveInt(doc, 0)
    if doc['value'] > 65535:
        raise ValidationException(f'{doc["key"]} must be a TCP port (0 = any free one).', 'value')


@setting_utilities.validator({PluginSettings.FRONTDOOR_IP, PluginSettings.FRONTDOOR_COMMAND})
def _validateOptionalString(doc):
    if not isinstance(doc['value'] or '', str):
        raise ValidationException(f'{doc["key"]} must be a string.', 'value')
    doc['value'] = (doc['value'] or '').strip()
