"""Every crawl writes its `crawl_runs` record, failures included.

The record is created when the spider opens (status `running`) and
completed when it closes, with the counts from the crawl stats. A crawl the
scheduler started gets its record's id in the `NEWSINGEST_RUN_ID` setting
(`newsingest crawl NAME --run-id N`) and completes that record instead of
opening a second one. Records left `running` by a killed crawl of the same
source on this host are marked `abandoned` when the next crawl starts.

On a Scrapyd node (docs/scale-out.md) the record also carries the job id the
scheduler dispatched: the crawl adopts it only when its own job id (Scrapyd's
``jobid``, the spider's ``_job``) matches, so a stale dispatch of an earlier
attempt stops at once instead of crawling beside the current one. While it
runs, the crawl writes ``heartbeat_at`` every ``NEWSINGEST_HEARTBEAT_SECONDS``:
the scheduler, on another machine, cannot see the process, only that time.
"""

from __future__ import annotations

import logging
from typing import Any

from scrapy import signals
from scrapy.crawler import Crawler
from twisted.internet import task, threads

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
                 run_id: int | None = None, heartbeat: float = 0.0) -> None:
        self.crawler = crawler
        self.database_url = database_url
        self.trigger = trigger
        self.given_run_id = run_id
        self.heartbeat_seconds = heartbeat
        self.heartbeat: task.LoopingCall | None = None
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
                   int(run_id) if run_id not in (None, "") else None,
                   crawler.settings.getfloat("NEWSINGEST_HEARTBEAT_SECONDS", 0.0))

    def spider_opened(self, spider: Any) -> None:
        source = getattr(spider, "source", None)
        name = getattr(source, "name", None) or spider.name
        self.repository = open_repository(self.database_url)
        job = getattr(spider, "_job", None)  # Scrapyd's jobid
        if self.given_run_id is not None and job:
            if not self.repository.adopt_job_run(self.given_run_id, name, str(job)):
                # The scheduler gave up on this dispatch (closed the run, or gave it to another
                # attempt): crawling now could overlap the source's current run.
                logger.error("run record %d of %s is not open for job %s (a stale dispatch); stopping",
                             self.given_run_id, name, job)
                self.crawler.stats.set_value("newsingest/run_status", "failed")
                self._close_soon(spider, "stale_dispatch")
                return
            self.run_id = self.given_run_id
        elif self.given_run_id is not None:
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
        if self.heartbeat_seconds > 0:
            self.heartbeat = task.LoopingCall(self._beat)
            self.heartbeat.start(self.heartbeat_seconds, now=False)

    def _beat(self) -> Any:
        """One heartbeat, off the reactor thread; a database hiccup only costs this beat."""
        if self.repository is None or self.run_id is None:
            return None
        deferred = threads.deferToThread(self.repository.heartbeat_run, self.run_id)
        deferred.addErrback(lambda failure: logger.warning("heartbeat of run %s failed: %s", self.run_id,
                                                           failure.getErrorMessage()))
        return deferred

    def _close_soon(self, spider: Any, reason: str) -> None:
        from twisted.internet import reactor

        def close() -> None:
            engine = self.crawler.engine
            if engine is None:
                return
            if hasattr(engine, "close_spider_async"):  # Scrapy >= 2.14
                from scrapy.utils.defer import deferred_from_coro

                deferred_from_coro(engine.close_spider_async(reason=reason))
            else:  # pragma: no cover - Scrapy 2.13
                engine.close_spider(spider, reason)

        reactor.callLater(0, close)  # type: ignore[attr-defined]

    def spider_error(self, failure: Any, response: Any, spider: Any) -> None:
        self.error_lines.append(f"{getattr(response, 'url', '?')}: {failure.getErrorMessage()}")
        del self.error_lines[:-ERROR_TAIL_LINES]

    def spider_closed(self, spider: Any, reason: str) -> None:
        if self.heartbeat is not None and self.heartbeat.running:
            self.heartbeat.stop()
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
