"""Extraction + cleaning against saved pages (Fundus style: one HTML fixture, one expected JSON).

Fixtures: pages of the newssite generator (expected values from its manifest),
real pages of the article-extraction benchmark (snippets and an F1 floor), and
non-article pages. The seed article has a test of its own.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from crawler.extract import Page, extract_article, extract_page
from crawler.extract.dates import parse_visible
from crawler.items import ARTICLE_FIELDS
from pipelines.clean import clean_fields

FIXTURES = Path(__file__).parent / "fixtures"
EXTRACT_CASES = sorted(p.name.removesuffix(".json") for p in (FIXTURES / "extract").glob("*.json"))
WORD = re.compile(r"\w+")


def _run(name: str) -> tuple[dict[str, Any], Page, dict[str, Any]]:
    spec = json.loads((FIXTURES / "extract" / f"{name}.json").read_text(encoding="utf-8"))
    html = gzip.decompress((FIXTURES / "extract" / f"{name}.html.gz").read_bytes())
    page = extract_page(html, spec["url"], encoding=spec.get("encoding"))
    return spec, page, clean_fields(page.fields)


def _token_f1(got: str, want: str) -> float:
    a, b = Counter(WORD.findall(got)), Counter(WORD.findall(want))
    tp = sum((a & b).values())
    if not tp:
        return 0.0
    precision, recall = tp / sum(a.values()), tp / sum(b.values())
    return 2 * precision * recall / (precision + recall)


def test_fixture_set_covers_the_cases() -> None:
    """Guard against a silently emptied fixture folder: the parametrized test would pass on nothing."""
    names = set(EXTRACT_CASES)
    assert len(names) >= 25
    assert {n for n in names if n.startswith("bench-")} and {n for n in names if "listing" in n}
    assert {f"newssite-visible-{f}" for f in ("us-long", "eu-long", "gmt-short", "iso-local", "us-numeric")} <= names


@pytest.mark.parametrize("name", EXTRACT_CASES)
def test_extract_fixture(name: str) -> None:
    spec, page, fields = _run(name)
    assert page.is_article is spec["is_article"], page.signals
    assert set(page.fields) == set(ARTICLE_FIELDS)
    if not spec["is_article"]:
        return
    assert fields["url"] == spec["url"]
    for key, want in spec.get("fields", {}).items():
        got = fields[key]
        if key in ("published_at", "modified_at"):
            assert got is not None and got.tzinfo is not None, f"{key} missing or naive: {got!r}"
            assert got.utcoffset() == timedelta(0), "clean_fields must convert to UTC"
            assert got == datetime.fromisoformat(want), key
        else:
            assert got == want, key
    body = fields["body"] or ""
    if "body" in spec:
        assert body == spec["body"]
        assert "\n\n\n" not in body and not body.startswith("\n")
    flat = " ".join(body.split())
    for snippet in spec.get("body_contains", []):
        assert " ".join(snippet.split()) in flat, snippet
    for snippet in spec.get("body_not_contains", []):
        assert snippet not in body, snippet
    if "body_f1_min" in spec:  # real pages: token-bag F1 against the benchmark's annotated body
        assert _token_f1(body, spec["truth_body"]) >= spec["body_f1_min"]


BENCH_CASES = [name for name in EXTRACT_CASES if name.startswith("bench-")]


def test_bench_fixtures_keep_their_snippets_in_order() -> None:
    """The first/middle/last snippets must come out in reading order (no shuffled blocks)."""
    for name in BENCH_CASES:
        spec, _page, fields = _run(name)
        flat = " ".join((fields["body"] or "").split())
        positions = [flat.find(" ".join(s.split())) for s in spec["body_contains"]]
        assert positions == sorted(positions) and positions[0] >= 0, name


# -- the seed article -------------------------------------------------------------------------


def test_seed_article() -> None:
    expected = json.loads((FIXTURES / "seed" / "expected.json").read_text(encoding="utf-8"))
    html = (FIXTURES / "seed" / "raven-tribune.html").read_bytes()
    page = extract_page(html, "http://127.0.0.1:8080/pretext-for-general-mobilization/")
    fields = clean_fields(page.fields)
    assert page.is_article, page.signals
    assert fields["title"] == expected["title"]
    assert fields["subtitle"] == expected["subtitle"]
    assert fields["site_name"] == expected["site_name"]
    assert fields["published_at"].date().isoformat() == expected["published_date"]
    assert fields["published_at"].tzinfo is not None
    assert fields["body"] == "\n\n".join(expected["body_paragraphs"])
    for text in expected["must_not_contain"]:
        assert text not in fields["body"]
        assert text not in (fields["subtitle"] or "")
    assert fields["language"] == "en"
    assert fields["tags"] == ["Donetsk", "Luhansk"]


def test_seed_article_from_text_only() -> None:
    """The naive scrape of the seed page cleans to the same row (the cleaning rules alone)."""
    naive_text = (FIXTURES / "seed" / "article.txt").read_text(encoding="utf-8")
    expected = json.loads((FIXTURES / "seed" / "expected.json").read_text(encoding="utf-8"))
    fields = clean_fields({"title": expected["title"], "subtitle": None, "body": naive_text,
                           "site_name": expected["site_name"], "language": None})
    assert fields["body"] == "\n\n".join(expected["body_paragraphs"])
    assert fields["subtitle"] == expected["subtitle"]
    assert fields["language"] == "en"


# -- API details --------------------------------------------------------------------------------

_ARTICLE = """<html lang="de-DE"><head><title>Ein Titel | Zeitung</title>
<meta property="og:site_name" content="Zeitung"><link rel="canonical" href="/a/1">
</head><body><article><h1>Ein Titel</h1>
<div class="byline">Von <span class="name">Erika Muster</span></div>
<div class="pubdate" data-when="2024-06-03T16:15:00+02:00">3. Juni 2024</div>
<div class="text">{paras}</div></article></body></html>"""
_PARAS = "".join(f"<p>Absatz {i}: " + "Dies ist ein ausreichend langer Satz im Artikel. " * 4 + "</p>"
                 for i in range(5))


def test_overrides_win_css_and_xpath() -> None:
    html = _ARTICLE.format(paras=_PARAS)
    page = extract_page(html, "https://zeitung.example/a/1?x=1", overrides={
        "title": "article h1",
        "authors": "//div[@class='byline']/span[@class='name']",
        "published_at": "//div[@class='pubdate']/@data-when",
        "body": "div.text p:nth-child(-n+2)",
    })
    fields = page.fields
    assert fields["title"] == "Ein Titel"
    assert fields["authors"] == ["Erika Muster"]
    assert fields["published_at"] == datetime(2024, 6, 3, 14, 15, tzinfo=UTC)
    assert fields["body"].count("\n\n") == 1 and fields["body"].startswith("Absatz 0:")
    assert fields["canonical_url"] == "https://zeitung.example/a/1"
    assert "override:body" in page.signals


def test_bad_override_is_reported_not_raised() -> None:
    page = extract_page(_ARTICLE.format(paras=_PARAS), "https://zeitung.example/a/1",
                        overrides={"title": "//h1[", "body": "div.nothing-here"})
    assert any(s.startswith("override:title:error") for s in page.signals)
    assert "override:body:no-match" in page.signals
    assert page.fields["title"] == "Ein Titel"


def test_windows_1252_bytes_and_declared_encoding() -> None:
    title = "Caf\u00e9 \u2013 \u201cquoted\u201d"
    html = ("<html><head><meta http-equiv='Content-Type' content='text/html; charset=windows-1252'>"
            f"<title>{title}</title></head><body><h1>{title}</h1></body></html>").encode("cp1252")
    assert extract_page(html, "https://x.example/").fields["title"] == title
    latin = "<html><body><h1>Stra\u00dfe</h1></body></html>".encode("latin-1")
    assert extract_page(latin, "https://x.example/", encoding="iso-8859-1").fields["title"] == "Stra\u00dfe"


def test_extract_article_is_the_fields_and_empty_input_is_safe() -> None:
    html = _ARTICLE.format(paras=_PARAS)
    assert extract_article(html, "https://zeitung.example/a/1") == extract_page(
        html, "https://zeitung.example/a/1").fields
    empty = extract_page(b"", "https://x.example/")
    assert empty.is_article is False and empty.fields["body"] is None


def test_listing_page_skips_body_extraction() -> None:
    teasers = "".join(f'<article class="teaser"><h2><a href="/s/{i}">Story {i}</a></h2>'
                      f"<p>{'Teaser text for the story. ' * 5}</p></article>" for i in range(8))
    page = extract_page(f"<html><body><h1>World</h1>{teasers}</body></html>", "https://x.example/world/")
    assert page.is_article is False
    assert page.fields["body"] is None
    assert any(s.startswith("teasers:8") for s in page.signals)


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("June 3, 2024 at 4:15 p.m. EST", datetime(2024, 6, 3, 16, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("3 June 2024, 16:15 EST", datetime(2024, 6, 3, 16, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("Mon 3 Jun 2024 21.15 GMT", datetime(2024, 6, 3, 21, 15, tzinfo=UTC)),
        ("2024-06-03 16:15 (EST)", datetime(2024, 6, 3, 16, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("06/03/2024 04:15 PM EST", datetime(2024, 6, 3, 16, 15, tzinfo=timezone(timedelta(hours=-5)))),
        ("06/03/2024 12:05 AM EST", datetime(2024, 6, 3, 0, 5, tzinfo=timezone(timedelta(hours=-5)))),
        ("Posted 13/06/2024 09:30 +0200", datetime(2024, 6, 13, 9, 30, tzinfo=timezone(timedelta(hours=2)))),
        ("2024-06-03T16:15:00Z", datetime(2024, 6, 3, 16, 15, tzinfo=UTC)),
        ("February 2, 2023", datetime(2023, 2, 2)),
        ("no date here", None),
    ],
)
def test_visible_date_formats(text: str, want: datetime | None) -> None:
    got = parse_visible(text)
    assert got == want
    if want is not None:
        assert (got.tzinfo is None) == (want.tzinfo is None)


# -- per-source overrides fix a hard site --------------------------------------------------------

_HARD = """<html><head><title>Hard Site</title></head><body>
<h1 class="brand">Hard Site</h1>
<div class="crumbs"><h1>Section front</h1></div>
<div class="story">
  <div class="hed">Council approves the harbour bridge</div>
  <div class="who"><em>Ana Lima</em> &amp; <em>Bo Chen</em></div>
  <div class="when" data-ts="2024-06-03T09:30:00-04:00">Monday morning</div>
  <div class="copy">{copy}</div>
</div>
<div class="more">{teasers}</div>
</body></html>"""
_COPY = "".join(f"<div class='para'>Paragraph {i} of the bridge story, long enough to be prose on its own. "
                f"The council voted after a long debate about costs and traffic.</div>" for i in range(4))
_TEASERS = "".join(f"<p>Teaser {i}: another long story about something else entirely that the site promotes "
                   f"next to the article in a box.</p>" for i in range(6))


@pytest.mark.parametrize("style", ["css", "xpath"])
def test_overrides_fix_a_page_the_defaults_get_wrong(style: str) -> None:
    html = _HARD.format(copy=_COPY, teasers=_TEASERS)
    url = "https://hard.example/news/bridge"
    default = clean_fields(extract_page(html, url, assume_article=True).fields)
    # without help: the wrong headline, no authors, only a day-precision date, the teaser box as body
    assert default["title"] != "Council approves the harbour bridge"
    assert default["authors"] == []
    assert default["published_at"] != datetime(2024, 6, 3, 13, 30, tzinfo=UTC)
    assert "Teaser 0" in (default["body"] or "") and "Paragraph 0" not in (default["body"] or "")
    overrides = {
        # CSS selects elements (their text is read); an attribute value needs XPath
        "css": {"title": "div.story div.hed", "authors": "div.who em",
                "published_at": "//div[@class='when']/@data-ts", "body": "div.copy div.para"},
        "xpath": {"title": "//div[@class='hed']", "authors": "//div[@class='who']/em/text()",
                  "published_at": "//div[@class='when']/@data-ts", "body": "//div[@class='copy']/div"},
    }[style]
    page = extract_page(html, url, overrides=overrides)
    fields = clean_fields(page.fields)
    assert page.is_article
    assert fields["title"] == "Council approves the harbour bridge"
    assert fields["authors"] == ["Ana Lima", "Bo Chen"]
    assert fields["published_at"] == datetime(2024, 6, 3, 13, 30, tzinfo=UTC)
    assert fields["body"].split("\n\n")[0].startswith("Paragraph 0 of the bridge story")
    assert fields["body"].count("\n\n") == 3 and "Teaser" not in fields["body"]
    assert {f"override:{k}" for k in ("title", "authors", "published_at", "body")} <= set(page.signals)


def test_sitemap_hint_adds_seconds_only_when_it_agrees() -> None:
    html = _ARTICLE.format(paras=_PARAS).replace(
        '<div class="pubdate" data-when="2024-06-03T16:15:00+02:00">3. Juni 2024</div>',
        '<time datetime="2024-06-03T16:15+02:00">3. Juni</time>')
    url = "https://zeitung.example/a/1"
    plain = extract_page(html, url).fields["published_at"]
    assert plain == datetime(2024, 6, 3, 14, 15, tzinfo=UTC)
    hinted = extract_page(html, url, hints={"published_at": "2024-06-03T14:15:42+00:00"})
    assert hinted.fields["published_at"] == datetime(2024, 6, 3, 14, 15, 42, tzinfo=UTC)
    assert "date:hint-precision" in hinted.signals
    # a hint that disagrees with the page (another minute) is ignored: the page wins
    other = extract_page(html, url, hints={"published_at": "2024-06-03T18:02:11+00:00"})
    assert other.fields["published_at"] == plain


_LONG = " ".join(["The council approved the plan after a long debate about costs and timing."] * 3)


def test_hover_cards_link_only_paragraphs_and_trailing_cta_cards_are_not_body() -> None:
    card = ('<span class="person"><a href="/people/jane-doe">Jane Doe</a><span class="pop"><img src="/j.jpg">'
            '<a href="/people/jane-doe">Jane Doe</a><a href="/a/1">Another story about the budget vote</a> '
            '<a href="/a/2">A third story about the harbour</a></span></span>')
    html = ("<html><body><h1>Budget passes</h1><div class='content'>"
            f"<p>Mayor {card} said the plan is sound. {_LONG}</p>"
            f"<p>{_LONG}</p><p><a href='/a/3'>Doe wins the harbour vote</a></p><p>{_LONG} The end.</p>"
            "<div class='zone'><div class='widget-cta-letter'><h5>A word to our readers</h5>"
            f"<p>We need your support to keep reporting every day, for everybody who reads us. {_LONG}</p>"
            f"<p>Please give what you can so we can continue this work for years to come. {_LONG}</p></div></div>"
            "</div></body></html>")
    body = clean_fields(extract_page(html, "https://example.com/a/budget", assume_article=True).fields)["body"]
    assert "Mayor Jane Doe said the plan is sound." in body
    assert "Another story" not in body and "Doe wins the harbour vote" not in body
    assert "The end." in body and "support" not in body and "word to our readers" not in body


def test_published_day_is_the_day_the_page_shows() -> None:
    paras = "".join(f"<p>{_LONG}</p>" for _ in range(4))
    # a UTC instant just after midnight; the page's own dateline (local offset) is the evening before
    html = ('<html><head><meta property="article:published_time" content="2023-11-09T02:11:03+00:00"></head>'
            '<body><article><h1>Two hurt</h1><time datetime="2023-11-08T21:11:03-05:00">Nov 8</time>'
            f"{paras}</article></body></html>")
    assert extract_page(html, "https://example.com/news/two-hurt", assume_article=True).published_day == "2023-11-08"
    # a declared publication day the page never prints, next to the modification day it does print
    html = ('<html><head><script type="application/ld+json">{"@type": "NewsArticle", "headline": "Old tips",'
            ' "datePublished": "2016-08-29T21:54:39Z", "dateModified": "2019-05-06T10:00:00Z"}</script></head>'
            f"<body><article><h1>Old tips</h1><p>Updated May 6, 2019</p>{paras}</article></body></html>")
    page = extract_page(html, "https://example.com/garden/old-tips", assume_article=True)
    assert page.published_day == "2019-05-06" and "date:shown" in page.signals
    # ... but when it prints the publication day too, that day stands
    shown_both = html.replace("<p>Updated May 6, 2019</p>", "<p>August 29, 2016 (updated May 6, 2019)</p>")
    assert extract_page(shown_both, "https://example.com/garden/old-tips", assume_article=True).published_day \
        == "2016-08-29"
