"""Paywalled pages: stored with the teaser they show, and marked so (``articles.paywalled``).

The extraction fixture ``newssite-paywalled`` (tests/test_extract.py) holds a whole page; these
check the rule on its own, the lower body minimum, and the column on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from crawler.extract import paywalled
from pipelines.dedupe import content_hash
from pipelines.validate import PAYWALLED_MIN_BODY_CHARS, rejection_reason
from storage.models import Article
from storage.repository import open_repository


@pytest.mark.parametrize(("article", "tier", "want"), [
    ({"isAccessibleForFree": False}, None, True),
    ({"isAccessibleForFree": "False"}, None, True),
    ({"isAccessibleForFree": "true", "hasPart": {"@type": "WebPageElement", "isAccessibleForFree": "False",
                                                 "cssSelector": ".paywall"}}, None, True),
    ({"hasPart": [{"isAccessibleForFree": True}, {"isAccessibleForFree": False}]}, None, True),
    ({}, "locked", True),
    ({"isAccessibleForFree": True}, None, False),
    ({}, "metered", None),  # metered: free for a few articles a month, the page is whole
    ({}, None, None),
])
def test_what_a_page_says_about_its_paywall(article: dict[str, object], tier: str | None, want: bool | None) -> None:
    assert paywalled(article, tier) is want


def test_a_paywalled_teaser_is_kept_from_a_lower_minimum() -> None:
    teaser = "x" * 150
    fields = {"url": "https://example.com/a/", "title": "A", "body": teaser}
    assert rejection_reason(fields, 200) == "body_too_short"
    assert rejection_reason({**fields, "paywalled": False}, 200) == "body_too_short"
    assert rejection_reason({**fields, "paywalled": True}, 200) is None
    short = {**fields, "body": "x" * (PAYWALLED_MIN_BODY_CHARS - 1), "paywalled": True}
    assert rejection_reason(short, 200) == "body_too_short"


def test_the_column_round_trips(db_url: str) -> None:
    repo = open_repository(db_url)
    repo.ensure_source("herald")
    records = []
    for slug, flag in (("locked", True), ("free", False), ("silent", None)):
        body = f"The port authority is expected to publish its review of the pension reform ({slug})."
        records.append({"source": "herald", "canonical_url": f"https://example.com/{slug}/",
                        "url": f"https://example.com/{slug}/", "content_hash": content_hash(body), "title": slug,
                        "subtitle": None, "body": body, "authors": [], "language": "en", "section": None,
                        "tags": [], "image_url": None, "site_name": None, "paywalled": flag,
                        "published_at": datetime(2024, 9, 9, 18, 23, 56, tzinfo=UTC), "modified_at": None})
    repo.upsert_articles(records)
    with repo.sessions() as session:
        got = {a.title: a.paywalled for a in session.scalars(select(Article))}
    repo.engine.dispose()
    assert got == {"locked": True, "free": False, "silent": None}
