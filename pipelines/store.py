"""Stage 4: batched, idempotent writes to SQL, off the reactor thread.

Items are buffered and written in batches (one set-based transaction; a savepoint
per article when a row fails) by one dedicated writer, so the crawl never waits on the database
unless too many batches are pending (then `process_item` waits: Scrapy's
back-pressure keeps memory bounded). The writer is a thread for the first
batch; from the first full batch on it is a writer process
(``NEWSINGEST_STORE_WRITER = "process"``, the default), so the ORM work
of a batch (a few ms per article) does not hold the reactor's GIL. A timer flushes a partial batch
every few seconds, so a killed crawl loses at most that much work, and the
rerun's upserts fill the gap without doubling anything.

A page the dedupe stage drops as a duplicate of this run's item for its canonical
URL (`DuplicateInRun`: a copy that declares it canonical, another spelling) is not
stored, but its URL and validators are: a `url_only` record in the same batches
(``article_urls``), so the next crawl skips it or asks for it conditionally.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.utils.defer import maybe_deferred_to_future
from sqlalchemy.exc import OperationalError
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from pipelines.dedupe import DuplicateInRun
from pipelines.futures import deferred_from_future
from storage.repository import CONTENT_COLUMNS, Repository, StoreResult, open_repository

logger = logging.getLogger(__name__)

RECORD_KEYS = ("source", "canonical_url", "content_hash", "etag", "last_modified", "fetched_at",
               *CONTENT_COLUMNS)


class StoreError(Exception):
    """A batch the writer process could not store (the repository's error, as text)."""


_writer_repository: Repository | None = None
_writer_url: str | None = None
WRITER_CONNECT_SECONDS = 120.0  # as long as the repository retries a batch on a lost connection


def _init_writer(database_url: str | None) -> None:
    # Connect on the first batch, not here: an initializer that raises (the database away at the
    # moment the writer starts) breaks the pool, and every later batch of the crawl would be lost.
    global _writer_url
    _writer_url = database_url


def _open_retrying(database_url: str | None, seconds: float = WRITER_CONNECT_SECONDS) -> Repository:
    """The writer's repository, waiting with backoff while the database is unreachable."""
    delay, give_up_at = 0.5, time.monotonic() + seconds
    while True:
        try:
            return open_repository(database_url)
        except OperationalError:
            if time.monotonic() + delay > give_up_at:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _write_batch(batch: list[dict[str, Any]], run_id: int | None) -> StoreResult:
    """Writer process: one batch through the repository; errors come back as picklable text."""
    global _writer_repository
    try:
        if _writer_repository is None:
            _writer_repository = _open_retrying(_writer_url)
        return _writer_repository.upsert_articles(batch, run_id)
    except Exception as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from None


def to_record(item: Any) -> dict[str, Any]:
    """The plain mapping the repository stores, from any item type."""
    adapter = ItemAdapter(item)
    return {key: adapter.get(key) for key in RECORD_KEYS}


class StorePipeline:
    """Buffer items and upsert them in batches through the repository."""

    def __init__(self, crawler: Crawler, database_url: str | None, batch_size: int,
                 flush_seconds: float, max_pending: int, writer: str = "process") -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.database_url = database_url
        self.batch_size = max(1, batch_size)
        self.flush_seconds = flush_seconds
        self.max_pending = max(1, max_pending)
        self.buffer: list[dict[str, Any]] = []
        self.pending: deque[Deferred[Any]] = deque()
        self.repository: Repository | None = None
        self.pool: ThreadPool | None = None
        self.timer: task.LoopingCall | None = None
        self.fatal_error: str | None = None
        if writer not in ("process", "thread"):
            raise ValueError(f"NEWSINGEST_STORE_WRITER must be 'process' or 'thread', not {writer!r}")
        self.writer = writer
        self.process: ProcessPoolExecutor | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        s = crawler.settings
        pipeline = cls(crawler, s.get("NEWSINGEST_DATABASE_URL"), s.getint("NEWSINGEST_STORE_BATCH_SIZE", 50),
                       s.getfloat("NEWSINGEST_STORE_FLUSH_SECONDS", 2.0),
                       s.getint("NEWSINGEST_STORE_MAX_PENDING_BATCHES", 4),
                       s.get("NEWSINGEST_STORE_WRITER", "process"))
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        return pipeline

    def item_dropped(self, exception: BaseException) -> None:
        """A duplicate the dedupe stage dropped: its URL goes in the next batch (``article_urls`` only)."""
        if isinstance(exception, DuplicateInRun):
            self.buffer.append({"url_only": True, "url": exception.url, "canonical_url": exception.canonical_url,
                                "etag": exception.etag, "last_modified": exception.last_modified})

    def open_spider(self) -> None:
        self.repository = open_repository(self.database_url)
        spider = self.crawler.spider
        source = getattr(spider, "source", None)
        if source is not None:
            self.repository.ensure_source(source.name, source.site_name)
        self.pool = ThreadPool(minthreads=1, maxthreads=1, name="newsingest-store")
        self.pool.start()
        # A crawl stopped before close_spider (forced shutdown) must not hang on this thread.
        reactor.addSystemEventTrigger("during", "shutdown", self._stop_workers)
        if self.flush_seconds > 0:
            self.timer = task.LoopingCall(self._flush_partial)
            self.timer.start(self.flush_seconds, now=False)

    async def process_item(self, item: Any) -> Any:
        self.buffer.append(to_record(item))
        if len(self.buffer) >= self.batch_size:
            if self.writer == "process" and self.process is None and self.fatal_error is None:
                # Short crawls never start a process. One writer at a time: the thread's
                # batches finish before the process takes over.
                while self.pending:
                    await maybe_deferred_to_future(self._settled(self.pending[0]))
                self._start_process()
            self._submit()
        while len(self.pending) > self.max_pending:
            await maybe_deferred_to_future(self._settled(self.pending[0]))
        return item

    async def close_spider(self) -> None:
        if self.timer is not None and self.timer.running:
            self.timer.stop()
        self._submit()
        while self.pending:
            await maybe_deferred_to_future(self._settled(self.pending[0]))
        self._stop_workers()
        if self.fatal_error:
            self.stats.set_value("newsingest/store/fatal_error", self.fatal_error)

    # -- internals -------------------------------------------------------------

    def _stop_workers(self) -> None:
        """Stop the writer thread and process (idempotent: close and reactor shutdown both call it)."""
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        if self.process is not None:
            self.process.shutdown(wait=True)
            self.process = None

    def _flush_partial(self) -> None:
        if self.buffer:
            self._submit()

    def _submit(self) -> None:
        if not self.buffer or self.repository is None or self.pool is None:
            return
        batch, self.buffer = self.buffer, []
        run_id = self.stats.get_value("newsingest/run_id")
        if self.process is not None:
            deferred = deferred_from_future(self.process.submit(_write_batch, batch, run_id))
        else:
            deferred = deferToThreadPool(reactor, self.pool, self.repository.upsert_articles, batch, run_id)
        deferred.addCallbacks(self._stored, self._batch_failed, errbackArgs=(batch,))
        deferred.addBoth(self._done, deferred)
        self.pending.append(deferred)

    def _start_process(self) -> None:
        try:
            self.process = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=_init_writer, initargs=(self.database_url,))
        except Exception:
            logger.exception("could not start the writer process; writing from a thread")
            self.writer = "thread"
            self.process = None

    @staticmethod
    def _settled(deferred: Deferred[Any]) -> Deferred[None]:
        """A Deferred that fires (never fails) once `deferred` has."""
        waiter: Deferred[None] = Deferred()
        deferred.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    def _done(self, result: Any, deferred: Deferred[Any]) -> Any:
        with contextlib.suppress(ValueError):  # already removed
            self.pending.remove(deferred)
        return result

    def _stored(self, result: StoreResult) -> None:
        stats = self.stats
        stats.inc_value("newsingest/stored/new", result.inserted - result.content_duplicates)
        stats.inc_value("newsingest/duplicates/content", result.content_duplicates)
        stats.inc_value("newsingest/stored/updated", result.updated)
        stats.inc_value("newsingest/stored/unchanged", result.unchanged)
        if result.replaced:
            stats.inc_value("newsingest/stored/replaced", result.replaced)
        if result.linked_urls:
            stats.inc_value("newsingest/stored/url_links", result.linked_urls)
        if result.attempts > 1:
            stats.inc_value("newsingest/store/retried_batches")
        for url, error in result.failed:
            stats.inc_value("newsingest/store/failed")
            logger.error("could not store %s: %s", url, error)

    def _batch_failed(self, failure: Any, batch: list[dict[str, Any]]) -> None:
        """The database stayed unreachable: count the loss and stop crawling."""
        message = failure.getErrorMessage().splitlines()[0] if failure.getErrorMessage() else str(failure)
        articles = sum(1 for record in batch if not record.get("url_only"))
        self.stats.inc_value("newsingest/store/failed", articles)
        logger.error("a batch of %d articles could not be stored: %s", articles, message)
        if self.fatal_error is None:
            self.fatal_error = message[:500]
            engine = self.crawler.engine
            if engine is not None and engine.running:
                reactor.callLater(0, self._close, engine)

    @staticmethod
    def _close(engine: Any) -> None:
        from scrapy.utils.defer import deferred_from_coro

        deferred_from_coro(engine.close_spider_async(reason="database_unavailable"))
