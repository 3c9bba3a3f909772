"""The notebook tools a site offers by default, and where their environments live.

A *tool* is one entry of the site setting ``resolver.tools``: a dict with an
``id``, a ``name``, a ``description``, the user interface (``ui``: ``'lab'``
for JupyterLab, the default, or ``'notebook'`` for the classic UI), the
``kernels`` it offers, and for each backend what runs it: ``process.env``, a
Python environment (a venv) holding jupyter_server, for the process and slurm
backends; ``docker.image``, an image, for the docker backend.

The three default tools (``python``, ``scientific-python``, ``r``) are built by
``scripts/build-tools.sh``: their process environments in :func:`tools_dir`
(outside any clone of the project, so that every clone on the machine reuses
them), their images as ``localhost/datadns-tool-<id>:latest``. Girder-free: the
settings and the launchers' callers read it, the launchers read only the dicts.
"""

import os
import re

#: What a tool id may be.
TOOL_ID = re.compile(r'^[a-z0-9][a-z0-9-]{0,39}$')
#: The tool a launch uses when neither the person nor the dataset chooses one.
DEFAULT_TOOL = 'python'
UIS = ('lab', 'notebook')

_DEFAULTS = (
    {
        'id': 'python',
        'name': 'Python',
        'description': 'JupyterLab with a Python 3 kernel (ipykernel) and the standard library.',
        'kernels': ['python3'],
    },
    {
        'id': 'scientific-python',
        'name': 'Scientific Python',
        'description': (
            'JupyterLab with numpy, scipy, pandas, matplotlib, xarray, netCDF4 and h5py.'
        ),
        'kernels': ['python3'],
    },
    {
        'id': 'r',
        'name': 'R',
        'description': 'JupyterLab with an R kernel (r-base and IRkernel).',
        'kernels': ['ir'],
    },
)


def tools_dir():
    """The directory holding one process environment (a venv) per tool.

    ``$DATADNS_TOOLS_DIR`` when set; else ``/var/lib/datadns/tools`` for root and
    ``$XDG_DATA_HOME/datadns/tools`` (``~/.local/share/datadns/tools``) for
    anyone else. Outside the clone, so that fresh clones reuse what was built.
    """
    configured = os.environ.get('DATADNS_TOOLS_DIR')
    if configured:
        return os.path.abspath(configured)
    if hasattr(os, 'geteuid') and os.geteuid() == 0:
        return '/var/lib/datadns/tools'
    data_home = os.environ.get('XDG_DATA_HOME') or os.path.expanduser('~/.local/share')
    return os.path.join(data_home, 'datadns', 'tools')


def check_tool_id(tool_id):
    """``tool_id`` if it is a valid tool id; ValueError otherwise."""
    if not isinstance(tool_id, str) or not TOOL_ID.match(tool_id):
        raise ValueError(
            f'Invalid tool id {tool_id!r}: use 1 to 40 lower-case letters, digits and "-", '
            'starting with a letter or digit.'
        )
    return tool_id


def env_dir(tool_id, root=None):
    """The process environment (venv) of tool ``tool_id``: ``<tools_dir>/<id>``."""
    return os.path.join(root or tools_dir(), check_tool_id(tool_id))


def image_name(tool_id):
    """The image of tool ``tool_id`` for the docker backend."""
    return f'localhost/datadns-tool-{check_tool_id(tool_id)}:latest'


def default_tools(root=None):
    """The three default tools, as entries of ``resolver.tools`` (fresh dicts)."""
    return [
        {
            **tool,
            'kernels': list(tool['kernels']),
            'ui': 'lab',
            'process': {'env': env_dir(tool['id'], root)},
            'docker': {'image': image_name(tool['id'])},
        }
        for tool in _DEFAULTS
    ]


def default_tool_ids():
    """The ids of the default tools, in menu order."""
    return [tool['id'] for tool in _DEFAULTS]
