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

_CLOCK_TICKS = os.sysconf('SC_CLK_TCK')
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


def startTicks(process):
    """When a ``psutil`` process started, in clock ticks since boot.

    The value ``/proc/<pid>/stat`` gives: unlike ``create_time()`` alone, it does not
    move when the system clock is set.
    """
    return round((process.create_time() - psutil.boot_time()) * _CLOCK_TICKS)


def processStart(pid):
    """When process ``pid`` started (see :func:`startTicks`), or None if there is none."""
    try:
        return startTicks(psutil.Process(pid))
    except psutil.Error:
        return None


def processMatches(pid, started):
    """Whether ``pid`` is a live (not zombie) process that started at ``started``.

    The start time tells a process from a later one that reuses its pid; with
    ``started`` None, any live process of that pid matches.
    """
    try:
        process = psutil.Process(pid)
        with process.oneshot():
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return started is None or startTicks(process) == started
    except psutil.NoSuchProcess:  # a zombie's ZombieProcess included
        return False
    except psutil.AccessDenied:
        return True


def processStamp(pid=None):
    """Who process ``pid`` (default: this one) is: host, pid and start time."""
    pid = os.getpid() if pid is None else pid
    return {'host': hostId(), 'pid': pid, 'started': processStart(pid)}


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
    return not processMatches(stamp['pid'], stamp['started'])
