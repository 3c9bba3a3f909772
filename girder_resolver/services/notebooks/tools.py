"""Tools: which environment a notebook runs, chosen per launch, per dataset or per site.

A *tool* is one entry of the ``resolver.tools`` setting (checked by
``settings.checkTool``): an id, a name, a user interface, its kernels and, for
each backend, what runs it. A launch runs the tool the person chose (``tool=``),
else the one the dataset recommends (its folder's ``resolver.tool_key``
metadata), else the site's ``resolver.default_tool``. Whether a tool is ready
here (its environment or image is on this machine) is the launcher's answer
(``Launcher.tool_ready``); a tool that is not is listed as such and refused at
launch, never started broken.
"""

import json

from ... import cache, settings
from ...errors import Conflict, InvalidRequest
from ...settings import PluginSettings, validToolId
from . import local


def catalog():
    """The site's tools, in the order the setting lists them."""
    return list(settings.get(PluginSettings.TOOLS) or ())


def byId(toolId):
    """The tool entry called ``toolId``, or None."""
    for tool in catalog():
        if tool['id'] == toolId:
            return tool
    return None


def defaultId():
    """The site's default tool: ``resolver.default_tool``, or the first tool listed."""
    tools = catalog()
    wanted = settings.get(PluginSettings.DEFAULT_TOOL)
    if any(tool['id'] == wanted for tool in tools):
        return wanted
    return tools[0]['id'] if tools else None


def choices():
    """The tool ids of this site, as a sentence's list."""
    return ', '.join(tool['id'] for tool in catalog())


def checkChoice(tool):
    """A request's ``tool`` parameter: None, or the id of one of the site's tools.

    :class:`InvalidRequest` naming the choices for anything else (a repeated
    parameter, a malformed or unknown id), before the value reaches a query.
    """
    if tool is None:
        return None
    if not isinstance(tool, str):
        raise InvalidRequest(f'Give at most one "tool" parameter: one of {choices()}.')
    if not validToolId(tool) or byId(tool) is None:
        shown = json.dumps(tool[:60])
        raise InvalidRequest(
            f'There is no tool {shown} at this site; choose one of: {choices()}.',
            extra={'tools': [t['id'] for t in catalog()]},
        )
    return tool


def recommended(folder):
    """The id of the tool that ``folder``'s metadata recommends, if this site has it."""
    key = settings.get(PluginSettings.TOOL_KEY)
    value = (folder.get('meta') or {}).get(key)
    if isinstance(value, str) and validToolId(value.strip()) and byId(value.strip()):
        return value.strip()
    return None


def readiness(tool, backend=None):
    """``(ready, reason)``: whether ``tool``'s environment or image is on this machine.

    Asked of the configured launcher (``Launcher.tool_ready``), and reused for a
    few seconds.
    """
    backend = backend or local.launcher()
    key = (backend.name, json.dumps(tool, sort_keys=True))
    return cache.tools.get(key, lambda: tuple(backend.tool_ready(tool)), cache.TOOL_SECONDS)


def pick(folder, tool=None):
    """The id of the tool a launch on ``folder`` runs: ``tool`` (checked), else the one the
    dataset recommends if it is ready here, else the site's default."""
    if tool is not None:
        return checkChoice(tool)
    suggested = recommended(folder)
    if suggested is not None and readiness(byId(suggested))[0]:
        return suggested
    return defaultId()


def choose(folder, tool=None):
    """The tool entry a launch on ``folder`` runs (see :func:`pick`).

    :class:`InvalidRequest` for an unknown ``tool``; :class:`Conflict` (with the
    reason) for a tool that is not ready here.
    """
    toolId = pick(folder, tool)
    entry = byId(toolId) if toolId else None
    if entry is None:
        raise Conflict('This site offers no tool (resolver.tools is empty).')
    ready, reason = readiness(entry)
    if not ready:
        raise Conflict(
            f'The tool "{entry["name"]}" ({toolId}) is not ready at this site: '
            f'{reason or "its environment is missing"}',
            extra={'tool': toolId, 'ready': False},
        )
    return entry


def listing(folder=None):
    """The site's tools as ``GET /resolver/tool`` shows them: with readiness and the default.

    With ``folder``, ``recommended`` marks the tool that dataset recommends.
    """
    default = defaultId()
    chosen = recommended(folder) if folder is not None else None
    out = []
    for tool in catalog():
        ready, reason = readiness(tool)
        out.append(
            {
                'id': tool['id'],
                'name': tool['name'],
                'description': tool.get('description', ''),
                'ui': tool.get('ui', 'lab'),
                'kernels': list(tool.get('kernels', ())),
                'ready': bool(ready),
                'reason': None if ready else reason,
                'default': tool['id'] == default,
                'recommended': tool['id'] == chosen,
            }
        )
    return out


def offered():
    """What this site registers with a central: ``[{id, name, ready, default}]``."""
    return [{key: tool[key] for key in ('id', 'name', 'ready', 'default')} for tool in listing()]
