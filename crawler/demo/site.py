"""Generate "The Demo Courier": a small, deterministic news site with a ground-truth manifest.

The site is the fixture for `newsingest demo` and the crawl tests, so it packs
every trap a crawler meets into ~40 articles: three metadata styles, a
WordPress-theme page, a windows-1252 page, syndicated copies, tracking-parameter
URL variants, feeds, a sitemap index with a Google News and a gzipped sitemap,
robots.txt, a 404, a 500 and a stub. Everything derives from fixed seeds, so two
builds with the same base URL are byte-identical. Standard library only.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from html import escape
from pathlib import Path
from typing import Any

__all__ = ["SITE_NAME", "build_site", "demo_source_config"]

SITE_NAME = "The Demo Courier"
TAGLINE = "Independent news from everywhere, every day"
TZ = timezone(timedelta(hours=-5), "EST")  # fixed offset: no DST surprises
NOW = datetime(2025, 3, 10, 12, 0, tzinfo=TZ)
SECTIONS = {"world": "World", "business": "Business", "tech": "Technology", "science": "Science"}
PAGE_SIZE = 6
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
          "October", "November", "December"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
UTM = "utm_source=rss&utm_medium=feed&utm_campaign=demo"
FBCLID = "fbclid=IwAR0demoCourier7Hx2"
MISSING_PATH = "/corrections/2025/march/"
DRAFT_PATH = "/private/draft/"

# --------------------------------------------------------------------------- prose

_POOLS: dict[str, dict[str, list[str]]] = {
    "world": {
        "place": ["Lisbon", "Nairobi", "Jakarta", "Montevideo", "Tbilisi", "Accra", "Oslo", "Hanoi", "Quito"],
        "org": ["the foreign ministry", "the UN refugee agency", "the regional parliament",
                "the coalition government", "the electoral commission", "the port authority"],
        "topic": ["the ceasefire talks", "the border agreement", "the drought relief plan",
                  "the coastal evacuation", "the election recount", "the grain corridor",
                  "the fisheries dispute", "the visa reform", "the river treaty"],
        "role": ["a senior diplomat", "the deputy foreign minister", "a regional governor",
                 "an aid coordinator", "an opposition lawmaker"],
        "tag": ["Diplomacy", "Elections", "Climate", "Migration", "Trade"],
    },
    "business": {
        "place": ["Frankfurt", "Chicago", "Singapore", "Rotterdam", "Toronto", "São Paulo", "Manchester"],
        "org": ["the central bank", "the shipping group Maerlin", "the retailer Hollis & Crane",
                "the competition regulator", "the state pension fund", "the airline Skyward"],
        "topic": ["the interest rate decision", "the merger talks", "the quarterly earnings",
                  "the pay dispute", "the freight surcharge", "the bond sale", "the supply contract",
                  "the store closures", "the fuel hedging plan"],
        "role": ["the chief executive", "an analyst at Brightwater Securities", "the finance director",
                 "a union negotiator", "a fund manager"],
        "tag": ["Markets", "Banking", "Retail", "Jobs", "Energy"],
    },
    "tech": {
        "place": ["Austin", "Dublin", "Bangalore", "Helsinki", "Seoul", "Tallinn", "Lyon"],
        "org": ["the chipmaker Veltrix", "the privacy watchdog", "the start-up Quillstack",
                "the telecoms operator Linea", "the open-source foundation", "the cloud provider Nimbra"],
        "topic": ["the data breach", "the satellite broadband rollout", "the battery recall",
                  "the app store rules", "the chip export controls", "the network outage",
                  "the AI safety guidelines", "the password reset flaw", "the fibre tender"],
        "role": ["the chief technology officer", "a security researcher", "a product manager",
                 "an industry lobbyist", "a software engineer"],
        "tag": ["Security", "Privacy", "Chips", "Telecoms", "Startups"],
    },
    "science": {
        "place": ["Geneva", "Hobart", "Tromsø", "Cape Town", "Reykjavík", "Pasadena", "Kyoto"],
        "org": ["the national weather service", "the space agency", "the university hospital",
                "the marine research institute", "the national seed bank", "the mountain observatory"],
        "topic": ["the glacier survey", "the vaccine trial", "the coral bleaching study",
                  "the asteroid flyby", "the measles outbreak", "the soil carbon project",
                  "the deep-sea expedition", "the wildfire smoke study", "the comet sighting"],
        "role": ["the lead researcher", "an epidemiologist", "a climate scientist",
                 "the mission director", "a marine biologist"],
        "tag": ["Space", "Health", "Oceans", "Climate", "Research"],
    },
}
_FIRST = ["Amara", "Tomas", "Priya", "Jonah", "Ines", "Kwame", "Lena", "Mateo", "Sofia", "Daniel",
          "Hana", "Olu", "Marta", "Felix", "Ruth", "Idris", "Clara", "Yusuf", "Nadia", "Peter"]
_LAST = ["Okafor", "Lindqvist", "Ramanathan", "Whitlock", "Duarte", "Mensah", "Kowalski", "Ferreira",
         "Haddad", "Brennan", "Sato", "Adeyemi", "Novak", "Castillo", "Moreau", "Quinn", "Ibrahim", "Holm"]
AUTHORS = ["Maya Ellison", "Jonas Weber", "Aisha Karimi", "Tom Hargreaves", "Lucia Romano",
           "Sam Oduya", "Erin Blake", "Victor Lam"]

_SENTENCES = [
    "{Org} said on {day} that it would review {topic} after weeks of pressure from residents of {place}.",
    "{person}, {role}, told reporters in {place} that progress on {topic} had been slower than many hoped.",
    "Figures published on {day} showed a rise of {pct} per cent over the past {period}, "
    "the sharpest increase since {year}.",
    "Officials declined to say how much {topic} would cost, but people familiar with the plans "
    "put the figure at about {money}.",
    "“We are not there yet, but we are closer than we were a month ago,” said {person}, "
    "who has followed {topic} since it began.",
    "The announcement came hours after {org2} warned that delays to {topic2} could ripple well "
    "beyond {place}.",
    "Critics say {topic} has been handled poorly from the start, pointing to missed deadlines "
    "and shifting targets.",
    "Supporters counter that the latest steps are modest but realistic, and that a bigger change "
    "would have stalled in {place}.",
    "In a statement, {org} said it had spoken to {num} groups in recent weeks and would publish "
    "a summary by the end of {month}.",
    "{person} said the mood in {place} had changed noticeably since {month}, with more people "
    "willing to speak publicly.",
    "Not everyone is convinced. “There is a lot of talk and very little detail,” said {person2}, {role2}.",
    "The next round of discussions is expected in {month}, when {org} is due to report back on {topic}.",
    "Local newspapers in {place} have described {topic} as the most closely watched issue of the year.",
    "A spokesperson for {org} said no final decision had been taken and that all options remained open.",
    "Residents interviewed on {day} were split, with some welcoming the attention and others "
    "saying little had changed.",
    "Earlier this year, {org} set aside {money} for work linked to {topic2}, though only part of it "
    "has been spent.",
    "The row over {topic} has also drawn in {org2}, which asked for more time to study the proposals.",
    "Analysts said the outcome would depend heavily on {topic2}, where no agreement has yet been reached.",
    "By {day} evening, {num} people had signed a petition calling for {topic} to be paused.",
    "{person} added that {org} would keep {place} informed and that a public meeting was planned "
    "for {month}.",
]
_TITLES = [
    "{O} to review {t} after protests in {place}",
    "{place} braces for delays as {t} stalls",
    "What {topic} could mean for {place}",
    "Questions grow over {t} in {place}",
    "{place} officials defend {t} amid criticism",
    "Inside the fight over {topic} in {place}",
    "{O} signals shift on {t}",
    "Five things to know about {topic}",
]
_STANDFIRSTS = [
    "{Org} faces fresh questions over {topic} as {place} waits for answers.",
    "A closer look at {topic}, and why the next few weeks matter for {place}.",
    "Pressure is building on {org} to explain how {topic} will be paid for.",
    "Residents of {place} say they have heard promises before.",
]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _person(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _fill(tpl: str, rng: random.Random, pool: dict[str, list[str]], topic: str, place: str) -> str:
    """Fill one template; the article's own topic and place dominate so the text stays on-story."""
    org, org2 = rng.sample(pool["org"], 2)
    topic2 = rng.choice([t for t in pool["topic"] if t != topic])
    role, role2 = rng.sample(pool["role"], 2)
    vals = {
        "topic": topic, "topic2": topic2, "t": topic.removeprefix("the "), "place": place,
        "org": org, "Org": _cap(org), "org2": org2, "role": role, "role2": role2,
        "person": _person(rng), "person2": _person(rng), "day": rng.choice(DAYS[:5]),
        "month": rng.choice(MONTHS), "period": rng.choice(["year", "six months", "quarter", "decade"]),
        "pct": f"{rng.randint(2, 38)}.{rng.randint(0, 9)}", "year": str(rng.randint(2009, 2021)),
        "money": f"${rng.randint(12, 940)} million", "num": f"{rng.randint(3, 90) * 100:,}",
    }
    return _cap(tpl.format(**vals))


def _paragraphs(rng: random.Random, pool: dict[str, list[str]], topic: str, place: str,
                seen: set[str]) -> list[str]:
    """4-9 paragraphs of 30-80 words, each unique across the whole site."""
    order = rng.sample(_SENTENCES, len(_SENTENCES))
    want = rng.randint(4, 9)
    out: list[str] = []
    i = 0
    while len(out) < want:
        sents: list[str] = []
        while sum(len(s.split()) for s in sents) < 30 or (len(sents) < 2 and rng.random() < 0.5):
            cand = _fill(order[i % len(order)], rng, pool, topic, place)
            i += 1
            if sum(len(s.split()) for s in [*sents, cand]) > 80:
                break
            sents.append(cand)
        para = " ".join(sents)
        if 30 <= len(para.split()) <= 80 and para not in seen:
            seen.add(para)
            out.append(para)
    return out


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "-".join(re.sub(r"[^a-z0-9]+", " ", ascii_text.lower()).split()[:10])


# --------------------------------------------------------------------------- data


@dataclass
class Article:
    """One article page as planned; `url` is the page's own absolute URL."""

    section: str
    title: str
    subtitle: str
    authors: list[str]
    published: datetime
    modified: datetime | None
    paragraphs: list[str]
    tags: list[str]
    style: str = "jsonld"  # jsonld | graph | meta | visible
    kind: str = "article"  # article | stub | syndicated | fault | draft
    template: str = "standard"  # standard | wordpress
    encoding: str = "utf-8"
    canonical: str | None = "self"  # "self", an absolute URL, or None (no rel=canonical)
    slug: str = ""
    path: str = ""
    url: str = ""
    duplicate_of: str | None = None
    variants: list[str] = field(default_factory=list)
    in_archive: bool = False

    def variant(self, suffix: str) -> str:
        """A root-relative link to this page with `suffix` appended; recorded for the manifest."""
        link = self.path + suffix
        if suffix and link not in self.variants:
            self.variants.append(link)
        return link


_CP1252_TEXT = [
    "The café on Rue Müller has served the same crème brûlée for forty years, and on Saturday its owners "
    "said “au revoir” to a street that has changed around them – slowly at first, then all at once.",
    "Zoë Dupré, who took over from her grandmother in 1998, said rents had tripled in a decade. “We "
    "could stay, but only by charging €9 for a coffee,” she said. “That isn’t who we are.”",
    "Regulars queued from 7 a.m. for a last pain au chocolat. Jürgen Maïer, a retired teacher, said he "
    "had eaten breakfast there “nearly every weekday since the Berlin Wall fell” – about 8,000 mornings.",
    "The city’s heritage office said the façade would be protected, though the interior is not listed. "
    "A bakery chain has signed a lease for the ground floor; its plans were not disclosed…",
    "Across the street, the bookseller Søren Ibáñez said footfall had already dropped. “When the café "
    "goes, the street loses its living room,” he said, folding a stack of newspapers by the door.",
]
_WP_TEXT = [
    "Plans for a second tram line across the river cleared their final hurdle on Thursday night, when "
    "the city council voted 31 to 12 to approve a revised budget after a debate that ran past midnight.",
    "The line, which would link the northern housing estates to the hospital district, has been argued "
    "over for almost a decade. Earlier versions were shelved twice, once after a funding partner "
    "withdrew and once after residents challenged the route in court.",
    "Councillor Ruth Mensah, who chairs the transport committee, said the new plan was cheaper because "
    "it reused an old freight corridor for most of its length. She said construction could begin in "
    "the autumn if contracts were signed on time.",
    "Opponents said the cost estimates were still far too optimistic and warned that disruption on the "
    "river bridge would push traffic into narrow residential streets for at least two years.",
    "The council will publish the full contract documents next month. A public exhibition of the "
    "route is planned at the central library, and residents can submit comments until the end of May.",
]


def _plan() -> list[Article]:
    """Plan every article-like page. Pure function of the seeds below."""
    rng = random.Random("demo-courier-1")
    seen_paras: set[str] = set()
    seen_titles: set[str] = set()
    arts: list[Article] = []
    for i in range(36):
        section = list(SECTIONS)[i % 4]
        pool = _POOLS[section]
        while True:
            topic, place = rng.choice(pool["topic"]), rng.choice(pool["place"])
            org = rng.choice(pool["org"])
            vals = {"topic": topic, "t": topic.removeprefix("the "), "place": place, "Org": _cap(org),
                    "org": org, "O": _cap(org.removeprefix("the "))}
            title = _cap(rng.choice(_TITLES).format(**vals))
            if title not in seen_titles:
                seen_titles.add(title)
                break
        published = NOW - timedelta(hours=7 + i * 9, minutes=rng.choice([0, 5, 15, 20, 30, 45, 50]))
        in_archive = i >= 32  # the four oldest: only in the gzipped archive sitemap
        if in_archive:
            published -= timedelta(days=110)
        style = ("jsonld", "graph", "meta", "visible")[(i + i // 4) % 4]
        n_auth = (1, 2, 1, 1, 3)[i % 5]
        authors = rng.sample(AUTHORS, n_auth)
        arts.append(Article(
            section=section, title=title, subtitle=_cap(rng.choice(_STANDFIRSTS).format(**vals)),
            authors=[] if i == 5 else authors, published=published,
            modified=None if style == "visible" else published + timedelta(hours=rng.choice([0, 1, 3])),
            paragraphs=_paragraphs(rng, pool, topic, place, seen_paras),
            tags=sorted(rng.sample(pool["tag"], 2)), style=style, canonical=None if i == 7 else "self",
            slug=_slug(title), in_archive=in_archive,
        ))
    t = datetime(2025, 3, 6, 9, 40, tzinfo=TZ)
    arts.append(Article(
        section="world", title="Lisbon’s oldest café closes its doors – “au revoir” to Rue Müller",
        subtitle="After 40 years, Zoë Dupré’s café serves its last crème brûlée.",
        authors=["Lucia Romano"], published=t, modified=t + timedelta(hours=2), paragraphs=_CP1252_TEXT,
        tags=["Culture", "Diplomacy"], encoding="windows-1252", slug="lisbon-oldest-cafe-closes-its-doors",
    ))
    t = datetime(2025, 3, 7, 16, 15, tzinfo=TZ)
    arts.append(Article(
        section="science", title="Council approves second tram line after decade of delays",
        subtitle="Revised budget reuses an old freight corridor and wins a late-night vote",
        authors=["Erin Blake"], published=t, modified=t, paragraphs=_WP_TEXT, tags=["Research"],
        style="meta", template="wordpress", slug="council-approves-second-tram-line",
    ))
    t = datetime(2025, 3, 2, 11, 0, tzinfo=TZ)
    arts.append(Article(
        section="business", title="Hollis & Crane shares suspended pending statement", subtitle="",
        authors=[], published=t, modified=None, paragraphs=[], tags=["Markets"], style="meta",
        kind="stub", slug="hollis-crane-shares-suspended",
    ))
    t = datetime(2025, 3, 4, 8, 30, tzinfo=TZ)
    arts.append(Article(
        section="tech", title="Server room flooded after storm", subtitle="Outage hits regional services",
        authors=["Victor Lam"], published=t, modified=t, paragraphs=_paragraphs(
            rng, _POOLS["tech"], "the network outage", "Dublin", seen_paras),
        tags=["Telecoms"], kind="fault", slug="server-room-flooded-after-storm",
    ))
    t = datetime(2025, 3, 1, 10, 0, tzinfo=TZ)
    arts.append(Article(
        section="world", title="Draft: embargoed summit communique", subtitle="Not for publication",
        authors=["Jonas Weber"], published=t, modified=t, paragraphs=_paragraphs(
            rng, _POOLS["world"], "the border agreement", "Oslo", seen_paras),
        tags=["Diplomacy"], kind="draft", canonical=None, slug="draft",
    ))
    # Syndication: an exact copy (no canonical) and a near copy (canonical -> original).
    orig, near_src = arts[0], arts[2]
    dup_section = "business" if orig.section != "business" else "world"
    arts.append(Article(
        section=dup_section, title=orig.title, subtitle=orig.subtitle, authors=orig.authors,
        published=orig.published + timedelta(hours=2), modified=None, paragraphs=orig.paragraphs,
        tags=orig.tags, style="meta", kind="syndicated", canonical=None, slug=orig.slug + "-partner",
    ))
    near_section = "science" if near_src.section != "science" else "world"
    arts.append(Article(
        section=near_section, title=near_src.title, subtitle=near_src.subtitle, authors=near_src.authors,
        published=near_src.published, modified=near_src.modified, paragraphs=near_src.paragraphs,
        tags=near_src.tags, style=near_src.style, kind="near_copy", slug=near_src.slug,
    ))
    return arts


# --------------------------------------------------------------------------- rendering helpers


def _iso(dt: datetime) -> str:
    return dt.isoformat()


def _visible(dt: datetime) -> str:
    """'March 3, 2025 at 4:15 p.m. EST' — the only date a 'visible' page carries."""
    h = dt.hour % 12 or 12
    ampm = "a.m." if dt.hour < 12 else "p.m."
    return f"{MONTHS[dt.month - 1]} {dt.day}, {dt.year} at {h}:{dt.minute:02d} {ampm} EST"


def _short(dt: datetime) -> str:
    return f"{MONTHS[dt.month - 1][:3]} {dt.day}, {dt.year}"


def _e(s: str) -> str:
    return escape(s, quote=True)


def _tag_path(tag: str) -> str:
    return f"/tag/{_slug(tag)}/"


def _author_path(name: str) -> str:
    return f"/author/{_slug(name)}/"


def _nav() -> str:
    items = "".join(f'<li><a href="/{s}/">{t}</a></li>' for s, t in SECTIONS.items())
    return (f'<nav class="main-nav"><ul><li><a href="/">Home</a></li>{items}'
            '<li><a href="/about/">About</a></li></ul></nav>')


def _page(title: str, main: str, *, head: str = "", charset: str = "utf-8", sidebar: str = "",
          body_class: str = "") -> str:
    """Wrap main content in the shared site chrome."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta http-equiv="Content-Type" content="text/html; charset={charset}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<link rel="stylesheet" href="/static/site.css">
<link rel="alternate" type="application/rss+xml" title="{SITE_NAME}" href="/rss.xml">
{head}</head>
<body class="{body_class}">
<header class="site-header">
<p class="site-title"><a href="/">{SITE_NAME}</a></p>
<p class="site-description">{TAGLINE}</p>
<form class="search" action="/search" method="get"><input name="q" aria-label="Search"></form>
</header>
{_nav()}
<div class="layout">
<main id="content">
{main}
</main>
<aside class="sidebar">{sidebar}</aside>
</div>
<footer class="site-footer">
<p><a href="/about/">About us</a> · <a href="/rss.xml">RSS</a> · <a href="{MISSING_PATH}">Corrections</a></p>
<p>© 2025 {SITE_NAME}. All rights reserved.</p>
</footer>
</body>
</html>
"""


# --------------------------------------------------------------------------- the builder


class _Builder:
    """Render and write every page; collects the manifest as it goes."""

    def __init__(self, out: Path, base_url: str) -> None:
        self.site = out / "site"
        self.base = base_url.rstrip("/")
        self.arts = _plan()
        self.charsets: dict[str, str] = {}
        self.non_articles: list[str] = []
        for a in self.arts:
            d = a.published
            a.path = DRAFT_PATH if a.kind == "draft" else f"/{a.section}/{d:%Y/%m/%d}/{a.slug}/"
            a.url = self.base + a.path
        if len({a.path for a in self.arts}) != len(self.arts):
            raise RuntimeError("demo site plan produced duplicate article paths")
        self.live = [a for a in self.arts if a.kind in ("article", "syndicated", "stub")]
        self.live.sort(key=lambda a: a.published, reverse=True)
        by_kind = {a.kind: a for a in self.arts}
        self.syndicated, self.near = by_kind["syndicated"], by_kind["near_copy"]
        self.fault, self.draft = by_kind["fault"], by_kind["draft"]
        self.syndicated.duplicate_of = self.arts[0].url
        self.near.canonical = self.arts[2].url
        self.most_read = [a for a in self.live if a.kind == "article"][1:6]

    def abs(self, path: str) -> str:
        return self.base + path

    def write(self, path: str, data: str | bytes, mtime: datetime = NOW, charset: str = "utf-8") -> None:
        """Write a URL path (directories get index.html) with a fixed mtime, so ETags are stable."""
        rel = path.lstrip("/")
        target = self.site / (rel + "index.html" if rel.endswith("/") or not rel else rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data if isinstance(data, bytes) else data.encode(charset))
        ts = mtime.timestamp()
        os.utime(target, (ts, ts))
        if charset != "utf-8":
            self.charsets[path] = charset

    # ----------------------------------------------------------------- article pages

    def sidebar(self) -> str:
        items = "".join(f'<li><a href="{a.variant("?ref=mostread")}">{_e(a.title)}</a></li>'
                        for a in self.most_read)
        return f'<section class="most-read"><h3>Most read</h3><ol>{items}</ol></section>'

    def related(self, a: Article) -> list[Article]:
        same = [b for b in self.live if b.section == a.section and b is not a and b.kind == "article"]
        return same[:2]

    def byline(self, a: Article) -> str:
        if not a.authors:
            return '<p class="byline">Staff and agencies</p>' if a.kind != "stub" else ""
        links = [f'<a rel="author" href="{_author_path(n)}">{_e(n)}</a>' for n in a.authors]
        joined = links[0] if len(links) == 1 else ", ".join(links[:-1]) + " and " + links[-1]
        return f'<p class="byline">By {joined}</p>'

    def dateline(self, a: Article) -> str:
        if a.style == "visible":
            return f'<p class="dateline">Published {_visible(a.published)}</p>'
        upd = ""
        if a.modified and a.modified != a.published:
            upd = (f' · Updated <time class="updated" datetime="{_iso(a.modified)}">'
                   f"{_short(a.modified)}</time>")
        return (f'<p class="dateline"><time class="published" datetime="{_iso(a.published)}">'
                f'{_short(a.published)}, {_visible(a.published).split(" at ")[1]}</time>{upd}</p>')

    def head(self, a: Article) -> str:
        canon = a.url if a.canonical == "self" else a.canonical
        parts = [f'<meta name="description" content="{_e(a.subtitle or a.title)}">']
        if canon:
            parts += [f'<link rel="canonical" href="{_e(canon)}">',
                      f'<meta property="og:url" content="{_e(canon)}">']
        parts += [f'<meta property="og:site_name" content="{SITE_NAME}">',
                  f'<meta property="og:title" content="{_e(a.title)}">',
                  '<meta property="og:type" content="article">']
        if a.style == "meta" and a.kind != "stub":  # a withdrawn page keeps its og tags, not its dates
            parts.append(f'<meta property="article:published_time" content="{_iso(a.published)}">')
            if a.modified:
                parts.append(f'<meta property="article:modified_time" content="{_iso(a.modified)}">')
            parts.append(f'<meta property="article:section" content="{SECTIONS[a.section]}">')
            parts += [f'<meta property="article:tag" content="{_e(t)}">' for t in a.tags]
            parts += [f'<meta name="author" content="{_e(n)}">' for n in a.authors]
        if a.style in ("jsonld", "graph"):
            data = json.dumps(self.jsonld(a, canon), ensure_ascii=False)
            parts.append(f'<script type="application/ld+json">{data}</script>')
        return "\n".join(parts) + "\n"

    def jsonld(self, a: Article, canon: str | None) -> dict[str, Any]:
        url = canon or a.url
        publisher = {"@type": "Organization", "name": SITE_NAME, "url": self.abs("/"),
                     "logo": {"@type": "ImageObject", "url": self.abs("/static/logo.svg")}}
        art: dict[str, Any] = {
            "@type": "NewsArticle", "headline": a.title, "description": a.subtitle,
            "datePublished": _iso(a.published), "dateModified": _iso(a.modified or a.published),
            "author": [{"@type": "Person", "name": n, "url": self.abs(_author_path(n))} for n in a.authors],
            "articleSection": SECTIONS[a.section], "keywords": ", ".join(a.tags), "inLanguage": "en",
        }
        if a.style == "jsonld":
            return {"@context": "https://schema.org", **art, "mainEntityOfPage": url, "publisher": publisher}
        crumbs = [("Home", self.abs("/")), (SECTIONS[a.section], self.abs(f"/{a.section}/")), (a.title, url)]
        return {"@context": "https://schema.org", "@graph": [
            {"@type": "WebPage", "@id": url, "url": url, "name": a.title,
             "breadcrumb": {"@id": url + "#breadcrumb"}, "isPartOf": {"@id": self.abs("/#website")}},
            {"@type": "BreadcrumbList", "@id": url + "#breadcrumb", "itemListElement": [
                {"@type": "ListItem", "position": i + 1, "name": n, "item": u}
                for i, (n, u) in enumerate(crumbs)]},
            {**art, "@id": url + "#article", "isPartOf": {"@id": url}, "mainEntityOfPage": {"@id": url},
             "publisher": {"@id": self.abs("/#organization")}},
            {**publisher, "@id": self.abs("/#organization")},
            {"@type": "WebSite", "@id": self.abs("/#website"), "url": self.abs("/"), "name": SITE_NAME},
        ]}

    def body(self, a: Article) -> str:
        """Body paragraphs with the boxes a cleaner must strip, all inside the article container."""
        rel = self.related(a)
        out: list[str] = []
        for i, p in enumerate(a.paragraphs):
            out.append(f"<p>{escape(p, quote=False)}</p>")
            if i == 1 and rel:
                out.append(f'<aside class="related"><h4>See also</h4><ul><li><a href="{rel[0].path}">'
                           f"{_e(rel[0].title)}</a></li></ul></aside>")
            if i == 2:
                out.append('<div class="ad-slot"><span>Advertisement</span></div>')
            if i == len(a.paragraphs) - 2 and len(rel) > 1:
                out.append(f'<p class="read-more">Read more: <a href="{rel[1].path}">'
                           f"{_e(rel[1].title)}</a></p>")
        return "\n".join(out)

    def comments(self, a: Article) -> str:
        rng = random.Random("comments-" + a.path)
        lines = ["Good piece, but it leaves out the cost to ordinary people.",
                 "I was there last week and this matches what I saw.",
                 "Would like to see a follow-up on this in a few months."]
        items = "".join(f'<li><strong>{_person(rng)}</strong><p>{c}</p></li>' for c in rng.sample(lines, 2))
        return f'<section id="comments" class="comments"><h3>2 comments</h3><ol>{items}</ol></section>'

    def article_page(self, a: Article) -> str:
        if a.template == "wordpress":
            return self.wordpress_page(a)
        if a.kind == "stub":
            main = (f'<article class="article stub"><h1>{_e(a.title)}</h1>'
                    '<p class="notice">This article is no longer available.</p></article>')
            return _page(f"{a.title} | {SITE_NAME}", main, head=self.head(a), sidebar=self.sidebar())
        tags = "".join(f'<li><a href="{_tag_path(t)}">{_e(t)}</a></li>' for t in a.tags)
        crumbs = (f'<nav class="breadcrumb"><a href="/">Home</a> › '
                  f'<a href="/{a.section}/">{SECTIONS[a.section]}</a></nav>')
        main = f"""{crumbs}
<article class="article">
<header class="article-header">
<p class="kicker">{SECTIONS[a.section]}</p>
<h1 class="headline">{_e(a.title)}</h1>
<p class="standfirst">{_e(a.subtitle)}</p>
{self.byline(a)}
{self.dateline(a)}
</header>
<div class="article-body">
{self.body(a)}
</div>
<ul class="tags">{tags}</ul>
<div class="newsletter"><h3>Get the morning briefing</h3><p>Sign up for our free daily email.</p>
<form action="/newsletter" method="post"><input name="email" type="email">
<button>Sign up</button></form></div>
{self.comments(a)}
</article>"""
        return _page(f"{a.title} | {SECTIONS[a.section]} | {SITE_NAME}", main, head=self.head(a),
                     charset=a.encoding, sidebar=self.sidebar(), body_class="article-page")

    def wordpress_page(self, a: Article) -> str:
        """The 'seed-like' page: a typical WordPress news theme with a kicker and a 'See also' box."""
        rel = self.related(a)[0]
        paras = [f"<p>{escape(p, quote=False)}</p>" for p in a.paragraphs]
        paras.insert(2, f'<div class="td-related-box"><strong>See also\u00a0</strong> <a href="{rel.path}">'
                        f"{_e(rel.title)}</a></div>")
        main = f"""<article id="post-1042" class="post-1042 post type-post status-publish format-standard">
<header class="entry-header">
<div class="entry-meta"><span class="cat-links">
<a href="/{a.section}/" rel="category tag">{SECTIONS[a.section]}</a></span>
<time class="entry-date published" datetime="{_iso(a.published)}">{_short(a.published)}</time></div>
<h1 class="entry-title">{_e(a.title)}</h1>
<p class="subheadline">{_e(a.subtitle)}</p>
<span class="author vcard">By
<a rel="author" class="url fn n" href="{_author_path(a.authors[0])}">{_e(a.authors[0])}</a></span>
</header>
<div class="entry-content">
{chr(10).join(paras)}
</div>
<footer class="entry-footer"><span class="tags-links">Tagged
<a href="{_tag_path(a.tags[0])}" rel="tag">{_e(a.tags[0])}</a></span></footer>
</article>"""
        return _page(f"{a.title} – {SITE_NAME}", main, head=self.head(a), sidebar=self.sidebar(),
                     body_class="post-template-default single single-post wp-theme-newsmag")

    # ----------------------------------------------------------------- listings

    def teaser(self, a: Article, link: str | None = None, comments: bool = False) -> str:
        c = f' <a class="comment-count" href="{a.variant("#comments")}">2 comments</a>' if comments else ""
        sub = f'<p class="dek">{_e(a.subtitle)}</p>' if a.subtitle else ""
        return (f'<li class="teaser"><h2><a href="{link or a.path}">{_e(a.title)}</a></h2>{sub}'
                f'<p class="meta">{SECTIONS[a.section]} · {_short(a.published)}{c}</p></li>')

    def listing(self, path: str, heading: str, items: list[str], extra: str = "") -> None:
        head = (f'<link rel="canonical" href="{self.abs(path)}">\n'
                '<meta property="og:type" content="website">\n')
        teasers = "\n".join(items)
        main = f'<h1 class="page-title">{_e(heading)}</h1>\n<ul class="teasers">\n{teasers}\n</ul>\n{extra}'
        self.write(path, _page(f"{heading} | {SITE_NAME}", main, head=head, sidebar=self.sidebar(),
                               body_class="listing"))
        self.non_articles.append(self.abs(path))

    def home(self) -> None:
        items = []
        for i, a in enumerate(self.live[:20]):
            link = a.variant("?" + FBCLID) if i == 1 else None
            items.append(self.teaser(a, link, comments=i < 8))
        pick = next(a for a in self.live[20:] if a.kind == "article")
        slashless = pick.path.rstrip("/")  # 301s to the trailing-slash URL
        pick.variants.append(slashless)
        extra = (f'<p class="promo"><a href="{DRAFT_PATH}">Preview: summit communique</a> · '
                 f'<a href="{self.near.path}">{_e(self.near.title)} (partner edition)</a> · '
                 f'Editor’s pick: <a href="{slashless}">{_e(pick.title)}</a></p>')
        self.listing("/", "Top stories", items, extra)

    def sections(self) -> None:
        for s, name in SECTIONS.items():
            arts = [a for a in self.live if a.section == s]
            if s == self.fault.section:
                arts.insert(1, self.fault)
            pages = [arts[i:i + PAGE_SIZE] for i in range(0, len(arts), PAGE_SIZE)]
            for n, chunk in enumerate(pages, 1):
                path = f"/{s}/" if n == 1 else f"/{s}/page/{n}/"
                items = []
                for j, a in enumerate(chunk):
                    link = a.variant("index.html") if n == 1 and j == 2 else None
                    items.append(self.teaser(a, link))
                nav = []
                if n > 1:
                    prev = f"/{s}/" if n == 2 else f"/{s}/page/{n - 1}/"
                    nav.append(f'<a rel="prev" href="{prev}">Newer</a>')
                if n < len(pages):
                    nav.append(f'<a rel="next" href="/{s}/page/{n + 1}/">Older stories</a>')
                self.listing(path, name + (f" — page {n}" if n > 1 else ""), items,
                             f'<nav class="pagination">{" ".join(nav)}</nav>')

    def tags_and_authors(self) -> None:
        for t in sorted({t for a in self.live for t in a.tags}):
            arts = [a for a in self.live if t in a.tags]
            self.listing(_tag_path(t), f"Tag: {t}", [self.teaser(a) for a in arts])
        for name in sorted({n for a in self.live for n in a.authors}):
            arts = [a for a in self.live if name in a.authors]
            self.listing(_author_path(name), name, [self.teaser(a) for a in arts],
                         f'<p class="bio">{_e(name)} is a staff reporter at {SITE_NAME}.</p>')

    def static_pages(self) -> None:
        about = ('<article class="page"><h1>About us</h1><p>The Demo Courier is a fictional newspaper '
                 "generated for testing news crawlers. Nothing here is real.</p><p>Write to "
                 '<a href="mailto:desk@example.invalid">desk@example.invalid</a>.</p></article>')
        canon = f'<link rel="canonical" href="{self.abs("/about/")}">\n'
        self.write("/about/", _page(f"About | {SITE_NAME}", about, head=canon))
        self.non_articles.append(self.abs("/about/"))
        nf = ('<h1>Page not found</h1><p>Sorry, we could not find that page. '
              'Try the <a href="/">home page</a>.</p>')
        self.write("/404.html", _page(f"Page not found | {SITE_NAME}", nf, body_class="error404"))
        self.write("/static/site.css", "body{font-family:Georgia,serif;max-width:70rem;margin:auto}"
                   ".layout{display:flex;gap:2rem}.sidebar{width:18rem}.ad-slot{background:#eee}\n")
        self.write("/static/logo.svg", '<svg xmlns="http://www.w3.org/2000/svg" width="120" height="24">'
                   '<text x="0" y="18">Demo Courier</text></svg>\n')
        self.write("/robots.txt", f"User-agent: *\nDisallow: /private/\nDisallow: /search\n\n"
                   f"Sitemap: {self.abs('/sitemap.xml')}\n")

    # ----------------------------------------------------------------- feeds and sitemaps

    def feeds(self) -> None:
        items = []
        for a in [b for b in self.live if b.kind == "article"][:15]:
            link = self.abs(a.variant("?" + UTM))
            creators = "".join(f"<dc:creator>{_e(n)}</dc:creator>" for n in a.authors)
            items.append(f"<item><title>{_e(a.title)}</title><link>{_e(link)}</link>"
                         f'<guid isPermaLink="false">demo-courier-{_e(a.slug)}</guid>'
                         f"<pubDate>{format_datetime(a.published)}</pubDate>{creators}"
                         f"<category>{SECTIONS[a.section]}</category><description>{_e(a.subtitle)}</description></item>")
        rss = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"><channel>'
               f"<title>{SITE_NAME}</title><link>{self.abs('/')}</link><description>{TAGLINE}</description>"
               f"<lastBuildDate>{format_datetime(NOW)}</lastBuildDate>\n"
               + "\n".join(items) + "\n</channel></rss>\n")
        self.write("/rss.xml", rss)
        entries = []
        world = [a for a in self.live if a.section == "world" and a.kind == "article"]
        for a in world:
            authors = "".join(f"<author><name>{_e(n)}</name></author>" for n in a.authors)
            entries.append(f'<entry><title>{_e(a.title)}</title><link rel="alternate" href="{_e(a.url)}"/>'
                           f"<id>{_e(a.url)}</id><published>{_iso(a.published)}</published>"
                           f"<updated>{_iso(a.modified or a.published)}</updated>{authors}"
                           f"<summary>{_e(a.subtitle)}</summary></entry>")
        atom = ('<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
                f"<title>{SITE_NAME}: World</title><id>{self.abs('/world/')}</id>"
                f'<link rel="self" href="{self.abs("/world/atom.xml")}"/>'
                f"<updated>{_iso(world[0].published)}</updated>\n"
                + "\n".join(entries) + "\n</feed>\n")
        self.write("/world/atom.xml", atom)

    def sitemaps(self) -> None:
        def urlset(rows: list[str], ns: str = "") -> str:
            return ('<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
                    f"{ns}>\n" + "\n".join(rows) + "\n</urlset>\n")

        def row(url: str, lastmod: datetime | None = None) -> str:
            lm = f"<lastmod>{_iso(lastmod)}</lastmod>" if lastmod else ""
            return f"<url><loc>{_e(url)}</loc>{lm}</url>"

        listed = [a for a in self.live if not a.in_archive] + [self.fault]
        listed.sort(key=lambda a: a.published, reverse=True)
        self.write("/sitemaps/articles.xml", urlset([row(a.url, a.modified or a.published) for a in listed]))
        archive = urlset([row(a.url, a.modified or a.published) for a in self.live if a.in_archive])
        self.write("/sitemaps/archive.xml.gz", gzip.compress(archive.encode(), mtime=0))
        news_rows = [f"<url><loc>{_e(a.url)}</loc><news:news><news:publication>"
                     f"<news:name>{SITE_NAME}</news:name><news:language>en</news:language></news:publication>"
                     f"<news:publication_date>{_iso(a.published)}</news:publication_date>"
                     f"<news:title>{_e(a.title)}</news:title></news:news></url>"
                     for a in self.live if a.kind == "article" and a.published > NOW - timedelta(days=2)]
        self.write("/sitemaps/news.xml", urlset(
            news_rows, ' xmlns:news="http://www.google.com/schemas/sitemap-news/0.9"'))
        self.write("/sitemaps/pages.xml", urlset([row(u) for u in self.non_articles]))
        children = ["news.xml", "articles.xml", "pages.xml", "archive.xml.gz"]
        rows = "\n".join(f"<sitemap><loc>{self.abs('/sitemaps/' + c)}</loc>"
                         f"<lastmod>{_iso(NOW)}</lastmod></sitemap>" for c in children)
        index = ('<?xml version="1.0" encoding="UTF-8"?>\n'
                 f'<sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">\n{rows}\n</sitemapindex>\n')
        self.write("/sitemap.xml", index)

    # ----------------------------------------------------------------- manifest

    def build(self) -> dict[str, Any]:
        for a in self.arts:
            self.write(a.path, self.article_page(a), a.modified or a.published, a.encoding)
        self.home()
        self.sections()
        self.tags_and_authors()
        self.static_pages()
        self.feeds()
        self.sitemaps()
        return self.manifest()

    def manifest(self) -> dict[str, Any]:
        near_variants = {self.arts[2].url: [self.near.path]}
        arts = []
        for a in sorted(self.live, key=lambda a: a.path):
            variants = sorted({self.abs(v) for v in [*a.variants, *near_variants.get(a.url, [])]})
            arts.append({
                "url": a.url, "title": a.title, "subtitle": a.subtitle, "authors": a.authors,
                "published": _iso(a.published) if a.kind != "stub" else None,
                "modified": _iso(a.modified) if a.modified and a.kind != "stub" else None,
                "section": a.section, "tags": a.tags, "body": "\n\n".join(a.paragraphs),
                "variant_urls": variants, "duplicate_of": a.duplicate_of, "encoding": a.encoding,
                "metadata_style": a.style, "kind": a.kind, "template": a.template,
                "has_canonical": a.canonical is not None and a.kind != "syndicated",
            })
        return {
            "base_url": self.base, "site_name": SITE_NAME, "tagline": TAGLINE, "now": _iso(NOW),
            "articles": arts, "non_articles": sorted(self.non_articles),
            "near_copies": {self.near.url: self.near.canonical},
            "faults": {self.fault.url: 500, self.abs(MISSING_PATH): 404},
            "disallowed": [self.draft.url],
            "entry_points": {"feeds": [self.abs("/rss.xml"), self.abs("/world/atom.xml")],
                             "sitemaps": [self.abs("/sitemap.xml")], "start_urls": [self.abs("/")]},
        }


def build_site(out_dir: str | Path, base_url: str) -> dict[str, Any]:
    """Write out_dir/site/ (web root), out_dir/server.json and out_dir/manifest.json; return the manifest.

    base_url (e.g. "http://127.0.0.1:8765") is baked into sitemaps, feeds and
    canonical links, so build with the port the server really listens on.
    """
    out = Path(out_dir)
    b = _Builder(out, base_url)
    manifest = b.build()
    fault_paths = {b.fault.path: 500}
    (out / "server.json").write_text(json.dumps(
        {"base_url": b.base, "charsets": b.charsets, "faults": fault_paths}, indent=1, sort_keys=True) + "\n")
    text = json.dumps(manifest, indent=1, ensure_ascii=False) + "\n"
    (out / "manifest.json").write_text(text, encoding="utf-8")
    return manifest


def demo_source_config(base_url: str) -> dict[str, Any]:
    """The [sources.demo] table for this site, as load_sources would read it from TOML."""
    base = base_url.rstrip("/")
    return {
        "site_name": SITE_NAME,
        "allowed_domains": ["127.0.0.1"],
        "allow_private_networks": True,  # the demo site is on loopback
        "feeds": [f"{base}/rss.xml", f"{base}/world/atom.xml"],
        "sitemaps": [f"{base}/sitemap.xml"],
        "start_urls": [f"{base}/"],
    }
