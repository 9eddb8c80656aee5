"""Publication-date benchmark: newsingest's extractor against htmldate (and trafilatura metadata), one run.

    python bench/dates.py [--data DIR] [--out DIR] [--only newsingest,htmldate,...]

Reads ``DIR/ground-truth.json`` (``{id: {"url", "date"}}``) and ``DIR/html/<id>.html.gz``
(the htmldate-eval layout: raw bytes, not re-encoded), runs every extractor over
every page with the page URL (the crawler always knows it), writes one
predictions file per extractor to ``--out`` (``{id: {"date": "YYYY-MM-DD"|null}}``,
the format of ``shared/bench/score_dates.py``) and prints precision, recall,
accuracy (day) and median ms/page.

"newsingest" is the crawler's path: ``extract_page`` on the raw bytes (it does its
own decoding, as for a response without a charset header), ``assume_article=True``.
The day compared is ``Page.published_day``: the publication day in the publisher's
calendar (the date of ``published_at`` when it is stated in the publisher's own offset;
for a UTC instant the URL's date when within a day of it, or the day a dateline shows:
an evening article in New York stamped in UTC is still that day's article). The stored
``published_at`` is the instant itself. ``--errors`` lists the pages we get wrong with
the signals that chose our date.
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
from crawler.extract.parse import decode_html  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "htmldate-eval"
DEFAULT_SCORER = ROOT.parent / "shared" / "bench" / "score_dates.py"
GOAL_ACCURACY = 0.95


SOURCES: dict[str, str] = {}  # url -> the date signals of our last run (why we chose that date)


def ours(raw: bytes, url: str) -> str | None:
    page = extract_page(raw, url, assume_article=True)
    SOURCES[url] = ",".join(s.removeprefix("date:") for s in page.signals if s.startswith("date:")) or (
        "declared" if page.fields["published_at"] is not None else "none")
    return page.published_day


def htmldate_original(raw: bytes, url: str) -> str | None:
    from htmldate import find_date

    try:
        return find_date(decode_html(raw), url=url, original_date=True)
    except Exception:
        return None


def trafilatura_meta(raw: bytes, url: str) -> str | None:
    from trafilatura import extract_metadata

    try:
        meta = extract_metadata(decode_html(raw), default_url=url)
    except Exception:
        return None
    return getattr(meta, "date", None) if meta is not None else None


EXTRACTORS: dict[str, Callable[[bytes, str], str | None]] = {
    "newsingest": ours,
    "htmldate original_date": htmldate_original,
    "trafilatura metadata": trafilatura_meta,
}


def load_scorer(path: Path):
    spec = importlib.util.spec_from_file_location("score_dates", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="dataset folder (htmldate-eval layout)")
    ap.add_argument("--out", type=Path, default=Path("bench-out/dates"), help="predictions folder")
    ap.add_argument("--scorer", type=Path, default=DEFAULT_SCORER)
    ap.add_argument("--only", default="", help="comma-separated extractor names (default: all)")
    ap.add_argument("--errors", action="store_true", help="list the pages we get wrong")
    args = ap.parse_args(argv)

    scorer = load_scorer(args.scorer)
    truth = json.loads((args.data / "ground-truth.json").read_text(encoding="utf-8"))
    pages = {key: gzip.decompress((args.data / "html" / f"{key}.html.gz").read_bytes()) for key in sorted(truth)}
    names = [n for n in EXTRACTORS if not args.only or n in args.only.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:  # warm imports
        EXTRACTORS[name](b"<html><body><p>warm up</p></body></html>", "https://example.com/")

    results: dict[str, dict] = {}
    preds_by: dict[str, dict] = {}
    for name in names:
        fn = EXTRACTORS[name]
        preds, times = {}, []
        for key, raw in pages.items():
            t0 = time.perf_counter()
            found = fn(raw, truth[key].get("url") or "")
            times.append((time.perf_counter() - t0) * 1000)
            preds[key] = {"date": str(found)[:10] if found else None}
        (args.out / f"{name.replace(' ', '-')}.json").write_text(json.dumps(preds, indent=0), encoding="utf-8")
        results[name] = {**scorer.score(truth, preds), "ms": statistics.median(times)}
        preds_by[name] = preds

    base = results.get("htmldate original_date", {}).get("ms")
    print(f"publication dates on {args.data} ({len(pages)} pages, URL given); predictions in {args.out}/")
    print(f"{'extractor':<24} {'P':>6} {'R':>6} {'acc':>6} {'F1':>6} {'ms/page':>8} {'x htmldate':>10}")
    for name, r in results.items():
        ratio = f"{r['ms'] / base:10.2f}" if base else "         -"
        print(f"{name:<24} {r['precision']:6.3f} {r['recall']:6.3f} {r['accuracy']:6.3f} {r['f1']:6.3f} "
              f"{r['ms']:8.1f} {ratio}")
    ok = True
    if "newsingest" in results:
        acc = results["newsingest"]["accuracy"]
        ok = acc >= GOAL_ACCURACY
        print(f"goal accuracy >= {GOAL_ACCURACY}: {'met' if ok else 'NOT met'} ({acc:.3f})")
        if args.errors:
            other = preds_by.get("htmldate original_date", {})
            for key in sorted(truth):
                got = preds_by["newsingest"][key]["date"]
                if got != truth[key]["date"]:
                    url = truth[key]["url"]
                    print(f"  {key[:12]} want {truth[key]['date']} got {got} ({SOURCES.get(url, '?')}) htmldate "
                          f"{other.get(key, {}).get('date')}  {url[:100]}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
