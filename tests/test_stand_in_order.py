"""One row per story whatever order a copy and its canonical page are met in (issue #5).

A syndicated, AMP or print copy that declares another URL canonical and is stored first stands in
for the canonical page; the canonical page's own text replaces it when it is fetched, and a copy
never overwrites that text. These tests take the copy and the page through every order the crawl can
produce: one batch either way, separate batches either way, both write paths; and through a real
crawl where the canonical page is requested only after the copy's row is committed (a slashless link
whose 301 waits for that row), and a later run that lists the canonical page. The loss they guard
against: the row of a stand-in counted as "the canonical URL was fetched" by the seen check
(`Repository.validators_for`), so the canonical page was skipped and the copy's title and body stayed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import formatdate
from pathlib import Path
from typing import Any, ClassVar

import pytest
from crawling import crawl, wait_for_rows
from loopback import QuietHandler, serve
from scrapy.utils.test import get_crawler
from sqlalchemy import select

from crawler.demo.run import write_sources_file
from crawler.urls import is_own_page
from pipelines.dedupe import DedupePipeline, DuplicateInRun, content_hash
from pipelines.store import to_record
from storage.db import create_db_engine, session_factory
from storage.models import Article, ArticleUrl, ArticleVersion, CrawlRun
from storage.repository import Repository, open_repository

OLD = datetime(2024, 9, 16, 14, 0, tzinfo=UTC)  # far outside the recrawl window: a stored URL is not requested again

CANONICAL = "https://example.com/world/2024/09/16/sanctions-package-a000162/"
COPY = "https://example.com/business/2024/09/17/explainer-sanctions-package-s00005/"
AMP = CANONICAL + "amp/"
OWN_BODY = " ".join(f"Paragraph {i}: the cross-border sanctions package leaves a dozen projects waiting in "
                    "Tallinn, officials said on Monday." for i in range(12))
COPY_BODY = OWN_BODY.replace("leaves a dozen", "still leaves a dozen")
AMP_BODY = OWN_BODY.replace("officials said", "officials told reporters")


def rec(url: str, body: str, title: str, etag: str, canonical: str = CANONICAL) -> dict[str, Any]:
    return {"source": "demo", "canonical_url": canonical, "url": url, "content_hash": content_hash(body),
            "title": title, "subtitle": None, "body": body, "authors": ["Ana Lima"], "published_at": OLD,
            "modified_at": None, "language": "en", "section": "World", "tags": [], "image_url": None,
            "site_name": "Demo", "etag": etag, "last_modified": None}


def own() -> dict[str, Any]:
    return rec(CANONICAL + "?utm_source=rss", OWN_BODY, "Sanctions package leaves projects waiting", '"own"')


def copy() -> dict[str, Any]:
    return rec(COPY, COPY_BODY, "Explainer: Sanctions package still leaves projects waiting", '"copy"')


def amp() -> dict[str, Any]:
    return rec(AMP, AMP_BODY, "Sanctions package (AMP)", '"amp"')


def other(n: int) -> dict[str, Any]:
    url = f"https://example.com/tech/2024/09/{n:02d}/unrelated-story-a00{n:04d}/"
    return rec(url, f"Story {n}: " + " ".join(f"word{n}x{i}" for i in range(80)), f"Story {n}", f'"o{n}"', url)


def row_of(repo: Repository, canonical: str = CANONICAL) -> tuple[Any, ...]:
    """The row's text and where it came from, and its versions."""
    with repo.sessions() as session:
        article = session.scalar(select(Article).where(Article.canonical_url == canonical))
        assert article is not None
        versions = session.scalars(select(ArticleVersion).where(ArticleVersion.article_id == article.id)
                                   .order_by(ArticleVersion.version)).all()
        return (article.url, article.title, article.body, article.http_etag, article.version,
                [(v.version, v.title, v.body) for v in versions])


OWN_ROW = (own()["url"], own()["title"], OWN_BODY, '"own"', 1, [(1, own()["title"], OWN_BODY)])

# Batches as the store stage can send them: the dedupe stage lets the canonical page through after a copy,
# and a second crawler process (or a replayed batch) can bring the copy after the page.
ORDERS: dict[str, list[list[str]]] = {
    "copy-then-own-one-batch": [["copy", "own"]],
    "own-then-copy-one-batch": [["own", "copy"]],
    "copy-batch-then-own-batch": [["copy"], ["own"]],
    "own-batch-then-copy-batch": [["own"], ["copy"]],
    "copy-then-own-batch-with-copy-again": [["copy"], ["copy", "own"]],
    "copy-then-amp-then-own": [["copy"], ["amp"], ["own"]],
    "copy-then-own-then-amp": [["copy"], ["own", "amp"]],
    "own-replayed-with-copy": [["copy", "own"], ["copy", "own"]],
}


@pytest.mark.parametrize("batch_writes", [True, False], ids=["set-path", "row-path"])
@pytest.mark.parametrize("order", list(ORDERS))
def test_the_canonical_pages_own_text_wins_in_every_batch_order(db_url: str, order: str, batch_writes: bool) -> None:
    repo = Repository(open_repository(db_url).engine, batch_writes=batch_writes)
    repo.ensure_source("demo", "Demo")
    make = {"own": own, "copy": copy, "amp": amp}
    for n, batch in enumerate(ORDERS[order]):
        # Neighbours in every batch, so the set-based path takes the batches it can.
        repo.upsert_articles([*(make[name]() for name in batch), other(2 * n + 1), other(2 * n + 2)])
    assert row_of(repo) == OWN_ROW
    found = repo.validators_for([CANONICAL, COPY])
    assert {url: (seen.canonical_url, seen.etag) for url, seen in found.items()} == {
        CANONICAL: (CANONICAL, '"own"'), COPY: (CANONICAL, '"copy"')}


@pytest.mark.parametrize("batch_writes", [True, False], ids=["set-path", "row-path"])
def test_a_stand_in_never_makes_its_canonical_url_seen(db_url: str, batch_writes: bool) -> None:
    """The copy's row is not the canonical page: a recrawl (or a later request in the same crawl) must
    still fetch the canonical URL, and must not send it the copy's validators."""
    repo = Repository(open_repository(db_url).engine, batch_writes=batch_writes)
    repo.ensure_source("demo", "Demo")
    repo.upsert_articles([copy(), other(1)])
    found = repo.validators_for([CANONICAL, COPY])
    assert {url: (seen.canonical_url, seen.etag) for url, seen in found.items()} == {COPY: (CANONICAL, '"copy"')}
    # the same for a row stored before article_urls existed (found through the articles columns)
    with repo.sessions.begin() as session:
        session.execute(ArticleUrl.__table__.delete())
    assert set(repo.validators_for([CANONICAL, COPY])) == {COPY}
    # an AMP rendering asked for later is looked up under the article too: not seen either
    assert set(repo.validators_for([AMP, CANONICAL])) == set()

    result = repo.upsert_articles([own(), other(2)])
    assert result.replaced == 1
    assert row_of(repo) == OWN_ROW
    found = repo.validators_for([CANONICAL])  # the copy's URL row was deleted above: only the page's own is known
    assert {url: (seen.etag, seen.fetched_url) for url, seen in found.items()} == {CANONICAL: ('"own"', CANONICAL)}
    with repo.sessions.begin() as session:  # a row of the page's own text, stored before article_urls: found
        session.execute(ArticleUrl.__table__.delete())
    found = repo.validators_for([CANONICAL])
    assert {url: (seen.etag, seen.fetched_url) for url, seen in found.items()} == {CANONICAL: ('"own"', None)}


@pytest.mark.parametrize("batch_writes", [True, False], ids=["set-path", "row-path"])
def test_versions_hold_only_texts_of_the_canonical_page(db_url: str, batch_writes: bool) -> None:
    """A stand-in that changed (another copy, or the copy edited, before the canonical page came) kept as
    versions would survive the replacement: after it only the page's own texts are versions."""
    repo = Repository(open_repository(db_url).engine, batch_writes=batch_writes)
    repo.ensure_source("demo", "Demo")
    repo.upsert_articles([copy(), other(1)])
    repo.upsert_articles([{**copy(), "body": COPY_BODY + " Corrected.", "content_hash": content_hash(
        COPY_BODY + " Corrected."), "etag": '"copy2"'}, other(2)])
    assert repo.upsert_articles([own(), other(3)]).replaced == 1
    assert row_of(repo) == OWN_ROW
    corrected = OWN_BODY + " Update: corrected."
    assert repo.upsert_articles([{**own(), "body": corrected, "content_hash": content_hash(corrected)},
                                 other(4)]).updated == 1
    assert row_of(repo)[4:] == (2, [(1, own()["title"], OWN_BODY), (2, own()["title"], corrected)])


# The page itself under the spellings a server answers with the same document (no redirect), and pages
# that are not it (a copy, renderings): (fetched URL, is it the canonical page itself?)
SPELLINGS = [
    (CANONICAL, True),
    (CANONICAL + "index.html?utm_source=rss#comments", True),
    (CANONICAL.replace("https://", "http://"), True),  # the site answers on both schemes
    (CANONICAL.replace("https://", "https://www."), True),  # and with a www. label
    (CANONICAL.rstrip("/"), True),  # served without the 301 to the slash
    (CANONICAL.replace("https://", "http://www.").rstrip("/") + "?ref=mostread", True),
    (COPY, False),
    (AMP, False),
    (CANONICAL + "?print=1", False),
    (CANONICAL.replace("https://", "https://m."), False),  # a mobile rendering
    (CANONICAL.replace("https://", "https://amp."), False),
    (CANONICAL + "?page=2", False),  # another page of the article
    (CANONICAL.replace("a000162", "a000163"), False),
    (CANONICAL.replace("example.com", "example.org"), False),
]


@pytest.mark.parametrize(("fetched", "own_page"), SPELLINGS)
def test_is_own_page_spellings(fetched: str, own_page: bool) -> None:
    assert is_own_page(fetched, CANONICAL) is own_page


@pytest.mark.parametrize("spelling", [url for url, own_page in SPELLINGS if own_page and url != CANONICAL])
def test_the_page_itself_under_another_spelling_replaces_the_copy_in_one_run(db_url: str, spelling: str) -> None:
    """Through the dedupe stage: the copy first, then the canonical page fetched under another spelling.
    Taken for another copy, it would be dropped in the run (and its URL recorded, so never fetched again)."""
    repo = open_repository(db_url)
    repo.ensure_source("demo", "Demo")
    dedupe = DedupePipeline(get_crawler())
    batch = []
    for item in ({**copy(), "declared_canonical_url": CANONICAL},
                 {**own(), "url": spelling, "declared_canonical_url": CANONICAL},
                 {**amp(), "declared_canonical_url": CANONICAL}):
        item.pop("canonical_url")
        try:
            batch.append(to_record(dedupe.process_item(item)))
        except DuplicateInRun:
            continue
    assert [r["url"] for r in batch] == [COPY, spelling]
    assert repo.upsert_articles(batch).inserted == 1
    assert row_of(repo)[1:] == OWN_ROW[1:]


# -- through a real crawl ---------------------------------------------------------------------------


def _page(title: str, body: str, canonical: str) -> bytes:
    paragraphs = "".join(f"<p>{p.strip()}.</p>" for p in body.split(".") if p.strip())
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Loopback Herald</title>'
            f'<link rel="canonical" href="{canonical}"><meta property="og:type" content="article">'
            f'<meta property="article:published_time" content="{OLD.isoformat()}"></head><body><article>'
            f'<h1>{title}</h1><p class="byline">By Ana Lima</p>{paragraphs}</article></body></html>').encode()


ORIGINAL_PATH = "/world/2024/09/16/sanctions-package-a000162/"
COPY_PATH = "/business/2024/09/17/explainer-sanctions-package-s00005/"
OWN_TITLE = "Cross-border sanctions package leaves a dozen projects waiting in Tallinn"
COPY_TITLE = "Explainer: Cross-border sanctions still package leaves a dozen projects waiting in Tallinn"


class Herald(QuietHandler):
    """A feed, an original and its syndicated copy (declaring the original canonical). The original is
    linked without its trailing slash; that link's 301 is answered only once the copy's row is in the
    database, so the canonical page is requested after its stand-in was stored: deterministically."""

    protocol_version = "HTTP/1.1"
    feed: ClassVar[list[str]] = []
    db_url: ClassVar[str] = ""
    log: ClassVar[list[str]] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        host = f"http://{self.headers['Host']}"
        with self.lock:
            self.log.append(path)
        if path == "/robots.txt":
            return self.reply(200, b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})
        if path == "/rss.xml":
            items = "".join(f"<item><title>{p}</title><link>{host}{p}</link></item>" for p in self.feed)
            return self.reply(200, f'<?xml version="1.0"?><rss version="2.0"><channel><title>Herald</title>'
                                   f"{items}</channel></rss>".encode(), {"Content-Type": "application/rss+xml"})
        if path == ORIGINAL_PATH.rstrip("/"):
            wait_for_rows(self.db_url, select(Article.id).where(Article.canonical_url == host + ORIGINAL_PATH))
            return self.reply(301, b"", {"Location": host + ORIGINAL_PATH})
        if path == ORIGINAL_PATH:
            return self.reply(200, _page(OWN_TITLE, OWN_BODY, host + ORIGINAL_PATH),
                              {"ETag": '"own"', "Last-Modified": formatdate(OLD.timestamp(), usegmt=True)})
        if path == COPY_PATH:
            return self.reply(200, _page(COPY_TITLE, COPY_BODY, host + ORIGINAL_PATH),
                              {"ETag": '"copy"', "Last-Modified": formatdate(OLD.timestamp(), usegmt=True)})
        return self.reply(404, b"not found", {"Content-Type": "text/plain"})


@pytest.fixture
def herald(tmp_path: Path, db_url: str) -> Iterator[tuple[str, Path]]:
    Herald.log.clear()
    Herald.db_url = db_url
    with serve(Herald) as base:
        sources = write_sources_file(tmp_path / "sources.toml", {"herald": {
            "site_name": "Loopback Herald", "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
            "feeds": [f"{base}/rss.xml"]}})
        yield base, sources


def crawl_herald(sources: Path, db_url: str) -> CrawlRun:
    return crawl("herald", sources, db_url, "NEWSINGEST_STORE_FLUSH_SECONDS=0.2")


def stored(db_url: str) -> dict[str, tuple[str, str, str]]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        rows = {a.canonical_url: (a.url, a.title, a.body) for a in session.scalars(select(Article))}
    engine.dispose()
    return rows


def test_canonical_page_requested_after_its_copy_was_stored_replaces_it(herald: tuple[str, Path],
                                                                        db_url: str) -> None:
    """In one run: the copy is stored, then the original's redirect target is requested (and looked up
    alone by the seen check, as a redirect's target is): it must be fetched and replace the copy's text."""
    base, sources = herald
    Herald.feed[:] = [COPY_PATH, ORIGINAL_PATH.rstrip("/")]
    run = crawl_herald(sources, db_url)
    assert ORIGINAL_PATH in Herald.log, "the canonical page was never requested"
    assert not run.stats.get("newsingest/skipped/seen")
    assert run.stats.get("newsingest/stored/replaced") == 1
    rows = stored(db_url)
    url, title, body = rows[base + ORIGINAL_PATH]
    assert (url, title) == (base + ORIGINAL_PATH, OWN_TITLE)
    assert "still leaves" not in body and body.count("Paragraph") == 12
    assert len(rows) == 1


def test_canonical_page_listed_in_a_later_run_replaces_a_stored_copy(herald: tuple[str, Path], db_url: str) -> None:
    """Across runs: the first run met only the copy; the next one lists the original, published long ago.
    The stand-in does not make it "already stored": it is fetched and takes the copy's place."""
    base, sources = herald
    Herald.feed[:] = [COPY_PATH]
    first = crawl_herald(sources, db_url)
    assert first.items_stored == 1
    assert stored(db_url)[base + ORIGINAL_PATH][1] == COPY_TITLE
    Herald.feed[:] = [COPY_PATH, ORIGINAL_PATH]
    Herald.log.clear()
    second = crawl_herald(sources, db_url)
    assert ORIGINAL_PATH in Herald.log and COPY_PATH not in Herald.log  # the copy is seen; its original is not
    assert second.stats.get("newsingest/skipped/seen") == 1 and second.stats.get("newsingest/stored/replaced") == 1
    assert stored(db_url)[base + ORIGINAL_PATH][:2] == (base + ORIGINAL_PATH, OWN_TITLE)


# -- two writers at once (two crawler processes, or a crawl and a replayed batch) ---------------------


def _story(i: int, own_page: bool) -> dict[str, Any]:
    canonical = f"https://example.com/world/story-{i}/"
    body = OWN_BODY if own_page else COPY_BODY
    url = canonical if own_page else f"https://partner.example/story-{i}/"
    return rec(url, f"Story {i}. {body}", f"Story {i}" if own_page else f"Copy of story {i}",
               '"own"' if own_page else '"copy"', canonical)


def _write_stories(db_url: str, first_own: bool, barrier: Any, queue: Any) -> None:
    repository = open_repository(db_url)
    barrier.wait(timeout=60)
    failed = 0
    for i in range(24):
        own_page = first_own if i % 2 == 0 else not first_own
        filler = other(100 + 2 * i + int(first_own))
        failed += len(repository.upsert_articles([_story(i, own_page), filler]).failed)
    queue.put(failed)


def test_copy_and_canonical_page_written_at_the_same_instant_by_two_writers(db_url: str) -> None:
    import multiprocessing

    repository = open_repository(db_url)
    repository.ensure_source("demo", "Demo")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    workers = [ctx.Process(target=_write_stories, args=(db_url, first_own, barrier, queue))
               for first_own in (True, False)]
    for worker in workers:
        worker.start()
    assert [queue.get(timeout=180) for _ in workers] == [0, 0]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    for i in range(24):
        url, title, _body, etag, version, versions = row_of(repository, f"https://example.com/world/story-{i}/")
        assert (url, title, etag, version, [v[:2] for v in versions]) == (
            f"https://example.com/world/story-{i}/", f"Story {i}", '"own"', 1, [(1, f"Story {i}")]), i
