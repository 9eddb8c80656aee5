"""Body extraction benchmark: newsingest's extractor against the trafilatura baselines, one run.

    python bench/extraction.py [--data DIR] [--out DIR] [--only ours,traf_fast,...] [--repeat N]

Reads ``DIR/ground-truth.json`` and ``DIR/html/<id>.html.gz`` (the article-bench
layout), runs every extractor over every page in the same process, writes one
predictions file per extractor to ``--out`` (``{id: {"articleBody": ...}}``, the
format of ``shared/bench/score_extraction.py``), scores them with that metric and
prints one table: precision, recall, F1, median ms/page and the ratio of each
extractor's median ms/page to trafilatura ``fast``.

"ours" is exactly the crawler's path for an article page: ``extract_page`` (the
function the spider calls) followed by ``clean_fields`` (the clean pipeline), with
``assume_article=True`` because every benchmark page is an article (the spider's
classification only decides whether a crawled URL is one). Timing covers the
whole path (decode + parse + all fields + cleaning) from the page's text.
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from crawler.extract import extract_page  # noqa: E402
from pipelines.clean import clean_fields  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "article-bench"
DEFAULT_SCORER = ROOT.parent / "shared" / "bench" / "score_extraction.py"
GOAL_F1 = 0.975


def ours(html: str, url: str) -> str:
    page = extract_page(html, url, assume_article=True)
    return clean_fields(page.fields)["body"] or ""


def traf_precision(html: str, url: str) -> str:
    import trafilatura

    return trafilatura.extract(html, url=url, favor_precision=True, include_comments=False) or ""


def traf_fast(html: str, url: str) -> str:
    import trafilatura

    return trafilatura.extract(html, url=url, fast=True, include_comments=False) or ""


def readability(html: str, url: str) -> str:
    import lxml.html
    from readability import Document

    summary = Document(html, url=url).summary(html_partial=True)
    return lxml.html.fromstring(summary).text_content() if summary.strip() else ""


EXTRACTORS: dict[str, Callable[[str, str], str]] = {
    "newsingest": ours,
    "trafilatura precision": traf_precision,
    "trafilatura fast": traf_fast,
}
if importlib.util.find_spec("readability") is not None:
    EXTRACTORS["readability-lxml"] = readability


def load_scorer(path: Path):
    spec = importlib.util.spec_from_file_location("score_extraction", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_pages(data: Path) -> tuple[dict, dict[str, str]]:
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    pages = {}
    for key in sorted(truth):
        raw = gzip.decompress((data / "html" / f"{key}.html.gz").read_bytes())
        pages[key] = raw.decode("utf-8", errors="replace")
    return truth, pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (article-bench layout)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/extraction"), help="predictions folder")
    ap.add_argument("--scorer", type=Path, default=DEFAULT_SCORER)
    ap.add_argument("--only", default="", help="comma-separated extractor names (default: all)")
    ap.add_argument("--repeat", type=int, default=1, help="time each page N times, keep the fastest")
    ap.add_argument("--per-page", action="store_true", help="print our per-page P/R, worst first")
    args = ap.parse_args(argv)

    scorer = load_scorer(args.scorer)
    truth, pages = load_pages(args.data)
    names = [n for n in EXTRACTORS if not args.only or n in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    for fn in EXTRACTORS.values():  # warm imports so the first page does not pay for them
        fn("<html><body><p>warm up</p></body></html>", "https://example.com/")

    results: dict[str, dict] = {}
    for name in names:
        fn = EXTRACTORS[name]
        preds, times = {}, []
        for key, html in pages.items():
            url = truth[key].get("url") or ""
            best = float("inf")
            for _ in range(max(1, args.repeat)):
                t0 = time.perf_counter()
                text = fn(html, url)
                best = min(best, time.perf_counter() - t0)
            times.append(best * 1000)
            preds[key] = {"articleBody": text}
        slug = name.replace(" ", "-")
        (args.out / f"{slug}.json").write_text(json.dumps(preds, ensure_ascii=False, indent=0), encoding="utf-8")
        score, per_page = scorer.score(truth, preds, n_bootstrap=0)
        results[name] = {**score, "ms": statistics.median(times), "per_page": per_page}

    fast = results.get("trafilatura fast", {}).get("ms")
    print(f"article extraction on {args.data} ({len(pages)} pages); predictions in {args.out}/")
    print(f"{'extractor':<24} {'P':>6} {'R':>6} {'F1':>6} {'empty':>5} {'ms/page':>8} {'x fast':>7}")
    for name, r in results.items():
        ratio = f"{r['ms'] / fast:7.2f}" if fast else "      -"
        print(f"{name:<24} {r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['n_empty_pred']:5d} "
              f"{r['ms']:8.1f} {ratio}")
    ok = True
    if "newsingest" in results:
        r = results["newsingest"]
        f1_ok = r["f1"] >= GOAL_F1
        cost_ok = fast is None or r["ms"] <= fast
        ok = f1_ok and cost_ok
        print(f"goal F1 >= {GOAL_F1}: {'met' if f1_ok else 'NOT met'} ({r['f1']:.3f}); "
              f"median cost <= trafilatura fast: {'met' if cost_ok else 'NOT met'}"
              + (f" ({r['ms'] / fast:.2f}x)" if fast else ""))
        if args.per_page:
            rows = sorted(r["per_page"].items(), key=lambda kv: min(kv[1]["precision"] or 0, kv[1]["recall"] or 0))
            for key, pp in rows[:25]:
                print(f"  {key[:16]}  P {pp['precision'] or 0:.3f}  R {pp['recall'] or 0:.3f}  {truth[key].get('url')}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
