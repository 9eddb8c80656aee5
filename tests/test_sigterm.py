"""A crawl stopped by one SIGTERM closes cleanly: its run says so, what it fetched is stored, a rerun completes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from storage.db import create_db_engine, session_factory
from storage.models import Article, CrawlRun

ROOT = Path(__file__).resolve().parents[1]


def counts(db_url: str) -> tuple[int, list[CrawlRun]]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        articles = session.scalar(select(func.count(Article.id))) or 0
        runs = list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    engine.dispose()
    return articles, runs


def test_sigterm_then_rerun(tmp_path: Path, db_url: str) -> None:
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        crawl = [sys.executable, "-m", "crawler.cli", "crawl", "demo", "--sources", str(sources), "--db", db_url,
                 "-s", "AUTOTHROTTLE_ENABLED=False"]
        proc = subprocess.Popen([*crawl, "-s", "DOWNLOAD_DELAY=0.15", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
                                 "-s", "NEWSINGEST_STORE_FLUSH_SECONDS=0.5"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                if counts(db_url)[0] >= 3:
                    break
            except Exception:  # schema not there yet
                continue
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr[-2000:]  # the run did not complete
        stored, (stopped,) = counts(db_url)
        assert stopped.status == "failed" and stopped.finish_reason == "shutdown"
        assert stopped.items_stored == stored  # everything it counted is in the table
        expected = len([a for a in manifest["articles"] if a["kind"] in ("article", "syndicated")])
        assert 3 <= stored < expected

        rerun = subprocess.run(crawl, cwd=ROOT, capture_output=True, text=True, timeout=180)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
    total, runs = counts(db_url)
    assert total == expected
    assert runs[-1].status == "succeeded" and runs[-1].items_stored == expected - stored
