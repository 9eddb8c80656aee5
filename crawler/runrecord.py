"""Every crawl writes its `crawl_runs` record, failures included.

The record is created when the spider opens (status `running`) and
completed when it closes, with the counts from the crawl stats. A crawl the
scheduler started gets its record's id in the `NEWSINGEST_RUN_ID` setting
(`newsingest crawl NAME --run-id N`) and completes that record instead of
opening a second one. Records left `running` by a killed crawl of the same
source on this host are marked `abandoned` when the next crawl starts.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler

from storage.repository import Repository, open_repository

logger = logging.getLogger(__name__)

ERROR_TAIL_LINES = 20


def run_counts(stats: dict[str, Any]) -> dict[str, int]:
    """Map Scrapy/newsingest stats to the run record's counters."""

    def total(prefix: str) -> int:
        return sum(int(v) for k, v in stats.items() if k.startswith(prefix) and isinstance(v, int | float))

    return {
        "pages": int(stats.get("response_received_count", 0)),
        "items_stored": int(stats.get("newsingest/stored/new", 0)) + int(stats.get("newsingest/duplicates/content", 0)),
        "items_updated": int(stats.get("newsingest/stored/updated", 0)),
        "dropped": total("newsingest/dropped/"),
        "duplicates": int(stats.get("newsingest/duplicates/url", 0))
        + int(stats.get("newsingest/duplicates/content", 0)),
        "errors": int(stats.get("log_count/ERROR", 0)),
    }


def run_status(reason: str, stats: dict[str, Any]) -> tuple[str, str | None]:
    """Decide succeeded / failed / timed_out, with the reason for a failure."""
    if reason == "closespider_timeout":
        return "timed_out", "the crawl reached its time limit (CLOSESPIDER_TIMEOUT)"
    if stats.get("newsingest/store/fatal_error"):
        return "failed", f"database unavailable: {stats['newsingest/store/fatal_error']}"
    if stats.get("newsingest/store/failed"):
        return "failed", f"{stats['newsingest/store/failed']} articles could not be stored"
    if reason != "finished":
        return "failed", f"the crawl ended early: {reason}"
    if not stats.get("response_received_count"):
        return "failed", "no page could be fetched (site down, blocked by robots.txt or wrong URLs)"
    ok_pages = sum(int(v) for k, v in stats.items()
                   if k.startswith("downloader/response_status_count/2") and isinstance(v, int))
    if not ok_pages:
        return "failed", "every response was an HTTP error"
    return "succeeded", None


class CrawlRunRecorder:
    """Extension: open and close the run record of each crawl."""

    def __init__(self, crawler: Crawler, database_url: str | None, trigger: str,
                 run_id: int | None = None) -> None:
        self.crawler = crawler
        self.database_url = database_url
        self.trigger = trigger
        self.given_run_id = run_id
        self.repository: Repository | None = None
        self.run_id: int | None = None
        self.error_lines: list[str] = []
        crawler.signals.connect(self.spider_opened, signal=signals.spider_opened)
        crawler.signals.connect(self.spider_closed, signal=signals.spider_closed)
        crawler.signals.connect(self.spider_error, signal=signals.spider_error)

    @classmethod
    def from_crawler(cls, crawler: Crawler) -> CrawlRunRecorder:
        run_id = crawler.settings.get("NEWSINGEST_RUN_ID")
        return cls(crawler, crawler.settings.get("NEWSINGEST_DATABASE_URL"),
                   crawler.settings.get("NEWSINGEST_RUN_TRIGGER", "manual"),
                   int(run_id) if run_id not in (None, "") else None)

    def spider_opened(self, spider: Any) -> None:
        source = getattr(spider, "source", None)
        name = getattr(source, "name", None) or spider.name
        self.repository = open_repository(self.database_url)
        if self.given_run_id is not None:
            # Adopt first: the record then carries this pid, so the stale sweep below skips it.
            if self.repository.adopt_run(self.given_run_id, name):
                self.run_id = self.given_run_id
            else:
                logger.warning("run record %d is not an open run of %s; opening a new one",
                               self.given_run_id, name)
        abandoned = self.repository.abandon_stale_runs(name)
        if abandoned:
            logger.warning("marked %d earlier run(s) of %s as abandoned (their process is gone)",
                           abandoned, name)
        self.repository.ensure_source(name, getattr(source, "site_name", None))
        if self.run_id is None:
            self.run_id = self.repository.start_run(name, self.trigger)
        self.crawler.stats.set_value("newsingest/run_id", self.run_id)
        logger.info("crawl run %d of source %s started (trigger: %s)", self.run_id, name, self.trigger)

    def spider_error(self, failure: Any, response: Any, spider: Any) -> None:
        self.error_lines.append(f"{getattr(response, 'url', '?')}: {failure.getErrorMessage()}")
        del self.error_lines[:-ERROR_TAIL_LINES]

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.repository is None or self.run_id is None:
            return
        stats = dict(self.crawler.stats.get_stats())
        status, error = run_status(reason, stats)
        if error and self.error_lines:
            error = error + "\n" + "\n".join(self.error_lines)
        elif self.error_lines and status == "succeeded":
            error = "\n".join(self.error_lines)
        self.crawler.stats.set_value("newsingest/run_status", status)
        self.repository.finish_run(self.run_id, status=status, counts=run_counts(stats), finish_reason=reason,
                                   error=error, stats=_jsonable(stats))
        logger.info("crawl run %d finished: %s%s", self.run_id, status, f" ({error.splitlines()[0]})" if error else "")


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in stats.items():
        if isinstance(value, bool | int | float | str) or value is None:
            out[key] = value
        else:
            out[key] = str(value)
    return out
