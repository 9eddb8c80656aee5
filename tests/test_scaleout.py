"""Scale-out for real: two Scrapyd nodes on loopback, one PostgreSQL database, one scheduler.

The scheduler dispatches every crawl to the least-loaded node and owns the truth about
it in `crawl_runs`: three sources on short schedules run across both nodes and store
every article once; a crawl that crashes is recorded failed; a node killed mid-crawl
leaves its run recorded lost, and the source runs again on the other node without
doubled rows; no two runs of one source ever overlap.

Needs scrapyd (``pip install -e ".[test]"``). Without it the tests skip, except under
CI (the CI variable set), where they fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from scaleout_nodes import Node, free_port, start_node
from sqlalchemy import func, select

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from crawler.executors import ScrapydExecutor
from crawler.schedule import SchedulerOptions, SchedulerService
from crawler.scrapyd_client import ScrapydClient
from crawler.sources import ScrapydNode, SourcesError, load_executor
from storage.db import create_db_engine, session_factory
from storage.models import Article, CrawlRun
from storage.repository import open_repository

ROOT = Path(__file__).resolve().parents[1]
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "RETRY_TIMES=0", "-s", "LOG_LEVEL=INFO"]
GRACE = ["--stop-grace", "3s", "--shutdown-grace", "20s", "--misfire-grace", "20s", "--lease-ttl", "20s"]
EXECUTOR = """
[executor]
type = "scrapyd"
poll_interval = "0.5s"
heartbeat = "1s"
writer_timeout = "4s"
node_retry = "3s"
"""


def _require_scrapyd() -> None:
    try:
        import scrapyd  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"scrapyd is not importable in CI ({exc}): install newsingest[test]")
        pytest.skip(f"scrapyd is not installed ({exc}); pip install -e '.[test]' to run the scale-out tests")


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str) -> Iterator[dict[str, Any]]:
    """Two Scrapyd nodes (capacity 2 each) whose crawls write to `pg_url`, and the sources file path
    their environment points to (NEWSINGEST_SOURCES: the sources file must reach the nodes)."""
    _require_scrapyd()
    open_repository(pg_url)  # the schema, before schedulers and crawls race to create it
    sources = tmp_path / "sources.toml"
    env = {**os.environ, "DATABASE_URL": pg_url, "NEWSINGEST_SOURCES": str(sources),
           "PYTHONPATH": str(ROOT / "tests"), "NEWSINGEST_STORE_FLUSH_SECONDS": "0.5"}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    nodes: list[Node] = []
    try:
        for name in ("node-a", "node-b"):
            nodes.append(start_node(name, tmp_path / name, env))
        yield {"nodes": nodes, "sources": sources, "db": pg_url}
    finally:
        for node in nodes:
            node.kill()


def write_config(cluster: dict[str, Any], tables: dict[str, dict[str, Any]], extra: str = "",
                 more_nodes: tuple[tuple[str, str], ...] = ()) -> Path:
    path: Path = cluster["sources"]
    write_sources_file(path, tables)
    nodes = "".join(f'\n[[executor.nodes]]\nname = "{name}"\nurl = "{url}"\ncapacity = 2\n'
                    for name, url in [*((n.name, n.url) for n in cluster["nodes"]), *more_nodes])
    path.write_text(path.read_text(encoding="utf-8") + extra + EXECUTOR + nodes, encoding="utf-8")
    return path


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawler.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def deploy(sources: Path) -> None:
    result = cli("deploy", "--sources", str(sources))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("version") == 2, result.stdout


def start_scheduler(sources: Path, db_url: str) -> subprocess.Popen[str]:
    log = sources.with_name(f"scheduler-{time.monotonic_ns()}.log")
    with log.open("w") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "crawler.cli", "schedule", "--sources", str(sources),
                                 "--db", db_url, *GRACE, *FAST], cwd=ROOT, stdout=sink, stderr=sink, text=True)
    proc.log_path = log  # type: ignore[attr-defined]
    return proc


def stop_scheduler(proc: subprocess.Popen[str], timeout: float = 60) -> str:
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
        with session_factory(engine)() as session:
            return list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    finally:
        engine.dispose()


def articles(db_url: str) -> list[Article]:
    engine = create_db_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return list(session.scalars(select(Article)))
    finally:
        engine.dispose()


def article_count(db_url: str, source: str) -> int:
    engine = create_db_engine(db_url)
    try:
        with session_factory(engine)() as session:
            return session.scalar(select(func.count(Article.id)).where(Article.source == source)) or 0
    finally:
        engine.dispose()


def wait_for(db_url: str, done: Callable[[list[CrawlRun]], bool], timeout: float,
             proc: subprocess.Popen[str]) -> list[CrawlRun]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = all_runs(db_url)
        if done(runs):
            return runs
        if proc.poll() is not None:
            pytest.fail(f"the scheduler exited early ({proc.returncode}): {proc.log_path.read_text()[-3000:]}")
        time.sleep(0.5)
    runs = all_runs(db_url)
    errors = "\n".join(f"run {r.id}: {r.error[:1500]}" for r in runs if r.error and r.status != "succeeded")
    pytest.fail(f"not reached within {timeout}s: {[(r.id, r.source, r.node, r.status) for r in runs]}"
                f"\n{errors[:5000]}\n{proc.log_path.read_text()[-4000:]}")


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


def expected_urls(manifest: dict[str, Any]) -> set[str]:
    return {a["url"] for a in manifest["articles"] if a["kind"] in ("article", "syndicated")}


def succeeded(runs: list[CrawlRun], source: str) -> list[CrawlRun]:
    return [r for r in runs if r.source == source and r.status == "succeeded"]


def test_three_sources_run_across_both_nodes_and_store_every_article_once(cluster: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    with serve_demo_site(tmp_path / "site-1") as (one, manifest_1), \
            serve_demo_site(tmp_path / "site-2") as (two, manifest_2), \
            serve_demo_site(tmp_path / "site-3") as (three, manifest_3):
        manifests = {"first": manifest_1, "second": manifest_2, "third": manifest_3}
        tables = {name: {**demo_source_config(server.base_url), "schedule": {"interval": "3s"}}
                  for name, server in (("first", one), ("second", two), ("third", three))}
        # A node that is down: deploy refuses, names it, and uploads to no node at all.
        sources = write_config(cluster, tables, more_nodes=(("node-x", f"http://127.0.0.1:{free_port()}"),))
        refused = cli("deploy", "--sources", str(sources))
        assert refused.returncode == 1 and "node-x" in refused.stderr and "unreachable" in refused.stderr, (
            refused.stderr)
        for node in cluster["nodes"]:
            versions = ScrapydClient(ScrapydNode(node.name, node.url, 1)).listversions("newsingest")
            assert versions == [], "nothing deployed while a node was down"
        sources = write_config(cluster, tables)
        deploy(sources)
        proc = start_scheduler(sources, cluster["db"])
        try:
            wait_for(cluster["db"], lambda runs: all(len(succeeded(runs, name)) >= 2 for name in manifests)
                     and len({r.node for r in runs if r.status == "succeeded"}) == 2, 150, proc)
        finally:
            log = stop_scheduler(proc)
    runs = all_runs(cluster["db"])
    assert "executor scrapyd" in log
    assert not [r for r in runs if r.status == "running"], "every run is closed"
    assert {r.node for r in runs} == {"node-a", "node-b"}, "both nodes crawled"
    assert all(r.job_id and r.hostname and r.heartbeat_at for r in runs if r.status == "succeeded")
    assert len({r.job_id for r in runs}) == len(runs), "a unique Scrapyd job id per attempt"
    assert_no_overlap(runs)
    stored = articles(cluster["db"])
    assert len({a.canonical_url for a in stored}) == len(stored)
    for name, manifest in manifests.items():
        mine = {a.canonical_url for a in stored if a.source == name}
        assert mine == expected_urls(manifest), name
        first, *later = succeeded(runs, name)
        assert first.items_stored == len(mine) and all(r.items_stored == 0 for r in later), name
    listing = cli("runs", "--db", cluster["db"], "--limit", "30")
    assert listing.returncode == 0, listing.stderr
    assert "node" in listing.stdout and "node-a" in listing.stdout and "node-b" in listing.stdout
    print(listing.stdout)


def test_a_crawl_that_crashes_is_recorded_failed(cluster: dict[str, Any], tmp_path: Path) -> None:
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        crash = f"""
[sources.crashy]
allowed_domains = ["127.0.0.1"]
allow_private_networks = true
start_urls = ["{server.base_url}/"]
schedule = {{ interval = "2s" }}

[sources.crashy.settings]
EXTENSIONS = {{ "crawler.runrecord.CrawlRunRecorder" = 10, "scaleout_crash.CrashOnFirstResponse" = 20 }}
"""
        sources = write_config(cluster, {"steady": {**demo_source_config(server.base_url),
                                                    "schedule": {"interval": "2s"}}}, extra=crash)
        deploy(sources)
        proc = start_scheduler(sources, cluster["db"])
        try:
            wait_for(cluster["db"], lambda runs: sum(1 for r in runs if r.source == "crashy"
                                                     and r.status == "failed") >= 2
                     and len(succeeded(runs, "steady")) >= 1, 60, proc)
        finally:
            stop_scheduler(proc)
    runs = all_runs(cluster["db"])
    crashed = [r for r in runs if r.source == "crashy" and r.status != "running"]
    assert crashed and all(r.status == "failed" for r in crashed), [(r.id, r.status, r.error) for r in crashed]
    assert all(r.hostname is not None for r in crashed), "each crash happened after the crawl adopted its run"
    first = crashed[0]
    assert "finished without closing its run" in (first.error or ""), first.error
    assert "scaleout_crash: killing this crawl now" in (first.error or ""), "the node's log tail is kept"
    assert {r.status for r in runs if r.source == "steady"} <= {"succeeded", "failed"}
    assert len({a.canonical_url for a in articles(cluster["db"])}) == len(expected_urls(manifest))
    assert_no_overlap(runs)


def test_a_node_killed_mid_crawl_leaves_a_lost_run_and_the_other_node_finishes(cluster: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        slow = {**demo_source_config(server.base_url), "schedule": {"interval": "2s"},
                "settings": {"DOWNLOAD_DELAY": 0.25, "CONCURRENT_REQUESTS_PER_DOMAIN": 1,
                             "NEWSINGEST_STORE_BATCH_SIZE": 2}}
        sources = write_config(cluster, {"slow": slow})
        deploy(sources)
        proc = start_scheduler(sources, cluster["db"])
        nodes = {n.name: n for n in cluster["nodes"]}
        try:
            runs = wait_for(cluster["db"], lambda runs: any(r.status == "running" and r.heartbeat_at for r in runs)
                            and article_count(cluster["db"], "slow") >= 3, 60, proc)
            (victim,) = [r for r in runs if r.status == "running"]
            stored_before = article_count(cluster["db"], "slow")
            assert stored_before < len(expected_urls(manifest)), "killed mid-crawl, not after it"
            nodes[victim.node].kill()
            survivor = next(name for name in nodes if name != victim.node)
            runs = wait_for(cluster["db"], lambda runs: any(r.id == victim.id and r.status == "lost" for r in runs)
                            and any(r.id > victim.id and r.node == survivor and r.status == "succeeded"
                                    for r in runs), 90, proc)
        finally:
            log = stop_scheduler(proc)
    lost = next(r for r in runs if r.id == victim.id)
    assert "vanished from node" in (lost.error or "") and lost.finished_at is not None, lost.error
    assert "retrying slow once" in log
    after = [r for r in runs if r.id > victim.id]
    assert after[0].trigger == "retry" and after[0].node == survivor
    stored = articles(cluster["db"])
    assert len({a.canonical_url for a in stored}) == len(stored) == len(expected_urls(manifest)), "no doubled rows"
    assert {a.canonical_url for a in stored} == expected_urls(manifest)
    runs = all_runs(cluster["db"])
    assert not [r for r in runs if r.status == "running"]
    assert_no_overlap(runs)
    listing = cli("runs", "--db", cluster["db"], "--limit", "30")
    assert listing.returncode == 0 and "lost" in listing.stdout and "retry" in listing.stdout, listing.stdout
    print(listing.stdout)


# -- without Scrapyd: the [executor] table and the choice of node --------------------------


def executor_file(tmp_path: Path, executor: str) -> Path:
    path = write_sources_file(tmp_path / "sources.toml", {"s": {"allowed_domains": ["example.com"],
                                                                "start_urls": ["https://example.com/"]}})
    path.write_text(path.read_text(encoding="utf-8") + executor, encoding="utf-8")
    return path


def test_executor_table_is_validated(tmp_path: Path) -> None:
    assert load_executor(executor_file(tmp_path, "")).kind == "local"
    config = load_executor(executor_file(tmp_path, EXECUTOR + """
[[executor.nodes]]
url = "http://10.0.0.11:6800/"
capacity = 4
username_env = "NODE_A_USER"
password_env = "NODE_A_PASSWORD"
"""))
    (node,) = config.nodes
    assert (config.kind, node.name, node.capacity) == ("scrapyd", "10.0.0.11:6800", 4)
    assert node.url == "http://10.0.0.11:6800"
    assert (config.heartbeat, config.writer_timeout, config.poll_interval) == (1.0, 4.0, 0.5)
    assert node.credentials({"NODE_A_USER": "crawl", "NODE_A_PASSWORD": "s3cret"}) == ("crawl", "s3cret")
    with pytest.raises(ValueError, match="NODE_A_PASSWORD is not set"):
        node.credentials({"NODE_A_USER": "crawl"})
    bad = {
        '[executor]\ntype = "scrapyd"\n': "needs at least one",
        '[executor]\ntype = "celery"\n': "expected 'local' or 'scrapyd'",
        '[executor]\ntype = "scrapyd"\n[[executor.nodes]]\nurl = "http://u:p@h:6800"\n': "must not hold credentials",
        '[executor]\ntype = "scrapyd"\n[[executor.nodes]]\nurl = "http://h:6800"\ncapacity = 0\n': "capacity",
        '[executor]\ntype = "scrapyd"\n[[executor.nodes]]\nurl = "http://h:6800"\npasword_env = "X"\n':
            "did you mean",
        '[executor]\nheartbeat = "10s"\nwriter_timeout = "15s"\n': "at least twice",
    }
    for text, message in bad.items():
        with pytest.raises(SourcesError, match=message):
            load_executor(executor_file(tmp_path, text))


def test_the_least_loaded_node_with_a_free_slot_is_chosen(tmp_path: Path, sqlite_url: str) -> None:
    path = executor_file(tmp_path, EXECUTOR + "".join(
        f'\n[[executor.nodes]]\nname = "{name}"\nurl = "http://127.0.0.1:{port}"\ncapacity = {capacity}\n'
        for name, port, capacity in (("a", 9, 2), ("b", 10, 4))))
    config = load_executor(path)
    options = SchedulerOptions.from_env(path, sqlite_url, env={}, executor=config)
    assert options.max_concurrent == 6, "the nodes' capacities are the scheduler's cap"
    executor = SchedulerService(options).executor
    assert isinstance(executor, ScrapydExecutor)
    assert executor.pick({}, set()) == "a"  # a tie goes to the first node
    assert executor.pick({"a": 1}, set()) == "b"
    assert executor.pick({"a": 1, "b": 2}, set()) == "a"  # 1/2 vs 2/4: fewer runs wins the tie
    assert executor.pick({"a": 2, "b": 1}, set()) == "b"
    assert executor.pick({"a": 2, "b": 4}, set()) is None, "every node full: the crawl waits"
    assert executor.pick({}, {"a"}) == "b" and executor.pick({"b": 4}, {"a"}) == "a", "avoid is a preference"
    assert executor.pick({}, set(), exclude={"a", "b"}) is None
    executor.mark_down("b", "test")
    assert executor.pick({"a": 1}, set()) == "a" and executor.pick({"a": 2}, set()) is None
