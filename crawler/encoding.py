"""Decode an HTML response to text without mojibake.

Order of trust: a byte-order mark, the HTTP `Content-Type` charset, the
page's own `<meta>` declaration, then (only when the page declares nothing
usable) strict UTF-8, then a statistical detector. Scrapy's own fallback for
undeclared pages is windows-1252, which turns every other legacy encoding
into silent mojibake.
"""

from __future__ import annotations

import codecs

from charset_normalizer import from_bytes
from w3lib.encoding import html_body_declared_encoding, http_content_type_encoding, read_bom, resolve_encoding

DETECT_BYTES = 64 * 1024  # enough text for a confident guess, bounded cost


def _usable(name: str | None) -> str | None:
    if not name:
        return None
    resolved = resolve_encoding(name)
    if not resolved:
        return None
    try:
        codecs.lookup(resolved)
    except LookupError:
        return None
    return resolved


def declared_encoding(body: bytes, content_type: str | None) -> tuple[str | None, str]:
    """The encoding the response declares, and where it was declared."""
    bom, _ = read_bom(body)
    if bom:
        return _usable(bom), "bom"
    header = _usable(http_content_type_encoding(content_type)) if content_type else None
    if header:
        return header, "header"
    meta = _usable(html_body_declared_encoding(body))
    if meta:
        return meta, "meta"
    return None, "none"


def decode_html(body: bytes, content_type: str | None = None) -> tuple[str, str, str]:
    """Return (text, encoding, how it was chosen). Never raises on bad bytes."""
    encoding, how = declared_encoding(body, content_type)
    if encoding is None:
        try:
            return body.decode("utf-8"), "utf-8", "utf-8"
        except UnicodeDecodeError:
            best = from_bytes(body[:DETECT_BYTES]).best()
            encoding = _usable(best.encoding) if best is not None else None
            encoding, how = (encoding, "detected") if encoding else ("cp1252", "fallback")
    if encoding == "utf-8" and how != "bom":
        try:
            return body.decode("utf-8"), "utf-8", how
        except UnicodeDecodeError:  # mislabelled legacy page: trust the bytes, not the label
            best = from_bytes(body[:DETECT_BYTES]).best()
            guess = _usable(best.encoding) if best is not None else None
            if guess and guess != "utf-8":
                encoding, how = guess, "detected"
    if encoding in ("ascii", "us-ascii"):
        encoding = "cp1252"  # a superset; pages that say ascii rarely are
    text = body.decode(encoding, errors="replace")
    if how == "bom":
        text = text.lstrip("\ufeff")
    return text, encoding, how
