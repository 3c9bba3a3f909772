"""Resolution: where an identifier's dataset lives, as one person sees it, best place first.

It owns the ranking of locations: index entries (``models/dataset``) joined with the
health of the sites that hold them (``models/site``, ``breaker``). Local entries the
person may not read are left out, so private data never leaks.
"""

from .. import cache, settings
from ..models.dataset import Dataset
from ..models.site import Site
from ..primitives import now
from ..settings import PluginSettings
from .notebooks import tools as siteTools


def locations(identifier, user, preferSite=None):
    """Where ``identifier`` (canonical) lives, as seen by ``user``, best location first.

    Healthy locations come first, then suspect ones (``girder_resolver.breaker``);
    among them an explicit ``preferSite`` wins, then undisputed ones, then higher
    weight, then more free capacity. Local entries the user may not read are left
    out, so private data never leaks. Each location lists the ``tools`` its site
    offers (``[{id, name, ready, default}]``; empty for a site that registered none)
    and the ``recommendedTool`` of its dataset (an id, or None).
    """
    datasets, sites = Dataset(), Site()
    moment = now()
    localSite = ttl = localTools = None
    found = []
    # Entries and sites come from this process's recent reads when fresh enough
    # (girder_resolver.cache); access to local folders is checked every time.
    entries = cache.entries.get(
        identifier,
        lambda: tuple(datasets.find({'identifier': identifier})),
        settings.get(PluginSettings.CACHE_SECONDS),
        keep=bool,
    )
    for doc in entries:
        if doc.get('local'):
            folder = datasets.readableFolder(doc, user)
            if folder is None:
                continue
            if localSite is None:
                localSite = settings.get(PluginSettings.SITE_NAME)
                localTools = siteTools.offered()
            found.append(
                (
                    # Locality before weight: the copy at this server needs no hop.
                    (float('-inf'), 0),
                    {
                        'site': localSite,
                        'apiUrl': sites.localApiUrl(),
                        'folderId': doc['folderId'],
                        'name': folder['name'],
                        'healthy': True,
                        'suspect': False,
                        'lastSeen': moment,
                        'local': True,
                        'operator': None,
                        'disputed': False,
                        'tools': localTools,
                        'recommendedTool': siteTools.recommended(folder),
                    },
                )
            )
            continue
        site = sites.named(doc['site'])
        if site is None:
            continue
        if ttl is None:
            ttl = sites.ttl()
        found.append(
            (
                (-site.get('weight', 1), -sites.freeCapacity(site)),
                {
                    'site': site['name'],
                    'apiUrl': site['apiUrl'],
                    'folderId': doc['folderId'],
                    'name': doc['name'],
                    'healthy': sites.healthy(site, moment, ttl),
                    'suspect': sites.suspect(site, moment),
                    'lastSeen': site.get('lastHeartbeat'),
                    'local': False,
                    # Who registered the site: a person decides whom to trust.
                    'operator': site.get('operator'),
                    'disputed': bool(doc.get('disputed')),
                    'tools': list(site.get('tools') or ()),
                    'recommendedTool': doc.get('tool'),
                },
            )
        )

    def rank(item):
        preference, loc = item
        # Healthy sites first, then suspect ones (they failed calls lately), then the
        # silent ones; an explicit choice only reorders sites of the same standing.
        standing = 2 if not loc['healthy'] else 1 if loc['suspect'] else 0
        return (standing, loc['site'] != preferSite, loc['disputed'], preference, loc['site'])

    found.sort(key=rank)
    return [loc for _, loc in found]


def siteStates(moment):
    """Each site's health as the metrics show it: rows ``(name, healthy, datasets, suspect)``."""
    model = Site()
    fields = {'name': 1, 'lastHeartbeat': 1, 'datasetCount': 1, 'suspectSince': 1}
    return [
        (
            site['name'],
            model.healthy(site, moment),
            site.get('datasetCount', 0),
            model.suspect(site, moment),
        )
        for site in model.find({}, fields=fields)
    ]
