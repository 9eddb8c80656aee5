"""Table-driven tests of each cleaning rule, plus the pipeline on real item types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from crawler.items import ArticleItem
from pipelines.clean import (
    CleanPipeline,
    clean_authors,
    clean_body,
    clean_fields,
    clean_tags,
    clean_text,
    clean_title,
    is_boilerplate_line,
    normalize_language,
    to_utc,
)

PROSE = ("The council approved the plan on Tuesday after a long debate about costs and the timetable for "
         "the works.")
PROSE2 = "Officials said the first phase would start in the spring, with the rest following next year."


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        ("Caf\u0065\u0301 au lait", "Caf\u00e9 au lait"),  # NFC
        ("Tom &amp; Jerry&nbsp;show", "Tom & Jerry show"),  # entities, NBSP
        ("  a \u00a0\u2009 b\t\nc  ", "a b c"),  # all whitespace collapsed
        ("zero\u200bwidth", "zerowidth"),
        ("   ", None),
        (None, None),
    ],
)
def test_clean_text(raw: str | None, want: str | None) -> None:
    assert clean_text(raw) == want


@pytest.mark.parametrize(
    "line",
    [
        "See also: Other story headline",
        "See also\u00a0 Speech at Economic Forum: Putin sees sanctions as global threat",
        "Read more: Why it matters",
        "READ MORE",
        "Related: Council votes again",
        "Related Articles",
        "Advertisement",
        "Story continues below advertisement",
        "Share this article",
        "Share on Facebook Twitter Email",
        "Sign up for our daily newsletter",
        "Subscribe to our newsletter to get the latest news",
        "The day’s top stories, delivered to your inbox every weekday at 6am.",
        "© 2025 The Herald. All rights reserved.",
        "Photograph: Jane Doe/Reuters",
        "You may also like: Ten things to do",
    ],
)
def test_boilerplate_lines(line: str) -> None:
    assert is_boilerplate_line(line)


@pytest.mark.parametrize(
    "line",
    [
        PROSE,
        "Related parties were not informed of the decision, the minister said.",
        "She read more than 40 reports before deciding, according to her office.",
        "Subscribers to the service will pay less from January, the company said in a statement.",
        "Share prices rose 3% after the announcement.",
    ],
)
def test_prose_is_not_boilerplate(line: str) -> None:
    assert not is_boilerplate_line(line)


@pytest.mark.parametrize(
    ("body", "want_body", "subtitle", "want_subtitle"),
    [
        # boilerplate lines go, paragraphs stay separated by exactly one blank line
        (f"{PROSE}\n\nAdvertisement\n\n\n\n{PROSE2}\nRead more: Other story", f"{PROSE}\n\n{PROSE2}", None, None),
        # whitespace inside a paragraph (NBSP, single newlines) collapses
        (f"The\u00a0council\napproved  it today after a vote.\n\n{PROSE2}",
         f"The council approved it today after a vote.\n\n{PROSE2}", None, None),
        # a kicker opening the body moves to the empty subtitle
        (f"A new start for the old harbour\n\n{PROSE}\n\n{PROSE2}", f"{PROSE}\n\n{PROSE2}", None,
         "A new start for the old harbour"),
        # ... but not when a subtitle exists (then it is body text)
        (f"A new start for the old harbour\n\n{PROSE}\n\n{PROSE2}",
         f"A new start for the old harbour\n\n{PROSE}\n\n{PROSE2}", "The standfirst.", "The standfirst."),
        # the subtitle repeated as the first paragraph is dropped from the body
        (f"The standfirst.\n\n{PROSE}\n\n{PROSE2}", f"{PROSE}\n\n{PROSE2}", "The standfirst.", "The standfirst."),
        # a first paragraph that ends in a full stop is prose, not a kicker
        (f"The plan was approved.\n\n{PROSE}\n\n{PROSE2}", f"The plan was approved.\n\n{PROSE}\n\n{PROSE2}",
         None, None),
        # a pull quote (a fragment repeating a sentence) goes; a repeated full sentence stays
        (f"{PROSE}\n\nthe first phase would start in the spring\n\n{PROSE2}", f"{PROSE}\n\n{PROSE2}", "S.", "S."),
        # page chrome at the top of a naive scrape: date, site name + tagline, headline
        (f"February 2, 2023\n\nThe Herald\n\nAll The News\n\nBig Headline Here\n\n{PROSE}\n\n{PROSE2}",
         f"{PROSE}\n\n{PROSE2}", "S.", "S."),
        # an "X is a …, headquartered …, listed on …" self-description closing a press release goes
        (f"{PROSE}\n\n{PROSE2}\n\nAcme is a global provider of alarm software for hospitals and plants. Acme is "
         "headquartered in Baar, has subsidiaries in 15 countries and employs 1,300 people. Its shares are listed "
         "on the SIX Swiss Exchange.", f"{PROSE}\n\n{PROSE2}", "S.", "S."),
        # ... but a quoted company description inside the story (no corporate cues, not last) stays
        (f"Acme is a small firm from Baar, the mayor said.\n\n{PROSE}\n\n{PROSE2}",
         f"Acme is a small firm from Baar, the mayor said.\n\n{PROSE}\n\n{PROSE2}", "S.", "S."),
        # a related-links lead-in ending in an ellipsis
        (f"{PROSE}\n\nYou may also like...\n\n{PROSE2}", f"{PROSE}\n\n{PROSE2}", "S.", "S."),
        # entities in the body are unescaped once
        (f"Tom &amp; Jerry went home after the show, the owner said.\n\n{PROSE2}",
         f"Tom & Jerry went home after the show, the owner said.\n\n{PROSE2}", "S.", "S."),
    ],
)
def test_clean_body(body: str, want_body: str, subtitle: str | None, want_subtitle: str | None) -> None:
    got_body, got_subtitle = clean_body(body, title="Big Headline Here", subtitle=subtitle, site_name="The Herald")
    assert got_body == want_body
    assert got_subtitle == want_subtitle


@pytest.mark.parametrize(
    ("title", "site", "want"),
    [
        ("Rail fares rise | Opinion | The Loopback Herald", "The Loopback Herald", "Rail fares rise"),
        ("Rail fares rise - The Loopback Herald", "The Loopback Herald", "Rail fares rise"),
        ("Rail fares rise – Loopback Herald", "The Loopback Herald", "Rail fares rise"),
        ("The Loopback Herald: Rail fares rise", "The Loopback Herald", "Rail fares rise"),
        ("Pretext?: Donetsk and Luhansk want to join", "Raven Tribune", "Pretext?: Donetsk and Luhansk want to join"),
        ("Brexit - what happens next", "The Herald", "Brexit - what happens next"),  # not the site: kept
        ("Rail fares rise | The Herald", None, "Rail fares rise"),  # unknown site: short pipe suffix
        (None, "X", None),
    ],
)
def test_clean_title(title: str | None, site: str | None, want: str | None) -> None:
    assert clean_title(title, site) == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (["By Jane Doe"], ["Jane Doe"]),
        (["Words by Jane Doe and John Roe"], ["Jane Doe", "John Roe"]),
        (["Jane Doe, John Roe & Ann Poe"], ["Jane Doe", "John Roe", "Ann Poe"]),
        (["By Hamid Radcliffe Staff reporter"], ["Hamid Radcliffe"]),
        (["Jane Doe, Senior Political Correspondent"], ["Jane Doe"]),
        (["Jane Doe jane.doe@example.com", "https://example.com/jane"], ["Jane Doe"]),
        (["Jane Doe", "jane doe", "John Roe"], ["Jane Doe", "John Roe"]),  # dedupe, order kept
        (["Staff and agencies"], []),
        (["The Loopback Herald"], []),  # the site name is not an author
        ("By Jane Doe", ["Jane Doe"]),  # a plain string works too
        ([], []),
        (None, []),
    ],
)
def test_clean_authors(raw: list[str] | str | None, want: list[str]) -> None:
    assert clean_authors(raw, "The Loopback Herald") == want


@pytest.mark.parametrize(
    ("raw", "want"),
    [("en-US", "en"), ("en_GB", "en"), ("DE", "de"), ("fr-FR, en", "fr"), ("english", None), ("", None)],
)
def test_normalize_language(raw: str, want: str | None) -> None:
    assert normalize_language(raw) == want


EST = timezone(timedelta(hours=-5))


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (datetime(2024, 6, 3, 16, 15, tzinfo=EST), datetime(2024, 6, 3, 21, 15, tzinfo=UTC)),
        (datetime(2024, 6, 3, 16, 15), datetime(2024, 6, 3, 16, 15, tzinfo=UTC)),  # naive: UTC, last resort
        ("June 3, 2024 at 4:15 p.m. EST", datetime(2024, 6, 3, 21, 15, tzinfo=UTC)),
        ("not a date", None),
        (None, None),
    ],
)
def test_to_utc(raw: object, want: datetime | None) -> None:
    got = to_utc(raw)
    assert got == want
    if got is not None:
        assert got.tzinfo is UTC


def test_clean_tags_dedupes_case_insensitively() -> None:
    assert clean_tags(["Busan", " rail  fares ", "busan", "", None]) == ["Busan", "rail fares"]


def test_clean_fields_detects_language_when_missing() -> None:
    fields = clean_fields({"title": "Le conseil municipal a voté", "body": (
        "Le conseil municipal a approuvé mardi le nouveau plan de circulation après un long débat sur les "
        "coûts et le calendrier des travaux dans le centre-ville."), "language": None})
    assert fields["language"] == "fr"
    assert clean_fields({"language": "en-US", "body": "x"})["language"] == "en"


def test_clean_fields_passes_unknown_keys_and_uses_site_name_argument() -> None:
    fields = clean_fields({"title": "A title | Herald", "authors": ["Herald"], "source": "herald"},
                          site_name="Herald")
    assert fields == {"title": "A title", "authors": [], "source": "herald"}


class _Settings(dict):
    def get(self, key: str, default: object = None) -> object:
        return super().get(key, default)


class _Crawler:
    settings = _Settings()


@pytest.mark.parametrize("make", [
    lambda **kw: ArticleItem(**kw),
    lambda **kw: dict(kw),
])
def test_pipeline_cleans_any_item_in_place(make: object) -> None:
    item = make(url="https://x.example/a/", title="Big news | World | The Herald", site_name="The Herald",
                authors=["By Jane Doe and The Herald"], body=f"{PROSE}\n\nAdvertisement\n\n{PROSE2}",
                published_at=datetime(2024, 6, 3, 16, 15, tzinfo=EST), language="en-GB", tags=["a", "A"])
    pipeline = CleanPipeline.from_crawler(_Crawler())
    out = pipeline.process_item(item)
    assert out is item
    get = (lambda k: getattr(out, k)) if isinstance(out, ArticleItem) else out.__getitem__
    assert get("title") == "Big news"
    assert get("authors") == ["Jane Doe"]
    assert get("body") == f"{PROSE}\n\n{PROSE2}"
    assert get("published_at") == datetime(2024, 6, 3, 21, 15, tzinfo=UTC)
    assert get("language") == "en"
    assert get("tags") == ["a"]
