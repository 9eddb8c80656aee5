"""Bytes -> text -> one lxml tree, shared by every extraction step.

Decoding is done here (not by lxml) so the declared charset, a BOM, strict
UTF-8 and charset-normalizer's guess are tried in a known order.
"""

from __future__ import annotations

import codecs
import re

import lxml.html
from lxml.html import HtmlElement

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([\w:.-]+)""", re.I)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
# what browsers actually use for these labels (WHATWG encoding standard)
_ALIASES = {"iso-8859-1": "cp1252", "latin-1": "cp1252", "latin1": "cp1252", "us-ascii": "cp1252",
            "ascii": "cp1252", "iso8859-1": "cp1252", "x-user-defined": "cp1252"}


def _codec(name: str | None) -> str | None:
    if not name:
        return None
    name = name.strip().lower()
    name = _ALIASES.get(name, name)
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(data: str | bytes, encoding: str | None = None) -> str:
    """Decode page bytes: BOM, caller's encoding (HTTP header), ``<meta charset>``, UTF-8, guess."""
    if isinstance(data, str):
        return data
    for bom, name in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                      (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            return data[len(bom):].decode(name, errors="replace")
    declared = _META_CHARSET.search(data[:4096])
    for name in (_codec(encoding), _codec(declared.group(1).decode("ascii", "ignore")) if declared else None):
        if name:
            try:
                return data.decode(name)
            except UnicodeDecodeError:
                continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:200_000]).best()
        if best is not None and best.encoding:
            return data.decode(best.encoding, errors="replace")
    except ImportError:  # pragma: no cover - declared dependency
        pass
    return data.decode("cp1252", errors="replace")


_NOT_XML_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def parse_html(data: str | bytes, encoding: str | None = None) -> HtmlElement:
    """The page's tree (an empty ``<html>`` for empty or unparsable input)."""
    text = _XML_DECL.sub("", decode_html(data, encoding), count=1)
    # Characters XML cannot hold: lxml keeps some in text nodes, then refuses them on write.
    text = _NOT_XML_CHARS.sub("", text)
    if not text.strip():
        return lxml.html.document_fromstring("<html><body></body></html>")
    try:
        return lxml.html.document_fromstring(text)
    except (lxml.etree.ParserError, ValueError):
        return lxml.html.document_fromstring("<html><body></body></html>")
