"""Small primitives every part of the plugin shares: the clock, ids, process identity.

One copy of each, so that a fix (a naive datetime read back from Mongo, a reused
pid) is made once. Nothing here knows of Girder's models or of HTTP.
"""

import datetime
import os
import re
import socket

import psutil
from bson import ObjectId
from bson.errors import InvalidId

_SITE_NAME_RE = re.compile(r'^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$')


def now():
    """The current time, timezone-aware (UTC)."""
    return datetime.datetime.now(datetime.timezone.utc)


def aware(value):
    """``value`` as a timezone-aware datetime: Mongo hands back naive UTC datetimes."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=datetime.timezone.utc)
    return value


def parseTime(text):
    """An ISO 8601 time (``Z`` allowed) as an aware datetime, or None if it is not one."""
    try:
        return aware(datetime.datetime.fromisoformat(str(text).replace('Z', '+00:00')))
    except ValueError:
        return None


def objectId(value):
    """``value`` as an ObjectId, or None when it is not 24 hexadecimal characters.

    Anything but a string or an ObjectId (a dict smuggled in as ``id[$ne]``) is None,
    so what reaches a query is never an operator.
    """
    if isinstance(value, ObjectId):
        return value
    if not isinstance(value, str):
        return None
    try:
        return ObjectId(value)
    except InvalidId:
        return None


def validSiteName(name):
    """True when ``name`` may name a site: 1-64 letters, digits, '.', '_' or '-'."""
    return isinstance(name, str) and bool(_SITE_NAME_RE.match(name))


def checkSort(sort, fields):
    """Raise ValueError naming the choices unless every ``(field, direction)`` is in ``fields``."""
    for field, _direction in sort or ():
        if field not in fields:
            raise ValueError(f'Sort by one of: {", ".join(sorted(fields))}.')


def hostId():
    """This machine and boot: a process stamp is only judged on the machine that made it."""
    try:
        with open('/proc/sys/kernel/random/boot_id') as boot:
            bootId = boot.read().strip()
    except OSError:
        bootId = ''
    return f'{socket.gethostname()}/{bootId}'


def processStamp(pid=None):
    """Who process ``pid`` (default: this one) is: host, pid and start time.

    The start time tells a process from a later one that reuses its pid.
    """
    pid = os.getpid() if pid is None else pid
    try:
        started = psutil.Process(pid).create_time()
    except psutil.Error:
        started = None
    return {'host': hostId(), 'pid': pid, 'started': started}


def processGone(stamp):
    """True when the process ``stamp`` names is known to have ended.

    Only a process of this machine (same host name and boot) can be judged; for any
    other, or a malformed stamp, the answer is False and the caller waits out a grace
    period instead.
    """
    if not isinstance(stamp, dict) or stamp.get('host') != hostId():
        return False
    if stamp.get('started') is None or not isinstance(stamp.get('pid'), int):
        return False
    try:
        return psutil.Process(stamp['pid']).create_time() != stamp['started']
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False
