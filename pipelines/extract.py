"""Stage 0: fetched page → ArticleItem, off the reactor thread.

The spider yields a ``RawPage`` (bytes, Content-Type, HTTP metadata) for every
HTML page it fetched; this stage decodes it, extracts it and decides whether it
is an article (crawler/extract_pool.py, the spider's former inline code) in a
pool of worker processes, so extraction runs on the other cores while the
reactor thread keeps fetching. Articles continue as ``ArticleItem``s; other
pages are dropped here and counted (``newsingest/pages/not_article``,
``newsingest/pages/extract_error``).

Pooled pages are *prepared* (``prepare_page``): the worker also runs the validate
stage's check and the clean stage's ``clean_fields``, and sends back the finished
fields of a ``PreparedArticle`` (those two stages pass it through). A rejected
page is counted and dropped here exactly as the validate stage would.

The workers are plain ``python -m crawler.extract_pool`` processes started with
``reactor.spawnProcess``; pages go down their stdin and results come back on their
stdout, read by the reactor like any socket. No executor threads: with a
``ProcessPoolExecutor`` every page crossed three threads of the crawl process, each
waiting for the busy reactor thread to release the GIL, and the worker sat idle
(that is why the pool used to be slower than extracting inline).

The first worker also writes the store stage's batches (``StoreBatch`` frames on the same
pipe, ``NEWSINGEST_STORE_WRITER = "worker"``, pipelines/store.py): no separate writer process.
A dead worker's pages are prepared inline; its unanswered batches fail with ``WorkerLost`` and
the store stage writes them again from its thread.

When ``NEWSINGEST_EXTRACT_MAX_INFLIGHT`` pages are already in the pool, the next
page is prepared inline on the reactor thread (``NEWSINGEST_EXTRACT_STEAL``, the
default: a reactor that would otherwise wait does the work itself) or waits for
room (steal off: Scrapy's scraper slot fills and the engine stops scheduling
downloads). Either way the memory held by pages in flight is bounded.

Settings:

- ``NEWSINGEST_EXTRACT_WORKERS``: worker processes; ``auto`` = cores − 1,
  0 = extract inline on the reactor thread.
- ``NEWSINGEST_EXTRACT_POOL_MIN_PAGES``: pages extracted inline before the pool is
  started (short crawls never pay for starting processes); default 50.
- ``NEWSINGEST_EXTRACT_MAX_INFLIGHT``: pages handed to the pool and not yet back;
  default (0) 4 per worker.
- ``NEWSINGEST_EXTRACT_STEAL``: extract inline when the pool is full; default on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pickle
import sys
import weakref
from typing import Any

from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem
from scrapy.utils.defer import maybe_deferred_to_future
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from crawler.extract_pool import (
    ARTICLE,
    ERROR,
    PageResult,
    Preparation,
    PreparedArticle,
    RawPage,
    article_values,
    picklable,
    prepare_page,
    process_page,
    resolve_workers,
)
from crawler.items import ArticleItem
from crawler.sources import Source
from pipelines.validate import reject
from storage.frames import frame

logger = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20  # the size asked for the pipes to and from a worker (Linux caps it at pipe-max-size)


def article_item(source: Source, page: RawPage, fields: dict[str, Any]) -> ArticleItem:
    """The item the rest of the pipeline works on, from the page and its raw extracted fields."""
    return ArticleItem(**article_values(source, page, fields))


def _store_takes_minhash() -> bool:
    """Whether the store stage hands a precomputed ``minhash`` to the repository (then workers compute it)."""
    try:
        from pipelines.store import RECORD_KEYS
    except Exception:  # pragma: no cover - the store stage is part of the project
        return False
    return "minhash" in RECORD_KEYS


class WorkerLost(Exception):
    """The worker process ended before it answered (a store batch it had is written elsewhere)."""


_stages: weakref.WeakKeyDictionary[Crawler, ExtractPipeline] = weakref.WeakKeyDictionary()


def extract_stage(crawler: Crawler) -> ExtractPipeline | None:
    """The crawl's extract stage (the store stage borrows its first worker as its writer)."""
    return _stages.get(crawler)


class WorkerProcess(ProcessProtocol):
    """One ``python -m crawler.extract_pool`` process, spoken to over its stdin/stdout by the reactor."""

    def __init__(self, init: tuple[Any, ...], on_ready: Any, on_lost: Any) -> None:
        self.init = init
        self.on_ready = on_ready
        self.on_lost = on_lost
        self.ready = False
        self.alive = True
        self.buffer = bytearray()
        self.next_seq = 1
        self.pending: dict[int, tuple[Any, Deferred[Any]]] = {}
        self.ended: Deferred[None] = Deferred()
        self.closing = False

    def connectionMade(self) -> None:
        # A pipe holds 64 KiB: five pages. The rest of the pages in flight would wait in the
        # transport's buffer for the reactor's next poll while the worker idles (the reactor is busy
        # for tens of ms at a time). 1 MiB holds every page in flight (Linux; elsewhere the default).
        for fd in (0, 1):
            pipe = getattr(self.transport, "pipes", {}).get(fd)
            if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
                with contextlib.suppress(OSError):
                    fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self.transport.write(frame(self.init))

    def send(self, page: Any) -> Deferred[Any]:
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        done: Deferred[Any] = Deferred()
        self.pending[seq] = (page, done)
        self._write(frame((seq, page)))
        return done

    def _write(self, data: bytes) -> None:
        """Write now when nothing is queued before it (else through the transport, in order).

        Twisted only writes a transport's buffer when the reactor next polls the pipe; a
        reactor thread busy for tens of ms (Scrapy's work, a page prepared inline) left the
        worker idle with its pages still in the crawl process (half its time, in a profile).
        """
        pipe = getattr(self.transport, "pipes", {}).get(0)
        if pipe is not None and not pipe.dataBuffer and not pipe._tempDataBuffer:
            try:
                written = os.write(pipe.fileno(), data)
            except OSError:  # full (EAGAIN) or gone: the transport queues it, or reports the loss
                written = 0
            data = data[written:]
        if data:
            self.transport.write(data)

    def pump(self) -> None:
        """Read the answers already waiting on the worker's stdout now, not at the reactor's next poll."""
        pipe = getattr(self.transport, "pipes", {}).get(1)
        if pipe is None or not self.alive:
            return
        try:
            data = os.read(pipe.fileno(), 1 << 20)
        except OSError:  # nothing there (EAGAIN), or gone: the reactor sees to it
            return
        if data:  # b"" (the worker ended) is left to the reactor
            self.outReceived(data)

    def outReceived(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        start = 0
        while len(buffer) - start >= 4:
            size = int.from_bytes(buffer[start:start + 4], "big")
            if len(buffer) - start - 4 < size:
                break
            try:
                seq, payload = pickle.loads(memoryview(buffer)[start + 4:start + 4 + size])
                start += 4 + size
                if seq == 0:
                    self.ready = True
                    self.on_ready(self)
                    continue
                _page, done = self.pending.pop(seq)
            except Exception:  # a garbled answer: end the worker; its pages are extracted inline
                logger.exception("unreadable answer from an extraction worker; stopping it")
                self.ready = False
                self.buffer = bytearray()
                self.transport.signalProcess("KILL")
                return
            done.callback(payload)
        if start:
            del buffer[:start]

    def processEnded(self, reason: Failure) -> None:
        self.alive = self.ready = False
        lost = list(self.pending.values())
        self.pending.clear()
        self.on_lost(self, lost, reason)
        self.ended.callback(None)

    def close(self) -> None:
        """Close its stdin: the worker finishes the pages it has and exits."""
        if self.alive and not self.closing:
            self.closing = True
            self.transport.closeStdin()


class ExtractPipeline:
    """Extract ``RawPage`` items (inline or in worker processes); pass other items through."""

    def __init__(self, crawler: Crawler, workers: int, pool_min_pages: int, max_inflight: int,
                 steal: bool = True) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.workers = workers
        self.pool_min_pages = max(0, pool_min_pages)
        self.max_inflight = max(1, max_inflight)
        self.steal = steal
        s = crawler.settings
        self.prep = Preparation(min_body_chars=s.getint("NEWSINGEST_MIN_BODY_CHARS", 200),
                                site_name=s.get("NEWSINGEST_SITE_NAME") or None,
                                minhash=_store_takes_minhash())
        level = logging.getLevelName(str(s.get("LOG_LEVEL", "INFO")).upper())
        self.log_level = level if isinstance(level, int) else logging.INFO
        self.source: Source | None = None
        self.pool: list[WorkerProcess] | None = None
        self.pages = 0
        self.inflight = 0  # pages in workers, not yet back
        self.room: list[Deferred[None]] = []  # pages waiting for room (steal off)
        self.host_hold: Deferred[None] | None = None  # fired by the store stage once it is done writing
        _stages[crawler] = self

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ExtractPipeline:
        s = crawler.settings
        workers = resolve_workers(s.get("NEWSINGEST_EXTRACT_WORKERS", "auto"))
        max_inflight = s.getint("NEWSINGEST_EXTRACT_MAX_INFLIGHT", 0) or 4 * max(1, workers)
        return cls(crawler, workers, s.getint("NEWSINGEST_EXTRACT_POOL_MIN_PAGES", 50), max_inflight,
                   s.getbool("NEWSINGEST_EXTRACT_STEAL", True))

    def open_spider(self) -> None:
        spider = self.crawler.spider
        self.source = getattr(spider, "source", None)
        self.stats.set_value("newsingest/extract/workers", self.workers)

    def writer_host(self) -> WorkerProcess | None:
        """The worker that also writes the store stage's batches (the first one), while it is up."""
        pool = self.pool
        if pool and pool[0].alive and not pool[0].closing:
            return pool[0]
        return None

    def hold_host(self, until: Deferred[None]) -> None:
        """Keep the writing worker's stdin open at close until `until` fires (the store's last batch)."""
        self.host_hold = until

    async def close_spider(self) -> None:
        pool, self.pool = self.pool, None
        for worker in (pool or [])[1:]:
            worker.close()
        if pool and self.host_hold is not None:
            await maybe_deferred_to_future(self.host_hold)
        for worker in (pool or [])[:1]:
            worker.close()
        for worker in pool or ():
            if worker.alive:
                timeout = reactor.callLater(30, self._kill, worker)
                await maybe_deferred_to_future(worker.ended)
                if timeout.active():
                    timeout.cancel()

    async def process_item(self, item: Any) -> Any:
        if not isinstance(item, RawPage):
            return item
        source = self.source
        if source is None:
            raise RuntimeError("the extract stage needs a spider with a `source` (the news spider)")
        self.pages += 1
        result, prepared = await self._extract(source, item)
        stats = self.stats
        if result.encoding_how in ("detected", "fallback"):
            stats.inc_value(f"newsingest/encoding/{result.encoding_how}")
        if result.outcome == ARTICLE:
            stats.inc_value("newsingest/pages/article")
            if not prepared and result.fields is not None:
                return article_item(source, item, result.fields)
            if result.rejected is not None:
                raise reject(stats, item.url, result.rejected)
            if result.fields is not None:
                return PreparedArticle(**result.fields)
        if result.outcome == ERROR:
            stats.inc_value("newsingest/pages/extract_error")
            logger.error("extraction failed for %s\n%s", item.url, result.error)
        stats.inc_value("newsingest/pages/not_article")
        raise DropItem(f"not an article page: {item.url}", log_level="DEBUG")

    # -- internals -------------------------------------------------------------

    async def _extract(self, source: Source, page: RawPage) -> tuple[PageResult, bool]:
        """The page's result, and whether it is prepared (validated and cleaned) or raw."""
        pool = self._pool(source)
        if pool is None:
            return process_page(source, page.url, page.body, page.content_type, page.meta.get("hints")), False
        while True:
            worker = self._pick()
            if worker is None:  # full? take in the answers waiting on the pipes first
                for member in pool:
                    member.pump()
                worker = self._pick()
            if worker is not None:
                break
            if self.steal or not any(w.ready for w in pool):
                if any(w.ready for w in pool):
                    self.stats.inc_value("newsingest/extract/inline")
                return prepare_page(source, page, self.prep), True
            waiter: Deferred[None] = Deferred()
            self.room.append(waiter)
            await maybe_deferred_to_future(waiter)
            if self.pool is None:  # the pool broke while this page waited
                return prepare_page(source, page, self.prep), True
        self.inflight += 1
        # The slot is free as soon as the answer is read (a pump counts at once), not when this task resumes.
        answer = worker.send(page).addBoth(self._release)
        return await maybe_deferred_to_future(answer), True

    def _release(self, result: Any) -> Any:
        self.inflight -= 1
        if self.room:
            self.room.pop(0).callback(None)
        return result

    def _pick(self) -> WorkerProcess | None:
        """The ready worker with the fewest pages, when the pool has room."""
        if self.pool is None or self.inflight >= self.max_inflight:
            return None
        ready = [w for w in self.pool if w.ready]
        return min(ready, key=lambda w: len(w.pending)) if ready else None

    def _pool(self, source: Source) -> list[WorkerProcess] | None:
        if self.pool is None and self.workers > 0 and self.pages > self.pool_min_pages:
            init = (picklable(source), self.log_level, self.prep)
            pool: list[WorkerProcess] = []
            try:
                for _ in range(self.workers):
                    worker = WorkerProcess(init, self._ready, self._lost)
                    reactor.spawnProcess(worker, sys.executable, [sys.executable, "-m", "crawler.extract_pool"],
                                         env=os.environ.copy(), path=os.getcwd(), childFDs={0: "w", 1: "r", 2: 2})
                    pool.append(worker)
            except Exception:
                logger.exception("could not start the extraction pool; extracting inline")
                self.stats.inc_value("newsingest/extract/pool_broken")
                for worker in pool:
                    worker.close()
                self.workers = 0
                return None
            self.pool = pool
            self.stats.set_value("newsingest/extract/pool_started_after_pages", self.pages)
        return self.pool

    def _ready(self, worker: WorkerProcess) -> None:
        self.stats.inc_value("newsingest/extract/workers_ready")

    def _lost(self, worker: WorkerProcess, pages: list[tuple[Any, Deferred[Any]]],
              reason: Failure) -> None:
        """A worker ended: expected at close; otherwise extract inline from now on (and its pages now)."""
        if self.pool is not None and worker in self.pool:
            logger.error("an extraction worker died (%s); extracting inline from now on", reason.getErrorMessage())
            self.stats.inc_value("newsingest/extract/pool_broken")
            pool, self.pool, self.workers = self.pool, None, 0
            for other in pool:
                other.close()
        source = self.source
        for page, done in pages:
            if not isinstance(page, RawPage):  # a store batch: the store stage writes it again elsewhere
                done.errback(Failure(WorkerLost(f"the worker ended: {reason.getErrorMessage()}")))
                continue
            assert source is not None
            done.callback(prepare_page(source, page, self.prep))
        while self.room:
            self.room.pop(0).callback(None)

    @staticmethod
    def _kill(worker: WorkerProcess) -> None:
        if worker.alive:
            logger.warning("an extraction worker did not exit; killing it")
            worker.transport.signalProcess("KILL")
