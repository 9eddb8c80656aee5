"""Where the store's batches are written: the writer process, the extraction worker, the thread.

Real processes, real pipes, real SQLite/PostgreSQL. The writer process (`python -m
storage.writer`) and the extraction worker (`python -m crawler.extract_pool`, which
writes `StoreBatch` frames) are driven over their pipes exactly as the crawl drives
them; whole crawls check that each writer stores the same rows, and that a worker
killed mid-crawl loses no batch and doubles none.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from scrapy.http import Request
from sqlalchemy import func, select

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from crawler.extract_pool import Preparation, StoreBatch, picklable
from crawler.middlewares import SEEN_META, _ChunkLookup
from crawler.sources import load_source
from storage.db import create_db_engine, session_factory
from storage.frames import frame, read_frame
from storage.models import Article, CrawlRun
from storage.repository import StoreResult, open_repository

ROOT = Path(__file__).resolve().parents[1]


def _record(n: int, source: str = "demo") -> dict[str, Any]:
    body = f"Story number {n} about the harbour. " * 40
    return {"source": source, "canonical_url": f"https://example.com/news/{n}/", "content_hash": f"h{n}",
            "url": f"https://example.com/news/{n}/", "title": f"Story {n}", "subtitle": None, "body": body,
            "authors": [], "published_at": datetime(2024, 1, 1, tzinfo=UTC), "modified_at": None,
            "language": "en", "section": None, "tags": [], "image_url": None, "site_name": "Demo", "etag": None,
            "last_modified": None, "fetched_at": datetime.now(UTC), "minhash": None}


def _spawn(module: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE)


def test_writer_process_over_its_pipes(sqlite_url: str) -> None:
    """Init, ready, one answer per batch in order; an error is an answer, not the end; SIGINT is ignored."""
    open_repository(sqlite_url).ensure_source("demo", "Demo")
    proc = _spawn("storage.writer")
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame((sqlite_url, 30)))
        proc.stdin.flush()
        seq, pid = read_frame(proc.stdout)
        assert (seq, pid) == (0, proc.pid)
        os.kill(proc.pid, signal.SIGINT)  # a Ctrl-C to the crawl's process group: the writer carries on
        proc.stdin.write(frame((1, ([_record(1), _record(2)], None))))
        proc.stdin.write(frame((2, ([{"source": "demo"}], None))))  # no canonical URL: the repository fails
        proc.stdin.write(frame((3, ([_record(1)], None))))
        proc.stdin.close()
        answers = [read_frame(proc.stdout) for _ in range(3)]
        assert read_frame(proc.stdout) is None
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    assert [seq for seq, _ in answers] == [1, 2, 3]
    (ok1, first), (ok2, error), (ok3, again) = (answer for _, answer in answers)
    assert ok1 and isinstance(first, StoreResult) and first.inserted == 2
    assert not ok2 and "KeyError" in error
    assert ok3 and again.unchanged == 1
    assert open_repository(sqlite_url).count_articles() == 2


def test_extraction_worker_writes_store_batches(tmp_path: Path, db_url: str) -> None:
    """The first extraction worker is the crawl's writer: a `StoreBatch` frame is written like a writer's batch."""
    open_repository(db_url).ensure_source("demo", "Demo")
    path = tmp_path / "sources.toml"
    path.write_text('[sources.demo]\nallowed_domains = ["example.com"]\nstart_urls = ["https://example.com/"]\n',
                    encoding="utf-8")
    source = load_source(path, "demo")
    proc = _spawn("crawler.extract_pool")
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(frame((picklable(source), 30, Preparation(minhash=True))))
        proc.stdin.write(frame((1, StoreBatch(db_url, [_record(1), _record(2)], None))))
        proc.stdin.write(frame((2, StoreBatch(db_url, [_record(2), _record(3)], None))))
        proc.stdin.close()
        assert read_frame(proc.stdout)[0] == 0
        answers = [read_frame(proc.stdout) for _ in range(2)]
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
    (ok1, first), (ok2, second) = (answer for _, answer in answers)
    assert ok1 and ok2 and (first.inserted, second.inserted, second.unchanged) == (2, 1, 1)
    assert open_repository(db_url).count_articles() == 3


def test_validators_for_many_answers_as_validators_for(db_url: str) -> None:
    repository = open_repository(db_url)
    repository.ensure_source("demo", "Demo")
    records = [_record(n) for n in range(5)]
    records[1]["etag"] = '"e1"'
    repository.upsert_articles(records)
    urls = [r["url"] for r in records] + ["https://example.com/news/none/", records[0]["url"]]
    want = repository.validators_for(urls)
    assert repository.validators_for_many(urls, chunk=2) == want
    assert set(want) == {r["url"] for r in records} and want[records[1]["url"]].etag == '"e1"'
    assert repository.validators_for_many([]) == {}


def test_a_chunk_lookup_answers_each_request() -> None:
    requests = [Request(f"https://example.com/news/{n}/") for n in range(3)]
    chunk = [(r, [r.url]) for r in requests]
    lookup = _ChunkLookup(chunk)
    for request in requests:
        request.meta[SEEN_META] = (request.url, lookup)
    found = {requests[1].url: "seen"}
    lookup.answer(found)  # type: ignore[arg-type]
    assert [r.meta[SEEN_META] for r in requests] == [(requests[0].url, None), (requests[1].url, "seen"),
                                                     (requests[2].url, None)]
    assert lookup.chunk is None


# -- whole crawls --------------------------------------------------------------------------------------

CRAWL = ["AUTOTHROTTLE_ENABLED=False", "NEWSINGEST_STORE_BATCH_SIZE=3", "NEWSINGEST_STORE_FLUSH_SECONDS=0.5"]


def _stored(db_url: str) -> tuple[list[str], CrawlRun]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        urls = list(session.scalars(select(Article.canonical_url)))
        run = session.scalars(select(CrawlRun).order_by(CrawlRun.id.desc())).first()
    engine.dispose()
    assert run is not None
    return urls, run


def _crawl_argv(sources: Path, db_url: str, settings: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "crawler.cli", "crawl", "demo", "--sources", str(sources), "--db", db_url]
    for setting in settings:
        argv += ["-s", setting]
    return argv


@pytest.mark.slow
@pytest.mark.parametrize("mode", [
    ["NEWSINGEST_STORE_WRITER=worker", "NEWSINGEST_EXTRACT_WORKERS=1", "NEWSINGEST_EXTRACT_POOL_MIN_PAGES=0"],
    ["NEWSINGEST_STORE_WRITER=worker", "NEWSINGEST_EXTRACT_WORKERS=0"],  # no worker: a writer process
    ["NEWSINGEST_STORE_WRITER=process", "NEWSINGEST_EXTRACT_WORKERS=1"],
    ["NEWSINGEST_STORE_WRITER=thread"],
], ids=["worker", "no-worker", "process", "thread"])
def test_every_writer_stores_the_site(tmp_path: Path, mode: list[str]) -> None:
    db_url = f"sqlite:///{tmp_path / 'news.db'}"
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        result = subprocess.run(_crawl_argv(sources, db_url, [*CRAWL, "LOG_LEVEL=INFO", *mode]), cwd=ROOT,
                                capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    urls, run = _stored(db_url)
    expected = {a["url"] for a in manifest["articles"] if a["kind"] in ("article", "syndicated")}
    assert sorted(urls) == sorted(expected) and run.status == "succeeded"
    stats = run.stats or {}
    if "NEWSINGEST_STORE_WRITER=thread" in mode:
        assert "newsingest/store/writer_process_started" not in stats
    elif "NEWSINGEST_EXTRACT_POOL_MIN_PAGES=0" not in mode:
        assert stats.get("newsingest/store/writer_process_started") == 1, stats
    assert not stats.get("newsingest/store/failed") and not stats.get("newsingest/store/writer_lost")


def _children(pid: int, name: str) -> list[int]:
    """Child processes of `pid` whose command line holds `name` (from /proc: no psutil in the tests)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(stat.rpartition(")")[2].split()[1]) == pid and name in cmdline:
            found.append(int(entry.name))
    return found


@pytest.mark.slow
def test_a_killed_writing_worker_loses_no_batch(tmp_path: Path, db_url: str) -> None:
    """The extraction worker that writes is killed mid-crawl: the batches it had are written again
    from the thread, pages are extracted inline, and every article is stored exactly once."""
    settings = [*CRAWL, "DOWNLOAD_DELAY=0.05", "CONCURRENT_REQUESTS_PER_DOMAIN=1", "NEWSINGEST_EXTRACT_WORKERS=1",
                "NEWSINGEST_EXTRACT_POOL_MIN_PAGES=0", "NEWSINGEST_STORE_WRITER=worker"]
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        log_path = tmp_path / "crawl.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(_crawl_argv(sources, db_url, settings), cwd=ROOT, stdout=subprocess.DEVNULL,
                                    stderr=log)
        try:
            deadline = time.monotonic() + 60
            killed = False
            while time.monotonic() < deadline and proc.poll() is None and not killed:
                engine = create_db_engine(db_url)
                try:
                    with session_factory(engine)() as session:
                        stored = session.scalar(select(func.count(Article.id))) or 0
                except Exception:
                    stored = 0
                finally:
                    engine.dispose()
                workers = _children(proc.pid, "crawler.extract_pool")
                if stored >= 3 and workers:
                    os.kill(workers[0], signal.SIGKILL)
                    killed = True
                time.sleep(0.1)
            assert killed, "the crawl ended before its worker could be killed"
            proc.wait(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    stderr = log_path.read_text(errors="replace")
    urls, run = _stored(db_url)
    expected = {a["url"] for a in manifest["articles"] if a["kind"] in ("article", "syndicated")}
    assert len(urls) == len(set(urls)), "an article was stored twice"
    assert set(urls) == expected, (sorted(expected ^ set(urls)), stderr[-3000:])
    assert proc.returncode == 0 and run.status == "succeeded", (run.error, stderr[-3000:])
    stats = run.stats or {}
    assert stats.get("newsingest/extract/pool_broken") == 1, stats
    assert not stats.get("newsingest/store/failed")


# -- the writer's lazy connect, for each writer (tests/test_pg_outage.py's fault, on a private cluster) ---------

from test_pg_outage import CRAWL_SETTINGS, cluster, crawl_through_fault, down_10s, outage_db, run_started  # noqa: E402

__all__ = ["cluster", "outage_db"]  # fixtures


@pytest.mark.slow
@pytest.mark.parametrize("mode", [
    ["NEWSINGEST_STORE_WRITER=worker", "NEWSINGEST_EXTRACT_WORKERS=1", "NEWSINGEST_EXTRACT_POOL_MIN_PAGES=0"],
    ["NEWSINGEST_STORE_WRITER=process", "NEWSINGEST_EXTRACT_WORKERS=0"],
], ids=["worker", "process"])
def test_postgresql_down_when_the_writer_starts(cluster: Any, outage_db: str, tmp_path: Path,
                                                mode: list[str]) -> None:
    """The writer (extraction worker or writer process) gets its first batch while the database is down:
    it connects with retry on that batch, and the crawl loses nothing."""
    settings = [s for s in CRAWL_SETTINGS if "STORE" not in s] + [
        "NEWSINGEST_STORE_BATCH_SIZE=10", "NEWSINGEST_STORE_FLUSH_SECONDS=0", *mode]
    result = crawl_through_fault(cluster, outage_db, tmp_path, down_10s, ready=run_started, settings=settings)
    assert len(result.urls) == len(set(result.urls))
    assert set(result.urls) == result.expected, (len(result.urls), result.stderr[-3000:])
    assert result.run.status == "succeeded", (result.run.error, result.stderr[-3000:])
    stats = result.run.stats or {}
    assert not stats.get("newsingest/store/failed") and not stats.get("newsingest/store/writer_lost"), stats
    if "NEWSINGEST_STORE_WRITER=process" in mode:
        assert stats.get("newsingest/store/writer_process_started") == 1, stats
    else:  # every batch went to the extraction worker, which outlived the outage
        assert stats.get("newsingest/extract/workers_ready") == 1 and not stats.get("newsingest/extract/pool_broken")
