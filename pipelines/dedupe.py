"""Give each article its identity: canonical URL and content hash.

The canonical URL is the page's rel=canonical/og:url when it is on the same
site, else the fetched URL, normalized (crawler/urls.py). A second item with
the same canonical URL in one run is dropped here; one already in the
database becomes an update of that row in the store stage. The content hash
(of the normalized body) lets the store stage link the same text under
another URL to its first row (`duplicate_of`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import unicodedata
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

from crawler.urls import choose_canonical

logger = logging.getLogger(__name__)

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def content_hash(body: str) -> str:
    """SHA-256 of the body's words: case, punctuation and spacing do not count."""
    text = unicodedata.normalize("NFKC", body).casefold()
    words = _NON_WORD.sub(" ", text).split()
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()


class DedupePipeline:
    """Stage 3: canonical URL + content hash; one item per canonical URL per run."""

    def __init__(self, crawler: Crawler) -> None:
        self.stats = crawler.stats
        self.seen: set[str] = set()

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> DedupePipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        canonical = choose_canonical(adapter["url"], adapter.get("declared_canonical_url"))
        adapter["canonical_url"] = canonical
        if canonical in self.seen:
            self.stats.inc_value("newsingest/duplicates/url")
            logger.debug("duplicate of %s in this run: %s", canonical, adapter["url"])
            raise DropItem(f"duplicate URL in this run: {canonical}", log_level="DEBUG")
        self.seen.add(canonical)
        adapter["content_hash"] = content_hash(adapter["body"])
        return item
