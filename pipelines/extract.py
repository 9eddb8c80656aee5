"""Stage 0: fetched page → ArticleItem, off the reactor thread.

The spider yields a ``RawPage`` (bytes, Content-Type, HTTP metadata) for every
HTML page it fetched; this stage decodes it, extracts it and decides whether it
is an article (crawler/extract_pool.py, the spider's former inline code) in a
pool of worker processes, so extraction runs on the other cores while the
reactor thread keeps fetching. Articles continue as ``ArticleItem``s; other
pages are dropped here and counted (``newsingest/pages/not_article``,
``newsingest/pages/extract_error``).

Settings:

- ``NEWSINGEST_EXTRACT_WORKERS``: worker processes; ``auto`` (default) = cores − 1,
  0 = extract inline on the reactor thread.
- ``NEWSINGEST_EXTRACT_POOL_MIN_PAGES``: pages extracted inline before the pool is
  started (short crawls never pay for starting processes); default 50.
- ``NEWSINGEST_EXTRACT_MAX_INFLIGHT``: pages handed to the pool and not yet back;
  default 8 per worker. ``process_item`` waits beyond that, so Scrapy's
  scraper slot fills and the engine stops scheduling downloads (back-pressure).
"""

from __future__ import annotations

import logging
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet.defer import DeferredSemaphore

from crawler.extract_pool import ARTICLE, ERROR, ExtractPool, PageResult, RawPage, process_page, resolve_workers
from crawler.items import ArticleItem
from crawler.sources import Source
from pipelines.futures import deferred_from_future

logger = logging.getLogger(__name__)


def article_item(source: Source, page: RawPage, fields: dict[str, Any]) -> ArticleItem:
    """The item the rest of the pipeline works on, from the page and its extracted fields."""
    return ArticleItem(
        source=source.name,
        url=page.url,
        declared_canonical_url=fields.get("canonical_url"),
        title=fields.get("title"),
        subtitle=fields.get("subtitle"),
        body=fields.get("body"),
        authors=list(fields.get("authors") or []),
        published_at=fields.get("published_at"),
        modified_at=fields.get("modified_at"),
        language=fields.get("language") or source.language,
        section=fields.get("section"),
        tags=list(fields.get("tags") or []),
        image_url=fields.get("image_url"),
        site_name=fields.get("site_name") or source.site_name,
        fetched_at=page.fetched_at or datetime.now(UTC),
        http_status=page.http_status,
        etag=page.etag,
        last_modified=page.last_modified,
    )


class ExtractPipeline:
    """Extract ``RawPage`` items (inline or in a process pool); pass other items through."""

    def __init__(self, crawler: Crawler, workers: int, pool_min_pages: int, max_inflight: int) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.workers = workers
        self.pool_min_pages = max(0, pool_min_pages)
        self.max_inflight = max(1, max_inflight)
        self.source: Source | None = None
        self.pool: ExtractPool | None = None
        self.inflight = DeferredSemaphore(self.max_inflight)
        self.pages = 0

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ExtractPipeline:
        s = crawler.settings
        workers = resolve_workers(s.get("NEWSINGEST_EXTRACT_WORKERS", "auto"))
        max_inflight = s.getint("NEWSINGEST_EXTRACT_MAX_INFLIGHT", 0) or 8 * max(1, workers)
        return cls(crawler, workers, s.getint("NEWSINGEST_EXTRACT_POOL_MIN_PAGES", 50), max_inflight)

    def open_spider(self) -> None:
        spider = self.crawler.spider
        self.source = getattr(spider, "source", None)
        self.stats.set_value("newsingest/extract/workers", self.workers)

    def close_spider(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()  # every page was awaited: the workers are idle
            self.pool = None

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, RawPage):
            return item
        source = self.source
        if source is None:
            raise RuntimeError("the extract stage needs a spider with a `source` (the news spider)")
        self.pages += 1
        result = await self._extract(source, item)
        stats = self.stats
        if result.encoding_how in ("detected", "fallback"):
            stats.inc_value(f"newsingest/encoding/{result.encoding_how}")
        if result.outcome == ARTICLE and result.fields is not None:
            stats.inc_value("newsingest/pages/article")
            return article_item(source, item, result.fields)
        if result.outcome == ERROR:
            stats.inc_value("newsingest/pages/extract_error")
            logger.error("extraction failed for %s\n%s", item.url, result.error)
        stats.inc_value("newsingest/pages/not_article")
        raise DropItem(f"not an article page: {item.url}", log_level="DEBUG")

    # -- internals -------------------------------------------------------------

    async def _extract(self, source: Source, page: RawPage) -> PageResult:
        pool = self._pool(source)
        if pool is None or not pool.ready.done():
            return process_page(source, page.url, page.body, page.content_type, page.meta.get("hints"))
        await maybe_deferred_to_future(self.inflight.acquire())
        try:
            try:
                future = pool.submit(page.url, page.body, page.content_type, page.meta.get("hints"))
                return await maybe_deferred_to_future(deferred_from_future(future))
            except BrokenProcessPool:
                logger.error("the extraction pool broke (a worker died); extracting inline from now on")
                self.stats.inc_value("newsingest/extract/pool_broken")
                self._drop_pool()
                return process_page(source, page.url, page.body, page.content_type, page.meta.get("hints"))
        finally:
            self.inflight.release()

    def _pool(self, source: Source) -> ExtractPool | None:
        if self.pool is None and self.workers > 0 and self.pages > self.pool_min_pages:
            try:
                self.pool = ExtractPool(source, self.workers)
            except Exception:
                logger.exception("could not start the extraction pool; extracting inline")
                self.stats.inc_value("newsingest/extract/pool_broken")
                self.workers = 0
                return None
            self.stats.set_value("newsingest/extract/pool_started_after_pages", self.pages)
        return self.pool

    def _drop_pool(self) -> None:
        pool, self.pool, self.workers = self.pool, None, 0
        if pool is not None:
            try:
                pool.shutdown()
            except Exception:  # already broken
                logger.debug("extraction pool shutdown failed", exc_info=True)
