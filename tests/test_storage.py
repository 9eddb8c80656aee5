"""Storage on real SQLite and PostgreSQL: migrations, upserts, versions, run records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from scrapy.exceptions import DropItem
from scrapy.utils.test import get_crawler
from sqlalchemy import inspect, select, text

from pipelines.dedupe import DedupePipeline
from pipelines.store import to_record
from storage.db import create_db_engine
from storage.migrate import SchemaError, current_revision, ensure_schema, head_revision, upgrade
from storage.models import Article, ArticleVersion, Base
from storage.repository import Repository, open_repository


def record(url: str, body: str = "First paragraph of the story.\n\nSecond paragraph.", **extra):
    base = {
        "source": "demo",
        "canonical_url": url,
        "url": url,
        "content_hash": extra.pop("content_hash", f"hash-of-{body}"),
        "title": "A headline",
        "subtitle": None,
        "body": body,
        "authors": ["Ana Lima"],
        "published_at": datetime(2025, 2, 1, 10, 0, tzinfo=timezone(timedelta(hours=-5))),
        "modified_at": None,
        "language": "en",
        "section": "World",
        "tags": ["a", "b"],
        "image_url": None,
        "site_name": "Demo",
    }
    base.update(extra)
    return base


@pytest.fixture
def repo(db_url: str) -> Repository:
    repository = open_repository(db_url)
    repository.ensure_source("demo", "Demo")
    return repository


def test_upgrade_head_on_empty_database_and_models_match_migrations(db_url: str) -> None:
    engine = create_db_engine(db_url)
    upgrade(engine)
    assert current_revision(engine) == head_revision()
    assert {"sources", "articles", "article_versions", "crawl_runs"} <= set(inspect(engine).get_table_names())
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    engine.dispose()


def test_ensure_schema_refuses_foreign_tables(db_url: str) -> None:
    engine = create_db_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE articles (id INTEGER PRIMARY KEY)"))
    with pytest.raises(SchemaError, match="not created by newsingest"):
        ensure_schema(engine)
    engine.dispose()


def test_upsert_is_idempotent_and_versions_changes(repo: Repository) -> None:
    first = repo.upsert_articles([record("https://example.com/a/"), record("https://example.com/b/", body="Other")])
    assert (first.inserted, first.updated, first.unchanged) == (2, 0, 0)
    again = repo.upsert_articles([record("https://example.com/a/")])
    assert (again.inserted, again.updated, again.unchanged) == (0, 0, 1)
    assert repo.count_articles() == 2

    changed = repo.upsert_articles([record("https://example.com/a/", body="Corrected text.", title="New headline")])
    assert changed.updated == 1
    with repo.sessions() as session:
        article = session.scalar(select(Article).where(Article.canonical_url == "https://example.com/a/"))
        assert article is not None
        assert (article.version, article.title, article.body) == (2, "New headline", "Corrected text.")
        versions = session.scalars(select(ArticleVersion).where(ArticleVersion.article_id == article.id)
                                   .order_by(ArticleVersion.version)).all()
        assert [(v.version, v.title) for v in versions] == [(1, "A headline"), (2, "New headline")]
        assert versions[0].body.startswith("First paragraph")


def test_a_page_declaring_another_canonical_does_not_overwrite_it(repo: Repository) -> None:
    original = record("https://example.com/original/", body="The original text.", etag='"v1"')
    repo.upsert_articles([original])
    copy = {**record("https://example.com/original/", body="An edited copy.", etag='"copy"', title="Edited headline"),
            "url": "https://example.com/copy/"}
    result = repo.upsert_articles([copy])
    assert (result.updated, result.unchanged) == (0, 1)
    with repo.sessions() as session:
        article = session.scalar(select(Article))
        assert article is not None
        assert (article.body, article.title, article.version, article.http_etag) == (
            "The original text.", "A headline", 1, '"v1"')
    # the canonical page itself still updates its row
    assert repo.upsert_articles([record("https://example.com/original/", body="Corrected.")]).updated == 1


def test_timestamps_come_back_as_utc(repo: Repository) -> None:
    repo.upsert_articles([record("https://example.com/t/")])
    with repo.sessions() as session:
        article = session.scalar(select(Article))
        assert article is not None and article.published_at is not None
        assert article.published_at.utcoffset() == timedelta(0)
        assert article.published_at == datetime(2025, 2, 1, 15, 0, tzinfo=UTC)
        assert article.first_seen_at.tzinfo is not None


def test_same_body_under_another_url_links_to_first_row(repo: Repository) -> None:
    result = repo.upsert_articles([
        record("https://example.com/original/", content_hash="h1"),
        record("https://example.com/copy/", content_hash="h1"),
    ])
    assert (result.inserted, result.content_duplicates) == (2, 1)
    later = repo.upsert_articles([record("https://example.com/copy-2/", content_hash="h1")])
    assert later.content_duplicates == 1
    with repo.sessions() as session:
        rows = {a.canonical_url: a for a in session.scalars(select(Article))}
    original = rows["https://example.com/original/"]
    assert original.duplicate_of is None
    assert rows["https://example.com/copy/"].duplicate_of == original.id
    assert rows["https://example.com/copy-2/"].duplicate_of == original.id


def test_earliest_published_copy_is_the_original_whatever_the_crawl_order(repo: Repository) -> None:
    early = datetime(2025, 1, 1, 8, 0, tzinfo=UTC)
    repo.upsert_articles([
        record("https://example.com/late-copy/", content_hash="h2", published_at=early.replace(hour=10)),
        record("https://example.com/other-copy/", content_hash="h2", published_at=early.replace(hour=11)),
    ])
    result = repo.upsert_articles([record("https://example.com/original/", content_hash="h2", published_at=early)])
    assert result.content_duplicates == 1
    with repo.sessions() as session:
        rows = {a.canonical_url: a for a in session.scalars(select(Article))}
    original = rows["https://example.com/original/"]
    assert original.duplicate_of is None
    assert rows["https://example.com/late-copy/"].duplicate_of == original.id
    assert rows["https://example.com/other-copy/"].duplicate_of == original.id


def test_one_bad_row_does_not_poison_the_batch(repo: Repository) -> None:
    bad = record("https://example.com/bad/", published_at=datetime(2025, 1, 1))  # naive: refused
    missing_title = record("https://example.com/no-title/", title=None)  # NOT NULL violation
    result = repo.upsert_articles([record("https://example.com/ok-1/"), bad, missing_title,
                                   record("https://example.com/ok-2/", body="Different")])
    assert result.inserted == 2
    assert sorted(url for url, _ in result.failed) == ["https://example.com/bad/", "https://example.com/no-title/"]
    assert repo.count_articles() == 2


def test_run_records_and_abandoned_runs(repo: Repository) -> None:
    run_id = repo.start_run("demo", "manual")
    repo.finish_run(run_id, status="succeeded", counts={"pages": 5, "items_stored": 3}, finish_reason="finished")
    run = repo.get_run(run_id)
    assert run is not None
    assert (run.status, run.pages, run.items_stored, run.finish_reason) == ("succeeded", 5, 3, "finished")
    assert run.finished_at is not None and run.finished_at >= run.started_at

    stale = repo.start_run("demo", "schedule")
    with repo.sessions.begin() as session:
        session.execute(text("UPDATE crawl_runs SET pid = 999999999 WHERE id = :id"), {"id": stale})
    assert repo.abandon_stale_runs("demo") == 1
    assert repo.get_run(stale).status == "abandoned"
    assert [r.id for r in repo.recent_runs(source="demo")] == [stale, run_id]


def test_a_copy_stored_first_gives_way_to_the_canonical_pages_own_text(repo: Repository) -> None:
    """A syndicated or AMP copy that declares the canonical URL was stored first (crawl order): the
    canonical page's own text replaces it in place, without a new version; copies never replace it back."""
    copy = {**record("https://example.com/original/", body="An edited copy.", etag='"copy"', title="Update: Edited"),
            "url": "https://example.com/copy/"}
    own = record("https://example.com/original/index.html?utm_source=rss", body="The original text.", etag='"v1"',
                 canonical_url="https://example.com/original/")
    assert repo.upsert_articles([copy]).inserted == 1
    result = repo.upsert_articles([own])
    assert (result.replaced, result.updated, result.unchanged) == (1, 0, 0)
    with repo.sessions() as session:
        article = session.scalar(select(Article))
        assert article is not None
        assert (article.body, article.title, article.version, article.http_etag, article.url) == (
            "The original text.", "A headline", 1, '"v1"', own["url"])
        versions = session.scalars(select(ArticleVersion).where(ArticleVersion.article_id == article.id)).all()
        assert [(v.version, v.title, v.body) for v in versions] == [(1, "A headline", "The original text.")]
    assert repo.upsert_articles([copy]).unchanged == 1  # the copy again: no change, no version
    assert repo.upsert_articles([own]).unchanged == 1
    updated = repo.upsert_articles([{**own, "body": "The original, corrected.", "content_hash": "h-corrected"}])
    assert updated.updated == 1


def test_the_same_row_whichever_of_copy_and_canonical_page_the_crawl_meets_first(repo: Repository) -> None:
    """Through the dedupe stage (which lets the canonical page through after its copy, not the reverse)
    into one batch: the stored row is the canonical page's own text, version 1, in either order."""
    rows = {}
    for order in ("copy-first", "own-first"):
        original = f"https://example.com/{order}/original/"
        copy = {"url": f"https://example.com/{order}/copy/", "declared_canonical_url": original,
                "body": "An edited copy.", "title": "Analysis: Edited"}
        own = {"url": original + "?utm_source=rss", "declared_canonical_url": original,
               "body": "The original text.", "title": "A headline"}
        dedupe = DedupePipeline(get_crawler())
        batch = []
        for item in ([copy, own] if order == "copy-first" else [own, copy]):
            try:
                kept = dedupe.process_item({**record(""), **item})
            except DropItem:
                continue
            batch.append(to_record(kept))
        assert len(batch) == (2 if order == "copy-first" else 1)
        repo.upsert_articles(batch)
        with repo.sessions() as session:
            article = session.scalar(select(Article).where(Article.canonical_url == original))
            versions = session.scalars(select(ArticleVersion).where(ArticleVersion.article_id == article.id)).all()
            rows[order] = (article.title, article.body, article.version,
                           [(v.version, v.title, v.body) for v in versions])
    assert rows["copy-first"] == rows["own-first"] == (
        "A headline", "The original text.", 1, [(1, "A headline", "The original text.")])
