"""The pooled extraction path gives exactly what the inline path gives.

Pooled pages are *prepared* in a worker (extract, the validate stage's check, the
clean stage's ``clean_fields``); these tests hold that to the inline path
(``process_page`` → ``ArticleItem`` → ValidatePipeline → CleanPipeline) on every
extraction fixture, through the real pipe protocol of ``python -m
crawler.extract_pool``, and end to end: a crawl with an extraction worker
stores the same rows as a crawl without one.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler
from sqlalchemy import select

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from crawler.extract_pool import (
    ARTICLE,
    PageResult,
    Preparation,
    PreparedArticle,
    RawPage,
    content_hash,
    picklable,
    prepare_page,
    process_page,
)
from crawler.sources import load_source
from crawler.urls import choose_canonical
from pipelines.clean import CleanPipeline
from pipelines.extract import article_item
from pipelines.validate import ValidatePipeline
from storage.db import create_db_engine, session_factory
from storage.frames import frame, read_frame
from storage.models import Article

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "extract"
CASES = sorted(p.name.removesuffix(".json") for p in FIXTURES.glob("*.json"))
FETCHED = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
STUB = b"""<html lang="en"><head><title>Gone | Bench</title><meta property="og:type" content="article">
<script type="application/ld+json">{"@type": "NewsArticle", "headline": "Gone",
"datePublished": "2024-05-01T10:00:00Z", "author": {"name": "A. Writer"}}</script></head>
<body><article><h1>Gone</h1><p class="byline">By A. Writer</p><time datetime="2024-05-01T10:00:00Z">1 May</time>
<p>This article is no longer available.</p></article></body></html>"""


@pytest.fixture
def source(tmp_path: Path):
    path = tmp_path / "sources.toml"
    path.write_text('[sources.bench]\nsite_name = "Bench"\nlanguage = "en"\nstart_urls = ["https://example.com/"]\n'
                    'allowed_domains = ["example.com"]\n', encoding="utf-8")
    return load_source(path, "bench")


def _page(source: Any, name: str) -> RawPage:
    meta = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    body = gzip.decompress((FIXTURES / f"{name}.html.gz").read_bytes())
    return RawPage(source.name, meta["url"], body, "text/html", 200, '"etag"', None, FETCHED)


def _inline(source: Any, page: RawPage, crawler: Any) -> tuple[str, Any]:
    """What the inline path makes of a page: ("article", item fields) or ("dropped", reason) or the outcome."""
    result = process_page(source, page.url, page.body, page.content_type, page.meta.get("hints"))
    if result.outcome != ARTICLE:
        return result.outcome, None
    item = article_item(source, page, result.fields)
    try:
        item = ValidatePipeline.from_crawler(crawler).process_item(item)
    except DropItem as exc:
        return "dropped", str(exc)
    item = CleanPipeline.from_crawler(crawler).process_item(item)
    return "article", dataclasses.asdict(item)


def _prepared(result: PageResult, page: RawPage, crawler: Any) -> tuple[str, Any]:
    if result.outcome != ARTICLE:
        return result.outcome, None
    if result.rejected is not None:
        from pipelines.validate import reject

        return "dropped", str(reject(crawler.stats, page.url, result.rejected))
    item = PreparedArticle(**result.fields)
    # the validate and clean stages pass a prepared item through untouched
    assert ValidatePipeline.from_crawler(crawler).process_item(item) is item
    before = dataclasses.asdict(item)
    assert CleanPipeline.from_crawler(crawler).process_item(item) is item and dataclasses.asdict(item) == before
    fields = dataclasses.asdict(item)
    assert fields.pop("minhash") is None  # Preparation(minhash=False): not computed
    # the worker computed the dedupe stage's canonical URL and content hash (the inline item has neither yet)
    assert fields.pop("content_hash") == content_hash(fields["body"])
    assert fields.pop("canonical_url") == choose_canonical(fields["url"], fields["declared_canonical_url"])
    fields["content_hash"] = fields["canonical_url"] = None
    return "article", fields


def _crawler() -> Any:
    crawler = get_crawler(settings_dict={"NEWSINGEST_MIN_BODY_CHARS": 200})
    crawler.stats.open_spider()
    return crawler


def test_prepared_pages_equal_the_inline_path_on_every_fixture(source) -> None:
    crawler = _crawler()
    prep = Preparation(min_body_chars=200)
    outcomes = set()
    for name in CASES:
        page = _page(source, name)
        want = _inline(source, page, crawler)
        got = _prepared(prepare_page(source, page, prep), page, crawler)
        assert got == want, name
        outcomes.add(want[0])
    stub = RawPage(source.name, "https://example.com/news/gone", STUB, "text/html", 200, None, None, FETCHED)
    assert _inline(source, stub, crawler)[0] == "dropped"
    assert _prepared(prepare_page(source, stub, prep), stub, crawler) == _inline(source, stub, crawler)
    assert "article" in outcomes


def test_the_clean_stage_site_name_setting_reaches_prepared_pages(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text('[sources.nosite]\nstart_urls = ["https://example.com/"]\nallowed_domains = ["example.com"]\n',
                    encoding="utf-8")
    source = load_source(path, "nosite")
    crawler = get_crawler(settings_dict={"NEWSINGEST_SITE_NAME": "Los Angeles Times"})
    crawler.stats.open_spider()
    page = _page(source, "bench-latimes-business")
    want = _inline(source, page, crawler)
    got = _prepared(prepare_page(source, page, Preparation(site_name="Los Angeles Times")), page, crawler)
    assert got == want


def test_worker_process_answers_over_its_pipes(source) -> None:
    """The real `python -m crawler.extract_pool` protocol: init, ready, one answer per page, in order."""
    prep = Preparation(min_body_chars=200, minhash=True)
    pages = [_page(source, name) for name in CASES[:6]]
    pages.append(RawPage(source.name, "https://example.com/broken", b"\x00\xff<html", None, 200))
    proc = subprocess.Popen([sys.executable, "-m", "crawler.extract_pool"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame((picklable(source), 30, prep)))
        for seq, page in enumerate(pages, start=1):
            proc.stdin.write(frame((seq, page)))
        proc.stdin.close()  # the worker answers what it has, then exits
        seq, pid = read_frame(proc.stdout)
        assert seq == 0 and pid == proc.pid
        answers = [read_frame(proc.stdout) for _ in pages]
        assert read_frame(proc.stdout) is None
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert [seq for seq, _ in answers] == list(range(1, len(pages) + 1))
    for (_, result), page in zip(answers, pages, strict=True):
        assert result == prepare_page(source, page, prep), page.url
    assert any(result.fields and len(result.fields["minhash"]) == 480 for _, result in answers)


def _rows(db_url: str) -> dict[str, dict[str, Any]]:
    # ids, times and the near-duplicate links depend on the order pages finish in (concurrent either way);
    # so does `url`, the spelling a page was first fetched under (`/a/` or `/a/index.html`): the rows
    # are keyed on their canonical URL instead
    skip = {"id", "first_seen_at", "last_seen_at", "updated_at", "fetched_at", "last_run_id", "first_run_id",
            "duplicate_of", "similarity", "created_at", "url"}
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        out = {a.canonical_url: {c.key: getattr(a, c.key) for c in Article.__table__.columns if c.key not in skip}
               for a in session.scalars(select(Article))}
    engine.dispose()
    return out


@pytest.mark.slow
def test_a_crawl_with_an_extraction_worker_stores_what_an_inline_crawl_stores(tmp_path: Path) -> None:
    stored = {}
    with serve_demo_site(tmp_path / "site") as (server, _manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        for workers in ("0", "1"):
            db_url = f"sqlite:///{tmp_path / f'news-{workers}.db'}"
            result = subprocess.run(
                [sys.executable, "-m", "crawler.cli", "crawl", "demo", "--sources", str(sources), "--db", db_url,
                 "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "LOG_LEVEL=INFO",
                 "-s", f"NEWSINGEST_EXTRACT_WORKERS={workers}",
                 "-s", "NEWSINGEST_EXTRACT_POOL_MIN_PAGES=0", "-s", "NEWSINGEST_EXTRACT_STEAL=False"],
                cwd=ROOT, capture_output=True, text=True, timeout=180)
            assert result.returncode == 0, result.stderr[-3000:]
            if workers == "1":
                assert "'newsingest/extract/workers_ready': 1" in result.stderr
                assert "newsingest/extract/inline" not in result.stderr
                assert "pool_broken" not in result.stderr
            stored[workers] = _rows(db_url)
    assert stored["0"] and stored["1"].keys() == stored["0"].keys()
    for url, row in stored["0"].items():
        assert {k: v for k, v in stored["1"][url].items() if v != row[k]} == {}, url
