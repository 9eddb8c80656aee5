"""One row per story: URL identity, near-duplicates, incremental recrawls and their cost.

    python bench/dedupe.py [--articles 1000] [--seed 42] [--newssite ../shared/bench] [--db URL]

1. Builds a newssite (URL variants, syndicated near-duplicates) dated in the last
   two days (so every article is inside the 3-day recrawl window), serves it with
   its stdlib server and crawls it with `newsingest crawl`; prints URL-dedupe
   (every manifest article one row, every linked variant merged) and
   near-duplicate precision / recall of `duplicate_of` against the manifest's
   `dup_group`s.
2. Rebuilds the site as epoch 2 (same seed: updates and new articles), crawls
   again into the same database; prints the share of article requests answered
   by 304 or skipped, whether every updated article got exactly one new version,
   and how many unchanged articles were extracted again.
3. Inserts 1,000 and 100,000 random signatures directly (a fresh SQLite file
   each), then times the near-duplicate lookup (signature + band candidates +
   confirmation) of the same real articles against both: cost per article at
   100k / at 1k.
A benchmark script, not a test: its output goes in closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localsite import crawl_source, free_port, serve_newssite  # noqa: E402

from crawler.demo.run import write_sources_file  # noqa: E402
from crawler.urls import choose_canonical  # noqa: E402
from pipelines.dedupe import content_hash  # noqa: E402
from storage.db import create_db_engine, session_factory  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import Article, ArticleBand, ArticleVersion, CrawlRun, Source  # noqa: E402
from storage.repository import Repository  # noqa: E402
from storage.signature import NUM_PERM, band_hashes, minhash  # noqa: E402


def identity(a: dict) -> str:
    """The row a manifest article must land in: its declared canonical when it names another page."""
    return a["canonical_declared"] or a["url"]


def build(out: Path, args: argparse.Namespace, port: int, now: str, epoch: int, env: dict[str, str]) -> dict:
    subprocess.run([sys.executable, "-m", "newssite", "build", str(out), "--articles", str(args.articles),
                    "--seed", args.seed, "--port", str(port), "--now", now, "--days", "2", "--epoch", str(epoch)],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def load(db_url: str) -> tuple[dict[str, Article], dict[int, int], list[CrawlRun]]:
    engine = create_db_engine(db_url)
    with session_factory(engine)() as session:
        rows = {a.canonical_url: a for a in session.scalars(select(Article))}
        versions = dict(session.execute(select(ArticleVersion.article_id, func.count(ArticleVersion.id))
                                        .group_by(ArticleVersion.article_id)).all())
        runs = list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
    engine.dispose()
    return rows, versions, runs


def url_and_near_dup_report(manifest: dict, rows: dict[str, Article]) -> dict[str, float]:
    articles = [a for a in manifest["articles"] if a["kind"] != "stub" and a.get("fault") != "500"]
    expected = {identity(a) for a in articles}
    found = expected & set(rows)
    extra = set(rows) - expected
    variants = [(v, a) for a in articles for v in a["variant_urls"]]
    merged_fn = sum(choose_canonical(v, a["canonical_declared"]) == identity(a) for v, a in variants)
    print(f"URL identity: {len(found)}/{len(expected)} manifest identities stored once, {len(extra)} extra rows; "
          f"linked variants {len(variants)}, resolved to their article {merged_fn}/{len(variants)}")

    by_url = {a["url"]: a for a in manifest["articles"]}
    by_id = {row.id: url for url, row in rows.items()}
    group_of = {url: by_url[url]["dup_group"] for url in rows if url in by_url}
    predicted = {(url, by_id[row.duplicate_of]) for url, row in rows.items() if row.duplicate_of is not None}
    truth = set()
    roots: dict[str, list[str]] = {}
    for url in rows:
        if url in group_of:
            roots.setdefault(group_of[url], []).append(url)
    for members in roots.values():
        if len(members) > 1:
            first = min(members, key=lambda u: (rows[u].published_at, rows[u].id))
            truth |= {(u, first) for u in members if u != first}
    correct = predicted & truth
    precision = len(correct) / len(predicted) if predicted else 1.0
    recall = len(correct) / len(truth) if truth else 1.0
    sims = [rows[u].similarity for u, _ in predicted if rows[u].similarity is not None]
    print(f"near-duplicates: {len(truth)} copies stored under their own URL, {len(predicted)} linked, "
          f"{len(correct)} right: precision {precision:.3f}, recall {recall:.3f}"
          + (f" (similarity min {min(sims):.2f}, median {statistics.median(sims):.2f})" if sims else ""))
    for u, r in sorted(predicted - truth)[:5]:
        print("  wrong link:", u, "->", r)
    for u, r in sorted(truth - predicted)[:5]:
        print("  missed:", u, "->", r, "linked to", rows[u].duplicate_of)
    return {"url_ok": float(len(found) == len(expected) and not extra and merged_fn == len(variants)),
            "precision": precision, "recall": recall}


def recrawl_report(manifest2: dict, rows: dict[str, Article], versions: dict[int, int], run: CrawlRun) -> dict:
    stats = run.stats or {}
    not_modified = int(stats.get("newsingest/not_modified", 0))
    skipped = int(stats.get("newsingest/skipped/seen", 0))
    article_requests = not_modified + skipped + int(stats.get("newsingest/pages/article", 0)) + int(
        stats.get("newsingest/pages/not_article", 0))
    all_requests = int(stats.get("downloader/request_count", 0)) + skipped
    updated = [a for a in manifest2["articles"] if a.get("updated_in_epoch") == 2 and identity(a) in rows
               and identity(a) == a["url"]]
    one_new = sum(rows[a["url"]].version == 2 and versions.get(rows[a["url"]].id) == 2 for a in updated)
    unchanged_versions = [url for url, row in rows.items()
                          if row.version != 1 and url not in {a["url"] for a in updated}]
    reextracted = int(stats.get("newsingest/stored/unchanged", 0))
    share = (not_modified + skipped) / article_requests if article_requests else 0.0
    print(f"epoch 2: run {run.status}, {all_requests} requests ({skipped} skipped before the request, "
          f"{not_modified} answered 304); share of page requests answered by 304 or skipped "
          f"{share:.3f} ({not_modified + skipped}/{article_requests}), of all requests "
          f"{(not_modified + skipped) / max(1, all_requests):.3f}")
    print(f"epoch 2: updated articles with exactly one new version {one_new}/{len(updated)}; other rows with a "
          f"new version {len(unchanged_versions)}; new rows {run.items_stored}; unchanged articles extracted "
          f"again {reextracted} (near copies fetched under a URL that is not their row's)")
    return {"versions_ok": float(one_new == len(updated) and not unchanged_versions), "share": share}


def cost_report(manifest: dict, workdir: Path, sizes: tuple[int, ...] = (1_000, 100_000)) -> float:
    bodies = [a["body"] for a in manifest["articles"] if a["body"]][:300]
    rng = np.random.default_rng(7)
    per_article = {}
    for size in sizes:
        db = f"sqlite:///{workdir}/cost-{size}.db"
        engine = create_db_engine(db)
        upgrade(engine)
        repo = Repository(engine)
        now = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(insert(Source), [{"name": "filler", "site_name": None, "created_at": now,
                                           "updated_at": now}])
            for start in range(0, size, 5_000):
                n = min(5_000, size - start)
                sigs = rng.integers(0, 2**32, size=(n, NUM_PERM), dtype=np.uint64).astype("<u4")
                conn.execute(insert(Article), [{
                    "id": start + i + 1, "source": "filler", "url": f"https://filler.example/{start + i}",
                    "canonical_url": f"https://filler.example/{start + i}", "title": "t", "body": "b",
                    "authors": [], "tags": [], "content_hash": f"{start + i:064x}", "version": 1,
                    "minhash": sigs[i].tobytes(), "first_seen_at": now, "last_seen_at": now, "updated_at": now,
                } for i in range(n)])
                conn.execute(insert(ArticleBand), [
                    {"band_no": b, "band_hash": h, "article_id": start + i + 1}
                    for i in range(n) for b, h in enumerate(band_hashes(sigs[i].tobytes()))])
        timings = []
        for _ in range(3):
            with repo.sessions() as session:
                started = time.perf_counter()
                for body in bodies:
                    repo._find_group(session, content_hash(body), minhash(body))
                timings.append((time.perf_counter() - started) / len(bodies))
        per_article[size] = min(timings)
        engine.dispose()
        print(f"dedupe cost per article at {size:,} stored articles: {per_article[size] * 1000:.3f} ms "
              f"(signature + band lookup + confirmation, best of 3 over {len(bodies)} articles)")
    ratio = per_article[sizes[-1]] / per_article[sizes[0]]
    print(f"dedupe cost ratio {sizes[-1]:,} / {sizes[0]:,}: {ratio:.2f}x")
    return ratio


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--seed", default="42")
    parser.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--newssite", default=str(ROOT.parent / "shared" / "bench"))
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.newssite}

    with tempfile.TemporaryDirectory(prefix="dedupe-bench-") as tmp:
        port = free_port()
        out = Path(tmp) / "site"
        # Epoch 1 "now" is a day ago and articles span two days: epoch 2 (one day later) is today,
        # and every article is inside the default 3-day recrawl window.
        now = (datetime.now(UTC) - timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
        manifest = build(out, args, port, now, 1, env)
        db_url = args.db or f"sqlite:///{tmp}/news.db"
        sources = write_sources_file(Path(tmp) / "sources.toml", {"herald": {
            "site_name": "The Loopback Herald", "allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
            "feeds": [f"{manifest['base_url']}/rss.xml"], "sitemaps": [f"{manifest['base_url']}/sitemap.xml"],
            "start_urls": [f"{manifest['base_url']}/"], "settings": {"AUTOTHROTTLE_ENABLED": False}}})
        server = serve_newssite(out, port, env)
        try:
            first, elapsed = crawl_source(sources, "herald", db_url)
        finally:
            server.terminate()
            server.wait(timeout=10)
        rows, _versions, runs = load(db_url)
        print(f"newssite: {args.articles} base articles, seed {args.seed}; epoch 1 crawl exit {first.returncode} "
              f"in {elapsed:.1f}s, run {runs[-1].status}, {len(rows)} rows")
        if first.returncode:
            print(first.stderr[-2000:])
        quality = url_and_near_dup_report(manifest, rows)

        manifest2 = build(out, args, port, now, 2, env)
        server = serve_newssite(out, port, env)
        try:
            second, elapsed = crawl_source(sources, "herald", db_url)
        finally:
            server.terminate()
            server.wait(timeout=10)
        rows, versions, runs = load(db_url)
        print(f"epoch 2 crawl exit {second.returncode} in {elapsed:.1f}s")
        if second.returncode:
            print(second.stderr[-2000:])
        recrawl = recrawl_report(manifest2, rows, versions, runs[-1])
        ratio = cost_report(manifest, Path(tmp))

    goals = {
        "URL variants 100% merged": quality["url_ok"] == 1.0,
        "near-duplicate precision >= 0.99": quality["precision"] >= 0.99,
        "near-duplicate recall >= 0.95": quality["recall"] >= 0.95,
        "epoch 2: every updated article exactly one new version, no other": recrawl["versions_ok"] == 1.0,
        "dedupe cost at 100k <= 1.2x cost at 1k": ratio <= 1.2,
    }
    for goal, met in goals.items():
        print(f"goal {'MET' if met else 'NOT MET'}: {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
