"""Request-side components: each a small `from_crawler` class.

IncrementalMiddleware skips article URLs already stored before they are
requested again, and makes recent ones conditional requests (see its docstring).

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
from datetime import datetime, timedelta
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware as ScrapyRobotsTxtMiddleware
from scrapy.exceptions import IgnoreRequest, NotConfigured
from scrapy.http import Request, Response
from scrapy.utils.defer import maybe_deferred_to_future
from scrapy.utils.httpobj import urlparse_cached
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread

from crawler.urls import fetched_url_key, strip_variant
from storage.models import utcnow
from storage.repository import Repository, open_repository

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
    The lookup is one round of indexed queries per request, run off the reactor thread.
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
        page = fetched_url_key(request.url)
        if page is None:
            return
        keys = list(dict.fromkeys((page, strip_variant(page), request.url)))
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
