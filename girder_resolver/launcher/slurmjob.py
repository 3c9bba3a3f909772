"""The program a Slurm notebook job runs on its compute node (standard library only).

Copied into the job's working directory and submitted as the batch script (with a
``#!`` line naming the Python that runs it), given one argument: the path of its
``job.json``. It

1. starts the sandboxed notebook server (``argv`` of ``job.json``), which listens on
   a Unix socket inside its sandbox, since the sandbox has no network of its own;
2. listens on a TCP port of the node (``listen``; port 0: any free one) and forwards
   each connection to that socket, byte for byte (HTTP and WebSockets alike), never
   through a symlink put in its place;
3. writes where it answers, ``{"host", "port", "node", "jobId"}``, atomically into
   ``address_file`` (outside the sandbox, so a kernel cannot redirect the front door);
4. on SIGTERM/SIGINT (``scancel``) ends the server's process group, and exits with
   the server's exit status when the server ends.

For a batch run (a ``job.json`` without ``socket``) it only executes ``argv`` with
``env`` in ``cwd``.

The server is reached through the port only with the notebook's token (or the front
door's cookie): the port itself is open to whoever reaches the node, as with
batchspawner.
"""

import asyncio
import json
import os
import signal
import socket
import stat
import subprocess
import sys

_WILDCARD = {'', '0.0.0.0', '::'}
_CHUNK = 65536


async def _pipe(reader, writer):
    try:
        while True:
            data = await reader.read(_CHUNK)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (OSError, RuntimeError):
            writer.close()


def _connect_socket(path):
    """A socket connected to the Unix socket at ``path``, never through a symlink.

    The socket's directory is writable inside the sandbox: a kernel could put a
    symlink there to another socket of the node (a container engine's, say), which
    a plain connect() would follow with this program's rights. Opening the path
    with O_NOFOLLOW and connecting through /proc/self/fd reaches only a real
    socket file (also past the 108-byte limit of socket paths).
    """
    fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(f'{path} is not a socket')
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f'/proc/self/fd/{fd}')
        except OSError:
            sock.close()
            raise
        return sock
    finally:
        os.close(fd)


async def _forward(socket_path, client_reader, client_writer):
    try:
        sock = _connect_socket(socket_path)
        server_reader, server_writer = await asyncio.open_unix_connection(sock=sock)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(
            _pipe(client_reader, server_writer), _pipe(server_reader, client_writer)
        )
    finally:
        server_writer.close()
        client_writer.close()


def _write_address(path, address):
    tmp = f'{path}.{os.getpid()}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, 'w') as out:
        json.dump(address, out)
    os.replace(tmp, path)


def _end(process, grace):
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


async def _main(job):
    process = subprocess.Popen(
        job['argv'],
        env=job['env'],
        cwd=job.get('cwd') or '/',
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    def handle(reader, writer):
        return _forward(job['socket'], reader, writer)

    listen = job.get('listen') or '0.0.0.0'
    server = await asyncio.start_server(handle, listen, 0)
    port = server.sockets[0].getsockname()[1]
    node = socket.gethostname()
    _write_address(
        job['address_file'],
        {
            'host': node if listen in _WILDCARD else listen,
            'port': port,
            'node': node,
            'jobId': os.environ.get('SLURM_JOB_ID', ''),
        },
    )
    ended = loop.run_in_executor(None, process.wait)
    waiter = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({ended, waiter}, return_when=asyncio.FIRST_COMPLETED)
    server.close()
    if not ended.done():
        await loop.run_in_executor(None, _end, process, float(job.get('stop_grace', 5)))
    waiter.cancel()
    return process.wait()


def main(argv):
    with open(argv[1]) as spec:
        job = json.load(spec)
    if not job.get('socket'):
        # A batch run: nothing to serve; the job is its command (sandboxed, exit recorded).
        os.chdir(job.get('cwd') or '/')
        os.execve(job['argv'][0], job['argv'], job['env'])
    code = asyncio.run(_main(job))
    return code if code >= 0 else 128 - code


if __name__ == '__main__':
    sys.exit(main(sys.argv))
