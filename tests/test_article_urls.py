"""A recrawl does not extract a stored article's copies again: ``article_urls`` on SQLite and PostgreSQL.

A syndicated, AMP or print copy that declares another URL canonical is stored under the canonical
page's row (or dropped by the dedupe stage when the canonical page came first in the run), so
neither ``articles.canonical_url`` nor ``articles.url`` names it. Its own row in ``article_urls``
(URL, article, that page's validators) lets the next crawl skip it before the request, or ask for
it conditionally and take a 304, as for the canonical page itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from hashlib import sha256
from pathlib import Path
from typing import Any, ClassVar

import pytest
from crawling import crawl
from loopback import QuietHandler, serve
from sqlalchemy import select

from crawler.demo.run import write_sources_file
from crawler.urls import canonicalize_url, fetched_url_key
from storage.db import create_db_engine, session_factory
from storage.models import Article, ArticleUrl, CrawlRun
from storage.repository import Repository, open_repository

PUBLISHED = (datetime.now(UTC) - timedelta(hours=2)).replace(microsecond=0)  # inside the 3-day window


def _text(topic: str, edited: bool = False) -> list[str]:
    words = "reportedly " if edited else ""
    return [f"Paragraph {i} on the {topic}: the council {words}met on Monday and agreed a plan that residents had "
            "asked for since the spring, after a long debate about costs, timing and who would pay for it."
            for i in range(1, 6)]


def _page(title: str, paragraphs: list[str], canonical: str) -> bytes:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Loopback Courier</title>'
        f'<link rel="canonical" href="{canonical}"><meta property="og:type" content="article">'
        f'<meta property="article:published_time" content="{PUBLISHED.isoformat()}"></head><body>'
        f'<article><h1>{title}</h1><p class="byline">By Ana Lima</p>'
        + "".join(f"<p>{p}</p>" for p in paragraphs) + "</article></body></html>"
    ).encode()


# path -> (page, seconds the server waits before a full answer: orders the pages within the first crawl)
PAGES: dict[str, tuple[bytes, float]] = {
    # pair A: the canonical page first, its copy later (the dedupe stage drops the copy in the run)
    "/news/bridge-a/": (_page("Bridge plan agreed", _text("bridge"), "/news/bridge-a/"), 0.0),
    "/partner/bridge-a-copy/": (_page("Partner: bridge plan agreed", _text("bridge", True), "/news/bridge-a/"), 1.5),
    # pair B: the copy first (stored as a stand-in, then replaced by the canonical page's own text)
    "/news/harbour-b/": (_page("Harbour plan agreed", _text("harbour"), "/news/harbour-b/"), 1.5),
    "/partner/harbour-b-copy/": (_page("Partner: harbour plan", _text("harbour", True), "/news/harbour-b/"), 0.0),
    # another spelling of a page (index.html), fetched as a page of its own and dropped in the run
    "/news/library-c/": (_page("Library plan agreed", _text("library"), "/news/library-c/"), 0.0),
    "/news/library-c/index.html": (_page("Library plan agreed", _text("library"), "/news/library-c/"), 1.5),
}
COPIES = ["/partner/bridge-a-copy/", "/partner/harbour-b-copy/", "/news/library-c/index.html"]


class Site(QuietHandler):
    """An RSS feed of the six pages; ETag / Last-Modified and 304s; every article request logged."""

    protocol_version = "HTTP/1.1"
    log: ClassVar[list[tuple[str, int]]] = []  # (path, status) of every article page request
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/robots.txt":
            return self.reply(200, b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})
        if path == "/rss.xml":
            host = self.headers["Host"]
            items = "".join(f"<item><title>{p}</title><link>http://{host}{p}</link></item>" for p in PAGES)
            return self.reply(200, f'<?xml version="1.0"?><rss version="2.0"><channel><title>Courier</title>'
                                   f"{items}</channel></rss>".encode(), {"Content-Type": "application/rss+xml"})
        if path not in PAGES:
            return self.reply(404, b"not found")
        body, delay = PAGES[path]
        etag = f'"{sha256(body).hexdigest()[:16]}"'
        headers = {"ETag": etag, "Last-Modified": formatdate(PUBLISHED.timestamp(), usegmt=True)}
        status = 304 if self.headers.get("If-None-Match") == etag else 200
        if status == 200:
            time.sleep(delay)
        with self.lock:
            self.log.append((path, status))
        self.reply(status, body, headers)


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    Site.log.clear()
    with serve(Site) as base:
        sources = write_sources_file(tmp_path / "sources.toml", {"courier": {
            "site_name": "Loopback Courier", "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
            "feeds": [f"{base}/rss.xml"]}})
        yield base, sources


def crawl_courier(sources: Path, db_url: str, *settings: str) -> CrawlRun:
    return crawl("courier", sources, db_url, *settings)


def url_rows(db_url: str) -> dict[str, tuple[str, str | None, datetime]]:
    """article_urls: URL -> (its article's canonical URL, ETag, last_seen_at)."""
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        rows = {url: (canonical, etag, seen) for url, canonical, etag, seen in session.execute(
            select(ArticleUrl.url, Article.canonical_url, ArticleUrl.http_etag, ArticleUrl.last_seen_at)
            .join(Article, Article.id == ArticleUrl.article_id))}
    engine.dispose()
    return rows


def test_a_recrawl_extracts_no_copy_of_a_stored_article_again(site: tuple[str, Path], db_url: str) -> None:
    base, sources = site
    first = crawl_courier(sources, db_url)
    assert sorted(path for path, _ in Site.log) == sorted(PAGES), "every page fetched once"
    assert first.items_stored == 3 and first.stats.get("newsingest/duplicates/url") == 2
    assert first.stats.get("newsingest/stored/replaced") == 1  # pair B's stand-in gave way
    assert first.stats.get("newsingest/stored/url_links") == 2  # the two pages dropped in the run
    canonical = {path: canonicalize_url(base + PAGES[path][0].split(b'canonical" href="')[1].split(b'"')[0]
                                        .decode()) for path in PAGES}
    rows = url_rows(db_url)
    assert {url: row[0] for url, row in rows.items()} == {
        canonicalize_url(base + path): canonical[path] for path in PAGES}
    copy_key = canonicalize_url(base + "/partner/bridge-a-copy/")
    assert rows[copy_key][1] == f'"{sha256(PAGES["/partner/bridge-a-copy/"][0]).hexdigest()[:16]}"', \
        "a copy's row has the copy's own validators"

    # young articles: asked conditionally, copies included; every answer is a 304, nothing is extracted
    Site.log.clear()
    second = crawl_courier(sources, db_url)
    assert sorted(Site.log) == sorted((path, 304) for path in PAGES)
    stats = second.stats
    assert stats["newsingest/not_modified"] == len(PAGES)
    for key in ("newsingest/pages/article", "newsingest/stored/unchanged", "newsingest/duplicates/url",
                "newsingest/stored/url_links"):
        assert not stats.get(key), key
    after = url_rows(db_url)
    assert all(after[url][2] > rows[url][2] for url in rows), "a 304 moves last_seen_at of the page's URL row"

    # outside the recrawl window: no page of a stored article is requested, copies included
    Site.log.clear()
    third = crawl_courier(sources, db_url, "NEWSINGEST_RECRAWL_WINDOW_DAYS=0")
    assert Site.log == []
    assert third.stats["newsingest/skipped/seen"] == len(PAGES)


# -- the repository ------------------------------------------------------------------------------


def rec(url: str, canonical: str, body: str, etag: str, **extra: Any) -> dict[str, Any]:
    return {"source": "demo", "canonical_url": canonical, "url": url, "content_hash": sha256(body.encode()).hexdigest(),
            "title": "A headline", "subtitle": None, "body": body, "authors": [], "published_at": PUBLISHED,
            "modified_at": None, "language": "en", "section": None, "tags": [], "image_url": None,
            "site_name": None, "etag": etag, "last_modified": None, **extra}


@pytest.mark.parametrize("batch_writes", [True, False], ids=["set-path", "row-path"])
def test_every_page_stored_or_linked_gets_its_url_row(db_url: str, batch_writes: bool) -> None:
    repo = Repository(open_repository(db_url).engine, batch_writes=batch_writes)
    repo.ensure_source("demo", "Demo")
    own = "https://example.com/news/a/"
    body = " ".join(["The council met on Monday and agreed the plan."] * 20)
    result = repo.upsert_articles([
        rec(own + "index.html?utm_source=rss", own, body, '"own"'),
        rec("https://example.com/news/b/", "https://example.com/news/b/", "Another story " * 30, '"b"'),
        {"url_only": True, "url": "https://example.com/amp/news/a/", "canonical_url": own, "etag": '"amp"'},
        {"url_only": True, "url": "https://example.com/orphan/", "canonical_url": "https://example.com/none/",
         "etag": '"x"'},  # its canonical URL has no row: not recorded
    ])
    assert (result.inserted, result.linked_urls) == (2, 1)
    # a copy that declares the page canonical, and a url_only link to a row stored by an earlier batch
    result = repo.upsert_articles([
        rec("https://partner.example.com/copy/", own, body + " Edited.", '"copy"'),
        rec("https://example.com/news/c/", "https://example.com/news/c/", "A third story " * 30, '"c"'),
        {"url_only": True, "url": "https://example.com/news/a/?print=1", "canonical_url": own, "etag": '"print"'},
    ])
    assert (result.inserted, result.unchanged, result.linked_urls) == (1, 1, 1)
    assert repo.batches_written == ({"set": 2, "rows": 0} if batch_writes else {"set": 0, "rows": 2})

    found = repo.validators_for(["https://partner.example.com/copy/", "https://example.com/amp/news/a/",
                                 "https://example.com/news/a/?print=1", own, "https://example.com/orphan/"])
    assert {url: (seen.canonical_url, seen.etag, seen.fetched_url) for url, seen in found.items()} == {
        "https://partner.example.com/copy/": (own, '"copy"', "https://partner.example.com/copy/"),
        "https://example.com/amp/news/a/": (own, '"amp"', "https://example.com/amp/news/a/"),
        "https://example.com/news/a/?print=1": (own, '"print"', "https://example.com/news/a/?print=1"),
        own: (own, '"own"', own),
    }
    with repo.sessions() as session:
        article = session.scalar(select(Article).where(Article.canonical_url == own))
        assert article is not None and (article.http_etag, article.body) == ('"own"', body)  # the copy changed nothing

    before = url_rows(db_url)
    assert repo.touch_seen([own], urls=["https://partner.example.com/copy/"]) == 1
    after = url_rows(db_url)
    assert after["https://partner.example.com/copy/"][2] > before["https://partner.example.com/copy/"][2]
    assert after[own][2] == before[own][2]

    # a row deleted takes its URLs with it (ON DELETE CASCADE)
    with repo.sessions.begin() as session:
        session.execute(ArticleUrl.__table__.delete().where(ArticleUrl.article_id != article.id))
        session.execute(Article.__table__.delete().where(Article.id == article.id))
    assert url_rows(db_url) == {}


def test_rows_stored_before_article_urls_are_still_found_by_canonical_and_fetched_url(db_url: str) -> None:
    repo = open_repository(db_url)
    repo.ensure_source("demo", "Demo")
    own = "https://example.com/news/old/"
    stand_in = "https://example.com/news/old-stand-in/"
    repo.upsert_articles([rec(own, own, "An old story " * 30, '"own"'),
                          rec("https://partner.example.com/old-copy/", stand_in, "Another old story " * 30, '"copy"')])
    with repo.sessions.begin() as session:  # as a database upgraded to 0005 holds it: no URL rows yet
        session.execute(ArticleUrl.__table__.delete())
    found = repo.validators_for([own, stand_in, "https://partner.example.com/old-copy/", "https://example.com/other/"])
    # a row holding a copy's stand-in text does not make its canonical URL seen: that page was never fetched
    assert {url: (seen.canonical_url, seen.etag, seen.fetched_url) for url, seen in found.items()} == {
        own: (own, '"own"', None), "https://partner.example.com/old-copy/": (stand_in, '"copy"', None)}
    assert repo.touch_seen([own]) == 1


def test_migration_0005_up_and_down_keeps_the_articles(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import inspect

    from storage.migrate import alembic_config, current_revision, head_revision, upgrade

    repo = open_repository(db_url)  # at head
    repo.ensure_source("demo", "Demo")
    repo.upsert_articles([rec("https://example.com/a/", "https://example.com/a/", "A story " * 40, '"a"')])
    cfg = alembic_config(repo.engine)
    with repo.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0004")
    assert current_revision(repo.engine) == "0004"
    assert "article_urls" not in inspect(repo.engine).get_table_names()
    upgrade(repo.engine)
    assert current_revision(repo.engine) == head_revision()
    assert repo.count_articles() == 1 and url_rows(db_url) == {}


@pytest.mark.parametrize(("url", "key"), [
    ("https://Example.com/news/a/index.html?utm_source=rss#comments", "https://example.com/news/a/"),
    ("https://example.com/news/a/amp/", "https://example.com/news/a/amp/"),  # a rendering keeps its own URL
    ("https://example.com/news/a/?print=1&b=2&a=1", "https://example.com/news/a/?a=1&b=2&print=1"),
    ("mailto:desk@example.com", None),
    ("", None),
])
def test_fetched_url_key(url: str, key: str | None) -> None:
    assert fetched_url_key(url) == key
