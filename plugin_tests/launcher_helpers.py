"""Helpers shared by the launcher backends' tests."""

import os
import socket
import subprocess
import time

import pytest

import docker

# test_datapaths and test_frontdoor import it from here; it lives with the kernel protocol.
from plugin_tests.kernel_helpers import runInKernel as runInKernel


def makeDataset(root):
    """A small dataset directory: a file and a subfolder with a table."""
    data = root / 'dataset'
    (data / 'tables').mkdir(parents=True)
    (data / 'readme.txt').write_text('hello\n')
    (data / 'tables' / 'values.csv').write_text('a,b\n1,2\n')
    return data


def sharedNotebook(launcher, spec, what):
    """Start ``spec``'s notebook and wait until it is ready, for a module's fixture to
    ``yield from``: yields (launcher, spec, handle), and stops the notebook after."""
    begin = time.monotonic()
    handle = launcher.start(spec)
    launcher.wait_ready(handle, timeout=60, token=spec.token)
    print(f'\n{what} notebook start-to-ready: {time.monotonic() - begin:.2f} s')
    yield launcher, spec, handle
    launcher.stop(handle)


def socketRefused(path):
    """True when nothing answers on the Unix socket ``path`` (or it is gone)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        return sock.connect_ex(path) != 0


def unixSocket(path):
    """A stream socket connected to the Unix socket ``path``."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock


def dockerUnavailable(image):
    """Why the docker tests cannot run here, or None when they can."""
    if not os.environ.get('DOCKER_HOST'):
        return (
            'DOCKER_HOST is not set; start an engine, e.g. '
            'eval "$(scripts/podman-service.sh start)"'
        )
    try:
        client = docker.from_env(version='auto', timeout=20)
        client.ping()
    except Exception as error:  # any failure to reach the engine means the same here
        return f'no Docker API answers at DOCKER_HOST={os.environ["DOCKER_HOST"]}: {error}'
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return f'the notebook image {image} is missing; run scripts/build-notebook-image.sh'
    finally:
        client.close()
    return None


def requireSlurm():
    """The CPUs of the one-node Slurm cluster, which must be up (started here if it is not
    and we are root); fails, never skips: setup.sh --test starts it."""
    if subprocess.run(['sinfo', '-h'], capture_output=True).returncode != 0 and os.geteuid() == 0:
        repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        subprocess.run([os.path.join(repo, 'scripts', 'slurm.sh'), 'start'], timeout=120)
    state = subprocess.run(['sinfo', '-h', '-N', '-o', '%T %c'], capture_output=True, text=True)
    found = state.stdout.split()
    if state.returncode != 0 or not found or found[0] not in ('idle', 'mixed', 'allocated'):
        pytest.fail(
            'Slurm is not running (sinfo: '
            f'{(state.stderr or state.stdout).strip() or "no node"}): run scripts/slurm.sh start '
            '(as root; scripts/setup.sh --test installs and starts it).',
            pytrace=False,
        )
    return int(found[1])


def requireDocker(tests, image):
    """Skip the ``tests`` (say, 'docker launcher') without an engine or the image; in CI
    (CI=true), fail them instead."""
    reason = dockerUnavailable(image)
    if reason:
        if os.environ.get('CI') == 'true':
            pytest.fail(f'The {tests} tests must run in CI, but {reason}', pytrace=False)
        pytest.skip(reason)


def dockerEngine(tests, image):
    """A docker SDK client for DOCKER_HOST, for a fixture to ``yield from`` (see requireDocker)."""
    requireDocker(tests, image)
    client = docker.from_env(version='auto')
    yield client
    client.close()
