"""The bookmarklet of docs/repository-integration.md, run in Chromium on repository-shaped pages.

Each page is served by the browser itself (Playwright's routing) at the repository's own
address, with the markup that repository's landing pages carry: Dataverse and Dryad's
schema.org JSON-LD, Zenodo's signposting ``<link rel="cite-as">``, Figshare's JSON-LD
``PropertyValue``, a journal's ``prism.doi`` beside links to the papers it cites. The
bookmarklet talks to a live Girder with the plugin (cross-origin, as from a real page), where
the datasets of those pages are tagged with their real identifiers.

The bookmark line runs on every page; its readable version is checked to be the same program.
"""

import json
import re
import urllib.parse

import pytest
import requests
from playwright.sync_api import expect

from girder_resolver.identifiers import normalize

from .web_fixtures import REPO, USER, launchChromium, newPage, startSite

expect.set_options(timeout=20000)

#: Real published datasets, tagged at the live site (names are what its index shows).
HELD = {
    'doi:10.7910/DVN/DBW86T': 'HAM10000 (Dataverse)',
    'doi:10.5281/zenodo.7568094': 'S669 benchmark (Zenodo)',
    'doi:10.6084/m9.figshare.1512427': 'Brain tumor dataset (Figshare)',
    'doi:10.5061/dryad.8t8s248': 'Hypothalamic preoptic region (Dryad)',
    'doi:10.1038/sdata.2018.161': 'HAM10000 paper (journal)',
}
PRIVATE = ('doi:10.5072/datadns.private-bookmarklet', 'Embargoed survey')
NAMES = {normalize(identifier).canonical: name for identifier, name in HELD.items()}


@pytest.fixture(scope='module')
def site(mongoUri):
    with startSite(mongoUri, 'site-a', users=[USER]) as live:
        gc = live.admin
        for identifier, name in [*HELD.items(), PRIVATE]:
            folder = gc.createFolder(
                live.collection['_id'],
                name,
                parentType='collection',
                public=identifier != PRIVATE[0],
                reuseExisting=True,
            )
            gc.addMetadataToFolder(folder['_id'], {'identifier': identifier})
        yield live


#: The pages here pose as public sites while the resolver listens on loopback; Chromium's
#: Local Network Access would ask the visitor before letting a public page reach it. A real
#: central resolver is public, so the tests turn that check off.
PUBLIC_RESOLVER = [
    '--disable-features=LocalNetworkAccessChecks,BlockInsecurePrivateNetworkRequests'
]


@pytest.fixture(scope='module')
def browser():
    with launchChromium(PUBLIC_RESOLVER) as chromium:
        yield chromium


@pytest.fixture
def page(browser, request):
    with newPage(browser, request.node.name) as page:
        yield page


def _docScripts():
    """The doc's bookmark line (without ``javascript:``) and its readable version."""
    doc = (REPO / 'docs' / 'repository-integration.md').read_text()
    [line] = [ln for ln in doc.splitlines() if ln.startswith('javascript:')]
    readable = doc.split('The same script, readable:', 1)[1].split('```js\n', 1)[1]
    return line[len('javascript:') :], readable.split('```', 1)[0]


def _bookmarklet(site):
    """The bookmark line of the docs, pointed at this site."""
    return _docScripts()[0].replace('https://resolver.example.org', site.url)


def _squeezed(js):
    """A script without comments, without whitespace outside string literals, and with
    adjacent literals joined: the bookmark line and the readable version must be equal so."""
    js = re.sub(r'(?m)\s{2,}//.*$', '', js)
    parts = re.split(r"('(?:[^'\\]|\\.)*')", js)
    text = ''.join(p if i % 2 else re.sub(r'\s+', '', p) for i, p in enumerate(parts))
    return text.replace("'+'", '')


def testTheReadableBookmarkletIsTheBookmarkLine():
    line, readable = _docScripts()
    assert _squeezed(readable) == _squeezed(line)


def _jsonld(value):
    return f'<script type="application/ld+json">{json.dumps(value)}</script>'


# (address of the page, its <head>, its <body>, the identifier the bookmarklet must open)
PAGES = {
    'dataverse': (
        'https://dataverse.harvard.edu/dataset.xhtml?persistentId=doi:10.7910/DVN/DBW86T',
        '<meta name="DC.title" content="The HAM10000 dataset">'
        + _jsonld(
            {
                '@context': 'http://schema.org',
                '@type': 'Dataset',
                '@id': 'https://doi.org/10.7910/DVN/DBW86T',
                'identifier': 'https://doi.org/10.7910/DVN/DBW86T',
                'name': 'The HAM10000 dataset',
                'publisher': {'@type': 'Organization', 'name': 'Harvard Dataverse'},
            }
        ),
        '<h1>The HAM10000 dataset</h1>',
        'https://doi.org/10.7910/DVN/DBW86T',
    ),
    'zenodo': (
        'https://zenodo.org/records/7568094',
        '<link rel="cite-as" href="https://doi.org/10.5281/zenodo.7568094">'
        '<link rel="item" href="https://zenodo.org/records/7568094/files/S669.csv">',
        '<h1>S669 benchmark</h1>',
        'https://doi.org/10.5281/zenodo.7568094',
    ),
    'zenodo-address-only': (
        'https://zenodo.org/records/7568094',
        '',
        '<h1>S669 benchmark</h1><p>No metadata on this page.</p>',
        'https://zenodo.org/records/7568094',
    ),
    'figshare': (
        'https://figshare.com/articles/dataset/brain_tumor_dataset/1512427',
        _jsonld(
            {
                '@context': 'https://schema.org',
                '@type': 'Dataset',
                'name': 'brain tumor dataset',
                'identifier': {
                    '@type': 'PropertyValue',
                    'propertyID': 'DOI',
                    'value': '10.6084/m9.figshare.1512427',
                },
            }
        ),
        '<h1>brain tumor dataset</h1>',
        '10.6084/m9.figshare.1512427',
    ),
    'dryad': (
        'https://datadryad.org/stash/dataset/doi:10.5061/dryad.8t8s248',
        _jsonld(
            [
                {
                    '@context': 'http://schema.org',
                    '@type': 'Organization',
                    '@id': 'https://datadryad.org/',
                },
                {
                    '@context': 'http://schema.org',
                    '@type': 'Dataset',
                    'identifier': ['doi:10.5061/dryad.8t8s248'],
                    'url': 'https://datadryad.org/stash/dataset/doi:10.5061/dryad.8t8s248',
                },
            ]
        ),
        '<h1>Data from: hypothalamic preoptic region</h1>',
        'doi:10.5061/dryad.8t8s248',
    ),
    'journal': (
        'https://www.nature.com/articles/sdata2018161',
        '<meta name="prism.doi" content="doi:10.1038/sdata.2018.161">'
        '<meta name="dc.identifier" content="doi:10.1038/sdata.2018.161">',
        '<h1>The HAM10000 dataset, a large collection of dermatoscopic images</h1>'
        '<ol><li><a href="https://doi.org/10.1001/archderm.1987.01660240129028">ref 1</a>'
        '</li></ol>',
        'doi:10.1038/sdata.2018.161',
    ),
}


def _serve(page, url, head, body, headers=None):
    origin = '{0.scheme}://{0.netloc}'.format(urllib.parse.urlsplit(url))
    html = (
        f'<!doctype html><html><head><title>Landing page</title>{head}</head>'
        f'<body>{body}</body></html>'
    )
    page.route(
        f'{origin}/**',
        lambda route: route.fulfill(content_type='text/html', body=html, headers=headers or {}),
    )


def _run(page, script, blockPopups=False):
    """Click the bookmark: what it opened, and the text of the box it showed (each or None)."""
    page.evaluate(
        '(blocked) => { window.open = (url) => {'
        ' window.__opened = url; return blocked ? null : {}; }; }',
        blockPopups,
    )
    page.evaluate(script)
    page.wait_for_function(
        "window.__opened || document.getElementById('datadns-bookmarklet')", timeout=20000
    )
    opened = page.evaluate('window.__opened || null')
    box = page.locator('#datadns-bookmarklet')
    return opened, (box.inner_text() if box.count() else None)


def _sent(opened, site):
    assert opened.startswith(f'{site.apiUrl}/resolve?id='), opened
    return urllib.parse.parse_qs(urllib.parse.urlsplit(opened).query)['id'][0]


@pytest.mark.parametrize('shape', list(PAGES))
def testTheBookmarkletOpensTheDatasetOfARepositoryPage(page, site, shape):
    url, head, body, expected = PAGES[shape]
    _serve(page, url, head, body)
    page.goto(url)
    opened, box = _run(page, _bookmarklet(site))
    assert box is None, box
    assert _sent(opened, site) == expected
    answer = requests.get(opened, headers={'Accept': 'application/json'}, timeout=10).json()
    [location] = answer['locations']
    assert location['name'] == NAMES[answer['identifier']]


def testTheOpenedPageShowsTheDataset(page, site):
    url, head, body, _ = PAGES['zenodo-address-only']
    _serve(page, url, head, body)
    page.goto(url)
    opened, _ = _run(page, _bookmarklet(site))
    page.goto(opened)
    expect(page.locator('.g-resolver-resolve .g-resolver-dataset-name').first).to_have_text(
        HELD['doi:10.5281/zenodo.7568094']
    )
    page.screenshots('zenodo-record')


def testAPageWithoutAnIdentifierGetsAMessageOnThePageAndNothingOpens(page, site):
    url = 'https://blog.example.org/2026/11/our-lab-retreat'
    _serve(page, url, '<meta name="description" content="Photos">', '<p>No data here.</p>')
    page.goto(url)
    opened, box = _run(page, _bookmarklet(site))
    assert opened is None
    assert 'found no dataset identifier on this page' in box
    page.screenshots('no-identifier')
    page.locator('#datadns-bookmarklet button').click()
    expect(page.locator('#datadns-bookmarklet')).to_have_count(0)


def testAnIdentifierNoSiteHoldsOpensItsPageWhichOffersToLogIn(page, site):
    """A real PID might be a private dataset: the resolver's page says so and offers login."""
    url = 'https://zenodo.org/records/1208113'
    _serve(page, url, '<meta name="citation_doi" content="10.5281/zenodo.1208113">', '')
    page.goto(url)
    opened, box = _run(page, _bookmarklet(site))
    assert box is None
    assert _sent(opened, site) == '10.5281/zenodo.1208113'
    page.goto(opened)
    expect(page.locator('.g-resolver-failure')).to_contain_text('No site')


def testTheFirstCandidateASiteHoldsWinsOverOnesNoSiteHolds(page, site):
    url = 'https://journal.example.org/article/42'
    head = (
        '<meta name="citation_doi" content="10.5072/not-held-anywhere">'
        '<meta name="dc.identifier" content="doi:10.1038/sdata.2018.161">'
    )
    _serve(page, url, head, '')
    page.goto(url)
    opened, _ = _run(page, _bookmarklet(site))
    assert _sent(opened, site) == 'doi:10.1038/sdata.2018.161'


def testABlockedPopupLeavesALinkOnThePage(page, site):
    url, head, body, expected = PAGES['journal']
    _serve(page, url, head, body)
    page.goto(url)
    opened, box = _run(page, _bookmarklet(site), blockPopups=True)
    assert 'blocked the new tab' in box
    link = page.locator('#datadns-bookmarklet a')
    assert _sent(link.get_attribute('href'), site) == expected
    assert link.get_attribute('rel') == 'noopener'


def testAPageThatForbidsAskingStillOpensItsIdentifier(page, site):
    """A Content-Security-Policy without the resolver in connect-src: the bookmarklet cannot
    ask, so it opens its first candidate, as the resolver's page can still explain it."""
    url = 'https://journal.example.org/article/43'
    head = (
        '<meta name="citation_doi" content="10.5072/not-held-anywhere">'
        '<meta name="dc.identifier" content="doi:10.1038/sdata.2018.161">'
    )
    _serve(page, url, head, '', headers={'Content-Security-Policy': "connect-src 'self'"})
    page.goto(url)
    opened, box = _run(page, _bookmarklet(site))
    assert box is None
    assert _sent(opened, site) == '10.5072/not-held-anywhere'


def testAnotherSiteCannotReadAPrivateDatasetThroughTheVisitorsLogin(page, site):
    """The resolver lets any page read its answers, but only anonymous ones: a page at another
    origin learns nothing of a private dataset even while the visitor is logged in."""
    identifier, _name = PRIVATE
    page.goto(f'{site.url}/')
    token = site.admin.token  # the owner, who may read it
    page.context.add_cookies([{'name': 'girderToken', 'value': token, 'url': site.url}])
    mine = requests.get(
        f'{site.apiUrl}/resolve', params={'id': identifier}, headers={'Girder-Token': token}
    )
    assert mine.status_code == 200, mine.text
    url = 'https://evil.example.org/'
    _serve(page, url, '', '')
    page.goto(url)
    outcomes = page.evaluate(
        """async ([api, id]) => {
            const url = api + '/resolve?id=' + encodeURIComponent(id);
            const out = {};
            for (const credentials of ['omit', 'include']) {
                try {
                    const headers = {Accept: 'application/json'};
                    const r = await fetch(url, {credentials, headers});
                    out[credentials] = r.status + ' ' + await r.text();
                } catch (e) {
                    out[credentials] = 'refused';
                }
            }
            return out;
        }""",
        [site.apiUrl, identifier],
    )
    assert outcomes['omit'].startswith('404 '), outcomes
    assert outcomes['include'] == 'refused' or outcomes['include'].startswith('404 '), outcomes
    assert not re.search(PRIVATE[1], str(outcomes))
