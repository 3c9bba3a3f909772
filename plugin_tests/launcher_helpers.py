"""Helpers shared by the launcher backends' tests."""

import socket

# test_datapaths and test_frontdoor import it from here; it lives with the kernel protocol.
from plugin_tests.kernel_helpers import runInKernel as runInKernel


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


def unixSocket(path):
    """A stream socket connected to the Unix socket ``path``."""
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    return sock
