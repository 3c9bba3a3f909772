"""The identifier schemes: what a DOI, Handle, ARK or URN is, and its one canonical spelling.

Used by :mod:`.repositories` (which finds these identifiers in repository URLs) and by the
package's :func:`normalize`; nothing outside ``identifiers/`` imports this module.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata
from urllib.parse import unquote

import idutils

SCHEMES = ('doi', 'handle', 'ark', 'urn', 'purl', 'url')

#: Longest accepted input (after stripping) and longest canonical form.
MAX_LENGTH = 2048

ACCEPTED = (
    'expected a DOI (10.xxxx/…), Handle (hdl:…), ARK (ark:/…), URN (urn:…), PURL or http(s) URL'
)

# Prefixes of the canonical string, by scheme.  purl/url canonicals are the URL itself.
_PREFIXES = {'doi': 'doi:', 'handle': 'hdl:', 'ark': 'ark:/', 'urn': 'urn:'}

# idutils accepts any character except '/' in a Handle prefix; real prefixes are dotted
# alphanumerics ('2142', '20.500.11794', '21.T11148').
_HANDLE_PREFIX = re.compile(r'[0-9a-z_-]+(?:\.[0-9a-z_-]+)*', re.ASCII | re.IGNORECASE)
# ARK NAANs are betanumeric (the ARK specification, section 2.3): digits and the consonants
# except 'l', so that no NAAN reads as a word or confuses 1 and l.  Every NAAN assigned so far
# is five digits; letters are written lower-case.
NAAN = re.compile(r'[0-9bcdfghjkmnpqrstvwxz]+', re.ASCII)
# RFC 8141 namespace identifier; idutils.is_urn only checks for 'urn:' and a non-empty rest.
_URN_NID = re.compile(r'[0-9a-z][0-9a-z-]{0,30}[0-9a-z]', re.ASCII | re.IGNORECASE)
HOSTNAME = re.compile(r'[0-9a-z_-]+(?:\.[0-9a-z_-]+)*', re.ASCII)
# 'doi: 10.1/x' is a common spelling; the space after the prefix is not part of the id.
SPACE_AFTER_PREFIX = re.compile(r'^(doi:|hdl:|ark:|urn:)\s+', re.IGNORECASE)
URI_SCHEME = re.compile(r'^([a-z][a-z0-9+.-]*):', re.IGNORECASE)
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


def compact(text: str, *, strict: bool) -> Identifier | None:
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
        ident, hint = doi(text), 'a DOI looks like 10.5281/zenodo.1234'
    elif lowered.startswith('hdl:'):
        ident, hint = handle(text[4:]), 'a Handle looks like hdl:2142/12345'
    elif lowered.startswith('ark:'):
        ident = ark(text)
        hint = 'an ARK looks like ark:/13030/tf5p30086k (its NAAN is digits and consonants)'
    elif lowered.startswith('urn:'):
        ident, hint = urn(text), 'a URN looks like urn:nbn:de:bvb:19-146642'
    else:
        return None
    if ident is None and strict:
        raise invalid(text, hint)
    return ident


# -- schemes ------------------------------------------------------------------------------


def doi(text: str) -> Identifier | None:
    """``text`` is ``doi:10.…``, ``10.…`` or percent-encoded variants (``10.1000%2F182``)."""
    decoded = percentDecode(text)
    if decoded is None or not safe(idutils.is_doi, decoded):
        return None
    # normalize_pid strips 'doi:' and doi.org prefixes, leaving '10.prefix/suffix'.
    value = idutils.normalize_pid(decoded, 'doi')
    prefix = value.split('/', 1)[0]
    # idutils' \d also matches non-ASCII digits; registrant codes are ASCII.
    if not prefix.isascii():
        return None
    return Identifier('doi', _escape_percent(value.translate(_ASCII_LOWER)))


def handle(text: str) -> Identifier | None:
    """``text`` is the part after ``hdl:`` or after ``hdl.handle.net/``."""
    decoded = percentDecode(text)
    if decoded is None:
        return None
    candidate = 'hdl:' + decoded
    if not safe(idutils.is_handle, candidate):
        return None
    value = idutils.normalize_pid(candidate, 'handle')
    prefix, _, suffix = value.partition('/')
    if not suffix or not _HANDLE_PREFIX.fullmatch(prefix):
        return None
    # A DOI is a Handle with prefix 10.…; store it once, as a DOI.
    if safe(idutils.is_doi, value):
        return doi(_escape_percent(value))
    return Identifier('handle', _escape_percent(f'{prefix.translate(_ASCII_LOWER)}/{suffix}'))


def ark(text: str) -> Identifier | None:
    """``text`` starts with ``ark:`` in any case, with or without the slash."""
    rest = text[4:]
    if rest.startswith('/'):
        rest = rest[1:]
    naan, _, name = rest.partition('/')
    naan = naan.translate(_ASCII_LOWER)
    # idutils' ARK pattern is case-sensitive about the 'ark:' label; give it the lower form.
    if not safe(idutils.is_ark, f'ark:/{naan}/{name}'):
        return None
    # Hyphens are identity-inert in ARKs: ark:/13030/tf5p-30086k == ark:/13030/tf5p30086k.
    name = name.replace('-', '')
    if not NAAN.fullmatch(naan) or not name:
        return None
    return Identifier('ark', f'{naan}/{name}')


def urn(text: str) -> Identifier | None:
    """``text`` starts with ``urn:`` in any case."""
    # Query-parameter URNs arrive decoded and may hold spaces or control characters.
    if hasInvisibleOrSpace(text) or not safe(idutils.is_urn, text):
        return None
    # normalize_pid lower-cases the 'urn:' label and leaves the rest alone.
    value = idutils.normalize_pid(text, 'urn')
    nid, _, nss = value[4:].partition(':')
    if not nss or not _URN_NID.fullmatch(nid):
        return None
    return Identifier('urn', f'{nid.translate(_ASCII_LOWER)}:{nss}')


# -- helpers ------------------------------------------------------------------------------


def rejectInvisible(text: str) -> None:
    # Category C = control, format (zero-width, BOM, soft hyphen), surrogate, private use and
    # unassigned: invisible in a UI, and lone surrogates cannot even be stored as UTF-8.
    for ch in text:
        if unicodedata.category(ch).startswith('C'):
            raise InvalidIdentifier(
                f'The identifier contains a control or invisible character (U+{ord(ch):04X}); '
                'please retype or paste it as plain text.'
            )


def percentDecode(text: str) -> str | None:
    """Decode %XX escapes (DOIs/Handles are often pasted URL-encoded); None if unusable."""
    if '%' not in text:
        return text
    try:
        decoded = unquote(text, errors='strict')
    except UnicodeDecodeError:
        return None
    return None if hasInvisibleOrSpace(decoded) else decoded


def hasInvisibleOrSpace(text: str) -> bool:
    return any(ch.isspace() or unicodedata.category(ch).startswith('C') for ch in text)


def _escape_percent(value: str) -> str:
    # Values are stored decoded; a literal '%' is kept escaped so that decoding the canonical
    # form again is a no-op (otherwise '10.1/a%2541' -> '%41' -> 'A' on each round).
    return value.replace('%', '%25')


def safe(check, value: str) -> bool:
    # idutils validators call urlparse, which raises ValueError on e.g. 'urn://[' .
    try:
        return bool(check(value))
    except ValueError:
        return False


def guessHint(text: str) -> str | None:
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
        return f'if it is a Handle, write it as hdl:{shorten(text)}'
    if '.' in prefix and HOSTNAME.fullmatch(prefix.lower()):  # 'www.example.org/page'
        return 'if it is a web address, start it with https://'
    return None


def shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 1] + '…'


def invalid(text: str, problem: str | None = None) -> InvalidIdentifier:
    detail = f' ({problem})' if problem else ''
    return InvalidIdentifier(
        f'‘{shorten(text)}’ is not a persistent identifier{detail}: {ACCEPTED}.'
    )
