"""Functional tests of the throughput components: the extraction pool and stage, the writer process.

No timing here: bench/crawl.py measures; these check that the pooled path
gives exactly what the inline path gives.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import pickle
from pathlib import Path

import pytest
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler

from crawler.extract import extract_page
from crawler.extract_pool import (
    ARTICLE,
    NOT_ARTICLE,
    RawPage,
    picklable,
    process_page,
    resolve_workers,
)
from crawler.items import ArticleItem
from crawler.sources import load_source
from pipelines import store
from pipelines.extract import ExtractPipeline
from storage import writer

FIXTURES = Path(__file__).parent / "fixtures" / "extract"
NON_ARTICLE = b"""<html><head><title>Sections - The Herald</title></head>
<body><nav><a href="/world/">World</a> <a href="/tech/">Tech</a></nav><h1>Sections</h1>
<ul><li><a href="/world/1/">One</a></li><li><a href="/world/2/">Two</a></li></ul></body></html>"""


def _fixture(name: str) -> tuple[str, bytes]:
    meta = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
    return meta["url"], gzip.decompress((FIXTURES / f"{name}.html.gz").read_bytes())


@pytest.fixture
def source(tmp_path: Path):
    path = tmp_path / "sources.toml"
    path.write_text('[sources.bench]\nsite_name = "Bench"\nallowed_domains = ["latimes.com", "example.com"]\n'
                    'start_urls = ["https://www.latimes.com/"]\n'
                    '[sources.bench.extraction]\ntitle = "h1"\n',
                    encoding="utf-8")
    return load_source(path, "bench")


def test_process_page_is_the_inline_extraction(source) -> None:
    url, body = _fixture("bench-latimes-business")
    result = process_page(source, url, body, "text/html; charset=utf-8")
    assert result.outcome == ARTICLE
    page = extract_page(body.decode("utf-8"), url, encoding="utf-8", overrides=source.extraction or None)
    assert result.fields == page.fields
    assert process_page(source, "https://example.com/sections/", NON_ARTICLE, "text/html").outcome == NOT_ARTICLE


def test_article_url_pattern_still_decides(tmp_path: Path) -> None:
    path = tmp_path / "sources.toml"
    path.write_text('[sources.s]\nallowed_domains = ["latimes.com"]\nstart_urls = ["https://www.latimes.com/"]\n'
                    "article_url_pattern = '/never-matches/'\n", encoding="utf-8")
    url, body = _fixture("bench-latimes-business")
    assert process_page(load_source(path, "s"), url, body, "text/html").outcome == NOT_ARTICLE


def test_source_and_results_pickle(source) -> None:
    copy = pickle.loads(pickle.dumps(picklable(source)))
    assert copy.name == source.name and dict(copy.extraction) == dict(source.extraction)
    url, body = _fixture("bench-latimes-business")
    result = process_page(source, url, body, None)
    assert pickle.loads(pickle.dumps(result)) == result


def test_resolve_workers() -> None:
    assert resolve_workers("0") == 0
    assert resolve_workers(3) == 3
    assert resolve_workers("auto") == resolve_workers(None) >= 0
    with pytest.raises(ValueError):
        resolve_workers(-1)


def test_extract_stage_turns_pages_into_items(source) -> None:
    """The stage's inline path (the pooled one gives the same PageResult, tested above)."""
    crawler = get_crawler(settings_dict={"NEWSINGEST_EXTRACT_WORKERS": 0})
    crawler.stats.open_spider()
    stage = ExtractPipeline.from_crawler(crawler)
    stage.source = source
    url, body = _fixture("bench-latimes-business")
    item = asyncio.run(stage.process_item(RawPage(source.name, url, body, "text/html; charset=utf-8", 200, '"e"')))
    with pytest.raises(DropItem):
        asyncio.run(stage.process_item(RawPage(source.name, "https://example.com/s/", NON_ARTICLE, "text/html")))
    passthrough = object()
    assert asyncio.run(stage.process_item(passthrough)) is passthrough
    asyncio.run(stage.close_spider())  # no pool (workers 0): nothing to wait for
    assert isinstance(item, ArticleItem)
    fields = process_page(source, url, body, "text/html; charset=utf-8").fields
    assert item.title == fields["title"] and item.body == fields["body"] and item.etag == '"e"'
    assert item.site_name == (fields["site_name"] or "Bench") and item.http_status == 200
    assert crawler.stats.get_value("newsingest/pages/article") == 1
    assert crawler.stats.get_value("newsingest/pages/not_article") == 1


def test_writer_process_function_stores_a_batch(sqlite_url: str) -> None:
    from datetime import UTC, datetime

    from storage.repository import open_repository

    open_repository(sqlite_url).ensure_source("demo", "Demo")
    writer._init_writer(sqlite_url)
    record = {"source": "demo", "canonical_url": "https://example.com/a/", "content_hash": "h", "url":
              "https://example.com/a/", "title": "T", "subtitle": None, "body": "B " * 200, "authors": [],
              "published_at": datetime(2024, 1, 1, tzinfo=UTC), "modified_at": None, "language": "en",
              "section": None, "tags": [], "image_url": None, "site_name": "Demo", "etag": None,
              "last_modified": None, "fetched_at": datetime.now(UTC)}
    record = {key: record.get(key) for key in store.RECORD_KEYS}
    assert writer._write_batch([record], None).inserted == 1
    assert writer._write_batch([record], None).unchanged == 1
    error = pickle.loads(pickle.dumps(writer.StoreError("OperationalError: gone")))
    assert str(error) == "OperationalError: gone"
