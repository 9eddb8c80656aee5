"""Canonical URL rules: each row is a URL shape seen on real news sites.

The canonical URL is the identity of an article row, so a wrong rule either
merges two articles (data loss) or splits one (duplicates); the tables pin
both directions down.
"""

from __future__ import annotations

import hashlib

import pytest

from crawler.urls import (
    TRACKING_PARAMS,
    TRACKING_PREFIXES,
    canonicalize_url,
    choose_canonical,
    is_own_page,
    is_tracking_param,
    strip_tracking,
    strip_variant,
    url_fingerprint,
)

# (input, canonical)
CANONICAL = [
    # tracking parameters
    ("https://www.example.com/news/a-b?utm_source=twitter&utm_medium=social&utm_campaign=x",
     "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b?id=7&fbclid=IwAR0abc", "https://www.example.com/news/a-b?id=7"),
    ("https://www.example.com/news/a-b?gclid=Cj0K&utm_term=x&page=2", "https://www.example.com/news/a-b?page=2"),
    ("https://www.example.com/a?UTM_Source=x&FBCLID=y&Gclid=z", "https://www.example.com/a"),
    ("https://www.example.com/a?dclid=1&msclkid=2&yclid=3&igshid=4&mc_cid=5&mc_eid=6&_ga=7",
     "https://www.example.com/a"),
    ("https://www.nytimes.com/2024/05/01/us/story.html?smid=tw-share&smtyp=cur",
     "https://www.nytimes.com/2024/05/01/us/story.html"),
    ("https://www.bbc.co.uk/news/uk-123?at_medium=RSS&at_campaign=KARANGA&ito=1",
     "https://www.bbc.co.uk/news/uk-123"),
    ("https://www.example.com/a?WT.mc_id=abc&wt_zmc=x&cmpid=rss&ocid=msn&ncid=y",
     "https://www.example.com/a"),
    ("https://www.lemonde.fr/a/article/2024/05/01/x_123_456.html?xtor=RSS-3208",
     "https://www.lemonde.fr/a/article/2024/05/01/x_123_456.html"),
    ("https://www.example.com/a?ref=hn&ref_src=twsrc%5Etfw&ref_url=x&share=1&sr_share=y&s_cid=z&spm=a.b",
     "https://www.example.com/a"),
    ("https://www.example.com/a?p=1&amp;utm_medium=rss", "https://www.example.com/a?p=1"),  # double-escaped
    ("https://www.example.com/a?utm_source=x", "https://www.example.com/a"),  # nothing left: no "?"
    ("https://www.example.com/a?src=img&source=rss", "https://www.example.com/a?source=rss&src=img"),  # kept
    # fragments
    ("https://www.example.com/news/a-b#comments", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b?x=1#!/slide/2", "https://www.example.com/news/a-b?x=1"),
    # scheme, host, port
    ("HTTPS://WWW.Example.COM/News/A-B", "https://www.example.com/News/A-B"),  # path case kept
    ("http://www.example.com:80/a", "http://www.example.com/a"),
    ("https://www.example.com:443/a", "https://www.example.com/a"),
    ("https://www.example.com:80/a", "https://www.example.com:80/a"),  # not the default port for https
    ("http://www.example.com:8080/a", "http://www.example.com:8080/a"),
    ("https://www.example.com./a", "https://www.example.com/a"),  # trailing dot
    ("https://user:secret@www.example.com/a", "https://www.example.com/a"),
    ("http://127.0.0.1:8000/news/a-b?utm_source=x", "http://127.0.0.1:8000/news/a-b"),
    ("http://[::1]:8000/a", "http://[::1]:8000/a"),
    # IDN hosts
    ("https://www.bücher.de/artikel", "https://www.xn--bcher-kva.de/artikel"),
    ("https://Bücher.DE/artikel", "https://xn--bcher-kva.de/artikel"),
    ("https://www.xn--bcher-kva.de/artikel", "https://www.xn--bcher-kva.de/artikel"),
    ("https://пример.рф/новости", "https://xn--e1afmkfd.xn--p1ai/%D0%BD%D0%BE%D0%B2%D0%BE%D1%81%D1%82%D0%B8"),
    # percent-encoding
    ("https://www.example.com/caf%c3%a9", "https://www.example.com/caf%C3%A9"),
    ("https://www.example.com/café", "https://www.example.com/caf%C3%A9"),
    ("https://www.example.com/%7Euser/%41rticle", "https://www.example.com/~user/Article"),
    ("https://www.example.com/a%2fb/c", "https://www.example.com/a%2Fb/c"),  # %2F is not "/"
    ("https://www.example.com/a b/c", "https://www.example.com/a%20b/c"),
    ("https://www.example.com/100%/x", "https://www.example.com/100%25/x"),
    ("https://www.example.com/search?q=caf%c3%a9+au+lait", "https://www.example.com/search?q=caf%C3%A9+au+lait"),
    ("https://www.example.com/a?x=%2f&y=a%26b", "https://www.example.com/a?x=%2F&y=a%26b"),
    # index documents, empty path, trailing slashes
    ("https://www.example.com/news/index.html", "https://www.example.com/news/"),
    ("https://www.example.com/index.htm", "https://www.example.com/"),
    ("https://www.example.com/index.php?p=123", "https://www.example.com/?p=123"),  # WordPress
    ("https://www.example.com/index.php/2024/05/x", "https://www.example.com/index.php/2024/05/x"),
    ("https://www.example.com/news/Index.html", "https://www.example.com/news/Index.html"),
    ("https://www.example.com", "https://www.example.com/"),
    ("https://www.example.com?b=1", "https://www.example.com/?b=1"),
    ("https://www.example.com/news/a-b/", "https://www.example.com/news/a-b/"),  # slash kept
    ("https://www.example.com/news/a-b", "https://www.example.com/news/a-b"),  # no slash added
    ("https://www.example.com/a/./b/../c", "https://www.example.com/a/c"),
    ("https://www.example.com//double//slash", "https://www.example.com//double//slash"),
    # query order, blank values, repeated parameters
    ("https://www.example.com/a?b=2&a=1&c=3", "https://www.example.com/a?a=1&b=2&c=3"),
    ("https://www.example.com/a?b=&a", "https://www.example.com/a?a&b="),
    ("https://www.example.com/a?tag=z&x=1&tag=a", "https://www.example.com/a?tag=z&tag=a&x=1"),  # stable
    ("https://www.example.com/a?&&x=1&", "https://www.example.com/a?x=1"),
    ("https://www.example.com/a?", "https://www.example.com/a"),
    # whitespace around hrefs copied from HTML
    ("  https://www.example.com/a\n", "https://www.example.com/a"),
]


@pytest.mark.parametrize(("url", "expected"), CANONICAL)
def test_canonicalize_url(url: str, expected: str) -> None:
    assert canonicalize_url(url) == expected


@pytest.mark.parametrize(("url", "_"), CANONICAL)
def test_canonicalize_url_is_idempotent(url: str, _: str) -> None:
    once = canonicalize_url(url)
    assert canonicalize_url(once) == once


# (relative href, base, canonical)
RELATIVE = [
    ("/news/a-b?utm_source=x", "https://www.example.com/index.html", "https://www.example.com/news/a-b"),
    ("a-b", "https://www.example.com/news/", "https://www.example.com/news/a-b"),
    ("../sport/x.html", "https://www.example.com/news/y.html", "https://www.example.com/sport/x.html"),
    ("//cdn.example.com/a", "https://www.example.com/", "https://cdn.example.com/a"),
    ("?page=2", "https://www.example.com/news/?page=1", "https://www.example.com/news/?page=2"),
    ("#top", "https://www.example.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://other.example.org/x", "https://www.example.com/", "https://other.example.org/x"),
    ("/a", "http://127.0.0.1:8000/news/", "http://127.0.0.1:8000/a"),
]


@pytest.mark.parametrize(("href", "base", "expected"), RELATIVE)
def test_canonicalize_relative_url_against_base(href: str, base: str, expected: str) -> None:
    assert canonicalize_url(href, base=base) == expected


@pytest.mark.parametrize(
    "url", ["/news/a-b", "news/a-b", "mailto:desk@example.com", "ftp://example.com/a", "javascript:void(0)",
            "https:///path-only", "http://example.com:99999/a", ""],
)
def test_canonicalize_url_rejects_what_is_not_an_absolute_http_url(url: str) -> None:
    with pytest.raises(ValueError):
        canonicalize_url(url)


# (fetched URL, declared rel=canonical / og:url, identity)
CHOOSE = [
    # no usable declaration: the fetched URL
    ("https://www.example.com/news/a-b?utm_source=x", None, "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "   ", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "javascript:void(0)", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "http://www.example.com:99999/x", "https://www.example.com/news/a-b"),
    # same site: accepted, and canonicalized (tracking stripped, host lower-cased)
    ("https://www.example.com/news/a-b?page=1", "https://WWW.example.com/news/a-b?utm_campaign=feed",
     "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/12345/slug-here", "https://www.example.com/news/12345",
     "https://www.example.com/news/12345"),
    ("https://www.example.com/news/a-b", "/news/a-b-c", "https://www.example.com/news/a-b-c"),  # relative
    ("https://www.example.com/news/a-b", "//www.example.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "http://www.example.com/news/a-b", "http://www.example.com/news/a-b"),
    # www vs bare host, mobile vs www, subdomain of the same site: accepted
    ("https://www.example.com/news/a-b", "https://example.com/news/a-b", "https://example.com/news/a-b"),
    ("https://example.com/news/a-b", "https://www.example.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://m.example.com/news/a-b", "https://www.example.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://amp.example.com/news/a-b", "https://example.com/news/a-b", "https://example.com/news/a-b"),
    ("https://news.example.com/2024/a-b", "https://www.example.com/2024/a-b", "https://www.example.com/2024/a-b"),
    ("https://www.bbc.co.uk/news/uk-1", "https://bbc.co.uk/news/uk-1", "https://bbc.co.uk/news/uk-1"),
    ("https://www.bücher.de/a-b", "https://xn--bcher-kva.de/a-b", "https://xn--bcher-kva.de/a-b"),
    # AMP and print pages pointing at the article: accepted
    ("https://www.example.com/news/a-b-c/amp", "https://www.example.com/news/a-b-c",
     "https://www.example.com/news/a-b-c"),
    ("https://www.example.com/news/a-b-c/?print=1", "https://www.example.com/news/a-b-c/",
     "https://www.example.com/news/a-b-c/"),
    # another site: ignored
    ("https://www.example.com/news/a-b", "https://www.other.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "https://example.com.evil.net/news/a-b",
     "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "https://notexample.com/news/a-b", "https://www.example.com/news/a-b"),
    ("https://alice.substack.com/p/post", "https://bob.substack.com/p/post", "https://alice.substack.com/p/post"),
    ("https://www.example.co.uk/news/a-b", "https://www.example.com/news/a-b",
     "https://www.example.co.uk/news/a-b"),
    ("https://www.example.com/news/a-b", "ftp://www.example.com/news/a-b", "https://www.example.com/news/a-b"),
    # home page or section front declared for a deeper article: a CMS bug, ignored
    ("https://www.example.com/news/2024/05/a-b", "https://www.example.com/", "https://www.example.com/news/2024/05/a-b"),
    ("https://www.example.com/news/a-b", "/", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b", "https://example.com", "https://www.example.com/news/a-b"),
    ("https://www.example.com/politics/2024/05/a-b", "https://www.example.com/politics/",
     "https://www.example.com/politics/2024/05/a-b"),
    ("https://www.example.com/us-news/2024/may/01/a-b", "/us-news",
     "https://www.example.com/us-news/2024/may/01/a-b"),
    # ... but a home page may declare itself, and /?p=N is a WordPress article
    ("https://www.example.com/index.html", "https://www.example.com/", "https://www.example.com/"),
    ("https://www.example.com/2024/05/a-b", "https://www.example.com/?p=123", "https://www.example.com/?p=123"),
    # IPs and localhost: exactly the same host and port
    ("http://127.0.0.1:8000/news/a-b", "http://127.0.0.1:8000/news/a-b?utm_source=x",
     "http://127.0.0.1:8000/news/a-b"),
    ("http://127.0.0.1:8000/news/a-b?x=1", "/news/a-b", "http://127.0.0.1:8000/news/a-b"),
    ("http://127.0.0.1:8000/news/a-b", "http://127.0.0.1:8001/news/a-b", "http://127.0.0.1:8000/news/a-b"),
    ("http://127.0.0.1:8000/news/a-b", "http://localhost:8000/news/a-b", "http://127.0.0.1:8000/news/a-b"),
    ("http://localhost:8000/news/a-b", "http://localhost:8000/news/x-y", "http://localhost:8000/news/x-y"),
    ("http://10.0.0.1/news/a-b", "http://10.0.0.2/news/a-b", "http://10.0.0.1/news/a-b"),
]


@pytest.mark.parametrize(("fetched", "declared", "expected"), CHOOSE)
def test_choose_canonical(fetched: str, declared: str | None, expected: str) -> None:
    assert choose_canonical(fetched, declared) == expected


# (fetched AMP / print rendering, the article's identity) with no usable declaration
VARIANTS = [
    # AMP: path segment, suffix, query, host, caches
    ("https://www.example.com/news/2024/05/01/a-b/amp/", "https://www.example.com/news/2024/05/01/a-b/"),
    ("https://www.example.com/news/a-b-c/amp", "https://www.example.com/news/a-b-c"),
    ("https://www.example.com/AMP/news/a-b", "https://www.example.com/news/a-b"),
    ("https://www.bbc.co.uk/news/amp/uk-123", "https://www.bbc.co.uk/news/uk-123"),
    ("https://www.bbc.com/news/uk-123.amp", "https://www.bbc.com/news/uk-123"),
    ("https://www.example.com/2024/05/01/story.amp.html", "https://www.example.com/2024/05/01/story.html"),
    ("https://www.example.com/news/a-b?amp=1", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b?amp", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b?_amp=true&page=2", "https://www.example.com/news/a-b?page=2"),
    ("https://www.washingtonpost.com/politics/2024/05/01/a-b/?outputType=amp",
     "https://www.washingtonpost.com/politics/2024/05/01/a-b/"),
    ("https://amp.theguardian.com/world/2024/may/01/a-b", "https://www.theguardian.com/world/2024/may/01/a-b"),
    ("https://amp.example.com/news/a-b/amp/?utm_source=x", "https://www.example.com/news/a-b/"),
    ("https://www-example-com.cdn.ampproject.org/c/s/www.example.com/news/a-b/amp/",
     "https://www.example.com/news/a-b/"),
    ("https://www-example-com.cdn.ampproject.org/v/s/www.example.com/news/a-b?amp_js_v=0.1&usqp=mq331AQ&amp=1",
     "https://www.example.com/news/a-b?amp_js_v=0.1&usqp=mq331AQ"),
    ("https://www.google.com/amp/s/www.example.com/news/a-b.amp", "https://www.example.com/news/a-b"),
    # print renderings
    ("https://www.example.com/news/a-b/print/", "https://www.example.com/news/a-b/"),
    ("https://www.example.com/print/node/12345", "https://www.example.com/node/12345"),
    ("https://www.example.com/news/a-b?print=1", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b/?print=true&id=4", "https://www.example.com/news/a-b/?id=4"),
    ("https://www.example.com/news/a-b?view=print", "https://www.example.com/news/a-b"),
    ("https://www.example.com/news/a-b?outputType=print&utm_medium=email", "https://www.example.com/news/a-b"),
    # not renderings: kept
    ("https://www.example.com/amp/", "https://www.example.com/amp/"),
    ("https://www.example.com/print", "https://www.example.com/print"),
    ("https://www.example.com/news/amplifier-review", "https://www.example.com/news/amplifier-review"),
    ("https://www.example.com/news/print-edition-ends-2024", "https://www.example.com/news/print-edition-ends-2024"),
    ("https://www.example.com/news/a-b?view=gallery&amp=0", "https://www.example.com/news/a-b?amp=0&view=gallery"),
    ("https://www.example.com/news/a-b?output=json", "https://www.example.com/news/a-b?output=json"),
    ("https://amp.dev/documentation/", "https://amp.dev/documentation/"),
    ("http://amp.localhost:8000/a", "http://amp.localhost:8000/a"),
]


@pytest.mark.parametrize(("fetched", "expected"), VARIANTS)
def test_amp_and_print_variants_resolve_to_the_article(fetched: str, expected: str) -> None:
    assert choose_canonical(fetched, None) == expected
    assert strip_variant(expected) == expected  # the result is not itself a variant


# One article, every spelling it is met under (after redirects): all resolve to one identity.
ONE_ARTICLE = "https://www.example.com/world/2024/05/01/flood-warning-a000123/"
SPELLINGS = [
    (ONE_ARTICLE, None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?utm_source=rss&utm_medium=feed", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?ref=mostread", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/#comments", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/index.html", None),
    ("HTTPS://WWW.EXAMPLE.COM:443/world/2024/05/01/flood-warning-a000123/", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/amp/", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?amp=1", None),
    ("https://amp.example.com/world/2024/05/01/flood-warning-a000123/", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/print/", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?print=1&fbclid=x", None),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?outputType=amp", None),
    # declared canonical / og:url of a renamed or syndicated copy on the same site
    ("https://www.example.com/world/2024/05/02/flood-warning-updated-a000123/", ONE_ARTICLE),
    ("https://m.example.com/world/2024/05/01/flood-warning-a000123", ONE_ARTICLE),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123", ONE_ARTICLE),  # slashless, 301 target
    ("https://www.example.com/amp/s/123", "/world/2024/05/01/flood-warning-a000123/?amp=1"),
]


@pytest.mark.parametrize(("fetched", "declared"), SPELLINGS)
def test_every_spelling_of_an_article_has_one_identity(fetched: str, declared: str | None) -> None:
    assert choose_canonical(fetched, declared) == ONE_ARTICLE


# (before request, after strip_tracking): nothing but tracking and the fragment changes
STRIP = [
    ("https://www.example.com/a?utm_source=x&b=2&a=1#c", "https://www.example.com/a?b=2&a=1"),
    ("HTTPS://WWW.EXAMPLE.COM:443/a%7e?utm_medium=x", "HTTPS://WWW.EXAMPLE.COM:443/a%7e"),
    ("https://www.example.com/a?b=&fbclid=1&b=", "https://www.example.com/a?b=&b="),
    ("https://www.example.com/news/index.html#top", "https://www.example.com/news/index.html"),
    ("https://www.example.com/a", "https://www.example.com/a"),
    ("/relative?x=1&gclid=2", "/relative?x=1"),
    ("https://www.example.com/a?q=caf%C3%A9+x&utm_term=y", "https://www.example.com/a?q=caf%C3%A9+x"),
]


@pytest.mark.parametrize(("url", "expected"), STRIP)
def test_strip_tracking_changes_nothing_else(url: str, expected: str) -> None:
    assert strip_tracking(url) == expected


def test_tracking_list_is_lower_case_and_keeps_generic_names() -> None:
    assert all(name == name.lower() for name in TRACKING_PARAMS)
    assert all(prefix == prefix.lower() for prefix in TRACKING_PREFIXES)
    for name in ("utm_source", "UTM_CAMPAIGN", "fbclid", "WT.mc_id", "at_medium", "utm%5Fsource",
                 "amp;utm_medium"):
        assert is_tracking_param(name), name
    for name in ("id", "page", "p", "q", "src", "source", "s", "article", "amp", "output"):
        assert not is_tracking_param(name), name


def test_url_fingerprint() -> None:
    url = "https://www.example.com/news/a-b"
    assert url_fingerprint(url) == hashlib.sha1(url.encode()).hexdigest()
    assert len(url_fingerprint(url)) == 40
    assert url_fingerprint(canonicalize_url("https://WWW.example.com:443/news/a-b?utm_source=x#y")) == (
        url_fingerprint(url)
    )
    assert url_fingerprint("https://xn--bcher-kva.de/caf%C3%A9") != url_fingerprint("https://xn--bcher-kva.de/cafe")


# (fetched URL, canonical URL, is it the canonical page itself?)
OWN_PAGE = [
    (ONE_ARTICLE, ONE_ARTICLE, True),
    ("HTTPS://WWW.EXAMPLE.COM:443/world/2024/05/01/flood-warning-a000123/index.html?utm_source=rss#c", ONE_ARTICLE,
     True),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?ref=mostread", ONE_ARTICLE, True),
    # another page that declares it canonical: a syndicated copy, an AMP or print rendering
    ("https://www.example.com/business/2024/05/01/flood-warning-s00012/", ONE_ARTICLE, False),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/amp/", ONE_ARTICLE, False),
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123/?print=1", ONE_ARTICLE, False),
    # served without a redirect: the same document
    ("https://www.example.com/world/2024/05/01/flood-warning-a000123", ONE_ARTICLE, True),
    ("", ONE_ARTICLE, False),
    ("mailto:desk@example.com", ONE_ARTICLE, False),
]


@pytest.mark.parametrize(("fetched", "canonical", "own"), OWN_PAGE)
def test_is_own_page(fetched: str, canonical: str, own: bool) -> None:
    assert is_own_page(fetched, canonical) is own
