"""Request-side components: each a small `from_crawler` class.

IncrementalMiddleware skips article URLs already stored before they are
requested again, and makes recent ones conditional requests (see its docstring);
IncrementalSpiderMiddleware looks the page requests of a listing (sitemap, feed,
a page's links) up in one query, so the downloader middleware rarely queries.

LevelLogFormatter (``LOG_FORMATTER``) drops Scrapy's per-page DEBUG messages
("Crawled", "Scraped from", "Dropped") before a record is made when the crawl logs
above DEBUG: Scrapy leaves the root logger at DEBUG and filters in its handler, so
each of them cost a LogRecord (caller lookup and all) for nothing, on the reactor thread.

RobotsTxtMiddleware fixes two weaknesses of Scrapy's:

- a race: when several requests to one host wait together for robots.txt, the
  parsed rules are handed to the first waiter only (its `asFuture` consumes the
  Deferred's result), and every other waiter gets `None`, which Scrapy reads as
  "allowed". Here every waiter gets its own relay of the result;
- dirty files: a NUL byte glued to `User-agent: *` made the whole group
  unmatched, so everything was allowed. NUL bytes are removed before parsing
  (invalid UTF-8 is already dropped by Scrapy's decoder).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from datetime import datetime, timedelta
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.logformatter import LogFormatter
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from crawler.urls import fetched_url_key, strip_variant
from storage.models import utcnow
from storage.repository import Repository, SeenArticle, open_repository

logger = logging.getLogger(__name__)


class RobotsTxtMiddleware(ScrapyRobotsTxtMiddleware):
    """Scrapy's robots.txt middleware, with the rules delivered to every waiting request."""

    async def robot_parser(self, request: Request) -> Any:
        netloc = urlparse_cached(request).netloc
        pending = self._parsers.get(netloc)
        if isinstance(pending, Deferred):
            waiter: Deferred[Any] = Deferred()

            def relay(result: Any) -> Any:
                waiter.callback(result)
                return result  # keep the result for the next waiter

            pending.addBoth(relay)
            return await maybe_deferred_to_future(waiter)
        return await super().robot_parser(request)

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        if b"\0" in response.body:
            self._stats.inc_value("newsingest/robots/nul_bytes")
            response = response.replace(body=response.body.replace(b"\0", b""))
        await super()._parse_robots(response, netloc, request)


#: ``request.meta["newsingest_kind"]`` of the requests the incremental check applies to:
#: pages listed in feeds and sitemaps and links followed from pages, never feeds,
#: sitemaps, robots.txt or the source's start URLs.
PAGE_KIND = "page"

#: ``request.meta`` key of the answer IncrementalSpiderMiddleware looked up for a page request:
#: ``(url, SeenArticle | None)`` (None: not stored, or the lookup failed: fetch).
SEEN_META = "newsingest_seen"


def seen_keys(url: str) -> list[str] | None:
    """The keys a page request is looked up by (its canonical spelling, the same without an AMP/print
    variant, the URL as requested), or None for a URL that can never be stored."""
    page = fetched_url_key(url)
    if page is None:
        return None
    return list(dict.fromkeys((page, strip_variant(page), url)))


class SeenRequest(IgnoreRequest):
    """The article is stored and older than the recrawl window: not requested again."""


class NotModified(IgnoreRequest):
    """The server answered a conditional recrawl with 304: nothing to extract."""


class IncrementalMiddleware:
    """A database-backed "seen" check made before an article request is sent.

    For a page request (``meta["newsingest_kind"] == "page"``) whose URL is known:
    first as a page an article was fetched from (``article_urls``: the canonical
    page, a spelling of it, or a syndicated/AMP/print copy that declares it
    canonical; spelling normalized), then, with AMP/print renderings mapped to
    the article, as that too or as an article's canonical or fetched URL:

    - published (else first stored) more than ``NEWSINGEST_RECRAWL_WINDOW_DAYS``
      (default 3) ago: not requested (`SeenRequest`, ``newsingest/skipped/seen``);
    - younger: requested with ``If-None-Match`` / ``If-Modified-Since`` from the
      ETag / Last-Modified that URL's page was last fetched with (the article
      row's for rows older than ``article_urls``); a 304 answer ends there
      (`NotModified`, ``newsingest/not_modified``): no extraction, and
      ``last_seen_at`` of the article and of the URL's row are moved in batches
      (`Repository.touch_seen`).

    So a copy of a stored article costs no extraction on a recrawl either.
    Most requests come looked up already: IncrementalSpiderMiddleware answers the page
    requests of one listing (a sitemap, a feed, a page's links) with one round of
    indexed queries, off the reactor thread, and leaves each answer in the request's
    meta (``SEEN_META``). A request without one (a redirect's target, a request from
    elsewhere) is looked up alone here.
    ``NEWSINGEST_INCREMENTAL = False`` turns the check off (every page is fetched).
    """

    def __init__(self, crawler: Crawler, database_url: str | None, window_days: float,
                 touch_batch: int = 50) -> None:
        self.crawler = crawler
        self.stats = crawler.stats
        self.database_url = database_url
        self.window = timedelta(days=window_days)
        self.touch_batch = max(1, touch_batch)
        self.repository: Repository | None = None
        self.touched: list[str] = []  # canonical URLs of articles answered 304
        self.touched_urls: list[str] = []  # their article_urls rows
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> IncrementalMiddleware:
        s = crawler.settings
        if not s.getbool("NEWSINGEST_INCREMENTAL", True):
            raise NotConfigured("NEWSINGEST_INCREMENTAL is off")
        return cls(crawler, s.get("NEWSINGEST_DATABASE_URL"), s.getfloat("NEWSINGEST_RECRAWL_WINDOW_DAYS", 3.0))

    def _repo(self) -> Repository:
        if self.repository is None:
            self.repository = open_repository(self.database_url)
        return self.repository

    async def process_request(self, request: Request) -> None:
        if request.meta.get("newsingest_kind") != PAGE_KIND:
            return
        # a redirect's or a retry's copy of the request is checked afresh
        request.meta.pop("newsingest_conditional", None)
        request.meta.pop("newsingest_seen_url", None)
        looked_up = request.meta.get(SEEN_META)
        if looked_up is not None and looked_up[0] == request.url and isinstance(looked_up[1], _ChunkLookup):
            await looked_up[1].wait()  # its listing's lookup is still running
            looked_up = request.meta.get(SEEN_META)
        request.meta.pop(SEEN_META, None)
        if looked_up is not None and looked_up[0] == request.url and not isinstance(looked_up[1], _ChunkLookup):
            seen = looked_up[1]  # answered with its listing's other requests (IncrementalSpiderMiddleware)
        else:
            keys = seen_keys(request.url)
            if keys is None:
                return
            try:
                found = await maybe_deferred_to_future(deferToThread(self._repo().validators_for, keys))
            except Exception as exc:  # database away: fetch anyway, the store's upsert dedupes
                self.stats.inc_value("newsingest/incremental/lookup_failed")
                logger.warning("seen check unavailable for %s (%s); fetching it", request.url,
                               str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
                return
            seen = next((found[key] for key in keys if key in found), None)
        if seen is None:
            return
        born: datetime = seen.published_at or seen.first_seen_at
        if born < utcnow() - self.window:
            self.stats.inc_value("newsingest/skipped/seen")
            raise SeenRequest(f"already stored: {seen.canonical_url}")
        if seen.etag:
            request.headers[b"If-None-Match"] = seen.etag
        if seen.last_modified:
            request.headers[b"If-Modified-Since"] = seen.last_modified
        if seen.etag or seen.last_modified:
            request.meta["newsingest_conditional"] = seen.canonical_url
            if seen.fetched_url is not None:
                request.meta["newsingest_seen_url"] = seen.fetched_url
            self.stats.inc_value("newsingest/recrawl/conditional")
        else:
            self.stats.inc_value("newsingest/recrawl/unconditional")

    def process_response(self, request: Request, response: Response) -> Response:
        canonical = request.meta.get("newsingest_conditional")
        if response.status != 304 or not canonical:
            return response
        self.stats.inc_value("newsingest/not_modified")
        self.touched.append(canonical)
        if request.meta.get("newsingest_seen_url"):
            self.touched_urls.append(request.meta["newsingest_seen_url"])
        if len(self.touched) >= self.touch_batch:
            self._flush_async()
        raise NotModified(f"not modified: {canonical}")

    def _take(self) -> tuple[list[str], list[str]]:
        batch, urls = self.touched, self.touched_urls
        self.touched, self.touched_urls = [], []
        return batch, urls

    def _flush_async(self) -> None:
        batch, urls = self._take()
        run_id = self.stats.get_value("newsingest/run_id")
        deferred = deferToThread(self._repo().touch_seen, batch, run_id, urls)
        deferred.addErrback(lambda failure: logger.error("could not record %d unchanged articles: %s",
                                                        len(batch), failure.getErrorMessage()))

    def spider_closed(self) -> None:
        if self.touched:
            batch, urls = self._take()
            try:
                self._repo().touch_seen(batch, self.stats.get_value("newsingest/run_id"), urls)
            except Exception:
                logger.exception("could not record %d unchanged articles", len(batch))


class _ChunkLookup:
    """One `validators_for_many` for a chunk of page requests, started at once; its answers are put in
    each request's meta when it completes (`SEEN_META`), and requests sent before that wait for it."""

    def __init__(self, chunk: list[tuple[Request, list[str]]]) -> None:
        self.chunk: list[tuple[Request, list[str]]] | None = chunk
        self.waiters: list[Deferred[None]] = []

    def answer(self, found: dict[str, SeenArticle]) -> None:
        chunk, self.chunk = self.chunk or [], None
        for request, keys in chunk:
            if request.meta.get(SEEN_META) is not None and request.meta[SEEN_META][1] is self:
                seen = next((found[key] for key in keys if key in found), None)
                request.meta[SEEN_META] = (request.url, seen)
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            waiter.callback(None)

    async def wait(self) -> None:
        if self.chunk is not None:
            waiter: Deferred[None] = Deferred()
            self.waiters.append(waiter)
            await maybe_deferred_to_future(waiter)


class IncrementalSpiderMiddleware:
    """The seen check's lookups, batched: one ``validators_for_many`` per chunk of a response's page requests.

    Before, every page request cost the crawl process a thread hop and two SQL queries
    (about 1 ms of its CPU per page; with SQLite the lookups overflowed the reactor's
    thread pool, and each new thread opened a connection). Here a sitemap's or feed's
    page requests (and a page's followed links) are looked up ``CHUNK`` at a time: one
    thread hop and one round of queries, started as soon as the chunk is complete; the
    requests go on to the scheduler at once, and each gets its answer in its meta
    (``SEEN_META``) when the lookup completes. IncrementalMiddleware decides (skip,
    conditional, fetch) as before, when the request is about to be sent (waiting for the
    answer if it is not there yet). A plain generator, not an async one, so Scrapy keeps
    the spider's output synchronous (an async middleware makes every response's output
    go through async generators). Items pass straight through. The database away: the
    chunk's requests are fetched (fail open), counted in
    ``newsingest/incremental/lookup_failed``.
    """

    CHUNK = 500

    def __init__(self, crawler: Crawler, database_url: str | None) -> None:
        self.stats = crawler.stats
        self.database_url = database_url
        self.repository: Repository | None = None

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> IncrementalSpiderMiddleware:
        s = crawler.settings
        if not s.getbool("NEWSINGEST_INCREMENTAL", True):
            raise NotConfigured("NEWSINGEST_INCREMENTAL is off")
        return cls(crawler, s.get("NEWSINGEST_DATABASE_URL"))

    def process_spider_output(self, response: Response, result: Iterable[Any]) -> Iterator[Any]:
        chunk: list[tuple[Request, list[str]]] = []
        for output in result:
            if isinstance(output, Request) and output.meta.get("newsingest_kind") == PAGE_KIND:
                keys = seen_keys(output.url)
                if keys is not None:
                    chunk.append((output, keys))
                    if len(chunk) >= self.CHUNK:
                        yield from self._look_up(chunk)
                        chunk = []
                    continue
            yield output
        if chunk:
            yield from self._look_up(chunk)

    async def process_spider_output_async(self, response: Response,
                                          result: AsyncIterator[Any]) -> AsyncIterator[Any]:
        """The same, for a spider or middleware chain whose output is asynchronous."""
        chunk: list[tuple[Request, list[str]]] = []
        async for output in result:
            if isinstance(output, Request) and output.meta.get("newsingest_kind") == PAGE_KIND:
                keys = seen_keys(output.url)
                if keys is not None:
                    chunk.append((output, keys))
                    if len(chunk) >= self.CHUNK:
                        for request in self._look_up(chunk):
                            yield request
                        chunk = []
                    continue
            yield output
        for request in self._look_up(chunk):
            yield request

    def _look_up(self, chunk: list[tuple[Request, list[str]]]) -> list[Request]:
        """Start the chunk's lookup; the requests, each pointing at it from its meta."""
        if not chunk:
            return []
        lookup = _ChunkLookup(chunk)
        for request, _keys in chunk:
            request.meta[SEEN_META] = (request.url, lookup)
        urls = [key for _request, keys in chunk for key in keys]
        deferred = deferToThread(self._lookup, urls)
        deferred.addCallbacks(lookup.answer, self._failed, errbackArgs=(lookup, len(chunk)))
        return [request for request, _keys in chunk]

    def _failed(self, failure: Any, lookup: _ChunkLookup, count: int) -> None:
        """Database away: fetch them all, the store's upsert dedupes."""
        self.stats.inc_value("newsingest/incremental/lookup_failed", count)
        message = failure.getErrorMessage()
        logger.warning("seen check unavailable for %d requests (%s); fetching them", count,
                       message.splitlines()[0] if message else failure.type.__name__)
        lookup.answer({})

    def _lookup(self, urls: list[str]) -> dict[str, SeenArticle]:
        if self.repository is None:
            self.repository = open_repository(self.database_url)
        return self.repository.validators_for_many(urls)


class LevelLogFormatter(LogFormatter):
    """Scrapy's log formatter, minus the messages below the crawl's ``LOG_LEVEL`` (never made, not filtered)."""

    def __init__(self, level: int = logging.DEBUG) -> None:
        self.level = level

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> LevelLogFormatter:
        level = logging.getLevelName(str(crawler.settings.get("LOG_LEVEL", "DEBUG")).upper())
        return cls(level if isinstance(level, int) else logging.DEBUG)

    def _keep(self, logkws: Any) -> Any:
        return logkws if logkws is None or logkws.get("level", logging.INFO) >= self.level else None

    def crawled(self, request: Request, response: Response, spider: Any) -> Any:
        if self.level > logging.DEBUG:
            return None
        return super().crawled(request, response, spider)

    def scraped(self, item: Any, response: Any, spider: Any) -> Any:
        if self.level > logging.DEBUG:
            return None
        return super().scraped(item, response, spider)

    def dropped(self, item: Any, exception: BaseException, response: Any, spider: Any) -> Any:
        return self._keep(super().dropped(item, exception, response, spider))
