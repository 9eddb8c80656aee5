"""End to end: the real spider and pipelines crawl the demo site over loopback into SQL.

Every crawl runs in a subprocess, as in production (the Twisted reactor
cannot restart in one process); the site is served by a thread of the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from storage.db import create_db_engine, session_factory
from storage.models import Article, ArticleVersion, CrawlRun

ROOT = Path(__file__).resolve().parents[1]
FAST = ["-s", "AUTOTHROTTLE_ENABLED=False", "-s", "LOG_LEVEL=INFO"]
BOILERPLATE = ("See also", "Read more", "Advertisement", "Sign up", "Most read")


def newsingest(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawler.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def rows(db_url: str) -> dict[str, Article]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        result = {a.canonical_url: a for a in session.scalars(select(Article))}
    engine.dispose()
    return result


def runs(db_url: str) -> list[CrawlRun]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        result = list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    engine.dispose()
    return result


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, dict[str, Any], Path]]:
    """The demo site on a free loopback port, and a sources file for it."""
    with serve_demo_site(tmp_path / "site") as (server, manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        yield server, manifest, sources


def expected_articles(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["url"]: a for a in manifest["articles"] if a["kind"] in ("article", "syndicated")}


def test_crawl_stores_every_article_once_with_clean_fields(site, db_url: str) -> None:
    server, manifest, sources = site
    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]

    stored = rows(db_url)
    expected = expected_articles(manifest)
    assert set(stored) == set(expected), "one row per manifest article, keyed on its canonical URL"
    for url, want in expected.items():
        got = stored[url]
        assert got.title == want["title"], url
        assert got.body == want["body"], url
        assert got.authors == want["authors"], url
        assert got.published_at == datetime.fromisoformat(want["published"]), url
        assert got.published_at.utcoffset().total_seconds() == 0
        assert not any(marker in got.body for marker in BOILERPLATE), url

    # the exact syndicated copy is stored, linked to the original; the near copy with
    # rel=canonical to its original is the original's row, not a second one
    copy = next(a for a in manifest["articles"] if a["kind"] == "syndicated")
    assert stored[copy["url"]].duplicate_of == stored[copy["duplicate_of"]].id
    assert all(near not in stored for near in manifest["near_copies"])
    # windows-1252 page decoded right
    cp1252 = next(a for a in manifest["articles"] if a["encoding"] == "windows-1252")
    assert stored[cp1252["url"]].body == cp1252["body"]
    # robots.txt obeyed, non-articles and faults not stored
    assert all(server.hits[p.replace(server.base_url, "")] == 0 for p in manifest["disallowed"])
    assert not set(manifest["non_articles"]) & set(stored)
    assert not set(manifest["faults"]) & set(stored)

    (run,) = runs(db_url)
    assert (run.status, run.trigger, run.finish_reason) == ("succeeded", "manual", "finished")
    assert run.items_stored == len(expected)
    assert run.dropped >= 1  # the stub page
    assert run.finished_at is not None and run.stats["newsingest/stored/new"] == len(expected) - 1


def article_hits(server: Any, manifest: dict[str, Any]) -> dict[str, int]:
    return {url: server.hits[urlsplit(url).path] for url in expected_articles(manifest)}


def version_count(db_url: str) -> int:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        count = session.scalar(select(func.count(ArticleVersion.id))) or 0
    engine.dispose()
    return count


def test_second_crawl_downloads_no_stored_article_again(site, db_url: str) -> None:
    server, manifest, sources = site
    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    before = article_hits(server, manifest)
    assert all(before.values())
    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    # every demo article is older than the 3-day window: the seen check stops it before the request
    assert article_hits(server, manifest) == before
    assert len(rows(db_url)) == len(expected_articles(manifest))
    _first, second = runs(db_url)
    assert second.status == "succeeded"
    assert second.items_stored == 0 and second.items_updated == 0
    assert second.stats["newsingest/skipped/seen"] >= len(expected_articles(manifest))
    # only pages never stored under their own URL are extracted again: the stub, near copies
    # whose rel=canonical names another URL
    assert second.stats.get("newsingest/stored/unchanged", 0) <= len(manifest["near_copies"])
    assert "newsingest/fetch_failed/SeenRequest" not in second.stats
    assert version_count(db_url) == len(expected_articles(manifest))


def test_young_article_is_requested_conditionally_and_a_304_costs_no_extraction(site, db_url: str) -> None:
    server, manifest, sources = site
    assert newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *FAST).returncode == 0
    first_seen = {url: row.last_seen_at for url, row in rows(db_url).items()}
    before = article_hits(server, manifest)
    young = [*FAST, "-s", "NEWSINGEST_RECRAWL_WINDOW_DAYS=100000"]  # every demo article counts as young
    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *young)
    assert result.returncode == 0, result.stderr[-3000:]
    after = article_hits(server, manifest)
    assert all(after[url] > before[url] for url in before), "young articles are fetched again"
    _first, second = runs(db_url)
    stats = second.stats
    assert second.status == "succeeded", second.error
    assert stats["newsingest/recrawl/conditional"] >= len(expected_articles(manifest))
    assert stats["newsingest/not_modified"] >= len(expected_articles(manifest))
    assert stats["downloader/response_status_count/304"] == stats["newsingest/not_modified"]
    assert stats.get("newsingest/stored/unchanged", 0) <= len(manifest["near_copies"]), "a 304 is not extracted"
    assert second.items_stored == 0 and second.items_updated == 0
    stored = rows(db_url)
    assert all(stored[url].last_seen_at > first_seen[url] for url in first_seen), "last_seen_at moved"
    assert all(stored[url].last_run_id == second.id for url in first_seen)
    assert version_count(db_url) == len(expected_articles(manifest))


def test_killed_crawl_rerun_stores_every_article_exactly_once(site, db_url: str) -> None:
    _server, manifest, sources = site
    slow = [*FAST, "-s", "DOWNLOAD_DELAY=0.15", "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
            "-s", "NEWSINGEST_STORE_BATCH_SIZE=3", "-s", "NEWSINGEST_STORE_FLUSH_SECONDS=0.5"]
    proc = subprocess.Popen([sys.executable, "-m", "crawler.cli", "crawl", "demo", "--sources", str(sources),
                             "--db", db_url, *slow], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                if len(rows(db_url)) >= 6:
                    break
            except Exception:  # schema not created yet
                continue
        else:
            pytest.fail("the crawl stored nothing within 60 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    # The store's writer process may still commit the batch it had in hand: wait until the count settles.
    partial, settled_at = len(rows(db_url)), time.monotonic()
    while time.monotonic() - settled_at < 2.0:
        time.sleep(0.25)
        now = len(rows(db_url))
        if now != partial:
            partial, settled_at = now, time.monotonic()
    assert 6 <= partial < len(expected_articles(manifest)), "killed mid-way"

    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", db_url, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    stored = rows(db_url)
    assert set(stored) == set(expected_articles(manifest))
    killed, rerun = runs(db_url)
    assert killed.status == "abandoned" and killed.finished_at is not None
    assert rerun.status == "succeeded"
    assert rerun.items_stored == len(expected_articles(manifest)) - partial


def test_scrapy_crawl_command(site, sqlite_url: str) -> None:
    _server, manifest, sources = site
    env = {**os.environ, "NEWSINGEST_SOURCES": str(sources), "DATABASE_URL": sqlite_url}
    result = subprocess.run(["scrapy", "crawl", "news", "-a", "source=demo", "-s", "AUTOTHROTTLE_ENABLED=False"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(rows(sqlite_url)) == set(expected_articles(manifest))
    assert [r.status for r in runs(sqlite_url)] == ["succeeded"]


def test_seed_article(tmp_path: Path, sqlite_url: str) -> None:
    """The page the project was created from comes out exactly as expected.json says."""
    from crawler.demo.server import DemoServer

    fixtures = ROOT / "tests" / "fixtures" / "seed"
    expected = json.loads((fixtures / "expected.json").read_text(encoding="utf-8"))
    site_dir = tmp_path / "seed"
    page_dir = site_dir / "site" / "world" / "2023" / "02" / "02" / "donetsk-luhansk-join-russia"
    page_dir.mkdir(parents=True)
    (page_dir / "index.html").write_bytes((fixtures / "raven-tribune.html").read_bytes())
    with DemoServer(site_dir) as server:
        url = f"{server.base_url}/world/2023/02/02/donetsk-luhansk-join-russia/"
        sources = write_sources_file(tmp_path / "sources.toml", {"raven": {
            "allowed_domains": ["127.0.0.1"], "allow_private_networks": True, "start_urls": [url],
            "follow_depth": 0}})
        result = newsingest("crawl", "raven", "--sources", str(sources), "--db", sqlite_url, *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    (article,) = rows(sqlite_url).values()
    assert article.title == expected["title"]
    assert article.subtitle == expected["subtitle"]
    assert article.site_name == expected["site_name"]
    assert article.published_at is not None
    assert article.published_at.date().isoformat() == expected["published_date"]
    assert article.body == "\n\n".join(expected["body_paragraphs"])
    for text in expected["must_not_contain"]:
        assert text not in article.body
        assert text not in article.title


def test_malformed_sources_file_exits_2_with_one_line(tmp_path: Path, sqlite_url: str) -> None:
    sources = tmp_path / "sources.toml"
    sources.write_text('[sources.demo]\nallowed_domains = ["example.com"]\nfeed = ["https://example.com/rss"]\n')
    result = newsingest("crawl", "demo", "--sources", str(sources), "--db", sqlite_url)
    assert result.returncode == 2
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1
    assert "sources.toml" in message and "demo" in message and "'feed'" in message


def test_unreachable_site_fails_the_run(tmp_path: Path, sqlite_url: str) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sources = write_sources_file(tmp_path / "sources.toml", {"down": {
        "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
        "start_urls": [f"http://127.0.0.1:{port}/"]}})
    result = newsingest("crawl", "down", "--sources", str(sources), "--db", sqlite_url, *FAST,
                        "-s", "RETRY_TIMES=0", "-s", "ROBOTSTXT_OBEY=False")
    assert result.returncode == 1
    (run,) = runs(sqlite_url)
    assert run.status == "failed" and "no page could be fetched" in (run.error or "")


def test_unreachable_database_exits_3(site) -> None:
    _server, _manifest, sources = site
    result = newsingest("crawl", "demo", "--sources", str(sources),
                        "--db", "postgresql://postgres@127.0.0.1:1/none", timeout=60)
    assert result.returncode == 3
    assert "database unreachable" in result.stderr


def test_runs_and_export_commands(site, sqlite_url: str, tmp_path: Path) -> None:
    _server, manifest, sources = site
    assert newsingest("crawl", "demo", "--sources", str(sources), "--db", sqlite_url, *FAST).returncode == 0
    listing = newsingest("runs", "--db", sqlite_url)
    assert listing.returncode == 0 and "succeeded" in listing.stdout and "demo" in listing.stdout
    out = tmp_path / "articles.jsonl"
    exported = newsingest("export", "--format", "jsonl", "--since", "1h", "--db", sqlite_url, "-o", str(out))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert {row["canonical_url"] for row in lines} == set(expected_articles(manifest))
    assert all(row["published_at"].endswith("+00:00") for row in lines)
    future = newsingest("export", "--since", "2999-01-01T00:00:00Z", "--db", sqlite_url)
    assert future.returncode == 0 and future.stdout == ""
