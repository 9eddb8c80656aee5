"""No input escapes extraction and cleaning as an exception: random bytes, random HTML, random fields."""

from __future__ import annotations

import os
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crawler.encoding import decode_html
from crawler.extract import extract_page
from pipelines.clean import clean_fields

URL = "https://news.example.com/world/2025/03/01/story/"
TAGS = ["html", "head", "body", "article", "div", "p", "h1", "h2", "time", "script", "style", "meta", "a", "span",
        "section", "header", "footer", "aside", "figure", "figcaption", "ul", "li", "br", "table", "td"]
ATTRS = ['class="byline"', 'class="article-body"', 'datetime="2025-03-01T10:00:00Z"', 'property="og:type"',
         'content="article"', 'rel="author"', 'type="application/ld+json"', 'itemprop="articleBody"', "hidden",
         'class="standfirst"', 'href="/x/"', 'charset="utf-8"', 'content="2025-13-45"']
FRAGMENTS = ['{"@type": "NewsArticle", "headline": "H", "datePublished": "2025-03-01"}', '{"@graph": [null, 1]}',
             "By Ana Lima and", "See also", "Read more:", "February 30, 2025", "&nbsp;&amp;&#0;&#xD800;", "\x00",
             "\u202e", "Ω≈ç√", "<!--", "]]>", "<![CDATA[", "\ufeff"]

settings.register_profile("ci", max_examples=int(os.environ.get("NEWSINGEST_FUZZ_EXAMPLES", "150")), deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.load_profile("ci")


@st.composite
def html_documents(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 60))):
        kind = draw(st.integers(0, 3))
        tag = draw(st.sampled_from(TAGS))
        if kind == 0:
            parts.append(f"<{tag} {draw(st.sampled_from(ATTRS))}>")
        elif kind == 1:
            parts.append(f"</{tag}>")
        elif kind == 2:
            parts.append(draw(st.sampled_from(FRAGMENTS)))
        else:
            parts.append(draw(st.text(max_size=80)))
    return "".join(parts)


@given(st.binary(max_size=4000), st.sampled_from([None, "text/html", "text/html; charset=utf-8",
                                                   "text/html; charset=bogus", "text/html; charset=utf-16"]))
def test_random_bytes(body: bytes, content_type: str | None) -> None:
    text, _encoding, _how = decode_html(body, content_type)
    page = extract_page(text, URL)
    clean_fields(page.fields)
    extract_page(body, URL)  # raw bytes too


@given(html_documents())
def test_random_html(html: str) -> None:
    page = extract_page(html, URL, assume_article=True)
    fields = clean_fields(page.fields)
    assert isinstance(fields.get("authors") or [], list)
    for key in ("published_at", "modified_at"):
        value = fields.get(key)
        assert value is None or (isinstance(value, datetime) and value.utcoffset() is not None)


@given(st.fixed_dictionaries({}, optional={
    "title": st.one_of(st.none(), st.text(max_size=200)),
    "subtitle": st.one_of(st.none(), st.text(max_size=200)),
    "body": st.one_of(st.none(), st.text(max_size=2000)),
    "authors": st.one_of(st.none(), st.lists(st.text(max_size=60), max_size=5)),
    "tags": st.one_of(st.none(), st.lists(st.text(max_size=30), max_size=5)),
    "language": st.one_of(st.none(), st.text(max_size=12)),
    "published_at": st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
    "site_name": st.one_of(st.none(), st.text(max_size=40)),
}))
def test_random_fields(fields: dict) -> None:
    cleaned = clean_fields(dict(fields))
    body = cleaned.get("body")
    assert body is None or "\n\n\n" not in body
