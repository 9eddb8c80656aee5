"""Drop what is not an article, with a counted, logged reason.

A page the spider took for an article may still be a stub ("this article is
no longer available"), an index page with a headline, or an error page: it
never reaches the database.
"""

from __future__ import annotations

import logging
from typing import Any

from itemadapter import ItemAdapter
from scrapy.crawler import Crawler
from scrapy.exceptions import DropItem

logger = logging.getLogger(__name__)


def rejection_reason(adapter: ItemAdapter, min_body_chars: int) -> str | None:
    """Why this item is not an article, or None when it is one."""
    if not (adapter.get("url") or "").strip():
        return "no_url"
    if not (adapter.get("title") or "").strip():
        return "no_title"
    body = (adapter.get("body") or "").strip()
    if not body:
        return "no_body"
    if len(body) < min_body_chars:
        return "body_too_short"
    return None


class ValidatePipeline:
    """Stage 1: reject items without a title or a real body."""

    def __init__(self, crawler: Crawler, min_body_chars: int) -> None:
        self.stats = crawler.stats
        self.min_body_chars = min_body_chars

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> ValidatePipeline:
        return cls(crawler, crawler.settings.getint("NEWSINGEST_MIN_BODY_CHARS", 200))

    def process_item(self, item: Any) -> Any:
        adapter = ItemAdapter(item)
        reason = rejection_reason(adapter, self.min_body_chars)
        if reason is None:
            return item
        self.stats.inc_value(f"newsingest/dropped/{reason}")
        logger.info("dropped %s: %s", adapter.get("url"), reason)
        raise DropItem(f"not an article ({reason}): {adapter.get('url')}", log_level="DEBUG")
