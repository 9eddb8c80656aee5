"""The repository's write path: set-based batches against the row-by-row path, in one run.

    python bench/store.py [--articles 2000] [--batch 50] [--db sqlite|postgresql|URL ...] [--newssite ../shared/bench]

Builds a newssite (syndicated near-duplicates included), turns its manifest articles into
store records (as the store pipeline hands them over), and writes them in batches into a
fresh database twice per path: new articles, then the same articles again (a recrawl that
finds them unchanged). Prints CPU and wall time per article of each path and the ratio
set / rows, and checks that both paths left the same number of rows and links.
A benchmark script, not a test: its output goes in closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.dedupe import content_hash  # noqa: E402
from storage.db import create_db_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Article  # noqa: E402
from storage.repository import Repository  # noqa: E402

PG_ADMIN = os.environ.get("NEWSINGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def records(manifest: dict) -> list[dict[str, Any]]:
    out = []
    for a in manifest["articles"]:
        if not a["body"]:
            continue
        out.append({"source": "bench", "canonical_url": a["url"], "url": a["url"],
                    "content_hash": content_hash(a["body"]), "title": a["title"], "subtitle": a["lead"],
                    "body": a["body"], "authors": a["authors"],
                    "published_at": datetime.fromisoformat(a["published"]),
                    "modified_at": datetime.fromisoformat(a["modified"]) if a["modified"] else None,
                    "language": "en", "section": a["section"], "tags": a["tags"], "image_url": None,
                    "site_name": "The Loopback Herald", "etag": '"e1"', "last_modified": None, "fetched_at": None})
    return out


class Database:
    """A fresh database per measured run: a SQLite file, or a throw-away PostgreSQL database."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.kind, self.workdir, self.name = kind, workdir, None

    def __enter__(self) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{self.workdir / f'store-{uuid.uuid4().hex[:8]}.db'}"
        admin = make_url(PG_ADMIN)
        self.name = f"newsingest_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(host=admin.host, port=admin.port or 5432, user=admin.username, dbname=admin.database,
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return admin.set(database=self.name).render_as_string(hide_password=False)

    def __exit__(self, *exc: object) -> None:
        if self.name:
            admin = make_url(PG_ADMIN)
            with psycopg.connect(host=admin.host, port=admin.port or 5432, user=admin.username,
                                 dbname=admin.database, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def measure(url: str, items: list[dict[str, Any]], batch: int, batch_writes: bool) -> dict[str, Any]:
    engine = create_db_engine(url)
    upgrade(engine)
    repo = Repository(engine, batch_writes=batch_writes)
    repo.ensure_source("bench", "Bench")
    phases = {}
    for phase in ("new", "unchanged"):
        cpu, wall = time.process_time(), time.perf_counter()
        for start in range(0, len(items), batch):
            result = repo.upsert_articles(items[start:start + batch])
            assert not result.failed, result.failed[:3]
        phases[phase] = ((time.process_time() - cpu) / len(items), (time.perf_counter() - wall) / len(items))
    with repo.sessions() as session:
        counts = (session.scalar(select(func.count(Article.id))),
                  session.scalar(select(func.count(Article.id)).where(Article.duplicate_of.is_not(None))))
    engine.dispose()
    return {"phases": phases, "counts": counts, "paths": dict(repo.batches_written)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", default="7")
    parser.add_argument("--db", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--newssite", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="store-bench-") as tmp:
        site = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "newssite", "build", str(site), "--articles", str(args.articles),
                        "--seed", args.seed], env={**os.environ, "PYTHONPATH": args.newssite}, check=True,
                       stdout=subprocess.DEVNULL)
        items = records(json.loads((site / "manifest.json").read_text(encoding="utf-8")))
        print(f"{len(items)} articles from a newssite build (seed {args.seed}), batches of {args.batch}")
        for kind in args.db or ["sqlite", "postgresql"]:
            runs = {}
            for path in ("rows", "set"):
                with Database(kind, Path(tmp)) as url:
                    runs[path] = measure(url, items, args.batch, path == "set")
            same = runs["rows"]["counts"] == runs["set"]["counts"]
            for phase in ("new", "unchanged"):
                (rc, rw), (sc, sw) = runs["rows"]["phases"][phase], runs["set"]["phases"][phase]
                print(f"{kind:10} {phase:9} row-by-row {rc * 1000:6.3f} ms CPU {rw * 1000:6.3f} ms wall | "
                      f"set-based {sc * 1000:6.3f} ms CPU {sw * 1000:6.3f} ms wall | "
                      f"ratio set/rows CPU {sc / rc:.2f} wall {sw / rw:.2f}")
            print(f"{kind:10} rows, linked copies: row-by-row {runs['rows']['counts']}, set-based "
                  f"{runs['set']['counts']} ({'same' if same else 'DIFFERENT'}); batches by path: "
                  f"{runs['set']['paths']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
