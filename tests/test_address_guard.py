"""The address guard on a real crawl: a source without allow_private_networks reaches no private address."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from storage.db import create_db_engine, session_factory
from storage.models import CrawlRun

ROOT = Path(__file__).resolve().parents[1]


def test_private_addresses_are_refused_in_every_spelling(tmp_path: Path) -> None:
    with serve_demo_site(tmp_path / "site") as (server, _manifest):
        port = server.base_url.rsplit(":", 1)[1]
        # IPv6 spellings ([::1], [::ffff:127.0.0.1]) are covered by tests/test_netguard.py: a
        # source cannot list IPv6 literals in allowed_domains.
        spellings = ["127.0.0.1", "localhost", "127.1", "2130706433", "0x7f.1"]
        urls = [f"http://{host}:{port}/" for host in spellings]
        sources = write_sources_file(tmp_path / "sources.toml", {"guarded": {
            "allowed_domains": spellings,
            "start_urls": urls, "follow_depth": 0}})
        db = f"sqlite:///{tmp_path / 'news.db'}"
        result = subprocess.run([sys.executable, "-m", "crawler.cli", "crawl", "guarded", "--sources", str(sources),
                                 "--db", db, "-s", "ROBOTSTXT_OBEY=False", "-s", "AUTOTHROTTLE_ENABLED=False"],
                                cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert sum(server.hits.values()) == 0, server.hits
    assert result.returncode == 1, result.stderr[-2000:]
    engine = create_db_engine(db)
    with session_factory(engine)() as session:
        (run,) = session.query(CrawlRun).all()
    engine.dispose()
    stats = run.stats or {}
    assert stats.get("newsingest/blocked/private_address") == len(spellings)  # once each: never retried
    assert not stats.get("retry/count")
    assert run.status == "failed"
