"""``/resolver/tool``: the tools this site offers, and whether each is ready here.

Mixed into the ``/resolver`` resource. What a tool is, which one a launch runs and
whether it is ready are ``services/notebooks/tools``.
"""

from girder.api import access
from girder.api.describe import Description, autoDescribeRoute
from girder.api.rest import getCurrentUser
from girder.constants import AccessType
from girder.models.folder import Folder

from .. import errors
from ..primitives import objectId
from ..services.notebooks import tools


class ToolRoutes:
    """Mixed into the ``/resolver`` resource."""

    def addToolRoutes(self):
        self.route('GET', ('tool',), self.listTools)

    @access.public
    @autoDescribeRoute(
        Description("The site's tools, each with whether it is ready on this server.")
        .notes(
            'One entry per tool of resolver.tools, in its order: {id, name, description, ui '
            '("lab" or "notebook"), kernels, ready, reason (why not ready, and how to make it '
            "so), default (the site's default tool), recommended (with folderId: the tool "
            'that dataset recommends)}. A tool that is not ready is refused at launch. '
            'POST /notebook and POST /resolve/launch take tool=<id>.'
        )
        .param('folderId', 'Mark the tool this dataset folder recommends.', required=False)
        .errorResponse('A bad folder id.', 400)
        .errorResponse('No read access to the folder.', 403)
    )
    def listTools(self, folderId):
        folder = None
        if folderId is not None:
            oid = objectId(folderId) if isinstance(folderId, str) else None
            if oid is None:
                raise errors.InvalidRequest('"folderId" must be a folder id.')
            folder = Folder().load(oid, user=getCurrentUser(), level=AccessType.READ, exc=True)
        return tools.listing(folder)
