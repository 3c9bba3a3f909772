"""Plugin settings: every one declared once, with its default, kind and help text.

:data:`SETTINGS` is the one list: the admin page renders it (through
``GET /resolver/setting``), Girder gets the defaults from it, and the validators
below guard each key.
"""

import dataclasses
import ipaddress
import json
import os
import re
import secrets
import socket

from bson import ObjectId
from girder import events
from girder.exceptions import ValidationException
from girder.models.setting import Setting
from girder.models.user import User
from girder.utility import setting_utilities

from . import cache, tools
from .launcher import BACKENDS
from .primitives import validSiteName


class PluginSettings:
    """The settings' keys; what each means is in :data:`SETTINGS`."""

    IDENTIFIER_KEY = 'resolver.identifier_key'
    SITE_NAME = 'resolver.site_name'
    SITE_API_URL = 'resolver.site_api_url'
    HEARTBEAT_TTL = 'resolver.heartbeat_ttl'
    REGISTRAR_GROUP = 'resolver.registrar_group'
    MAX_REGISTRATION = 'resolver.max_registration'
    BACKEND = 'resolver.backend'
    IMAGE = 'resolver.image'
    MEMORY_LIMIT = 'resolver.memory_limit'
    CPU_LIMIT = 'resolver.cpu_limit'
    PIDS_LIMIT = 'resolver.pids_limit'
    WORK_ROOT = 'resolver.work_root'
    SLURM_PARTITION = 'resolver.slurm_partition'
    SLURM_ACCOUNT = 'resolver.slurm_account'
    SLURM_TIME_LIMIT = 'resolver.slurm_time_limit'
    NOTEBOOK_HOST = 'resolver.notebook_host'
    IDLE_TIMEOUT = 'resolver.idle_timeout'
    MAX_AGE = 'resolver.max_age'
    CULL_INTERVAL = 'resolver.cull_interval'
    USER_CAP = 'resolver.user_cap'
    POOL_SIZE = 'resolver.pool_size'
    DATA_PATHS = 'resolver.data_paths'
    ANONYMOUS_RATE = 'resolver.anonymous_rate'
    ANONYMOUS_BURST = 'resolver.anonymous_burst'
    METRICS_TOKEN = 'resolver.metrics_token'
    CACHE_SECONDS = 'resolver.cache_seconds'
    ALLOWED_SITE_HOSTS = 'resolver.allowed_site_hosts'
    FEDERATION_SERVICE = 'resolver.federation_service'
    SITE_CONNECT_TIMEOUT = 'resolver.site_connect_timeout'
    SITE_READ_TIMEOUT = 'resolver.site_read_timeout'
    LAUNCH_DEADLINE = 'resolver.launch_deadline'
    SUSPECT_AFTER = 'resolver.suspect_after'
    SUSPECT_SECONDS = 'resolver.suspect_seconds'
    SITE_CAP = 'resolver.site_cap'
    ALLOW_UNSANDBOXED = 'resolver.allow_unsandboxed'
    FRONTDOOR_MANAGED = 'resolver.frontdoor_managed'
    FRONTDOOR_URL = 'resolver.frontdoor_url'
    FRONTDOOR_PORT = 'resolver.frontdoor_port'
    FRONTDOOR_IP = 'resolver.frontdoor_ip'
    FRONTDOOR_API_URL = 'resolver.frontdoor_api_url'
    FRONTDOOR_COMMAND = 'resolver.frontdoor_command'
    TOOLS = 'resolver.tools'
    DEFAULT_TOOL = 'resolver.default_tool'
    TOOL_KEY = 'resolver.tool_key'
    RUN_CAP = 'resolver.run_cap'
    RUN_TIME_LIMIT = 'resolver.run_time_limit'
    RUN_DIR = 'resolver.run_dir'


#: The kinds of value a setting holds (how the admin page edits it).
KINDS = ('text', 'number', 'boolean', 'choice', 'json', 'secret')
#: Marks a default that is worked out per installation (see :func:`defaultSiteName`).
COMPUTED = object()


@dataclasses.dataclass(frozen=True)
class Declared:
    """One setting: its key, default, kind, label and help text, and the admin page's group.

    ``choices`` (kind ``choice``) is a function answering ``[(value, label), ...]``;
    ``editable`` is false for a setting that a program writes (the page shows it only);
    a ``secret`` is never shown, only whether it is set.
    """

    key: str
    default: object
    kind: str
    label: str
    help: str
    choices: object = None
    editable: bool = True
    group: str = ''


def toolChoices():
    """The site's tools, each as (id, 'id: name'), for the default tool's menu."""
    return [
        (tool['id'], f'{tool["id"]}: {tool["name"]}') for tool in get(PluginSettings.TOOLS) or ()
    ]


def section(group, *settings):
    """``settings``, shown together on the admin page under the title ``group``."""
    return tuple(dataclasses.replace(declared, group=group) for declared in settings)


def backendChoices():
    """The launcher backends, each as (name, 'name: what it does')."""
    out = []
    for name, backend in BACKENDS.items():
        summary = (backend.__doc__ or '').strip().split('\n\n')[0]
        out.append((name, f'{name}: {" ".join(summary.replace("``", "").split())}'))
    return out


_S = PluginSettings
#: Every setting an operator can change, in the order the admin page shows them.
SETTINGS = (
    *section(
        'This site',
        Declared(
            _S.SITE_NAME,
            COMPUTED,
            'text',
            label='Site name',
            help="This site's name in the federation (1-64 letters, digits, '.', '_' or '-'); its "
            'own datasets carry it. Default: its host name and a random id.',
        ),
        Declared(
            _S.SITE_API_URL,
            '',
            'text',
            label='Public API URL',
            help='The API URL the central resolver hands out for this site, e.g. '
            'https://data.example.org/api/v1. Empty: derived from requests.',
        ),
        Declared(
            _S.IDENTIFIER_KEY,
            'identifier',
            'text',
            label='Identifier metadata key',
            help="Folder metadata key that carries a dataset's identifier (a string or a list).",
        ),
        Declared(
            _S.DATA_PATHS,
            {},
            'json',
            label='Data paths',
            help='A JSON object mapping a folder id to its dataset directory on disk, for folders '
            'not imported from a filesystem assetstore.',
        ),
    ),
    *section(
        'Federation',
        Declared(
            _S.HEARTBEAT_TTL,
            90,
            'number',
            label='Heartbeat lifetime (seconds)',
            help='A site stops counting as healthy this long after its last heartbeat.',
        ),
        Declared(
            _S.REGISTRAR_GROUP,
            '',
            'text',
            label='Registrar group',
            help='Members of this Girder group may register sites (admins always may). '
            'Empty: admins only.',
        ),
        Declared(
            _S.MAX_REGISTRATION,
            200000,
            'number',
            label='Largest registration',
            help='Most datasets accepted in one registration request.',
        ),
        Declared(
            _S.ALLOWED_SITE_HOSTS,
            [],
            'json',
            label='Allowed site hosts',
            help='JSON list of host names and CIDR ranges this resolver may talk to although they '
            'are plain http or loopback, private or link-local, e.g. ["10.0.0.0/8"].',
        ),
        Declared(
            _S.SITE_CONNECT_TIMEOUT,
            2,
            'number',
            label='Site connect timeout (seconds)',
            help='A site has this long to accept a call, and a launch there to be answered; a '
            'launch that is not moves on to the next site holding the dataset.',
        ),
        Declared(
            _S.SITE_READ_TIMEOUT,
            5,
            'number',
            label='Site read timeout (seconds)',
            help="How long to wait for a site's answer to any other call (status, stop, token).",
        ),
        Declared(
            _S.LAUNCH_DEADLINE,
            15,
            'number',
            label='Launch deadline (seconds)',
            help='A launch tries the sites holding a dataset, one after the other, within this '
            'time.',
        ),
        Declared(
            _S.SUSPECT_AFTER,
            3,
            'number',
            label='Suspect after (failed calls)',
            help='Failed calls in a row after which a site is suspect (one failed launch is '
            'enough).',
        ),
        Declared(
            _S.SUSPECT_SECONDS,
            30,
            'number',
            label='Suspect for (seconds)',
            help='A suspect site is passed over this long before it is tried again (sooner when a '
            'heartbeat shows that it answers).',
        ),
        Declared(
            _S.FEDERATION_SERVICE,
            {},
            'json',
            label='Federation service account',
            help='The non-admin account whose launch-scoped keys let one central launch here on '
            'its users\' behalf: {"userId": ..., "central": ...}. Written by feder8; '
            'empty: no delegation.',
            editable=False,
        ),
    ),
    *section(
        'Notebooks',
        Declared(
            _S.BACKEND,
            'process',
            'choice',
            label='Launcher backend',
            help='How notebooks are started at this site.',
            choices=backendChoices,
        ),
        Declared(
            _S.ALLOW_UNSANDBOXED,
            False,
            'boolean',
            label='Allow unsandboxed',
            help='Where bubblewrap cannot run, start process-backend notebooks unsandboxed rather '
            'than refuse (trusted users only: see docs/security.md).',
        ),
        Declared(
            _S.IMAGE,
            'localhost/datadns-notebook:latest',
            'text',
            label='Notebook image',
            help='Container image of the docker backend.',
        ),
        Declared(
            _S.MEMORY_LIMIT,
            '1g',
            'text',
            label='Memory limit',
            help='Memory of one notebook container or Slurm job, e.g. 1g; its scratch home '
            "counts against a container's.",
        ),
        Declared(
            _S.CPU_LIMIT,
            1.0,
            'number',
            label='CPU limit',
            help='CPUs one notebook container may use, e.g. 1.5 (a Slurm job asks for this, '
            'rounded up). 0: no limit.',
        ),
        Declared(
            _S.PIDS_LIMIT,
            512,
            'number',
            label='Process limit',
            help='Processes and threads one notebook container may hold (at least 32); bounds a '
            'fork bomb. 0: no limit.',
        ),
        Declared(
            _S.WORK_ROOT,
            '',
            'text',
            label='Work directory',
            help="Directory of the notebooks' working directories (process and slurm "
            "backends); for slurm, on a file system the compute nodes share. '': a directory "
            "under the system's temporary directory.",
        ),
        Declared(
            _S.SLURM_PARTITION,
            '',
            'text',
            label='Slurm partition',
            help="Partition of the slurm backend's notebook jobs. '': the cluster's default.",
        ),
        Declared(
            _S.SLURM_ACCOUNT,
            '',
            'text',
            label='Slurm account',
            help="Account charged for the slurm backend's jobs. '': none.",
        ),
        Declared(
            _S.SLURM_TIME_LIMIT,
            0,
            'number',
            label='Slurm time limit (seconds)',
            help="Most seconds a notebook job runs (sbatch --time). 0: the partition's limit.",
        ),
        Declared(
            _S.NOTEBOOK_HOST,
            '127.0.0.1',
            'text',
            label='Notebook host',
            help="Host name or address of the front door's default URL, handed to browsers.",
        ),
        Declared(
            _S.IDLE_TIMEOUT,
            3600,
            'number',
            label='Idle timeout (seconds)',
            help='A notebook idle this long is stopped.',
        ),
        Declared(
            _S.MAX_AGE,
            0,
            'number',
            label='Maximum age (seconds)',
            help='A notebook is stopped this long after it started, whatever its activity. '
            '0: never.',
        ),
        Declared(
            _S.CULL_INTERVAL,
            60,
            'number',
            label='Cull interval (seconds)',
            help='Time between two rounds of the notebook culler.',
        ),
        Declared(
            _S.USER_CAP,
            2,
            'number',
            label='Notebooks per person',
            help='How many live notebooks one person may hold at this site.',
        ),
        Declared(
            _S.SITE_CAP,
            50,
            'number',
            label='Notebooks at this site',
            help="Most live notebooks this site runs at once, everyone's together. 0: no cap.",
        ),
        Declared(
            _S.POOL_SIZE,
            0,
            'number',
            label='Warm pool size',
            help='Unclaimed notebooks kept ready so a launch is near instant (process '
            'backend). 0: no pool.',
        ),
    ),
    *section(
        'Tools',
        Declared(
            _S.TOOLS,
            COMPUTED,
            'json',
            label='Tools',
            help='JSON list of the tools a notebook may run, each {"id", "name", "description", '
            '"ui": "lab"|"notebook", "kernels": [...], "process": {"env": <absolute path of a '
            'Python environment>}, "docker": {"image": <image>}}; ids are 1-40 lowercase '
            'letters, digits or "-". Default: python, scientific-python and r, built by '
            'scripts/build-tools.sh. See docs/notebooks.md.',
        ),
        Declared(
            _S.DEFAULT_TOOL,
            tools.DEFAULT_TOOL,
            'choice',
            label='Default tool',
            help='The tool a launch runs when neither the person nor the dataset chooses one '
            '(one of the tools above; save a new list of tools first).',
            choices=toolChoices,
        ),
        Declared(
            _S.TOOL_KEY,
            'datadns_tool',
            'text',
            label='Tool metadata key',
            help="Folder metadata key by which a dataset recommends a tool (a tool's id).",
        ),
    ),
    *section(
        'Batch runs',
        Declared(
            _S.RUN_CAP,
            2,
            'number',
            label='Active runs per person',
            help='How many queued or running batch runs one person may have at this site; '
            'one more is refused (429) until one ends.',
        ),
        Declared(
            _S.RUN_TIME_LIMIT,
            3600,
            'number',
            label='Run time limit (seconds)',
            help='A batch run still running after this long is ended and marked failed ("ran '
            'longer than the limit of N s").',
        ),
        Declared(
            _S.RUN_DIR,
            '',
            'text',
            label='Run directory',
            help="Where runs' results directories (RESULTS_DIR) and logs are kept on this "
            'machine until they are uploaded; on a cluster, a file system the compute nodes '
            'share. Empty: <tmp>/datadns-runs.',
        ),
    ),
    *section(
        'Front door',
        Declared(
            _S.FRONTDOOR_MANAGED,
            True,
            'boolean',
            label='Managed front door',
            help='This Girder starts and supervises the front door (configurable-http-proxy); '
            'false when it runs as a service of its own.',
        ),
        Declared(
            _S.FRONTDOOR_URL,
            '',
            'text',
            label='Front door URL',
            help='The public URL browsers open notebooks at, e.g. https://notebooks.example.org. '
            'Empty: http://<notebook host>:<port>.',
        ),
        Declared(
            _S.FRONTDOOR_PORT,
            0,
            'number',
            label='Front door port',
            help='Port of the managed front door. 0: a free port chosen when it first starts.',
        ),
        Declared(
            _S.FRONTDOOR_IP,
            '',
            'text',
            label='Front door address',
            help='Address the managed front door listens on. Empty: loopback when the notebook '
            'host is, else all.',
        ),
        Declared(
            _S.FRONTDOOR_API_URL,
            '',
            'text',
            label='Front door API URL',
            help='REST API URL of a front door run as a service of its own (managed front '
            'door off).',
        ),
        Declared(
            _S.FRONTDOOR_COMMAND,
            '',
            'text',
            label='Front door command',
            help='The configurable-http-proxy executable. Empty: the one scripts/setup.sh '
            'installed.',
        ),
    ),
    *section(
        'Resolution',
        Declared(
            _S.ANONYMOUS_RATE,
            10,
            'number',
            label='Anonymous rate (per second)',
            help='Sustained requests per second one client address may make without logging in '
            'to /resolve and /resolver/dataset. 0: no limit.',
        ),
        Declared(
            _S.ANONYMOUS_BURST,
            100,
            'number',
            label='Anonymous burst',
            help='How many of those requests one address may make at once before the rate applies.',
        ),
        Declared(
            _S.CACHE_SECONDS,
            2,
            'number',
            label='Reuse reads for (seconds)',
            help='How long a Girder process reuses the index entries and site records it read for '
            '/resolve (at most 60). 0: read them on every request.',
        ),
        Declared(
            _S.METRICS_TOKEN,
            '',
            'secret',
            label='Metrics secret',
            help='Bearer secret that lets a Prometheus scraper read /resolver/metrics (at least 16 '
            'characters). Not set: admins only.',
        ),
    ),
)
del _S

#: Each setting's declaration, by key.
DECLARED = {declared.key: declared for declared in SETTINGS}
_DEFAULTS = {d.key: d.default for d in SETTINGS if d.default is not COMPUTED}
# Not a setting an operator changes: a random id per database (see instanceId).
INSTANCE_KEY = 'resolver.instance_id'

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
        PluginSettings.RUN_CAP,
        PluginSettings.RUN_TIME_LIMIT,
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


@setting_utilities.validator(PluginSettings.SLURM_TIME_LIMIT)
def _validateSlurmTimeLimit(doc):
    _positiveInt(doc, 0)


@setting_utilities.validator({PluginSettings.SLURM_PARTITION, PluginSettings.SLURM_ACCOUNT})
def _validateSlurmName(doc):
    value = (doc['value'] or '').strip() if isinstance(doc['value'] or '', str) else None
    if value is None or not re.match(r'^[A-Za-z0-9_.,-]{0,64}$', value):
        raise ValidationException(
            f'{doc["key"]} must be a Slurm name (letters, digits, "_", ".", ",", "-"), or empty.',
            'value',
        )
    doc['value'] = value


@setting_utilities.validator(PluginSettings.WORK_ROOT)
def _validateWorkRoot(doc):
    value = (doc['value'] or '').strip() if isinstance(doc['value'] or '', str) else None
    if value is None or (value and not os.path.isabs(value)):
        raise ValidationException(f'{doc["key"]} must be an absolute path, or empty.', 'value')
    doc['value'] = value


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


# -- tools -------------------------------------------------------------------------


@setting_utilities.default(PluginSettings.TOOLS)
def defaultTools():
    """The three tools that ``scripts/build-tools.sh`` builds (``girder_resolver.tools``)."""
    return tools.default_tools()


_KERNEL_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')
_IMAGE_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}$')
TOOL_UIS = tools.UIS
#: What each backend reads from a tool: its key and a check of the value.
_TOOL_BACKEND_FIELDS = {
    'process': ('env', lambda v: isinstance(v, str) and v.startswith('/') and '\x00' not in v),
    'slurm': ('env', lambda v: isinstance(v, str) and v.startswith('/') and '\x00' not in v),
    'docker': ('image', lambda v: isinstance(v, str) and bool(_IMAGE_RE.match(v))),
}
_TOOL_FIELDS = {'id', 'name', 'description', 'ui', 'kernels'}
MAX_TOOLS = 50


def validToolId(value):
    """Whether ``value`` is a well-formed tool id (1-40 lowercase letters, digits, '-')."""
    return isinstance(value, str) and bool(tools.TOOL_ID.match(value))


def checkTool(entry):
    """One tool entry of ``resolver.tools``, checked and completed; ValueError(reason) if bad."""
    if not isinstance(entry, dict):
        raise ValueError('each tool is a JSON object')
    toolId = entry.get('id')
    if not validToolId(toolId):
        raise ValueError(
            f'tool id {json.dumps(toolId)[:60]} must be 1-40 lowercase letters, digits or "-", '
            'starting with a letter or digit'
        )
    backends = set(BACKENDS) | set(_TOOL_BACKEND_FIELDS)
    unknown = set(entry) - _TOOL_FIELDS - backends
    if unknown:
        raise ValueError(
            f'tool "{toolId}": unknown field(s) {", ".join(sorted(unknown))} (a tool has '
            f'{", ".join(sorted(_TOOL_FIELDS))} and one entry per backend: '
            f'{", ".join(sorted(backends))})'
        )
    name = entry.get('name', toolId)
    if not isinstance(name, str) or not name.strip() or len(name) > 100:
        raise ValueError(f'tool "{toolId}": "name" is a non-empty text of at most 100 characters')
    description = entry.get('description', '')
    if not isinstance(description, str) or len(description) > 1000:
        raise ValueError(f'tool "{toolId}": "description" is a text of at most 1000 characters')
    ui = entry.get('ui', 'lab')
    if ui not in TOOL_UIS:
        raise ValueError(f'tool "{toolId}": "ui" is "lab" (JupyterLab) or "notebook" (classic)')
    kernels = entry.get('kernels', [])
    if not isinstance(kernels, list) or not all(
        isinstance(k, str) and _KERNEL_RE.match(k) for k in kernels
    ):
        raise ValueError(f'tool "{toolId}": "kernels" is a list of kernel names, e.g. ["python3"]')
    out = {
        'id': toolId,
        'name': name.strip(),
        'description': description.strip(),
        'ui': ui,
        'kernels': list(kernels),
    }
    for backend in sorted(backends & set(entry)):
        value = entry[backend]
        key, check = _TOOL_BACKEND_FIELDS.get(backend, (None, None))
        if not isinstance(value, dict):
            raise ValueError(f'tool "{toolId}": "{backend}" is an object')
        if key is not None and (set(value) != {key} or not check(value[key])):
            what = 'an absolute path' if key == 'env' else 'a container image name'
            raise ValueError(f'tool "{toolId}": "{backend}" is {{"{key}": {what}}}')
        out[backend] = dict(value)
    return out


def checkTools(value):
    """The ``resolver.tools`` list, each entry checked; ValueError(reason) if bad."""
    if not isinstance(value, list) or not value or len(value) > MAX_TOOLS:
        raise ValueError(f'it is a JSON list of 1 to {MAX_TOOLS} tools')
    checked = [checkTool(entry) for entry in value]
    ids = [tool['id'] for tool in checked]
    repeated = sorted({toolId for toolId in ids if ids.count(toolId) > 1})
    if repeated:
        raise ValueError(f'tool ids must be unique; {", ".join(repeated)} appear(s) twice')
    return checked


@setting_utilities.validator(PluginSettings.TOOLS)
def _validateTools(doc):
    try:
        doc['value'] = checkTools(_jsonValue(doc, 'a list of tools'))
    except ValueError as exc:
        raise ValidationException(f'{doc["key"]}: {exc}.', 'value')


@setting_utilities.validator(PluginSettings.DEFAULT_TOOL)
def _validateDefaultTool(doc):
    value = doc['value'].strip() if isinstance(doc['value'], str) else doc['value']
    ids = [tool['id'] for tool in get(PluginSettings.TOOLS) or ()]
    if value not in ids:
        raise ValidationException(
            f'{doc["key"]} must be the id of one of the tools in resolver.tools: {", ".join(ids)}.',
            'value',
        )
    doc['value'] = value


@setting_utilities.validator(PluginSettings.TOOL_KEY)
def _validateToolKey(doc):
    if not isinstance(doc['value'], str) or not _METADATA_KEY_RE.match(doc['value']):
        raise ValidationException(
            'The tool key must be a metadata key of 1-128 characters without "." or "$".',
            'value',
        )


@setting_utilities.validator(PluginSettings.RUN_DIR)
def _validateRunDir(doc):
    value = doc['value'] or ''
    if not isinstance(value, str) or (value and not value.startswith('/')):
        raise ValidationException('The run directory must be an absolute path, or empty.', 'value')
    doc['value'] = value.rstrip('/') if value != '/' else value
