"""A jupyter_server contents manager that keeps the dataset read-only.

The notebook server runs as whatever user Girder runs as, often root, so file
permissions cannot stop it writing into the dataset. This manager refuses every
write through Jupyter's contents API (save, upload, new, copy, rename, delete,
checkpoints) below the configured read-only paths, and reports those paths as
not writable so that the UI shows them so.

The module is deliberately standalone (jupyter_server, tornado and traitlets
only, no package-relative imports): the process backend loads it by file path
in the notebook server's config file, and the docker backend mounts this file
into the container, whose jupyter_server may be an older release (Debian
bookworm ships 1.23); it works with jupyter_server 1.x and 2.x. Two flavours:
``ReadOnlyDataContentsManager`` (async, jupyter_server's default kind) and
``ReadOnlyDataSyncContentsManager`` (sync), for UIs that still call the
contents manager synchronously, such as Debian bookworm's nbclassic 0.3.
"""

import os
import posixpath

from jupyter_server.services.contents.largefilemanager import (
    AsyncLargeFileManager,
    LargeFileManager,
)
from tornado import web
from traitlets import List, Unicode


def _api_path(path):
    """Normalise a contents API path: no leading or trailing slash, no '..'."""
    normalized = posixpath.normpath('/' + (path or '').strip('/'))
    return normalized.lstrip('/')


class ReadOnlyDataContentsManager(AsyncLargeFileManager):
    """The default file contents manager, with read-only subtrees.

    Everything outside ``read_only_paths`` (the notebook's own working
    directory) stays writable.
    """

    read_only_paths = List(
        Unicode(),
        default_value=[],
        config=True,
        help='Contents API paths (relative to root_dir) whose whole subtree is read-only, '
        'e.g. the directory or symlink under which the dataset appears.',
    )
    read_only_message = Unicode(
        'The dataset is mounted read-only',
        config=True,
        help='Message of the 403 answer to a write below a read-only path.',
    )

    def _read_only_targets(self):
        """Real paths of the read-only subtrees (a symlinked dataset resolves to the data)."""
        return [
            os.path.realpath(os.path.join(self.root_dir, _api_path(prefix)))
            for prefix in self.read_only_paths
            if _api_path(prefix)
        ]

    def is_read_only(self, path):
        """Whether the API path lies at or below a read-only path."""
        api_path = _api_path(path)
        for prefix in self.read_only_paths:
            prefix = _api_path(prefix)
            if prefix and (api_path == prefix or api_path.startswith(prefix + '/')):
                return True
        # The resolved path catches a second route to the data, e.g. a symlink
        # that a kernel created in the writable working directory.
        real_path = os.path.realpath(os.path.join(self.root_dir, api_path))
        return any(
            real_path == target or real_path.startswith(target + os.sep)
            for target in self._read_only_targets()
        )

    def _refuse_if_read_only(self, *paths):
        for path in paths:
            if path is not None and self.is_read_only(path):
                raise web.HTTPError(403, self.read_only_message)

    def _base_model(self, path, *args, **kwargs):
        model = super()._base_model(path, *args, **kwargs)
        if self.is_read_only(path):
            model['writable'] = False
        return model

    async def save(self, model, path=''):
        """Save a file or directory unless it is below a read-only path."""
        self._refuse_if_read_only(path)
        return await super().save(model, path)

    async def delete_file(self, path, *args, **kwargs):
        """Delete a file or directory unless it is below a read-only path."""
        self._refuse_if_read_only(path)
        return await super().delete_file(path, *args, **kwargs)

    async def rename_file(self, old_path, new_path):
        """Rename unless either end is below a read-only path."""
        self._refuse_if_read_only(old_path, new_path)
        return await super().rename_file(old_path, new_path)

    async def copy(self, from_path, to_path=None):
        """Copy, reading from anywhere, unless the copy would land below a read-only path."""
        # With no target the copy goes beside its source.
        target = to_path if to_path is not None else posixpath.dirname(_api_path(from_path))
        self._refuse_if_read_only(target)
        return await super().copy(from_path, to_path)

    async def create_checkpoint(self, path):
        """Checkpoints are written beside the file, so none below a read-only path."""
        self._refuse_if_read_only(path)
        return await super().create_checkpoint(path)

    async def restore_checkpoint(self, checkpoint_id, path):
        """Restoring a checkpoint writes the file: refused below a read-only path."""
        self._refuse_if_read_only(path)
        return await super().restore_checkpoint(checkpoint_id, path)

    async def delete_checkpoint(self, checkpoint_id, path):
        """Deleting a checkpoint writes below the file's directory."""
        self._refuse_if_read_only(path)
        return await super().delete_checkpoint(checkpoint_id, path)


class ReadOnlyDataSyncContentsManager(LargeFileManager):
    """The synchronous twin of :class:`ReadOnlyDataContentsManager`.

    Debian bookworm's nbclassic 0.3 calls the contents manager synchronously
    and breaks (404 on the file listing) with an async one.
    """

    read_only_paths = List(
        Unicode(), default_value=[], config=True, help='As ReadOnlyDataContentsManager.'
    )
    read_only_message = Unicode(
        'The dataset is mounted read-only', config=True, help='As ReadOnlyDataContentsManager.'
    )

    _read_only_targets = ReadOnlyDataContentsManager._read_only_targets
    is_read_only = ReadOnlyDataContentsManager.is_read_only
    _refuse_if_read_only = ReadOnlyDataContentsManager._refuse_if_read_only

    def _base_model(self, path, *args, **kwargs):
        model = super()._base_model(path, *args, **kwargs)
        if self.is_read_only(path):
            model['writable'] = False
        return model

    def save(self, model, path=''):
        """Save a file or directory unless it is below a read-only path."""
        self._refuse_if_read_only(path)
        return super().save(model, path)

    def delete_file(self, path, *args, **kwargs):
        """Delete a file or directory unless it is below a read-only path."""
        self._refuse_if_read_only(path)
        return super().delete_file(path, *args, **kwargs)

    def rename_file(self, old_path, new_path):
        """Rename unless either end is below a read-only path."""
        self._refuse_if_read_only(old_path, new_path)
        return super().rename_file(old_path, new_path)

    def copy(self, from_path, to_path=None):
        """Copy unless the copy would land below a read-only path."""
        target = to_path if to_path is not None else posixpath.dirname(_api_path(from_path))
        self._refuse_if_read_only(target)
        return super().copy(from_path, to_path)

    def create_checkpoint(self, path):
        """No checkpoints below a read-only path."""
        self._refuse_if_read_only(path)
        return super().create_checkpoint(path)

    def restore_checkpoint(self, checkpoint_id, path):
        """Restoring a checkpoint writes the file: refused below a read-only path."""
        self._refuse_if_read_only(path)
        return super().restore_checkpoint(checkpoint_id, path)

    def delete_checkpoint(self, checkpoint_id, path):
        """Deleting a checkpoint writes below the file's directory."""
        self._refuse_if_read_only(path)
        return super().delete_checkpoint(checkpoint_id, path)
