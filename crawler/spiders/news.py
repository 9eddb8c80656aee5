"""The generic news spider: discovery and following, nothing else.

`scrapy crawl news -a source=NAME` (or `newsingest crawl NAME`) reads the
source from the sources file, then finds article URLs through the source's
feeds, sitemaps (indexes, news sitemaps, robots.txt `Sitemap:` lines) and
start pages (links followed to the source's `follow_depth`). Every HTML page
is yielded as a `RawPage`; the extract stage (pipelines/extract.py) turns
article pages into `ArticleItem`s in worker processes, the pipelines do the rest.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.crawler import Crawler
from scrapy.http import Request, Response, TextResponse
from scrapy.linkextractors import IGNORED_EXTENSIONS, LinkExtractor

from crawler.discovery import DecompressionError, SitemapEntry, maybe_gunzip, parse_listing, sitemaps_from_robots
from crawler.extract_pool import RawPage
from crawler.middlewares import PAGE_KIND, NotModified, SeenRequest
from crawler.netguard import allow_private_networks_in_process
from crawler.signals import late_published_hint
from crawler.sources import Source, load_source, resolve_sources_path
from crawler.urls import strip_tracking

logger = logging.getLogger(__name__)

# Section and start pages before the articles sitemaps list: their teasers carry publication
# times the article pages may lack, and a page's hints must be known before it is fetched.
LINKED_PRIORITY = 6
LISTED_PRIORITY = 5
_FULL_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_DIGITS = re.compile(r"\d+")

# Documents that are never HTML pages worth following from a page.
_NOT_PAGES = [*IGNORED_EXTENSIONS, "xml", "rss", "atom", "gz", "json", "txt", "ics", "vcf"]


class NewsSpider(scrapy.Spider):
    name = "news"

    source: Source

    @classmethod
    def from_crawler(cls, crawler: Crawler, *args: Any, **kwargs: Any) -> NewsSpider:
        name = kwargs.get("source")
        if not name:
            raise ValueError("the news spider needs a source: scrapy crawl news -a source=NAME")
        path = resolve_sources_path(kwargs.get("sources_file") or crawler.settings.get("NEWSINGEST_SOURCES"))
        source = load_source(path, name)
        # Per-source settings override the project's but not the command line's.
        crawler.settings.setdict(dict(source.settings), priority="spider")
        if source.allow_private_networks:
            crawler.settings.set("NEWSINGEST_ALLOW_PRIVATE_NETWORKS", True, priority="spider")
        allow_private_networks_in_process(crawler.settings.getbool("NEWSINGEST_ALLOW_PRIVATE_NETWORKS"))
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider.source = source
        spider.allowed_domains = list(source.allowed_domains)
        return spider

    def __init__(self, *args: Any, source: str | None = None, sources_file: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.source_name = source
        self.sources_file = sources_file
        # What listings said of a URL (publication time, lastmod), shared with the request that
        # will fetch it: a later listing of the same URL is dropped by the dupefilter, but its
        # hints are merged into the first request's. Emptied as pages arrive or are skipped.
        self._listed_hints: dict[str, dict[str, str]] = {}
        # hash() of every URL whose page was handed to extraction (before and after redirects): a
        # publication time listed for one of them later is sent as a late hint (`_late_hint`).
        self._handled: set[int] = set()

    @property
    def _links(self) -> LinkExtractor:
        extractor = getattr(self, "_link_extractor", None)
        if extractor is None:
            deny = [self.source.exclude_url_pattern.pattern] if self.source.exclude_url_pattern else []
            # Domains are checked by source.is_allowed: LinkExtractor's allow_domains
            # compares host:port and would refuse every link on a site with a port.
            extractor = LinkExtractor(deny=deny, deny_extensions=_NOT_PAGES, canonicalize=False, unique=True)
            self._link_extractor = extractor
        return extractor

    # -- entry points --------------------------------------------------------------

    async def start(self) -> AsyncIterator[Request]:
        source = self.source
        for url in source.feeds:
            yield Request(url, callback=self.parse_listing, errback=self.on_error, priority=20,
                          meta={"newsingest_kind": "feed"})
        for url in source.sitemaps:
            callback = self.parse_robots if url.rstrip("/").endswith("/robots.txt") else self.parse_listing
            yield Request(url, callback=callback, errback=self.on_error, priority=10,
                          meta={"newsingest_kind": "sitemap"})
        for url in source.start_urls:
            yield Request(url, callback=self.parse_page, errback=self.on_error, priority=LINKED_PRIORITY,
                          meta={"follow_depth": 0, "newsingest_kind": "start"})

    # -- discovery documents ----------------------------------------------------------

    def parse_robots(self, response: Response) -> Iterator[Request]:
        for url in sitemaps_from_robots(response.body, response.url):
            yield Request(url, callback=self.parse_listing, errback=self.on_error, priority=10,
                          meta={"newsingest_kind": "sitemap"})

    def parse_listing(self, response: Response) -> Iterator[Request]:
        """A feed or sitemap: child sitemaps are followed, listed pages requested."""
        stats = self.crawler.stats
        kind = response.meta.get("newsingest_kind", "sitemap")
        try:
            body = maybe_gunzip(response.body, response.meta.get("download_maxsize")
                                or self.crawler.settings.getint("DOWNLOAD_MAXSIZE"))
        except DecompressionError as exc:
            stats.inc_value(f"newsingest/{kind}/invalid")
            logger.error("%s %s is unusable: %s", kind, response.url, exc)
            return
        listing = parse_listing(body, response.url)
        if listing.error:
            stats.inc_value(f"newsingest/{kind}/invalid")
            logger.error("%s %s: %s (%d URLs read before it)", kind, response.url, listing.error,
                         len(listing.entries))
        stats.inc_value(f"newsingest/{kind}/parsed")
        max_depth = self.source.follow_depth
        for entry in listing.entries:
            if listing.kind == "sitemapindex":
                yield Request(entry.loc, callback=self.parse_listing, errback=self.on_error, priority=10,
                              meta={"newsingest_kind": "sitemap"})
                continue
            stats.inc_value(f"newsingest/discovered/{kind}")
            url = strip_tracking(entry.loc)
            self._late_hint(url, entry.news_publication_date or entry.published)
            meta: dict[str, Any] = {"follow_depth": max_depth, "newsingest_kind": PAGE_KIND, "newsingest_listed": True}
            meta["newsingest_hints"] = self._remember_hints(url, entry)
            # Listed pages are complete on their own: their links are not followed.
            yield Request(url, callback=self.parse_page, errback=self.on_error, priority=LISTED_PRIORITY, meta=meta)

    def _remember_hints(self, url: str, entry: SitemapEntry) -> dict[str, str]:
        """The hints a listing gives for `url`, merged into those of an earlier listing of it.

        A news sitemap's or feed's timestamp has the seconds a visible dateline lacks; a
        sitemap's lastmod dates the last change. The news sitemap wins over a feed.
        """
        new = {key: value for key, value in (("published_at", entry.news_publication_date),
                                             ("feed_published_at", entry.published),
                                             ("modified_at", entry.lastmod)) if value}
        # Kept even when empty: a section page's teaser may add a time before the page is fetched.
        hints = self._listed_hints.setdefault(url, {})
        for key, value in new.items():
            if key == "published_at":
                hints["published_at"] = value
            elif key == "feed_published_at":
                hints.setdefault("published_at", value)
            else:
                hints.setdefault(key, value)
        return hints

    # -- pages -----------------------------------------------------------------

    def parse_page(self, response: Response) -> Iterator[RawPage | Request]:
        """Hand the page to the extract stage (pipelines/extract.py); follow links within the depth budget.

        Whether the page is an article, and its fields, are decided by the extract
        stage, off the reactor thread: the spider only finds and yields.
        """
        stats = self.crawler.stats
        if not isinstance(response, TextResponse):
            stats.inc_value("newsingest/pages/not_text")
            return
        stats.inc_value("newsingest/pages/parsed")
        headers = response.headers
        fetched_at = datetime.now(UTC)
        hints: dict[str, Any] = dict(self._pop_hints(response.request) or {})
        self._handled.add(hash(response.url))
        if response.request is not None:
            self._handled.add(hash(_listed_url(response.request)))
        last_modified = _header(headers, b"Last-Modified")
        if last_modified:
            hints.setdefault("modified_at", last_modified)
        hints["fetched_at"] = fetched_at
        yield RawPage(
            source=self.source.name,
            url=response.url,
            body=response.body,
            content_type=_header(headers, b"Content-Type"),
            http_status=response.status,
            etag=_header(headers, b"ETag"),
            last_modified=last_modified,
            fetched_at=fetched_at,
            meta={"hints": hints},
        )
        yield from self._follow(response)

    def _follow(self, response: Response) -> Iterator[Request]:
        depth = response.meta.get("follow_depth", self.source.follow_depth)
        if depth >= self.source.follow_depth:
            if not response.meta.get("newsingest_listed"):
                self._teaser_hints_only(response)
            return
        next_pages = set(response.xpath('//link[@rel="next"]/@href | //a[@rel="next"]/@href').getall())
        next_pages = {response.urljoin(href) for href in next_pages}
        # The listing's other numbered pages ("1 2 … 6 … 12") are shaped like its "next" link.
        page_shapes = {_DIGITS.sub("#", url) for url in next_pages}
        teaser_times = self._teaser_times(response)
        for link in self._links.extract_links(response):
            if not self.source.is_allowed(link.url):
                continue
            url = strip_tracking(link.url)
            meta: dict[str, Any] = {"newsingest_kind": PAGE_KIND}
            published = teaser_times.get(link.url)
            if published and not self._late_hint(url, published):
                meta["newsingest_hints"] = self._remember_hints(url, SitemapEntry(url, published=published))
            # Pagination of a listing stays at the listing's depth, whichever of its links is met first.
            pagination = link.url in next_pages or _DIGITS.sub("#", link.url) in page_shapes
            meta["follow_depth"] = depth + (0 if pagination else 1)
            yield Request(url, callback=self.parse_page, errback=self.on_error, priority=LINKED_PRIORITY, meta=meta)

    def _teaser_hints_only(self, response: Response) -> None:
        """A linked page at the depth limit (a section's later pages, often reached through a numbered link
        rather than "next"): its links are not followed, but its teaser times still count, for pages
        already handled (late hints) or already requested."""
        for href, published in self._teaser_times(response).items():
            url = strip_tracking(href)
            if not self._late_hint(url, published) and url in self._listed_hints:
                self._remember_hints(url, SitemapEntry(url, published=published))

    @staticmethod
    def _teaser_times(response: Response) -> dict[str, str]:
        """Link URL → the timestamp of the teaser it sits in, where the teaser shows exactly one.

        Section and tag pages often carry an article's publication time to the second
        (``<time datetime>``) where the article page itself prints only a day and a minute.
        """
        times: dict[str, str] = {}
        for teaser in response.xpath("//article[count(.//time[@datetime]) = 1] | //li[count(.//time[@datetime]) = 1]"):
            value = teaser.xpath(".//time/@datetime").get("")
            if not _FULL_TIMESTAMP.search(value):
                continue
            # The headline's link names the story; byline and tag links only when there is no headline link.
            hrefs = (teaser.xpath(".//*[self::h1 or self::h2 or self::h3 or self::h4]//a/@href").getall()
                     or teaser.xpath(".//a/@href").getall())
            for href in hrefs:
                times.setdefault(response.urljoin(href), value)
        return times

    def _late_hint(self, url: str, published: str | None) -> bool:
        """Send a publication time listed for `url` after its page went to extraction (a section page
        parsed after the article: sitemap-listed pages are fetched in parallel with the pagination
        that lists them) to the store stage, which applies it to the article; True when sent."""
        if not published or hash(url) not in self._handled:
            return False
        self.crawler.stats.inc_value("newsingest/dates/late_hints")
        self.crawler.signals.send_catch_log(late_published_hint, url=url, published_at=published)
        return True

    def _pop_hints(self, request: Request | None) -> dict[str, str] | None:
        """The listing hints of a request, forgotten by the spider once its page is handled.

        Looked up by URL too: a page first requested from a plain link (no hints of its own) may have
        been given a time by a teaser while that request waited, and a later sitemap's request of it was
        dropped by the dupefilter.
        """
        if request is None:
            return None
        listed = self._listed_hints.pop(_listed_url(request), None)
        hints = request.meta.get("newsingest_hints")
        if hints is None or listed is None or listed is hints:
            return hints if hints is not None else listed
        return {**listed, **hints}

    def on_error(self, failure: Any) -> None:
        """Count fetch failures per kind; Scrapy already logged the details."""
        self._pop_hints(getattr(failure, "request", None))
        if failure.check(SeenRequest, NotModified):
            return  # counted by the incremental middleware (newsingest/skipped/seen, newsingest/not_modified)
        request = getattr(failure, "request", None)
        kind = failure.type.__name__ if getattr(failure, "type", None) else "unknown"
        self.crawler.stats.inc_value(f"newsingest/fetch_failed/{kind}")
        logger.info("fetch failed: %s (%s)", request.url if request else "?", failure.getErrorMessage())


def _listed_url(request: Request) -> str:
    """The URL a listing named for a request: before any redirect."""
    return (request.meta.get("redirect_urls") or [request.url])[0]


def _header(headers: Any, name: bytes) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)

