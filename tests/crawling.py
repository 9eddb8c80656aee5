"""Run `newsingest crawl` as production does (a subprocess) and read back what it wrote; wait for rows."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import DBAPIError

from storage.db import create_db_engine, session_factory
from storage.models import CrawlRun

ROOT = Path(__file__).resolve().parents[1]


def crawl(source: str, sources: Path, db_url: str, *settings: str) -> CrawlRun:
    """Crawl `source` (extra `NAME=VALUE` Scrapy settings); the run must exit 0 and end `succeeded`."""
    result = subprocess.run([sys.executable, "-m", "crawler.cli", "crawl", source, "--sources", str(sources),
                             "--db", db_url, "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "LOG_LEVEL=INFO",
                             *(arg for s in settings for arg in ("-s", s))],
                            cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        run = session.scalars(select(CrawlRun).order_by(CrawlRun.id.desc())).first()
    engine.dispose()
    assert run is not None and run.status == "succeeded", run and run.error
    return run


def wait_for_rows(db_url: str, query: Select[Any], count: int = 1, timeout: float = 60.0) -> None:
    """Until `query` returns `count` rows (a test server holding a response until the crawl has stored
    something); the tables may not exist yet when it starts."""
    engine = create_db_engine(db_url)
    try:
        give_up = time.monotonic() + timeout
        while time.monotonic() < give_up:
            try:
                with session_factory(engine)() as session:
                    if len(session.execute(query).all()) >= count:
                        return
            except DBAPIError:  # the crawl has not created the tables yet
                pass
            time.sleep(0.1)
    finally:
        engine.dispose()
    raise AssertionError(f"never stored: {count} rows of {query}")
