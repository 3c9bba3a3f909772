"""Bubblewrap sandboxes for notebook servers, and late dataset binding for the warm pool.

A sandboxed server sees (see :func:`bwrap_args`):

- the system (``/usr`` and a few files of ``/etc``) and the Python environment
  that runs jupyter_server, read-only; nothing else of the host: not ``/root``,
  not Girder's configuration, database or ``var/`` directory, not other
  datasets;
- its scratch home ``/home/nb`` (the working directory's ``home/``), writable;
- its dataset, bind-mounted read-only at ``/home/nb/<data name>``;
- ``/run/datadns`` (the working directory's ``run/``), where it listens on a
  Unix socket: the sandbox has a network namespace of its own with no
  interface up, so it can open no TCP connection to anything;
- a fresh ``/proc`` of its own PID namespace: no other process is visible;
- an environment that holds only what :func:`sandbox_env` lists.

It runs as uid/gid 65534 in a user namespace of its own, with no capabilities.

**Adoption rather than --die-with-parent.** ``bwrap --die-with-parent`` kills
the sandbox when the process that started bwrap exits, i.e. when Girder
restarts; the process backend instead lets notebooks outlive Girder (a new
session per server) and adopts them after a restart. Stopping signals the
server's process group and then kills the PID namespace's init, which takes
every process of the sandbox (kernels included) with it.

**Late binding (the warm pool).** bwrap cannot add a mount to a running
sandbox. A pooled server is therefore started with ``data/`` of its working
directory bind-mounted as the dataset; on the host that directory is a
*shared* mount point, so the sandbox's copy is its slave. At claim time
:func:`bind_readonly` mounts the dataset, already read-only, onto it on the
host, and the mount propagates into the sandbox, read-only (a read-only flag
added by a later remount would not propagate, hence the staging mount). This
needs ``CAP_SYS_ADMIN`` on the host (Girder running as root); without it
:func:`can_mount` is False and the pool stays empty for sandboxed servers.
"""

import ctypes
import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
import threading

#: Where things appear inside the sandbox.
HOME = '/home/nb'
RUN_DIR = '/run/datadns'
ETC_DIR = '/etc/datadns'
SOCKET_NAME = 'nb.sock'
SANDBOX_UID = 65534

#: Files and directories of /etc that programs need; the rest of /etc stays hidden
#: (the sandbox's user is the host user that runs Girder, so anything visible that
#: this user may read, /etc/shadow included when Girder runs as root, is readable).
ETC_ALLOWLIST = (
    '/etc/alternatives',
    '/etc/ca-certificates',
    '/etc/fonts',
    '/etc/group',
    '/etc/host.conf',
    '/etc/ld.so.cache',
    '/etc/ld.so.conf',
    '/etc/ld.so.conf.d',
    '/etc/localtime',
    '/etc/mime.types',
    '/etc/nsswitch.conf',
    '/etc/os-release',
    '/etc/passwd',
    # R's configuration (Debian's /usr/lib/R/etc links into it), for tools with an R kernel.
    '/etc/R',
    '/etc/ssl',
    '/etc/timezone',
)
#: Environment variables that a sandboxed (or unsandboxed) server may receive from
#: the launcher's own configuration; nothing is inherited from Girder's environment.
BASE_ENV = {
    'LANG': 'C.UTF-8',
    'LC_ALL': 'C.UTF-8',
    'PYTHONUNBUFFERED': '1',
}

_probe_lock = threading.Lock()
_probes = {}


def python_paths(executable=None):
    """Directories that the Python running jupyter_server needs, read-only.

    The virtual environment (``sys.prefix``) and the installation it was made
    from (``sys.base_prefix``), resolved through symlinks; anything under
    ``/usr`` is visible anyway.
    """
    paths = set()
    for path in (sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix):
        for candidate in (path, os.path.realpath(path)):
            if candidate and not candidate.startswith('/usr/') and candidate != '/usr':
                paths.add(candidate)
    if executable:
        real = os.path.realpath(executable)
        if not real.startswith('/usr/'):
            paths.add(os.path.dirname(os.path.dirname(real)))
    # A path inside another one is covered by it.
    return sorted(p for p in paths if not any(p != q and p.startswith(q + '/') for q in paths))


def env_paths(env):
    """Directories that a tool's Python environment ``env`` (a venv) needs, read-only.

    The environment itself and, when it is a symlink, what it points to; its
    base interpreter is Debian's under ``/usr`` (visible anyway) or is shown by
    the launcher's ``sandbox_ro_paths``.
    """
    paths = []
    for candidate in (os.path.abspath(env), os.path.realpath(env)):
        if candidate not in paths and not candidate.startswith('/usr/') and candidate != '/usr':
            paths.append(candidate)
    return paths


def _root_binds():
    """bwrap options that rebuild the system part of the root file system, read-only."""
    args = []
    for name in ('bin', 'lib', 'lib32', 'lib64', 'libx32', 'sbin'):
        path = f'/{name}'
        if os.path.islink(path):
            args += ['--symlink', os.readlink(path), path]
        elif os.path.isdir(path):
            args += ['--ro-bind', path, path]
    args += ['--ro-bind', '/usr', '/usr']
    for path in ETC_ALLOWLIST:
        args += ['--ro-bind-try', path, path]
    return args


def bwrap_args(work_dir, data_path, data_name, extra_ro_paths=(), env=None, bwrap='bwrap'):
    """The bwrap command line (up to, not including, the command) for one notebook server.

    ``work_dir`` holds ``home/``, ``run/`` and ``etc/``; ``data_path`` is the
    host directory shown read-only as ``/home/nb/<data_name>``.
    """
    args = [bwrap, *_root_binds()]
    for path in extra_ro_paths:
        args += ['--ro-bind', path, path]
    args += [
        '--dev',
        '/dev',
        '--proc',
        '/proc',
        '--tmpfs',
        '/tmp',
        '--dir',
        '/var/tmp',
        '--bind',
        os.path.join(work_dir, 'home'),
        HOME,
        '--ro-bind',
        data_path,
        f'{HOME}/{data_name}',
        '--bind',
        os.path.join(work_dir, 'run'),
        RUN_DIR,
        '--ro-bind',
        os.path.join(work_dir, 'etc'),
        ETC_DIR,
        '--chdir',
        HOME,
        '--unshare-user',
        '--unshare-pid',
        '--unshare-net',
        '--unshare-ipc',
        '--unshare-uts',
        '--unshare-cgroup-try',
        '--hostname',
        'notebook',
        '--uid',
        str(SANDBOX_UID),
        '--gid',
        str(SANDBOX_UID),
        '--clearenv',
    ]
    for key, value in sorted((env or {}).items()):
        args += ['--setenv', key, value]
    return args + ['--']


#: A batch run's scratch home inside its sandbox (its working directory's ``home/``).
RUN_HOME = '/home/run'


def run_bwrap_args(
    home, data_path, results_path, data_dir, results_dir, extra_ro_paths=(), env=None, bwrap='bwrap'
):
    """The bwrap command line (up to, not including, the command) for one batch run.

    The same sandbox as a notebook server's (:func:`bwrap_args`): the system and
    ``extra_ro_paths`` read-only, no network, a PID namespace and ``/proc`` of its
    own, uid 65534, only ``env`` as environment; ``home`` (writable) appears as
    :data:`RUN_HOME`, ``data_path`` read-only at ``data_dir`` and ``results_path``
    writable at ``results_dir``. ``--die-with-parent``: the sandbox ends with the
    process that started bwrap (the run's wrapper, never Girder), so ending that
    one ends every process of the run.
    """
    args = [bwrap, *_root_binds()]
    for path in extra_ro_paths:
        args += ['--ro-bind', path, path]
    args += [
        '--dev',
        '/dev',
        '--proc',
        '/proc',
        '--tmpfs',
        '/tmp',
        '--dir',
        '/var/tmp',
        '--bind',
        home,
        RUN_HOME,
        '--ro-bind',
        data_path,
        data_dir,
        '--bind',
        results_path,
        results_dir,
        '--chdir',
        RUN_HOME,
        '--unshare-user',
        '--unshare-pid',
        '--unshare-net',
        '--unshare-ipc',
        '--unshare-uts',
        '--unshare-cgroup-try',
        '--hostname',
        'run',
        '--uid',
        str(SANDBOX_UID),
        '--gid',
        str(SANDBOX_UID),
        '--new-session',
        '--die-with-parent',
        '--clearenv',
    ]
    for key, value in sorted((env or {}).items()):
        args += ['--setenv', key, value]
    return args + ['--']


def sandbox_env(python_bin, home, runtime_dir, extra=None):
    """The whole environment of a notebook server: nothing comes from Girder's."""
    env = dict(BASE_ENV)
    env.update(
        {
            'HOME': home,
            'USER': 'nobody',
            'PATH': f'{python_bin}:/usr/local/bin:/usr/bin:/bin',
            'JUPYTER_RUNTIME_DIR': runtime_dir,
            'TMPDIR': '/tmp',
        }
    )
    env.update({str(k): str(v) for k, v in (extra or {}).items()})
    return env


def probe(bwrap='bwrap'):
    """Whether bubblewrap can make a sandbox here: ``(True, '')`` or ``(False, why)``.

    Run once per bwrap path and process: user, PID and network namespaces must
    be available to this user.
    """
    with _probe_lock:
        if bwrap in _probes:
            return _probes[bwrap]
        if shutil.which(bwrap) is None:
            result = (False, f'{bwrap} is not installed (Debian package "bubblewrap")')
        else:
            try:
                run = subprocess.run(
                    [
                        bwrap,
                        *_root_binds(),
                        '--proc',
                        '/proc',
                        '--dev',
                        '/dev',
                        '--unshare-user',
                        '--unshare-pid',
                        '--unshare-net',
                        '--unshare-ipc',
                        '--uid',
                        str(SANDBOX_UID),
                        '--clearenv',
                        '--',
                        'true',
                    ],
                    capture_output=True,
                    text=True,
                    timeout=20,
                    env={'PATH': '/usr/bin:/bin'},
                )
                ok = run.returncode == 0
                result = (ok, '' if ok else (run.stderr.strip() or f'exit {run.returncode}'))
            except (OSError, subprocess.SubprocessError) as error:
                result = (False, str(error))
        _probes[bwrap] = result
        return result


# -- mounts on the host (late binding for the warm pool) ---------------------------

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_PRIVATE = 1 << 18
MS_SHARED = 1 << 20
MNT_DETACH = 0x2

_libc = None


def _lib():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6', use_errno=True)
    return _libc


def _mount_call(source, target, flags):
    result = _lib().mount(
        source.encode() if source else None, target.encode(), None, ctypes.c_ulong(flags), None
    )
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f'mount {source or ""} {target}: {os.strerror(errno)}')


def _umount(target):
    result = _lib().umount2(target.encode(), MNT_DETACH)
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f'umount {target}: {os.strerror(errno)}')


def can_mount():
    """Whether this process may make mounts on the host (needed for late binding)."""
    if os.geteuid() != 0:
        return False
    try:
        with open('/proc/self/status') as status:
            for line in status:
                if line.startswith('CapEff:'):
                    return bool(int(line.split()[1], 16) & (1 << 21))  # CAP_SYS_ADMIN
    except (OSError, ValueError):
        return False
    return False


def make_shared_mount_point(path):
    """Turn directory ``path`` into a shared mount point (a bind mount of itself)."""
    _mount_call(path, path, MS_BIND)
    _mount_call(None, path, MS_SHARED)


def bind_readonly(source, target, stage_root):
    """Mount directory ``source`` read-only onto the shared mount point ``target``.

    The bind is made read-only in a private staging place first (its own private
    mount, so nothing made there propagates anywhere), so that the copy that
    propagates into the sandbox is read-only from its first instant. Nothing
    stays mounted in ``stage_root`` afterwards.
    """
    os.makedirs(stage_root, mode=0o700, exist_ok=True)
    stage = tempfile.mkdtemp(dir=stage_root)
    try:
        _mount_call(stage, stage, MS_BIND)
        try:
            _mount_call(None, stage, MS_PRIVATE)
            _mount_call(source, stage, MS_BIND)
            try:
                flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV
                _mount_call(None, stage, flags)
                _mount_call(stage, target, MS_BIND)
            finally:
                _umount(stage)
        finally:
            _umount(stage)
    finally:
        os.rmdir(stage)


def mounts_under(path):
    """Mount points at or below ``path`` on the host, deepest first."""
    path = os.path.realpath(path)
    found = []
    try:
        with open('/proc/self/mountinfo') as info:
            for line in info:
                target = line.split()[4].encode().decode('unicode_escape')
                if target == path or target.startswith(path + '/'):
                    found.append(target)
    except OSError:
        return []
    return sorted(found, key=len, reverse=True)


def unmount_under(path):
    """Detach every mount at or below ``path``; True when none is left.

    A working directory must never be deleted while a dataset is mounted in it.
    """
    for _ in range(8):
        targets = mounts_under(path)
        if not targets:
            return True
        for target in targets:
            try:
                _umount(target)
            except OSError:
                pass
    return not mounts_under(path)
