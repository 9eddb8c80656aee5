"""The only module that writes SQL: article upserts, run records, reads for the CLI.

Articles are keyed on `canonical_url`. A batch is one transaction with a
savepoint per article, so one bad row is rejected and counted alone while its
neighbours commit. A lost connection replays the whole batch (idempotent
upserts make the replay safe).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, delete, func, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError, StatementError
from sqlalchemy.orm import Session

from storage.db import get_engine, resolve_database_url, session_factory
from storage.migrate import ensure_schema
from storage.models import Article, ArticleBand, ArticleVersion, CrawlRun, Source, SourceLease, utcnow
from storage.signature import band_hashes, minhash, similarity

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
)


@dataclass(frozen=True, slots=True)
class SeenArticle:
    """What a recrawl needs to know about a stored article before requesting it again."""

    canonical_url: str
    published_at: datetime | None
    first_seen_at: datetime
    etag: str | None
    last_modified: str | None


@dataclass(slots=True)
class StoreResult:
    """What one batch did, for crawl stats and run records."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    content_duplicates: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    attempts: int = 1

    def merge(self, other: StoreResult) -> None:
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.content_duplicates += other.content_duplicates
        self.failed.extend(other.failed)


class Repository:
    """Reads and writes of the public schema for one database."""

    def __init__(self, engine: Engine, *, retry_seconds: float = 120.0, retry_backoff: float = 0.5,
                 near_dup_threshold: float | None = None) -> None:
        self.engine = engine
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
        `fetched_at`. Retries the whole batch on a lost connection.
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
        result = StoreResult()
        now = utcnow()
        with self.sessions.begin() as session:
            urls = [r["canonical_url"] for r in records]
            existing = {a.canonical_url: a for a in session.scalars(
                select(Article).where(Article.canonical_url.in_(urls)))}
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
                elif outcome == "duplicate":
                    result.inserted += 1
                    result.content_duplicates += 1
                elif outcome == "updated":
                    result.updated += 1
                else:
                    result.unchanged += 1
        return result

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
                return "duplicate" if grouped else "inserted"
            return "updated" if self._update(session, article, record, run_id, now) else "unchanged"

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
        session.execute(insert(ArticleBand), [
            {"band_no": band, "band_hash": key, "article_id": article_id}
            for band, key in enumerate(band_hashes(signature))])

    def _update(self, session: Session, article: Article, record: Mapping[str, Any],
                run_id: int | None, now: datetime) -> bool:
        """Return True when the text changed (a new version was written)."""
        article.last_seen_at = now
        article.last_run_id = run_id
        if article.url == article.canonical_url and record.get("url") != record["canonical_url"]:
            # The row's text came from the canonical page itself; another page that declares it
            # canonical (a syndicated or AMP copy) must not overwrite it, or its validators.
            session.flush()
            return False
        if record.get("etag"):
            article.http_etag = record["etag"]
        if record.get("last_modified"):
            article.http_last_modified = record["last_modified"]
        changed = (article.content_hash != record["content_hash"] or article.title != record["title"]
                   or article.subtitle != record.get("subtitle"))
        if not changed:
            session.flush()
            return False
        for col in CONTENT_COLUMNS:
            setattr(article, col, _column_value(record, col))
        if article.content_hash != record["content_hash"]:
            # A new text: a new signature and bands (the story group is kept as it is).
            article.minhash = record.get("minhash") or minhash(record["body"] or "")
            session.execute(delete(ArticleBand).where(ArticleBand.article_id == article.id))
            self._index_bands(session, article.id, article.minhash)
        article.content_hash = record["content_hash"]
        article.version += 1
        article.updated_at = now
        if article.modified_at is None:
            article.modified_at = now
        session.flush()
        session.add(_version_of(article, record.get("fetched_at") or now))
        session.flush()
        return True

    # -- incremental crawls ------------------------------------------------------

    def validators_for(self, urls: Sequence[str]) -> dict[str, SeenArticle]:
        """Stored articles whose canonical or last fetched URL is one of `urls`, keyed by that URL.

        Two indexed lookups (``canonical_url`` unique, ``url`` indexed), so the cost of a
        check does not depend on the size of the table.
        """
        wanted = list(dict.fromkeys(urls))
        if not wanted:
            return {}
        columns = (Article.canonical_url, Article.url, Article.published_at, Article.first_seen_at,
                   Article.http_etag, Article.http_last_modified)
        found: dict[str, SeenArticle] = {}
        with self.sessions() as session:
            for column in (Article.canonical_url, Article.url):
                for canonical, url, published, first_seen, etag, last_modified in session.execute(
                        select(*columns).where(column.in_(wanted))):
                    seen = SeenArticle(canonical, published, first_seen, etag, last_modified)
                    for key in (canonical, url):
                        if key in wanted:
                            found.setdefault(key, seen)
        return found

    def touch_seen(self, canonical_urls: Sequence[str], run_id: int | None = None) -> int:
        """Fetched again and unchanged (HTTP 304): move only `last_seen_at` (and the run). Batched."""
        urls = list(dict.fromkeys(canonical_urls))
        if not urls:
            return 0
        values: dict[str, Any] = {"last_seen_at": utcnow()}
        if run_id is not None:
            values["last_run_id"] = run_id
        with self.sessions.begin() as session:
            return session.execute(update(Article).where(Article.canonical_url.in_(urls)).values(**values),
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


def _column_value(record: Mapping[str, Any], column: str) -> Any:
    value = record.get(column)
    if column in ("authors", "tags"):
        return list(value or [])
    return value


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
