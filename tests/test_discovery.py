"""Sitemap, news sitemap, feed and robots.txt parsing (pure functions)."""

from __future__ import annotations

import gzip

import pytest

from crawler.discovery import DecompressionError, maybe_gunzip, parse_listing, sitemaps_from_robots

BASE = "https://news.example.com/sitemap.xml"


def test_sitemap_index() -> None:
    body = b"""<?xml version="1.0" encoding="UTF-8"?>
<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>https://news.example.com/sitemaps/news.xml</loc><lastmod>2025-03-01T12:00:00Z</lastmod></sitemap>
<sitemap><loc>/sitemaps/articles-2025-02.xml</loc></sitemap>
</sitemapindex>"""
    listing = parse_listing(body, BASE)
    assert listing.kind == "sitemapindex" and listing.error is None
    assert [e.loc for e in listing.entries] == ["https://news.example.com/sitemaps/news.xml",
                                                "https://news.example.com/sitemaps/articles-2025-02.xml"]
    assert listing.entries[0].lastmod == "2025-03-01T12:00:00Z"


def test_news_sitemap_fields() -> None:
    body = """<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">
<url><loc>https://news.example.com/world/2025/03/01/talks-resume/</loc><news:news>
<news:publication><news:name>Example</news:name><news:language>en</news:language></news:publication>
<news:publication_date>2025-03-01T09:00:00-05:00</news:publication_date>
<news:title>Talks resume – in Zürich</news:title>
</news:news></url></urlset>""".encode()
    listing = parse_listing(body, BASE)
    assert listing.kind == "urlset"
    (entry,) = listing.entries
    assert entry.news_title == "Talks resume – in Zürich"
    assert entry.news_publication_date == "2025-03-01T09:00:00-05:00"


def test_rss_and_atom_links() -> None:
    rss = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>
<item><title>a</title><link>https://news.example.com/a/?utm_source=rss</link></item>
<item><title>b</title><guid>https://news.example.com/b/</guid></item>
<item><title>no link</title></item></channel></rss>"""
    assert [e.loc for e in parse_listing(rss, BASE).entries] == [
        "https://news.example.com/a/?utm_source=rss", "https://news.example.com/b/"]
    atom = b"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<entry><title>a</title><link rel="self" href="/feed/a"/><link href="/world/a/"/></entry></feed>"""
    listing = parse_listing(atom, BASE)
    assert listing.kind == "atom"
    assert [e.loc for e in listing.entries] == ["https://news.example.com/world/a/"]


def test_feed_item_publication_times() -> None:
    """A feed's item dates reach the spider as hints: RSS pubDate, RDF dc:date, Atom published."""
    rss = b"""<?xml version="1.0"?><rss version="2.0"><channel><title>x</title>
<item><link>https://news.example.com/a/</link><pubDate>Thu, 20 Feb 2025 19:29:55 +0000</pubDate></item>
<item><link>https://news.example.com/b/</link></item></channel></rss>"""
    assert [e.published for e in parse_listing(rss, BASE).entries] == ["Thu, 20 Feb 2025 19:29:55 +0000", None]
    rdf = b"""<?xml version="1.0"?><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"
 xmlns="http://purl.org/rss/1.0/" xmlns:dc="http://purl.org/dc/elements/1.1/">
<item rdf:about="https://news.example.com/c/"><link>https://news.example.com/c/</link>
<dc:date>2025-02-20T19:29:55Z</dc:date></item></rdf:RDF>"""
    assert [e.published for e in parse_listing(rdf, BASE).entries] == ["2025-02-20T19:29:55Z"]
    atom = b"""<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom"><title>t</title>
<entry><link href="/world/a/"/><updated>2025-02-21T08:00:00Z</updated>
<published>2025-02-20T19:29:55Z</published></entry></feed>"""
    entries = parse_listing(atom, BASE).entries
    assert [(e.loc, e.published) for e in entries] == [("https://news.example.com/world/a/", "2025-02-20T19:29:55Z")]


def test_malformed_sitemap_keeps_urls_before_the_error() -> None:
    body = (b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            b"<url><loc>https://news.example.com/1/</loc></url>"
            b"<url><loc>https://news.example.com/2/</loc></url>"
            b"<url><loc>https://news.example.com/3/</loc><broken></url></urlset>")
    listing = parse_listing(body, BASE)
    assert listing.error is not None and "XML error" in listing.error
    assert [e.loc for e in listing.entries] == ["https://news.example.com/1/", "https://news.example.com/2/"]


def test_entity_expansion_is_refused() -> None:
    body = b"""<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"><url><loc>https://news.example.com/&lol2;</loc></url></urlset>"""
    listing = parse_listing(body, BASE)
    assert all("lollol" not in e.loc for e in listing.entries)


def test_html_is_not_a_listing() -> None:
    listing = parse_listing(b"<html><body>oops</body></html>", BASE)
    assert listing.kind == "unknown" and listing.error and "root element <html>" in listing.error


def test_gzip_sitemap_and_gzip_bomb() -> None:
    plain = b"<urlset/>"
    assert maybe_gunzip(gzip.compress(plain)) == plain
    assert maybe_gunzip(plain) == plain
    with pytest.raises(DecompressionError, match="expands beyond"):
        maybe_gunzip(gzip.compress(b"\0" * 2_000_000), max_bytes=1_000_000)
    with pytest.raises(DecompressionError, match="corrupt"):
        maybe_gunzip(b"\x1f\x8b" + b"garbage" * 10)


def test_multi_member_gzip_and_a_two_gib_bomb() -> None:
    members = gzip.compress(b"<urlset>") + gzip.compress(b"</urlset>")
    assert maybe_gunzip(members) == b"<urlset></urlset>"
    member = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=1)
    bomb = member * 32  # 2 GiB once decompressed, about 2 MB on the wire
    with pytest.raises(DecompressionError, match="expands beyond"):
        maybe_gunzip(bomb)
    with pytest.raises(DecompressionError, match="truncated"):
        maybe_gunzip(gzip.compress(b"<urlset>" * 1000)[:-20])


def test_robots_sitemap_lines() -> None:
    robots = b"User-agent: *\nDisallow: /private/\nSitemap: https://news.example.com/sitemap.xml\nsitemap: /news.xml\n"
    assert sitemaps_from_robots(robots, "https://news.example.com/robots.txt") == [
        "https://news.example.com/sitemap.xml", "https://news.example.com/news.xml"]
