"""Visible markup: headline, standfirst, byline, dateline and tag links.

These readers work on the shared lxml tree without changing it. They are the
fallback for what JSON-LD/meta do not declare, and the only source on pages
with no structured metadata.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from lxml.html import HtmlElement

from crawler.extract.dates import parse_iso, parse_visible

# class/id tokens of page furniture: nothing inside them is article content
BOILERPLATE_TOKEN = re.compile(
    r"(?:^|[-_])(?:ads?|advert\w*|adslot|banner|share\w*|sharing|social|related\w*|see-?also|read-?more"
    r"|more-?stories|recommend\w*|newsletter|subscribe|subscription|sign-?up|comments?|comment-list"
    r"|disqus|sidebar|widgets?|most-?read|popular|trending|breadcrumbs?|pagination|pager|paywall"
    r"|promo\w*|sponsor\w*|consent|gdpr|caption|credits?|pull-?quote|pullquote|bio|author-bio|byline|dateline|tags"
    r"|tag-list|topics|meta|footer|nav|navigation|menu|cookies?|modal|popup|skip|toolbar|utility"
    r"|outbrain|taboola|teaser|teasers|screen-reader-text|sr-only|visually-hidden|print-only)(?:$|[-_])",
    re.I,
)
BOILERPLATE_TAGS = frozenset(
    {"aside", "nav", "footer", "form", "button", "select", "input", "textarea", "noscript", "iframe",
     "script", "style", "template", "svg", "figure", "figcaption", "object", "embed", "dialog"}
)
_SUBTITLE_TOKEN = re.compile(
    r"^(?:[\w-]*[-_])?(?:standfirst|sub-?title|sub-?head(?:er|line|ing)?|dek|deck|strapline|kicker"
    r"|lede|lead|summary|intro|excerpt|abstract|description|sapo|chapo)$",
    re.I,
)
_AUTHOR_TOKEN = re.compile(r"(?:^|[-_])(?:byline|by-line|author|authors|author-name|writer|contributor)s?(?:$|[-_])",
                           re.I)
_DATE_TOKEN = re.compile(
    r"(?:^|[-_])(?:date|dates|dateline|time|timestamp|published|pubdate|posted|post-date|entry-date"
    r"|meta|byline|updated|modified|article-date)(?:$|[-_])",
    re.I,
)
_UPDATED_SPLIT = re.compile(r"\b(?:last\s+)?(?:updated|modified|edited|aktualisiert)\b\s*(?:on|:)?", re.I)
_WORD = re.compile(r"\w+")
_HEADERISH = re.compile(r"header|heading|title|hero|head", re.I)


def norm(text: str | None) -> str:
    """Whitespace-collapsed text (for comparisons and short fields)."""
    return " ".join((text or "").split())


def classes(el: HtmlElement) -> str:
    return f"{el.get('class') or ''} {el.get('id') or ''}"


def is_boilerplate(el: HtmlElement) -> bool:
    """True for page furniture: by tag or by a class/id token (whole hyphen-separated word)."""
    tag = el.tag if isinstance(el.tag, str) else ""
    if tag in BOILERPLATE_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    return any(BOILERPLATE_TOKEN.search(token) for token in classes(el).split())


def inside_boilerplate(el: HtmlElement, stop: HtmlElement | None = None) -> bool:
    node = el
    while node is not None and node is not stop:
        if node.tag in ("body", "html"):
            return False
        if is_boilerplate(node):
            return True
        node = node.getparent()
    return False


def text_of(el: HtmlElement) -> str:
    return norm(el.text_content())


def headlines(tree: HtmlElement) -> list[HtmlElement]:
    """``<h1>`` elements with text, outside site chrome (logos in headers and footers)."""
    out = []
    for h1 in tree.iter("h1"):
        if not text_of(h1):
            continue
        parent = h1.getparent()
        chrome = False
        while parent is not None and parent.tag not in ("body", "html"):
            if parent.tag in ("nav", "footer", "aside") or (
                parent.tag == "header" and re.search(r"site|masthead|page-header|global", classes(parent), re.I)
            ):
                chrome = True
                break
            parent = parent.getparent()
        if not chrome:
            out.append(h1)
    return out


def _similar(a: str, b: str) -> bool:
    a, b = a.casefold(), b.casefold()
    return bool(a and b) and (a == b or a in b or b in a)


def pick_title(h1s: list[HtmlElement], declared: Iterable[str | None]) -> tuple[str | None, HtmlElement | None]:
    """The visible headline when it agrees with a declared title, else the declared one.

    The ``<h1>`` is what readers see (declared titles often carry site suffixes or
    SEO rewrites); a lone ``<h1>`` that matches nothing is still better than ``<title>``.
    """
    declared = [norm(d) for d in declared if d and norm(d)]
    for h1 in h1s:
        text = text_of(h1)
        if any(_similar(text, d) for d in declared):
            return text, h1
    if declared:
        return declared[0], None
    if h1s:
        return text_of(h1s[0]), h1s[0]
    return None, None


def _scope(h1: HtmlElement, levels: int = 3) -> HtmlElement:
    node = h1
    for _ in range(levels):
        parent = node.getparent()
        if parent is None or parent.tag in ("body", "html", "main"):
            break
        node = parent
    return node


def find_subtitle(h1: HtmlElement | None, title: str | None,
                  description: str | None) -> tuple[str | None, HtmlElement | None]:
    """The standfirst near the headline: a standfirst-like class, an ``<h2>`` straight after the
    ``<h1>`` in a header, or the description meta when the page shows it as such."""
    if h1 is None:
        return None, None
    scope = _scope(h1)
    desc = norm(description)
    title_n = norm(title)
    seen_h1 = False
    paragraphs = 0
    for el in scope.iter():
        if el is h1:
            seen_h1 = True
            continue
        if not isinstance(el.tag, str) or el.tag in ("h1", "a", "time", "img"):
            continue
        if seen_h1 and el.tag == "p":
            paragraphs += 1
            if paragraphs > 12:
                break
        by_class = el.get("itemprop") in ("alternativeHeadline", "description") or any(
            _SUBTITLE_TOKEN.match(tok) for tok in classes(el).split())
        text = None
        if by_class:
            text = text_of(el)
        elif not seen_h1:
            continue
        elif el.tag == "h2" and el.getprevious() is h1 and _HEADERISH.search(
                f"{classes(el.getparent())} {el.getparent().tag}"):
            text = text_of(el)
        elif desc and el.tag in ("p", "div", "h2") and el.find("p") is None:
            candidate = text_of(el)
            if candidate == desc:
                text = candidate
        if not text or len(_WORD.findall(text)) < 4 or text == title_n or len(text) > 600:
            continue
        link = el.find(".//a")
        if link is not None and len(text_of(link)) > len(text) / 2:
            continue
        return text, el
    return None, None


def _link_texts(els: Iterable[HtmlElement]) -> list[str]:
    out = []
    for el in els:
        name = el.find('.//*[@itemprop="name"]')
        text = text_of(name if name is not None else el) or norm(el.get("content"))
        if text and text not in out:
            out.append(text)
    return out


def find_authors(tree: HtmlElement, region: HtmlElement) -> tuple[list[str], list[HtmlElement]]:
    """Names from the byline: author links first, else the byline text ("By X and Y")."""
    nodes: list[HtmlElement] = []
    links = [
        el for el in region.xpath('.//a[contains(concat(" ", normalize-space(@rel), " "), " author ")]'
                                  '|.//*[@itemprop="author"]')
        if not inside_boilerplate(el.getparent(), region) or _in_byline(el)
    ]
    if links:
        names = _link_texts(links)
        if names:
            return names, links
    for el in region.iter():
        if not isinstance(el.tag, str) or el.tag in ("body", "html", "main", "article"):
            continue
        if any(_AUTHOR_TOKEN.search(tok) for tok in classes(el).split()):
            text = text_of(el)
            if 2 < len(text) < 200:
                nodes.append(el)
                return [text], nodes
    return [], nodes


def _in_byline(el: HtmlElement) -> bool:
    node = el.getparent()
    for _ in range(3):
        if node is None:
            return False
        if any(_AUTHOR_TOKEN.search(tok) for tok in classes(node).split()):
            return True
        node = node.getparent()
    return False


def find_times(region: HtmlElement) -> tuple[datetime | None, datetime | None]:
    """Published/modified from ``<time datetime>`` (and itemprop dates) in the article region."""
    published = modified = None
    for el in region.xpath('.//time[@datetime]|.//*[@itemprop="datePublished" or @itemprop="dateModified"]'):
        value = el.get("datetime") or el.get("content") or text_of(el)
        parsed = parse_iso(value) or parse_visible(value)
        if parsed is None:
            continue
        hint = f"{el.get('itemprop') or ''} {el.get('class') or ''}".lower()
        prev = (el.getprevious().tail if el.getprevious() is not None else el.getparent().text) or ""
        is_mod = "modif" in hint or "updat" in hint or bool(_UPDATED_SPLIT.search(prev[-30:]))
        if is_mod:
            modified = modified or parsed
        elif "comment" not in hint and not inside_boilerplate_for_dates(el, region):
            published = published or parsed
    return published, modified


def inside_boilerplate_for_dates(el: HtmlElement, stop: HtmlElement) -> bool:
    """Date widgets sit in meta/byline boxes, so only comments, teasers and asides disqualify."""
    node = el.getparent()
    while node is not None and node is not stop:
        if node.tag in ("aside", "footer", "nav") or re.search(
            r"comment|teaser|related|sidebar|most-?read|recommend", classes(node), re.I
        ):
            return True
        node = node.getparent()
    return False


def find_visible_dates(region: HtmlElement) -> tuple[datetime | None, datetime | None]:
    """Dates printed as text in date/dateline/meta boxes: "3 June 2024, 16:15 EST", "Updated …"."""
    published = modified = None
    for el in region.iter():
        if not isinstance(el.tag, str) or el.tag in ("body", "html", "main", "article"):
            continue
        if not any(_DATE_TOKEN.search(tok) for tok in classes(el).split()):
            continue
        if inside_boilerplate_for_dates(el, region):
            continue
        text = text_of(el)
        if not text or len(text) > 300:
            continue
        parts = _UPDATED_SPLIT.split(text, maxsplit=1)
        head = parts[0]
        if len(parts) == 1 and _UPDATED_SPLIT.match(text):
            head = ""
        if head and published is None:
            published = parse_visible(head)
        if len(parts) > 1 and modified is None:
            modified = parse_visible(parts[1])
        if published is not None and modified is not None:
            break
    return published, modified


def find_tags(region: HtmlElement) -> list[str]:
    """``rel=tag`` link texts, outside sidebars, teasers and comments."""
    out: list[str] = []
    for a in region.xpath('.//a[contains(concat(" ", normalize-space(@rel), " "), " tag ")]'):
        if inside_boilerplate_for_dates(a, region):
            continue
        text = text_of(a)
        if text and text not in out:
            out.append(text)
    return out
