"""Parse the documents that list article URLs: sitemaps, news sitemaps, feeds, robots.txt.

Pure functions over bytes, testable without Scrapy. Broken documents do not
fail silently: whatever could be read before the error is returned together
with the error, so the spider can count it and keep the URLs it got.
"""

from __future__ import annotations

import gzip
import io
import zlib
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urljoin

from lxml import etree

GZIP_MAGIC = b"\x1f\x8b"
MAX_DECOMPRESSED_BYTES = 64 * 1024 * 1024  # a sitemap may hold 50,000 URLs (~50 MB)


@dataclass(slots=True)
class SitemapEntry:
    loc: str
    lastmod: str | None = None
    news_title: str | None = None
    news_publication_date: str | None = None
    published: str | None = None  # a feed item's pubDate / dc:date / Atom published, as written


@dataclass(slots=True)
class Listing:
    """What a sitemap or feed document lists."""

    kind: str  # "sitemapindex", "urlset", "rss", "atom", "rdf" or "unknown"
    entries: list[SitemapEntry] = field(default_factory=list)
    error: str | None = None


class DecompressionError(ValueError):
    """A gzipped document is corrupt or expands beyond the allowed size."""


def maybe_gunzip(body: bytes, max_bytes: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a gzip file body (e.g. sitemap.xml.gz), all its members, refusing gzip bombs."""
    if not body.startswith(GZIP_MAGIC):
        return body
    out = io.BytesIO()
    data = body
    try:
        while data:
            decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out.write(decompressor.decompress(data, max_bytes + 1 - out.tell()))
            while decompressor.unconsumed_tail and out.tell() <= max_bytes:
                out.write(decompressor.decompress(decompressor.unconsumed_tail, max_bytes + 1 - out.tell()))
            if out.tell() > max_bytes:
                raise DecompressionError(f"gzip body expands beyond {max_bytes} bytes")
            if not decompressor.eof:
                raise DecompressionError("corrupt gzip data: truncated stream")
            data = decompressor.unused_data  # the next gzip member, if any
            if data and not data.startswith(GZIP_MAGIC):
                break  # trailing garbage after the last member is ignored, as gzip(1) does
    except (zlib.error, gzip.BadGzipFile) as exc:
        raise DecompressionError(f"corrupt gzip data: {exc}") from exc
    return out.getvalue()


def _local(tag: object) -> str:
    if not isinstance(tag, str):
        return ""
    return tag.rpartition("}")[2].lower()


class EntityRefused(ValueError):
    """A document declares or references entities: refused rather than silently mangled.

    Entities are never expanded or fetched (XXE, billion laughs); a declared one
    is refused outright, an unresolved reference inside a field stops the parse,
    because dropping it would turn ``https://site/&e;`` into a request for ``https://site/``.
    """


def _text(elem: etree._Element) -> str | None:
    for child in elem:
        if isinstance(child, etree._Entity):
            raise EntityRefused(f"unresolved entity reference {child.text} in <{_local(elem.tag)}>")
    text = (elem.text or "").strip()
    return text or None


def _declared_entities(elem: etree._Element) -> list[str]:
    """Entities (general and parameter) declared in the document's internal DTD subset."""
    dtd = elem.getroottree().docinfo.internalDTD
    if dtd is None:
        return []
    return [f"{entity.name} ({entity.system_url or 'internal'})" for entity in dtd.iterentities()]


def parse_listing(body: bytes, base_url: str) -> Listing:
    """Parse a sitemap (index, urlset, news) or an RSS/Atom/RDF feed.

    Uses a non-recovering, entity-free parser: a malformed document yields
    the entries before the error plus an error message, never a silent
    empty result. Nothing is ever fetched or read on the document's behalf
    (no network, no DTD loading, no entity expansion); a document that declares
    entities is refused with an error, as no sitemap or feed needs them.
    """
    parser_events = ("start", "end")
    listing = Listing(kind="unknown")
    try:
        context = etree.iterparse(
            io.BytesIO(body), events=parser_events, resolve_entities=False, no_network=True,
            huge_tree=False, remove_comments=True, remove_pis=True, load_dtd=False,
        )
        root_seen = False
        for event, elem in context:
            tag = _local(elem.tag)
            if event == "start":
                if not root_seen:
                    root_seen = True
                    listing.kind = {"sitemapindex": "sitemapindex", "urlset": "urlset", "rss": "rss",
                                    "feed": "atom", "rdf": "rdf"}.get(tag, "unknown")
                    declared = _declared_entities(elem)
                    if declared:
                        listing.error = f"entity declarations are refused: {', '.join(declared[:5])}"
                        return listing
                    if listing.kind == "unknown":
                        listing.error = f"not a sitemap or feed (root element <{tag}>)"
                        return listing
                continue
            entry = _entry(listing.kind, tag, elem, base_url)
            if entry is not None:
                listing.entries.append(entry)
            if tag in ("url", "sitemap", "item", "entry"):
                elem.clear(keep_tail=False)
                parent = elem.getparent()
                if parent is not None:
                    while elem.getprevious() is not None:
                        del parent[0]
    except etree.XMLSyntaxError as exc:
        listing.error = f"XML error: {exc}"
    except EntityRefused as exc:
        listing.error = str(exc)
    if listing.kind == "unknown" and listing.error is None:
        listing.error = "empty document"
    return listing


def _entry(kind: str, tag: str, elem: etree._Element, base_url: str) -> SitemapEntry | None:
    if kind in ("sitemapindex", "urlset") and tag in ("url", "sitemap"):
        loc = lastmod = title = pubdate = None
        for child in elem.iter():
            name = _local(child.tag)
            if name == "loc" and loc is None:
                loc = _text(child)
            elif name == "lastmod":
                lastmod = _text(child)
            elif name == "title":
                title = _text(child)
            elif name == "publication_date":
                pubdate = _text(child)
        if not loc:
            return None
        return SitemapEntry(urljoin(base_url, loc), lastmod, title, pubdate)
    if kind in ("rss", "rdf") and tag == "item":
        link = None
        guid_link = None
        published = None
        for child in elem:
            name = _local(child.tag)
            if name == "link" and _text(child):
                link = _text(child)
            elif name == "guid" and child.get("isPermaLink", "true").lower() == "true" and _text(child):
                guid_link = _text(child)
            elif name in ("pubdate", "date") and published is None:
                published = _text(child)
        link = link or guid_link or elem.get("{http://www.w3.org/1999/02/22-rdf-syntax-ns#}about")
        return SitemapEntry(urljoin(base_url, link), published=published) if link else None
    if kind == "atom" and tag == "entry":
        href = None
        published = None
        for child in elem:
            name = _local(child.tag)
            if name == "published":
                published = _text(child)
            elif name == "link" and not href:
                rel = child.get("rel", "alternate")
                if rel == "alternate" and child.get("href"):
                    href = child.get("href")
        return SitemapEntry(urljoin(base_url, href), published=published) if href else None
    return None


def sitemaps_from_robots(body: bytes, base_url: str) -> list[str]:
    """The `Sitemap:` lines of a robots.txt file, as absolute URLs."""
    urls = []
    for raw in body.splitlines():
        line = raw.strip()
        if line[:8].lower() == b"sitemap:":
            try:
                value = line[8:].strip().decode("utf-8")
            except UnicodeDecodeError:
                continue
            if value:
                urls.append(urljoin(base_url, value))
    return urls


def parse_lastmod(value: str | None) -> datetime | None:
    """W3C datetime of a sitemap <lastmod> (date or full timestamp)."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
