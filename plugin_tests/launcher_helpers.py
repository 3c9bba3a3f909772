"""Helpers shared by the launcher backends' tests."""

import socket


def makeDataset(root):
    """A small dataset directory: a file and a subfolder with a table."""
    data = root / 'dataset'
    (data / 'tables').mkdir(parents=True)
    (data / 'readme.txt').write_text('hello\n')
    (data / 'tables' / 'values.csv').write_text('a,b\n1,2\n')
    return data


def contentsUrl(launcher, handle, path):
    return launcher.api_url(handle, f'contents/{path}')


def connectRefused(host, port):
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex((host, port)) != 0
