"""The production deployment: docker-compose.yml and the server image's entry point.

``docker-compose config`` (Debian's ``docker-compose`` package) checks the file
without a container engine; the structure checks read its resolved form. The
entry point is then run for real, as the compose file configures it (same
command, same environment, with host names pointed at local processes): a
central, a site and the site's feder8 come up from nothing but the environment.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

from datadns import stack
from girder_resolver import tools

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / 'docker-compose.yml'
ENTRYPOINT = REPO / 'docker' / 'girder' / 'entrypoint.sh'
SECRETS = {
    'CENTRAL_ADMIN_PASSWORD': 'central-admin-password',
    'SITE_A_ADMIN_PASSWORD': 'site-a-admin-password',
    'SITE_B_ADMIN_PASSWORD': 'site-b-admin-password',
    'SITE_A_FEDER8_KEY': 'a' * 40,
    'SITE_B_FEDER8_KEY': 'b' * 40,
    'SITE_A_REGISTRAR_KEY': 'c' * 40,
    'SITE_B_REGISTRAR_KEY': 'd' * 40,
    'SITE_A_FRONTDOOR_TOKEN': 'e' * 40,
    'SITE_B_FRONTDOOR_TOKEN': 'f' * 40,
}
SETTINGS = {
    'DOCKER_GID': '998',
    'CENTRAL_PUBLIC_URL': 'https://resolver.example.org/api/v1',
    'SITE_A_PUBLIC_URL': 'https://girder.site-a.example.org/api/v1',
    'SITE_B_PUBLIC_URL': 'https://girder.site-b.example.org/api/v1',
    'SITE_A_NOTEBOOK_HOST': 'notebooks.site-a.example.org',
    'SITE_B_NOTEBOOK_HOST': 'notebooks.site-b.example.org',
    'SITE_A_FRONTDOOR_URL': 'https://notebooks.site-a.example.org',
    'SITE_B_FRONTDOOR_URL': 'https://notebooks.site-b.example.org',
    'SITE_A_DATA': '/srv/datasets/site-a',
    'SITE_B_DATA': '/srv/datasets/site-b',
}
#: The default tools' images, one compose service each (profile "build").
TOOL_SERVICES = {f'tool-{tool_id}': tool_id for tool_id in tools.default_tool_ids()}
#: Built, never started (profile "build"): exempt from the running-service rules.
BUILD_ONLY = {'notebook-image', *TOOL_SERVICES}
TOOLS_DOCKERFILE = REPO / 'docker' / 'tools' / 'Dockerfile'
BUILD_TOOLS = REPO / 'scripts' / 'build-tools.sh'


def dockerCompose():
    path = shutil.which('docker-compose')
    if path is None:
        message = 'docker-compose is not installed (apt-get install -y docker-compose)'
        if os.environ.get('CI') == 'true':
            pytest.fail(f'The deployment must be checked in CI, but {message}', pytrace=False)
        pytest.skip(message)
    return path


def compose(tmp_path, env, *args):
    envFile = tmp_path / 'compose.env'
    envFile.write_text(''.join(f'{k}={v}\n' for k, v in env.items()))
    return subprocess.run(
        [dockerCompose(), '-f', str(COMPOSE), '--env-file', str(envFile), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,  # never pick up a developer's .env
        env={k: v for k, v in os.environ.items() if not k.startswith(('SITE_', 'CENTRAL_'))},
    )


@pytest.fixture
def resolved(tmp_path):
    result = compose(tmp_path, {**SECRETS, **SETTINGS}, '--profile', 'build', 'config')
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def running(config):
    return {name: svc for name, svc in config['services'].items() if name not in BUILD_ONLY}


def testComposeFileIsValid(tmp_path):
    result = compose(tmp_path, {**SECRETS, **SETTINGS}, 'config', '-q')
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize('missing', sorted(SECRETS))
def testEverySecretIsRequiredAndNamedWhenMissing(tmp_path, missing):
    env = {k: v for k, v in {**SECRETS, **SETTINGS}.items() if k != missing}
    result = compose(tmp_path, env, 'config', '-q')
    assert result.returncode != 0
    assert missing in result.stderr


def testTheFileHasEveryPiece(resolved):
    services = resolved['services']
    assert {
        'mongo',
        'redis',
        'central',
        'site-a',
        'site-b',
        'feder8-a',
        'feder8-b',
        'frontdoor-a',
        'frontdoor-b',
    } <= set(services)
    assert services['mongo']['image'] == 'mongo:7'
    assert services['notebook-image']['build']['context'].endswith('docker/notebook')
    assert services['notebook-image']['profiles'] == ['build']
    for name in ('central', 'site-a', 'site-b'):
        assert services[name]['build']['dockerfile'] == 'docker/girder/Dockerfile'
        env = services[name]['environment']
        assert env['GIRDER_NOTIFICATION_REDIS_URL'].startswith('redis://redis:')
        assert env['GIRDER_MONGO_URI'].startswith('mongodb://mongo:27017/')
    for site in ('a', 'b'):
        feder8 = services[f'feder8-{site}']
        assert feder8['command'] == ['feder8', 'run']
        assert feder8['image'] == services[f'site-{site}']['image']
        assert feder8['environment']['FEDER8_GIRDER_URL'] == f'http://site-{site}:8080/api/v1'
    databases = {services[n]['environment']['GIRDER_MONGO_URI'] for n in ('central', 'site-a')}
    assert len(databases) == 2, 'each Girder needs its own database'


def testEveryServiceIsHealthCheckedOrWaitsForAHealthyDependency(resolved):
    for name, svc in running(resolved).items():
        assert 'healthcheck' in svc or any(
            dep.get('condition') == 'service_healthy' for dep in svc.get('depends_on', {}).values()
        ), f'{name}: add a healthcheck or depends_on with condition: service_healthy'
    for name in ('central', 'site-a', 'site-b'):
        test = ' '.join(resolved['services'][name]['healthcheck']['test'])
        assert '/api/v1/system/version' in test
    for name, svc in running(resolved).items():
        for dep, spec in svc.get('depends_on', {}).items():
            assert spec.get('condition') == 'service_healthy', f'{name} -> {dep}'
            assert 'healthcheck' in resolved['services'][dep], f'{dep} has no healthcheck'


def testEveryServiceRestarts(resolved):
    for name, svc in running(resolved).items():
        assert svc.get('restart') in ('unless-stopped', 'always', 'on-failure'), name


def testDataIsMountedReadOnlyAndAtTheSamePathAsOnTheHost(resolved):
    for site in ('a', 'b'):
        data = SETTINGS[f'SITE_{site.upper()}_DATA']
        volumes = resolved['services'][f'site-{site}']['volumes']
        mounts = [v for v in volumes if isinstance(v, str) and v.startswith(data)]
        assert mounts == [f'{data}:{data}:ro'], volumes
    for name, svc in running(resolved).items():
        for volume in svc.get('volumes', []):
            source = volume.split(':')[0]
            if source.startswith('/srv/'):
                assert volume.endswith(':ro'), f'{name}: data mounts must be read-only'


def testNoPasswordOrKeyIsWrittenInTheFile():
    text = COMPOSE.read_text()
    secretish = re.compile(r'(PASSWORD|_KEY|SECRET|TOKEN|REGISTRARS)[A-Z_]*:\s*(.*)$', re.M)
    for name, value in secretish.findall(text):
        assert '${' in value and ':?' in value, f'{name} must come from ${{VAR:?…}}, not {value}'
    for value in SECRETS.values():
        assert value not in text
    assert not re.search(r'mongodb://[^/\s]*:[^@\s]*@', text), 'credentials in a Mongo URI'


def testPortsAreBoundToLoopbackForTheReverseProxy(resolved):
    for name, svc in running(resolved).items():
        for port in svc.get('ports', []):
            published = port if isinstance(port, str) else str(port.get('host_ip', ''))
            assert published.startswith('127.0.0.1'), f'{name} publishes {port} on every address'


def testTheDockerfileInstallsTheRepoAndServesGirder():
    text = (REPO / 'docker' / 'girder' / 'Dockerfile').read_text()
    assert text.startswith('#') and 'FROM python:3.11-slim' in text
    assert 'pip install' in text and 'GIRDER_WORKER_TASK_ALWAYS_EAGER=true' in text
    assert 'entrypoint.sh' in text
    assert 'girder serve' in ENTRYPOINT.read_text()


# The tools' images (#16) ------------------------------------------------------------------


def testComposeBuildsEveryDefaultToolsImage(resolved):
    """Every launch runs a tool: a docker site whose engine lacks the default tool's image
    refuses every launch. ``--profile build build`` builds each default tool's image,
    under the name the launcher looks for, from docker/tools with its id as TOOL."""
    services = resolved['services']
    built = {svc['image']: name for name, svc in services.items() if 'build' in svc}
    for tool_id in tools.default_tool_ids():
        image = tools.image_name(tool_id)
        assert image in built, f'no compose service builds {image}'
        svc = services[built[image]]
        assert built[image] == f'tool-{tool_id}'
        assert svc['build']['context'].endswith('docker/tools')
        assert svc['build'].get('args') == {'TOOL': tool_id}
        assert svc['profiles'] == ['build'] and svc['command'] == ['true']
    assert tools.image_name(tools.DEFAULT_TOOL) in built


def _buildToolsPins():
    """The pins scripts/build-tools.sh installs, as it computes them (bash, from the repo)."""
    script = BUILD_TOOLS.read_text()
    reading = re.search(r'^read_pins\(\) \{.*?^SCIENTIFIC_PIP=.*?$', script, re.M | re.S)
    assert reading, 'build-tools.sh no longer reads its pins with read_pins'
    result = subprocess.run(
        [
            'bash',
            '-c',
            f'set -euo pipefail\n{reading.group(0)}\necho "$JUPYTER_PIP"\necho "$SCIENTIFIC_PIP"',
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    jupyter, scientific = result.stdout.splitlines()
    return jupyter.split(), scientific.split()


def _pinsFile(name):
    lines = (REPO / 'docker' / 'tools' / 'pins' / name).read_text().splitlines()
    return [line.split('#')[0].strip() for line in lines if line.split('#')[0].strip()]


def testTheToolDockerfileInstallsBuildToolsPins():
    """One pin list: build-tools.sh and the Dockerfile both read docker/tools/pins/."""
    jupyter, scientific = _buildToolsPins()
    assert jupyter == _pinsFile('jupyter.txt')
    assert scientific == _pinsFile('scientific.txt')
    assert {p.split('==')[0] for p in jupyter} == {'jupyterlab', 'notebook', 'ipykernel'}
    for pin in jupyter + scientific:
        assert re.fullmatch(r'[A-Za-z0-9_.-]+==[A-Za-z0-9_.]+', pin), f'{pin} is not pinned'
    # No second copy of a pin in the script.
    assert not re.search(r'\b[A-Za-z0-9_.-]+==\d', BUILD_TOOLS.read_text())
    text = TOOLS_DOCKERFILE.read_text()
    assert 'COPY pins/ /tmp/pins/' in text
    assert 'pins=/tmp/pins/jupyter.txt;' in text
    assert 'pins="$pins /tmp/pins/scientific.txt"' in text
    assert '-r %s' in text and '--only-binary=:all:' in text
    assert not re.search(r'\b[A-Za-z0-9_.-]+==\d', text), 'a pin written in the Dockerfile'


def testTheToolDockerfileFollowsBuildToolsRecipe():
    """The same base, packages, venv, settings, checks, user and environment as the
    images build-tools.sh makes with build-notebook-image.sh."""
    script = BUILD_TOOLS.read_text()
    recipe = (REPO / 'scripts' / 'build-notebook-image.sh').read_text()
    text = TOOLS_DOCKERFILE.read_text()
    assert text.startswith('#') and re.search(r'^FROM debian:bookworm-slim$', text, re.M)
    venv = re.search(r'^IMAGE_VENV=(\S+)$', script, re.M).group(1)
    assert f'python3 -m venv {venv};' in text and f'{venv}/bin/pip install' in text
    # Debian packages: the script's base list, and R's for the r tool.
    base = re.search(r"deb='([^']+)'", script).group(1).split(',')
    r = re.search(r"^R_DEB='([^']+)'$", script, re.M).group(1).split(',')
    python = re.search(r"python\|scientific-python\) deb='([^']+)'", text).group(1).split()
    rDeb = re.search(r"\br\) deb='([^']+)'", text).group(1).split()
    assert python == base and rDeb == base + r
    assert 'apt-get install -y --no-install-recommends $deb' in text
    overrides = re.search(r"^LAB_OVERRIDES='([^']+)'$", script, re.M).group(1)
    assert f"echo '{overrides}'" in text
    assert f'{venv}/share/jupyter/lab/settings/overrides.json' in text
    for check in re.findall(r"echo '(import [^']+)'", script):
        assert f"check='{check}'" in text
    assert "R --slave -e 'library(IRkernel)'" in text and 'kernels/ir/kernel.json' in text
    # The user and the setuid/setgid sweep of build-notebook-image.sh.
    useradd = re.search(r"chroot \"\$1\" (useradd [^']+)'", recipe).group(1)
    assert useradd + ';' in text
    assert 'find / -xdev -type f -perm /6000 -exec chmod ug-s {} +' in text
    assert 'rm -rf /var/lib/apt/lists/*' in text
    path = re.search(r'ENV PATH=(\S+)"', script).group(1).replace('$IMAGE_VENV', venv)
    env = re.search(r'^ENV (.*?)\n\n', text, re.M | re.S).group(1)
    values = dict(re.findall(r'(\w+)=(\S+)', env))
    assert values['PATH'] == path
    for change in re.findall(r"'ENV (\w+=\S+)'", recipe):
        name, value = change.split('=', 1)
        assert values[name] == value, name
    assert 'USER 1000:1000' in text


# The entry point, run as compose runs it ------------------------------------------------


def serviceEnv(config, name, rewrite):
    env = {k: str(v) for k, v in config['services'][name]['environment'].items()}
    for key, value in env.items():
        for old, new in rewrite.items():
            value = value.replace(old, new)
        env[key] = value
    return env


class Entrypoint(stack.Service):
    """``docker/girder/entrypoint.sh`` with a service's environment from the compose file."""

    def __init__(self, name, args, env, port=None, logDir=None):
        self.name = name
        super().__init__(logDir)
        self.args = args
        self.extra = env
        self.port = port

    def command(self):
        return ['sh', str(ENTRYPOINT), *self.args]

    def env(self):
        venvBin = str(Path(sys.executable).parent)
        return {
            **os.environ,
            **self.extra,
            'PATH': f'{venvBin}:{os.environ["PATH"]}',
            'PYTHONUNBUFFERED': '1',
        }

    def ready(self):
        if self.port is None:
            return self.proc.poll() is None
        return requests.get(f'http://127.0.0.1:{self.port}/api/v1/system/version', timeout=2).ok


@pytest.mark.slow
def testTheEntrypointBringsUpACentralASiteAndItsFeder8FromTheEnvironment(
    tmp_path, resolved, mongoUri
):
    ports = {'central': stack.freePort(), 'site-a': stack.freePort()}
    prefix = f'deploy_{os.getpid()}'
    rewrite = {
        'mongodb://mongo:27017/datadns_': f'{mongoUri}/{prefix}_',
        'http://central:8080': f'http://127.0.0.1:{ports["central"]}',
        'http://site-a:8080': f'http://127.0.0.1:{ports["site-a"]}',
        'redis://redis:6379/0': 'redis://127.0.0.1:1/0',
        '/assetstore': str(tmp_path / 'assetstore'),
    }
    procs = []
    try:
        for name in ('central', 'site-a'):
            env = serviceEnv(resolved, name, rewrite)
            env['GIRDER_PORT'] = str(ports[name])
            env['DATADNS_BACKEND'] = 'process'  # no container engine needed here
            env['DATADNS_ASSETSTORE'] = str(tmp_path / f'assetstore-{name}')
            proc = Entrypoint(name, ['serve'], env, ports[name], tmp_path / 'logs')
            procs.append(proc.start(timeout=120))
        central = f'http://127.0.0.1:{ports["central"]}/api/v1'
        feder8Env = serviceEnv(resolved, 'feder8-a', rewrite)
        feder8Env['FEDER8_INTERVAL'] = '1'
        feder8 = Entrypoint('feder8-a', resolved['services']['feder8-a']['command'], feder8Env)
        procs.append(feder8.start())

        def registered():
            sites = requests.get(f'{central}/resolver/site', timeout=5).json()
            return [s for s in sites if s['name'] == 'site-a' and s['healthy']]

        [site] = stack.waitFor(registered, 60, 'site-a registered by its feder8', interval=0.5)
        assert site['apiUrl'] == SETTINGS['SITE_A_PUBLIC_URL']
        assert site['hasCredential']
        # The admin exists with the password from the environment, and the settings apply.
        token = requests.get(
            f'{central}/user/authentication',
            auth=('admin', SECRETS['CENTRAL_ADMIN_PASSWORD']),
            timeout=5,
        )
        assert token.ok, token.text
        # The registrar key is a registrar's, not an admin's: it cannot touch other sites.
        registrar = requests.get(
            f'{central}/user/me',
            headers={'Girder-Token': _token(central, SECRETS['SITE_A_REGISTRAR_KEY'])},
            timeout=5,
        ).json()
        assert registrar['login'] == 'registrar-site-a' and not registrar['admin']
        # A second start with the same environment changes nothing and comes up again.
        procs[0].stop()
        again = Entrypoint(
            'central-again',
            ['serve'],
            {
                **serviceEnv(resolved, 'central', rewrite),
                'GIRDER_PORT': str(ports['central']),
                'DATADNS_BACKEND': 'process',
                'DATADNS_ASSETSTORE': str(tmp_path / 'assetstore-central'),
            },
            ports['central'],
            tmp_path / 'logs',
        )
        procs.append(again.start(timeout=120))
        assert 'created the admin' not in again.log.read_text()
        stack.waitFor(registered, 30, 'site-a healthy after the central restarted', interval=0.5)
        for proc in procs:
            text = proc.log.read_text(errors='replace')
            for secret in SECRETS.values():
                assert secret not in text, f'a secret is in the log of {proc.name}'
    finally:
        for proc in reversed(procs):
            proc.stop()


def _token(apiUrl, key):
    resp = requests.post(f'{apiUrl}/api_key/token', data={'key': key}, timeout=5)
    resp.raise_for_status()
    return resp.json()['authToken']['token']


def testTheNotebookRunRootIsMountedAtTheSamePathAsOnTheHost(resolved):
    """The engine bind-mounts each notebook's socket directory from the host: Girder must
    make it at the path the host knows."""
    for site in ('a', 'b'):
        service = resolved['services'][f'site-{site}']
        runRoot = service['environment']['DATADNS_DOCKER_RUN_ROOT']
        assert runRoot == f'/var/lib/datadns/site-{site}/notebooks'
        assert f'{runRoot}:{runRoot}:rw' in service['volumes']


def _option(command, name):
    """The value of ``--name=value`` in a command list."""
    values = [arg.split('=', 1)[1] for arg in command if arg.startswith(f'--{name}=')]
    assert len(values) == 1, f'--{name}=… once in {command}'
    return values[0]


def testEachSiteHasItsFrontDoorAsAServiceOfItsOwn(resolved):
    """configurable-http-proxy from the site's image: notebooks at /notebook/<id>/, the
    rest to the site's Girder; Girder drives it over its REST API (not managed), and the
    URLs it hands out point at its public URL."""
    services = resolved['services']
    for site in ('a', 'b'):
        girder, door = services[f'site-{site}'], services[f'frontdoor-{site}']
        assert door['image'] == girder['image']
        assert 'build' not in door and 'user' not in door and 'user' not in girder
        command = door['command']
        assert command[0] == 'configurable-http-proxy'
        assert _option(command, 'default-target') == f'http://site-{site}:8080'
        env = girder['environment']
        assert env['DATADNS_FRONTDOOR_MANAGED'] == 'false'
        apiPort = _option(command, 'api-port')
        assert env['DATADNS_FRONTDOOR_API_URL'] == f'http://frontdoor-{site}:{apiPort}'
        # Girder's environment carries the proxy's token (frontdoor._apiEndpoint reads it).
        token = SECRETS[f'SITE_{site.upper()}_FRONTDOOR_TOKEN']
        assert env['CONFIGPROXY_AUTH_TOKEN'] == token
        assert door['environment'] == {'CONFIGPROXY_AUTH_TOKEN': token}
        assert env['DATADNS_FRONTDOOR_URL'] == SETTINGS[f'SITE_{site.upper()}_FRONTDOOR_URL']
        # Its public port is published (on loopback, for the TLS proxy); its API is not.
        port = _option(command, 'port')
        published = [p.rsplit(':', 1)[1].split('/')[0] for p in door['ports']]
        assert published == [port], door['ports']
        assert apiPort != port
        assert door['depends_on'] == {f'site-{site}': {'condition': 'service_healthy'}}


def testAFrontDoorsApiIsReachedOnlyFromItsSitesGirder(resolved):
    """The proxy's networks: one internal network shared with its site's Girder alone,
    and one for its published port that no other container joins."""
    services, networks = resolved['services'], resolved.get('networks', {})
    members = {}
    for name, svc in services.items():
        for net in svc.get('networks') or {'default': None}:
            members.setdefault(net, set()).add(name)
    for site in ('a', 'b'):
        door = f'frontdoor-{site}'
        nets = set(services[door]['networks'])
        shared = [n for n in nets if members[n] == {door, f'site-{site}'}]
        assert len(shared) == 1, f'{door}: no network of its own with site-{site}'
        assert networks[shared[0]].get('internal') is True
        for net in nets - set(shared):
            assert members[net] == {door}, f'{door}: {net} is shared with {members[net]}'
            assert net != 'default'


def testAFrontDoorReachesItsSitesNotebookSocketsReadOnly(resolved):
    """Routes are http+unix:// URLs naming a socket's path on the host: the proxy sees
    the site's run root at that same path (read-only: it only connects)."""
    for site in ('a', 'b'):
        runRoot = resolved['services'][f'site-{site}']['environment']['DATADNS_DOCKER_RUN_ROOT']
        assert resolved['services'][f'frontdoor-{site}']['volumes'] == [f'{runRoot}:{runRoot}:ro']


def testBootstrapRefusesAShortFrontDoorToken(tmp_path):
    """The front door's API token is a secret like the others: 32+ characters, never echoed."""
    short = 'short-front-door-token'
    result = subprocess.run(
        [sys.executable, str(REPO / 'docker' / 'girder' / 'bootstrap.py')],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={**os.environ, 'CONFIGPROXY_AUTH_TOKEN': short},
    )
    assert result.returncode == 1
    assert 'CONFIGPROXY_AUTH_TOKEN must be at least 32 characters' in result.stderr
    assert short not in result.stdout + result.stderr
