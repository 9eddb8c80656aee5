"""XXE in sitemaps and feeds: no entity is fetched, read or expanded, and the refusal is counted.

Variants: a general external entity pointing at a canary HTTP server, one
pointing at `file:///etc/passwd` (and at a file holding a random token, which
is easier to look for), parameter entities (HTTP and file), an external DTD
and billion laughs. The canary must get no request; neither the token nor
/etc/passwd may appear in a stored row, the crawl's log or any requested URL;
each refused document is counted as `newsingest/{sitemap,feed}/invalid`. A
clean sitemap on the same site still delivers its article.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from loopback import QuietHandler, serve

from crawler.demo.run import write_sources_file
from crawler.discovery import parse_listing

ROOT = Path(__file__).resolve().parents[1]
NS = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
PASSWD_MARK = "root:x:0:0"  # the first line of /etc/passwd on any Linux machine
PARAGRAPHS = [f"Paragraph {i}: the county archive reopened after two years of repairs, and the first visitors "
              "queued from early morning to see the restored maps and the letters of the harbour masters."
              for i in range(1, 6)]
ARTICLE = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Archive reopens | Gazette</title>'
           '<meta property="og:type" content="article">'
           '<meta property="article:published_time" content="2025-03-01T10:00:00+00:00"></head><body>'
           "<article><h1>Archive reopens</h1>" + "".join(f"<p>{p}</p>" for p in PARAGRAPHS)
           + "</article></body></html>").encode()


class Canary(QuietHandler):
    """Any request here means an entity or DTD was fetched."""

    hits: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        self.reply(200, b'<!ENTITY leak "LEAKED-BY-DTD">', {"Content-Type": "application/xml-dtd"})


@pytest.fixture
def canary() -> Iterator[str]:
    Canary.hits = Counter()
    with serve(Canary) as url:
        yield url


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    token = f"SECRET-{secrets.token_hex(8)}"
    path = tmp_path / "secret.txt"
    path.write_text(f'{token}\n<!ENTITY leak "{token}">\n', encoding="utf-8")
    return path, token


def hostile_documents(canary: str, secret: Path) -> dict[str, bytes]:
    """Sitemaps and feeds that would fetch, read or expand something if the parser let them."""
    def urlset(doctype: str, loc: str = "https://news.example.com/&e;") -> bytes:
        return (f'<?xml version="1.0"?>{doctype}<urlset {NS}><url><loc>{loc}</loc></url>'
                f"<url><loc>https://news.example.com/after/</loc></url></urlset>").encode()

    return {
        "entity-http": urlset(f'<!DOCTYPE urlset [<!ENTITY e SYSTEM "{canary}/canary/entity">]>'),
        "entity-passwd": urlset('<!DOCTYPE urlset [<!ENTITY e SYSTEM "file:///etc/passwd">]>'),
        "entity-file": urlset(f'<!DOCTYPE urlset [<!ENTITY e SYSTEM "file://{secret}">]>'),
        "parameter-http": urlset(f'<!DOCTYPE urlset [<!ENTITY % p SYSTEM "{canary}/canary/parameter"> %p;]>',
                                 "https://news.example.com/&leak;"),
        "parameter-file": urlset(f'<!DOCTYPE urlset [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>',
                                 "https://news.example.com/&leak;"),
        "external-dtd": urlset(f'<!DOCTYPE urlset SYSTEM "{canary}/canary/dtd">',
                               "https://news.example.com/&leak;"),
        "billion-laughs": urlset('<!DOCTYPE urlset [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">'
                                 '<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;">]>',
                                 "https://news.example.com/&d;"),
        "rss-entity-passwd": (b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                              b'<rss version="2.0"><channel><item><link>https://news.example.com/&e;</link></item>'
                              b"</channel></rss>"),
    }


def test_parser_fetches_reads_and_expands_nothing(canary: str, secret_file: tuple[Path, str]) -> None:
    secret, token = secret_file
    for name, body in hostile_documents(canary, secret).items():
        listing = parse_listing(body, "https://news.example.com/sitemap.xml")
        assert listing.error, name  # refused, and said so: the spider counts and logs it
        assert "entity" in listing.error, (name, listing.error)
        for entry in listing.entries:  # nothing mangled: "https://news.example.com/&e;" is not the home page
            assert entry.loc != "https://news.example.com/", name
            assert token not in entry.loc and PASSWD_MARK not in entry.loc and "LEAK" not in entry.loc
    assert sum(Canary.hits.values()) == 0, Canary.hits


def test_an_rss_091_doctype_without_entities_still_parses() -> None:
    body = (b'<?xml version="1.0"?><!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
            b'"http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss version="0.91"><channel>'
            b"<item><link>https://news.example.com/a/</link></item></channel></rss>")
    listing = parse_listing(body, "https://news.example.com/rss.xml")
    assert listing.error is None and [e.loc for e in listing.entries] == ["https://news.example.com/a/"]


class Site(QuietHandler):
    """A loopback news site whose sitemaps and feed are hostile, plus one clean sitemap."""

    protocol_version = "HTTP/1.1"
    documents: ClassVar[dict[str, bytes]] = {}
    requested: ClassVar[list[str]] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.requested.append(self.path)
        name = self.path.strip("/").removesuffix(".xml")
        if self.path == "/robots.txt":
            status, body, kind = 200, b"User-agent: *\nAllow: /\n", "text/plain"
        elif self.path == "/clean.xml":
            status, kind = 200, "application/xml"
            body = f'<?xml version="1.0"?><urlset {NS}><url><loc>/news/archive/</loc></url></urlset>'.encode()
        elif name in self.documents:
            status, body, kind = 200, self.documents[name], "application/xml"
        elif self.path == "/news/archive/":
            status, body, kind = 200, ARTICLE, "text/html; charset=utf-8"
        else:
            status, body, kind = 404, b"not found", "text/plain"
        self.reply(status, body, {"Content-Type": kind})


def test_crawl_of_xxe_sitemaps_and_feeds(canary: str, secret_file: tuple[Path, str], tmp_path: Path) -> None:
    secret, token = secret_file
    documents = hostile_documents(canary, secret)
    Site.documents, Site.requested = documents, []
    with serve(Site) as base:
        feeds = [f"{base}/{name}.xml" for name in documents if name.startswith("rss-")]
        sitemaps = [f"{base}/{name}.xml" for name in documents if not name.startswith("rss-")]
        sources = write_sources_file(tmp_path / "sources.toml", {"xxe": {
            "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,  # the canary is reachable
            "feeds": feeds, "sitemaps": [*sitemaps, f"{base}/clean.xml"], "follow_depth": 0}})
        db = tmp_path / "news.db"
        result = subprocess.run(
            [sys.executable, "-m", "crawler.cli", "crawl", "xxe", "--sources", str(sources), "--db", f"sqlite:///{db}",
             "-s", "AUTOTHROTTLE_ENABLED=False"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sum(Canary.hits.values()) == 0, Canary.hits
    # only the documents themselves, robots.txt and the clean sitemap's article were requested
    expected = {"/robots.txt", "/clean.xml", "/news/archive/", *(f"/{name}.xml" for name in documents)}
    assert set(Site.requested) == expected, sorted(set(Site.requested) ^ expected)
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
        (stats_json,) = conn.execute("SELECT stats FROM crawl_runs").fetchone()
        titles = [row[0] for row in conn.execute("SELECT title FROM articles")]
    assert titles == ["Archive reopens"]
    for leaked in (token, PASSWD_MARK, "LEAKED", "lollol"):
        assert leaked not in dump and leaked not in result.stderr, leaked
    stats = json.loads(stats_json) if isinstance(stats_json, str) else stats_json
    assert stats.get("newsingest/sitemap/invalid") == len(sitemaps)
    assert stats.get("newsingest/feed/invalid") == len(feeds)
    assert result.stderr.count("entity declarations are refused") + result.stderr.count(
        "unresolved entity reference") == len(documents)
