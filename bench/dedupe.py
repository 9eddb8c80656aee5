"""One row per story: URL identity, near-duplicates, incremental recrawls and their cost.

    python bench/dedupe.py [--articles 1000] [--seed 42] [--newssite ../shared/bench] [--db URL] [--keep DIR]

1. Builds a newssite (URL variants, syndicated near-duplicates) dated in the last
   two days (so every article is inside the 3-day recrawl window), serves it with
   its stdlib server and crawls it with `newsingest crawl`; prints URL-dedupe
   (every manifest article one row, every linked variant merged) and
   near-duplicate precision / recall of `duplicate_of` against the manifest's
   `dup_group`s. Linked variants are resolved as the crawler resolves them
   (tracking stripped, redirects followed, declared canonical applied); articles
   whose whole text is below NEWSINGEST_MIN_BODY_CHARS are dropped by design and
   listed, not counted. What does not match is printed (ids, URLs).
2. Rebuilds the site as epoch 2 (same seed: updates and new articles), crawls
   again into the same database; prints the share of article page requests
   answered by 304 or skipped (and of all page requests, listings included:
   those are re-fetched by design), whether every updated article got exactly
   one new version (any other row with a new version is printed with what
   changed), and how many unchanged articles were extracted again: from the
   site's access log, the article pages (canonical pages and the syndicated
   copies that declare another URL canonical alike) that epoch 1 fetched and
   stored, did not change in epoch 2, and were answered 200 in epoch 2 (every
   200 for an article page is extracted). Every article is inside the recrawl
   window, so each is requested again, conditionally: an unchanged page must
   get a 304 (or be skipped), and a 200 is an extraction that should not have
   happened. Pages never stored (stubs, texts below the minimum, 500s) have
   nothing to compare against and are re-fetched by design; they are counted
   apart.
3. Inserts 1,000 and 100,000 random signatures directly (a fresh SQLite file
   each), then times the near-duplicate lookup (signature + band candidates +
   confirmation) of the same real articles against both: cost per article at
   100k / at 1k.
A benchmark script, not a test: its output goes in closing notes.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
from sqlalchemy import func, insert, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from localsite import crawl_source, free_port, serve_newssite  # noqa: E402

from crawler.demo.run import write_sources_file  # noqa: E402
from crawler.settings import NEWSINGEST_MIN_BODY_CHARS  # noqa: E402
from crawler.urls import choose_canonical, strip_tracking  # noqa: E402
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


_REQUEST_LINE = re.compile(r'"GET (\S+) HTTP/[\d.]+" (\d{3}) ')


def page_answers(log_text: str, manifest: dict) -> dict[str, list[int]]:
    """The statuses each manifest article page was answered with, from an access log: request paths
    are matched to the page's file (query dropped, ``index.html`` dropped)."""
    by_path = {urlsplit(a["url"]).path: a["url"] for a in manifest["articles"]}
    answers: dict[str, list[int]] = {}
    for target, status in _REQUEST_LINE.findall(log_text):
        path = unquote(urlsplit(target).path)
        if path.endswith("/index.html"):
            path = path[: -len("index.html")]
        if path in by_path:
            answers.setdefault(by_path[path], []).append(int(status))
    return answers


def resolve_variants(manifest: dict) -> dict[str, str]:
    """Where each linked variant URL lands, as the crawler resolves it: tracking parameters stripped
    before the request, redirects followed (a slashless link is a 301 to the article), then the
    page's declared canonical applied (`choose_canonical`). Run while the site is served."""
    landed: dict[str, str] = {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy
    for a in manifest["articles"]:
        for variant in a["variant_urls"]:
            try:
                with opener.open(strip_tracking(variant), timeout=10) as response:
                    final = response.geturl()
            except (urllib.error.URLError, OSError):
                final = variant
            landed[variant] = choose_canonical(final, a["canonical_declared"])
    return landed


def url_and_near_dup_report(manifest: dict, rows: dict[str, Article], landed: dict[str, str]) -> dict[str, float]:
    stored = [a for a in manifest["articles"] if a["kind"] != "stub" and a.get("fault") != "500"]
    # Pages whose whole text is shorter than the validate stage's minimum are dropped by design
    # (the same rule that drops stubs); they are listed, not counted.
    articles = [a for a in stored if len(a["body"].strip()) >= NEWSINGEST_MIN_BODY_CHARS]
    for a in stored:
        if a not in articles:
            print(f"  not expected: {a['id']} ({a['kind']}) body of {len(a['body'].strip())} chars is below "
                  f"NEWSINGEST_MIN_BODY_CHARS={NEWSINGEST_MIN_BODY_CHARS}; stored: {identity(a) in rows}")
    expected = {identity(a) for a in articles}
    found = expected & set(rows)
    extra = set(rows) - expected - {identity(a) for a in stored}
    variants = [(v, a) for a in articles for v in a["variant_urls"]]
    merged_fn = sum(landed.get(v) == identity(a) for v, a in variants)
    print(f"URL identity: {len(found)}/{len(expected)} manifest identities stored once, {len(extra)} extra rows; "
          f"linked variants {len(variants)}, resolved to their article {merged_fn}/{len(variants)} "
          "(tracking stripped, redirects followed, declared canonical applied)")
    by_identity = {identity(a): a for a in articles}
    for url in sorted(expected - found):
        a = by_identity[url]
        print(f"  not stored: {a['id']} {url} (url {a['url']}, declared {a['canonical_declared']}, kind {a['kind']}, "
              f"hazards {a['hazards']})")
    for url in sorted(extra):
        print(f"  extra row: {url} (fetched as {rows[url].url})")
    for v, a in variants:
        if landed.get(v) != identity(a):
            print(f"  variant not resolved: {a['id']} {v} -> {landed.get(v)}, expected {identity(a)} "
                  f"(declared {a['canonical_declared']})")

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


def version_texts(db_url: str, article_ids: list[int]) -> dict[int, list[ArticleVersion]]:
    """Every stored version of these articles, oldest first."""
    engine = create_db_engine(db_url)
    out: dict[int, list[ArticleVersion]] = {}
    with session_factory(engine)() as session:
        for version in session.scalars(select(ArticleVersion).where(ArticleVersion.article_id.in_(article_ids))
                                       .order_by(ArticleVersion.article_id, ArticleVersion.version)):
            out.setdefault(version.article_id, []).append(version)
    engine.dispose()
    return out


def describe_change(old: ArticleVersion, new: ArticleVersion) -> str:
    """What differs between two versions: title, subtitle, and the body's changed paragraphs."""
    parts = []
    if old.title != new.title:
        parts.append(f"title {old.title!r} -> {new.title!r}")
    if old.subtitle != new.subtitle:
        parts.append(f"subtitle {old.subtitle!r} -> {new.subtitle!r}")
    if old.body != new.body:
        diff = [line for line in difflib.unified_diff(old.body.split("\n\n"), new.body.split("\n\n"),
                                                      lineterm="", n=0) if line[:1] in "+-" and line[:3] not in
                ("+++", "---")]
        parts.append("body: " + " | ".join(d[:160] for d in diff[:6]))
    if old.content_hash == new.content_hash:
        parts.append("same content_hash")
    return "; ".join(parts) or "no difference in title/subtitle/body"


def reextraction_report(manifest2: dict, rows: dict[str, Article], epoch1: dict[str, list[int]],
                        epoch2: dict[str, list[int]], stats: dict) -> int:
    """Unchanged article pages answered 200 (extracted) in epoch 2, from the access logs; returns their count."""
    changed = [a for a in manifest2["articles"] if a.get("updated_in_epoch") == 2
               or "new_in_epoch" in (a.get("hazards") or [])]
    changed_urls = {a["url"] for a in changed}
    # fetched (200) and stored in epoch 1: its row, or the row of the page it declares canonical
    stored = [a for a in manifest2["articles"] if a["url"] not in changed_urls and 200 in epoch1.get(a["url"], ())
              and identity(a) in rows]
    never = [a for a in manifest2["articles"] if a["url"] not in changed_urls and identity(a) not in rows]
    again = [a for a in stored if 200 in epoch2.get(a["url"], ())]
    copies = [a for a in stored if identity(a) != a["url"]]
    answered = {"200": 0, "304": 0, "not requested": 0, "other": 0}
    for a in stored:
        statuses = epoch2.get(a["url"], [])
        key = ("200" if 200 in statuses else "304" if 304 in statuses else "not requested" if not statuses
               else "other")
        answered[key] += 1
    print(f"epoch 2: unchanged article pages fetched and stored in epoch 1: {len(stored)} ({len(copies)} of them "
          f"copies that declare another URL canonical); answered in epoch 2: "
          + ", ".join(f"{k} {v}" for k, v in answered.items()))
    extracted_changed = sum(1 for a in changed if 200 in epoch2.get(a["url"], ()))
    extracted_never = sum(1 for a in never if 200 in epoch2.get(a["url"], ()))
    print(f"epoch 2: article pages answered 200 (extracted): updated or new {extracted_changed}/{len(changed)}, "
          f"never stored (stubs, short texts, faults: re-fetched by design) {extracted_never}, "
          f"unchanged {len(again)}; crawl stats: pages extracted as articles "
          f"{int(stats.get('newsingest/pages/article', 0))}, stored unchanged "
          f"{int(stats.get('newsingest/stored/unchanged', 0))}, dropped as in-run URL duplicates "
          f"{int(stats.get('newsingest/duplicates/url', 0))}")
    for a in again[:20]:
        print(f"  extracted again: {a['id']} {a['url']} (kind {a['kind']}, declared {a['canonical_declared']}, "
              f"epoch 2 answers {epoch2.get(a['url'])})")
    return len(again)


def recrawl_report(manifest2: dict, rows: dict[str, Article], versions: dict[int, int], run: CrawlRun,
                   db_url: str) -> dict:
    stats = run.stats or {}
    not_modified = int(stats.get("newsingest/not_modified", 0))
    skipped = int(stats.get("newsingest/skipped/seen", 0))
    # Article pages: answered 304, skipped before the request, or fetched and extracted as an article.
    # Listing pages (home, sections, tags, authors) are re-fetched by design: they are how new articles
    # are found; they count only in the second share.
    article_requests = not_modified + skipped + int(stats.get("newsingest/pages/article", 0))
    page_requests = article_requests + int(stats.get("newsingest/pages/not_article", 0))
    all_requests = int(stats.get("downloader/request_count", 0)) + skipped
    updated = [a for a in manifest2["articles"] if a.get("updated_in_epoch") == 2 and identity(a) in rows
               and identity(a) == a["url"]]
    one_new = sum(rows[a["url"]].version == 2 and versions.get(rows[a["url"]].id) == 2 for a in updated)
    unchanged_versions = [url for url, row in rows.items()
                          if row.version != 1 and url not in {a["url"] for a in updated}]
    reextracted = int(stats.get("newsingest/stored/unchanged", 0))
    by_identity = {identity(a): a for a in manifest2["articles"]}
    texts = version_texts(db_url, [rows[url].id for url in unchanged_versions]) if unchanged_versions else {}
    for url in sorted(unchanged_versions):
        row, a = rows[url], by_identity.get(url)
        history = texts.get(row.id, [])
        what = describe_change(history[-2], history[-1]) if len(history) >= 2 else f"{len(history)} versions"
        print(f"  unexpected new version: {a['id'] if a else '?'} {url} (kind {a['kind'] if a else '?'}, "
              f"updated_in_epoch {a.get('updated_in_epoch') if a else '?'}, fetched as {row.url}): {what}")
    saved = not_modified + skipped
    share = saved / article_requests if article_requests else 0.0
    print(f"epoch 2: run {run.status}, {all_requests} requests ({skipped} skipped before the request, "
          f"{not_modified} answered 304); share answered by 304 or skipped: of article page requests "
          f"{share:.3f} ({saved}/{article_requests}), of all page requests (listings included) "
          f"{saved / max(1, page_requests):.3f} ({saved}/{page_requests}), of all requests "
          f"{saved / max(1, all_requests):.3f}")
    expected_fetch = sum(1 for a in manifest2["articles"] if a.get("updated_in_epoch") == 2
                         or "new_in_epoch" in (a.get("hazards") or []))
    print(f"epoch 2: article pages that had to be fetched (updated or new in the manifest) {expected_fetch}, "
          f"article pages extracted {int(stats.get('newsingest/pages/article', 0))}")
    print(f"epoch 2: updated articles with exactly one new version {one_new}/{len(updated)}; other rows with a "
          f"new version {len(unchanged_versions)}; new rows {run.items_stored}; stored unchanged (extracted, "
          f"nothing new) {reextracted}")
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
    parser.add_argument("--keep", metavar="DIR", help="work in DIR (site builds, database) and leave it there")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.newssite}

    with (contextlib.nullcontext(args.keep) if args.keep else tempfile.TemporaryDirectory(prefix="dedupe-bench-")
          ) as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
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
        log1, log2 = Path(tmp) / "access-epoch1.log", Path(tmp) / "access-epoch2.log"
        for log in (log1, log2):
            log.unlink(missing_ok=True)
        server = serve_newssite(out, port, env, log1)
        try:
            first, elapsed = crawl_source(sources, "herald", db_url)
            time.sleep(0.2)  # the server's last log lines
            epoch1 = page_answers(log1.read_text(encoding="utf-8", errors="replace"), manifest)
            landed = resolve_variants(manifest)
        finally:
            server.terminate()
            server.wait(timeout=10)
        rows1, _versions, runs = load(db_url)
        rows = rows1
        print(f"newssite: {args.articles} base articles, seed {args.seed}; epoch 1 crawl exit {first.returncode} "
              f"in {elapsed:.1f}s, run {runs[-1].status}, {len(rows)} rows")
        if first.returncode:
            print(first.stderr[-2000:])
        quality = url_and_near_dup_report(manifest, rows, landed)

        manifest2 = build(out, args, port, now, 2, env)
        server = serve_newssite(out, port, env, log2)
        try:
            second, elapsed = crawl_source(sources, "herald", db_url)
            time.sleep(0.2)
        finally:
            server.terminate()
            server.wait(timeout=10)
        epoch2 = page_answers(log2.read_text(encoding="utf-8", errors="replace"), manifest2)
        rows, versions, runs = load(db_url)
        print(f"epoch 2 crawl exit {second.returncode} in {elapsed:.1f}s")
        if second.returncode:
            print(second.stderr[-2000:])
        recrawl = recrawl_report(manifest2, rows, versions, runs[-1], db_url)
        reextracted = reextraction_report(manifest2, rows1, epoch1, epoch2, runs[-1].stats or {})
        ratio = cost_report(manifest, Path(tmp))

    goals = {
        "URL variants 100% merged": quality["url_ok"] == 1.0,
        "near-duplicate precision >= 0.99": quality["precision"] >= 0.99,
        "near-duplicate recall >= 0.95": quality["recall"] >= 0.95,
        "epoch 2: every updated article exactly one new version, no other": recrawl["versions_ok"] == 1.0,
        "epoch 2: unchanged articles not re-extracted (0 unchanged stored pages answered 200)": reextracted == 0,
        "dedupe cost at 100k <= 1.2x cost at 1k": ratio <= 1.2,
    }
    for goal, met in goals.items():
        print(f"goal {'MET' if met else 'NOT MET'}: {goal}")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
