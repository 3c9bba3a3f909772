"""Parsing and normalisation of persistent identifiers.

This module is the only place in Data DNS that parses identifiers.  Everything else receives an
:class:`Identifier` from :func:`normalize` and compares, stores and looks up its ``canonical``
string, so two spellings of the same identifier always land on the same record.

Detection and prefix stripping are delegated to `idutils`_; this module adds the pre-processing
idutils lacks (``info:`` URIs, ``www.doi.org``, percent-encoding, https ARK resolvers, URN
resolvers, scheme-less resolver links) and the equivalence rules of each scheme.

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
ark       ``ark:/13030/tf5p30086k``              ``ark:`` lower-cased, NAAN must be digits,
                                                 resolver host dropped, hyphens removed (the
                                                 ARK spec makes them insignificant), name case
                                                 kept.  ``ark:13030/x`` (the newer spelling)
                                                 is equivalent; the classic ``ark:/`` form is
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
``info:doi/`` prefixes, ``HDL:``/``info:hdl/``, ``ARK:``, ``URN:``, resolver links on doi.org,
dx.doi.org, www.doi.org, hdl.handle.net, any ``http(s)://host/ark:…`` (the ARK spec allows any
resolver host), national URN resolvers, n2t.net and identifiers.org, with or without
``http(s)://`` for the well-known resolver hosts.  Query strings and fragments of resolver links
are resolver options (``?noredirect``, ``?info``) and are dropped.

Deliberately *not* accepted: bare Handles such as ``2142/12345`` (anything with a slash would
match; write ``hdl:2142/12345``), non-http(s) URLs, URLs carrying user names or passwords, and
anything containing whitespace or control/invisible characters.

Every result satisfies ``normalize(x.canonical) == x``; to keep that true, inputs are limited to
``MAX_LENGTH`` characters and so are canonical forms (``'doi:'`` or ``%25`` escapes can make a
canonical form longer than what was typed).

.. _idutils: https://github.com/inveniosoftware/idutils
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import unicodedata
from urllib.parse import parse_qs, unquote, urlsplit

import idutils

__all__ = ['MAX_LENGTH', 'SCHEMES', 'Identifier', 'InvalidIdentifier', 'normalize']

SCHEMES = ('doi', 'handle', 'ark', 'urn', 'purl', 'url')

#: Longest accepted input (after stripping) and longest canonical form.
MAX_LENGTH = 2048

_ACCEPTED = (
    'expected a DOI (10.xxxx/…), Handle (hdl:…), ARK (ark:/…), URN (urn:…), PURL or http(s) URL'
)

# Prefixes of the canonical string, by scheme.  purl/url canonicals are the URL itself.
_PREFIXES = {'doi': 'doi:', 'handle': 'hdl:', 'ark': 'ark:/', 'urn': 'urn:'}

_DOI_HOSTS = frozenset({'doi.org', 'dx.doi.org', 'www.doi.org'})
_HANDLE_HOSTS = frozenset({'hdl.handle.net'})
# Meta-resolvers whose path is a compact identifier, e.g. https://n2t.net/doi:10.1/x.
_META_RESOLVER_HOSTS = frozenset({'n2t.net', 'identifiers.org'})
# National URN:NBN resolvers: https://host/urn:nbn:…
_URN_HOSTS = frozenset(
    {
        'nbn-resolving.org',
        'nbn-resolving.de',
        'urn.fi',
        'urn.nb.no',
        'persistent-identifier.nl',
        'resolver.obvsg.at',
    }
)
# URN resolvers that take the URN as a query parameter: host -> parameter name.
_URN_QUERY_HOSTS = {
    'nbn-resolving.org': 'identifier',
    'nbn-resolving.de': 'identifier',
    'urn.kb.se': 'urn',
}
# idutils.is_purl knows purl.org/oclc/net/com/fdlp.gov; OBO runs a PURL server too.
_EXTRA_PURL_HOSTS = frozenset({'purl.obolibrary.org', 'www.purl.org'})
_PURL_HOST_ALIASES = {'purl.oclc.org': 'purl.org', 'www.purl.org': 'purl.org'}
# Hosts recognised without 'http(s)://', as people often paste 'doi.org/10.…'.
_SCHEMELESS_HOSTS = (
    _DOI_HOSTS
    | _HANDLE_HOSTS
    | _META_RESOLVER_HOSTS
    | {'arks.org', 'purl.org', 'purl.oclc.org', 'nbn-resolving.org', 'nbn-resolving.de'}
)
_DEFAULT_PORTS = {'http': 80, 'https': 443}

# idutils accepts any character except '/' in a Handle prefix; real prefixes are dotted
# alphanumerics ('2142', '20.500.11794', '21.T11148').
_HANDLE_PREFIX = re.compile(r'[0-9a-z_-]+(?:\.[0-9a-z_-]+)*', re.ASCII | re.IGNORECASE)
# RFC 8141 namespace identifier; idutils.is_urn only checks for 'urn:' and a non-empty rest.
_URN_NID = re.compile(r'[0-9a-z][0-9a-z-]{0,30}[0-9a-z]', re.ASCII | re.IGNORECASE)
_HOSTNAME = re.compile(r'[0-9a-z_-]+(?:\.[0-9a-z_-]+)*', re.ASCII)
# 'doi: 10.1/x' is a common spelling; the space after the prefix is not part of the id.
_SPACE_AFTER_PREFIX = re.compile(r'^(doi:|hdl:|ark:|urn:)\s+', re.IGNORECASE)
_URI_SCHEME = re.compile(r'^([a-z][a-z0-9+.-]*):', re.IGNORECASE)
# A-Z only: DOIs are case-insensitive for ASCII letters, and str.lower() would also fold
# (and sometimes lengthen) other scripts.
_ASCII_LOWER = str.maketrans('ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz')

# idutils.detect_identifier_schemes results worth a specific hint in an error message.
_OTHER_SCHEME_HINTS = {
    'isbn': 'it looks like an ISBN; write it as urn:isbn:…',
    'issn': 'it looks like an ISSN; write it as urn:issn:…',
    'orcid': 'it looks like an ORCID iD, which is not supported',
    'arxiv': 'it looks like an arXiv ID, which is not supported (use its DOI)',
    'pmcid': 'it looks like a PubMed Central ID, which is not supported',
}


class InvalidIdentifier(ValueError):
    """Raised with a message a person can act on (it is shown to end users in a 400 response)."""


@dataclasses.dataclass(frozen=True)
class Identifier:
    """A normalised persistent identifier; compare and store ``canonical``."""

    scheme: str
    value: str

    def __post_init__(self):
        if self.scheme not in SCHEMES:
            raise ValueError(f'unknown identifier scheme {self.scheme!r}')

    @property
    def canonical(self) -> str:
        """The one spelling used for storage and comparison (see the module docstring)."""
        return _PREFIXES.get(self.scheme, '') + self.value

    def __str__(self) -> str:
        return self.canonical


def normalize(text: object) -> Identifier:
    """Parse any accepted spelling of a persistent identifier into its canonical form.

    Raises :class:`InvalidIdentifier` (never anything else) with a message for end users.
    """
    if not isinstance(text, str):
        raise InvalidIdentifier(
            f'An identifier must be a string, not {type(text).__name__}; {_ACCEPTED}.'
        )
    text = text.strip()
    if not text:
        raise InvalidIdentifier(f'The identifier is empty; {_ACCEPTED}.')
    if len(text) > MAX_LENGTH:
        raise InvalidIdentifier(
            f'The identifier is too long ({len(text)} characters, at most {MAX_LENGTH}).'
        )
    _reject_invisible(text)
    text = _SPACE_AFTER_PREFIX.sub(lambda m: m.group(1), text)
    if any(ch.isspace() for ch in text):
        raise _invalid(text, 'identifiers cannot contain spaces')

    ident = _parse(text)
    # Escaping '%' or IDNA-encoding a host can lengthen the text; cap the result too so that
    # every canonical form is itself accepted.
    if len(ident.canonical) > MAX_LENGTH:
        raise InvalidIdentifier(
            f'The identifier is too long (its canonical form exceeds {MAX_LENGTH} characters).'
        )
    return ident


# -- dispatch -----------------------------------------------------------------------------


def _parse(text: str) -> Identifier:
    lowered = text.lower()
    host = lowered.split('/', 1)[0]
    if lowered.startswith(('http://', 'https://')):
        return _parse_url(text)
    if host in _SCHEMELESS_HOSTS and '/' in text:
        return _parse_url('https://' + text)

    ident = _parse_compact(text, strict=True)
    if ident is not None:
        return ident

    match = _URI_SCHEME.match(text)
    if match and match.group(1).lower() in _DEFAULT_PORTS:  # e.g. 'https:/x', 'http:x'
        raise _invalid(text, 'a URL must look like https://host/path')
    if match:
        raise _invalid(text, f'the ‘{match.group(1).lower()}:’ scheme is not supported')
    raise _invalid(text, _guess_hint(text))


def _parse_compact(text: str, *, strict: bool) -> Identifier | None:
    """Parse a non-URL spelling (``doi:…``, ``10.…``, ``hdl:…``, ``ark:…``, ``urn:…``).

    Returns None for text in none of these forms.  With ``strict``, text that has one of the
    prefixes but is malformed raises a scheme-specific error instead of returning None.
    """
    lowered = text.lower()
    if lowered.startswith('info:doi/'):
        text, lowered = 'doi:' + text[9:], 'doi:' + lowered[9:]
    elif lowered.startswith('info:hdl/'):
        text, lowered = 'hdl:' + text[9:], 'hdl:' + lowered[9:]

    if lowered.startswith(('doi:', '10.')):
        ident, hint = _doi(text), 'a DOI looks like 10.5281/zenodo.1234'
    elif lowered.startswith('hdl:'):
        ident, hint = _handle(text[4:]), 'a Handle looks like hdl:2142/12345'
    elif lowered.startswith('ark:'):
        ident, hint = _ark(text), 'an ARK looks like ark:/13030/tf5p30086k (the NAAN is digits)'
    elif lowered.startswith('urn:'):
        ident, hint = _urn(text), 'a URN looks like urn:nbn:de:bvb:19-146642'
    else:
        return None
    if ident is None and strict:
        raise _invalid(text, hint)
    return ident


# -- schemes ------------------------------------------------------------------------------


def _doi(text: str) -> Identifier | None:
    """``text`` is ``doi:10.…``, ``10.…`` or percent-encoded variants (``10.1000%2F182``)."""
    decoded = _percent_decode(text)
    if decoded is None or not _safe(idutils.is_doi, decoded):
        return None
    # normalize_pid strips 'doi:' and doi.org prefixes, leaving '10.prefix/suffix'.
    value = idutils.normalize_pid(decoded, 'doi')
    prefix = value.split('/', 1)[0]
    # idutils' \d also matches non-ASCII digits; registrant codes are ASCII.
    if not prefix.isascii():
        return None
    return Identifier('doi', _escape_percent(value.translate(_ASCII_LOWER)))


def _handle(text: str) -> Identifier | None:
    """``text`` is the part after ``hdl:`` or after ``hdl.handle.net/``."""
    decoded = _percent_decode(text)
    if decoded is None:
        return None
    candidate = 'hdl:' + decoded
    if not _safe(idutils.is_handle, candidate):
        return None
    value = idutils.normalize_pid(candidate, 'handle')
    prefix, _, suffix = value.partition('/')
    if not suffix or not _HANDLE_PREFIX.fullmatch(prefix):
        return None
    # A DOI is a Handle with prefix 10.…; store it once, as a DOI.
    if _safe(idutils.is_doi, value):
        return _doi(_escape_percent(value))
    return Identifier('handle', _escape_percent(f'{prefix.translate(_ASCII_LOWER)}/{suffix}'))


def _ark(text: str) -> Identifier | None:
    """``text`` starts with ``ark:`` in any case, with or without the slash."""
    rest = text[4:]
    if rest.startswith('/'):
        rest = rest[1:]
    # idutils' ARK pattern is case-sensitive about the 'ark:' label; give it the lower form.
    if not _safe(idutils.is_ark, 'ark:/' + rest):
        return None
    naan, _, name = rest.partition('/')
    # Hyphens are identity-inert in ARKs: ark:/13030/tf5p-30086k == ark:/13030/tf5p30086k.
    name = name.replace('-', '')
    if not (naan.isascii() and naan.isdigit()) or not name:
        return None
    return Identifier('ark', f'{naan}/{name}')


def _urn(text: str) -> Identifier | None:
    """``text`` starts with ``urn:`` in any case."""
    # Query-parameter URNs arrive decoded and may hold spaces or control characters.
    if _has_invisible_or_space(text) or not _safe(idutils.is_urn, text):
        return None
    # normalize_pid lower-cases the 'urn:' label and leaves the rest alone.
    value = idutils.normalize_pid(text, 'urn')
    nid, _, nss = value[4:].partition(':')
    if not nss or not _URN_NID.fullmatch(nid):
        return None
    return Identifier('urn', f'{nid.translate(_ASCII_LOWER)}:{nss}')


# -- URLs ---------------------------------------------------------------------------------


def _parse_url(text: str) -> Identifier:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise _invalid(text, 'the URL is malformed') from None
    if '@' in parts.netloc:
        raise _invalid(text, 'URLs with a user name or password are not accepted')
    if not parts.hostname:
        raise _invalid(text, 'the URL has no host name')
    host = _normalize_host(text, parts.hostname)
    scheme = parts.scheme
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f'{host}:{port}'
    path = parts.path or '/'
    query = f'?{parts.query}' if parts.query else ''
    url = f'{scheme}://{netloc}{path}{query}'

    ident = _resolver_link(host, path, parts.query)
    if ident is not None:
        return ident
    if host in _EXTRA_PURL_HOSTS or _safe(idutils.is_purl, url):
        return Identifier('purl', f'https://{_PURL_HOST_ALIASES.get(host, host)}{path}{query}')
    return Identifier('url', url)


def _resolver_link(host: str, path: str, query: str) -> Identifier | None:
    """Unwrap a DOI/Handle/ARK/URN resolver link; None if the URL is not one.

    A resolver host with a path that is not an identifier (e.g. https://doi.org/ itself) is
    left to be an ordinary URL.
    """
    target = path[1:]
    lowered = target.lower()
    if host in _DOI_HOSTS:
        return _doi(target)
    if host in _HANDLE_HOSTS:
        return _handle(target)
    if lowered.startswith('ark:'):
        return _ark(target)
    if host in _URN_HOSTS and lowered.startswith('urn:'):
        return _urn(target)
    if host in _URN_QUERY_HOSTS and query:
        try:
            values = parse_qs(query, errors='strict').get(_URN_QUERY_HOSTS[host])
        except UnicodeDecodeError:
            return None
        if values and values[0].lower().startswith('urn:'):
            return _urn(values[0])
    if host in _META_RESOLVER_HOSTS:
        return _parse_compact(target, strict=False)
    return None


def _normalize_host(text: str, hostname: str) -> str:
    """Lower-case (urlsplit already did), IDNA-encode and validate a host name."""
    if ':' in hostname:  # urlsplit removed the brackets of an IPv6 literal
        try:
            return f'[{ipaddress.IPv6Address(hostname).compressed}]'
        except ValueError:
            raise _invalid(text, 'the URL has an invalid IPv6 address') from None
    if hostname.endswith('.'):  # 'example.org.' is the fully qualified 'example.org'
        hostname = hostname[:-1]
    if not hostname.isascii():
        try:
            hostname = hostname.encode('idna').decode('ascii').lower()
        except UnicodeError:
            raise _invalid(text, 'the URL has an invalid host name') from None
    if not _HOSTNAME.fullmatch(hostname):
        raise _invalid(text, 'the URL has an invalid host name')
    return hostname


# -- helpers ------------------------------------------------------------------------------


def _reject_invisible(text: str) -> None:
    # Category C = control, format (zero-width, BOM, soft hyphen), surrogate, private use and
    # unassigned: invisible in a UI, and lone surrogates cannot even be stored as UTF-8.
    for ch in text:
        if unicodedata.category(ch).startswith('C'):
            raise InvalidIdentifier(
                f'The identifier contains a control or invisible character (U+{ord(ch):04X}); '
                'please retype or paste it as plain text.'
            )


def _percent_decode(text: str) -> str | None:
    """Decode %XX escapes (DOIs/Handles are often pasted URL-encoded); None if unusable."""
    if '%' not in text:
        return text
    try:
        decoded = unquote(text, errors='strict')
    except UnicodeDecodeError:
        return None
    return None if _has_invisible_or_space(decoded) else decoded


def _has_invisible_or_space(text: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith('C') for ch in text)


def _escape_percent(value: str) -> str:
    # Values are stored decoded; a literal '%' is kept escaped so that decoding the canonical
    # form again is a no-op (otherwise '10.1/a%2541' -> '%41' -> 'A' on each round).
    return value.replace('%', '%25')


def _safe(check, value: str) -> bool:
    # idutils validators call urlparse, which raises ValueError on e.g. 'urn://[' .
    try:
        return bool(check(value))
    except ValueError:
        return False


def _guess_hint(text: str) -> str | None:
    # Only used to improve an error message, so any failure inside idutils (it runs ~40
    # validators, some via isbnlib) must not replace the InvalidIdentifier being built.
    try:
        schemes = idutils.detect_identifier_schemes(text)
    except Exception:
        schemes = []
    for scheme in schemes:
        if scheme in _OTHER_SCHEME_HINTS:
            return _OTHER_SCHEME_HINTS[scheme]
    prefix, slash, suffix = text.partition('/')
    if slash and suffix and prefix[:1].isdigit() and _HANDLE_PREFIX.fullmatch(prefix):
        return f'if it is a Handle, write it as hdl:{_shorten(text)}'
    if '.' in prefix and _HOSTNAME.fullmatch(prefix.lower()):  # 'www.example.org/page'
        return 'if it is a web address, start it with https://'
    return None


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + '…'


def _invalid(text: str, problem: str | None = None) -> InvalidIdentifier:
    detail = f' ({problem})' if problem else ''
    return InvalidIdentifier(
        f'‘{_shorten(text)}’ is not a persistent identifier{detail}: {_ACCEPTED}.'
    )
