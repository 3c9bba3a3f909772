// Which datasets (folders carrying identifiers) a collection or folder page shows.

import * as api from './api';

/** folderId -> [identifier, ...] of every dataset folder this page has seen. */
export const knownDatasets = new Map();

const folderCache = new Map();

function folderOf(id) {
    if (!folderCache.has(id)) {
        folderCache.set(id, api.getFolder(id).catch(() => null));
    }
    return folderCache.get(id);
}

/** Group index entries by folder: [{folderId, name, public, identifiers: [{identifier, scheme}]}]. */
export function groupByFolder(entries) {
    const byFolder = new Map();
    entries.forEach((entry) => {
        if (!byFolder.has(entry.folderId)) {
            byFolder.set(entry.folderId, {
                folderId: entry.folderId,
                site: entry.site,
                name: entry.name,
                public: entry.public,
                // The tool the dataset recommends (its folder's metadata), or null.
                tool: entry.tool || null,
                identifiers: [],
            });
        }
        byFolder.get(entry.folderId).identifiers.push({ identifier: entry.identifier, scheme: entry.scheme });
    });
    const out = [...byFolder.values()].sort((a, b) => a.name.localeCompare(b.name));
    out.forEach((d) => knownDatasets.set(d.folderId, d.identifiers.map((i) => i.identifier)));
    return out;
}

/**
 * The local datasets inside a collection (at any depth).
 *
 * Asks the index for ``collectionId``; entries that carry their collection are
 * checked directly, others by reading their folder, so the answer is right
 * whether or not the server filters.
 */
export async function datasetsOfCollection(collectionId) {
    const entries = await api.listDatasets({ local: true, collectionId });
    const checks = await Promise.all(entries.map(async (entry) => {
        if (entry.collectionId !== undefined) {
            return entry.collectionId === collectionId;
        }
        const folder = await folderOf(entry.folderId);
        return Boolean(folder) && folder.baseParentType === 'collection' &&
            folder.baseParentId === collectionId;
    }));
    return groupByFolder(entries.filter((entry, i) => checks[i]));
}

/**
 * The identifiers of one folder, if it is a dataset (else an empty list).
 *
 * Filters by ``folderId``, and by the folder's collection when it has one so that a
 * server without the folder filter still answers with a small list.
 */
export async function datasetsOfFolder(folder) {
    const folderId = folder.id;
    const collectionId = folder.get('baseParentType') === 'collection'
        ? folder.get('baseParentId') : undefined;
    const entries = await api.listDatasets({ local: true, folderId, collectionId });
    const mine = entries.filter((entry) => entry.folderId === folderId);
    if (!mine.length) {
        knownDatasets.delete(folderId);
    }
    return groupByFolder(mine);
}
