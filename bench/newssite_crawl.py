"""Crawl a newssite build with `newsingest crawl` and check the database against its manifest.

    python bench/newssite_crawl.py --articles 500 [--db URL] [--newssite ../shared/bench]

Builds the site (shared/bench/newssite), serves it with its stdlib server on a
free loopback port (faults on: 500s, flaky 500s, slow pages), crawls it once
with the real spider and pipelines, and prints how many manifest articles were
stored exactly once, which were missing or extra, and field accuracy. A
benchmark script, not a test: its output goes in closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from sqlalchemy import select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localsite import crawl_source, free_port, serve_newssite  # noqa: E402

from crawler.demo.run import write_sources_file  # noqa: E402
from storage.db import create_db_engine, session_factory  # noqa: E402
from storage.models import Article, CrawlRun  # noqa: E402


def expected_rows(manifest: dict) -> dict[str, dict]:
    """Manifest articles that must become exactly one row each, by canonical URL."""
    out = {}
    for a in manifest["articles"]:
        if a["kind"] == "stub" or a.get("fault") == "500":
            continue
        if a["canonical_declared"] and a["canonical_declared"] != a["url"]:
            continue  # declares another page canonical: merged into that row
        out[a["url"]] = a
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=500)
    parser.add_argument("--seed", default="42")
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--newssite", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="newssite-") as tmp:
        port = free_port()
        env = {**os.environ, "PYTHONPATH": args.newssite}
        out = Path(tmp) / "site"
        subprocess.run([sys.executable, "-m", "newssite", "build", str(out), "--articles", str(args.articles),
                        "--seed", args.seed, "--port", str(port)], env=env, check=True, stdout=subprocess.DEVNULL)
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        base = manifest["base_url"]
        server = serve_newssite(out, port, env)
        try:
            db_url = args.db or f"sqlite:///{tmp}/news.db"
            sources = write_sources_file(Path(tmp) / "sources.toml", {"herald": {
                "site_name": "The Loopback Herald", "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
                "feeds": [f"{base}/rss.xml"], "sitemaps": [f"{base}/sitemap.xml"], "start_urls": [f"{base}/"],
                "settings": {"AUTOTHROTTLE_ENABLED": False}}})
            crawl, elapsed = crawl_source(sources, "herald", db_url)
        finally:
            server.terminate()
            server.wait(timeout=10)

        engine = create_db_engine(db_url)
        with session_factory(engine)() as session:
            stored = {a.canonical_url: a for a in session.scalars(select(Article).where(Article.source == "herald"))}
            run = session.scalars(select(CrawlRun).order_by(CrawlRun.id.desc())).first()
        engine.dispose()

    expected = expected_rows(manifest)
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    found = [u for u in expected if u in stored]
    title = sum(stored[u].title == expected[u]["title"] for u in found)
    authors = sum(stored[u].authors == expected[u]["authors"] for u in found)
    published = sum(stored[u].published_at == datetime.fromisoformat(expected[u]["published"]) for u in found)
    # Runs of spaces are collapsed by cleaning (the generator leaves "Name,  analyst" where a role is empty).
    body = sum(_spaces(stored[u].body) == _spaces(expected[u]["body"]) for u in found)
    print(f"newssite: {args.articles} base articles, {len(manifest['articles'])} in manifest, "
          f"{len(expected)} expected rows")
    print(f"crawl: exit {crawl.returncode}, {elapsed:.1f}s, run status {run.status if run else None}, "
          f"pages {run.pages if run else 0}")
    print(f"stored rows: {len(stored)}; expected found once: {len(found)}/{len(expected)}; "
          f"missing {len(missing)}; extra {len(extra)}")
    n = max(1, len(found))
    print(f"exact: title {title / n:.3f}, authors {authors / n:.3f}, published_at {published / n:.3f}, "
          f"body {body / n:.3f}")
    for url in missing[:10]:
        print("  missing:", url, expected[url]["hazards"])
    for url in extra[:10]:
        print("  extra:", url)
    for field in ("title", "authors", "published", "body"):
        column = "published_at" if field == "published" else field
        same = (lambda a, b: _spaces(a) == _spaces(b)) if field == "body" else (lambda a, b: a == b)
        wrong = [u for u in found if not same(_value(stored[u], column), _expected(expected[u], field))]
        for url in wrong[:3]:
            want, got = _expected(expected[url], field), _value(stored[url], column)
            start = _first_difference(want, got)
            print(f"  {field} differs: {url} {expected[url]['hazards']}")
            print(f"    expected {_short(want, start)}")
            print(f"    stored   {_short(got, start)}")
    if crawl.returncode:
        print(crawl.stderr[-2000:])
    return 0 if not missing and not extra and crawl.returncode == 0 else 1


def _spaces(text: str | None) -> str:
    return re.sub(r"[ \t]+", " ", text or "")


def _value(article: Article, column: str) -> object:
    return getattr(article, column)


def _expected(entry: dict, field: str) -> object:
    return datetime.fromisoformat(entry["published"]) if field == "published" else entry[field]


def _first_difference(want: object, got: object) -> int:
    if not (isinstance(want, str) and isinstance(got, str)):
        return 0
    return next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))


def _short(value: object, start: int = 0) -> str:
    """Where two long texts part: the first difference is what a reader needs."""
    if isinstance(value, str) and len(value) > 160:
        begin = max(0, start - 60)
        return ("..." if begin else "") + repr(value[begin:begin + 150]) + f" ({len(value)} chars)"
    return repr(value)


if __name__ == "__main__":
    sys.exit(main())
