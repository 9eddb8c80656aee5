"""The public schema: SQLAlchemy 2.0 typed models.

Downstream consumers read these tables directly, so every change here ships
with an Alembic migration and a note in docs/schema.md. All timestamps are
stored in UTC and come back timezone-aware on every backend.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names, so migrations can refer to them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL, so consumers can index and query lists (authors, tags).
JsonDoc = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC (the only clock the schema uses)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always stored as UTC and read back timezone-aware.

    SQLite has no time zones and returns naive values; PostgreSQL returns
    aware values in the session zone. Both come back as UTC here.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r} refused: the schema stores UTC instants")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JsonDoc, list[str]: JsonDoc}


class Source(Base):
    """A configured news source, registered on its first crawl."""

    __tablename__ = "sources"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    site_name: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Article(Base):
    """One row per canonical URL: the current version of an article."""

    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(ForeignKey("sources.name"), index=True)
    url: Mapped[str] = mapped_column(Text, index=True)
    canonical_url: Mapped[str] = mapped_column(Text, unique=True)
    title: Mapped[str] = mapped_column(Text)
    subtitle: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    authors: Mapped[list[str]] = mapped_column(default=list)
    published_at: Mapped[datetime | None] = mapped_column(index=True)
    modified_at: Mapped[datetime | None]
    language: Mapped[str | None] = mapped_column(String(16))
    section: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    image_url: Mapped[str | None] = mapped_column(Text)
    site_name: Mapped[str | None] = mapped_column(Text)
    # The page said its text is behind a paywall (schema.org isAccessibleForFree false): `body` is
    # the part it shows. NULL: the page did not say.
    paywalled: Mapped[bool | None]
    content_hash: Mapped[str] = mapped_column(String(64), index=True)
    duplicate_of: Mapped[int | None] = mapped_column(ForeignKey("articles.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # MinHash of the body (storage/signature.py) and, for a near-duplicate, its estimated
    # Jaccard similarity to the article it was linked to (1.0 for the same text).
    minhash: Mapped[bytes | None] = mapped_column(LargeBinary)
    similarity: Mapped[float | None] = mapped_column(Float)
    http_etag: Mapped[str | None] = mapped_column(Text)
    http_last_modified: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    last_run_id: Mapped[int | None] = mapped_column(ForeignKey("crawl_runs.id"))


class ArticleVersion(Base):
    """Every distinct text an article has had, version 1 being the first seen."""

    __tablename__ = "article_versions"
    __table_args__ = (UniqueConstraint("article_id", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    fetched_at: Mapped[datetime] = mapped_column(default=utcnow)
    title: Mapped[str] = mapped_column(Text)
    subtitle: Mapped[str | None] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    modified_at: Mapped[datetime | None]
    content_hash: Mapped[str] = mapped_column(String(64))


class ArticleBand(Base):
    """The LSH index of near-duplicate signatures: one row per (band, article).

    Candidates for a new article are the rows matching any of its band keys,
    found through the primary key's index, so the cost does not grow with the table.
    """

    __tablename__ = "article_bands"
    __table_args__ = (PrimaryKeyConstraint("band_no", "band_hash", "article_id"),)

    band_no: Mapped[int] = mapped_column(SmallInteger)
    band_hash: Mapped[int] = mapped_column(BigInteger)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)


class CrawlRun(Base):
    """One crawl of one source: written when it starts, completed when it ends."""

    __tablename__ = "crawl_runs"
    __table_args__ = (Index("ix_crawl_runs_source_started_at", "source", "started_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(100))
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    status: Mapped[str] = mapped_column(String(20), default="running", index=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]
    pages: Mapped[int] = mapped_column(Integer, default=0)
    items_stored: Mapped[int] = mapped_column(Integer, default=0)
    items_updated: Mapped[int] = mapped_column(Integer, default=0)
    dropped: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[int] = mapped_column(Integer, default=0)
    finish_reason: Mapped[str | None] = mapped_column(String(100))
    exit_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    hostname: Mapped[str | None] = mapped_column(String(255))
    pid: Mapped[int | None] = mapped_column(Integer)
    stats: Mapped[dict[str, Any] | None]
    # Scale-out (docs/scale-out.md): the Scrapyd node the scheduler dispatched the crawl to (NULL for a
    # local subprocess), the unique Scrapyd job id of that attempt, and the crawl's last sign of life,
    # which tells a scheduler on another machine whether anything still writes for this run.
    node: Mapped[str | None] = mapped_column(String(255))
    job_id: Mapped[str | None] = mapped_column(String(64), index=True)
    heartbeat_at: Mapped[datetime | None]


class SourceLease(Base):
    """Who may crawl a source right now: taken before a scheduled crawl, renewed while it runs.

    Two schedulers on one database (an active one and a standby) never crawl
    the same source at once; a lease whose holder died expires on its own.
    """

    __tablename__ = "source_leases"

    source: Mapped[str] = mapped_column(String(100), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255))  # hostname:pid:uuid of the holding process
    acquired_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


RUN_STATUSES = ("running", "succeeded", "failed", "timed_out", "abandoned", "lost")


class ArticleUrl(Base):
    """Every URL an article's page was fetched under, with that URL's own HTTP validators.

    The canonical page, its spellings and the pages that only declare it canonical (syndicated,
    AMP and print copies) each get a row, so a recrawl finds any of them before the request
    (`Repository.validators_for`): a copy is skipped or asked conditionally, not extracted again.
    """

    __tablename__ = "article_urls"

    url: Mapped[str] = mapped_column(Text, primary_key=True)  # crawler.urls.canonicalize_url of the fetched URL
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    http_etag: Mapped[str | None] = mapped_column(Text)
    http_last_modified: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
