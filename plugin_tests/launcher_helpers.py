"""Helpers shared by the launcher backends' tests."""

import socket


def makeDataset(root):
    """A small dataset directory: a file and a subfolder with a table."""
    data = root / 'dataset'
    (data / 'tables').mkdir(parents=True)
    (data / 'readme.txt').write_text('hello\n')
    (data / 'tables' / 'values.csv').write_text('a,b\n1,2\n')
    return data


def socketRefused(path):
    """True when nothing answers on the Unix socket ``path`` (or it is gone)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        return sock.connect_ex(path) != 0


def runInKernel(wsUrl, code, headers=(), sock=None, timeout=60, origin=None):
    """Run ``code`` in a kernel over its websocket (the Jupyter protocol); returns stdout.

    ``wsUrl`` is ``ws://host/…/api/kernels/<id>/channels``; ``sock`` a connected
    socket to use instead of opening one (a server on a Unix socket); ``origin``
    the Origin header a browser would send. A Python
    exception in the kernel raises AssertionError with its traceback.
    """
    import json
    import uuid

    import websocket

    options = {'origin': origin} if origin else {}
    ws = websocket.create_connection(
        wsUrl, header=list(headers), socket=sock, timeout=timeout, **options
    )
    try:
        msgId = uuid.uuid4().hex
        ws.send(
            json.dumps(
                {
                    'header': {
                        'msg_id': msgId,
                        'username': 'test',
                        'session': uuid.uuid4().hex,
                        'msg_type': 'execute_request',
                        'version': '5.3',
                    },
                    'parent_header': {},
                    'metadata': {},
                    'content': {
                        'code': code,
                        'silent': False,
                        'store_history': False,
                        'user_expressions': {},
                        'allow_stdin': False,
                        'stop_on_error': True,
                    },
                    'channel': 'shell',
                    'buffers': [],
                }
            )
        )
        out = []
        while True:
            message = json.loads(ws.recv())
            if message.get('parent_header', {}).get('msg_id') != msgId:
                continue
            kind = message['header']['msg_type']
            if kind == 'stream':
                out.append(message['content']['text'])
            elif kind == 'error':
                raise AssertionError('\n'.join(message['content']['traceback']))
            elif kind == 'status' and message['content']['execution_state'] == 'idle':
                return ''.join(out)
    finally:
        ws.close()


def unixSocket(path):
    """A stream socket connected to the Unix socket ``path``."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock
