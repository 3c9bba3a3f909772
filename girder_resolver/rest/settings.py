"""``GET /resolver/setting``: the plugin's settings as the admin page renders them.

The list, its help texts and the backend choices come from
:data:`girder_resolver.settings.SETTINGS`; values are saved through Girder's own
``PUT /system/setting``, whose validators are in the same module.
"""

from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.models.setting import Setting

from ..settings import SETTINGS
from .errors import DomainResource, answering


def describe(declared):
    """One setting as the admin page shows it; a secret's value never leaves the server."""
    out = {
        'key': declared.key,
        'group': declared.group,
        'label': declared.label,
        'kind': declared.kind,
        'help': declared.help,
        'editable': declared.editable,
    }
    value = Setting().get(declared.key)
    if declared.kind == 'secret':
        out['set'] = bool(value)
    else:
        out['value'] = value
    if declared.choices is not None:
        out['choices'] = [{'value': v, 'label': label} for v, label in declared.choices()]
    return out


class SettingResource(DomainResource):
    """The settings route; it shares ``/resolver`` with the dataset index (see :meth:`mountOn`)."""

    def __init__(self):
        super().__init__()
        self.resourceName = 'resolver'

    def mountOn(self, resolver):
        """Add ``GET setting`` to ``resolver``, the resource mounted at ``/resolver``."""
        resolver.route('GET', ('setting',), answering(self.listSettings), resource='resolver')

    @access.admin
    @autoDescribeRoute(
        Description("Every setting of the plugin, with its current value and what it's for.")
        .notes(
            'In the order and groups of the admin page; "kind" says how the value is edited '
            '(text, number, boolean, choice with its "choices", json, secret). A secret '
            'is never returned, only whether it is "set". Save values with PUT '
            '/system/setting.'
        )
        .errorResponse('Admins only.', 403)
    )
    def listSettings(self):
        return [describe(declared) for declared in SETTINGS]
