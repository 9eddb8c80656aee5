"""Page → article decision and fields, runnable inline or in a pool of worker processes.

Extraction is the costly step of a crawl (a few ms of CPU per page) and
Scrapy runs its callbacks and pipelines on one thread, so the extract
pipeline stage (pipelines/extract.py) sends each fetched page here: the raw
bytes and the Content-Type go to a worker process (bytes pickle as one
copy; decoding happens in the worker), which decodes, extracts and decides
whether the page is an article exactly as the spider did inline
(``extract_page(...).is_article`` and ``source.is_article_url``).

Pooled pages are *prepared* in the worker (``prepare_page``): besides the
extraction, the validate stage's check (``rejection_reason`` on the raw
fields) and the clean stage's ``clean_fields`` run there too, so the reactor
thread only gets a small dict of finished fields back (a ``PreparedArticle``,
which the validate and clean stages pass through). Same functions, same
order, same results as the inline path; only the process differs.

Nothing here knows Scrapy: ``process_page`` / ``prepare_page`` are pure
functions of the source and the page. The workers are plain ``python -m
crawler.extract_pool`` processes fed over their stdin/stdout (``worker_main``,
below); each imports the extractor once, before it answers that it is ready.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import re
import traceback
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from crawler.items import ArticleItem
from crawler.sources import Source
from storage.frames import serve

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
    # raw extracted fields when outcome == ARTICLE; for a prepared page, the item's cleaned fields
    fields: dict[str, Any] | None = None
    error: str | None = None  # traceback text when outcome == ERROR
    rejected: str | None = None  # prepared pages: the validate stage's reason (on the raw fields), or None


@dataclass(slots=True)
class PreparedArticle(ArticleItem):
    """An article item already validated and cleaned by ``prepare_page`` (the validate and clean stages
    pass it through; every other stage treats it as an ``ArticleItem``)."""

    minhash: bytes | None = None  # the near-duplicate signature of the cleaned body, when the store takes it


@dataclass(frozen=True, slots=True)
class Preparation:
    """What ``prepare_page`` needs from the crawl's settings (the validate and clean stages' own)."""

    min_body_chars: int = 200  # NEWSINGEST_MIN_BODY_CHARS
    site_name: str | None = None  # NEWSINGEST_SITE_NAME (the clean stage's fallback)
    minhash: bool = False  # compute the signature here (only when the store passes it to the repository)


_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)


def content_hash(body: str) -> str:
    """SHA-256 of the body's words: case, punctuation and spacing do not count (the dedupe stage's
    identity of a text; here so that the extraction workers compute it without importing Scrapy)."""
    text = unicodedata.normalize("NFKC", body).casefold()
    words = _NON_WORD.sub(" ", text).split()
    return hashlib.sha256(" ".join(words).encode("utf-8")).hexdigest()


def process_page(source: Source, url: str, body: bytes, content_type: str | None,
                 hints: dict[str, Any] | None = None) -> PageResult:
    """Decode, extract, classify one page; `hints` are what a sitemap said of it (publication time)."""
    from crawler.encoding import decode_html
    from crawler.extract import extract_page

    text, encoding, how = decode_html(body, content_type)
    try:
        page = extract_page(text, url, encoding=encoding, overrides=source.extraction or None, hints=hints,
                            zone=ZoneInfo(source.timezone) if source.timezone else None)
    except Exception:  # a broken page must not end the crawl
        return PageResult(ERROR, how, error=traceback.format_exc(limit=8))
    if page.is_article and source.is_article_url(url):
        return PageResult(ARTICLE, how, fields=page.fields)
    return PageResult(NOT_ARTICLE, how)


def article_values(source: Source, page: RawPage, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``ArticleItem`` fields for a page and its raw extracted fields (the item the pipeline works on)."""
    return {
        "source": source.name,
        "url": page.url,
        "declared_canonical_url": fields.get("canonical_url"),
        "title": fields.get("title"),
        "subtitle": fields.get("subtitle"),
        "body": fields.get("body"),
        "authors": list(fields.get("authors") or []),
        "published_at": fields.get("published_at"),
        "modified_at": fields.get("modified_at"),
        "language": fields.get("language") or source.language,
        "section": fields.get("section"),
        "tags": list(fields.get("tags") or []),
        "image_url": fields.get("image_url"),
        "site_name": fields.get("site_name") or source.site_name,
        "paywalled": fields.get("paywalled"),
        "fetched_at": page.fetched_at or datetime.now(UTC),
        "http_status": page.http_status,
        "etag": page.etag,
        "last_modified": page.last_modified,
    }


_ITEM_FIELDS = frozenset(f.name for f in dataclasses.fields(ArticleItem))


def prepare_page(source: Source, page: RawPage, prep: Preparation) -> PageResult:
    """``process_page``, then what the validate and clean stages would do to the item, in their order.

    Validation runs on the raw fields (as ValidatePipeline sees them), cleaning is
    ``clean_fields`` with the clean stage's site name; the result's ``fields`` are
    the finished item's (``PreparedArticle(**fields)``), so only a small dict
    travels back from a worker. They include what the dedupe stage would compute
    (``canonical_url``, the cleaned body's ``content_hash``: it keeps them for a
    ``PreparedArticle``) and, with ``prep.minhash``, the near-duplicate signature
    (storage/signature.py; the repository stores it as given).
    """
    from crawler.urls import choose_canonical
    from pipelines.clean import clean_fields
    from pipelines.validate import rejection_reason

    result = process_page(source, page.url, page.body, page.content_type, page.meta.get("hints"))
    if result.outcome != ARTICLE or result.fields is None:
        return result
    values = article_values(source, page, result.fields)
    result.rejected = rejection_reason(values, prep.min_body_chars)
    if result.rejected is not None:
        result.fields = None
        return result
    cleaned = clean_fields(values, site_name=values["site_name"] or prep.site_name)
    for key, value in cleaned.items():  # the clean stage only writes the item's own fields
        if key in _ITEM_FIELDS:
            values[key] = value
    # The dedupe stage's canonical URL and content hash of the cleaned item, and (below) the store's
    # signature: computed here so neither the reactor thread nor the writer spends its time on them.
    values["canonical_url"] = choose_canonical(values["url"], values["declared_canonical_url"])
    values["content_hash"] = content_hash(values["body"] or "")
    if prep.minhash:
        from storage.signature import minhash

        values["minhash"] = minhash(values["body"] or "")
    result.fields = values
    return result


# -- the worker side -------------------------------------------------------------------

def _init_worker(log_level: int, prep: Preparation) -> None:
    """Log at the crawl's level; import the extractor once, before the worker says it is ready."""
    logging.basicConfig(level=log_level, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s")
    # lxml, trafilatura, htmldate, ...: seconds of imports that no page should wait for
    import trafilatura  # noqa: F401

    import crawler.encoding
    import crawler.extract  # noqa: F401
    import pipelines.clean  # noqa: F401

    if prep.minhash:
        import storage.signature  # noqa: F401


def picklable(source: Source) -> Source:
    """The source with its read-only mappings (mappingproxy cannot be pickled) as plain dicts."""
    return dataclasses.replace(source, settings=dict(source.settings), extraction=dict(source.extraction))


# -- how many workers ---------------------------------------------------------------------


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


# -- the pipe worker (``python -m crawler.extract_pool``) -------------------------------------
#
# The crawl talks to these workers over their stdin/stdout from the reactor thread itself
# (pipelines/extract.py ``WorkerPool``): no executor threads in the crawl process, whose hand-offs
# each wait for the reactor thread to release the GIL (up to the 5 ms switch interval per hop)
# and starved a ProcessPoolExecutor worker while the reactor was busy. Frames are a 4-byte
# big-endian length and a pickle: first ``(source, log_level, preparation)``, then
# ``(seq, RawPage)``; the worker answers ``(0, pid)`` once the extractor is imported, then
# ``(seq, PageResult)`` per page, in order. The first worker also writes the store stage's
# batches (``(seq, StoreBatch)``, answered ``(seq, (ok, StoreResult or error text))``), so
# the crawl needs no separate writer process (pipelines/store.py).

@dataclass(frozen=True, slots=True)
class StoreBatch:
    """A batch of the store stage for a worker that also writes (pipelines/store.py): written with
    storage/writer.py's ``_write_batch``; the answer is ``(True, StoreResult)`` or ``(False, error text)``."""

    database_url: str
    batch: list[dict[str, Any]]
    run_id: int | None


def _store(message: StoreBatch) -> tuple[bool, Any]:
    """The batch written and answered as the writer process answers (storage/writer.py ``_answer``)."""
    # Imported on the first batch: a worker that never writes does not load SQLAlchemy.
    from storage import writer

    if writer._writer_url != message.database_url:
        writer._init_writer(message.database_url)
    return writer._answer((message.batch, message.run_id))


def worker_main() -> int:
    """Serve pages (and store batches) from stdin until it closes (the crawl closing its end)."""
    return serve(_start)


def _start(init: tuple[Source, int, Preparation]) -> Any:
    source, level, prep = init
    _init_worker(level, prep)

    def answer(work: RawPage | StoreBatch) -> Any:
        try:
            return _store(work) if isinstance(work, StoreBatch) else prepare_page(source, work, prep)
        except Exception:  # never lose an answer: the crawl waits for it
            error = traceback.format_exc(limit=8)
            return (False, error.strip().splitlines()[-1]) if isinstance(work, StoreBatch) else \
                PageResult(ERROR, error=error)

    return answer


if __name__ == "__main__":
    # Run the imported module's loop, not this __main__ copy's: results must pickle as
    # crawler.extract_pool.PageResult, which the crawl can load.
    from crawler.extract_pool import worker_main as _main

    raise SystemExit(_main())
