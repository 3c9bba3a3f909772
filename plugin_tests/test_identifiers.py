"""Table-driven tests of identifier normalisation (plain functions: no Girder, no database)."""

import dataclasses
import urllib.parse
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from girder_resolver.identifiers import (
    MAX_LENGTH,
    REPOSITORIES,
    SCHEMES,
    Identifier,
    InvalidIdentifier,
    Repository,
    normalize,
)

# (spelling as found in the wild, expected scheme, expected canonical)
SPELLINGS = [
    # --- DOIs: Zenodo, Dataverse, Dryad, Figshare, publishers --------------------------
    ('10.5281/zenodo.1208113', 'doi', 'doi:10.5281/zenodo.1208113'),
    ('https://doi.org/10.5281/ZENODO.7970649', 'doi', 'doi:10.5281/zenodo.7970649'),
    ('doi:10.5281/zenodo.4599644', 'doi', 'doi:10.5281/zenodo.4599644'),
    ('DOI:10.5281/zenodo.7827225', 'doi', 'doi:10.5281/zenodo.7827225'),
    ('doi: 10.7910/DVN/EGZHFV', 'doi', 'doi:10.7910/dvn/egzhfv'),
    ('https://doi.org/10.7910/DVN/OCYCMP', 'doi', 'doi:10.7910/dvn/ocycmp'),
    ('https://hdl.handle.net/10.7910/DVN/IBM0IE', 'doi', 'doi:10.7910/dvn/ibm0ie'),
    ('http://dx.doi.org/10.5061/dryad.v3546', 'doi', 'doi:10.5061/dryad.v3546'),
    ('https://dx.doi.org/10.5061/dryad.kd1d4', 'doi', 'doi:10.5061/dryad.kd1d4'),
    ('doi.org/10.5061/dryad.crjdfn3f9', 'doi', 'doi:10.5061/dryad.crjdfn3f9'),
    ('info:doi/10.5061/dryad.9s4mw6mn3', 'doi', 'doi:10.5061/dryad.9s4mw6mn3'),
    ('https://doi.org/10.6084/m9.figshare.5081998.v1', 'doi', 'doi:10.6084/m9.figshare.5081998.v1'),
    ('10.6084/m9.figshare.12033672', 'doi', 'doi:10.6084/m9.figshare.12033672'),
    ('https://www.doi.org/10.6084/m9.figshare.20123135', 'doi', 'doi:10.6084/m9.figshare.20123135'),
    (
        '10.1002/(SICI)1097-4571(199806)49:8<693::AID-ASI4>3.0.CO;2-O',
        'doi',
        'doi:10.1002/(sici)1097-4571(199806)49:8<693::aid-asi4>3.0.co;2-o',
    ),
    (
        'https://doi.org/10.1002/(SICI)1097-4571(199806)49:8%3C693::AID-ASI4%3E3.0.CO;2-O',
        'doi',
        'doi:10.1002/(sici)1097-4571(199806)49:8<693::aid-asi4>3.0.co;2-o',
    ),
    ('10.1016/S0140-6736(20)30183-5', 'doi', 'doi:10.1016/s0140-6736(20)30183-5'),
    ('https://doi.org/10.1016/S0140-6736(20)30183-5', 'doi', 'doi:10.1016/s0140-6736(20)30183-5'),
    ('10.1000/182', 'doi', 'doi:10.1000/182'),
    ('10.1000%2F182', 'doi', 'doi:10.1000/182'),
    ('https://doi.org/10.1000%2f182', 'doi', 'doi:10.1000/182'),
    ('http://doi.org/10.1038/nature12373', 'doi', 'doi:10.1038/nature12373'),
    ('HTTPS://DOI.ORG/10.1038/NATURE12373', 'doi', 'doi:10.1038/nature12373'),
    ('https://doi.org/10.1038/nature12373#references', 'doi', 'doi:10.1038/nature12373'),
    ('  10.5281/zenodo.13603528\n', 'doi', 'doi:10.5281/zenodo.13603528'),
    ('hdl:10.5072/FK2ABC', 'doi', 'doi:10.5072/fk2abc'),
    ('https://identifiers.org/doi:10.5281/zenodo.1208113', 'doi', 'doi:10.5281/zenodo.1208113'),
    # --- Handles --------------------------------------------------------------------------
    ('hdl:2142/12345', 'handle', 'hdl:2142/12345'),
    ('HDL:2142/12345', 'handle', 'hdl:2142/12345'),
    ('hdl: 2142/12345', 'handle', 'hdl:2142/12345'),
    ('https://hdl.handle.net/2142/12345?noredirect', 'handle', 'hdl:2142/12345'),
    ('https://hdl.handle.net/20.500.11984/6531', 'handle', 'hdl:20.500.11984/6531'),
    ('http://hdl.handle.net/10754/660127', 'handle', 'hdl:10754/660127'),
    ('hdl.handle.net/2123/20187', 'handle', 'hdl:2123/20187'),
    ('http://hdl.handle.net/11234/1-3069', 'handle', 'hdl:11234/1-3069'),
    ('https://hdl.handle.net/1969.1/2600', 'handle', 'hdl:1969.1/2600'),
    ('http://hdl.handle.net/10044/1/34032', 'handle', 'hdl:10044/1/34032'),
    (
        'https://hdl.handle.net/20.500.11840/termmaster12445',
        'handle',
        'hdl:20.500.11840/termmaster12445',
    ),
    ('info:hdl/1773/41885', 'handle', 'hdl:1773/41885'),
    ('https://hdl.handle.net/2142%2F12345', 'handle', 'hdl:2142/12345'),
    # --- ARKs -----------------------------------------------------------------------------
    ('ark:/13030/tf5p30086k', 'ark', 'ark:/13030/tf5p30086k'),
    ('ark:13030/tf5p30086k', 'ark', 'ark:/13030/tf5p30086k'),
    ('ARK:/13030/tf5p30086k', 'ark', 'ark:/13030/tf5p30086k'),
    ('https://n2t.net/ark:/13030/tf5p30086k', 'ark', 'ark:/13030/tf5p30086k'),
    ('https://n2t.net/ark:/13030/tf5p30086k?info', 'ark', 'ark:/13030/tf5p30086k'),
    ('https://arks.org/ark:/13030/tf5p30086k', 'ark', 'ark:/13030/tf5p30086k'),
    ('http://n2t.net/ark:/47881/m6g15z54', 'ark', 'ark:/47881/m6g15z54'),
    ('n2t.net/ark:/87918/d9rp4t', 'ark', 'ark:/87918/d9rp4t'),
    ('https://n2t.net/ark:/99152/p0trgkv-25sx8', 'ark', 'ark:/99152/p0trgkv25sx8'),
    ('http://n2t.net/ark:/21547/Fxv2', 'ark', 'ark:/21547/Fxv2'),
    ('ark:/13960/t41s5bj3s', 'ark', 'ark:/13960/t41s5bj3s'),
    ('https://n2t.net/ark:/13960/t48q2f20n/', 'ark', 'ark:/13960/t48q2f20n/'),
    ('https://gallica.bnf.fr/ark:/12148/bpt6k5619759j', 'ark', 'ark:/12148/bpt6k5619759j'),
    # --- URNs -----------------------------------------------------------------------------
    ('urn:nbn:de:bvb:19-146642', 'urn', 'urn:nbn:de:bvb:19-146642'),
    ('URN:NBN:de:bvb:19-146642', 'urn', 'urn:nbn:de:bvb:19-146642'),
    ('urn: nbn:de:bvb:19-146642', 'urn', 'urn:nbn:de:bvb:19-146642'),
    ('https://nbn-resolving.org/urn:nbn:de:bvb:19-146642', 'urn', 'urn:nbn:de:bvb:19-146642'),
    (
        'https://nbn-resolving.org/resolver?identifier=urn:nbn:de:bvb:19-146642&verb=redirect',
        'urn',
        'urn:nbn:de:bvb:19-146642',
    ),
    (
        'http://nbn-resolving.de/urn:nbn:de:gbv:46-00107698-18',
        'urn',
        'urn:nbn:de:gbv:46-00107698-18',
    ),
    ('urn:nbn:de:hebis:04-eb2013-0056', 'urn', 'urn:nbn:de:hebis:04-eb2013-0056'),
    ('http://URN.fi/URN:NBN:fi:tty-201412051583', 'urn', 'urn:nbn:fi:tty-201412051583'),
    ('urn:nbn:fi-fe19991055', 'urn', 'urn:nbn:fi-fe19991055'),
    ('URN:NBN:no-nb_digibok_2008051404065', 'urn', 'urn:nbn:no-nb_digibok_2008051404065'),
    (
        'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66',
        'urn',
        'urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66',
    ),
    ('urn:isbn:0451450523', 'urn', 'urn:isbn:0451450523'),
    ('URN:ISSN:0167-6423', 'urn', 'urn:issn:0167-6423'),
    ('urn:ietf:rfc:2648', 'urn', 'urn:ietf:rfc:2648'),
    # --- PURLs ----------------------------------------------------------------------------
    ('http://purl.org/dc/terms/', 'purl', 'https://purl.org/dc/terms/'),
    ('https://purl.org/dc/elements/1.1/title', 'purl', 'https://purl.org/dc/elements/1.1/title'),
    ('purl.org/dc/terms/creator', 'purl', 'https://purl.org/dc/terms/creator'),
    ('http://purl.oclc.org/dc/terms/', 'purl', 'https://purl.org/dc/terms/'),
    ('http://PURL.ORG/ontology/bibo/Document', 'purl', 'https://purl.org/ontology/bibo/Document'),
    (
        'http://purl.obolibrary.org/obo/GO_0008150',
        'purl',
        'https://purl.obolibrary.org/obo/GO_0008150',
    ),
    # --- plain URLs -----------------------------------------------------------------------
    ('https://github.com/girder/girder', 'url', 'https://github.com/girder/girder'),
    ('HTTPS://GitHub.COM/girder/Girder', 'url', 'https://github.com/girder/Girder'),
    ('https://example.org', 'url', 'https://example.org/'),
    ('http://example.org:80/a', 'url', 'http://example.org/a'),
    ('https://example.org:443/a', 'url', 'https://example.org/a'),
    ('https://example.org:8443/a', 'url', 'https://example.org:8443/a'),
    (
        'https://girder.readthedocs.io/en/latest/#plugins',
        'url',
        'https://girder.readthedocs.io/en/latest/',
    ),
    ('https://zenodo.org/records/1208113?preview=1', 'doi', 'doi:10.5281/zenodo.1208113'),
    (
        'https://archive.org/details/MorrisChaucer',
        'url',
        'https://archive.org/details/MorrisChaucer',
    ),
    (
        'https://datadryad.org/dataset/doi%3A10.5061/dryad.m905qfv60',
        'doi',
        'doi:10.5061/dryad.m905qfv60',
    ),
    ('http://bücher.example/katalog', 'url', 'http://xn--bcher-kva.example/katalog'),
    ('http://[2001:DB8:0:0::1]:8080/x', 'url', 'http://[2001:db8::1]:8080/x'),
    ('https://doi.org/', 'url', 'https://doi.org/'),
]

SPELLING_IDS = [spelling for spelling, _, _ in SPELLINGS]


@pytest.mark.parametrize(('spelling', 'scheme', 'canonical'), SPELLINGS, ids=SPELLING_IDS)
def test_real_world_spelling_normalises_to_canonical(spelling, scheme, canonical):
    ident = normalize(spelling)
    assert ident.scheme == scheme
    assert ident.canonical == canonical
    assert str(ident) == canonical


@pytest.mark.parametrize(('spelling', 'scheme', 'canonical'), SPELLINGS, ids=SPELLING_IDS)
def test_normalising_a_canonical_form_returns_it_unchanged(spelling, scheme, canonical):
    ident = normalize(spelling)
    assert normalize(ident.canonical) == ident
    assert normalize(canonical).canonical == canonical


def test_table_is_large_and_covers_every_scheme():
    assert len(SPELLINGS) >= 60
    assert {scheme for _, scheme, _ in SPELLINGS} == set(SCHEMES)


def test_every_spelling_of_one_doi_gives_the_same_identifier():
    spellings = [
        '10.5072/FK2ABC',
        '10.5072/fk2abc',
        'doi:10.5072/FK2ABC',
        'DOI:10.5072/FK2ABC',
        'doi: 10.5072/FK2ABC',
        'info:doi/10.5072/FK2ABC',
        'https://doi.org/10.5072/FK2ABC',
        'http://doi.org/10.5072/FK2ABC',
        'https://dx.doi.org/10.5072/FK2ABC',
        'http://dx.doi.org/10.5072/FK2ABC',
        'https://www.doi.org/10.5072/FK2ABC',
        'doi.org/10.5072/FK2ABC',
        'dx.doi.org/10.5072/FK2ABC',
        'https://doi.org/10.5072%2FFK2ABC',
        '10.5072%2FFK2ABC',
        'hdl:10.5072/FK2ABC',
        'https://hdl.handle.net/10.5072/FK2ABC',
        'http://hdl.handle.net/10.5072/fk2abc',
        '  10.5072/FK2ABC \t\n',
    ]
    results = {normalize(spelling) for spelling in spellings}
    assert results == {Identifier('doi', '10.5072/fk2abc')}


def test_every_spelling_of_one_ark_gives_the_same_identifier():
    spellings = [
        'ark:/13030/tf5p30086k',
        'ark:13030/tf5p30086k',
        'ARK:/13030/tf5p30086k',
        'ark:/13030/tf5p-30086k',
        'https://n2t.net/ark:/13030/tf5p30086k',
        'http://n2t.net/ark:13030/tf5p30086k',
        'https://arks.org/ark:/13030/tf5p30086k',
        'https://oac.cdlib.org/ark:/13030/tf5p30086k',
    ]
    assert {normalize(spelling).canonical for spelling in spellings} == {'ark:/13030/tf5p30086k'}


def test_handle_prefix_is_case_insensitive_but_suffix_case_is_kept():
    assert normalize('hdl:21.T11148/AbC').canonical == 'hdl:21.t11148/AbC'
    assert normalize('hdl:2142/ABC') != normalize('hdl:2142/abc')


def test_urn_keeps_the_namespace_specific_string_as_written():
    assert normalize('URN:NBN:DE:BVB:19-146642').canonical == 'urn:nbn:DE:BVB:19-146642'


def test_literal_percent_in_doi_survives_round_trips():
    ident = normalize('doi:10.1000/a%2541')  # the DOI's suffix is 'a%41'
    assert ident.canonical == 'doi:10.1000/a%2541'
    assert normalize(normalize(ident.canonical).canonical) == ident


def test_identifier_value_excludes_the_scheme_prefix():
    assert normalize('https://doi.org/10.5072/X').value == '10.5072/x'
    assert normalize('hdl:2142/12345').value == '2142/12345'
    assert normalize('ark:/13030/tf5p30086k').value == '13030/tf5p30086k'
    assert normalize('urn:nbn:de:bvb:19-146642').value == 'nbn:de:bvb:19-146642'
    assert normalize('http://purl.org/dc/terms/').value == 'https://purl.org/dc/terms/'
    assert normalize('https://example.org/x').value == 'https://example.org/x'


def test_identifier_is_immutable_hashable_and_checks_its_scheme():
    ident = normalize('10.5072/x')
    with pytest.raises(dataclasses.FrozenInstanceError):
        ident.value = 'other'
    assert {ident, normalize('doi:10.5072/X')} == {ident}
    with pytest.raises(ValueError):
        Identifier('isbn', '0451450523')


def test_canonical_forms_up_to_max_length_are_accepted_and_longer_text_is_not():
    canonical = 'doi:10.5072/' + 'x' * (MAX_LENGTH - len('doi:10.5072/'))
    assert normalize(canonical).canonical == canonical
    with pytest.raises(InvalidIdentifier, match='too long'):
        normalize(canonical + 'x')


def test_input_whose_canonical_form_would_exceed_max_length_is_rejected():
    # The bare spelling fits, but 'doi:' makes the canonical form too long to be re-parsed.
    with pytest.raises(InvalidIdentifier, match='too long'):
        normalize('10.5072/' + 'x' * (MAX_LENGTH - len('10.5072/')))


@pytest.mark.parametrize(
    'value',
    [None, 42, 3.5, True, b'10.5072/x', ['10.5072/x'], {'$ne': 'x'}, ('doi', '10.5072/x')],
    ids=repr,
)
def test_non_string_input_is_rejected_with_its_type_named(value):
    with pytest.raises(InvalidIdentifier, match='must be a string') as info:
        normalize(value)
    assert type(value).__name__ in str(info.value)


GARBAGE = [
    '',
    '   ',
    '\n\t',
    'hello',
    'hello world',
    '{"$ne": "x"}',
    '{"$gt":""}',
    '$where',
    "'; DROP TABLE identifiers; --",
    '<script>alert(1)</script>',
    '../../etc/passwd',
    'ftp-ish junk',
    '10.',
    '10.5072',
    '10.5072/',
    'doi:',
    'doi:10.',
    'DOI:hello',
    'hdl:',
    'hdl:2142/',
    'hdl:$where/x',
    'ark:',
    'ark:/13030/',
    'ark:/13030/---',
    'ark:/abcde/x',
    'ark:/l2345/x',
    'urn:',
    'urn:x',
    'urn:nbn',
    'urn:a:b',
    'javascript:alert(1)',
    'JavaScript:alert(document.cookie)',
    'file:///etc/passwd',
    'ftp://ftp.example.org/pub/data.csv',
    'mailto:someone@example.org',
    'data:text/html,<script>alert(1)</script>',
    'http://',
    'https:///only/a/path',
    'http://user:secret@example.org/',
    'http://exa mple.org/',
    'http://example.org:99999/',
    'http://example.org:http/',
    'http://[::1/',
    'http://ex%61mple.org/',
    '2142/12345',
    '0000-0002-1825-0097',
    '0451450523',
    'doi:10.1000/a%20b',
    '10.1000/%FF',
    '10.1000/x%00',
    '10.5072/x\x00',
    '10.5072/x\ny',
    '10.5072/\u200bx',
    '\ufeff10.5072/x',
    '\ud800',
    '10.5072/x y',
    'x' * (MAX_LENGTH + 1),
]


@pytest.mark.parametrize('text', GARBAGE, ids=lambda t: repr(t[:40]))
def test_garbage_is_rejected_with_an_explanation(text):
    with pytest.raises(InvalidIdentifier) as info:
        normalize(text)
    assert str(info.value).strip()


@pytest.mark.parametrize(
    'text', ['hello', '10.', 'doi:', '$where', 'ftp-ish junk', 'javascript:alert(1)', 'hdl:']
)
def test_rejection_message_lists_the_accepted_forms(text):
    with pytest.raises(InvalidIdentifier) as info:
        normalize(text)
    message = str(info.value)
    for form in ('DOI', 'Handle', 'ARK', 'URN', 'PURL', 'URL'):
        assert form in message


def test_rejection_message_suggests_the_prefix_for_a_bare_handle():
    with pytest.raises(InvalidIdentifier, match='hdl:2142/12345'):
        normalize('2142/12345')


@pytest.mark.parametrize(
    ('text', 'advice'),
    [
        ('www.example.org/data', 'start it with https://'),
        ('https:/example.org/data', 'https://host/path'),
        ('0451450523', 'urn:isbn:'),
        ('doi:', '10.5281/zenodo.1234'),
        ('ark:/13030/', 'ark:/13030/tf5p30086k'),
        ('file:///etc/passwd', '‘file:’ scheme is not supported'),
        ('http://user:secret@example.org/', 'user name or password'),
        ('10.5072/\u200bx', 'U+200B'),
    ],
)
def test_rejection_message_gives_specific_advice(text, advice):
    with pytest.raises(InvalidIdentifier) as info:
        normalize(text)
    assert advice in str(info.value)


def test_invalid_identifier_is_a_value_error():
    assert issubclass(InvalidIdentifier, ValueError)


# Text that starts like an identifier reaches the deeper parsing paths far more often than
# uniformly random text does.
_PREFIXES = [
    '',
    '10.',
    '10.5072/',
    'doi:',
    'DOI: ',
    'info:doi/',
    'hdl:',
    'hdl:2142/',
    'hdl:10.',
    'ark:',
    'ark:/13030/',
    'urn:',
    'urn:nbn:',
    'http://',
    'https://',
    'https://doi.org/',
    'https://hdl.handle.net/',
    'https://n2t.net/ark:/',
    'https://nbn-resolving.org/',
    'https://nbn-resolving.org/resolver?identifier=',
    'https://identifiers.org/',
    'http://purl.org/',
    'doi.org/',
    'http://[',
]
_TEXT = st.one_of(
    st.text(),
    st.builds(lambda prefix, rest: prefix + rest, st.sampled_from(_PREFIXES), st.text()),
    st.builds(
        lambda prefix, rest: prefix + rest,
        st.sampled_from(_PREFIXES),
        st.text(alphabet='0123456789abcXYZ./:%-_?#@[]'),
    ),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_TEXT)
def test_normalize_only_raises_invalid_identifier_and_is_idempotent(text):
    try:
        ident = normalize(text)
    except InvalidIdentifier as error:
        assert str(error)
        return
    assert ident.scheme in SCHEMES
    assert len(ident.canonical) <= MAX_LENGTH
    assert normalize(ident.canonical) == ident


# --- Repository landing pages, as people paste them from the address bar --------------------
# (URL, canonical): real published records. Each repository's own examples (the registry's
# `examples`, shown in docs/identifiers.md) are checked too.
PASTED = [
    # Dataverse, at Harvard and at other installations
    (
        'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/28075',
        'doi:10.7910/dvn/28075',
    ),
    (
        'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/VOQCHQ',
        'doi:10.7910/dvn/voqchq',
    ),
    (
        'https://dataverse.harvard.edu/citation?persistentId=doi:10.7910/DVN/IXA7BM',
        'doi:10.7910/dvn/ixa7bm',
    ),
    (
        'https://edatos.consorciomadrono.es/dataset.xhtml?persistentId=doi:10.21950/YABYCN',
        'doi:10.21950/yabycn',
    ),
    ('https://dataverse.nl/citation?persistentId=doi:10.34894/G3KOYT', 'doi:10.34894/g3koyt'),
    (
        'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/CVYSR7#',
        'doi:10.7910/dvn/cvysr7',
    ),
    # Zenodo: /records/N, /record/N (older links), /doi/…
    ('https://zenodo.org/records/10708763', 'doi:10.5281/zenodo.10708763'),
    ('https://zenodo.org/records/7568094/', 'doi:10.5281/zenodo.7568094'),
    ('http://zenodo.org/record/1208113', 'doi:10.5281/zenodo.1208113'),
    ('zenodo.org/records/18325225', 'doi:10.5281/zenodo.18325225'),
    ('https://zenodo.org/doi/10.5281/zenodo.3509134', 'doi:10.5281/zenodo.3509134'),
    # Dryad
    (
        'https://datadryad.org/stash/dataset/doi:10.5061/dryad.k6tq2',
        'doi:10.5061/dryad.k6tq2',
    ),
    (
        'https://datadryad.org/stash/dataset/doi:10.5061/dryad.5hqbzkh6f',
        'doi:10.5061/dryad.5hqbzkh6f',
    ),
    (
        'https://datadryad.org/stash/dataset/doi%3A10.5061%2Fdryad.73n5tb2v9',
        'doi:10.5061/dryad.73n5tb2v9',
    ),
    # Figshare articles and DOIs
    (
        'https://figshare.com/articles/dataset/Rattlesnake_Recombination_Maps/11283224',
        'doi:10.6084/m9.figshare.11283224',
    ),
    (
        'https://figshare.com/articles/dataset/nERdy_dataset/25241458/2',
        'doi:10.6084/m9.figshare.25241458.v2',
    ),
    ('https://doi.org/10.6084/m9.figshare.1512427.v5', 'doi:10.6084/m9.figshare.1512427.v5'),
    # Resolvers carrying another scheme
    ('https://hdl.handle.net/doi:10.24431/rw1k118', 'doi:10.24431/rw1k118'),
    (
        'http://hdl.handle.net/doi:10.1002/(SICI)1097-0088(19990330)19:4<347::AID-JOC363>3.0.CO;2-O',
        'doi:10.1002/(sici)1097-0088(19990330)19:4<347::aid-joc363>3.0.co;2-o',
    ),
    ('http://dx.doi.org/doi:10.5061/dryad.8t8s248', 'doi:10.5061/dryad.8t8s248'),
    ('https://doi.org/20.500.11984/6531', 'hdl:20.500.11984/6531'),
    # ARKs at any resolver, with or without the slash after 'ark:'
    ('https://n2t.net/ark:/99152/p0wctqt', 'ark:/99152/p0wctqt'),
    ('http://n2t.net/ark:/23942/g2', 'ark:/23942/g2'),
    ('https://n2t.net/ark:59853/x', 'ark:/59853/x'),
    ('https://digital.library.unt.edu/ark:/67531/metadc11157/', 'ark:/67531/metadc11157/'),
    ('https://gallica.bnf.fr/ark:12148/bpt6k5619759j', 'ark:/12148/bpt6k5619759j'),
    # URN:NBN resolvers
    ('http://nbn-resolving.de/urn:nbn:de:gbv:46-00104048-18', 'urn:nbn:de:gbv:46-00104048-18'),
    (
        'https://nbn-resolving.de/urn:nbn:de:bvb:12-bsb00040797-1',
        'urn:nbn:de:bvb:12-bsb00040797-1',
    ),
    (
        'http://nbn-resolving.de/urn/resolver.pl?urn=urn:nbn:de:bsz:352-opus-123507',
        'urn:nbn:de:bsz:352-opus-123507',
    ),
]

# Pages of those sites that are not a dataset: they stay plain URLs.
NOT_A_DATASET = [
    'https://zenodo.org/records/10028978/files/illumina.tar.gz',
    'https://zenodo.org/search?q=turbulence',
    'https://zenodo.org/records/1208113/latest',
    'https://dataverse.harvard.edu/dataverse/harvard',
    'https://dataverse.harvard.edu/dataset.xhtml',
    'https://datadryad.org/search?q=bears',
    'https://figshare.com/articles/dataset/brain_tumor_dataset/1512427/files',
    'https://springernature.figshare.com/articles/dataset/x/8319737',
    'https://doi.org/help',
    'https://n2t.net/',
]


@pytest.mark.parametrize(('url', 'canonical'), PASTED, ids=[u for u, _ in PASTED])
def test_a_repository_landing_page_resolves_like_its_identifier(url, canonical):
    ident = normalize(url)
    assert ident.canonical == canonical
    assert normalize(canonical) == ident


EXAMPLES = [(repo, url, canonical) for repo in REPOSITORIES for url, canonical in repo.examples]


@pytest.mark.parametrize(
    ('repository', 'url', 'canonical'), EXAMPLES, ids=[url for _, url, _ in EXAMPLES]
)
def test_every_registry_example_normalises_to_its_identifier(repository, url, canonical):
    assert normalize(url).canonical == canonical
    parts = urllib.parse.urlsplit(url)
    assert repository.identify(parts.hostname, parts.path, parts.query).canonical == canonical


@pytest.mark.parametrize('url', NOT_A_DATASET)
def test_other_pages_of_repository_sites_stay_urls(url):
    assert normalize(url).scheme == 'url'


def test_a_zenodo_record_and_its_doi_are_one_identifier():
    spellings = [
        'https://zenodo.org/records/7568094',
        'https://zenodo.org/record/7568094',
        'zenodo.org/records/7568094',
        'https://doi.org/10.5281/zenodo.7568094',
        '10.5281/ZENODO.7568094',
        'https://hdl.handle.net/doi:10.5281/zenodo.7568094',
    ]
    assert {normalize(s).canonical for s in spellings} == {'doi:10.5281/zenodo.7568094'}


def test_the_zenodo_sandbox_mints_test_dois():
    assert normalize('https://sandbox.zenodo.org/records/12345').canonical == (
        'doi:10.5072/zenodo.12345'
    )


@pytest.mark.parametrize(
    ('text', 'canonical'),
    [
        ('ark:/b5072/x', 'ark:/b5072/x'),
        ('ARK:/B5072/Xy', 'ark:/b5072/Xy'),
        ('ark:b5072/x', 'ark:/b5072/x'),
        ('https://n2t.net/ark:/z9q4t/a-b', 'ark:/z9q4t/ab'),
        ('https://example.org/ark:bcdfg/x', 'ark:/bcdfg/x'),
    ],
)
def test_ark_naans_are_betanumeric(text, canonical):
    assert normalize(text).canonical == canonical


@pytest.mark.parametrize('text', ['ark:/abcde/x', 'ark:/1234l/x', 'ark:/12-45/x'])
def test_an_ark_naan_with_vowels_or_l_is_refused_with_the_rule(text):
    with pytest.raises(InvalidIdentifier, match='digits and consonants'):
        normalize(text)


def test_every_registry_entry_is_documented():
    doc = (Path(__file__).resolve().parent.parent / 'docs' / 'identifiers.md').read_text()
    for repository in REPOSITORIES:
        assert f'`{type(repository).__name__}`' in doc, repository.name
        for url, canonical in repository.examples[:1]:
            assert url in doc and canonical in doc, url


def test_a_repository_without_real_examples_is_refused():
    with pytest.raises(TypeError, match='real examples'):

        class Nameless(Repository):  # noqa: F841 - defining it is the test
            def identify(self, host, path, query):
                return None
