"""Give each article its identity: canonical URL and content hash.

The canonical URL is the page's rel=canonical/og:url when it is on the same
site, else the fetched URL, normalized (crawler/urls.py). A second item with
the same canonical URL in one run is dropped here, except the canonical page
itself arriving after a copy that declares it canonical (a syndicated, AMP or
print page): the page's own text must win, whatever order the crawl fetched
them in, and the store stage puts it in place of the copy's. A dropped page
is still remembered: the store stage records its URL and validators under the
row (`DuplicateInRun`, ``article_urls``), so the next crawl does not fetch and
extract it again. One already in
the database becomes an update of that row in the store stage. The content hash
(of the normalized body) lets the store stage link the same text under
another URL to its first row (`duplicate_of`).
"""

from __future__ import annotations

import logging
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from crawler.extract_pool import PreparedArticle, content_hash
from crawler.urls import choose_canonical, is_own_page

__all__ = ["DedupePipeline", "DuplicateInRun", "content_hash"]

logger = logging.getLogger(__name__)


class DuplicateInRun(DropItem):
    """A page whose canonical URL this run already has an item for: not stored again, but its URL
    is (the store stage listens for this drop and records the page under its canonical URL's row)."""

    def __init__(self, message: str, *, url: str, canonical_url: str, etag: str | None,
                 last_modified: str | None) -> None:
        super().__init__(message, log_level="DEBUG")
        self.url = url
        self.canonical_url = canonical_url
        self.etag = etag
        self.last_modified = last_modified


class DedupePipeline:
    """Stage 3: canonical URL + content hash; one item per canonical URL per run."""

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        # canonical URL -> whether the canonical page itself was among this run's items
        self.seen: dict[str, bool] = {}

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        prepared = isinstance(item, PreparedArticle)  # its extraction worker computed both (same functions)
        canonical = (item.canonical_url if prepared and item.canonical_url
                     else choose_canonical(adapter["url"], adapter.get("declared_canonical_url")))
        adapter["canonical_url"] = canonical
        own = is_own_page(adapter["url"], canonical)
        had_own = self.seen.get(canonical)
        if had_own is not None and (had_own or not own):
            self.stats.inc_value("newsingest/duplicates/url")
            logger.debug("duplicate of %s in this run: %s", canonical, adapter["url"])
            raise DuplicateInRun(f"duplicate URL in this run: {canonical}", url=adapter["url"], canonical_url=canonical,
                                 etag=adapter.get("etag"), last_modified=adapter.get("last_modified"))
        if had_own is not None:
            self.stats.inc_value("newsingest/duplicates/own_page_after_copy")
        self.seen[canonical] = own
        if not (prepared and item.content_hash):
            adapter["content_hash"] = content_hash(adapter["body"])
        return item
