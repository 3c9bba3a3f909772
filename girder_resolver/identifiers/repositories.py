"""The registry of repository and resolver URLs that carry a persistent identifier.

People paste what their browser shows: a Dataverse dataset page, a Zenodo record, a Dryad
dataset, a Figshare article, a resolver link. Each entry below knows one such site (or one
kind of site, at any installation) and answers one question: which identifier, if any, does
this URL stand for? One class per repository, in the spirit of BinderHub's repo providers;
:data:`REPOSITORIES` is the registry, tried in order. ``docs/identifiers.md`` lists them.

An entry answers None for a URL it does not recognise (a help page, a file download, a search),
and that URL stays an ordinary ``url`` identifier.
"""

from __future__ import annotations

import abc
import re
from urllib.parse import parse_qs

from .schemes import Identifier, compact, doi, handle, urn

__all__ = ['REPOSITORIES', 'Repository', 'identify']


class Repository(abc.ABC):
    """One kind of page whose URL carries an identifier."""

    #: A name for people (docs/identifiers.md).
    name: str = ''
    #: Host names served (lower-case); empty means any host, and the path alone decides.
    hosts: frozenset[str] = frozenset()
    #: (URL, canonical identifier) pairs taken from real published records; the tests check
    #: every one, and docs/identifiers.md shows them.
    examples: tuple[tuple[str, str], ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.name or not cls.examples:
            raise TypeError(f'{cls.__name__} must set a name and real examples')

    def serves(self, host: str) -> bool:
        return not self.hosts or host in self.hosts

    @abc.abstractmethod
    def identify(self, host: str, path: str, query: str) -> Identifier | None:
        """The identifier this URL stands for, or None.

        ``host`` is lower-cased, ``path`` and ``query`` are as written (still %-encoded).
        """


def _query(query: str, *names: str) -> str | None:
    """The first value of the first of ``names`` present in a query string, decoded."""
    try:
        values = parse_qs(query, errors='strict')
    except UnicodeDecodeError:
        return None
    for name in names:
        if values.get(name):
            return values[name][0]
    return None


class DoiProxy(Repository):
    """The DOI proxy. It resolves Handles too, and people paste ``doi:`` after it."""

    name = 'DOI proxy (doi.org)'
    hosts = frozenset({'doi.org', 'dx.doi.org', 'www.doi.org'})
    examples = (
        ('https://doi.org/10.5281/zenodo.7568094', 'doi:10.5281/zenodo.7568094'),
        ('http://dx.doi.org/doi:10.24431/rw1k118', 'doi:10.24431/rw1k118'),
        ('http://doi.org/doi:10.24431/rw1k118', 'doi:10.24431/rw1k118'),
    )

    def identify(self, host, path, query):
        target = path[1:]
        if target[:1].isdigit() and not target.startswith('10.'):
            return handle(target)  # e.g. https://doi.org/20.500.12345/abc, a Handle
        return doi(target) or compact(target, strict=False)


class HandleProxy(Repository):
    """The Handle proxy. DOIs are Handles, so it is often handed a DOI, prefixed or not."""

    name = 'Handle proxy (hdl.handle.net)'
    hosts = frozenset({'hdl.handle.net'})
    examples = (
        ('https://hdl.handle.net/20.500.11984/6531', 'hdl:20.500.11984/6531'),
        ('https://hdl.handle.net/10.7910/DVN/IBM0IE', 'doi:10.7910/dvn/ibm0ie'),
        ('https://hdl.handle.net/doi:10.24431/rw1k118', 'doi:10.24431/rw1k118'),
    )

    def identify(self, host, path, query):
        target = path[1:]
        lowered = target.lower()
        if lowered.startswith(('doi:', 'hdl:', 'info:')):
            return compact(target, strict=False)
        return handle(target)


class MetaResolver(Repository):
    """Meta-resolvers whose path is a compact identifier: ``https://n2t.net/doi:10.…``."""

    name = 'n2t.net and identifiers.org'
    hosts = frozenset({'n2t.net', 'identifiers.org'})
    examples = (
        ('https://n2t.net/ark:/87290/v8pz5703', 'ark:/87290/v8pz5703'),
        ('https://n2t.net/ark:59853/x', 'ark:/59853/x'),
        ('https://identifiers.org/doi:10.5281/zenodo.1208113', 'doi:10.5281/zenodo.1208113'),
    )

    def identify(self, host, path, query):
        return compact(path[1:], strict=False)


class Dataverse(Repository):
    """Any Dataverse installation: ``/dataset.xhtml`` or ``/citation`` with ``persistentId``."""

    name = 'Dataverse (any installation)'
    examples = (
        (
            'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/DBW86T',
            'doi:10.7910/dvn/dbw86t',
        ),
        (
            'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/HG7NV7'
            '&version=1.0',
            'doi:10.7910/dvn/hg7nv7',
        ),
        (
            'https://dataverse.harvard.edu/citation?persistentId=doi:10.7910/DVN/TJCLKP',
            'doi:10.7910/dvn/tjclkp',
        ),
        (
            'https://dataverse.nl/dataset.xhtml?persistentId=doi%3A10.34894%2FTJE0D0',
            'doi:10.34894/tje0d0',
        ),
        (
            'https://darus.uni-stuttgart.de/dataset.xhtml?persistentId=doi:10.18419/DARUS-4801',
            'doi:10.18419/darus-4801',
        ),
        (
            'https://dataverse.ada.edu.au/citation?persistentId=doi:10.26193/1NLOFY',
            'doi:10.26193/1nlofy',
        ),
    )
    _PAGES = ('dataset.xhtml', 'citation')

    def identify(self, host, path, query):
        if path.rsplit('/', 1)[-1] not in self._PAGES or not query:
            return None
        pid = _query(query, 'persistentId')
        return compact(pid, strict=False) if pid else None


class Zenodo(Repository):
    """Zenodo records: record N is DOI 10.5281/zenodo.N (10.5072/zenodo.N on the sandbox)."""

    name = 'Zenodo'
    hosts = frozenset({'zenodo.org', 'www.zenodo.org', 'sandbox.zenodo.org'})
    examples = (
        ('https://zenodo.org/records/7568094', 'doi:10.5281/zenodo.7568094'),
        ('https://zenodo.org/record/10708763', 'doi:10.5281/zenodo.10708763'),
        ('https://zenodo.org/records/18325225?preview=1', 'doi:10.5281/zenodo.18325225'),
        ('https://zenodo.org/doi/10.5281/zenodo.3509134', 'doi:10.5281/zenodo.3509134'),
    )
    _RECORD = re.compile(r'/records?/([0-9]+)/?', re.ASCII)
    _DOI_PATH = re.compile(r'/doi/(10\..+)', re.ASCII | re.IGNORECASE)

    def identify(self, host, path, query):
        record = self._RECORD.fullmatch(path)
        if record:
            prefix = '10.5072' if host == 'sandbox.zenodo.org' else '10.5281'
            return doi(f'{prefix}/zenodo.{int(record.group(1))}')
        match = self._DOI_PATH.fullmatch(path)
        return doi(match.group(1)) if match else None


class Dryad(Repository):
    """Dryad datasets: ``/stash/dataset/doi:…`` (and ``/dataset/doi:…``, its newer pages)."""

    name = 'Dryad'
    hosts = frozenset({'datadryad.org', 'www.datadryad.org'})
    examples = (
        (
            'https://datadryad.org/stash/dataset/doi:10.5061/dryad.8t8s248',
            'doi:10.5061/dryad.8t8s248',
        ),
        (
            'https://datadryad.org/stash/dataset/doi:10.5061/dryad.pc866t1p3',
            'doi:10.5061/dryad.pc866t1p3',
        ),
        (
            'https://datadryad.org/dataset/doi%3A10.5061/dryad.m905qfv60',
            'doi:10.5061/dryad.m905qfv60',
        ),
    )
    _DATASET = re.compile(r'/(?:stash/)?dataset/((?:doi(?::|%3a))?10\..+)', re.IGNORECASE)

    def identify(self, host, path, query):
        match = self._DATASET.fullmatch(path)
        return doi(match.group(1)) if match else None


class Figshare(Repository):
    """figshare.com articles: article N is DOI 10.6084/m9.figshare.N, version V adds ``.vV``.

    Institutional portals (``<name>.figshare.com``) mint DOIs under their own prefixes, so
    their URLs stay URLs.
    """

    name = 'Figshare'
    hosts = frozenset({'figshare.com', 'www.figshare.com'})
    examples = (
        (
            'https://figshare.com/articles/dataset/brain_tumor_dataset/1512427',
            'doi:10.6084/m9.figshare.1512427',
        ),
        (
            'https://figshare.com/articles/dataset/OKCupid_Datasets/14987388/1',
            'doi:10.6084/m9.figshare.14987388.v1',
        ),
        (
            'https://figshare.com/articles/Plonk_example_dataset/12885587',
            'doi:10.6084/m9.figshare.12885587',
        ),
    )
    # /articles/[<type>/]<slug>/<id>[/<version>]
    _ARTICLE = re.compile(r'/articles/(?:[^/]+/)?[^/]+/([0-9]+)(?:/([0-9]+))?/?', re.ASCII)

    def identify(self, host, path, query):
        match = self._ARTICLE.fullmatch(path)
        if not match:
            return None
        article, version = match.groups()
        return doi(f'10.6084/m9.figshare.{int(article)}' + (f'.v{int(version)}' if version else ''))


class ArkResolver(Repository):
    """Any ARK resolver: the ARK specification lets any host serve ``/ark:NAAN/…``."""

    name = 'ARK resolvers (any host: n2t.net, arks.org, Gallica, …)'
    examples = (
        ('https://arks.org/ark:/13030/tf5p30086k', 'ark:/13030/tf5p30086k'),
        ('https://gallica.bnf.fr/ark:/12148/bpt6k5619759j', 'ark:/12148/bpt6k5619759j'),
        ('https://oac.cdlib.org/ark:13030/tf5p30086k', 'ark:/13030/tf5p30086k'),
    )

    def identify(self, host, path, query):
        lowered = path.lower()
        at = lowered.find('/ark:')
        if at < 0:
            return None
        return compact(path[at + 1 :], strict=False)


class UrnResolver(Repository):
    """National URN:NBN resolvers, with the URN in the path or in the query."""

    name = 'URN:NBN resolvers (nbn-resolving, urn.fi, urn.kb.se, …)'
    hosts = frozenset(
        {
            'nbn-resolving.org',
            'nbn-resolving.de',
            'www.nbn-resolving.org',
            'www.nbn-resolving.de',
            'mdz-nbn-resolving.de',
            'urn.fi',
            'urn.nb.no',
            'urn.kb.se',
            'persistent-identifier.nl',
            'resolver.obvsg.at',
        }
    )
    examples = (
        (
            'https://nbn-resolving.de/urn:nbn:de:bsz:15-qucosa2-809604',
            'urn:nbn:de:bsz:15-qucosa2-809604',
        ),
        (
            'https://nbn-resolving.org/resolver?identifier=urn:nbn:de:bvb:19-146642&verb=redirect',
            'urn:nbn:de:bvb:19-146642',
        ),
        (
            'http://nbn-resolving.de/urn/resolver.pl?urn=urn:nbn:de:gbv:46-00104048-18',
            'urn:nbn:de:gbv:46-00104048-18',
        ),
        (
            'https://mdz-nbn-resolving.de/urn:nbn:de:bvb:12-bsb11346534-1',
            'urn:nbn:de:bvb:12-bsb11346534-1',
        ),
    )

    def identify(self, host, path, query):
        target = path[1:]
        if target.lower().startswith('urn:'):
            return urn(target)
        value = _query(query, 'identifier', 'urn') if query else None
        if value and value.lower().startswith('urn:'):
            return urn(value)
        return None


#: Tried in order; the first entry that serves the host and recognises the URL wins.
REPOSITORIES: tuple[Repository, ...] = (
    DoiProxy(),
    HandleProxy(),
    MetaResolver(),
    UrnResolver(),
    Zenodo(),
    Dryad(),
    Figshare(),
    Dataverse(),
    ArkResolver(),
)


def identify(host: str, path: str, query: str) -> Identifier | None:
    """The identifier a URL stands for, according to the first repository that knows it."""
    for repository in REPOSITORIES:
        if repository.serves(host):
            found = repository.identify(host, path, query)
            if found is not None:
                return found
    return None
