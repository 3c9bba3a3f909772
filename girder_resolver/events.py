"""Keeps the local part of the dataset index in step with folder metadata, and records
where each imported folder's data is on disk (see ``models/datapath.py``)."""

import logging

from girder import events

from .models import datapath
from .models.dataset import Dataset
from .settings import PluginSettings

logger = logging.getLogger(__name__)

#: Settings whose change alters what the local index should hold.
_REINDEX_SETTINGS = {PluginSettings.IDENTIFIER_KEY, PluginSettings.SITE_NAME}


def _folderSaved(event):
    Dataset().syncFolder(event.info)


def _folderRemoved(event):
    Dataset().removeFolder(event.info['_id'])


def _settingSaved(event):
    if event.info.get('key') in _REINDEX_SETTINGS:
        count = Dataset().reindexLocal()
        logger.info('Setting %s changed: reindexed %d folders', event.info['key'], count)


def _restImport(event):
    # Fired after the admin check, before the import runs (and before any sub-folder
    # it makes records itself under this root).
    info = event.info or {}
    datapath.recordRestImport(info.get('id'), info.get('params'))


def _folderImported(event):
    info = event.info or {}
    if info.get('type') == 'folder':
        datapath.recordImportedFolder(info.get('id'), info.get('importPath'))


def _folderSaving(event):
    datapath.keepRecord(event.info)


def bind(name):
    events.bind('model.folder.save.after', name, _folderSaved)
    events.bind('model.folder.remove', name, _folderRemoved)
    events.bind('model.setting.save.after', name, _settingSaved)
    events.bind('model.folder.save', name, _folderSaving)
    events.bind('rest.post.assetstore/:id/import.before', name, _restImport)
    events.bind('filesystem_assetstore_imported', name, _folderImported)
