"""Near-duplicates on real SQLite and PostgreSQL: MinHash signatures, the band index, `stories`."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from pipelines.dedupe import content_hash
from storage.models import Article, ArticleBand
from storage.repository import Repository, open_repository
from storage.signature import BANDS, NUM_PERM, band_hashes, minhash, shingles, similarity

# Built with ../shared/bench/newssite (`build --articles 600 --seed 11`); only the fields used here.
NEWSSITE_FIXTURE = Path(__file__).resolve().parent / "fixtures" / "neardup" / "newssite-600.json.gz"
WORDS = ["river", "council", "budget", "school", "police", "storm", "harbour", "election", "minister", "court",
         "market", "bridge", "farmers", "hospital", "winter", "rail", "museum", "festival", "drought", "strike"]


def story(seed: int, n: int = 400) -> str:
    """A deterministic pseudo-article of `n` words, different for every seed."""
    out, x = [], seed * 7919 + 17
    for i in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(WORDS[x % len(WORDS)] + ("." if i % 14 == 13 else ""))
    return " ".join(out)


def edit(body: str, every: int = 80) -> str:
    words = body.split(" ")
    for i in range(3, len(words), every):
        words.insert(i, "reportedly")
    return " ".join(words)


def rec(url: str, body: str, *, title: str = "A headline", source: str = "demo",
        published: datetime | None = None) -> dict:
    return {"source": source, "canonical_url": url, "url": url, "content_hash": content_hash(body),
            "title": title, "subtitle": None, "body": body, "authors": [], "language": "en",
            "published_at": published or datetime(2025, 2, 1, 10, tzinfo=UTC), "modified_at": None,
            "section": None, "tags": [], "image_url": None, "site_name": None}


@pytest.fixture
def repo(db_url: str) -> Repository:
    repository = open_repository(db_url)
    for name in ("demo", "sister"):
        repository.ensure_source(name, name)
    return repository


def articles(repo: Repository) -> dict[str, Article]:
    with repo.sessions() as session:
        return {a.canonical_url: a for a in session.scalars(select(Article))}


# -- the signature -----------------------------------------------------------------------


def test_signature_is_stable_and_estimates_jaccard() -> None:
    body = story(1)
    sig = minhash(body)
    assert len(sig) == 4 * NUM_PERM and sig == minhash(body)
    assert minhash(body.upper().replace(".", " !")) == sig  # case and punctuation do not count
    assert similarity(sig, sig) == 1.0
    near = edit(body)
    a, b = shingles(body), shingles(near)
    jaccard = len(a & b) / len(a | b)
    assert abs(similarity(sig, minhash(near)) - jaccard) < 0.15
    assert similarity(sig, minhash(story(2))) < 0.2
    assert len(band_hashes(sig)) == BANDS
    assert band_hashes(sig) != band_hashes(minhash(story(2)))


# -- the repository ----------------------------------------------------------------------


def test_near_duplicate_under_another_url_is_linked_with_its_similarity(repo: Repository) -> None:
    original = story(10)
    repo.upsert_articles([rec("https://a.example/orig", original), rec("https://a.example/other", story(11))])
    result = repo.upsert_articles([rec("https://b.example/copy", edit(original), title="Analysis: A headline",
                                       source="sister")])
    assert result.inserted == 1 and result.content_duplicates == 1
    rows = articles(repo)
    orig, copy, other = rows["https://a.example/orig"], rows["https://b.example/copy"], rows["https://a.example/other"]
    assert copy.duplicate_of == orig.id and 0.7 <= copy.similarity < 1.0
    assert orig.duplicate_of is None and orig.similarity is None
    assert other.duplicate_of is None
    with repo.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ArticleBand)) == 3 * BANDS


def test_below_threshold_is_not_linked(db_url: str) -> None:
    repo = Repository(open_repository(db_url).engine, near_dup_threshold=0.99)
    repo.ensure_source("demo")
    body = story(20)
    repo.upsert_articles([rec("https://a.example/1", body), rec("https://a.example/2", edit(body, every=10))])
    assert all(a.duplicate_of is None for a in articles(repo).values())


def test_earliest_published_near_copy_becomes_the_root_whatever_the_order(repo: Repository) -> None:
    body, day = story(30), datetime(2025, 2, 1, tzinfo=UTC)
    repo.upsert_articles([rec("https://a.example/late", edit(body), published=day + timedelta(hours=5))])
    repo.upsert_articles([rec("https://a.example/later", edit(body, every=120), published=day + timedelta(hours=9))])
    repo.upsert_articles([rec("https://a.example/first", body, published=day)])
    rows = articles(repo)
    first = rows["https://a.example/first"]
    assert first.duplicate_of is None
    assert rows["https://a.example/late"].duplicate_of == first.id
    assert rows["https://a.example/later"].duplicate_of == first.id
    assert all(rows[u].similarity >= 0.7 for u in ("https://a.example/late", "https://a.example/later"))


def test_stories_view_has_one_row_per_story(repo: Repository) -> None:
    a, b = story(40), story(41)
    repo.upsert_articles([rec("https://a.example/a", a), rec("https://a.example/b", b),
                          rec("https://b.example/a1", edit(a), source="sister"),
                          rec("https://b.example/a2", a, source="sister")])
    with repo.engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT canonical_url, copies FROM stories")).all())
    assert rows == {"https://a.example/a": 2, "https://a.example/b": 0}


def test_changed_text_gets_new_bands(repo: Repository) -> None:
    repo.upsert_articles([rec("https://a.example/x", story(50))])
    repo.upsert_articles([rec("https://a.example/x", story(51))])
    repo.upsert_articles([rec("https://a.example/y", edit(story(51)))])
    rows = articles(repo)
    assert rows["https://a.example/x"].version == 2
    assert rows["https://a.example/y"].duplicate_of == rows["https://a.example/x"].id


# -- the generated news site's syndicated copies --------------------------------------------


@pytest.fixture(scope="module")
def newssite_manifest() -> dict:
    """Articles of a newssite build (600 base articles, seed 11), stored with the tests."""
    return json.loads(gzip.decompress(NEWSSITE_FIXTURE.read_bytes()))


def test_newssite_syndicated_copies_are_linked_and_distinct_articles_are_not(repo: Repository,
                                                                             newssite_manifest: dict) -> None:
    stored = [a for a in newssite_manifest["articles"] if a["body"]]
    records = [rec(a["url"], a["body"], title=a["title"], published=datetime.fromisoformat(a["published"]))
               for a in sorted(stored, key=lambda a: a["id"], reverse=True)]  # copies first: order must not matter
    for i in range(0, len(records), 50):
        repo.upsert_articles(records[i:i + 50])
    rows = articles(repo)
    by_url = {a["url"]: a for a in stored}
    by_id = {row.id: url for url, row in rows.items()}
    copies = [a for a in stored if a["kind"] == "syndicated" and a["dup_group"] in {b["id"] for b in stored}]
    assert copies, "the build has syndicated copies"
    for url, row in rows.items():
        want = by_url[url]
        if want["kind"] == "syndicated" and want in copies:
            assert row.duplicate_of is not None, url
            assert by_url[by_id[row.duplicate_of]]["id"] == want["dup_group"], url
        else:
            assert row.duplicate_of is None, url
