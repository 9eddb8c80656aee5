"""Pure article extraction: (html, url) -> fields, no Scrapy, testable offline.

Sources are layered from most to least trustworthy: per-source overrides,
JSON-LD, OpenGraph/``article:*``/other meta, visible markup, then trafilatura
for the body and htmldate for a missing date. The HTML is parsed once and the
tree is shared; non-article pages skip the (expensive) body extraction.
Values are raw here; ``pipelines.clean.clean_fields`` normalises them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import urljoin, urlsplit

from lxml.html import HtmlElement

from crawler.extract import markup
from crawler.extract.body import blocks_text, extract_body, find_container
from crawler.extract.dates import (
    ShownDate,
    ensure_aware,
    headline_anchor,
    labelled_dates,
    parse_any,
    parse_hint,
    prefer_shown,
    publication_day,
    refine_with_hints,
    resolve_published,
    shown_dates,
    shown_in,
    url_date,
)
from crawler.extract.parse import parse_html
from crawler.extract.structured import (
    LISTING_TYPES,
    Structured,
    ld_image,
    ld_keywords,
    ld_names,
    ld_text,
    meta_all,
    meta_first,
    read_structured,
)

__all__ = ["Page", "extract_article", "extract_page"]

_FIELDS = ("url", "canonical_url", "title", "subtitle", "body", "authors", "published_at", "modified_at",
           "language", "section", "tags", "image_url", "site_name")
_LISTING_URL = re.compile(r"/(?:tags?|topics?|authors?|category|categories|section|page|search|archive)/", re.I)
_ARTICLE_SCORE = 3


@dataclass(slots=True)
class Page:
    """One extracted page: the article fields and why it was (not) taken as an article."""

    is_article: bool
    fields: dict[str, Any]
    signals: list[str] = field(default_factory=list)
    # the publication day in the publisher's calendar ("YYYY-MM-DD"): the URL's date when it
    # agrees with published_at within a day (a UTC instant can fall on the next day), else
    # published_at's own date in its own zone
    published_day: str | None = None


# -- overrides ------------------------------------------------------------------------


def _select(tree: HtmlElement, selector: str) -> list[Any]:
    """XPath when the selector starts with ``/`` or ``(``, else CSS."""
    sel = selector.strip()
    if sel.startswith(("/", "(")):
        result = tree.xpath(sel)
        return result if isinstance(result, list) else [result]
    return list(tree.cssselect(sel))


def _as_text(value: Any) -> str:
    if isinstance(value, HtmlElement):
        return markup.text_of(value)
    return markup.norm(str(value))


def _apply_overrides(tree: HtmlElement, overrides: Mapping[str, str], signals: list[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for key, selector in overrides.items():
        if key not in ("body", "title", "authors", "published_at") or not selector:
            continue
        try:
            matches = _select(tree, selector)
        except Exception as exc:  # a bad selector in sources.toml must not kill the crawl
            signals.append(f"override:{key}:error:{type(exc).__name__}")
            continue
        if not matches:
            signals.append(f"override:{key}:no-match")
            continue
        if key == "title":
            found["title"] = _as_text(matches[0]) or None
        elif key == "authors":
            found["authors"] = [t for t in (_as_text(m) for m in matches) if t]
        elif key == "published_at":
            m = matches[0]
            raw = (m.get("datetime") or m.get("content") or markup.text_of(m)) if isinstance(
                m, HtmlElement) else str(m)
            found["published_at"] = parse_any(raw)
        else:
            elements = [m for m in matches if isinstance(m, HtmlElement)]
            texts = blocks_text(elements) if elements else [_as_text(m) for m in matches]
            found["body"] = "\n\n".join(t for t in texts if t)
        signals.append(f"override:{key}")
    return found


# -- dates ------------------------------------------------------------------------


def paywalled(article: Mapping[str, Any], content_tier: str | None = None) -> bool | None:
    """Whether the page says its text is behind a paywall: schema.org ``isAccessibleForFree`` on the
    article or one of its parts (Google's paywalled-content markup), or ``article:content_tier``
    "locked". None when the page does not say: most pages do not."""
    values = [article.get("isAccessibleForFree")]
    parts = article.get("hasPart")
    for part in parts if isinstance(parts, list) else [parts]:
        if isinstance(part, Mapping):
            values.append(part.get("isAccessibleForFree"))
    flags = [str(v).strip().lower() for v in values if v is not None and not isinstance(v, (dict, list))]
    if any(flag in ("false", "0", "no") for flag in flags) or (content_tier or "").strip().lower() == "locked":
        return True
    if any(flag in ("true", "1", "yes") for flag in flags):
        return False
    return None


def _pick_date(candidates: list[datetime | None], zone: tzinfo | None = None) -> datetime | None:
    """First candidate; a naive one borrows the zone of an aware candidate with the same wall time,
    else it is in `zone` (``ensure_aware``)."""
    values = [c for c in candidates if c is not None]
    if not values:
        return None
    top = values[0]
    if top.tzinfo is not None:
        return top
    for other in values[1:]:
        if other.tzinfo is not None and other.replace(tzinfo=None) == top:
            return other
    for other in values[1:]:
        if other.tzinfo is not None and other.date() == top.date() and top.time() == datetime.min.time():
            return other
    return ensure_aware(top, zone)


# -- classification ---------------------------------------------------------------------


def _classify(url: str, data: Structured, h1s: list[HtmlElement], tree: HtmlElement, body_chars: int,
              has_date: bool, has_byline: bool, signals: list[str]) -> bool:
    """Score article evidence against listing evidence; every reason goes to ``signals``."""
    score = 0

    def add(points: int, reason: str) -> None:
        nonlocal score
        score += points
        signals.append(f"{reason}({points:+d})")

    if data.article is not None:
        add(3, "jsonld:" + (ld_text(data.article.get("@type")) or "Article"))
    elif data.types & LISTING_TYPES:
        add(-2, "jsonld:listing")
    og_type = (meta_first(data, "og:type") or "").lower()
    if og_type == "article":
        add(2, "og:type=article")
    elif og_type in ("website", "profile", "book", "video.other"):
        add(-1, f"og:type={og_type}")
    if meta_first(data, "article:published_time"):
        add(1, "meta:article:published_time")
    if len(h1s) == 1:
        add(1, "single-h1")
    elif len(h1s) > 1:
        add(-1, f"h1x{len(h1s)}")
    if body_chars >= 500:
        add(2, f"paragraph-text:{body_chars}")
        if body_chars >= 1500:
            add(1, "paragraph-text:long")
        if body_chars >= 3000:
            add(1, "paragraph-text:very-long")
    if has_date:
        add(1, "date")
    if has_byline:
        add(1, "byline")
    teasers = 0
    for el in tree.iter("article"):
        if el.find(".//h2/a") is not None or el.find(".//h3/a") is not None or "teaser" in (el.get("class") or ""):
            teasers += 1
    if teasers >= 3:
        add(-4, f"teasers:{teasers}")
    elif teasers:
        add(-1, f"teasers:{teasers}")
    path = urlsplit(url).path
    if path in ("", "/") or _LISTING_URL.search(path):
        add(-2, "url:listing-like")
    decided = score >= _ARTICLE_SCORE
    signals.append(f"score={score}")
    return decided


# -- main -------------------------------------------------------------------------


def extract_page(html: str | bytes, url: str, *, encoding: str | None = None,
                 overrides: Mapping[str, str] | None = None, assume_article: bool = False,
                 hints: Mapping[str, Any] | None = None, zone: tzinfo | None = None) -> Page:
    """Extract the article fields of one page (raw: clean them with ``clean_fields``).

    ``assume_article``: the caller already knows the page is an article (a user handing
    in a page, a benchmark); classification is still recorded in ``signals`` but the body
    is always extracted.

    ``hints``: what the crawler learnt about the URL besides the page, e.g.
    ``{"published_at": <news-sitemap publication_date or feed pubDate>, "modified_at": <sitemap
    lastmod or the HTTP Last-Modified header>}`` (datetimes or strings: ISO 8601, RFC 2822).
    A hint never overrides the page: it only adds the precision the page lacks, when the
    page's own date agrees with it (same minute for a minute-precision date, same day for a
    day-only date); a ``published_at`` hint stands in when the page has no date. See
    ``crawler.extract.dates.refine_with_hints``. ``{"fetched_at": …}``: no publication date
    after it (default: now) is believed.

    ``zone``: where the site prints times without a zone (a source's ``timezone``); default UTC.
    """
    tree = parse_html(html, encoding)
    signals: list[str] = []
    fields: dict[str, Any] = dict.fromkeys(_FIELDS)
    fields["url"] = url
    fields["authors"] = []
    fields["tags"] = []
    forced = _apply_overrides(tree, overrides, signals) if overrides else {}

    data = read_structured(tree)
    art = data.article or {}

    canonical = data.canonical or meta_first(data, "og:url")
    fields["canonical_url"] = urljoin(url, canonical) if canonical else None

    # title
    h1s = markup.headlines(tree)
    declared_titles = [ld_text(art.get("headline")), meta_first(data, "og:title", "twitter:title"),
                       ld_text(art.get("name")), meta_first(data, "parsely-title", "sailthru.title", "dc.title")]
    title_tag = tree.find(".//title")
    if title_tag is not None and markup.text_of(title_tag):
        declared_titles.append(markup.text_of(title_tag))
    title, title_el = markup.pick_title(h1s, declared_titles)
    fields["title"] = forced.get("title") or title

    # subtitle
    description = meta_first(data, "description", "og:description", "twitter:description") or ld_text(
        art.get("description"))
    subtitle, subtitle_el = markup.find_subtitle(title_el, fields["title"], description)
    fields["subtitle"] = subtitle

    region = _region(title_el, tree)

    # authors
    byline_names, byline_nodes = markup.find_authors(tree if region is None else region, tree if region is None
                                                     else region)
    ld_authors = ld_names(art.get("author") or art.get("creator"))
    if ld_authors and _all_organizations(art.get("author")) and byline_names:
        ld_authors = []
    meta_authors = [a for a in meta_all(data, "article:author", "author", "parsely-author", "sailthru.author",
                                        "dc.creator", "dcterms.creator", "byl") if not _is_url(a)]
    fields["authors"] = forced.get("authors") or ld_authors or byline_names or meta_authors

    # dates
    scope = region if region is not None else tree
    time_pub, time_mod = markup.find_times(scope)
    shown_pub, shown_mod = markup.find_visible_dates(scope)
    vis_pub, vis_mod = (shown_pub, shown_mod) if time_pub is None else (None, None)
    meta_pub = [parse_any(v) for v in (
        meta_first(data, "article:published_time"), meta_first(data, "og:published_time", "published_time"),
        meta_first(data, "datepublished", "pubdate", "publishdate", "publish-date", "date", "dc.date",
                   "dc.date.issued", "dcterms.created", "dcterms.issued", "parsely-pub-date", "sailthru.date",
                   "article.published", "cxenseparse:recs:publishtime"))]
    ld_pub = parse_any(ld_text(art.get("datePublished")))
    # microdata only matters without JSON-LD/article:published_time (and costs a whole-tree scan)
    micro_pub = None if (ld_pub or meta_pub[0] or meta_pub[1]) else _microdata_published(tree)
    declared = [ld_pub, *meta_pub, micro_pub, parse_any(ld_text(art.get("dateCreated")))]
    # a naive declared date borrows the zone of a markup date with the same wall time
    declared_pub = _pick_date([*declared, time_pub, vis_pub], zone) if any(declared) else None
    markup_pubs = [_pick_date([c], zone) for c in (time_pub, vis_pub) if c is not None]
    published = declared_pub or (markup_pubs[0] if markup_pubs else None)
    declared_mod = _pick_date([parse_any(ld_text(art.get("dateModified"))),
                               parse_any(meta_first(data, "article:modified_time", "og:updated_time",
                                                    "dcterms.modified", "last-modified", "article.updated"))], zone)
    modified = declared_mod or _pick_date([time_mod, vis_mod], zone)
    date_forced = bool(forced.get("published_at"))
    if date_forced:
        published = forced["published_at"]
        signals.append("date:override")

    # the rest of the metadata
    fields["language"] = (ld_text(art.get("inLanguage")) or data.html_lang
                          or meta_first(data, "og:locale", "content-language", "language", "dc.language"))
    section = art.get("articleSection")
    fields["section"] = ld_text(section) or meta_first(data, "article:section", "parsely-section",
                                                       "sailthru.section", "section")
    tags = ld_keywords(art.get("keywords")) or meta_all(data, "article:tag")
    if not tags:
        raw = meta_first(data, "news_keywords", "parsely-tags", "sailthru.tags")
        tags = [t.strip() for t in (raw or "").split(",") if t.strip()]
    # broken markup can close the <article> before its tag list: then look page-wide
    fields["tags"] = tags or markup.find_tags(scope) or (markup.find_tags(tree) if scope is not tree else [])
    image = meta_first(data, "og:image", "og:image:url", "og:image:secure_url") or ld_image(art.get("image")) \
        or meta_first(data, "twitter:image", "twitter:image:src")
    fields["image_url"] = urljoin(url, image) if image else None
    publisher = art.get("publisher")
    fields["site_name"] = (meta_first(data, "og:site_name", "application-name")
                           or (ld_text(publisher) if isinstance(publisher, (dict, str)) else None)
                           or data.site_name or _site_from_title(tree, title_tag))

    fields["paywalled"] = paywalled(art, meta_first(data, "article:content_tier"))

    # classify before the expensive part
    container, container_chars = find_container(tree)
    is_article = _classify(url, data, h1s, tree, container_chars, bool(published), bool(byline_names or
                                                                                       ld_authors), signals)
    if assume_article and not is_article:
        signals.append("assumed-article")
        is_article = True
    if forced.get("body") is not None:
        fields["body"] = forced["body"]
        is_article = is_article or bool(forced["body"])
    elif is_article:
        if not date_forced:
            body_el = tree.find("body")
            root = body_el if body_el is not None else tree
            day_first = _day_first(data.html_lang or fields["language"])

            def head() -> list[ShownDate]:
                anchor = title_el if title_el is not None else headline_anchor(root, fields["title"])
                if anchor is None and len(h1s) == 1:
                    anchor = h1s[0]  # the one headline on the page, though it reads unlike the declared title
                return shown_dates(root, anchor, day_first)

            # JSON-LD datePublished / article:published_time / microdata name the publication; a bare
            # "date" or "dc.date" meta is often the page's build or index date
            weak = not any((ld_pub, meta_pub[0], meta_pub[1], micro_pub))
            published = resolve_published(declared_pub, markup_pubs, tree, url, signals, shown=head,
                                           labelled=lambda: labelled_dates(root, day_first), weak=weak,
                                           latest=parse_hint((hints or {}).get("fetched_at")))
            published = ensure_aware(published, zone)
            others = [*declared, modified, time_mod, vis_mod]
            if published is not None and url_date(url) is None and any(
                    c is not None and c.date() != published.date() for c in [*others, *markup_pubs]):
                text = _visible_text(tree)
                # markup dates only count when printed by the headline (related lists print dates too)
                near = _near_headline(text, fields["title"])
                others += [c for c in markup_pubs if near and shown_in(near, c.date())]
                published = prefer_shown(published, others, text, signals)
            if "date:year-only" in signals and "date:shown" not in signals:
                published = None
        drop = [n for n in (subtitle_el, *byline_nodes) if n is not None]
        result = extract_body(tree, url, container=container, score=container_chars, drop=drop,
                              title=fields["title"], subtitle=subtitle)
        fields["body"] = result.text
        if result.kicker:
            signals.append("kicker")
            if not fields["subtitle"]:
                fields["subtitle"] = result.kicker
    if hints and not date_forced:
        published, modified = refine_with_hints(published, modified, hints, signals)
    fields["published_at"] = published
    fields["modified_at"] = modified
    return Page(is_article=is_article, fields=fields, signals=signals,
                published_day=publication_day(published, url, [time_pub, shown_pub]))


def extract_article(html: str | bytes, url: str, **kw: Any) -> dict[str, Any]:
    """Convenience: ``extract_page(...).fields``."""
    return extract_page(html, url, **kw).fields


def _microdata_published(tree: HtmlElement) -> datetime | None:
    """schema.org microdata ``itemprop="datePublished"`` on an element (``<meta>`` ones are read with the
    other meta): the first one outside comments and related-story lists."""
    for el in tree.xpath('//*[@itemprop="datePublished"][not(self::meta)]'):
        if markup.inside_boilerplate_for_dates(el, tree):
            continue
        value = parse_any(el.get("datetime") or el.get("content") or markup.text_of(el))
        if value is not None:
            return value
    return None


def _day_first(lang: str | None) -> bool:
    """Numeric dates are day-first (03/06/2024 = 3 June) everywhere but on US-English pages."""
    lang = (lang or "").lower().replace("_", "-")
    return not (lang.startswith("en") and lang[3:5] in ("", "us"))


def _visible_text(tree: HtmlElement) -> str:
    """The page's reader-visible text, lower-cased and whitespace-collapsed (no head, scripts, styles)."""
    body = tree.find("body")
    parts: list[str] = []
    for el in (body if body is not None else tree).iter():
        if not isinstance(el.tag, str) or el.tag in ("script", "style", "noscript", "template"):
            if el.tail:
                parts.append(el.tail)
            continue
        if el.text:
            parts.append(el.text)
        if el.tail:
            parts.append(el.tail)
    return " ".join(" ".join(parts).split()).lower()


def _near_headline(text: str, title: str | None, span: int = 400) -> str:
    """The visible text around the headline (where the dateline is printed), else ``""``."""
    head = markup.norm(title).lower()[:60]
    at = text.find(head) if head else -1
    return text[max(0, at - span):at + len(head) + span] if at >= 0 else ""


def _region(title_el: HtmlElement | None, tree: HtmlElement) -> HtmlElement | None:
    """Where the article's own byline/date/tags live: its ``<article>``, else ``<main>``, else the page."""
    if title_el is not None:
        node = title_el.getparent()
        while node is not None:
            if node.tag == "article" or node.get("role") == "main" or node.tag == "main":
                return node
            node = node.getparent()
    main = tree.find(".//main")
    return main


_TITLE_SUFFIX = re.compile(r"\s+[|\-–—·•»]\s+([^|\-–—·•»]{2,60})$")


def _site_from_title(tree: HtmlElement, title_tag: HtmlElement | None) -> str | None:
    """The ``<title>`` suffix, when the page's home link/logo shows the same name."""
    if title_tag is None:
        return None
    m = _TITLE_SUFFIX.search(markup.text_of(title_tag))
    if not m:
        return None
    suffix = m.group(1).strip()
    for el in tree.xpath('//a[@href="/" or contains(concat(" ", @rel, " "), " home ")]'
                         '|//*[contains(@class, "logo") or contains(@class, "site-title")]'):
        if markup.text_of(el).casefold() == suffix.casefold():
            return suffix
    return None


def _all_organizations(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return bool(items) and all(isinstance(i, dict) and str(i.get("@type", "")).lower() == "organization"
                               for i in items)


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://", "//", "www."))

