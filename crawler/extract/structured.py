"""Machine-readable metadata: JSON-LD, OpenGraph / ``article:*`` and other ``<meta>`` tags.

Publishers fill these for search engines and social cards, so they are the most
reliable source for dates, authors, tags and images; the visible markup only
fills the gaps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lxml.html import HtmlElement

ARTICLE_TYPES = frozenset(
    {
        "article", "newsarticle", "reportagenewsarticle", "analysisnewsarticle", "opinionnewsarticle",
        "reviewnewsarticle", "backgroundnewsarticle", "askpublicnewsarticle", "blogposting",
        "liveblogposting", "socialmediaposting", "scholarlyarticle", "techarticle", "report",
        "satiricalarticle", "advertisertcontentarticle", "posting",
    }
)
# page types that say "this is not one article" (WebSite/WebPage sit on article pages too)
LISTING_TYPES = frozenset({"collectionpage", "itemlist", "profilepage", "searchresultspage", "aboutpage",
                           "contactpage"})
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(slots=True)
class Structured:
    """What the page declares about itself (raw strings; parsing happens later)."""

    types: set[str] = field(default_factory=set)  # lowercase @type values of all JSON-LD nodes
    article: dict[str, Any] | None = None  # the Article-ish JSON-LD node
    meta: dict[str, list[str]] = field(default_factory=dict)  # lowercase name/property -> contents
    site_name: str | None = None  # name of a WebSite / publisher Organization node
    canonical: str | None = None
    html_lang: str | None = None


def _types(node: dict[str, Any]) -> set[str]:
    value = node.get("@type")
    values = value if isinstance(value, list) else [value]
    return {v.rsplit("/", 1)[-1].lower() for v in values if isinstance(v, str)}


def _walk(data: Any, depth: int = 0) -> Iterator[dict[str, Any]]:
    """Every dict node of a JSON-LD document: lists, ``@graph`` and ``mainEntity(OfPage)``."""
    if depth > 6:
        return
    if isinstance(data, list):
        for item in data:
            yield from _walk(item, depth + 1)
    elif isinstance(data, dict):
        yield data
        for key in ("@graph", "mainEntity", "mainEntityOfPage", "hasPart", "itemListElement"):
            if key in data and isinstance(data[key], (dict, list)):
                yield from _walk(data[key], depth + 1)


def _load_json(text: str) -> Any:
    text = text.strip()
    if text.startswith("<!--"):
        text = text.removeprefix("<!--").removesuffix("-->")
    text = text.strip().rstrip(";")
    try:
        return json.loads(text)
    except ValueError:
        try:
            return json.loads(_CONTROL.sub(" ", text), strict=False)
        except ValueError:
            return None


def read_structured(tree: HtmlElement) -> Structured:
    """Collect JSON-LD nodes and meta tags in one pass over ``<script>``/``<meta>``/``<link>``."""
    out = Structured()
    candidates: list[dict[str, Any]] = []
    for script in tree.iter("script"):
        if (script.get("type") or "").strip().lower() != "application/ld+json" or not script.text:
            continue
        for node in _walk(_load_json(script.text)):
            types = _types(node)
            out.types |= types
            if types & ARTICLE_TYPES:
                candidates.append(node)
            elif types & {"website", "organization", "newsmediaorganization"}:
                name = node.get("name")
                # the WebSite name wins over an Organization's (legal names are often longer)
                if isinstance(name, str) and name.strip() and ("website" in types or not out.site_name):
                    out.site_name = name.strip()
    if candidates:
        # the richest Article node wins (some pages carry a stub next to the real one)
        out.article = max(candidates, key=lambda n: (bool(n.get("headline")), len(n)))
    for meta in tree.iter("meta"):
        key = (meta.get("property") or meta.get("name") or meta.get("itemprop") or "").strip().lower()
        content = meta.get("content")
        if key and content is not None and content.strip():
            out.meta.setdefault(key, []).append(content.strip())
    for link in tree.iter("link"):
        rel = (link.get("rel") or "").lower().split()
        if "canonical" in rel and link.get("href", "").strip():
            out.canonical = link.get("href").strip()
            break
    root = tree.getroottree().getroot()
    lang = root.get("lang") or root.get("xml:lang")
    out.html_lang = lang.strip() if lang and lang.strip() else None
    return out


def meta_first(data: Structured, *keys: str) -> str | None:
    """The first non-empty meta content among ``keys`` (in priority order)."""
    for key in keys:
        values = data.meta.get(key)
        if values:
            return values[0]
    return None


def meta_all(data: Structured, *keys: str) -> list[str]:
    for key in keys:
        values = data.meta.get(key)
        if values:
            return list(values)
    return []


def ld_text(value: Any) -> str | None:
    """A JSON-LD value as text: strings as-is, ``{"name"|"@value"|"url": …}`` unwrapped."""
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, dict):
        value = value.get("name") or value.get("@value") or value.get("url") or value.get("@id")
    if isinstance(value, (int, float)):
        value = str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def ld_names(value: Any) -> list[str]:
    """Author-like values: a string, a Person/Organization dict, or a list of those."""
    items = value if isinstance(value, list) else [value]
    names: list[str] = []
    for item in items:
        if isinstance(item, dict):
            name = item.get("name")
            if isinstance(name, list):
                name = " ".join(n for n in name if isinstance(n, str))
            if not name and (item.get("givenName") or item.get("familyName")):
                name = f"{item.get('givenName', '')} {item.get('familyName', '')}"
            if isinstance(name, str) and name.strip():
                names.append(name.strip())
        elif isinstance(item, str) and item.strip():
            names.append(item.strip())
    return names


def ld_image(value: Any) -> str | None:
    if isinstance(value, list):
        for item in value:
            found = ld_image(item)
            if found:
                return found
        return None
    if isinstance(value, dict):
        return ld_text(value.get("url") or value.get("contentUrl") or value.get("@id"))
    return ld_text(value)


def ld_keywords(value: Any) -> list[str]:
    if isinstance(value, str):
        return [k.strip() for k in value.split(",") if k.strip()]
    if isinstance(value, list):
        out: list[str] = []
        for item in value:
            text = ld_text(item)
            if text:
                out.append(text)
        return out
    return []
