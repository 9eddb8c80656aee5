"""The article item: the field contract between spider, pipelines and storage.

Every pipeline reads and writes items through ``ItemAdapter``, so the contract
lives here once. Formats:

- text fields are ``str`` (NFC-normalized by the clean pipeline) or ``None``;
- ``body`` is plain text, paragraphs separated by exactly one blank line;
- ``authors`` and ``tags`` are lists of ``str`` (possibly empty);
- ``published_at`` / ``modified_at`` / ``fetched_at`` are timezone-aware
  ``datetime`` objects, converted to UTC by the clean pipeline;
- ``canonical_url`` is set by the dedupe pipeline (the identity of the row).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(slots=True)
class ArticleItem:
    """One article page as extracted from a response."""

    # identity
    source: str = ""
    url: str = ""
    canonical_url: str | None = None
    declared_canonical_url: str | None = None  # rel=canonical / og:url as found on the page
    # content
    title: str | None = None
    subtitle: str | None = None
    body: str | None = None
    authors: list[str] = field(default_factory=list)
    published_at: datetime | None = None
    modified_at: datetime | None = None
    language: str | None = None
    section: str | None = None
    tags: list[str] = field(default_factory=list)
    image_url: str | None = None
    site_name: str | None = None
    paywalled: bool | None = None  # the page says its text is behind a paywall (the body is what it shows)
    # fetch metadata
    fetched_at: datetime | None = None
    http_status: int | None = None
    etag: str | None = None
    last_modified: str | None = None
    # set by the dedupe pipeline
    content_hash: str | None = None


ARTICLE_FIELDS: tuple[str, ...] = (
    "url",
    "canonical_url",
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
"""The fields the extractor produces (``newsingest extract`` prints these)."""
