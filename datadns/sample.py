"""Sample datasets for the embedded stack: real files on disk, tagged with identifiers."""

import csv
import math
import random
from pathlib import Path

import girder_client

#: name, identifier, description; the last one is replicated at every site.
SITE_DATASETS = {
    'site-a': [
        ('Galaxy survey', 'doi:10.5072/datadns.galaxies', 'Positions and redshifts of galaxies'),
        ('Ocean temperatures', 'hdl:20.500.12345/ocean-temps', 'Buoy readings, 2015-2016'),
    ],
    'site-b': [
        ('Climate reanalysis', 'ark:/99999/fk4climate', 'Monthly surface temperature means'),
    ],
}
SHARED_DATASET = (
    'Turbulence DNS',
    'doi:10.5072/datadns.turbulence',
    'Direct numerical simulation of isotropic turbulence (replicated)',
)


def datasetsFor(site):
    return SITE_DATASETS.get(site, []) + [SHARED_DATASET]


def writeDataset(path, name, identifier, description, rows=200):
    """Generate a small dataset directory: a README and two CSV files."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / 'README.md').write_text(
        f'# {name}\n\nIdentifier: {identifier}\n\n{description}.\n'
        'Generated sample data for the Data DNS embedded stack.\n'
    )
    rng = random.Random(identifier)
    for part in ('part-1', 'part-2'):
        with open(path / f'{part}.csv', 'w', newline='') as f:
            writer = csv.writer(f)
            writer.writerow(['index', 'x', 'y', 'value'])
            for i in range(rows):
                x, y = rng.uniform(-1, 1), rng.uniform(-1, 1)
                writer.writerow([i, f'{x:.5f}', f'{y:.5f}', f'{math.sin(3 * x) * y:.5f}'])
    return path


def ensureAdmin(apiUrl, login, password, email='admin@datadns.invalid'):
    """A logged-in client for the admin; the first user of a fresh Girder becomes admin."""
    gc = girder_client.GirderClient(apiUrl=apiUrl)
    try:
        gc.authenticate(login, password)
    except girder_client.AuthenticationError:
        gc.post(
            'user',
            parameters={
                'login': login,
                'password': password,
                'email': email,
                'firstName': 'Data',
                'lastName': 'Admin',
            },
        )
        gc.authenticate(login, password)
    return gc


def ensureAssetstore(gc, root):
    for store in gc.get('assetstore'):
        if store['type'] == 0 and store.get('root') == str(root):
            return store
    Path(root).mkdir(parents=True, exist_ok=True)
    return gc.post('assetstore', parameters={'name': 'Local files', 'type': 0, 'root': str(root)})


def ensureCollection(gc, name, description='', public=True):
    # No 'text' filter: it is a $text search, which SecantusDB lacks.
    for coll in gc.get('collection', parameters={'limit': 0}):
        if coll['name'] == name:
            return coll
    return gc.post(
        'collection',
        parameters={'name': name, 'description': description, 'public': str(public).lower()},
    )


def importDataset(
    gc, assetstore, collection, directory, name, identifier, description, public=True
):
    """Import ``directory`` into a folder of ``collection`` and tag it with ``identifier``."""
    folder = gc.createFolder(
        collection['_id'],
        name,
        description=description,
        parentType='collection',
        public=public,
        reuseExisting=True,
    )
    if not list(gc.listItem(folder['_id'], limit=1)):
        gc.post(
            f'assetstore/{assetstore["_id"]}/import',
            parameters={
                'importPath': str(directory),
                'destinationId': folder['_id'],
                'destinationType': 'folder',
                'progress': 'false',
            },
        )
    gc.addMetadataToFolder(folder['_id'], {'identifier': identifier})
    return folder


def provisionSite(gc, site, dataRoot, assetstoreRoot):
    """Give a site its sample collection; returns [(name, identifier, folder)]."""
    assetstore = ensureAssetstore(gc, assetstoreRoot)
    collection = ensureCollection(gc, 'Sample datasets', f'Generated datasets hosted at {site}')
    out = []
    for name, identifier, description in datasetsFor(site):
        directory = writeDataset(Path(dataRoot) / _slug(name), name, identifier, description)
        folder = importDataset(gc, assetstore, collection, directory, name, identifier, description)
        out.append((name, identifier, folder))
    return out


def _slug(name):
    return ''.join(c if c.isalnum() else '-' for c in name.lower()).strip('-')
