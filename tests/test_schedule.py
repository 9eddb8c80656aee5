"""The scheduler service for real: APScheduler, crawl subprocesses, a loopback site, SQLite and PostgreSQL.

A healthy source, one whose site answers 500 everywhere and one whose site never
answers are crawled every second; the run records must show the healthy one
succeeding while the others fail or time out, and no two runs of a source
overlapping, also with two scheduler processes on one database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.schedule import SchedulerOptions, SchedulerService, _crontab_weekdays, build_trigger
from crawler.sources import load_sources
from storage.db import create_db_engine, session_factory
from storage.models import CrawlRun
from storage.repository import open_repository

ROOT = Path(__file__).resolve().parents[1]
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "RETRY_TIMES=0", "-s", "LOG_LEVEL=INFO"]
GRACE = ["--stop-grace", "2s", "--shutdown-grace", "2s", "--misfire-grace", "10s"]


class FaultyServer(ThreadingHTTPServer):
    """A site that answers 500 to everything, or accepts connections and never answers."""

    daemon_threads = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if server.mode == "hang":
                    server.release.wait(60)
                    return
                body = b"<h1>500 Internal Server Error</h1>"
                self.send_response(500)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> FaultyServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.shutdown()
        self.server_close()


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[dict[str, str]]:
    """URLs: one article of the demo site, a 500 site and a hanging site."""
    with serve_demo_site(tmp_path / "site") as (_server, manifest), FaultyServer("500") as broken, \
            FaultyServer("hang") as hung:
        article = next(a["url"] for a in manifest["articles"] if a["kind"] == "article")
        yield {"article": article, "broken": broken.base_url + "/news/", "hung": hung.base_url + "/news/"}


def source(url: str, interval: str = "1s", **extra: Any) -> dict[str, Any]:
    return {"allowed_domains": ["127.0.0.1"], "allow_private_networks": True, "start_urls": [url], "follow_depth": 0,
            "schedule": {"interval": interval}, **extra}


def start_scheduler(sources: Path, db_url: str, *extra: str) -> subprocess.Popen[str]:
    """`newsingest schedule` as a service manager runs it; its log goes to a file (a pipe could fill)."""
    log = sources.with_name(f"scheduler-{time.monotonic_ns()}.log")
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "crawler.cli", "schedule", "--sources", str(sources),
                                 "--db", db_url, *GRACE, *FAST, *extra], cwd=ROOT, stdout=sink, stderr=sink,
                                text=True)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def stop_scheduler(proc: subprocess.Popen[str], timeout: float = 30) -> str:
    """SIGTERM, as systemd or docker stop would; the scheduler must exit 0 in time."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"the scheduler did not stop within {timeout}s:\n{proc.log_path.read_text()[-3000:]}")
    log = proc.log_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    return log


def all_runs(db_url: str) -> list[CrawlRun]:
    engine = create_db_engine(db_url)
    try:
        with engine.connect() as conn:
            if "crawl_runs" not in conn.dialect.get_table_names(conn):
                return []
        with session_factory(engine)() as session:
            return list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    finally:
        engine.dispose()


def wait_for(db_url: str, done: Any, timeout: float, proc: subprocess.Popen[str]) -> list[CrawlRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            runs = all_runs(db_url)
        except DBAPIError:  # the scheduler is still migrating the schema (crawl_runs without its newest columns)
            runs = []
        if done(runs):
            return runs
        if proc.poll() is not None:
            pytest.fail(f"the scheduler exited early ({proc.returncode}): {proc.log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    pytest.fail(f"not reached within {timeout}s: {[(r.source, r.status) for r in all_runs(db_url)]}")


def count(runs: list[CrawlRun], source_name: str, status: str) -> int:
    return sum(1 for r in runs if r.source == source_name and r.status == status)


def assert_no_overlap(runs: list[CrawlRun]) -> None:
    by_source: dict[str, list[CrawlRun]] = {}
    for run in runs:
        by_source.setdefault(run.source, []).append(run)
    for name, items in by_source.items():
        items.sort(key=lambda r: r.started_at)
        for before, after in pairwise(items):
            assert before.finished_at is not None, (name, before.id, before.status)
            assert before.finished_at <= after.started_at, (
                f"{name}: run {before.id} ({before.started_at}–{before.finished_at}) overlaps run {after.id} "
                f"(started {after.started_at})")


def test_failing_and_hanging_sources_do_not_stop_the_others(sites: dict[str, str], db_url: str,
                                                           tmp_path: Path) -> None:
    sources = write_sources_file(tmp_path / "sources.toml", {
        "good": source(sites["article"]),
        "broken": source(sites["broken"]),
        "hung": source(sites["hung"], timeout="2s"),
    })
    proc = start_scheduler(sources, db_url, "--max-concurrent", "3")
    try:
        wait_for(db_url, lambda runs: count(runs, "good", "succeeded") >= 2 and count(runs, "broken", "failed") >= 1
                 and count(runs, "hung", "timed_out") >= 1, 45, proc)
    finally:
        stopping_at = datetime.now(UTC)
        log = stop_scheduler(proc)
    runs = all_runs(db_url)
    assert "SIGTERM received" in log and "scheduler stopped" in log
    assert not [r for r in runs if r.status == "running"], "every run is closed, the interrupted ones too"
    assert {r.trigger for r in runs} == {"schedule"}
    assert_no_overlap(runs)
    interrupted = [r for r in runs if (r.error or "").startswith("stopped by the scheduler: it was shutting down")]
    assert all(r.status in ("failed", "timed_out") and r.exit_code is not None for r in interrupted), [
        (r.source, r.status, r.exit_code, r.error) for r in interrupted]
    runs = [r for r in runs if r not in interrupted]
    good = [r for r in runs if r.source == "good" and r.status == "succeeded"]
    # A crawl that had written its record when the scheduler's SIGTERM reached it may exit non-zero.
    settled = [r for r in good if r.finished_at is not None and r.finished_at < stopping_at]
    assert all(r.exit_code == 0 and r.pages >= 1 for r in settled), [
        (r.id, r.exit_code, r.pages, r.finished_at, stopping_at, r.stats) for r in good]
    assert all(r.pages >= 1 for r in good), [(r.id, r.exit_code, r.pages, r.stats) for r in good]
    assert good[0].items_stored == 1 and all(r.items_stored == 0 for r in good[1:])
    assert {r.status for r in runs if r.source == "good"} == {"succeeded"}
    broken = [r for r in runs if r.source == "broken"]
    assert {(r.status, r.exit_code) for r in broken} == {("failed", 1)}
    assert "crawl output (tail)" in (broken[0].error or "")
    hung = [r for r in runs if r.source == "hung"]
    assert {r.status for r in hung} == {"timed_out"}
    assert all(r.exit_code is not None and r.exit_code != 0 for r in hung)
    assert all((r.finished_at - r.started_at).total_seconds() < 15 for r in hung)
    engine = create_db_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM source_leases")).scalar() == 0, "leases released"
    engine.dispose()

    listing = subprocess.run([sys.executable, "-m", "crawler.cli", "runs", "--per-source", "2", "--db", db_url],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr
    for column in ("source", "trigger", "started", "duration", "status", "stored", "duplicates", "dropped",
                   "errors"):
        assert column in listing.stdout
    assert all(name in listing.stdout for name in ("good", "broken", "hung", "timed_out", "schedule"))


def job_rows(db_url: str) -> dict[str, float]:
    engine = create_db_engine(db_url)
    with engine.connect() as conn:
        rows = {r[0]: r[1] for r in conn.execute(text("SELECT id, next_run_time FROM apscheduler_jobs"))}
    engine.dispose()
    return rows


def test_restart_reconciles_jobs_without_duplicates(db_url: str, tmp_path: Path) -> None:
    url = "http://127.0.0.1:9/news/"
    config = {"a": source(url, "10m"), "b": source(url, "1h"),
              "c": {**source(url), "schedule": {"cron": "0 6 * * 1-5", "jitter": "1m"}},
              "off": source(url, enabled=False), "manual": {**source(url), "schedule": None}}
    del config["manual"]["schedule"]
    path = write_sources_file(tmp_path / "sources.toml", config)

    def start() -> SchedulerService:
        service = SchedulerService(SchedulerOptions.from_env(path, db_url, env={}))
        service.open()
        return service

    service = start()
    first = service.reconcile()
    assert sorted(first.added) == ["a", "b", "c"] and not first.changed and not first.removed
    service.close()
    before = job_rows(db_url)
    assert set(before) == {"crawl:a", "crawl:b", "crawl:c"}

    service = start()  # a restart with the same config
    again = service.reconcile()
    service.close()
    assert sorted(again.unchanged) == ["a", "b", "c"] and not again.added and not again.changed
    assert job_rows(db_url) == before, "no duplicate job, next run times kept"

    config["a"]["schedule"] = {"interval": "20s"}
    del config["b"]
    config["d"] = source(url, "5m")
    write_sources_file(path, config)
    service = start()
    changed = service.reconcile()
    assert (changed.added, changed.changed, changed.removed, sorted(changed.unchanged)) == (
        ["d"], ["a"], ["b"], ["c"])
    job = service.scheduler.get_job("crawl:a")
    assert job.trigger.interval == timedelta(seconds=20)
    assert job.next_run_time <= datetime.now(UTC) + timedelta(seconds=21)
    cron = service.scheduler.get_job("crawl:c")
    assert cron.next_run_time.weekday() < 5 and cron.next_run_time.hour == 6  # crontab 1-5 = Monday..Friday
    service.close()
    after = job_rows(db_url)
    assert set(after) == {"crawl:a", "crawl:c", "crawl:d"}
    assert after["crawl:c"] == before["crawl:c"]

    listing = subprocess.run([sys.executable, "-m", "crawler.cli", "schedule", "--list", "--sources", str(path),
                              "--db", db_url], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0, listing.stderr[-2000:]
    for job_id in ("crawl:a", "crawl:c", "crawl:d"):
        assert job_id in listing.stdout
    assert "every 20s" in listing.stdout and "crawl:b" not in listing.stdout
    assert job_rows(db_url) == after, "--list changes nothing"


def test_two_schedulers_on_one_postgresql_database_never_overlap(sites: dict[str, str], pg_url: str,
                                                                 tmp_path: Path) -> None:
    sources = write_sources_file(tmp_path / "sources.toml", {
        "one": source(sites["article"]), "two": source(sites["article"])})
    open_repository(pg_url)  # schema first, so the two processes do not race to create it
    first = start_scheduler(sources, pg_url)
    second = start_scheduler(sources, pg_url)

    def both_crawled(runs: list[CrawlRun]) -> bool:
        # Which scheduler wins a lease is a race: on a loaded machine one may win several in a row.
        return (count(runs, "one", "succeeded") >= 2 and count(runs, "two", "succeeded") >= 2
                and all("started (run" in proc.log_path.read_text() for proc in (first, second)))

    try:
        wait_for(pg_url, both_crawled, 90, first)
    finally:
        logs = [stop_scheduler(first), stop_scheduler(second)]
    runs = all_runs(pg_url)
    assert_no_overlap(runs)
    assert not [r for r in runs if r.status == "running"]
    # both schedulers crawled, and each skipped runs whose lease the other held
    assert all("started (run" in log for log in logs), "each scheduler ran crawls"
    assert sum(log.count("another scheduler holds its lease") for log in logs) >= 1


def test_manual_trigger_and_lease_exclusion(sites: dict[str, str], sqlite_url: str, tmp_path: Path) -> None:
    sources = write_sources_file(tmp_path / "sources.toml", {"good": source(sites["article"])})
    repository = open_repository(sqlite_url)
    assert repository.acquire_lease("good", "other-host:1:x", ttl=30)
    assert not repository.acquire_lease("good", "me:2:y", ttl=30), "a live lease is exclusive"
    held = subprocess.run([sys.executable, "-m", "crawler.cli", "schedule", "trigger", "good", "--sources",
                           str(sources), "--db", sqlite_url, *FAST], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert held.returncode == 1 and "lease" in held.stderr
    assert all_runs(sqlite_url) == []
    assert repository.acquire_lease("good", "other-host:1:x", ttl=-1)  # renewed into the past: expired
    assert repository.acquire_lease("good", "me:2:y", ttl=30), "an expired lease can be taken over"
    assert not repository.renew_lease("good", "other-host:1:x", ttl=30)
    repository.release_lease("good", "me:2:y")

    result = subprocess.run([sys.executable, "-m", "crawler.cli", "schedule", "trigger", "good", "--sources",
                             str(sources), "--db", sqlite_url, *FAST], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = all_runs(sqlite_url)
    assert (run.trigger, run.status, run.exit_code) == ("manual", "succeeded", 0)


def test_crontab_weekdays_mean_what_crontab_means(tmp_path: Path) -> None:
    assert _crontab_weekdays("1-5") == "mon,tue,wed,thu,fri"
    assert _crontab_weekdays("0,6") == "sun,sat"
    assert _crontab_weekdays("7") == "sun"
    assert _crontab_weekdays("*/2") == "sun,tue,thu,sat"
    assert _crontab_weekdays("mon-fri") == "mon-fri"
    path = write_sources_file(tmp_path / "sources.toml", {"s": {
        **source("http://127.0.0.1/"), "schedule": {"cron": "30 7 * * 0"}}})
    trigger = build_trigger(load_sources(path)["s"])
    fire = trigger.get_next_fire_time(None, datetime(2026, 11, 25, tzinfo=UTC))  # a Wednesday
    assert fire == datetime(2026, 11, 29, 7, 30, tzinfo=UTC) and fire.weekday() == 6


def test_crawls_do_not_outlive_a_killed_scheduler(sites: dict[str, str], sqlite_url: str, tmp_path: Path) -> None:
    """kill -9 / OOM: the crawl dies with its scheduler instead of running on unleased, and the
    next start closes the run it left open."""
    config = {"hung": source(sites["hung"], timeout="60s")}
    sources = write_sources_file(tmp_path / "sources.toml", config)
    proc = start_scheduler(sources, sqlite_url)
    try:
        runs = wait_for(sqlite_url, lambda runs: any(r.pid not in (None, proc.pid) for r in runs), 30, proc)
    finally:
        proc.kill()
        proc.wait()
    crawl_pid = runs[0].pid
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if "\tZ" in Path(f"/proc/{crawl_pid}/status").read_text().split("State:")[1].splitlines()[0]:
                break  # dead, waiting for init to reap it
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.1)
    else:
        os.kill(crawl_pid, signal.SIGKILL)
        pytest.fail("the crawl kept running after its scheduler was killed")
    assert [r.status for r in all_runs(sqlite_url)] == ["running"]

    config["hung"]["enabled"] = False
    write_sources_file(sources, config)
    restarted = start_scheduler(sources, sqlite_url)
    deadline = time.monotonic() + 20
    while "running (max" not in restarted.log_path.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = stop_scheduler(restarted)
    assert "marked 1 run(s) of hung abandoned" in log
    (run,) = all_runs(sqlite_url)
    assert run.status == "abandoned" and run.finished_at is not None
