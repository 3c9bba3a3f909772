"""Parsing and normalisation of persistent identifiers.

This package is the only place in Data DNS that parses identifiers.  Everything else receives an
:class:`Identifier` from :func:`normalize` and compares, stores and looks up its ``canonical``
string, so two spellings of the same identifier always land on the same record.

- :mod:`.schemes`: what a DOI, Handle, ARK and URN is, and each one's canonical spelling.
- :mod:`.repositories`: the registry of repository and resolver URLs that carry an identifier
  (Dataverse, Zenodo, Dryad, Figshare, the DOI and Handle proxies, ARK and URN resolvers).
- here: :func:`normalize`, which takes text as people paste it and dispatches.

Detection and prefix stripping are delegated to `idutils`_; this package adds the pre-processing
idutils lacks (``info:`` URIs, ``www.doi.org``, percent-encoding, repository landing pages, https
ARK resolvers, URN resolvers, scheme-less resolver links) and the equivalence rules of each
scheme.

Canonical forms (``Identifier.canonical``; ``Identifier.value`` is the part after the prefix):

========  =====================================  ============================================
scheme    canonical                              rules
========  =====================================  ============================================
doi       ``doi:10.5281/zenodo.1234``            ASCII letters lower-cased (DOIs are
                                                 case-insensitive); percent-escapes decoded,
                                                 a literal ``%`` is kept as ``%25``.
handle    ``hdl:2142/12345``                     prefix lower-cased, suffix case kept (the
                                                 Handle System treats suffixes as
                                                 case-sensitive by default); percent-escapes
                                                 as for DOIs.  A Handle whose prefix is
                                                 ``10.…`` *is* a DOI and becomes ``doi:``.
ark       ``ark:/13030/tf5p30086k``              ``ark:`` and the NAAN lower-cased (a NAAN is
                                                 betanumeric: digits and consonants but
                                                 ``l``), resolver host dropped, hyphens
                                                 removed (the ARK spec makes them
                                                 insignificant), name case kept.
                                                 ``ark:13030/x`` (the newer spelling) is
                                                 equivalent; the classic ``ark:/`` form is
                                                 kept because most existing ARKs use it.
urn       ``urn:nbn:de:bvb:19-146642``           ``urn:`` and the NID lower-cased, NSS kept
                                                 as written.
purl      ``https://purl.org/dc/terms/``         a URL; always https, ``purl.oclc.org`` and
                                                 ``www.purl.org`` become ``purl.org``.
url       ``https://example.org/a?b=1``          scheme and host lower-cased (non-ASCII
                                                 hosts IDNA-encoded), default port and
                                                 fragment dropped, empty path becomes ``/``,
                                                 path and query kept exactly.
========  =====================================  ============================================

For ``purl`` and ``url`` the value *is* the URL, so ``value == canonical``.

Accepted spellings besides the canonical ones: bare DOIs (``10.…``), ``DOI:``/``doi: ``/
``info:doi/`` prefixes, ``HDL:``/``info:hdl/``, ``ARK:``, ``URN:``, and every URL of the
registry in :mod:`.repositories`; the well-known resolver hosts also without ``http(s)://``.
Query strings and fragments of resolver links are resolver options (``?noredirect``,
``?info``) and are dropped.

Deliberately *not* accepted: bare Handles such as ``2142/12345`` (anything with a slash would
match; write ``hdl:2142/12345``), non-http(s) URLs, URLs carrying user names or passwords, and
anything containing whitespace or control/invisible characters.

Every result satisfies ``normalize(x.canonical) == x``; to keep that true, inputs are limited to
``MAX_LENGTH`` characters and so are canonical forms (``'doi:'`` or ``%25`` escapes can make a
canonical form longer than what was typed).

.. _idutils: https://github.com/inveniosoftware/idutils
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

import idutils

from .repositories import REPOSITORIES, Repository, identify
from .schemes import (
    ACCEPTED,
    HOSTNAME,
    MAX_LENGTH,
    SCHEMES,
    SPACE_AFTER_PREFIX,
    URI_SCHEME,
    Identifier,
    InvalidIdentifier,
    compact,
    guessHint,
    invalid,
    rejectInvisible,
    safe,
)

__all__ = [
    'MAX_LENGTH',
    'REPOSITORIES',
    'SCHEMES',
    'Identifier',
    'InvalidIdentifier',
    'Repository',
    'normalize',
]

_DEFAULT_PORTS = {'http': 80, 'https': 443}
# idutils.is_purl knows purl.org/oclc/net/com/fdlp.gov; OBO runs a PURL server too.
_EXTRA_PURL_HOSTS = frozenset({'purl.obolibrary.org', 'www.purl.org'})
_PURL_HOST_ALIASES = {'purl.oclc.org': 'purl.org', 'www.purl.org': 'purl.org'}
# Hosts recognised without 'http(s)://', as people often paste 'doi.org/10.…'.
_SCHEMELESS_HOSTS = frozenset(
    {
        'doi.org',
        'dx.doi.org',
        'www.doi.org',
        'hdl.handle.net',
        'n2t.net',
        'identifiers.org',
        'arks.org',
        'purl.org',
        'purl.oclc.org',
        'nbn-resolving.org',
        'nbn-resolving.de',
        'zenodo.org',
        'datadryad.org',
        'figshare.com',
    }
)


def normalize(text: object) -> Identifier:
    """Parse any accepted spelling of a persistent identifier into its canonical form.

    Raises :class:`InvalidIdentifier` (never anything else) with a message for end users.
    """
    if not isinstance(text, str):
        raise InvalidIdentifier(
            f'An identifier must be a string, not {type(text).__name__}; {ACCEPTED}.'
        )
    text = text.strip()
    if not text:
        raise InvalidIdentifier(f'The identifier is empty; {ACCEPTED}.')
    if len(text) > MAX_LENGTH:
        raise InvalidIdentifier(
            f'The identifier is too long ({len(text)} characters, at most {MAX_LENGTH}).'
        )
    rejectInvisible(text)
    text = SPACE_AFTER_PREFIX.sub(lambda m: m.group(1), text)
    if any(ch.isspace() for ch in text):
        raise invalid(text, 'identifiers cannot contain spaces')

    ident = _parse(text)
    # Escaping '%' or IDNA-encoding a host can lengthen the text; cap the result too so that
    # every canonical form is itself accepted.
    if len(ident.canonical) > MAX_LENGTH:
        raise InvalidIdentifier(
            f'The identifier is too long (its canonical form exceeds {MAX_LENGTH} characters).'
        )
    return ident


def _parse(text: str) -> Identifier:
    lowered = text.lower()
    host = lowered.split('/', 1)[0]
    if lowered.startswith(('http://', 'https://')):
        return _parseUrl(text)
    if host in _SCHEMELESS_HOSTS and '/' in text:
        return _parseUrl('https://' + text)

    ident = compact(text, strict=True)
    if ident is not None:
        return ident

    match = URI_SCHEME.match(text)
    if match and match.group(1).lower() in _DEFAULT_PORTS:  # e.g. 'https:/x', 'http:x'
        raise invalid(text, 'a URL must look like https://host/path')
    if match:
        raise invalid(text, f'the ‘{match.group(1).lower()}:’ scheme is not supported')
    raise invalid(text, guessHint(text))


def _parseUrl(text: str) -> Identifier:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise invalid(text, 'the URL is malformed') from None
    if '@' in parts.netloc:
        raise invalid(text, 'URLs with a user name or password are not accepted')
    if not parts.hostname:
        raise invalid(text, 'the URL has no host name')
    host = _normalizeHost(text, parts.hostname)
    scheme = parts.scheme
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f'{host}:{port}'
    path = parts.path or '/'
    query = f'?{parts.query}' if parts.query else ''
    url = f'{scheme}://{netloc}{path}{query}'

    ident = identify(host, path, parts.query)
    if ident is not None:
        return ident
    if host in _EXTRA_PURL_HOSTS or safe(idutils.is_purl, url):
        return Identifier('purl', f'https://{_PURL_HOST_ALIASES.get(host, host)}{path}{query}')
    return Identifier('url', url)


def _normalizeHost(text: str, hostname: str) -> str:
    """Lower-case (urlsplit already did), IDNA-encode and validate a host name."""
    if ':' in hostname:  # urlsplit removed the brackets of an IPv6 literal
        try:
            return f'[{ipaddress.IPv6Address(hostname).compressed}]'
        except ValueError:
            raise invalid(text, 'the URL has an invalid IPv6 address') from None
    if hostname.endswith('.'):  # 'example.org.' is the fully qualified 'example.org'
        hostname = hostname[:-1]
    if not hostname.isascii():
        try:
            hostname = hostname.encode('idna').decode('ascii').lower()
        except UnicodeError:
            raise invalid(text, 'the URL has an invalid host name') from None
    if not HOSTNAME.fullmatch(hostname):
        raise invalid(text, 'the URL has an invalid host name')
    return hostname
