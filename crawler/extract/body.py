"""Article body: find the paragraph container, strip page furniture, let trafilatura read it.

Running trafilatura on the whole page costs ~2 ms and lets it guess the main
block; handing it only the container that holds most paragraph text (with
asides, ads, share bars, captions and pull quotes already cut) is cheaper and
gives it less to get wrong. The page's own tree is consumed: call this last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.html
from lxml import etree
from lxml.html import HtmlElement

from crawler.extract.markup import BOILERPLATE_TAGS, BOILERPLATE_TOKEN, classes, norm, text_of

_BLOCK_TAGS = ("p", "h2", "h3", "h4", "h5", "h6", "li", "pre", "blockquote", "dd", "dt", "td")
_KEEP_PREFIX = re.compile(r"^(?:has|with|no|is|show|enable|page|layout|template|single|body|type|format)[-_]",
                          re.I)
_MIN_P = 25
_MIN_FALLBACK_CHARS = 250
_MIN_RUN = 150  # a body without <p> still has long text runs somewhere
# furniture that can hold long paragraphs of its own (reader comments): never a broken wrapper
_NEVER_CONTENT = re.compile(r"comment|disqus|reply|replies|forum", re.I)
# call-to-action blocks (donation letters, sign-up cards) carry prose but are never the article
_NEVER_WRAPPER = re.compile(r"(?:^|[-_\s])(?:cta|call-?to-?action|donat\w*|support-?us|membership"
                            r"|newsletter|subscribe|subscription|paywall|promo\w*)(?:$|[-_\s])", re.I)


@dataclass(slots=True)
class BodyResult:
    text: str
    kicker: str | None  # a heading/bold line at the top of the body (a subheadline)
    container_chars: int  # paragraph text in the chosen container (an is_article signal)


def _furniture(el: HtmlElement) -> bool:
    """Page furniture by tag or class/id token; layout flags such as ``has-sidebar`` do not count.

    A furniture-classed element holding several long paragraphs is a wrapper that
    broken markup (unclosed ``<div>``s) stretched over the article, not furniture.
    """
    if el.tag in BOILERPLATE_TAGS:
        return True
    if el.get("hidden") is not None or el.get("aria-hidden") == "true":
        return True
    if not _furniture_class(el):
        return False
    if _NEVER_CONTENT.search(classes(el)):
        return True
    return not _holds_prose(el)


def _furniture_class(el: HtmlElement) -> bool:
    return any(BOILERPLATE_TOKEN.search(tok) and not _KEEP_PREFIX.match(tok) for tok in classes(el).split())


def _holds_prose(el: HtmlElement, needed: int = 2) -> bool:
    found = 0
    for p in el.iter("p"):
        if len(p.text_content()) > 80 and p.getparent() is not None and p.getparent().tag != "li":
            found += 1
            if found >= needed:
                return True
    return False


def _in_furniture(el: HtmlElement) -> bool:
    node = el
    while node is not None and node.tag not in ("body", "html"):
        if node.tag not in ("article", "main") and _furniture(node):
            return True
        node = node.getparent()
    return False


def paragraph_parents(root: HtmlElement) -> list[tuple[HtmlElement, int]]:
    """Elements ranked by the non-link text of their ``<p>`` children (readability's core idea)."""
    scores: dict[HtmlElement, int] = {}
    for p in root.iter("p"):
        text = p.text_content()
        n = len(text.strip())
        if n < _MIN_P:
            continue
        for a in p.iter("a"):
            n -= len(a.text_content())
        if n <= _MIN_P // 2:
            continue
        parent = p.getparent()
        if parent is not None:
            scores[parent] = scores.get(parent, 0) + n
    # old-style bodies: text runs separated by <br> directly inside a <div>/<td>
    for br in root.iter("br"):
        tail = br.tail
        if tail and len(tail) > _MIN_P:
            parent = br.getparent()
            if parent is not None and parent.tag in ("div", "td", "section", "article", "font", "span"):
                scores[parent] = scores.get(parent, 0) + len(tail.strip())
    ranked = sorted(scores.items(), key=lambda kv: -kv[1])
    return [(el, score) for el, score in ranked[:12] if not _in_furniture(el)]


def _ancestors(el: HtmlElement) -> list[HtmlElement]:
    out = []
    while el is not None:
        out.append(el)
        el = el.getparent()
    return out


def find_container(root: HtmlElement) -> tuple[HtmlElement | None, int]:
    """The best paragraph parent, widened to the common ancestor of other strong parents.

    Widening handles bodies split by ads or widgets into several blocks, and
    broken markup that closes the article early and strands the rest.
    """
    ranked = paragraph_parents(root)
    if not ranked:
        return None, 0
    best, best_score = ranked[0]
    total = best_score
    container = best
    best_chain = _ancestors(best)
    own_article = next((a for a in best_chain if a.tag == "article"), None)
    in_list = any(a.tag == "li" for a in best_chain)
    for el, score in ranked[1:]:
        chain = _ancestors(container)
        el_chain = _ancestors(el)
        # another <article> (a teaser of another post) or a list item (a related-stories list)
        # is not the body continuing
        other_article = next((a for a in el_chain if a.tag == "article"), None)
        if own_article is not None and other_article is not None and other_article is not own_article \
                and other_article not in best_chain:
            continue
        if not in_list and any(a.tag == "li" for a in el_chain[:6]):
            continue
        # a close ancestor that holds paragraphs itself: the body continues around a nested block
        if el in chain[1:3]:
            container = el
            total += score
            continue
        if score < 0.3 * best_score:
            continue
        node = el
        while node is not None and node not in chain:
            node = node.getparent()
        if node is None or node.tag == "html":
            continue
        container = node
        total += score
    return container, total


def _drop(el: HtmlElement) -> None:
    if el.getparent() is not None:
        el.drop_tree()  # keeps the tail text


def prune(container: HtmlElement, *, drop: list[HtmlElement], title: str | None, subtitle: str | None) -> None:
    """Cut furniture, headline, standfirst, byline and repeats of title/subtitle from the container."""
    total = 0
    removals: list[HtmlElement] = []
    for el in container.iterdescendants():
        if not isinstance(el.tag, str):
            if isinstance(el, etree._Comment):
                removals.append(el)
            continue
        if el.tag in ("h1", "header"):
            removals.append(el)
        elif _furniture(el):
            if el.tag not in BOILERPLATE_TAGS and not total:
                total = len(container.text_content())
            if el.tag in BOILERPLATE_TAGS or len(el.text_content()) < 0.6 * total:
                removals.append(el)
        elif el.get("class") and _furniture_class(el) and _trailing_widget(el, container):
            removals.append(el)
        elif el.get("class") and _furniture_class(el):
            # a furniture-classed wrapper stretched over prose by broken markup: unclass it so
            # trafilatura's own class rules do not discard the text either
            el.attrib.pop("class", None)
            el.attrib.pop("id", None)
    removals.extend(_hover_cards(container))
    removals.extend(_link_only_paragraphs(container))
    drop_set = {id(d) for d in drop}
    for d in drop:
        if d is not container and any(a is container for a in _ancestors(d)):
            removals.append(d)
    targets = {norm(t).casefold() for t in (title, subtitle) if t}
    if targets:
        # repeats of the headline or standfirst sit at the top of the body
        for n, el in enumerate(container.iter("p", "h2", "h3", "h4", "div")):
            if n >= 6:
                break
            if id(el) in drop_set or len(el) > 3:
                continue
            if text_of(el).casefold() in targets:
                removals.append(el)
    for el in removals:
        _drop(el)


def _trailing_widget(el: HtmlElement, container: HtmlElement) -> bool:
    """A furniture-classed block after the last body paragraph (a donation or sign-up card with prose
    of its own), as opposed to a furniture-classed wrapper that broken markup stretched over the body:
    it holds a small share of the container's text and no body paragraph follows it."""
    if el.tag not in ("div", "section") or not _NEVER_WRAPPER.search(classes(el)):
        return False
    text = len(el.text_content())
    if text >= 0.5 * len(container.text_content()):
        return False
    node = el
    while node is not None and node is not container:
        for sib in node.itersiblings():
            if isinstance(sib.tag, str) and any(len(p.text_content()) > 80 for p in sib.iter("p")):
                return False
        node = node.getparent()
    return True


def _hover_cards(container: HtmlElement) -> list[HtmlElement]:
    """Hover cards inside a paragraph: an inline element right after a link, holding an image and more
    links (a person/topic card repeating the link's name with a list of other stories)."""
    found = []
    for p in container.iter("p"):
        for el in p.iterdescendants("span", "div"):
            prev = el.getprevious()
            if prev is None or prev.tag != "a" or el.find(".//img") is None:
                continue
            links = el.findall(".//a")
            if len(links) < 2:
                continue
            text = len(el.text_content().strip())
            linked = sum(len(a.text_content().strip()) for a in links)
            if text and linked >= 0.7 * text:
                found.append(el)
    return found


def _link_only_paragraphs(container: HtmlElement) -> list[HtmlElement]:
    """Paragraphs that are nothing but one link (related-story headlines dropped into the body)."""
    found = []
    for p in container.iter("p"):
        links = p.findall(".//a")
        if len(links) != 1:
            continue
        text = norm(p.text_content())
        if not text or len(text) > 160 or norm(links[0].text_content()) != text:
            continue
        href = links[0].get("href") or ""
        if href.startswith(("#", "mailto:")) or norm(href.split("://")[-1]).rstrip("/") in text:
            continue  # a footnote anchor, an address or a bare URL printed as the text
        found.append(p)
    return found


def _is_bold_only(el: HtmlElement) -> bool:
    if (el.text or "").strip():
        return False
    kids = [k for k in el if isinstance(k.tag, str) and k.tag != "br"]
    if len(kids) != 1 or kids[0].tag not in ("strong", "b"):
        return False
    return not (kids[0].tail or "").strip()


def take_kicker(container: HtmlElement) -> str | None:
    """A bold line or heading opening the body, without a closing full stop: a subheadline."""
    first = None
    for el in container.iter(*_BLOCK_TAGS):
        if text_of(el):
            first = el
            break
    if first is None or not (first.tag in ("h2", "h3", "h4") or (first.tag == "p" and _is_bold_only(first))):
        return None
    text = " ".join(_br_text(first).split())  # <br> between kicker and subheadline is a space
    if not 3 <= len(text.split()) <= 40 or text.endswith((".", ":", ";", ",")):
        return None
    following = sum(1 for el in container.iter("p") if el is not first and len(text_of(el)) > 80)
    if following < 2:
        return None
    _drop(first)
    return text


def _block_text(el: HtmlElement) -> str:
    """Text of one trafilatura output block; ``<lb/>`` becomes a line break."""
    parts: list[str] = []

    def walk(node: HtmlElement) -> None:
        if node.tag == "lb":
            parts.append("\n")
        elif node.text:
            parts.append(node.text)
        for child in node:
            walk(child)
            if child.tail:
                parts.append(child.tail)

    walk(el)
    lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _serialize_trafilatura(body: HtmlElement) -> list[str]:
    paragraphs: list[str] = []
    for child in body:
        if child.tag == "list":
            paragraphs.extend(t for t in (_block_text(item) for item in child.iter("item")) if t)
        elif child.tag == "table":
            for row in child.iter("row"):
                cells = [_block_text(c) for c in row.iter("cell")]
                line = " | ".join(c for c in cells if c)
                if line:
                    paragraphs.append(line)
        else:
            text = _block_text(child)
            if text:
                paragraphs.append(text)
    return paragraphs


def blocks_text(elements: list[HtmlElement]) -> list[str]:
    """Own serialisation: block elements in order, nested blocks not repeated; leaf text otherwise."""
    paragraphs: list[str] = []
    for root in elements:
        blocks = [b for b in root.iter(*_BLOCK_TAGS)]
        if not blocks:
            text = _br_text(root)
            if text:
                paragraphs.append(text)
            continue
        seen: set[int] = set()
        for b in blocks:
            if any(id(a) in seen for a in _ancestors(b.getparent())):
                continue
            seen.add(id(b))
            text = _br_text(b)
            if text:
                paragraphs.append(text)
    return paragraphs


def _br_text(el: HtmlElement) -> str:
    parts: list[str] = []
    for node in el.iter():
        if node.tag == "br":
            parts.append("\n")
        elif isinstance(node.tag, str) and node.text:
            parts.append(node.text)
        if node is not el and node.tail:
            parts.append(node.tail)
    lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _longest_run(root: HtmlElement) -> int:
    """Length of the longest text node outside scripts/styles (cheap evidence of prose)."""
    longest = 0
    for el in root.iter():
        if el.tag in ("script", "style", "noscript") or not isinstance(el.tag, str):
            text = el.tail
            longest = max(longest, len(text.strip()) if text else 0)
            continue
        for text in (el.text, el.tail):
            if text and len(text) > longest:
                longest = max(longest, len(text.strip()))
    return longest


def run_trafilatura(root: HtmlElement, url: str) -> list[str] | None:
    from trafilatura import bare_extraction

    try:
        doc = bare_extraction(root, url=url, fast=True, include_comments=False, include_tables=True)
    except Exception:  # trafilatura raises on degenerate trees; treat as "nothing found"
        return None
    if doc is None or getattr(doc, "body", None) is None:
        return None
    return _serialize_trafilatura(doc.body)


def extract_body(tree: HtmlElement, url: str, *, container: HtmlElement | None, score: int,
                 drop: list[HtmlElement], title: str | None, subtitle: str | None) -> BodyResult:
    """Body text with paragraphs separated by one blank line; consumes ``tree``.

    ``container``/``score`` come from :func:`find_container` (the caller already
    needed them to classify the page).
    """
    if container is None:
        body = tree.find("body")
        root = body if body is not None else tree
        if len(text_of(root)) < 400:
            return BodyResult("", None, 0)
        # no paragraph container (text in <div>/<br> runs): trafilatura reads the whole page, minus
        # headline, standfirst and byline; a few short lines then are chrome, not an article body
        if _longest_run(root) < _MIN_RUN:
            return BodyResult("", None, 0)
        for el in [*drop, *root.iter("h1")]:
            _drop(el)
        text = "\n\n".join(run_trafilatura(tree, url) or [])
        return BodyResult(text if len(text) >= _MIN_FALLBACK_CHARS else "", None, 0)
    prune(container, drop=drop, title=title, subtitle=subtitle)
    kicker = take_kicker(container)
    # an <article itemprop=articleBody> wrapper sends trafilatura down its main path, which
    # (unlike its wild-text recovery) keeps a paragraph that repeats part of another
    wrapper = lxml.html.Element("html")
    body = etree.SubElement(etree.SubElement(wrapper, "body"), "article", itemprop="articleBody")
    container.tail = None
    body.append(container)  # moves the subtree: the page tree is consumed here
    paragraphs = run_trafilatura(wrapper, url)
    own = blocks_text([container]) if paragraphs is None or not paragraphs else None
    if paragraphs is None or not paragraphs:
        paragraphs = own or []
    return BodyResult("\n\n".join(paragraphs), kicker, score)

