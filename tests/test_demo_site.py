"""The demo site and its server, over real loopback HTTP: the crawl tests trust this ground truth."""

from __future__ import annotations

import gzip
import http.client
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit
from urllib.robotparser import RobotFileParser

import pytest

from crawler.demo import DemoServer, build_site, demo_source_config, serve_demo_site

SM = "{http://www.sitemaps.org/schemas/sitemap/0.9}"
NEWS = "{http://www.google.com/schemas/sitemap-news/0.9}"
ATOM = "{http://www.w3.org/2005/Atom}"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DemoServer, dict[str, Any]]]:
    with serve_demo_site(tmp_path_factory.mktemp("demo")) as served:
        yield served


class Response:
    def __init__(self, status: int, headers: http.client.HTTPMessage, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


def fetch(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> Response:
    """One request, no redirect following (so 301s are visible)."""
    parts = urlsplit(urldefrag(url)[0])
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    try:
        conn.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers or {})
        resp = conn.getresponse()
        return Response(resp.status, resp.headers, resp.read())
    finally:
        conn.close()


class BodyText(HTMLParser):
    """Text of the plain <p>s in the article container: what the manifest calls the body."""

    CONTAINERS = ("article-body", "entry-content")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.depth = 0  # >0 while inside the container div
        self.skip = 0  # >0 inside boxes (aside, classed p/div) within it
        self.current: list[str] | None = None
        self.paragraphs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        cls = dict(attrs).get("class") or ""
        if self.depth:
            if tag == "div":
                self.depth += 1
            if self.skip or tag == "aside" or (tag in ("p", "div") and cls):
                self.skip += 1  # counts every open tag inside a box until the box closes
            elif tag == "p":
                self.current = []
        elif tag == "div" and cls in self.CONTAINERS:
            self.depth = 1

    def handle_endtag(self, tag: str) -> None:
        if not self.depth:
            return
        if self.skip:
            self.skip -= 1
        elif tag == "p" and self.current is not None:
            self.paragraphs.append("".join(self.current))
            self.current = None
        if tag == "div":
            self.depth -= 1

    def handle_data(self, data: str) -> None:
        if self.current is not None and not self.skip:
            self.current.append(data)


def body_of(html: str) -> str:
    parser = BodyText()
    parser.feed(html)
    return "\n\n".join(parser.paragraphs)


def sitemap_locs(url: str, seen: list[str] | None = None) -> list[str]:
    """Every <loc> reachable from a sitemap or sitemap index, following children (gz too)."""
    seen = [] if seen is None else seen
    data = fetch(url).body
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    root = ET.fromstring(data)
    if root.tag == f"{SM}sitemapindex":
        for loc in root.iter(f"{SM}loc"):
            sitemap_locs(loc.text or "", seen)
    else:
        seen.extend(loc.text or "" for loc in root.iter(f"{SM}loc"))
    return seen


def by_kind(manifest: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [a for a in manifest["articles"] if a["kind"] == kind]


# --------------------------------------------------------------------------- manifest and content


def test_manifest_shape(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    assert m["base_url"] == server.base_url and m["site_name"] == "The Demo Courier"
    arts = m["articles"]
    assert 36 <= len(arts) <= 44
    assert len({a["url"] for a in arts}) == len(arts)
    assert {a["metadata_style"] for a in arts} == {"jsonld", "graph", "meta", "visible"}
    assert len({a["section"] for a in arts}) == 4
    assert [a["encoding"] for a in arts].count("windows-1252") == 1
    assert len(by_kind(m, "stub")) == 1 and by_kind(m, "stub")[0]["body"] == ""
    assert [a["authors"] for a in by_kind(m, "article")].count([]) == 1
    assert any(len(a["authors"]) >= 2 for a in arts)
    paragraphs = [p for a in by_kind(m, "article") for p in a["body"].split("\n\n")]
    assert len(paragraphs) == len(set(paragraphs)), "paragraphs must be distinct across articles"
    for a in by_kind(m, "article"):
        paras = a["body"].split("\n\n")
        assert 4 <= len(paras) <= 9, a["url"]
        assert all(30 <= len(p.split()) <= 80 for p in paras), a["url"]
        assert a["published"] and a["published"][-6:] == "-05:00"
        path = urlsplit(a["url"]).path.split("/")
        assert path[2:5] == a["published"][:10].split("-") and path[1] == a["section"]
    assert "See also" not in "".join(a["body"] for a in arts)


def test_every_article_page_carries_its_manifest_body(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    for a in m["articles"]:
        r = fetch(a["url"])
        assert r.status == 200, a["url"]
        html = r.body.decode(a["encoding"])
        assert body_of(html) == a["body"], a["url"]
        if a["kind"] == "stub":
            assert "This article is no longer available." in html


def test_windows_1252_page(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    (a,) = [a for a in m["articles"] if a["encoding"] == "windows-1252"]
    r = fetch(a["url"])
    assert r.headers["Content-Type"] == "text/html; charset=windows-1252"
    assert b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1252">' in r.body
    text = r.body.decode("cp1252")
    assert body_of(text) == a["body"]
    assert all(ch in a["body"] for ch in "éü“”–€")
    assert r.body.decode("latin-1") != text
    with pytest.raises(UnicodeDecodeError):
        r.body.decode("utf-8")


def test_metadata_styles(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    for a in by_kind(m, "article"):
        html = fetch(a["url"]).body.decode(a["encoding"])
        style = a["metadata_style"]
        assert ("application/ld+json" in html) == (style in ("jsonld", "graph")), a["url"]
        assert ('"@graph"' in html) == (style == "graph")
        assert ("article:published_time" in html) == (style == "meta")
        assert ("datetime=" in html) == (style != "visible")
        if style == "visible":
            assert " at " in html and " EST</p>" in html
    (wp,) = [a for a in m["articles"] if a["template"] == "wordpress"]
    html = fetch(wp["url"]).body.decode()
    assert 'class="entry-title"' in html and "See also\u00a0" in html and "<time " in html


def test_syndication_and_canonicals(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    urls = {a["url"] for a in m["articles"]}
    (copy,) = by_kind(m, "syndicated")
    assert copy["duplicate_of"] in urls
    assert copy["section"] != urlsplit(copy["duplicate_of"]).path.split("/")[1]
    original = next(a for a in m["articles"] if a["url"] == copy["duplicate_of"])
    assert copy["body"] == original["body"]
    assert b'rel="canonical"' not in fetch(copy["url"]).body
    ((near, target),) = m["near_copies"].items()
    assert f'<link rel="canonical" href="{target}">'.encode() in fetch(near).body
    assert near in next(a for a in m["articles"] if a["url"] == target)["variant_urls"]
    assert sum(not a["has_canonical"] for a in by_kind(m, "article")) == 1


# --------------------------------------------------------------------------- server behaviour


def test_variant_urls_serve_the_same_page(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    kinds = set()
    for a in m["articles"]:
        page = fetch(a["url"]).body
        for v in a["variant_urls"]:
            r = fetch(v)
            if r.status == 301:
                kinds.add("slashless")
                assert r.headers["Location"] == urlsplit(a["url"]).path
                continue
            assert r.status == 200, v
            if "?" in v or "#" in v or v.endswith("index.html"):
                kinds.add(next(k for k in ("utm_source", "fbclid", "ref=", "#comments", "index.html")
                               if k in v))
                assert r.body == page, v
    assert kinds == {"utm_source", "fbclid", "ref=", "#comments", "index.html", "slashless"}


def test_faults_and_404(demo: tuple[DemoServer, dict[str, Any]], tmp_path: Path) -> None:
    server, m = demo
    assert sorted(m["faults"].values()) == [404, 500]
    for url, status in m["faults"].items():
        r = fetch(url)
        assert r.status == status
        if status == 404:
            assert b"Page not found" in r.body
    with DemoServer(server.root, faults=False) as calm:
        (url,) = [u for u, s in m["faults"].items() if s == 500]
        assert fetch(calm.base_url + urlsplit(url).path).status == 200


def test_conditional_requests_get_304(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    a = next(a for a in by_kind(m, "article") if a["modified"])
    r = fetch(a["url"])
    etag, last_mod = r.headers["ETag"], r.headers["Last-Modified"]
    assert fetch(a["url"], {"If-None-Match": etag}).status == 304
    assert fetch(a["url"], {"If-Modified-Since": last_mod}).status == 304
    assert fetch(a["url"], {"If-None-Match": '"other"'}).status == 200
    assert parsedate_to_datetime(last_mod) == datetime.fromisoformat(a["modified"])  # mtime = dateModified


def test_keep_alive_head_and_hits(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    path = urlsplit(m["articles"][0]["url"]).path
    before = server.hits[path]
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        for q in ("", "?utm_source=x"):
            conn.request("GET", path + q)
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read()
        conn.request("HEAD", path)
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and int(resp.headers["Content-Length"]) > 0
    finally:
        conn.close()
    assert server.hits[path] == before + 3
    assert server.target_hits[path + "?utm_source=x"] >= 1


def test_refuses_non_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DemoServer(tmp_path, host="0.0.0.0")


# --------------------------------------------------------------------------- discovery surfaces


def test_robots_txt(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    r = fetch(server.base_url + "/robots.txt")
    text = r.body.decode()
    assert r.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "Disallow: /private/" in text and f"Sitemap: {server.base_url}/sitemap.xml" in text
    robots = RobotFileParser()
    robots.parse(text.splitlines())
    for url in m["disallowed"]:
        assert not robots.can_fetch("newsingest", url)
        assert fetch(url).status == 200  # an article-looking page: only robots.txt keeps it out
        assert urlsplit(url).path.encode() in fetch(server.base_url + "/").body
    assert all(robots.can_fetch("newsingest", a["url"]) for a in m["articles"])


def test_sitemaps_reach_every_article(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    index = ET.fromstring(fetch(server.base_url + "/sitemap.xml").body)
    assert index.tag == f"{SM}sitemapindex"
    children = [loc.text for loc in index.iter(f"{SM}loc")]
    assert [urlsplit(c or "").path for c in children] == [
        "/sitemaps/news.xml", "/sitemaps/articles.xml", "/sitemaps/pages.xml", "/sitemaps/archive.xml.gz"]
    locs = sitemap_locs(server.base_url + "/sitemap.xml")
    assert {a["url"] for a in m["articles"]} <= set(locs)
    assert not set(m["disallowed"]) & set(locs)
    news = ET.fromstring(fetch(server.base_url + "/sitemaps/news.xml").body)
    assert len(list(news.iter(f"{NEWS}news"))) >= 3
    assert all(u.findtext(f"{SM}lastmod") for u in ET.fromstring(
        fetch(server.base_url + "/sitemaps/articles.xml").body).iter(f"{SM}url"))


def test_gzipped_sitemap_is_a_gzip_file(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    r = fetch(server.base_url + "/sitemaps/archive.xml.gz", {"Accept-Encoding": "gzip"})
    assert r.headers["Content-Type"] == "application/x-gzip" and r.headers["Content-Encoding"] is None
    root = ET.fromstring(gzip.decompress(r.body))
    older = {a["url"] for a in m["articles"] if a["published"] and a["published"] < "2025"}
    assert older and {loc.text for loc in root.iter(f"{SM}loc")} == older


def test_feeds_parse(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    _, m = demo
    rss_url, atom_url = m["entry_points"]["feeds"]
    r = fetch(rss_url)
    assert r.headers["Content-Type"].startswith("application/rss+xml")
    items = ET.fromstring(r.body).findall("./channel/item")
    assert len(items) >= 10
    variants = {v for a in m["articles"] for v in a["variant_urls"]}
    for item in items:
        link = item.findtext("link") or ""
        assert "utm_source=rss" in link and "utm_medium=feed" in link and link in variants
        assert item.findtext("pubDate") and item.findtext("title")
    entries = ET.fromstring(fetch(atom_url).body).findall(f"{ATOM}entry")
    urls = {a["url"] for a in m["articles"]}
    assert entries and all(e.find(f"{ATOM}link").get("href") in urls for e in entries)  # type: ignore[union-attr]


def test_listing_pages_do_not_look_like_articles(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    paths = {urlsplit(u).path for u in m["non_articles"]}
    assert {"/", "/about/", "/world/", "/world/page/2/"} <= paths
    assert any(p.startswith("/tag/") for p in paths) and any(p.startswith("/author/") for p in paths)
    for url in m["non_articles"]:
        r = fetch(url)
        assert r.status == 200, url
        assert b"NewsArticle" not in r.body and b"article:published_time" not in r.body
    home = fetch(server.base_url + "/").body
    assert home.count(b'class="teaser"') >= 15


def test_source_config_matches_entry_points(demo: tuple[DemoServer, dict[str, Any]]) -> None:
    server, m = demo
    cfg = demo_source_config(server.base_url)
    assert cfg["allowed_domains"] == ["127.0.0.1"] and cfg["site_name"] == m["site_name"]
    assert {k: cfg[k] for k in ("feeds", "sitemaps", "start_urls")} == m["entry_points"]


# --------------------------------------------------------------------------- determinism


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_builds_are_byte_identical(tmp_path: Path) -> None:
    one = build_site(tmp_path / "a", "http://127.0.0.1:9999")
    two = build_site(tmp_path / "b", "http://127.0.0.1:9999")
    assert one == two
    a, b = _tree(tmp_path / "a"), _tree(tmp_path / "b")
    assert a == b and len(a) > 80
    assert json.loads(a["manifest.json"]) == one
    mtimes = {p.stat().st_mtime for p in (tmp_path / "a" / "site").rglob("*.html")}
    assert mtimes == {p.stat().st_mtime for p in (tmp_path / "b" / "site").rglob("*.html")}
    other = build_site(tmp_path / "c", "http://127.0.0.1:8888")
    assert other["articles"][0]["url"].startswith("http://127.0.0.1:8888/")
