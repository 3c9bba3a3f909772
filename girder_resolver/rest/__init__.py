"""REST resources: thin wrappers that validate input and hand off to the services.

This module holds the checks several resources share (an identifier parameter,
paging values); they raise :mod:`girder_resolver.errors`, which
:mod:`girder_resolver.rest.errors` turns into HTTP answers.
"""

from ..errors import InvalidRequest
from ..identifiers import InvalidIdentifier, normalize
from ..primitives import checkSort


def parseIdentifier(value, param='id'):
    """The canonical identifier for a request parameter, or a 400 a person can act on.

    Anything but a single string (a repeated parameter, a JSON object smuggled
    as ``id[$ne]``) is refused before it can reach a Mongo query.
    """
    if not isinstance(value, str):
        raise InvalidRequest(f'Give exactly one "{param}" parameter, as plain text.')
    try:
        return normalize(value)
    except InvalidIdentifier as exc:
        raise InvalidRequest(str(exc))


def checkPaging(limit, offset):
    """Refuse paging values that would reach Mongo as an error (a negative skip is a 500)."""
    if limit is not None and limit < 0:
        raise InvalidRequest('"limit" must be 0 (no limit) or more.')
    if offset is not None and offset < 0:
        raise InvalidRequest('"offset" must be 0 or more.')


def checkSorting(sort, fields):
    """Refuse a sort by anything but ``fields`` (a sort by "$where" reached Mongo: a 500)."""
    try:
        checkSort(sort, fields)
    except ValueError as exc:
        raise InvalidRequest(str(exc))
