"""Where a dataset folder's data is on disk, recorded when the folder is imported.

A notebook mounts one directory. It must be the directory that *this folder's own*
filesystem import came from, never one derived from files found below the folder:
files are copied between folders (``POST /item/{id}/copy`` keeps a file's
``imported`` flag and ``path``), so any rule that walks up from a file lets a user
widen a notebook to a parent directory by copying one item into a folder of
their own.

So the path is recorded on the folder, in ``FIELD``, by Girder's import itself:

- ``POST /assetstore/{id}/import`` (admins only) into a folder records the import
  path on that destination folder (``root`` = ``path``), before the import runs;
- each folder the import creates for a sub-directory fires
  ``filesystem_assetstore_imported`` with its own path, recorded on it with the
  root of its parent's record.

A user-made folder has no record, and a copied folder's record names the folder it
was copied from, so it does not count. The recorded path must still be a
directory that lies inside the recorded root once symlinks are resolved.
"""

import datetime
import logging
import os

from girder.models.assetstore import Assetstore
from girder.models.folder import Folder

logger = logging.getLogger(__name__)

#: The folder field that holds ``{'path', 'root', 'recorded'}``.
FIELD = 'datadnsImport'


def _inside(path, root):
    path, root = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def record(folderId, path, root):
    """Record that folder ``folderId`` holds the import of directory ``path`` (under ``root``).

    Written straight to the collection: it is no change of the folder a person made,
    and must not fire the folder's save events. Ignored unless ``path`` is a
    directory inside ``root``.
    """
    if not (isinstance(path, str) and os.path.isdir(path) and _inside(path, root)):
        return False
    Folder().collection.update_one(
        {'_id': folderId},
        {
            '$set': {
                FIELD: {
                    # Bound to this folder: a copy of the folder (Girder copies the whole
                    # document) carries the record under another id, and it never counts.
                    'folderId': folderId,
                    'path': os.path.realpath(path),
                    'root': os.path.realpath(root),
                    'recorded': datetime.datetime.now(datetime.timezone.utc),
                }
            }
        },
    )
    return True


def keepRecord(folder):
    """Before a folder is saved: carry its import record over from the database.

    Girder saves whole documents; a copy of the folder loaded before the record
    was written (e.g. by the code that ran the import) would otherwise erase it.
    Nothing else ever writes the record, so the database's copy is the truth.
    """
    if not isinstance(folder, dict):
        return
    if '_id' not in folder:
        folder.pop(FIELD, None)  # a new folder (a copy, say) was imported by nobody
        return
    stored = Folder().collection.find_one({'_id': folder['_id']}, {FIELD: True}) or {}
    if FIELD in stored:
        folder[FIELD] = stored[FIELD]
    else:
        folder.pop(FIELD, None)


def recordRestImport(assetstoreId, params):
    """``POST /assetstore/{id}/import`` into a folder: record its import path there."""
    params = params or {}
    if params.get('destinationType') != 'folder':
        return False
    assetstore = Assetstore().load(assetstoreId) if assetstoreId else None
    if not assetstore or assetstore.get('type') != 0:  # AssetstoreType.FILESYSTEM
        return False
    folder = Folder().load(params.get('destinationId'), force=True, exc=False)
    importPath = params.get('importPath')
    if folder is None or not isinstance(importPath, str):
        return False
    return record(folder['_id'], importPath, importPath)


def recordImportedFolder(folderId, path):
    """A folder that an import created for ``path``: recorded under its parent's root."""
    folder = Folder().load(folderId, force=True, exc=False)
    if folder is None or folder.get('parentCollection') != 'folder':
        return False
    parent = Folder().load(folder['parentId'], force=True, exc=False) or {}
    root = (parent.get(FIELD) or {}).get('root')
    if not root:
        return False
    return record(folder['_id'], path, root)


def importedPath(folder):
    """The directory recorded for ``folder``'s own import, or None.

    None when there is no record, or the recorded path is no longer a directory
    inside its recorded root (moved, or a symlink now leads elsewhere).
    """
    entry = folder.get(FIELD)
    if not isinstance(entry, dict) or entry.get('folderId') != folder['_id']:
        return None
    path, root = entry.get('path'), entry.get('root')
    if not isinstance(path, str) or not isinstance(root, str):
        return None
    if not os.path.isdir(path) or not _inside(path, root):
        logger.warning(
            'Folder %s: recorded data path %s is gone or left its root', folder['_id'], path
        )
        return None
    return os.path.realpath(path)
