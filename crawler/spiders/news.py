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
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import scrapy
from scrapy.crawler import Crawler
from scrapy.http import Request, Response, TextResponse
from scrapy.linkextractors import IGNORED_EXTENSIONS, LinkExtractor

from crawler.discovery import DecompressionError, maybe_gunzip, parse_listing, sitemaps_from_robots
from crawler.extract_pool import RawPage
from crawler.middlewares import PAGE_KIND, NotModified, SeenRequest
from crawler.netguard import allow_private_networks_in_process
from crawler.sources import Source, load_source, resolve_sources_path
from crawler.urls import strip_tracking

logger = logging.getLogger(__name__)

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
            yield Request(url, callback=self.parse_page, errback=self.on_error, priority=0,
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
            meta: dict[str, Any] = {"follow_depth": max_depth, "newsingest_kind": PAGE_KIND}
            if entry.news_publication_date:
                # A news sitemap's timestamp has the seconds a visible dateline lacks.
                meta["newsingest_hints"] = {"published_at": entry.news_publication_date}
            # Listed pages are complete on their own: their links are not followed.
            yield Request(strip_tracking(entry.loc), callback=self.parse_page, errback=self.on_error,
                          priority=5, meta=meta)

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
        yield RawPage(
            source=self.source.name,
            url=response.url,
            body=response.body,
            content_type=_header(headers, b"Content-Type"),
            http_status=response.status,
            etag=_header(headers, b"ETag"),
            last_modified=_header(headers, b"Last-Modified"),
            fetched_at=datetime.now(UTC),
            meta={"hints": response.meta["newsingest_hints"]} if "newsingest_hints" in response.meta else {},
        )
        yield from self._follow(response)

    def _follow(self, response: Response) -> Iterator[Request]:
        depth = response.meta.get("follow_depth", self.source.follow_depth)
        if depth >= self.source.follow_depth:
            return
        next_pages = set(response.xpath('//link[@rel="next"]/@href | //a[@rel="next"]/@href').getall())
        next_pages = {response.urljoin(href) for href in next_pages}
        for link in self._links.extract_links(response):
            if not self.source.is_allowed(link.url):
                continue
            url = strip_tracking(link.url)
            # Pagination of a listing stays at the listing's depth.
            hop = 0 if link.url in next_pages else 1
            yield Request(url, callback=self.parse_page, errback=self.on_error,
                          meta={"follow_depth": depth + hop, "newsingest_kind": PAGE_KIND})

    def on_error(self, failure: Any) -> None:
        """Count fetch failures per kind; Scrapy already logged the details."""
        if failure.check(SeenRequest, NotModified):
            return  # counted by the incremental middleware (newsingest/skipped/seen, newsingest/not_modified)
        request = getattr(failure, "request", None)
        kind = failure.type.__name__ if getattr(failure, "type", None) else "unknown"
        self.crawler.stats.inc_value(f"newsingest/fetch_failed/{kind}")
        logger.info("fetch failed: %s (%s)", request.url if request else "?", failure.getErrorMessage())


def _header(headers: Any, name: bytes) -> str | None:
    value = headers.get(name)
    if not value:
        return None
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)

