"""Drop what is not an article, with a counted, logged reason.

A page the spider took for an article may still be a stub ("this article is
no longer available"), an index page with a headline, or an error page: it
never reaches the database.

``rejection_reason`` is also run by the extraction workers on the raw fields
of pooled pages (crawler/extract_pool.py ``prepare_page``), so this module
imports neither Scrapy nor itemadapter at import time: a worker must not pay
~50 MB for them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from scrapy.crawler import Crawler

logger = logging.getLogger(__name__)

#: The shortest body kept for a page that says it is paywalled (its teaser); below
#: ``NEWSINGEST_MIN_BODY_CHARS`` (default 200), the minimum for every other page.
PAYWALLED_MIN_BODY_CHARS = 80


def rejection_reason(adapter: Mapping[str, Any], min_body_chars: int) -> str | None:
    """Why this item (an ``ItemAdapter`` or a plain mapping of its fields) is not an article, or None."""
    if not (adapter.get("url") or "").strip():
        return "no_url"
    if not (adapter.get("title") or "").strip():
        return "no_title"
    body = (adapter.get("body") or "").strip()
    if not body:
        return "no_body"
    # A page that says it is paywalled shows a teaser: stored as such (``paywalled``), if it says something.
    if len(body) < (min(min_body_chars, PAYWALLED_MIN_BODY_CHARS) if adapter.get("paywalled") else min_body_chars):
        return "body_too_short"
    return None


def reject(stats: Any, url: str | None, reason: str) -> Exception:
    """Count and log a rejection; the ``DropItem`` to raise (shared with the extract stage)."""
    from scrapy.exceptions import DropItem

    stats.inc_value(f"newsingest/dropped/{reason}")
    logger.info("dropped %s: %s", url, reason)
    return DropItem(f"not an article ({reason}): {url}", log_level="DEBUG")


class ValidatePipeline:
    """Stage 1: reject items without a title or a real body.

    A ``PreparedArticle`` (pooled extraction) was checked by the extract stage on
    the same raw fields, before cleaning, and passes through.
    """

    def __init__(self, crawler: Crawler, min_body_chars: int) -> None:
        from crawler.extract_pool import PreparedArticle

        self.stats = crawler.stats
        self.min_body_chars = min_body_chars
        self.prepared = PreparedArticle

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls(crawler, crawler.settings.getint("NEWSINGEST_MIN_BODY_CHARS", 200))

    def process_item(self, item: Any) -> Any:
        if type(item) is self.prepared:
            return item
        from itemadapter import ItemAdapter

        adapter = ItemAdapter(item)
        reason = rejection_reason(adapter, self.min_body_chars)
        if reason is None:
            return item
        raise reject(self.stats, adapter.get("url"), reason)
