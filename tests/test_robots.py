"""robots.txt is obeyed by every request, also those that waited for it together."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import QuietHandler, serve

from crawler.demo.run import write_sources_file

ROOT = Path(__file__).resolve().parents[1]
ROBOTS = b"User-agent: *\nDisallow: /private/\n"


class SlowRobotsSite(QuietHandler):
    """robots.txt answers after 0.5 s, so every start request waits for it together."""

    hits: Counter[str] = Counter()

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        if self.path == "/robots.txt":
            time.sleep(0.5)
            body, kind = ROBOTS, "text/plain"
        else:
            body, kind = b"<html><head><title>page</title></head><body><p>Hello.</p></body></html>", "text/html"
        self.reply(200, body, {"Content-Type": kind})


@pytest.fixture
def slow_robots_site() -> Iterator[str]:
    SlowRobotsSite.hits = Counter()
    with serve(SlowRobotsSite) as base_url:
        yield base_url


def test_concurrent_requests_waiting_for_robots_all_obey_it(slow_robots_site: str, tmp_path: Path) -> None:
    private = [f"{slow_robots_site}/private/page-{i}/" for i in range(5)]
    sources = write_sources_file(tmp_path / "sources.toml", {"site": {
        "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
        "start_urls": [*private, f"{slow_robots_site}/public/"],
        "follow_depth": 0}})
    result = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "crawl", "site", "--sources", str(sources),
         "--db", f"sqlite:///{tmp_path / 'news.db'}", "-s", "AUTOTHROTTLE_ENABLED=False",
         "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=16"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert SlowRobotsSite.hits["/robots.txt"] == 1
    assert SlowRobotsSite.hits["/public/"] == 1, result.stderr[-2000:]
    assert not [path for path in SlowRobotsSite.hits if path.startswith("/private/")]
