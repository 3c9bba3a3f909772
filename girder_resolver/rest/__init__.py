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
