"""Publication times a listing gives after the article was extracted still reach its row (issue #3).

A page that prints its publication time only to the minute gets the seconds from a listing that
names it (a section page's teaser ``<time datetime>``, a feed, a news sitemap). When that listing
is parsed after the page went to extraction (a deep section page: its pagination is fetched one
page at a time while the sitemap-listed articles are fetched in parallel), the spider sends the
time as a late hint; the store stage applies it to the article in flight or, once stored, to its
row. Only the same rule as for hints that arrive in time: a minute-precision date in the hint's
very minute, or no date at all.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from crawling import crawl, wait_for_rows
from loopback import QuietHandler, serve
from scrapy.utils.test import get_crawler
from sqlalchemy import select

from crawler.demo.run import write_sources_file
from crawler.extract.dates import late_hint_refines
from crawler.items import ArticleItem
from pipelines.store import StorePipeline
from storage.db import create_db_engine, session_factory
from storage.models import Article
from storage.repository import open_repository

BODY = " ".join(f"Paragraph {i}: the harbour authority approved the new ferry timetable after a long "
                "consultation with residents of the outer islands." for i in range(8))

# path -> (headline, what the page prints or declares, the late teaser's time, what must be stored)
ARTICLES = {
    "/news/ferry-timetable/": ("Ferry timetable approved", "2025-03-12T14:05:00Z", "2025-03-12T14:05:37Z",
                               datetime(2025, 3, 12, 14, 5, 37, tzinfo=UTC)),
    "/news/other-minute/": ("Harbour fees unchanged", "2025-03-12T15:11:00Z", "2025-03-12T15:10:12Z",
                            datetime(2025, 3, 12, 15, 11, tzinfo=UTC)),  # another minute: the page wins
    "/news/to-the-second/": ("Island school reopens", "2025-03-12T16:20:05Z", "2025-03-12T16:20:44Z",
                             datetime(2025, 3, 12, 16, 20, 5, tzinfo=UTC)),  # the page has its seconds
}


def _article(title: str, published: str) -> bytes:
    return (f"<html><head><title>{title}</title>"
            f'<meta property="article:published_time" content="{published}"></head>'
            f"<body><article><h1>{title}</h1><p>By Ana Lima</p>"
            + "".join(f"<p>{p}.</p>" for p in BODY.split(". "))
            + "</article></body></html>").encode()


class Islands(QuietHandler):
    """A feed listing three articles without dates, and a section whose second page (the only one with
    teaser times) is answered once all three rows are in the database: the times come late, always."""

    protocol_version = "HTTP/1.1"
    db_url: ClassVar[str] = ""
    log: ClassVar[list[str]] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        host = f"http://{self.headers['Host']}"
        with self.lock:
            self.log.append(self.path)
        if path == "/robots.txt":
            return self.reply(200, b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})
        if path == "/rss.xml":
            items = "".join(f"<item><title>{a[0]}</title><link>{host}{p}</link></item>" for p, a in ARTICLES.items())
            return self.reply(200, f'<?xml version="1.0"?><rss version="2.0"><channel><title>Islands</title>'
                                   f"{items}</channel></rss>".encode(), {"Content-Type": "application/rss+xml"})
        if path == "/section/" and "page=2" not in self.path:
            return self.reply(200, b'<html><body><h1>News</h1><a rel="next" href="/section/?page=2">More</a>'
                                   b"</body></html>")
        if path == "/section/":
            wait_for_rows(self.db_url, select(Article.id), len(ARTICLES))
            teasers = "".join(f'<article><h2><a href="{p}">{a[0]}</a></h2><time datetime="{a[2]}">12 March</time>'
                              "</article>" for p, a in ARTICLES.items())
            return self.reply(200, f"<html><body><h1>News, page 2</h1>{teasers}</body></html>".encode())
        if path in ARTICLES:
            title, published, _late, _want = ARTICLES[path]
            return self.reply(200, _article(title, published))
        return self.reply(404, b"not found", {"Content-Type": "text/plain"})


@pytest.fixture
def islands(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Path]]:
    Islands.log.clear()
    Islands.db_url = db_url
    with serve(Islands) as base:
        sources = write_sources_file(tmp_path / "sources.toml", {"islands": {
            "site_name": "Island Post", "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
            "feeds": [f"{base}/rss.xml"], "start_urls": [f"{base}/section/"], "follow_depth": 1}})
        yield base, sources


def test_a_teaser_time_parsed_after_the_article_was_stored_refines_its_row(islands: tuple[str, Path],
                                                                           db_url: str) -> None:
    base, sources = islands
    run = crawl("islands", sources, db_url, "NEWSINGEST_STORE_FLUSH_SECONDS=0.2")
    assert "/section/?page=2" in Islands.log
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        stored = {a.url.removeprefix(base): a.published_at for a in session.scalars(select(Article))}
    engine.dispose()
    assert stored == {path: want for path, (_t, _p, _late, want) in ARTICLES.items()}
    assert run.stats["newsingest/dates/late_hints"] == 3
    assert run.stats["newsingest/dates/late_refined"] == 1


def test_late_hints_refine_stored_rows_only_within_the_minute(db_url: str) -> None:
    """The repository's half: rows found through ``article_urls``; NULL and same-minute dates refined."""
    repo = open_repository(db_url)
    repo.ensure_source("islands")
    from pipelines.dedupe import content_hash

    def record(path: str, published: datetime | None) -> dict[str, object]:
        body = f"{BODY} {path}"
        return {"source": "islands", "canonical_url": f"https://islands.example{path}",
                "url": f"https://islands.example{path}?utm_source=feed", "content_hash": content_hash(body),
                "title": path, "subtitle": None, "body": body, "authors": [], "published_at": published,
                "modified_at": None, "language": "en", "section": None, "tags": [], "image_url": None,
                "site_name": None, "etag": None, "last_modified": None}

    minute = datetime(2025, 3, 12, 14, 5, tzinfo=UTC)
    repo.upsert_articles([record("/a/", minute), record("/b/", None), record("/c/", minute),
                          record("/d/", minute.replace(second=9))])
    hint = minute.replace(second=37)
    result = repo.upsert_articles([
        {"published_hint": True, "url": "https://islands.example/a/?utm_source=feed", "published_at": hint},
        {"published_hint": True, "url": "https://islands.example/b/?utm_source=feed", "published_at": hint},
        {"published_hint": True, "url": "https://islands.example/c/?utm_source=feed",
         "published_at": hint.replace(minute=6)},
        {"published_hint": True, "url": "https://islands.example/d/?utm_source=feed", "published_at": hint},
        {"published_hint": True, "url": "https://islands.example/never-stored/", "published_at": hint},
    ])
    assert result.published_refined == 2
    with repo.sessions() as session:
        got = {a.canonical_url.rsplit("/", 2)[-2]: a.published_at for a in session.scalars(select(Article))}
    assert got == {"a": hint, "b": hint, "c": minute, "d": minute.replace(second=9)}
    repo.engine.dispose()


@pytest.mark.parametrize(("published", "hint", "refines"), [
    (datetime(2025, 3, 12, 14, 5, tzinfo=UTC), datetime(2025, 3, 12, 14, 5, 37, tzinfo=UTC), True),
    (None, datetime(2025, 3, 12, 14, 5, 37, tzinfo=UTC), True),
    (datetime(2025, 3, 12, 14, 5, tzinfo=UTC), datetime(2025, 3, 12, 14, 6, 1, tzinfo=UTC), False),
    (datetime(2025, 3, 12, 14, 5, 2, tzinfo=UTC), datetime(2025, 3, 12, 14, 5, 37, tzinfo=UTC), False),
    (datetime(2025, 3, 12, 14, 5, tzinfo=UTC), datetime(2025, 3, 12, 14, 5, tzinfo=UTC), False),
    (datetime(2025, 3, 12, 14, 5, tzinfo=UTC), datetime(2025, 3, 12, 14, 5, 37), False),  # naive: no instant
])
def test_late_hint_rule(published: datetime | None, hint: datetime, refines: bool) -> None:
    assert late_hint_refines(published, hint) is refines


def test_a_late_hint_that_comes_before_its_item_refines_the_item() -> None:
    """The store stage's other half: the article was still in extraction when the hint came."""
    crawler = get_crawler(settings_dict={"NEWSINGEST_STORE_BATCH_SIZE": 1000})
    pipeline = StorePipeline.from_crawler(crawler)
    crawler.stats.open_spider()
    pipeline.late_published_hint(url="https://islands.example/a/", published_at="2025-03-12T14:05:37Z")
    item = ArticleItem(source="islands", url="https://islands.example/a/", canonical_url="https://islands.example/a/",
                       title="A", body=BODY, published_at=datetime(2025, 3, 12, 14, 5, tzinfo=UTC),
                       content_hash="x")
    asyncio.run(pipeline.process_item(item))  # no batch is due: nothing waits on the reactor
    hint_record, record = pipeline.buffer
    assert hint_record["published_hint"] and record["url"] == item.url
    assert record["published_at"] == datetime(2025, 3, 12, 14, 5, 37, tzinfo=UTC)
    assert crawler.stats.get_value("newsingest/dates/late_refined") == 1
    assert not pipeline.late_hints  # used once
