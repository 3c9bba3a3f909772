"""First-start setup of a Data DNS Girder, from the environment; safe to run on every start.

Run by entrypoint.sh before ``girder serve``, straight against the database (no
HTTP, no server needed). Every step is idempotent:

- the admin account (``DATADNS_ADMIN_LOGIN``/``_PASSWORD``/``_EMAIL``) is created
  when no user of that login exists; an existing account is never changed, so a
  password changed later in the web UI stays changed;
- plugin settings named by ``DATADNS_*`` variables (see ``SETTINGS``) are applied,
  so the environment stays the source of truth for them;
- ``DATADNS_FEDER8_API_KEY`` (a site): an API key of the admin with that value,
  for the site's feder8;
- ``DATADNS_REGISTRARS`` (the central): ``site=key,site=key`` — one non-admin
  account per site, member of the registrar group, with that API key, so each
  site's feder8 can register its own name and nothing else;
- ``DATADNS_ASSETSTORE``: a filesystem assetstore at that path if there is none;
- ``CONFIGPROXY_AUTH_TOKEN`` (a site whose front door is a service of its own): only
  checked, at least 32 characters; the plugin reads it from the environment.

Secrets are read from the environment and never printed.
"""

import os
import secrets
import sys
import time

MIN_SECRET = 32
REGISTRAR_GROUP = 'Data DNS registrars'

#: Environment variable -> plugin setting; unset or empty variables leave the setting alone.
SETTINGS = {
    'DATADNS_SITE_NAME': 'resolver.site_name',
    'DATADNS_SITE_API_URL': 'resolver.site_api_url',
    'DATADNS_HEARTBEAT_TTL': 'resolver.heartbeat_ttl',
    'DATADNS_MAX_REGISTRATION': 'resolver.max_registration',
    'DATADNS_BACKEND': 'resolver.backend',
    'DATADNS_NOTEBOOK_IMAGE': 'resolver.image',
    'DATADNS_NOTEBOOK_MEMORY': 'resolver.memory_limit',
    'DATADNS_NOTEBOOK_CPUS': 'resolver.cpu_limit',
    'DATADNS_NOTEBOOK_PIDS': 'resolver.pids_limit',
    'DATADNS_NOTEBOOK_HOST': 'resolver.notebook_host',
    'DATADNS_IDLE_TIMEOUT': 'resolver.idle_timeout',
    'DATADNS_USER_CAP': 'resolver.user_cap',
    'DATADNS_ANONYMOUS_RATE': 'resolver.anonymous_rate',
    'DATADNS_ANONYMOUS_BURST': 'resolver.anonymous_burst',
    'DATADNS_SITE_CAP': 'resolver.site_cap',
    'DATADNS_FRONTDOOR_URL': 'resolver.frontdoor_url',
    'DATADNS_FRONTDOOR_PORT': 'resolver.frontdoor_port',
    'DATADNS_FRONTDOOR_IP': 'resolver.frontdoor_ip',
    'DATADNS_FRONTDOOR_MANAGED': 'resolver.frontdoor_managed',
    'DATADNS_FRONTDOOR_API_URL': 'resolver.frontdoor_api_url',
}


def say(message):
    print(f'datadns bootstrap: {message}', flush=True)


def fail(message):
    print(f'datadns bootstrap: {message}', file=sys.stderr, flush=True)
    sys.exit(1)


def secret(name, required=False):
    value = os.environ.get(name, '')
    if not value:
        if required:
            fail(f'{name} is not set')
        return None
    if len(value) < MIN_SECRET:
        fail(f'{name} must be at least {MIN_SECRET} characters (e.g. `openssl rand -hex 24`)')
    return value


def waitForDatabase(timeout=120):
    from girder.models import getDbConnection

    deadline = time.monotonic() + timeout
    while True:
        try:
            getDbConnection().admin.command('ping')
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
            if time.monotonic() > deadline:
                fail(f'the database did not answer in {timeout}s: {exc}')
            time.sleep(2)


def ensureAdmin():
    from girder.models.user import User

    login = os.environ.get('DATADNS_ADMIN_LOGIN', 'admin')
    user = User().findOne({'login': login.lower()})
    if user is not None:
        if not user.get('admin'):
            fail(f'user "{login}" exists but is not an admin; pick another DATADNS_ADMIN_LOGIN')
        return user
    password = os.environ.get('DATADNS_ADMIN_PASSWORD', '')
    if len(password) < 12:
        fail('DATADNS_ADMIN_PASSWORD must be set, at least 12 characters, on first start')
    email = os.environ.get('DATADNS_ADMIN_EMAIL', f'{login}@datadns.invalid')
    user = User().createUser(login, password, 'Data DNS', 'Admin', email, admin=True)
    say(f'created the admin account "{login}"')
    return user


def ensureApiKey(user, name, value):
    """An active, full-scope API key of ``user`` whose key is ``value``."""
    from girder.models.api_key import ApiKey

    existing = ApiKey().findOne({'userId': user['_id'], 'name': name})
    if existing is not None and existing['key'] == value and existing.get('active', True):
        return
    if existing is not None:
        ApiKey().remove(existing)  # also ends tokens made from the old value
    doc = ApiKey().createApiKey(user, name)
    doc['key'] = value
    ApiKey().save(doc)
    say(f'API key "{name}" set for "{user["login"]}"')


def ensureRegistrars(spec):
    from girder.models.group import Group
    from girder.models.setting import Setting
    from girder.models.user import User

    from girder_resolver.primitives import validSiteName
    from girder_resolver.settings import PluginSettings

    admin = User().findOne({'admin': True})
    group = Group().findOne({'name': REGISTRAR_GROUP}) or Group().createGroup(
        REGISTRAR_GROUP, admin, description='Accounts that may register sites', public=False
    )
    Setting().set(PluginSettings.REGISTRAR_GROUP, REGISTRAR_GROUP)
    for part in filter(None, (p.strip() for p in spec.split(','))):
        site, _, key = part.partition('=')
        if not validSiteName(site) or len(key) < MIN_SECRET:
            fail(
                'DATADNS_REGISTRARS is "site=key,site=key" with site names and keys of at '
                f'least {MIN_SECRET} characters'
            )
        login = f'registrar-{site}'.lower()
        user = User().findOne({'login': login}) or User().createUser(
            login,
            secrets.token_urlsafe(32),  # nobody logs in with it: the API key is the credential
            'Registrar',
            site,
            f'{login}@datadns.invalid',
        )
        Group().addUser(group, user)
        ensureApiKey(user, 'feder8 registration', key)


def ensureAssetstore(path):
    from girder.models.assetstore import Assetstore

    if Assetstore().findOne({}) is None:
        os.makedirs(path, exist_ok=True)
        Assetstore().createFilesystemAssetstore('Data DNS assetstore', path)
        say(f'created a filesystem assetstore at {path}')


def applySettings():
    from girder.models.setting import Setting

    import girder_resolver.settings  # noqa: F401 (registers the validators)

    for var, key in SETTINGS.items():
        value = os.environ.get(var, '').strip()
        if value:
            try:
                Setting().set(key, value)
            except Exception as exc:  # noqa: BLE001 - report which variable was wrong
                fail(f'{var}={value!r} is not a valid {key}: {exc}')


def main():
    secret('CONFIGPROXY_AUTH_TOKEN')  # the front door's API token, when set: long enough
    waitForDatabase()
    admin = ensureAdmin()
    applySettings()
    feder8Key = secret('DATADNS_FEDER8_API_KEY')
    if feder8Key:
        ensureApiKey(admin, 'feder8 (site admin)', feder8Key)
    registrars = os.environ.get('DATADNS_REGISTRARS', '')
    if registrars:
        ensureRegistrars(registrars)
    if os.environ.get('DATADNS_ASSETSTORE'):
        ensureAssetstore(os.environ['DATADNS_ASSETSTORE'])
    say('ready')


if __name__ == '__main__':
    main()
