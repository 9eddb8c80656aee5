"""Quality gate: real article pages through the crawler's extraction + cleaning path.

``tests/fixtures/gate/`` holds real pages of the public article-extraction
benchmark (scrapinghub/article-extraction-benchmark, MIT; sites and languages
not used by the extract fixtures): the gzipped HTML, the annotated body, text
that must come out and page furniture that must not (taken from what a baseline
extractor lets through but the annotators exclude). The suite fails when the
mean shingle F1 (the benchmark's own metric) drops under the floor or any
snippet check fails, so a change that regresses extraction cannot land quietly.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from crawler.extract import extract_page
from pipelines.clean import clean_fields

GATE = Path(__file__).parent / "fixtures" / "gate"
CASES = sorted(p.name.removesuffix(".json") for p in GATE.glob("*.json"))
# measured 0.985 (P 0.983, R 0.987) when the gate was set up; 0.985 (P 0.986, R 0.984) with the
# hover-card and donation-card pages (issue 3); a floor just under it
F1_FLOOR = 0.980
PAGE_F1_FLOOR = 0.90
_WORD = re.compile(r"\w+")
_FURNITURE_START = re.compile(r"^(?:advertisement|read more|see also|sign up|subscribe|related:|share this)\b", re.I)


def _shingles(text: str, n: int = 4) -> Counter:
    toks = _WORD.findall(text or "")
    if not toks:
        return Counter()
    if len(toks) < n:
        return Counter([tuple(toks)])
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def _pr(got: str, want: str) -> tuple[float, float]:
    """Per-page shingle precision/recall, as ``shared/bench/score_extraction.py`` computes them."""
    g, w = _shingles(got), _shingles(want)
    tp = sum((g & w).values())
    return (tp / sum(g.values()) if g else 0.0), (tp / sum(w.values()) if w else 0.0)


@cache
def _body(name: str) -> tuple[dict, str]:
    spec = json.loads((GATE / f"{name}.json").read_text(encoding="utf-8"))
    html = gzip.decompress((GATE / f"{name}.html.gz").read_bytes())
    page = extract_page(html, spec["url"], assume_article=True)  # the spider's function
    return spec, clean_fields(page.fields)["body"] or ""


def test_gate_has_pages() -> None:
    assert len(CASES) >= 8


def test_gate_mean_f1_floor() -> None:
    scores = [_pr(_body(name)[1], _body(name)[0]["truth_body"]) for name in CASES]
    precision = sum(p for p, _ in scores) / len(scores)
    recall = sum(r for _, r in scores) / len(scores)
    f1 = 2 * precision * recall / (precision + recall)
    assert f1 >= F1_FLOOR, f"gate F1 {f1:.3f} (P {precision:.3f}, R {recall:.3f}) under {F1_FLOOR}"


@pytest.mark.parametrize("name", CASES)
def test_gate_page(name: str) -> None:
    spec, body = _body(name)
    precision, recall = _pr(body, spec["truth_body"])
    assert min(precision, recall) >= PAGE_F1_FLOOR, (precision, recall)
    flat = " ".join(body.split())
    positions = []
    for snippet in spec["must_contain"]:
        pos = flat.find(" ".join(snippet.split()))
        assert pos >= 0, snippet
        positions.append(pos)
    assert positions == sorted(positions), "body blocks out of reading order"
    for snippet in spec["must_not_contain"]:
        assert snippet not in body, snippet
    for paragraph in body.split("\n\n"):
        assert not _FURNITURE_START.match(paragraph), paragraph
