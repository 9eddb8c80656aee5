"""A database password never shows in logs, run records, `newsingest runs` or error messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from crawler.demo.run import write_sources_file
from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config
from storage.db import create_db_engine, mask_url

ROOT = Path(__file__).resolve().parents[1]
SECRET = "Sup3rSecretPassw0rd"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "crawler.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


def test_password_is_masked_everywhere(pg_url: str, tmp_path: Path) -> None:
    url = make_url(pg_url).set(password=SECRET).render_as_string(hide_password=False)  # trust auth ignores it
    with serve_demo_site(tmp_path / "site") as (server, _manifest):
        sources = write_sources_file(tmp_path / "sources.toml", {"demo": demo_source_config(server.base_url)})
        crawl = cli("crawl", "demo", "--sources", str(sources), "--db", url, "-s", "LOG_LEVEL=DEBUG",
                    "-s", "AUTOTHROTTLE_ENABLED=False")
    assert crawl.returncode == 0, crawl.stderr[-2000:]
    runs = cli("runs", "--db", url)
    down = cli("runs", "--db", url.replace(":5432/", ":1/"))
    assert down.returncode == 3
    for output in (crawl.stdout + crawl.stderr, runs.stdout + runs.stderr, down.stdout + down.stderr):
        assert SECRET not in output
    engine = create_db_engine(url)
    with engine.connect() as conn:
        leaked = conn.execute(text("SELECT count(*) FROM crawl_runs WHERE CAST(stats AS TEXT) LIKE :s "
                                   "OR COALESCE(error, '') LIKE :s"), {"s": f"%{SECRET}%"}).scalar()
    engine.dispose()
    assert leaked == 0
    assert SECRET not in mask_url(url) and "***" in mask_url(url)
