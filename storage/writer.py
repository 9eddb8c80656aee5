"""The store's writer process: ``python -m storage.writer``, batches in over stdin, results out over stdout.

The store stage (pipelines/store.py) hands its batches to this process so that the
ORM work of a batch (a few ms per article) runs on its own interpreter, not on the
crawl process's GIL next to the reactor. It imports only storage (SQLAlchemy, the
driver, numpy for signatures): not Scrapy, Twisted or itemadapter, so it costs
about 60 MB instead of the ~155 MB of a copy of the crawl process's imports.

Why a plain ``python -m`` child started by the reactor, not a ``multiprocessing``
pool: ``spawn`` and ``forkserver`` both re-import the parent's ``__main__`` in the
child (``crawler.cli`` or Scrapy's command, so Scrapy and Twisted again), start a
resource tracker process (~15 MB), and a ``ProcessPoolExecutor`` moves every batch
through two helper threads of the crawl process that each wait for the busy reactor
thread's GIL; ``fork`` would copy a multi-threaded process holding the reactor. The
extraction workers (crawler/extract_pool.py) talk to the crawl the same way.

Frames are a 4-byte big-endian length and a pickle: first ``(database_url,
log_level)``, then ``(seq, (batch, run_id))``; the writer answers ``(0, pid)`` once
storage is imported, then ``(seq, (True, StoreResult))`` or ``(seq, (False, error
text))`` per batch, in order. It connects on its first batch, not at start, with
backoff while the database is away (a database unreachable at that moment must
not lose the crawl's later batches). It ignores SIGINT and SIGTERM (a crawl
stopped from its terminal or by the scheduler signals the whole process group):
the crawl decides when it is done by closing its stdin; the writer then writes
what it has and exits.
"""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

from sqlalchemy.exc import OperationalError

from storage.frames import serve
from storage.repository import Repository, StoreResult, open_repository

logger = logging.getLogger(__name__)

WRITER_CONNECT_SECONDS = 120.0  # as long as the repository retries a batch on a lost connection


class StoreError(Exception):
    """A batch the writer process could not store (the repository's error, as text)."""


_writer_repository: Repository | None = None
_writer_url: str | None = None


def _init_writer(database_url: str | None) -> None:
    # Connect on the first batch, not here: a writer that fails to start (the database away at
    # the moment it starts) would lose every later batch of the crawl.
    global _writer_url, _writer_repository
    _writer_url = database_url
    _writer_repository = None


def _open_retrying(database_url: str | None, seconds: float = WRITER_CONNECT_SECONDS) -> Repository:
    """The writer's repository, waiting with backoff while the database is unreachable."""
    delay, give_up_at = 0.5, time.monotonic() + seconds
    while True:
        try:
            return open_repository(database_url)
        except OperationalError:
            if time.monotonic() + delay > give_up_at:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def _write_batch(batch: list[dict[str, Any]], run_id: int | None) -> StoreResult:
    """One batch through the repository; errors come back as picklable text."""
    global _writer_repository
    try:
        if _writer_repository is None:
            _writer_repository = _open_retrying(_writer_url)
        return _writer_repository.upsert_articles(batch, run_id)
    except Exception as exc:
        raise StoreError(f"{type(exc).__name__}: {exc}") from None


# -- the pipe protocol ---------------------------------------------------------------------

def writer_main() -> int:
    """Write batches from stdin until it closes."""
    return serve(_start)


def _start(init: tuple[str, int]) -> Any:
    database_url, level = init
    logging.basicConfig(level=level, format="%(asctime)s [%(name)s] %(levelname)s: %(message)s")
    _init_writer(database_url)
    return _answer


def _answer(work: tuple[list[dict[str, Any]], int | None]) -> tuple[bool, Any]:
    batch, run_id = work
    try:
        return True, _write_batch(batch, run_id)
    except StoreError as exc:
        return False, str(exc)
    except Exception:  # never leave the crawl waiting for an answer
        return False, traceback.format_exc(limit=4).strip().splitlines()[-1]


if __name__ == "__main__":
    # Run the imported module's loop (results pickle as storage.repository.StoreResult either way).
    from storage.writer import writer_main as _main

    raise SystemExit(_main())
