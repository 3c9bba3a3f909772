"""Domain errors: what the services and models raise when a request cannot be met.

They say what went wrong in the domain's words (a dataset not found, a site that
failed, a cap reached) and carry a message a person can act on. They know nothing
of HTTP: ``rest/`` turns each into its status code in one place
(:func:`girder_resolver.rest.errors.httpStatus`).
"""


class DataDnsError(Exception):
    """Base of the plugin's domain errors; ``message`` is shown to the person who asked.

    ``extra``, if given, is a JSON-able object answered beside the message (what a 404
    understood the request as).
    """

    extra = None

    def __init__(self, message, extra=None):
        super().__init__(message)
        self.message = message
        if extra is not None:
            self.extra = extra


class InvalidRequest(DataDnsError):
    """The request itself is malformed: a missing field, a value of the wrong kind."""


class NotFound(DataDnsError):
    """What the request names does not exist (or is not visible to the person)."""


class Conflict(DataDnsError):
    """The request collides with the current state: a name in use, a change meanwhile."""


class InvalidTransition(Conflict):
    """A status change (of a notebook, a run) that its transition table does not allow."""

    def __init__(self, current, wanted, what='notebook'):
        super().__init__(
            f'The {what} is {current or "gone"}; it cannot become {wanted}. '
            'Reload it and try again.'
        )
        self.current = current
        self.wanted = wanted


class TooLarge(DataDnsError):
    """The request carries more than one call may (a registration batch over the limit)."""


class NotADataset(DataDnsError):
    """Well-formed, but names something that is not a dataset (a folder with no data path)."""


class LimitReached(DataDnsError):
    """A person or delegator reached a cap (live notebooks per person)."""


class Unavailable(DataDnsError):
    """Nothing can serve the request right now (site cap, no healthy site); retry later."""


class SiteFailed(DataDnsError):
    """Another site of the federation failed or answered wrongly.

    ``status`` is set when the site itself answered with a client error that should be
    passed on as it is (a 404 or 409 of the site); otherwise it is a bad gateway.
    """

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
