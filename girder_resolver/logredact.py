"""Keep secrets out of Girder's access log.

CherryPy's access log records every request line with its query string, and
clients do put secrets there: girder-client's ``authenticate(apiKey=...)`` sends
``POST /api_key/token?key=<the API key>``, and a link may carry ``?token=``.
This filter, on the handlers of the root logger (where Girder's log goes),
masks the values of such parameters in access-log records before any handler
writes them.
"""

import logging
import re

#: Query parameters whose values are secrets.
SECRET_PARAMS = ('key', 'token', 'girderToken', 'password', 'credential', 'ticket')
_SECRET = re.compile(r'([?&](?:%s)=)[^&\s"]*' % '|'.join(SECRET_PARAMS), re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Masks secret query parameters in CherryPy's access-log records."""

    def filter(self, record):
        if record.name.startswith('cherrypy.access'):
            message = record.getMessage()
            redacted = _SECRET.sub(r'\1[redacted]', message)
            if redacted != message:
                record.msg, record.args = redacted, ()
        return True


def install(logger=None):
    """Add the filter to every handler of ``logger`` (default: the root logger), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactSecrets) for f in handler.filters):
            handler.addFilter(RedactSecrets())
