"""Page → article decision and fields, runnable inline or in a pool of worker processes.

Extraction is the costly step of a crawl (a few ms of CPU per page) and
Scrapy runs its callbacks and pipelines on one thread, so the extract
pipeline stage (pipelines/extract.py) sends each fetched page here: the raw
bytes and the Content-Type go to a worker process (bytes pickle as one
copy; decoding happens in the worker), which decodes, extracts and decides
whether the page is an article exactly as the spider did inline
(``extract_page(...).is_article`` and ``source.is_article_url``).

Nothing here knows Scrapy: ``process_page`` is a pure function of
``(source, url, body, content_type)``. ``ExtractPool`` wraps a
``ProcessPoolExecutor`` (spawn context, so workers never inherit the
reactor; each imports the extractor once, in its initializer).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import traceback
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from crawler.sources import Source

logger = logging.getLogger(__name__)

# Outcomes of one page.
ARTICLE = "article"
NOT_ARTICLE = "not_article"
ERROR = "extract_error"


@dataclass(slots=True)
class RawPage:
    """A fetched HTML page, as the spider hands it to the extract stage."""

    source: str
    url: str
    body: bytes
    content_type: str | None = None
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    fetched_at: datetime | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PageResult:
    """What the extractor made of a page."""

    outcome: str  # ARTICLE / NOT_ARTICLE / ERROR
    encoding_how: str | None = None  # decode_html's "how" (declared, bom, utf-8, detected, fallback)
    fields: dict[str, Any] | None = None  # raw extracted fields when outcome == ARTICLE
    error: str | None = None  # traceback text when outcome == ERROR


def process_page(source: Source, url: str, body: bytes, content_type: str | None,
                 hints: dict[str, Any] | None = None) -> PageResult:
    """Decode, extract, classify one page; `hints` are what a sitemap said of it (publication time)."""
    from crawler.encoding import decode_html
    from crawler.extract import extract_page

    text, encoding, how = decode_html(body, content_type)
    try:
        page = extract_page(text, url, encoding=encoding, overrides=source.extraction or None, hints=hints)
    except Exception:  # a broken page must not end the crawl
        return PageResult(ERROR, how, error=traceback.format_exc(limit=8))
    if page.is_article and source.is_article_url(url):
        return PageResult(ARTICLE, how, fields=page.fields)
    return PageResult(NOT_ARTICLE, how)


# -- the worker side -------------------------------------------------------------------

_worker_source: Source | None = None


def _init_worker(source: Source, log_level: int) -> None:
    global _worker_source
    _worker_source = source
    logging.basicConfig(level=log_level, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s")
    # Import the extractor (lxml, trafilatura, htmldate, ...) once per worker, up front.
    import crawler.encoding
    import crawler.extract  # noqa: F401


def _ready() -> int:
    return os.getpid()


def _work(url: str, body: bytes, content_type: str | None, hints: dict[str, Any] | None) -> PageResult:
    assert _worker_source is not None, "worker not initialised"
    return process_page(_worker_source, url, body, content_type, hints)


def picklable(source: Source) -> Source:
    """The source with its read-only mappings (mappingproxy cannot be pickled) as plain dicts."""
    return dataclasses.replace(source, settings=dict(source.settings), extraction=dict(source.extraction))


# -- the pool --------------------------------------------------------------------------


def default_workers() -> int:
    """One worker per core but one (the reactor thread needs a core); 0 (inline) on one core."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(0, cores - 1)


def resolve_workers(value: Any) -> int:
    """NEWSINGEST_EXTRACT_WORKERS: 'auto' / '' / None → default_workers(); else an int ≥ 0."""
    if value is None or str(value).strip().lower() in ("", "auto"):
        return default_workers()
    workers = int(value)
    if workers < 0:
        raise ValueError(f"NEWSINGEST_EXTRACT_WORKERS must be >= 0 or 'auto', not {value!r}")
    return workers


class ExtractPool:
    """A spawn-context process pool whose workers hold the source and the extractor."""

    def __init__(self, source: Source, workers: int) -> None:
        if workers < 1:
            raise ValueError("an ExtractPool needs at least one worker")
        self.workers = workers
        level = logging.getLogger().getEffectiveLevel()
        self.executor = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(picklable(source), level))
        # Start every worker now; `ready` completes once one of them has imported the extractor.
        futures = [self.executor.submit(_ready) for _ in range(workers)]
        self.ready: Future[int] = futures[0]

    def submit(self, url: str, body: bytes, content_type: str | None,
               hints: dict[str, Any] | None = None) -> Future[PageResult]:
        return self.executor.submit(_work, url, body, content_type, hints)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
