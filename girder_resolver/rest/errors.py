"""The one place where domain errors become HTTP answers.

Every route of the plugin's resources runs inside :func:`answering`, so a service or
model raises :mod:`girder_resolver.errors` and never chooses a status code.
"""

import functools

from girder.api.rest import Resource
from girder.exceptions import RestException

from .. import errors

#: Each domain error's HTTP status; the most specific class listed wins.
STATUS = (
    (errors.InvalidTransition, 409),
    (errors.InvalidRequest, 400),
    (errors.NotFound, 404),
    (errors.Conflict, 409),
    (errors.TooLarge, 413),
    (errors.NotADataset, 422),
    (errors.LimitReached, 429),
    (errors.SiteFailed, 502),
    (errors.Unavailable, 503),
)


def httpStatus(error):
    """The HTTP status for a domain error."""
    if isinstance(error, errors.SiteFailed) and error.status:
        return error.status
    for kind, status in STATUS:
        if isinstance(error, kind):
            return status
    return 500


def answering(handler):
    """``handler`` with domain errors turned into :class:`RestException` answers."""

    @functools.wraps(handler)
    def wrapped(*args, **kwargs):
        try:
            return handler(*args, **kwargs)
        except errors.DataDnsError as exc:
            raise RestException(exc.message, code=httpStatus(exc), extra=exc.extra) from exc

    return wrapped


class DomainResource(Resource):
    """A Girder resource whose routes answer domain errors with their HTTP status."""

    def route(self, method, route, handler, nodoc=False, resource=None):
        return super().route(method, route, answering(handler), nodoc=nodoc, resource=resource)
