"""Running code in a real kernel of a notebook server, and reading its files, as a browser does.

Works for servers on a Unix socket (the docker backend) and on a TCP port alike,
through :meth:`Launcher.request` and a websocket over the same kind of connection.
"""

import datetime
import json
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

import websocket

from girder_resolver.launcher.base import open_connection


def contents(launcher, handle, path, token=None, method='GET', body=None):
    """A request to the server's contents API (Unix socket or TCP); returns the Response."""
    return launcher.request(
        handle, method, f'api/contents/{urllib.parse.quote(path)}', token=token, body=body
    )


@dataclass
class KernelRun:
    """What a piece of code printed in a kernel, and its error if it raised."""

    stdout: str = ''
    stderr: str = ''
    #: stdout and stderr as they came, interleaved.
    output: str = ''
    error: dict = field(default_factory=dict)

    def json(self):
        """The last line of stdout, parsed as JSON (the code prints its findings last)."""
        assert not self.error, f'the kernel code raised: {self.error}'
        return json.loads(self.stdout.strip().splitlines()[-1])


def _message(msg_type, session, content):
    return {
        'header': {
            'msg_id': uuid.uuid4().hex,
            'msg_type': msg_type,
            'username': 'test',
            'session': session,
            'date': datetime.datetime.now(datetime.timezone.utc).isoformat(),
            'version': '5.3',
        },
        'parent_header': {},
        'metadata': {},
        'content': content,
        'channel': 'shell',
        'buffers': [],
    }


def execute(ws, code, timeout=60):
    """Run ``code`` over an open kernel websocket (the Jupyter protocol); returns a KernelRun."""
    request = _message(
        'execute_request',
        uuid.uuid4().hex,
        {
            'code': code,
            'silent': False,
            'store_history': False,
            'user_expressions': {},
            'allow_stdin': False,
            'stop_on_error': True,
        },
    )
    ws.send(json.dumps(request))
    return _collect(ws, request['header']['msg_id'], timeout)


def runInKernel(wsUrl, code, headers=(), sock=None, timeout=60, origin=None):
    """Run ``code`` in a kernel over its websocket; returns what it printed.

    ``wsUrl`` is ``ws://host/…/api/kernels/<id>/channels``; ``sock`` a connected
    socket to use instead of opening one (a server on a Unix socket); ``origin``
    the Origin header a browser would send. A Python
    exception in the kernel raises AssertionError with its traceback.
    """
    options = {'origin': origin} if origin else {}
    ws = websocket.create_connection(
        wsUrl, header=list(headers), socket=sock, timeout=timeout, **options
    )
    try:
        run = execute(ws, code, timeout)
    finally:
        ws.close()
    if run.error:
        raise AssertionError('\n'.join(run.error['traceback'] or [str(run.error)]))
    return run.output


def executeInNewKernel(launcher, handle, token, code, timeout=60, kernel=None):
    """Run ``code`` in a new kernel of a notebook server, as a browser does; returns a KernelRun.

    The kernel (``kernel``, a kernelspec name, else the server's default) is
    started through the REST API (``POST api/kernels``) and the code
    sent as an ``execute_request`` over the kernel's websocket, reached through the
    server's Unix socket or TCP port like any request; the kernel is shut down after.
    """
    body = {'name': kernel} if kernel else {}
    started = launcher.request(handle, 'POST', 'api/kernels', token=token, body=body)
    assert started.status == 201, started.body
    kernel_id = started.json()['id']
    try:
        connection = open_connection(handle, timeout)
        connection.connect()  # a plain stream socket to the server, Unix or TCP
        ws = websocket.create_connection(
            f'ws://localhost{handle["baseUrl"]}api/kernels/{kernel_id}/channels',
            socket=connection.sock,
            header=[f'Authorization: token {token}'],
            timeout=timeout,
        )
        try:
            return execute(ws, code, timeout)
        finally:
            ws.close()
    finally:
        launcher.request(handle, 'DELETE', f'api/kernels/{kernel_id}', token=token)


def _collect(ws, msg_id, timeout):
    run = KernelRun()
    deadline = time.monotonic() + timeout
    replied = idle = False
    while not (replied and idle):
        assert time.monotonic() < deadline, f'no answer from the kernel within {timeout} s'
        message = json.loads(ws.recv())
        if message.get('parent_header', {}).get('msg_id') != msg_id:
            continue
        kind, content = message['msg_type'], message['content']
        if kind == 'stream':
            run.output += content['text']
            if content['name'] == 'stdout':
                run.stdout += content['text']
            else:
                run.stderr += content['text']
        elif kind == 'error':
            run.error = {key: content.get(key) for key in ('ename', 'evalue', 'traceback')}
        elif kind == 'execute_reply':
            replied = True
        elif kind == 'status' and content.get('execution_state') == 'idle':
            idle = True
    return run
