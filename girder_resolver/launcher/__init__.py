"""Launcher backends: how a notebook server is started next to the data.

Nothing outside this package knows which backend runs; callers pick one by
name from the site's settings::

    launcher = get_launcher('process', work_root='/var/lib/datadns')
    handle = launcher.start(LaunchSpec(notebook_id, token, data_path, 'data'))
    launcher.wait_ready(handle, token=token)
    url = launcher.url(handle, token=token)

The backends know nothing of Girder. The docker backend imports the docker SDK
only when it is used, so this package imports without it.
"""

from .base import (
    RUN_DATASET_DIR,
    RUN_RESULTS_DIR,
    RUN_STATES,
    Launcher,
    LaunchError,
    LaunchSpec,
    Option,
    RunSpec,
    open_connection,
    sanitize_data_name,
)
from .docker import DockerLauncher
from .process import ProcessLauncher
from .slurm import SlurmLauncher

BACKENDS = {
    'process': ProcessLauncher,
    'docker': DockerLauncher,
    'slurm': SlurmLauncher,
}


def get_launcher(name, **config):
    """The launcher backend called ``name``, configured with ``config`` (its options).

    Raises ValueError for an unknown backend name or option.
    """
    try:
        backend = BACKENDS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f'Unknown notebook launcher {name!r}; choose one of: {", ".join(sorted(BACKENDS))}.'
        ) from None
    return backend(**config)


def get_configured_launcher(name, **candidates):
    """The launcher called ``name``, given those of ``candidates`` that it takes as options.

    A site's settings are written once for every backend (image, memory limit,
    listen address, ...); each backend keeps the options it knows and ignores
    the rest, so callers need not know which backend runs.
    """
    try:
        known = BACKENDS[name].all_options()
    except (KeyError, TypeError):
        return get_launcher(name)  # raises the ValueError that names the choices
    return get_launcher(name, **{k: v for k, v in candidates.items() if k in known})


__all__ = [
    'BACKENDS',
    'RUN_DATASET_DIR',
    'RUN_RESULTS_DIR',
    'RUN_STATES',
    'RunSpec',
    'DockerLauncher',
    'LaunchError',
    'LaunchSpec',
    'Launcher',
    'Option',
    'ProcessLauncher',
    'SlurmLauncher',
    'get_configured_launcher',
    'get_launcher',
    'open_connection',
    'sanitize_data_name',
]
