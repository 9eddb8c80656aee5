"""The only module that writes SQL: article upserts, run records, reads for the CLI.

Articles are keyed on `canonical_url`. A batch is one transaction written
set-based (`_upsert_set`: one SELECT by canonical URL, one of the near-duplicate
candidates, one INSERT ... RETURNING, bulk bands and versions); when it hits a
row error the batch is rolled back and written again with a savepoint per
article (`_upsert_rows`), so one bad row is rejected and counted alone while its
neighbours commit. Both paths leave the same tables. After the commit, the
story groups the batch started are rechecked so concurrent writers converge
on one root per story. A lost connection replays the whole batch (idempotent
upserts make the replay safe).

Every page a batch stores, or only links to a row (a copy that declares another
URL canonical, and `url_only` records: in-run duplicates the dedupe stage dropped),
gets its row in ``article_urls`` (its canonicalized URL, the article, its own
validators), so a recrawl finds a copy before requesting it (`validators_for`).

The text a row ends with does not depend on the order its pages arrive in (fetch order,
extraction workers, batches, concurrent writers): a copy stored first only stands in
for the canonical page, whose own text replaces it in place whenever it comes (`_update`),
and a stand-in does not make the canonical URL "seen", so that page is still fetched.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Engine,
    SmallInteger,
    and_,
    any_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session, aliased

from crawler.urls import fetched_url_key, is_own_page
from storage.db import get_engine, resolve_database_url, session_factory
from storage.migrate import ensure_schema
from storage.models import (
    Article,
    ArticleBand,
    ArticleUrl,
    ArticleVersion,
    CrawlRun,
    Source,
    SourceLease,
    utcnow,
)
from storage.signature import BANDS, band_hashes, minhash, similarity

logger = logging.getLogger(__name__)

#: Estimated Jaccard similarity of word 5-shingles at or above which a new article under another
#: canonical URL is linked to an existing story (``NEWSINGEST_NEAR_DUP_THRESHOLD``).
DEFAULT_NEAR_DUP_THRESHOLD = 0.7


def env_near_dup_threshold() -> float:
    """The threshold from ``NEWSINGEST_NEAR_DUP_THRESHOLD``, else the default."""
    raw = os.environ.get("NEWSINGEST_NEAR_DUP_THRESHOLD")
    if not raw:
        return DEFAULT_NEAR_DUP_THRESHOLD
    value = float(raw)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"NEWSINGEST_NEAR_DUP_THRESHOLD must be in (0, 1], not {raw!r}")
    return value


#: Columns an article record may carry (besides identity and bookkeeping).
CONTENT_COLUMNS = (
    "url",
    "title",
    "subtitle",
    "body",
    "authors",
    "published_at",
    "modified_at",
    "language",
    "section",
    "tags",
    "image_url",
    "site_name",
    "paywalled",
)


@dataclass(frozen=True, slots=True)
class SeenArticle:
    """What a recrawl needs to know about a stored article before requesting it again."""

    canonical_url: str
    published_at: datetime | None
    first_seen_at: datetime
    etag: str | None
    last_modified: str | None
    # The ``article_urls`` row the validators are from (that URL's own fetch), None when they are the
    # article row's (a row stored before the table existed, found by its canonical or fetched URL).
    fetched_url: str | None = None


@dataclass(slots=True)
class StoreResult:
    """What one batch did, for crawl stats and run records."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    replaced: int = 0  # a copy's stand-in text replaced in place (by the canonical page's own; no new version)
    content_duplicates: int = 0
    linked_urls: int = 0  # `url_only` records whose URL was linked to their canonical URL's row
    published_refined: int = 0  # rows whose published_at a `published_hint` record refined
    failed: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 1

    def merge(self, other: StoreResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.replaced += other.replaced
        self.content_duplicates += other.content_duplicates
        self.linked_urls += other.linked_urls
        self.published_refined += other.published_refined
        self.failed.extend(other.failed)


class Repository:
    """Reads and writes of the public schema for one database."""

    def __init__(self, engine: Engine, *, retry_seconds: float = 120.0, retry_backoff: float = 0.5,
                 near_dup_threshold: float | None = None, batch_writes: bool = True) -> None:
        self.engine = engine
        # Set-based writes for a batch (a few statements for the whole batch); off, or when a
        # batch hits a row error, every row is written in its own savepoint (`_upsert_rows`).
        self.batch_writes = batch_writes
        self.batches_written: dict[str, int] = {"set": 0, "rows": 0}  # which path wrote each batch
        self.near_dup_threshold = (near_dup_threshold if near_dup_threshold is not None
                                   else env_near_dup_threshold())
        self.sessions = session_factory(engine)
        self.retry_seconds = retry_seconds  # how long a batch waits for the database to come back
        self.retry_backoff = retry_backoff

    # -- sources ---------------------------------------------------------------

    def ensure_source(self, name: str, site_name: str | None = None) -> None:
        """Register a source (idempotent; concurrent callers are fine)."""
        with self.sessions.begin() as session:
            existing = session.get(Source, name)
            if existing is None:
                try:
                    with session.begin_nested():
                        session.add(Source(name=name, site_name=site_name))
                except IntegrityError:
                    pass  # registered concurrently by another crawl
            elif site_name and existing.site_name != site_name:
                existing.site_name = site_name

    # -- articles --------------------------------------------------------------

    def upsert_articles(self, records: Sequence[Mapping[str, Any]], run_id: int | None = None) -> StoreResult:
        """Insert new articles, version changed ones, touch unchanged ones.

        Each record holds `source`, `canonical_url`, `content_hash`, the
        CONTENT_COLUMNS and optionally `etag` / `last_modified` /
        `fetched_at`. A record with a true `url_only` needs only `url`,
        `canonical_url` and the validators: a page the crawl fetched but
        stores no text of (the dedupe stage dropped it as a duplicate of a page
        of this run); only its ``article_urls`` row is written, after the batch's
        articles, if its canonical URL has a row. A record with a true
        `published_hint` holds `url` and `published_at` (aware): a publication time a
        listing gave for that page after it was extracted, applied after the
        batch's articles (`_refine_published`). Retries the whole batch on a
        lost connection.
        """
        delay = self.retry_backoff
        give_up_at = time.monotonic() + self.retry_seconds
        attempt = 0
        while True:
            attempt += 1
            try:
                result = self._upsert_batch(records, run_id)
                result.attempts = attempt
                return result
            except DBAPIError as exc:
                if not _is_transient(exc) or time.monotonic() + delay > give_up_at:
                    raise
                logger.warning("database unavailable (%s); retrying batch of %d in %.1fs",
                               _one_line(exc), len(records), delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _upsert_batch(self, records: Sequence[Mapping[str, Any]], run_id: int | None) -> StoreResult:
        """One batch: the set-based path, else (a row error, a canonical URL twice) a savepoint per row;
        then the post-commit recheck of the story groups this batch started."""
        now = utcnow()
        links = [r for r in records if r.get("url_only")]
        hints = [r for r in records if r.get("published_hint")]
        if links or hints:
            records = [r for r in records if not (r.get("url_only") or r.get("published_hint"))]
        done: _BatchOutcome | None = None
        if self.batch_writes and len(records) > 1:
            try:
                done = self._upsert_set(records, links, run_id, now)
            except _Fallback:
                done = None
            except (StatementError, ValueError, TypeError, KeyError) as exc:
                if _is_transient(exc):
                    raise
                logger.debug("batch of %d written row by row: %s", len(records), _one_line(exc))
                done = None
        if done is None:
            done = self._upsert_rows(records, links, run_id, now)
            self.batches_written["rows"] += 1
        else:
            self.batches_written["set"] += 1
        if hints:
            done.result.published_refined = self._refine_published(hints, now)
        self._converge_groups(done.lonely, done.copies)
        return done.result

    def _refine_published(self, hints: Sequence[Mapping[str, Any]], now: datetime) -> int:
        """Apply late publication hints (``published_hint`` records) to the rows of their pages: the
        listed time replaces a ``published_at`` in its very minute without seconds, or a missing one
        (crawler/extract/dates.py ``late_hint_refines``, as the store stage applies it to an item in
        flight). One executemany, the row found through ``article_urls``; the number of rows refined."""
        wanted: dict[str, datetime] = {}
        for record in hints:
            value = record.get("published_at")
            if isinstance(value, datetime) and value.tzinfo is not None:
                wanted[fetched_url_key(record["url"])] = value.astimezone(UTC)
        if not wanted:
            return 0
        table = Article.__table__
        page_row = select(ArticleUrl.article_id).where(ArticleUrl.url == bindparam("h_url")).scalar_subquery()
        stmt = update(table).where(
            table.c.id == page_row,
            or_(table.c.published_at.is_(None), table.c.published_at == bindparam("h_minute")),
            table.c.published_at.is_distinct_from(bindparam("h_value")),
        ).values(published_at=bindparam("h_value"), updated_at=now)
        with self.sessions.begin() as session:
            result = session.execute(stmt, [{"h_url": url, "h_value": value,
                                             "h_minute": value.replace(second=0, microsecond=0)}
                                            for url, value in sorted(wanted.items())])
            return max(0, result.rowcount or 0)

    def _upsert_rows(self, records: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]],
                     run_id: int | None, now: datetime) -> _BatchOutcome:
        """The row-by-row path: one savepoint per article (its ``article_urls`` row included), so one
        bad row is rejected alone; then the `url_only` links."""
        result = StoreResult()
        lonely: list[int] = []
        copies: list[int] = []
        with self.sessions.begin() as session:
            urls = [r["canonical_url"] for r in records]
            existing = {a.canonical_url: a for a in session.scalars(
                select(Article).where(_one_of(Article.canonical_url, urls, self.engine.dialect.name)))}
            for record in records:
                url = record["canonical_url"]
                try:
                    outcome = self._store_one(session, existing, record, run_id, now)
                except IntegrityError:
                    # Inserted concurrently by another crawler: store it as an update.
                    existing.pop(url, None)
                    try:
                        outcome = self._store_one(session, existing, record, run_id, now)
                    except (StatementError, ValueError, TypeError, KeyError) as exc:
                        if _is_transient(exc):
                            raise
                        result.failed.append((url, _one_line(exc)))
                        continue
                except (StatementError, ValueError, TypeError, KeyError) as exc:
                    if _is_transient(exc):
                        raise
                    existing.pop(url, None)
                    result.failed.append((url, _one_line(exc)))
                    continue
                if outcome == "inserted":
                    result.inserted += 1
                    lonely.append(existing[url].id)
                elif outcome == "duplicate":
                    result.inserted += 1
                    result.content_duplicates += 1
                    copies.append(existing[url].id)
                elif outcome == "updated":
                    result.updated += 1
                elif outcome == "replaced":
                    result.replaced += 1
                else:
                    result.unchanged += 1
            if links:
                try:
                    with session.begin_nested():
                        result.linked_urls = self._record_urls(session, self._link_entries(
                            session, links, {u: a.id for u, a in existing.items()}, now))
                except (StatementError, ValueError, TypeError, KeyError) as exc:
                    if _is_transient(exc):
                        raise
                    logger.warning("URLs of %d duplicate pages not recorded: %s", len(links), _one_line(exc))
        return _BatchOutcome(result, lonely, copies)

    def _store_one(self, session: Session, existing: dict[str, Article], record: Mapping[str, Any],
                   run_id: int | None, now: datetime) -> str:
        """Store one record inside its own savepoint; return what happened."""
        url = record["canonical_url"]
        with session.begin_nested():
            article = existing.get(url)
            if article is None:
                article = session.scalar(select(Article).where(Article.canonical_url == url))
            if article is None:
                article = self._insert(session, record, run_id, now)
                existing[url] = article
                grouped = article.duplicate_of is not None or session.scalar(
                    select(func.count(Article.id)).where(Article.duplicate_of == article.id)) > 0
                outcome = "duplicate" if grouped else "inserted"
            else:
                outcome = self._update(session, article, record, run_id, now)
            self._record_urls(session, [_url_entry(record, article.id, now)])
            return outcome

    def _insert(self, session: Session, record: Mapping[str, Any], run_id: int | None,
                now: datetime) -> Article:
        content_hash = record["content_hash"]
        signature = record.get("minhash") or minhash(record["body"] or "")
        match, sim = self._find_group(session, content_hash, signature)
        root = None
        if match is not None:
            root = match if match.duplicate_of is None else session.get(Article, match.duplicate_of)
        published = record.get("published_at")
        # The group's original is the earliest published copy, whatever order they were crawled in.
        becomes_root = (root is not None and published is not None and root.published_at is not None
                        and published < root.published_at)
        duplicate_of = root.id if root is not None and not becomes_root else None
        article = Article(
            source=record["source"],
            canonical_url=record["canonical_url"],
            content_hash=content_hash,
            duplicate_of=duplicate_of,
            similarity=sim if root is not None and not becomes_root else None,
            minhash=signature,
            version=1,
            http_etag=record.get("etag"),
            http_last_modified=record.get("last_modified"),
            first_seen_at=now,
            last_seen_at=now,
            updated_at=now,
            last_run_id=run_id,
            **{col: _column_value(record, col) for col in CONTENT_COLUMNS},
        )
        session.add(article)
        session.flush()
        session.add(_version_of(article, record.get("fetched_at") or now))
        self._index_bands(session, article.id, signature)
        if becomes_root and root is not None:
            # The old original and its copies now point at the new, earlier one.
            session.execute(update(Article).where(Article.duplicate_of == root.id)
                            .values(duplicate_of=article.id), execution_options={"synchronize_session": "fetch"})
            session.execute(update(Article).where(Article.id == root.id)
                            .values(duplicate_of=article.id, similarity=sim),
                            execution_options={"synchronize_session": "fetch"})
        session.flush()
        return article

    def _find_group(self, session: Session, content_hash: str,
                    signature: bytes) -> tuple[Article | None, float | None]:
        """The stored article a new text belongs with, and its similarity: the same text (1.0),
        else the most similar near-duplicate at or above the threshold, found through the bands."""
        same = session.scalars(select(Article).where(Article.content_hash == content_hash)
                               .order_by(Article.duplicate_of.is_not(None), Article.id).limit(1)).first()
        if same is not None:
            return same, 1.0
        keys = band_hashes(signature)
        ids = session.scalars(select(ArticleBand.article_id).where(or_(*(
            and_(ArticleBand.band_no == band, ArticleBand.band_hash == key) for band, key in enumerate(keys)
        ))).distinct()).all()
        best: tuple[float, int] | None = None
        if ids:
            for article_id, other in session.execute(select(Article.id, Article.minhash).where(
                    Article.id.in_(ids), Article.minhash.is_not(None))):
                sim = similarity(signature, other)
                if sim >= self.near_dup_threshold and (best is None or (sim, -article_id) > (best[0], -best[1])):
                    best = (sim, article_id)
        if best is None:
            return None, None
        return session.get(Article, best[1]), best[0]

    @staticmethod
    def _index_bands(session: Session, article_id: int, signature: bytes) -> None:
        _insert_bands(session, [(band, key, article_id) for band, key in enumerate(band_hashes(signature))])

    def _update(self, session: Session, article: Article, record: Mapping[str, Any],
                run_id: int | None, now: datetime) -> str:
        """Update a stored row from a re-fetched page: "updated" (a new version), "replaced" or "unchanged".

        Which text a row keeps does not depend on the order its pages are met in: the canonical page's
        own text wins over any page that declares it canonical (a syndicated, AMP or print copy), and
        only the canonical page's own texts are versions. A copy's text stored first is a stand-in:
        the canonical page's text replaces it in place (version 1, earlier stand-in versions dropped);
        the same copy fetched again with another text rewrites it in place; another copy leaves it.
        """
        article.last_seen_at = now
        article.last_run_id = run_id
        row_is_own = is_own_page(article.url, article.canonical_url)
        record_is_own = is_own_page(record.get("url"), record["canonical_url"])
        if not record_is_own and (row_is_own or fetched_url_key(record.get("url")) != fetched_url_key(article.url)):
            # A page that declares this URL canonical (a syndicated or AMP copy) must not overwrite the
            # canonical page's own text, or its validators; nor another copy's stand-in (no churn
            # between copies from run to run).
            session.flush()
            return "unchanged"
        if record.get("etag"):
            article.http_etag = record["etag"]
        if record.get("last_modified"):
            article.http_last_modified = record["last_modified"]
        changed = (article.content_hash != record["content_hash"] or article.title != record["title"]
                   or article.subtitle != record.get("subtitle"))
        if not row_is_own:
            # The row holds a stand-in (a copy fetched before the canonical page). The canonical page's
            # own text takes its place: the article's first text of its own, not a new version; the
            # same copy's newer text is still a stand-in, rewritten in place.
            if record_is_own:
                article.http_etag = record.get("etag")
                article.http_last_modified = record.get("last_modified")
            stand_in_versions = article.version > 1  # a row written before stand-ins were kept in place
            self._set_text(session, article, record)
            if not changed and not stand_in_versions:
                session.flush()
                return "unchanged"
            article.version = 1
            if changed:
                article.updated_at = now
            session.flush()
            if stand_in_versions:
                session.execute(delete(ArticleVersion).where(ArticleVersion.article_id == article.id,
                                                             ArticleVersion.version > 1))
            session.execute(update(ArticleVersion).where(
                ArticleVersion.article_id == article.id, ArticleVersion.version == 1,
            ).values(fetched_at=record.get("fetched_at") or now, title=article.title, subtitle=article.subtitle,
                     body=article.body, modified_at=article.modified_at, content_hash=article.content_hash))
            return "replaced"
        if not changed:
            session.flush()
            return "unchanged"
        self._set_text(session, article, record)
        article.version += 1
        article.updated_at = now
        if article.modified_at is None:
            article.modified_at = now
        session.flush()
        session.add(_version_of(article, record.get("fetched_at") or now))
        session.flush()
        return "updated"

    def _set_text(self, session: Session, article: Article, record: Mapping[str, Any]) -> None:
        """Copy the record's content columns into the row; a new text gets a new signature and bands
        (the story group is kept as it is)."""
        for col in CONTENT_COLUMNS:
            setattr(article, col, _column_value(record, col))
        if article.content_hash != record["content_hash"]:
            article.minhash = record.get("minhash") or minhash(record["body"] or "")
            session.execute(delete(ArticleBand).where(ArticleBand.article_id == article.id))
            self._index_bands(session, article.id, article.minhash)
        article.content_hash = record["content_hash"]

    # -- the set-based batch path -------------------------------------------------------

    def _upsert_set(self, records: Sequence[Mapping[str, Any]], links: Sequence[Mapping[str, Any]],
                    run_id: int | None, now: datetime) -> _BatchOutcome:
        """The whole batch in a few statements: one SELECT of the rows by canonical URL, one of the
        near-duplicate candidates (same content hash, shared band) of every text in the batch, one
        INSERT ... RETURNING of the new rows, bulk inserts of their bands and versions, one upsert of
        the ``article_urls`` rows of every record and `url_only` link. The group of
        each new article is decided in memory, record by record in batch order, exactly as
        `_upsert_rows` decides it in the database, so both paths leave the same tables. Any row
        error rolls the whole batch back (the caller then writes it row by row)."""
        urls = [r["canonical_url"] for r in records]
        if len(set(urls)) != len(urls):
            raise _Fallback("a canonical URL twice in one batch")
        result = StoreResult()
        lonely: list[int] = []
        copies: list[int] = []
        with self.sessions.begin() as session:
            existing = {a.canonical_url: a for a in session.scalars(
                select(Article).where(_one_of(Article.canonical_url, urls, self.engine.dialect.name)))}
            # The signature of every text that may be stored: new rows, and rows whose text changes.
            work: list[dict[str, Any]] = []
            for record in records:
                row = existing.get(record["canonical_url"])
                item = dict(record)
                if row is None or row.content_hash != record["content_hash"]:
                    item["minhash"] = record.get("minhash") or minhash(record["body"] or "")
                work.append(item)
            index = _GroupIndex(self.near_dup_threshold)
            index.load(session, {r["content_hash"] for r in work},
                       [band_hashes(r["minhash"]) for r in work if r.get("minhash")],
                       [a.id for a in existing.values()])

            new = [r for r in work if r["canonical_url"] not in existing]
            ids: list[int] = []
            if new:
                ids = list(session.execute(insert(Article).returning(Article.id, sort_by_parameter_order=True), [{
                    "source": r["source"], "canonical_url": r["canonical_url"], "content_hash": r["content_hash"],
                    "duplicate_of": None, "similarity": None, "minhash": r["minhash"], "version": 1,
                    "http_etag": r.get("etag"), "http_last_modified": r.get("last_modified"),
                    "first_seen_at": now, "last_seen_at": now, "updated_at": now, "last_run_id": run_id,
                    **{col: _column_value(r, col) for col in CONTENT_COLUMNS}} for r in new]).scalars())
            new_ids = dict(zip((r["canonical_url"] for r in new), ids, strict=True))

            regroups: list[tuple[int, int, float | None]] = []  # (old root, new root, similarity): in order
            for record in work:
                url = record["canonical_url"]
                article = existing.get(url)
                if article is not None:
                    old_hash = article.content_hash
                    outcome = self._update(session, article, record, run_id, now)
                    if article.content_hash != old_hash:
                        index.retext(article.id, article.content_hash, article.minhash)
                    if outcome == "updated":
                        result.updated += 1
                    elif outcome == "replaced":
                        result.replaced += 1
                    else:
                        result.unchanged += 1
                    continue
                article_id = new_ids[url]
                match, sim = index.find(record["content_hash"], record["minhash"])
                root = None if match is None else (match if match.duplicate_of is None
                                                   else index.rows[match.duplicate_of])
                published = record.get("published_at")
                becomes_root = (root is not None and published is not None and root.published_at is not None
                                and published < root.published_at)
                row = index.add(article_id, record["content_hash"], record["minhash"], published)
                if root is None:
                    result.inserted += 1
                    lonely.append(article_id)
                    continue
                result.inserted += 1
                result.content_duplicates += 1
                copies.append(article_id)
                if becomes_root:
                    index.regroup(root.id, article_id, sim)
                    regroups.append((root.id, article_id, sim))
                else:
                    row.duplicate_of, row.similarity = root.id, sim

            table = Article.__table__
            for old_root, new_root, sim in regroups:  # rows stored before this batch (new rows are NULL yet)
                session.execute(update(table).where(table.c.duplicate_of == old_root).values(duplicate_of=new_root))
                session.execute(update(table).where(table.c.id == old_root)
                                .values(duplicate_of=new_root, similarity=sim))
            linked = [{"b_id": i, "b_dup": index.rows[i].duplicate_of, "b_sim": index.rows[i].similarity}
                      for i in ids if index.rows[i].duplicate_of is not None]
            if linked:
                session.execute(update(table).where(table.c.id == bindparam("b_id"))
                                .values(duplicate_of=bindparam("b_dup"), similarity=bindparam("b_sim")), linked)
            if new:
                _insert_bands(session, [(band, key, article_id) for r, article_id in zip(new, ids, strict=True)
                                        for band, key in enumerate(band_hashes(r["minhash"]))])
                session.execute(insert(ArticleVersion), [{
                    "article_id": article_id, "version": 1, "fetched_at": r.get("fetched_at") or now,
                    "title": r["title"], "subtitle": r.get("subtitle"), "body": r["body"],
                    "modified_at": r.get("modified_at"), "content_hash": r["content_hash"],
                } for r, article_id in zip(new, ids, strict=True)])
            row_ids = {**{u: a.id for u, a in existing.items()}, **new_ids}
            entries = [_url_entry(r, row_ids[r["canonical_url"]], now) for r in records]
            linked = self._link_entries(session, links, row_ids, now) if links else []
            self._record_urls(session, entries)
            result.linked_urls = self._record_urls(session, linked)
        return _BatchOutcome(result, lonely, copies)

    # -- the URLs of every fetched page (article_urls) -------------------------------------

    @staticmethod
    def _link_entries(session: Session, links: Sequence[Mapping[str, Any]], row_ids: Mapping[str, int],
                      now: datetime) -> list[dict[str, Any] | None]:
        """The ``article_urls`` rows of `url_only` records: each linked to its canonical URL's row (of this
        batch, `row_ids`, else stored before); a link whose canonical URL has no row is left out."""
        wanted = {r["canonical_url"] for r in links} - set(row_ids)
        found = dict(session.execute(select(Article.canonical_url, Article.id).where(
            Article.canonical_url.in_(wanted))).all()) if wanted else {}
        ids = {**found, **row_ids}
        return [_url_entry(r, ids[r["canonical_url"]], now) for r in links if r["canonical_url"] in ids]

    def _record_urls(self, session: Session, entries: Sequence[dict[str, Any] | None]) -> int:
        """Upsert ``article_urls`` rows (one statement; the last entry of a URL wins, as when written one by
        one in order). Sorted by URL, so two writers lock the same rows in the same order."""
        rows = {e["url"]: e for e in entries if e is not None}
        if not rows:
            return 0
        table = ArticleUrl.__table__
        if self.engine.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(table)
        stmt = stmt.on_conflict_do_update(index_elements=[table.c.url], set_={
            "article_id": stmt.excluded.article_id, "http_etag": stmt.excluded.http_etag,
            "http_last_modified": stmt.excluded.http_last_modified, "last_seen_at": stmt.excluded.last_seen_at})
        session.execute(stmt, [rows[url] for url in sorted(rows)])
        return len(rows)

    # -- concurrent writers: one root per story ----------------------------------------------

    def _converge_groups(self, lonely: Sequence[int], copies: Sequence[int]) -> None:
        """Post-commit recheck, so concurrent crawler processes converge on one root per story.

        Two processes that insert copies of one story at the same instant both find no group
        (neither sees the other's uncommitted row) and each makes its copy a root. After its
        commit, each writer looks again for the articles it stored as new roots with no match
        (`lonely`): a match now can only be a row committed since, so the two groups are merged
        under the earliest published root (then the lowest id): the same choice in both processes.
        Copies stored by this batch whose root was merged away meanwhile are pointed at the new
        root. A few set-based statements per batch; a failure is logged, never raised (the batch
        is committed, and the next writer's recheck sees the same rows)."""
        if not lonely and not copies:
            return
        for attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    self._merge_concurrent_roots(session, list(lonely), frozenset(lonely) | frozenset(copies))
                    if copies:
                        self._flatten(session, list(copies))
                return
            except DBAPIError as exc:
                if attempt == 2:
                    logger.warning("story groups not rechecked after a batch: %s", _one_line(exc))
                    return
                time.sleep(0.05 * (attempt + 1))

    def _merge_concurrent_roots(self, session: Session, lonely: list[int], batch: frozenset[int]) -> None:
        """Merge each lonely new root with the group of its best match among rows this batch did not
        write (those were seen, or decided, by the batch itself)."""
        if not lonely:
            return
        own = {row.id: row for row in session.execute(select(
            Article.id, Article.content_hash, Article.minhash, Article.duplicate_of).where(
            _one_of(Article.id, lonely, self.engine.dialect.name), Article.duplicate_of.is_(None),
            Article.minhash.is_not(None)))}
        if not own:
            return
        index = _GroupIndex(self.near_dup_threshold)
        index.load(session, {row.content_hash for row in own.values()},
                   [band_hashes(row.minhash) for row in own.values()], list(own))
        for article_id in sorted(own):
            mine = index.rows[article_id]
            if mine.duplicate_of is not None:
                continue  # merged into another group earlier in this loop
            match, sim = index.find(mine.content_hash, mine.minhash, exclude=batch)
            if match is None:
                continue
            root = match if match.duplicate_of is None else index.rows[match.duplicate_of]
            if root.id == article_id:
                continue
            winner, loser = sorted((mine, root), key=_root_order)
            index.regroup(loser.id, winner.id, sim)
            table = Article.__table__
            session.execute(update(table).where(table.c.duplicate_of == loser.id).values(duplicate_of=winner.id))
            session.execute(update(table).where(table.c.id == loser.id).values(duplicate_of=winner.id,
                                                                               similarity=sim))
            logger.info("story groups of articles %d and %d merged under %d (stored concurrently)",
                        loser.id, article_id if loser.id != article_id else root.id, winner.id)

    def _flatten(self, session: Session, copies: list[int]) -> None:
        """Copies whose root was merged into another group point at that group's root."""
        parent = aliased(Article)
        moved = session.execute(select(Article.id, parent.duplicate_of).join(
            parent, parent.id == Article.duplicate_of).where(
            _one_of(Article.id, copies, self.engine.dialect.name), parent.duplicate_of.is_not(None))).all()
        for article_id, root in moved:
            session.execute(update(Article.__table__).where(Article.__table__.c.id == article_id)
                            .values(duplicate_of=root))

    # -- incremental crawls ------------------------------------------------------

    def validators_for(self, urls: Sequence[str]) -> dict[str, SeenArticle]:
        """The stored article behind each of `urls` that is known, keyed by that URL.

        A URL with an ``article_urls`` row (any page an article was fetched from: the canonical page,
        a spelling of it, a copy that declares it canonical) comes with that page's own validators;
        a URL without one that is an article's fetched URL, or its canonical URL when the row holds
        the canonical page's own text (a row stored before ``article_urls`` existed), with the article
        row's. A row whose text is a stand-in (a copy's, stored before the canonical page was fetched)
        does not make its canonical URL known: that page was never fetched, and must be, whether this
        crawl or a later one gets to it, so that its own text replaces the copy's (and it must not be
        asked with the copy's validators). Pass URLs as `fetched_url_key` spells them.
        Three indexed lookups (``article_urls.url`` primary key, ``canonical_url`` unique, ``url``
        indexed), so the cost of a check does not depend on the size of the tables.
        """
        wanted = list(dict.fromkeys(urls))
        if not wanted:
            return {}
        found: dict[str, SeenArticle] = {}
        with self.sessions() as session:
            for key, canonical, published, first_seen, etag, last_modified in session.execute(
                    select(ArticleUrl.url, Article.canonical_url, Article.published_at, Article.first_seen_at,
                           ArticleUrl.http_etag, ArticleUrl.http_last_modified)
                    .join(Article, Article.id == ArticleUrl.article_id).where(ArticleUrl.url.in_(wanted))):
                found[key] = SeenArticle(canonical, published, first_seen, etag, last_modified, key)
            rest = [u for u in wanted if u not in found]
            if not rest:
                return found
            columns = (Article.canonical_url, Article.url, Article.published_at, Article.first_seen_at,
                       Article.http_etag, Article.http_last_modified)
            for column in (Article.canonical_url, Article.url):
                for canonical, url, published, first_seen, etag, last_modified in session.execute(
                        select(*columns).where(column.in_(rest))):
                    seen = SeenArticle(canonical, published, first_seen, etag, last_modified)
                    for key in ((canonical, url) if is_own_page(url, canonical) else (url,)):
                        if key in rest:
                            found.setdefault(key, seen)
        return found

    def touch_seen(self, canonical_urls: Sequence[str], run_id: int | None = None,
                   urls: Sequence[str] = ()) -> int:
        """Fetched again and unchanged (HTTP 304): move only `last_seen_at` (and the run) of the articles,
        and of the ``article_urls`` rows of the pages answered (`urls`). Batched; returns the articles moved."""
        canonicals = list(dict.fromkeys(canonical_urls))
        pages = sorted(set(urls))
        if not canonicals and not pages:
            return 0
        now = utcnow()
        values: dict[str, Any] = {"last_seen_at": now}
        if run_id is not None:
            values["last_run_id"] = run_id
        with self.sessions.begin() as session:
            if pages:
                session.execute(update(ArticleUrl).where(ArticleUrl.url.in_(pages)).values(last_seen_at=now),
                                execution_options={"synchronize_session": False})
            if not canonicals:
                return 0
            return session.execute(update(Article).where(Article.canonical_url.in_(canonicals)).values(**values),
                                   execution_options={"synchronize_session": False}).rowcount

    def count_articles(self, source: str | None = None) -> int:
        with self.sessions() as session:
            query = select(func.count(Article.id))
            if source:
                query = query.where(Article.source == source)
            return session.scalar(query) or 0

    def iter_articles(self, *, since: datetime | None = None, source: str | None = None,
                      batch_size: int = 500) -> Iterator[Article]:
        """Articles updated at or after `since`, oldest change first (for export)."""
        with self.sessions() as session:
            query = select(Article).order_by(Article.updated_at, Article.id)
            if since is not None:
                query = query.where(Article.updated_at >= since)
            if source:
                query = query.where(Article.source == source)
            yield from session.scalars(query.execution_options(yield_per=batch_size))

    # -- crawl runs ------------------------------------------------------------

    def start_run(self, source: str, trigger: str = "manual") -> int:
        with self.sessions.begin() as session:
            run = CrawlRun(source=source, trigger=trigger, status="running", started_at=utcnow(),
                           hostname=socket.gethostname(), pid=os.getpid())
            session.add(run)
            session.flush()
            return run.id

    def finish_run(self, run_id: int, *, status: str, counts: Mapping[str, int],
                   finish_reason: str | None = None, error: str | None = None,
                   stats: Mapping[str, Any] | None = None, exit_code: int | None = None) -> None:
        with self.sessions.begin() as session:
            run = session.get(CrawlRun, run_id)
            if run is None:
                raise KeyError(f"crawl run {run_id} not found")
            run.status = status
            run.finished_at = utcnow()
            run.finish_reason = finish_reason
            run.error = error
            run.exit_code = exit_code
            run.stats = dict(stats) if stats is not None else None
            for key in ("pages", "items_stored", "items_updated", "dropped", "duplicates", "errors"):
                setattr(run, key, int(counts.get(key, 0)))

    def abandon_stale_runs(self, source: str) -> int:
        """Close `running` records of this host whose process is gone (killed crawls)."""
        host = socket.gethostname()
        with self.sessions.begin() as session:
            stale = [run.id for run in session.scalars(select(CrawlRun).where(
                CrawlRun.source == source, CrawlRun.status == "running", CrawlRun.hostname == host))
                if run.pid is not None and run.pid != os.getpid() and not _pid_alive(run.pid)]
            if stale:
                session.execute(update(CrawlRun).where(CrawlRun.id.in_(stale)).values(
                    status="abandoned", finished_at=utcnow(),
                    error="the crawl process ended without closing its run (killed or crashed)"))
            return len(stale)

    def adopt_run(self, run_id: int, source: str) -> bool:
        """Take over a `running` record the scheduler created for this crawl (its id came on the
        command line); False if there is no such record, so the crawl opens its own."""
        with self.sessions.begin() as session:
            result = session.execute(update(CrawlRun).where(
                CrawlRun.id == run_id, CrawlRun.source == source, CrawlRun.status == "running",
            ).values(hostname=socket.gethostname(), pid=os.getpid()))
            return result.rowcount == 1

    def set_exit_code(self, run_id: int, exit_code: int) -> None:
        """The crawl process's own exit code, written by the crawl just before it exits."""
        with self.sessions.begin() as session:
            session.execute(update(CrawlRun).where(CrawlRun.id == run_id).values(exit_code=exit_code))

    def record_exit(self, run_id: int, *, exit_code: int | None, status_if_open: str,
                    force_status: str | None = None, note: str | None = None,
                    output_tail: str | None = None) -> CrawlRun:
        """After a crawl process exited: store its exit code and output tail, and close the run
        if the crawl could not (crashed, killed) or the scheduler stopped it (`force_status`).
        A run the crawl closed as succeeded (it finished just as it was being stopped) stays so."""
        with self.sessions.begin() as session:
            run = session.get(CrawlRun, run_id)
            if run is None:
                raise KeyError(f"crawl run {run_id} not found")
            if run.status == "succeeded":
                force_status = note = None
            if run.status == "running":
                run.status = status_if_open
                if note is None:
                    note = (f"the crawl process ended (exit code {exit_code}) without closing its run "
                            "(crashed or killed)")
            if force_status is not None:
                run.status = force_status
            if run.finished_at is None:
                run.finished_at = utcnow()
            run.exit_code = exit_code
            parts = [text for text in (note, run.error) if text]
            if output_tail and (exit_code != 0 or run.status != "succeeded"):
                parts.append("--- crawl output (tail) ---\n" + output_tail)
            run.error = "\n".join(parts) or None
            return run

    def get_run(self, run_id: int) -> CrawlRun | None:
        with self.sessions() as session:
            return session.get(CrawlRun, run_id)

    def recent_runs(self, limit: int = 20, source: str | None = None) -> list[CrawlRun]:
        with self.sessions() as session:
            query = select(CrawlRun).order_by(CrawlRun.started_at.desc(), CrawlRun.id.desc()).limit(limit)
            if source:
                query = query.where(CrawlRun.source == source)
            return list(session.scalars(query))

    # -- source leases (scheduler mutual exclusion) ------------------------------

    def acquire_lease(self, source: str, owner: str, ttl: float) -> bool:
        """Take the source's lease if it is free, expired or already ours; True if we hold it.

        One atomic upsert (INSERT ... ON CONFLICT DO UPDATE ... WHERE expired
        OR ours) on SQLite and PostgreSQL, so two schedulers racing for the
        same source cannot both win.
        """
        now = utcnow()
        values = {"source": source, "owner": owner, "acquired_at": now, "expires_at": now + timedelta(seconds=ttl)}
        table = SourceLease.__table__
        with self.sessions.begin() as session:
            dialect = self.engine.dialect.name
            if dialect in ("postgresql", "sqlite"):
                if dialect == "postgresql":
                    from sqlalchemy.dialects.postgresql import insert
                else:
                    from sqlalchemy.dialects.sqlite import insert
                stmt = insert(table).values(**values)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[table.c.source],
                    set_={"owner": owner, "acquired_at": now, "expires_at": values["expires_at"]},
                    where=(table.c.expires_at < now) | (table.c.owner == owner),
                )
                session.execute(stmt)
            else:  # pragma: no cover - other backends: conditional update, then insert
                taken = session.execute(update(table).where(
                    table.c.source == source, (table.c.expires_at < now) | (table.c.owner == owner),
                ).values(owner=owner, acquired_at=now, expires_at=values["expires_at"])).rowcount
                if not taken:
                    try:
                        with session.begin_nested():
                            session.execute(table.insert().values(**values))
                    except IntegrityError:
                        pass
            holder = session.scalar(select(table.c.owner).where(table.c.source == source))
        return holder == owner

    def renew_lease(self, source: str, owner: str, ttl: float) -> bool:
        """Push our lease's expiry forward; False if it is no longer ours (it expired and was taken)."""
        with self.sessions.begin() as session:
            result = session.execute(update(SourceLease).where(
                SourceLease.source == source, SourceLease.owner == owner,
            ).values(expires_at=utcnow() + timedelta(seconds=ttl)))
            return result.rowcount == 1

    def release_lease(self, source: str, owner: str) -> None:
        """Give the lease up (only ours: a lease taken over by another scheduler stays)."""
        with self.sessions.begin() as session:
            session.execute(delete(SourceLease).where(SourceLease.source == source, SourceLease.owner == owner))

    def leases(self) -> list[SourceLease]:
        with self.sessions() as session:
            return list(session.scalars(select(SourceLease).order_by(SourceLease.source)))

    def recent_runs_per_source(self, per_source: int = 5) -> list[CrawlRun]:
        """The latest `per_source` runs of every source, by source then newest first."""
        ranked = select(CrawlRun.id, func.row_number().over(
            partition_by=CrawlRun.source, order_by=(CrawlRun.started_at.desc(), CrawlRun.id.desc()),
        ).label("rank")).subquery()
        with self.sessions() as session:
            query = (select(CrawlRun).join(ranked, ranked.c.id == CrawlRun.id).where(ranked.c.rank <= per_source)
                     .order_by(CrawlRun.source, CrawlRun.started_at.desc(), CrawlRun.id.desc()))
            return list(session.scalars(query))

    def field_coverage(self, source: str | None = None) -> dict[str, float]:
        """Share of articles with each optional field filled (for summaries)."""
        columns = {
            "subtitle": Article.subtitle, "published_at": Article.published_at,
            "modified_at": Article.modified_at, "language": Article.language,
            "section": Article.section, "image_url": Article.image_url, "site_name": Article.site_name,
        }
        with self.sessions() as session:
            base = select(func.count(Article.id))
            if source:
                base = base.where(Article.source == source)
            total = session.scalar(base) or 0
            if not total:
                return {}
            coverage = {name: (session.scalar(base.where(col.is_not(None))) or 0) / total
                        for name, col in columns.items()}
            rows = session.execute(select(Article.authors, Article.tags).where(
                *( [Article.source == source] if source else []))).all()
            coverage["authors"] = sum(1 for a, _ in rows if a) / total
            coverage["tags"] = sum(1 for _, t in rows if t) / total
            return coverage

    # -- crawl runs on Scrapyd nodes (crawler/executors.py, docs/scale-out.md) ---------------

    def start_node_run(self, source: str, trigger: str, node: str, job_id: str) -> int:
        """The run record of a crawl about to be dispatched to a Scrapyd node, written before the
        dispatch: host and pid stay empty until the crawl adopts it on the node."""
        with self.sessions.begin() as session:
            run = CrawlRun(source=source, trigger=trigger, status="running", started_at=utcnow(),
                           node=node, job_id=job_id)
            session.add(run)
            session.flush()
            return run.id

    def redispatch_run(self, run_id: int, node: str, job_id: str) -> None:
        """A dispatch that never reached its node goes to another one under the same record."""
        with self.sessions.begin() as session:
            session.execute(update(CrawlRun).where(CrawlRun.id == run_id, CrawlRun.status == "running")
                            .values(node=node, job_id=job_id))

    def adopt_job_run(self, run_id: int, source: str, job_id: str) -> bool:
        """`adopt_run` keyed by the Scrapyd job id too: only the attempt the record was written for
        (not an earlier, stale dispatch of it) takes it over."""
        with self.sessions.begin() as session:
            result = session.execute(update(CrawlRun).where(
                CrawlRun.id == run_id, CrawlRun.source == source, CrawlRun.job_id == job_id,
                CrawlRun.status == "running",
            ).values(hostname=socket.gethostname(), pid=os.getpid(), heartbeat_at=utcnow()))
            return result.rowcount == 1

    def heartbeat_run(self, run_id: int) -> None:
        """The crawl is alive: schedulers on other hosts cannot see its process, only this time."""
        with self.sessions.begin() as session:
            session.execute(update(CrawlRun).where(CrawlRun.id == run_id, CrawlRun.status == "running")
                            .values(heartbeat_at=utcnow()))

    def running_runs_per_node(self) -> dict[str, int]:
        """Open runs per Scrapyd node: the scheduler's load figure for each node."""
        with self.sessions() as session:
            rows = session.execute(select(CrawlRun.node, func.count(CrawlRun.id)).where(
                CrawlRun.status == "running", CrawlRun.node.is_not(None)).group_by(CrawlRun.node))
            return {node: int(count) for node, count in rows}

    def live_writer(self, source: str, silent_for: float) -> CrawlRun | None:
        """An open run of `source` whose crawl gave a sign of life within `silent_for` seconds
        (heartbeat, or its dispatch when it has none yet): something may still write for it."""
        since = utcnow() - timedelta(seconds=silent_for)
        with self.sessions() as session:
            return session.scalars(select(CrawlRun).where(
                CrawlRun.source == source, CrawlRun.status == "running",
                or_(CrawlRun.heartbeat_at >= since, and_(CrawlRun.heartbeat_at.is_(None),
                                                         CrawlRun.started_at >= since)),
            ).order_by(CrawlRun.id.desc()).limit(1)).first()

    def abandon_silent_node_runs(self, silent_for: float) -> list[CrawlRun]:
        """Close open node runs with no sign of life for `silent_for` seconds whose source no live
        lease covers (their scheduler died): nothing writes for them any more."""
        now = utcnow()
        since = now - timedelta(seconds=silent_for)
        leased = select(SourceLease.source).where(SourceLease.expires_at >= now)
        with self.sessions.begin() as session:
            runs = list(session.scalars(select(CrawlRun).where(
                CrawlRun.status == "running", CrawlRun.node.is_not(None), CrawlRun.source.not_in(leased),
                func.coalesce(CrawlRun.heartbeat_at, CrawlRun.started_at) < since)))
            for run in runs:
                run.status, run.finished_at = "abandoned", now
                run.error = (f"no sign of life from the crawl on node {run.node} for {silent_for:g}s and no "
                             "scheduler holds its source's lease (the scheduler died)")
            return runs

    def validators_for_many(self, urls: Sequence[str], chunk: int = 900) -> dict[str, SeenArticle]:
        """`validators_for` for a whole listing's URLs at once (the crawl's batched seen check): the same
        answers, one round of queries per `chunk` URLs (below SQLite's oldest bound-parameter limit)."""
        wanted = list(dict.fromkeys(urls))
        found: dict[str, SeenArticle] = {}
        for start in range(0, len(wanted), chunk):
            found.update(self.validators_for(wanted[start:start + chunk]))
        return found


class _Fallback(Exception):
    """The set-based path does not take this batch; it is written row by row."""


@dataclass(slots=True)
class _BatchOutcome:
    result: StoreResult
    lonely: list[int]  # new rows stored as roots with no match: rechecked after the commit
    copies: list[int]  # new rows linked to a group: re-pointed if their root was merged meanwhile


@dataclass(slots=True)
class _GroupRow:
    """What a group decision needs to know about one article."""

    id: int
    content_hash: str
    minhash: bytes | None
    duplicate_of: int | None
    published_at: datetime | None
    similarity: float | None = None


def _root_order(row: _GroupRow) -> tuple[bool, datetime, int]:
    """The root of a merged group: the earliest published, then the lowest id."""
    return (row.published_at is None, row.published_at or datetime.max.replace(tzinfo=UTC), row.id)


class _GroupIndex:
    """The near-duplicate candidates of a batch's texts, in memory: the same answers as
    `Repository._find_group` against the database, kept up to date as the batch is applied."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.rows: dict[int, _GroupRow] = {}
        self.by_hash: dict[str, set[int]] = {}
        self.by_band: dict[tuple[int, int], set[int]] = {}
        self.bands_of: dict[int, list[tuple[int, int]]] = {}

    def load(self, session: Session, hashes: set[str], keys: list[list[int]], also: list[int]) -> None:
        """Every stored row with one of `hashes` or sharing a band with one of `keys`, the rows
        in `also`, and the roots of all of them."""
        ids: set[int] = set(also)
        dialect = session.get_bind().dialect.name
        if keys:
            wanted = [sorted({k[band] for k in keys}) for band in range(BANDS)]
            for band, key, article_id in session.execute(select(
                    ArticleBand.band_no, ArticleBand.band_hash, ArticleBand.article_id).where(or_(*(
                    and_(ArticleBand.band_no == band, _one_of(ArticleBand.band_hash, values, dialect))
                    for band, values in enumerate(wanted))))):
                self.by_band.setdefault((band, key), set()).add(article_id)
                self.bands_of.setdefault(article_id, []).append((band, key))
                ids.add(article_id)
        if hashes:
            ids.update(session.scalars(select(Article.id).where(_one_of(Article.content_hash, hashes, dialect))))
        missing = ids
        while missing:
            found = session.execute(select(Article.id, Article.content_hash, Article.minhash, Article.duplicate_of,
                                           Article.published_at, Article.similarity).where(
                _one_of(Article.id, missing, dialect)))
            for row in found:
                self.rows[row.id] = _GroupRow(*row)
                if row.content_hash in hashes:
                    self.by_hash.setdefault(row.content_hash, set()).add(row.id)
            missing = {r.duplicate_of for r in self.rows.values()
                       if r.duplicate_of is not None and r.duplicate_of not in self.rows}

    def find(self, content_hash: str, signature: bytes,
             exclude: frozenset[int] = frozenset()) -> tuple[_GroupRow | None, float | None]:
        same = [self.rows[i] for i in self.by_hash.get(content_hash, ()) if i not in exclude]
        if same:
            return min(same, key=lambda r: (r.duplicate_of is not None, r.id)), 1.0
        candidates: set[int] = set()
        for key in enumerate(band_hashes(signature)):
            candidates |= self.by_band.get(key, set())
        best: tuple[float, int] | None = None
        for article_id in candidates:
            other = self.rows[article_id].minhash
            if article_id in exclude or other is None:
                continue
            sim = similarity(signature, other)
            if sim >= self.threshold and (best is None or (sim, -article_id) > (best[0], -best[1])):
                best = (sim, article_id)
        return (None, None) if best is None else (self.rows[best[1]], best[0])

    def add(self, article_id: int, content_hash: str, signature: bytes,
            published_at: datetime | None) -> _GroupRow:
        row = self.rows[article_id] = _GroupRow(article_id, content_hash, signature, None, published_at)
        self._index(row)
        return row

    def retext(self, article_id: int, content_hash: str, signature: bytes | None) -> None:
        """A stored row got a new text: new hash and bands."""
        row = self.rows[article_id]
        self.by_hash.get(row.content_hash, set()).discard(article_id)
        for key in self.bands_of.pop(article_id, []):
            self.by_band[key].discard(article_id)
        row.content_hash, row.minhash = content_hash, signature
        self._index(row)

    def regroup(self, old_root: int, new_root: int, sim: float | None) -> None:
        """`old_root` and its copies now belong to `new_root` (as the database UPDATEs do)."""
        for row in self.rows.values():
            if row.duplicate_of == old_root:
                row.duplicate_of = new_root
        self.rows[old_root].duplicate_of = new_root
        self.rows[old_root].similarity = sim

    def _index(self, row: _GroupRow) -> None:
        self.by_hash.setdefault(row.content_hash, set()).add(row.id)
        if row.minhash is not None:
            keys = list(enumerate(band_hashes(row.minhash)))
            for key in keys:
                self.by_band.setdefault(key, set()).add(row.id)
            self.bands_of[row.id] = keys


def _one_of(column: Any, values: Iterable[Any], dialect: str) -> ColumnElement[bool]:
    """`column IN values`. On PostgreSQL as one array parameter (``= ANY(%s)``): the statement's text does
    not grow with the list, so SQLAlchemy's and psycopg's caches reuse it and the server parses it once,
    where an expanded IN of a batch's 2,000 band keys is rendered, converted and planned anew each time."""
    values = list(values)
    if dialect == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(column.type)))
    return column.in_(values)


def _insert_bands(session: Session, rows: Sequence[tuple[int, int, int]]) -> None:
    """Insert ``article_bands`` rows (band number, key, article id). On PostgreSQL in one statement over
    three arrays (``unnest``) instead of one pipelined INSERT per row: a batch of 100 articles has 2,200."""
    if not rows:
        return
    if session.get_bind().dialect.name == "postgresql":
        nos, keys, ids = (list(column) for column in zip(*rows, strict=True))
        table = func.unnest(bindparam(None, nos, type_=ARRAY(SmallInteger())),
                            bindparam(None, keys, type_=ARRAY(BigInteger())),
                            bindparam(None, ids, type_=ARRAY(BigInteger()))).table_valued(
            "band_no", "band_hash", "article_id").render_derived()
        session.execute(insert(ArticleBand).from_select(
            ["band_no", "band_hash", "article_id"], select(table.c.band_no, table.c.band_hash, table.c.article_id)))
        return
    session.execute(insert(ArticleBand), [{"band_no": band, "band_hash": key, "article_id": article_id}
                                          for band, key, article_id in rows])


def _column_value(record: Mapping[str, Any], column: str) -> Any:
    value = record.get(column)
    if column in ("authors", "tags"):
        return list(value or [])
    return value


def _url_entry(record: Mapping[str, Any], article_id: int, now: datetime) -> dict[str, Any] | None:
    """The ``article_urls`` row of the page a record was fetched from (None without a usable URL)."""
    key = fetched_url_key(record.get("url"))
    if key is None:
        return None
    return {"url": key, "article_id": article_id, "http_etag": record.get("etag"),
            "http_last_modified": record.get("last_modified"), "last_seen_at": now}


def _version_of(article: Article, fetched_at: datetime) -> ArticleVersion:
    return ArticleVersion(article_id=article.id, version=article.version, fetched_at=fetched_at,
                          title=article.title, subtitle=article.subtitle, body=article.body,
                          modified_at=article.modified_at, content_hash=article.content_hash)


_TRANSIENT_MARKERS = (
    "database is locked",
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "could not connect",
    "connection timeout",
    "connection is closed",
    "the database system is starting up",
    "the database system is not yet accepting connections",  # recovery after a crash
    "the database system is shutting down",
    "ssl syscall error",
    "consuming input failed",
)


def _is_transient(exc: BaseException) -> bool:
    """A failure that a replay of the batch can cure (lost connection, lock)."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    text = str(exc.orig or exc).lower()
    return isinstance(exc, OperationalError) and any(marker in text for marker in _TRANSIENT_MARKERS)


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:500]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (dead, not yet reaped by its new parent) is not a running crawl
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


_repositories: dict[str, Repository] = {}


def open_repository(url: str | None = None) -> Repository:
    """The process-wide repository for a database URL, schema ensured once."""
    resolved = resolve_database_url(url)
    repository = _repositories.get(resolved)
    if repository is None or repository.engine is not get_engine(resolved):
        engine = get_engine(resolved)
        ensure_schema(engine)
        repository = _repositories[resolved] = Repository(engine)
    return repository
