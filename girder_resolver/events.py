"""Keeps the local part of the dataset index in step with folder metadata."""

import logging

from girder import events

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


def bind(name):
    events.bind('model.folder.save.after', name, _folderSaved)
    events.bind('model.folder.remove', name, _folderRemoved)
    events.bind('model.setting.save.after', name, _settingSaved)
