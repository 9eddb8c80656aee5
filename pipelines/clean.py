"""Field cleaning: one pure entry point (``clean_fields``) and the Scrapy pipeline around it.

The crawl pipeline and the ``newsingest extract`` command both call
``clean_fields`` so a page gives the same row either way. Rules are general
(regex lists), never tuned to one page: boilerplate lines, site-name title
suffixes, byline noise, kickers at the top of the body, UTC dates, language.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from crawler.extract.dates import parse_visible

# -- text -----------------------------------------------------------------------------

_INVISIBLE = re.compile("[\u200b\u200e\u200f\u2060\ufeff\u00ad]")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except newline (incl. NBSP, thin spaces)


def clean_text(value: Any) -> str | None:
    """NFC, entities unescaped, all whitespace (incl. non-breaking) collapsed to single spaces."""
    if value is None:
        return None
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", html.unescape(str(value))))
    text = " ".join(text.split())
    return text or None


# -- body -------------------------------------------------------------------------------

_SEP = r"\s*(?:[:：\-–—|»›>•·]\s*|(?:\.{3}|…)\s*$|$)"
BOILERPLATE_LINE_PATTERNS: list[re.Pattern[str]] = [
    # "See also  Other headline", "Read more Other headline": short lines, no separator needed
    re.compile(r"^(?:see also|read more|read also|also read|more reading|further reading|read next"
               r"|recommended reading)\b.{0,200}$", re.I),
    # related-content lead-ins: "See also …", "Read more: …", "Related: …"
    re.compile(
        r"^(?:see also|read more|read also|also read|more reading|further reading|related(?: articles?| stories"
        r"| coverage| content| reading| links?| news)?|recommended(?: for you| reading| stories)?"
        r"|you (?:may|might) also (?:like|be interested in|want to read)|more on this(?: story| topic)?"
        r"|more from [\w .'’-]{1,40}|don[’']t miss|editor[’']s picks?|top stories|most read|popular now"
        r"|watch|listen|click here)" + _SEP,
        re.I,
    ),
    # ad / furniture labels standing alone
    re.compile(
        r"^(?:advertisements?|advertising|sponsored(?: content)?|promoted|paid content|ad|skip (?:ad|advertisement)"
        r"|story continues (?:below|after) (?:this )?(?:advertisement|ad)|article continues below(?: this ad)?"
        r"|continue reading(?: below| the main story)?|scroll to continue(?: with content)?|loading\W*"
        r"|share|share this(?: article| story| post| page)?|tweet|email|e-mail|print|comments?|show comments"
        r"|view comments|leave a comment|post a comment|(?:\d+ )?comments?|subscribe|sign up|log ?in|register"
        r"|back to top|top|image|photo|video|copy link|link copied)\W*$",
        re.I,
    ),
    # share / follow prompts
    re.compile(r"^(?:share|follow|like|tweet)\b.{0,80}\b(?:facebook|twitter|x|linkedin|whatsapp|e-?mail|instagram"
               r"|telegram|reddit|pinterest|social media)\b.{0,40}$", re.I),
    # newsletter / subscription prompts
    re.compile(r"^(?:sign up|subscribe|register|join|get|receive|enter your e-?mail)\b.{0,160}\b(?:newsletters?"
               r"|inbox|e-?mail|updates|briefing|alerts?|unlimited access|subscription)\b.{0,80}$", re.I),
    re.compile(r"^.{0,120}\b(?:delivered to your inbox|sign up for (?:our|the)|subscribe to (?:our|the)"
               r"|newsletter)\b.{0,120}$", re.I),
    # time stamps standing alone: "Updated at 1:23 p.m.", "Published 10:41 GMT", "Last updated: 3 hours ago"
    re.compile(r"^(?:last )?(?:updated|published|posted|modified)(?: on| at)?\s*:?\s*"
               r"(?:\d{1,2}[:.]\d\d\s*(?:[ap]\.?m\.?)?(?:\s*[A-Z]{2,4})?|\d+ (?:minutes?|hours?|days?) ago)\W*$", re.I),
    # taxonomy lines: "Filed under: Politics | Elections", "Posted in News", "Tags: a, b"
    re.compile(r"^(?:filed (?:under|in)|posted in|categor(?:y|ies)|tags?|tagged(?: with| as)?|topics?|kategorie"
               r"|schlagworte)\s*:.{0,200}$", re.I),
    # copyright / credits lines
    re.compile(r"^(?:©|\(c\)|copyright\b).{0,200}$", re.I),
    re.compile(r"^(?:photo(?:graph)?s?|image|picture|illustration|video)\s*(?:credit)?\s*:.{0,120}$", re.I),
    # paywall and unavailable-content notices
    re.compile(r"^(?:continue reading with|to continue reading|this (?:article|content) is (?:for|only available"
               r" to) subscribers|already a subscriber|subscribe (?:now|today|for)).{0,160}$", re.I),
]
# press-release boilerplate closing a body: "About Acme" and "Acme is a leading provider of …,
# headquartered in …, employs …, listed on …" (the issuer describing itself, not the news)
_ABOUT_HEADING = re.compile(r"^(?:about|über|à propos de|acerca de|sobre)\s+\S.{0,60}$", re.I)
_SELF_DESCRIPTION = re.compile(
    r"^(?:about\s+\S.{0,60}?\s+)?(?P<name>[A-Z][\w&.'’-]*(?:\s+[A-Z][\w&.'’-]*){0,4})(?:\s*\([^)]{1,40}\))?,?\s+"
    r"(?:is|are|,)\s+(?:a|an|the|one of the)\b")
_CORPORATE_CUES = re.compile(
    r"\b(?:headquartered|head office|employs|employees|subsidiar(?:y|ies)|listed on|traded on|stock exchange"
    r"|nasdaq|nyse|founded in|offices in|operations in|\d+ countries|for more information,? visit|www\.)", re.I)
_TERMINAL_OPEN = (".", ":", ";", ",")
_MAX_BOILERPLATE_LINE = 320


def is_boilerplate_line(line: str, extra: Iterable[str] = ()) -> bool:
    """True for a line that is page furniture rather than article text."""
    text = line.strip()
    if not text:
        return True
    if len(text) > _MAX_BOILERPLATE_LINE:  # furniture lines are short; prose is not scanned
        return False
    low = text.casefold()
    if any(low == e.casefold() for e in extra if e):
        return True
    return any(p.search(text) for p in BOILERPLATE_LINE_PATTERNS)


def _is_date_line(text: str) -> bool:
    """A paragraph that is only a date ("February 2, 2023", "Updated 3 June 2024, 16:15 EST")."""
    if len(text) > 60 or parse_visible(text) is None:
        return False
    rest = re.sub(r"\d+|\b(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b|\b(?:mon|tue|wed|thu|fri"
                  r"|sat|sun)[a-z]*\b|\b(?:at|on|am|pm|a\.m\.|p\.m\.|updated|published|posted|gmt|utc|[A-Z]{2,5})\b",
                  " ", text, flags=re.I)
    return len(re.findall(r"\w+", rest)) == 0


def _same(a: str | None, b: str | None) -> bool:
    return bool(a and b) and " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def _looks_like_kicker(par: str) -> bool:
    """A short line without a closing full stop, opening the body: a subheadline, not prose."""
    return (3 <= _words(par) <= 40 and not par.rstrip("”’\"'").endswith(_TERMINAL_OPEN)
            and not re.match(r"(?i)by\s", par) and len(par) < 300)


def _drop_press_boilerplate(paragraphs: list[str]) -> list[str]:
    """Cut the issuer's "About X" self-description from the end of a press release."""
    cut = len(paragraphs)
    for i in range(len(paragraphs) - 1, max(len(paragraphs) - 4, 0), -1):
        par = paragraphs[i]
        if _ABOUT_HEADING.match(par) and _words(par) <= 8 and i < len(paragraphs) - 1 and cut == i + 1:
            cut = i
            break
        if _SELF_DESCRIPTION.match(par) and len(_CORPORATE_CUES.findall(par)) >= 2 and _words(par) >= 25:
            cut = i
            continue
        break
    return paragraphs[:cut] if cut > 0 else paragraphs


def clean_body(body: str | None, *, title: str | None = None, subtitle: str | None = None,
               site_name: str | None = None) -> tuple[str | None, str | None]:
    """Clean body text; returns ``(body, subtitle)`` since a kicker may move from body to subtitle."""
    if body is None:
        return None, subtitle
    text = _INVISIBLE.sub("", unicodedata.normalize("NFC", html.unescape(body))).replace("\r", "")
    paragraphs: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        lines = [" ".join(_SPACES.sub(" ", line).split()) for line in block.split("\n")]
        kept = [line for line in lines if line and not is_boilerplate_line(line)]
        if kept:
            paragraphs.append(" ".join(kept))
    # naive scrapes start with the page chrome: date, site name and tagline, headline
    top = 0
    while top < len(paragraphs) and top < 6:
        par = paragraphs[top]
        if _is_date_line(par) or _same(par, title):
            paragraphs.pop(top)
            continue
        if site_name and par.casefold().startswith(site_name.casefold()) and _words(par) <= _words(site_name) + 6:
            # the site name line, possibly with its tagline on the same or next line
            paragraphs.pop(top)
            if top < len(paragraphs) and _words(paragraphs[top]) <= 6 and not re.search(r"[.!?:;,]$",
                                                                                          paragraphs[top]):
                paragraphs.pop(top)
            continue
        break
    paragraphs = [p for p in paragraphs if not _is_date_line(p) and not _same(p, site_name)]
    paragraphs = _drop_press_boilerplate(paragraphs)
    # pull quotes repeat a sentence of another paragraph as a fragment (no closing full stop)
    paragraphs = [
        p for i, p in enumerate(paragraphs)
        if not (_words(p) >= 5 and len(p) <= 300 and not p.endswith(".")
                and any(j != i and len(q) > len(p) and p.strip("“”\"‘’'") in q for j, q in enumerate(paragraphs)))
    ]
    if paragraphs and subtitle and _same(paragraphs[0], subtitle):
        paragraphs.pop(0)
    elif paragraphs and not subtitle and len(paragraphs) >= 3 and _looks_like_kicker(paragraphs[0]):
        subtitle = paragraphs.pop(0)
    return "\n\n".join(paragraphs), subtitle


# -- titles ---------------------------------------------------------------------------------

_TITLE_SEP = re.compile(r"\s+(?:[|\-–—·•»:]|::)\s+")


def _site_like(segment: str, site_name: str | None) -> bool:
    if not site_name:
        return False
    a = re.sub(r"^the\s+|\W+", "", segment.casefold())
    b = re.sub(r"^the\s+|\W+", "", site_name.casefold())
    return bool(a) and (a == b or a.removesuffix("com") == b or (b in a and len(a) - len(b) <= 6))


def clean_title(title: str | None, site_name: str | None = None) -> str | None:
    """Strip ``Title | Section | Site``, ``Title - Site`` and ``Site: Title`` decorations."""
    text = clean_text(title)
    if not text:
        return text
    if site_name:
        prefix = re.match(rf"^\s*{re.escape(site_name)}\s*(?:[:|\-–—·•»]|::)\s+", text, re.I)
        if prefix and len(text) > prefix.end() + 3:
            text = text[prefix.end():]
    parts = _TITLE_SEP.split(text)
    seps = _TITLE_SEP.findall(text)
    if len(parts) >= 2 and _site_like(parts[-1], site_name):
        parts, seps = parts[:-1], seps[:-1]
        # "Title | Section | Site": a short trailing piece after a pipe is the section
        if len(parts) >= 2 and "|" in seps[-1] and _words(parts[-1]) <= 3:
            parts, seps = parts[:-1], seps[:-1]
    elif len(parts) >= 2 and _site_like(parts[0], site_name) and ":" not in seps[0]:
        parts, seps = parts[1:], seps[1:]
    elif not site_name and len(parts) >= 2 and seps[-1].strip() == "|" and _words(parts[-1]) <= 4:
        parts, seps = parts[:-1], seps[:-1]
    out = parts[0]
    for sep, part in zip(seps, parts[1:], strict=True):
        out += sep + part
    return out.strip() or None


# -- authors -----------------------------------------------------------------------------------

_BY_PREFIX = re.compile(r"^(?:(?:words|written|reported|reporting|text|story|photos?|interview)\s+)?(?:by|von|par|por"
                        r"|door|di)\s*:?\s+", re.I)
_EMAIL = re.compile(r"\S+@\S+\.\w+")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.I)
_ROLE = re.compile(
    r"(?:^|\s*[,|\-–—(]\s*|\s+)(?:(?:senior|chief|staff|political|foreign|special|contributing|freelance|deputy"
    r"|associate|managing|executive|investigative|business|sports|science|health|technology|tech|news|digital"
    r"|local|national|international|economics|culture|political)\s+)*(?:reporter|writer|correspondent|editor"
    r"|contributor|columnist|journalist|photographer|analyst|producer|intern|critic)s?\)?\s*$",
    re.I,
)
_AUTHOR_SPLIT = re.compile(r"\s*(?:,|;|&|\||\band\b|\bund\b|\bwith\b|\+)\s*", re.I)
GENERIC_AUTHORS = frozenset(
    {"staff", "agencies", "agency", "staff and agencies", "the staff", "editorial staff", "editorial team",
     "editorial board", "newsroom", "news desk", "newsdesk", "web desk", "online desk", "admin", "administrator",
     "editor", "editors", "wire", "wires", "wire services", "staff writer", "staff reporter", "guest", "unknown",
     "anonymous", "team", "redaktion"}
)


def clean_authors(values: Iterable[Any] | str | None, site_name: str | None = None) -> list[str]:
    """Names only: no "By", roles, e-mails or URLs; split on and/&/commas; generic and site names dropped."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    seen: set[str] = set()
    for raw in values:
        text = clean_text(raw)
        if not text:
            continue
        text = _URL.sub(" ", _EMAIL.sub(" ", text))
        text = _BY_PREFIX.sub("", text.strip())
        for part in _AUTHOR_SPLIT.split(text):
            name = _BY_PREFIX.sub("", part.strip(" .:-–—()[]"))
            for _ in range(2):
                name = _ROLE.sub("", name).strip(" ,.:-–—()[]")
            if not name or not re.search(r"[^\W\d_]", name) or _words(name) > 6:
                continue
            low = name.casefold()
            if low in GENERIC_AUTHORS or _site_like(name, site_name) or low in seen:
                continue
            seen.add(low)
            names.append(name)
    return names


# -- language, dates, tags -------------------------------------------------------------------------


def normalize_language(value: Any) -> str | None:
    """'en-US' / 'en_GB' / 'EN' -> 'en'; anything else that is not a code -> None."""
    text = clean_text(value)
    if not text:
        return None
    code = re.split(r"[-_\s]", text.strip().lower())[0]
    return code if re.fullmatch(r"[a-z]{2}", code) else None


def detect_language(text: str | None) -> str | None:
    """py3langid on the text when it is long enough to say anything."""
    if not text or len(text) < 40:
        return None
    try:
        import py3langid
    except ImportError:  # pragma: no cover - optional at import time
        return None
    lang, _score = py3langid.classify(text[:5000])
    return lang if isinstance(lang, str) and len(lang) == 2 else None


def to_utc(value: Any) -> datetime | None:
    """Aware datetime in UTC; strings are parsed; naive values are taken as UTC (documented last resort)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = parse_visible(value)
        if value is None:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def clean_tags(values: Iterable[Any] | None) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for raw in values or ():
        text = clean_text(raw)
        if text and text.casefold() not in seen:
            seen.add(text.casefold())
            out.append(text)
    return out


# -- entry point ----------------------------------------------------------------------------------


def clean_fields(fields: dict[str, Any], *, site_name: str | None = None) -> dict[str, Any]:
    """Normalise extracted fields; keys not named here pass through unchanged."""
    out = dict(fields)
    site = clean_text(site_name) or clean_text(fields.get("site_name"))
    for key in ("url", "canonical_url", "declared_canonical_url", "image_url"):
        if key in out:
            out[key] = clean_text(out[key])
    if "site_name" in out:
        out["site_name"] = clean_text(out["site_name"]) or site
    if "section" in out:
        out["section"] = clean_text(out["section"])
    title = clean_title(out.get("title"), site) if "title" in out else None
    if "title" in out:
        out["title"] = title
    subtitle = clean_text(out.get("subtitle"))
    if "body" in out:
        out["body"], subtitle = clean_body(out.get("body"), title=title, subtitle=subtitle, site_name=site)
    if subtitle and _same(subtitle, title):
        subtitle = None
    if "subtitle" in out or subtitle:
        out["subtitle"] = subtitle
    if "authors" in out:
        out["authors"] = clean_authors(out.get("authors"), site)
    for key in ("published_at", "modified_at", "fetched_at"):
        if key in out:
            out[key] = to_utc(out[key])
    if "tags" in out:
        out["tags"] = clean_tags(out.get("tags"))
    if "language" in out:
        lang = normalize_language(out.get("language"))
        if lang is None:
            lang = detect_language(" ".join(t for t in (title, out.get("body")) if t))
        out["language"] = lang
    return out


# -- the Scrapy pipeline -------------------------------------------------------------------------------


class CleanPipeline:
    """Stage: clean every item in place through ``ItemAdapter`` (works for any item type).

    A ``PreparedArticle`` was cleaned by ``clean_fields`` in an extraction worker
    (crawler/extract_pool.py ``prepare_page``, with this stage's site name) and passes through.
    """

    def __init__(self, site_name: str | None = None) -> None:
        from crawler.extract_pool import PreparedArticle

        self.site_name = site_name
        self.prepared = PreparedArticle

    @classmethod
    def from_crawler(cls, crawler: Any) -> CleanPipeline:
        return cls(site_name=crawler.settings.get("NEWSINGEST_SITE_NAME") or None)

    def process_item(self, item: Any) -> Any:
        if type(item) is self.prepared:
            return item
        from itemadapter import ItemAdapter

        adapter = ItemAdapter(item)
        present = dict(adapter.items())
        site = adapter.get("site_name") or self.site_name
        cleaned = clean_fields(present, site_name=site)
        for key, value in cleaned.items():
            if key in present and present[key] is not value:
                adapter[key] = value
        return item
