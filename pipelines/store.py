"""Stage 4: batched, idempotent writes to SQL, off the reactor thread.

Items are buffered and written in batches (one set-based transaction; a savepoint
per article when a row fails) by one writer at a time, so the crawl never waits on the
database unless too many batches are pending (then `process_item` waits: Scrapy's
back-pressure keeps memory bounded). The ORM work of a batch (about 1 ms per article)
should not hold the reactor's GIL, so ``NEWSINGEST_STORE_WRITER`` says where it runs:

- ``"worker"`` (the default): in the first extraction worker (crawler/extract_pool.py,
  ``StoreBatch`` frames on the pipe it already has), which imports storage on its first
  batch. No extra process: a writer process of its own costs ~85 MB (Python, SQLAlchemy,
  numpy), a third of the crawl's memory budget. Batches that come before the worker is
  up are written from a thread; a crawl with no extraction workers
  (``NEWSINGEST_EXTRACT_WORKERS = 0``) gets a writer process as with ``"process"``;
- ``"process"``: a ``python -m storage.writer`` child (storage/writer.py: storage only,
  not Scrapy), started at the first batch the crawl sends (full or flushed by the timer);
  a crawl that ends before that writes its one batch from a thread;
- ``"thread"``: a thread of the crawl process.

A writer process or worker that dies: the batches it had not answered are written again
from the thread (the upserts are idempotent), and so is everything after. A batch for
another writer than the previous one starts only once the previous batches are settled,
so batches are written in order. A timer flushes a partial batch every few seconds, so a
killed crawl loses at most that much work, and the rerun's upserts fill the gap without
doubling anything.

A publication time a listing gave for a page after the page went to extraction (the
spider's ``late_published_hint`` signal: a section page's teaser parsed after the
article) refines that article's ``published_at`` when it adds the seconds to a
minute-precision date in the same minute (or the page had none;
``late_hint_refines``): applied to the item when it has not reached this stage yet,
else as a `published_hint` record in the next batch, which the repository applies
to the stored row.

A page the dedupe stage drops as a duplicate of this run's item for its canonical
URL (`DuplicateInRun`: a copy that declares it canonical, another spelling) is not
stored, but its URL and validators are: a `url_only` record in the same batches
(``article_urls``), so the next crawl skips it or asks for it conditionally.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections import OrderedDict, deque
from datetime import datetime
from typing import Any

from itemadapter import ItemAdapter
from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import reactor, task
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from crawler.extract.dates import late_hint_refines, parse_hint
from crawler.extract_pool import StoreBatch
from crawler.items import ArticleItem
from crawler.signals import late_published_hint
from crawler.urls import fetched_url_key
from pipelines.dedupe import DuplicateInRun
from pipelines.extract import WorkerLost, WorkerProcess, extract_stage
from storage.db import resolve_database_url
from storage.repository import CONTENT_COLUMNS, Repository, StoreResult, open_repository
from storage.writer import StoreError

logger = logging.getLogger(__name__)

#: What a record carries to the repository. ``minhash`` is the near-duplicate signature the extraction
#: workers computed (crawler/extract_pool.py ``prepare_page``); None (an item extracted inline) makes
#: the repository compute it (storage/signature.py, the same function either way).
#: Late publication hints kept for articles still in extraction (the oldest are forgotten first; those
#: articles' rows are refined by the hint's record in the batches instead).
LATE_HINTS_KEPT = 4096

RECORD_KEYS = ("source", "canonical_url", "content_hash", "etag", "last_modified", "fetched_at", "minhash",
               *CONTENT_COLUMNS)


def to_record(item: Any) -> dict[str, Any]:
    """The plain mapping the repository stores, from any item type."""
    if isinstance(item, ArticleItem):  # the news spider's items: plain attributes, no adapter
        return {key: getattr(item, key, None) for key in RECORD_KEYS}
    adapter = ItemAdapter(item)
    return {key: adapter.get(key) for key in RECORD_KEYS}


class StorePipeline:
    """Buffer items and upsert them in batches through the repository."""

    def __init__(self, crawler: Crawler, database_url: str | None, batch_size: int,
                 flush_seconds: float, max_pending: int, writer: str = "worker") -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.database_url = database_url
        self.batch_size = max(1, batch_size)
        self.flush_seconds = flush_seconds
        self.max_pending = max(1, max_pending)
        self.buffer: list[dict[str, Any]] = []
        self.buffer_urls: set[str] = set()  # canonical URLs of the articles in `buffer`
        self.late_hints: OrderedDict[str, datetime] = OrderedDict()  # fetched_url_key(url) → listed time
        self.pending: deque[Deferred[Any]] = deque()
        self.repository: Repository | None = None
        self.pool: ThreadPool | None = None
        self.timer: task.LoopingCall | None = None
        self.fatal_error: str | None = None
        if writer not in ("worker", "process", "thread"):
            raise ValueError(f"NEWSINGEST_STORE_WRITER must be 'worker', 'process' or 'thread', not {writer!r}")
        self.writer = writer
        self.process: WorkerProcess | None = None  # a writer process of its own (storage/writer.py)
        self.process_failed = False
        self.host: WorkerProcess | None = None  # the extraction worker that writes ("worker")
        self.host_done: Deferred[None] | None = None  # fired when the host may close (our last batch is in)
        self.last_kind = "thread"
        self.database_url_resolved = resolve_database_url(database_url)
        level = logging.getLevelName(str(crawler.settings.get("LOG_LEVEL", "INFO")).upper())
        self.log_level = level if isinstance(level, int) else logging.INFO

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> StorePipeline:
        s = crawler.settings
        pipeline = cls(crawler, s.get("NEWSINGEST_DATABASE_URL"), s.getint("NEWSINGEST_STORE_BATCH_SIZE", 50),
                       s.getfloat("NEWSINGEST_STORE_FLUSH_SECONDS", 2.0),
                       s.getint("NEWSINGEST_STORE_MAX_PENDING_BATCHES", 4),
                       s.get("NEWSINGEST_STORE_WRITER", "worker"))
        crawler.signals.connect(pipeline.item_dropped, signal=signals.item_dropped)
        crawler.signals.connect(pipeline.late_published_hint, signal=late_published_hint)
        return pipeline

    def late_published_hint(self, url: str, published_at: Any) -> None:
        """A listing's publication time for a page already sent to extraction: kept for its item, and
        sent to the repository for its row (whichever comes first refines it; the other finds nothing
        left to refine)."""
        value = parse_hint(published_at)
        if value is None:
            return
        key = fetched_url_key(url)
        if self.late_hints.get(key) == value:
            return
        self.late_hints[key] = value
        self.late_hints.move_to_end(key)
        while len(self.late_hints) > LATE_HINTS_KEPT:
            self.late_hints.popitem(last=False)
        self.buffer.append({"published_hint": True, "url": url, "published_at": value})

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
        # A crawl stopped before close_spider (forced shutdown) must not hang on this thread; the
        # writer process gets its stdin closed, writes what it has and exits on its own.
        reactor.addSystemEventTrigger("during", "shutdown", self._stop_workers)
        if self.flush_seconds > 0:
            self.timer = task.LoopingCall(self._flush_partial)
            self.timer.start(self.flush_seconds, now=False)

    async def process_item(self, item: Any) -> Any:
        record = to_record(item)
        if self.late_hints:
            hint = self.late_hints.pop(fetched_url_key(record["url"]), None)
            if hint is not None and late_hint_refines(record["published_at"], hint):
                record["published_at"] = hint
                self.stats.inc_value("newsingest/dates/late_refined")
        if record["canonical_url"] in self.buffer_urls:
            # The canonical page after a copy of it (both stored, the page's text in place of the copy's):
            # the copy's batch goes first, so each batch is written set-based (a canonical URL twice in
            # one batch makes the repository write it row by row, several times slower).
            self._submit()
        self.buffer.append(record)
        self.buffer_urls.add(record["canonical_url"])
        if len(self.buffer) >= self.batch_size:
            self._submit()
        while len(self.pending) > self.max_pending:
            await maybe_deferred_to_future(self._settled(self.pending[0]))
        return item

    async def close_spider(self) -> None:
        if self.timer is not None and self.timer.running:
            self.timer.stop()
        try:
            self._submit(final=True)
            while self.pending:
                await maybe_deferred_to_future(self._settled(self.pending[0]))
        finally:
            self._release_host()
        process, self.process = self.process, None
        if process is not None and process.alive:
            process.close()
            timeout = reactor.callLater(60, self._kill, process)
            await maybe_deferred_to_future(process.ended)
            if timeout.active():
                timeout.cancel()
        self._stop_workers()
        if self.fatal_error:
            self.stats.set_value("newsingest/store/fatal_error", self.fatal_error)

    # -- internals -------------------------------------------------------------

    def _release_host(self) -> None:
        """Our last batch is answered: the extract stage may close its writing worker."""
        done, self.host_done = self.host_done, None
        if done is not None:
            done.callback(None)

    def _stop_workers(self) -> None:
        """Stop the writer thread; close the writer process's stdin (idempotent: close and shutdown call it)."""
        self._release_host()
        if self.pool is not None:
            self.pool.stop()
            self.pool = None
        process, self.process = self.process, None
        if process is not None:
            process.close()

    def _flush_partial(self) -> None:
        if self.buffer:
            self._submit()

    def _submit(self, final: bool = False) -> None:
        if not self.buffer or self.repository is None or self.pool is None:
            return
        batch, self.buffer = self.buffer, []
        self.buffer_urls = set()
        run_id = self.stats.get_value("newsingest/run_id")
        kind = self._writer_for(final)
        if self.pending and kind != self.last_kind:
            # One writer at a time: a batch for another writer starts once the last one has settled
            # (a link record must not be written before the batch holding its article).
            deferred = self._settled(self.pending[-1]).addCallback(lambda _: self._dispatch(kind, batch, run_id))
        else:
            deferred = self._dispatch(kind, batch, run_id)
        self.last_kind = kind
        deferred.addCallbacks(self._stored, self._batch_failed, errbackArgs=(batch,))
        deferred.addBoth(self._done, deferred)
        self.pending.append(deferred)

    def _writer_for(self, final: bool) -> str:
        """Where the next batch goes: "host" (the first extraction worker), "process" (a writer process
        of its own) or "thread"."""
        if self.writer == "thread" or self.fatal_error is not None:
            return "thread"
        if self.writer == "worker":
            stage = extract_stage(self.crawler)
            if stage is not None and stage.workers > 0:
                host = stage.writer_host()
                if host is None:  # the pool is not up yet (or is closing): this batch from the thread
                    return "thread"
                if self.host is not host:
                    self.host = host
                    if self.host_done is None:
                        self.host_done = Deferred()
                        stage.hold_host(self.host_done)
                return "host"
            if self.host is not None:  # the writing worker died (the pool broke): the thread from now on
                return "thread"
            # no extraction workers: a writer process of its own, as with "process"
        if self.process is None and not final and not self.process_failed:
            self._start_process()
        return "process" if self.process is not None else "thread"

    def _dispatch(self, kind: str, batch: list[dict[str, Any]], run_id: int | None) -> Deferred[Any]:
        if kind == "host" and self.host is not None and self.host.alive and not self.host.closing:
            deferred = self.host.send(StoreBatch(self.database_url_resolved, batch, run_id))
            deferred.addCallback(self._answer)
            deferred.addErrback(self._rewrite_lost, batch, run_id)
            return deferred
        if kind in ("host", "process") and self.process is not None and self.process.alive:
            deferred = self.process.send((batch, run_id))
            deferred.addCallback(self._answer)
            return deferred
        assert self.pool is not None and self.repository is not None
        return deferToThreadPool(reactor, self.pool, self.repository.upsert_articles, batch, run_id)

    def _rewrite_lost(self, failure: Failure, batch: list[dict[str, Any]], run_id: int | None) -> Any:
        """The writing worker ended before it answered: the batch (rolled back, or never begun) is written
        from the thread, and so is every later batch (the upserts make a replay harmless)."""
        failure.trap(WorkerLost)
        if self.writer != "thread":
            logger.error("the extraction worker that wrote batches ended (%s); writing from a thread",
                         failure.getErrorMessage())
            self.stats.inc_value("newsingest/store/writer_lost")
            self.writer = "thread"
        if self.pool is None or self.repository is None:
            return failure
        return deferToThreadPool(reactor, self.pool, self.repository.upsert_articles, batch, run_id)

    @staticmethod
    def _answer(answer: tuple[bool, Any]) -> StoreResult:
        ok, value = answer
        if not ok:
            raise StoreError(value)
        return value

    def _start_process(self) -> None:
        """Start ``python -m storage.writer``; batches sent before it is ready wait in its pipe."""
        try:
            process = WorkerProcess((self.database_url_resolved, self.log_level),
                                    self._writer_ready, self._writer_lost)
            reactor.spawnProcess(process, sys.executable, [sys.executable, "-m", "storage.writer"],
                                 env=os.environ.copy(), path=os.getcwd(), childFDs={0: "w", 1: "r", 2: 2})
        except Exception:
            logger.exception("could not start the writer process; writing from a thread")
            self.process_failed = True
            return
        self.process = process

    def _writer_ready(self, process: WorkerProcess) -> None:
        self.stats.inc_value("newsingest/store/writer_process_started")

    def _writer_lost(self, process: WorkerProcess, batches: list[tuple[Any, Deferred[Any]]], reason: Any) -> None:
        """The writer process ended. Expected at close; otherwise its unanswered batches (rolled back or
        never started) are written from the thread, in order, and so is everything after."""
        if self.process is process:
            logger.error("the writer process ended (%s); writing from a thread", reason.getErrorMessage())
            self.stats.inc_value("newsingest/store/writer_lost")
            self.process = None
            self.process_failed = True
        for (batch, run_id), done in batches:
            if self.pool is None or self.repository is None:
                done.callback((False, "the writer process ended during shutdown"))
                continue
            retry = deferToThreadPool(reactor, self.pool, self.repository.upsert_articles, batch, run_id)
            retry.addCallbacks(lambda result: (True, result), lambda failure: (False, failure.getErrorMessage()))
            retry.chainDeferred(done)

    @staticmethod
    def _kill(process: WorkerProcess) -> None:
        if process.alive:
            logger.warning("the writer process did not exit; killing it")
            process.transport.signalProcess("KILL")

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
        if result.published_refined:
            stats.inc_value("newsingest/dates/late_refined", result.published_refined)
        if result.attempts > 1:
            stats.inc_value("newsingest/store/retried_batches")
        for url, error in result.failed:
            stats.inc_value("newsingest/store/failed")
            logger.error("could not store %s: %s", url, error)

    def _batch_failed(self, failure: Any, batch: list[dict[str, Any]]) -> None:
        """The database stayed unreachable: count the loss and stop crawling."""
        message = failure.getErrorMessage().splitlines()[0] if failure.getErrorMessage() else str(failure)
        articles = sum(1 for record in batch if not (record.get("url_only") or record.get("published_hint")))
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
