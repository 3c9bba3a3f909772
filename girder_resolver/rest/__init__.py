"""REST resources: thin wrappers that validate input and hand off to the models."""

from girder.exceptions import RestException

from ..identifiers import InvalidIdentifier, normalize


def parseIdentifier(value, param='id'):
    """The canonical identifier for a request parameter, or a 400 a person can act on.

    Anything but a single string (a repeated parameter, a JSON object smuggled
    as ``id[$ne]``) is refused before it can reach a Mongo query.
    """
    if not isinstance(value, str):
        raise RestException(f'Give exactly one "{param}" parameter, as plain text.', code=400)
    try:
        return normalize(value)
    except InvalidIdentifier as exc:
        raise RestException(str(exc), code=400)


def checkPaging(limit, offset):
    """Refuse paging values that would reach Mongo as an error (a negative skip is a 500)."""
    if limit is not None and limit < 0:
        raise RestException('"limit" must be 0 (no limit) or more.', code=400)
    if offset is not None and offset < 0:
        raise RestException('"offset" must be 0 or more.', code=400)
