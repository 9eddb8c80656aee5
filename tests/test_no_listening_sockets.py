"""A crawl with production settings listens on no socket (stock Scrapy opens telnet and remote control)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config

ROOT = Path(__file__).resolve().parents[1]


def listening_inodes() -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    inodes.add(fields[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def test_crawl_process_listens_on_nothing(tmp_path: Path) -> None:
    with serve_demo_site(tmp_path / "site") as (server, _manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        proc = subprocess.Popen([sys.executable, "-m", "crawler.cli", "crawl", "demo", "--sources", str(sources),
                                 "--db", f"sqlite:///{tmp_path / 'news.db'}", "-s", "DOWNLOAD_DELAY=0.05",
                                 "-s", "CONCURRENT_REQUESTS_PER_DOMAIN=1"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        samples = 0
        try:
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                try:
                    sockets = socket_inodes(proc.pid)
                except FileNotFoundError:
                    break
                if sockets:  # the crawl is fetching: check nothing of it listens
                    samples += 1
                    assert not sockets & listening_inodes()
                time.sleep(0.2)
        finally:
            proc.kill()
            proc.wait(timeout=10)
    assert samples >= 3, "the crawl was sampled while it had open sockets"
