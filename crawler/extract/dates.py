"""Date parsing: machine dates (ISO 8601) and the visible date strings news pages print.

Every function returns a timezone-aware ``datetime`` or ``None``. A zone label
("EST", "GMT", "(EST)") or an offset wins; a naive value is taken in the
source's ``timezone`` when it has one, else as UTC (the last resort), because
storing a naive datetime would make rows incomparable.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any

# Month names as pages print them (en, de, fr, es, it, nl, pt, ru), with the usual abbreviations
# (matched case-insensitively, a trailing dot allowed).
_MONTH_WORDS = (
    "january jan januar jänner janvier janv enero ene gennaio gen januari janeiro января",
    "february feb februar feber février fevrier févr fevr fév febrero febbraio februari fevereiro fev февраля",
    "march mar märz maerz mrz mär mars marzo maart mrt março marco марта",
    "april apr avril avr abril abr aprile апреля",
    "may mai mayo maggio mag mei maio мая",
    "june jun juni juin junio giugno giu junho июня",
    "july jul juli juillet juil julio luglio lug julho июля",
    "august aug août aout agosto ago augustus августа",
    "september sep sept septembre septiembre setiembre settembre set setembro сентября",
    "october oct oktober okt octobre octubre ottobre ott outubro out октября",
    "november nov novembre noviembre novembro ноября",
    "december dec dezember dez décembre decembre déc diciembre dic dicembre dezembro декабря",
)
MONTHS: dict[str, int] = {}
for _i, _names in enumerate(_MONTH_WORDS, start=1):
    for _n in _names.split():
        MONTHS.setdefault(_n, _i)

# Fixed offsets for the labels news sites print. "EST" is always -05:00 (sites that
# print EST in summer mean it literally); ambiguous labels (IST, CST-China) take the
# common news meaning.
TZ_OFFSETS: dict[str, float] = {
    "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "BST": 1, "WEST": 1, "CET": 1, "CEST": 2, "EET": 2,
    "EEST": 3, "MSK": 3, "IST": 5.5, "PKT": 5, "ICT": 7, "WIB": 7, "SGT": 8, "HKT": 8,
    "AWST": 8, "JST": 9, "KST": 9, "ACST": 9.5, "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13,
    "EST": -5, "EDT": -4, "ET": -5, "CST": -6, "CDT": -5, "CT": -6, "MST": -7, "MDT": -6,
    "PST": -8, "PDT": -7, "PT": -8, "AKST": -9, "AKDT": -8, "HST": -10, "AST": -4, "ADT": -3,
    "NST": -3.5, "BRT": -3, "ART": -3,
}

_MONTH_RE = r"(?P<mon>" + "|".join(sorted(MONTHS, key=len, reverse=True)) + r")\.?"
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th|er|º)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DATE_PATTERNS = [
    # June 3, 2024 / Jun. 3 2024 / February 2, 2023
    re.compile(rf"(?<!\w){_MONTH_RE}\s+{_DAY},?\s+{_YEAR}\b", re.I),
    # 3 June 2024 / Mon 3 Jun 2024 / 3rd of June, 2024 / 3. Dezember 2011 / 3 de junio de 2020 / 29 июня 2020
    re.compile(rf"\b{_DAY}\.?\s+(?:of\s+|de\s+)?{_MONTH_RE},?\s+(?:de\s+|del\s+)?{_YEAR}\b", re.I),
    # 2024-06-03, 2024/06/03, 2023.11.07 (full ISO strings go through parse_iso)
    re.compile(r"\b(?P<year>(?:19|20)\d\d)(?P<sep>[-/.])(?P<m>[01]?\d)(?P=sep)(?P<day>[0-3]?\d)(?![\d.]\d)"),
    # 06/03/2024 (US order unless the first number cannot be a month) / 03.06.2024 / 4. 2. 2022
    re.compile(r"(?<![\d.])(?P<a>[0-3]?\d)(?P<sep>[/.-]|\.\s)(?P<b>[0-3]?\d)(?P=sep)(?P<year>(?:19|20)\d\d)\b"),
    # 2020年6月3日 / 2023년 11월 7일
    re.compile(r"(?P<year>(?:19|20)\d\d)\s*[年년]\s*(?P<m>[01]?\d)\s*[月월]\s*(?P<day>[0-3]?\d)\s*[日일]?"),
]
_TIME_RE = re.compile(
    r"^[\s,|·•–-]*(?:at\s+|um\s+|à\s+|a\s+las\s+|alle\s+(?:ore\s+)?|om\s+|kl\.?\s*|klo\s+|в\s+)?"
    r"(?P<h>[0-2]?\d)(?:[:.]|\s?h\s?)(?P<mi>[0-5]\d)(?::(?P<s>[0-5]\d))?(?!\d)"
    r"\s*(?:uhr\b)?\s*(?P<ampm>[ap]\.?\s?m\b\.?)?",
    re.I,
)
_TZ_RE = re.compile(
    r"^\s*\(?\s*(?:(?P<off>(?:UTC|GMT)?\s?[+-]\d{1,2}(?::?\d{2})?)|(?P<lab>[A-Z]{1,5})\b)\s*\)?"
)
_ISO_RE = re.compile(
    r"^\s*(?P<y>\d{4})-(?P<mo>\d{2})-(?P<d>\d{2})"
    r"(?:[T\s](?P<h>\d{2}):(?P<mi>\d{2})(?::(?P<s>\d{2})(?:[.,]\d+)?)?)?"
    r"\s*(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?\s*$",
    re.I,
)


def _offset(text: str) -> timezone | None:
    """'+05:30' / '-0500' / 'UTC+2' / 'Z' -> tzinfo."""
    t = text.strip().upper().replace("UTC", "").replace("GMT", "").strip()
    if t in ("", "Z"):
        return UTC
    m = re.fullmatch(r"([+-])(\d{1,2}):?(\d{2})?", t)
    if not m:
        return None
    hours, minutes = int(m.group(2)), int(m.group(3) or 0)
    if hours > 14 or minutes > 59:
        return None
    sign = -1 if m.group(1) == "-" else 1
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def _label(text: str) -> timezone | None:
    hours = TZ_OFFSETS.get(text.upper())
    if hours is None:
        return None
    return UTC if hours == 0 else timezone(timedelta(hours=hours))


def ensure_aware(value: datetime | None, zone: tzinfo | None = None) -> datetime | None:
    """A naive value in `zone` (the source's ``timezone``: where the site prints times without a zone),
    else UTC (the documented last resort). A naive midnight is a day without a time: it stays UTC
    midnight, so that the stored date is the day the page shows."""
    if value is not None and value.tzinfo is None:
        if zone is None or value.time() == datetime.min.time():
            return value.replace(tzinfo=UTC)
        return value.replace(tzinfo=zone)
    return value


def parse_iso(text: str | None) -> datetime | None:
    """ISO 8601 as found in JSON-LD, meta tags and ``<time datetime>``."""
    if not text:
        return None
    m = _ISO_RE.match(text)
    if not m:
        return None
    try:
        value = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"] or 0), int(m["mi"] or 0), int(m["s"] or 0)
        )
    except ValueError:
        return None
    tz = _offset(m["tz"]) if m["tz"] else None
    return value.replace(tzinfo=tz) if tz else value


@dataclass(frozen=True, slots=True)
class DateHit:
    """A date printed in free text: where it is, its value, and whether a time of day was printed."""

    start: int
    end: int
    value: datetime
    has_time: bool


def _hit_value(m: re.Match[str], day_first: bool | None) -> datetime | None:
    groups = m.groupdict()
    try:
        year, day = int(groups["year"]), int(groups["day"]) if groups.get("day") else 0
        if groups.get("mon"):
            month = MONTHS[groups["mon"].lower().rstrip(".")]
        elif groups.get("m"):
            month = int(groups["m"])
        else:
            a, b = int(groups["a"]), int(groups["b"])
            # '/' is month-first on US-English pages; '.' and '-' are day-first; a value > 12 settles it
            month_first = groups["sep"] == "/" and not day_first
            if a > 12:
                month_first = False
            elif b > 12:
                month_first = True
            month, day = (a, b) if month_first else (b, a)
        return datetime(year, month, day)
    except (ValueError, KeyError):
        return None


def _with_time(value: datetime, text: str, end: int) -> tuple[datetime, int, bool]:
    """The time of day (and zone) printed right after a date, if any."""
    rest = text[end:end + 60]
    m = _TIME_RE.match(rest)
    if not m:
        return value, end, False
    hour, minute, second = int(m["h"]), int(m["mi"]), int(m["s"] or 0)
    ampm = (m["ampm"] or "").lower().replace(".", "").replace(" ", "")
    if ampm == "pm" and hour < 12:
        hour += 12
    elif ampm == "am" and hour == 12:
        hour = 0
    if hour > 23:
        return value, end, False
    value = value.replace(hour=hour, minute=minute, second=second)
    used = m.end()
    tz_m = _TZ_RE.match(rest[used:])
    if tz_m:
        tz = _offset(tz_m["off"]) if tz_m["off"] else _label(tz_m["lab"])
        if tz is not None:
            value = value.replace(tzinfo=tz)
            used += tz_m.end()
    return value, end + used, True


def find_dates(text: str, day_first: bool | None = None) -> list[DateHit]:
    """Every full date (day, month, year) printed in ``text``, in order, with the time printed after it.

    ``day_first``: the page's language writes ``03/06/2024`` day-first (anything but US English).
    """
    found: list[tuple[int, int, datetime]] = []
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            value = _hit_value(m, day_first)
            if value is not None:
                found.append((m.start(), m.end(), value))
    found.sort(key=lambda f: (f[0], -f[1]))
    hits: list[DateHit] = []
    last_end = -1
    for start, end, value in found:
        if start < last_end:
            continue  # overlaps an earlier (longer) match
        value, end, has_time = _with_time(value, text, end)
        hits.append(DateHit(start, end, value, has_time))
        last_end = end
    return hits


def _visible_match(text: str) -> tuple[datetime, int] | None:
    """The first date in free text: its value (with any time printed after it) and where it ends."""
    hits = find_dates(text)
    return (hits[0].value, hits[0].end) if hits else None


def parse_visible(text: str | None) -> datetime | None:
    """Parse a human-readable date with optional time and zone.

    Handles e.g. ``June 3, 2024 at 4:15 p.m. EST``, ``3 June 2024, 16:15 EST``,
    ``Mon 3 Jun 2024 21.15 GMT``, ``2024-06-03 16:15 (EST)``, ``06/03/2024 04:15 PM EST``,
    ``February 2, 2023``, ``3. Dezember 2011 um 14:05 Uhr`` and ``30 septembre 2018``.
    Returns a naive datetime when no zone is printed (the caller decides what a naive value means).
    """
    if not text:
        return None
    text = " ".join(text.split())
    iso = parse_iso(text)
    if iso is not None:
        return iso
    found = _visible_match(text)
    return found[0] if found else None


def parse_any(text: str | None) -> datetime | None:
    """ISO first, then visible formats."""
    if not text:
        return None
    return parse_iso(text) or parse_visible(text)


def htmldate_fallback(tree: object, url: str) -> datetime | None:
    """htmldate's original (publication) date: day precision, naive."""
    try:
        from htmldate import find_date
    except ImportError:  # pragma: no cover - htmldate is a declared dependency
        return None
    try:
        found = find_date(tree, url=url, original_date=True, extensive_search=True)
    except Exception:  # htmldate raises on odd markup; a missing date is not fatal
        return None
    return parse_iso(found) if found else None


# /2024/06/03/, /2024-06-03-, /20240603/ in a URL path: the publisher's own calendar day
_URL_DATE = re.compile(
    r"(?<![0-9])(?P<y>(?:19|20)\d\d)(?P<sep>[/_.-]?)(?P<m>0[1-9]|1[0-2])(?P=sep)(?P<d>0[1-9]|[12]\d|3[01])(?![0-9])")


def url_date(url: str) -> date | None:
    """A full year-month-day in the URL path (not the query), else ``None``."""
    path = url.split("?", 1)[0].split("#", 1)[0]
    path = path.split("://", 1)[-1]
    path = path[path.find("/"):] if "/" in path else ""
    for m in _URL_DATE.finditer(path):
        if not m["sep"] and not re.search(r"[/_-]$", path[:m.start()]):
            continue  # a bare 8-digit run must start a path segment (not an article id)
        try:
            return date(int(m["y"]), int(m["m"]), int(m["d"]))
        except ValueError:
            continue
    return None


def day_forms(day: date) -> list[str]:
    """Ways a page prints ``day`` for readers (lower-case): ISO, numeric day/month orders, month names."""
    y, m, d = day.year, day.month, day.day
    forms = [day.isoformat(), f"{d:02d}.{m:02d}.{y}", f"{d}.{m}.{y}", f"{d:02d}.{m:02d}.{y % 100:02d}",
             f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y}", f"{d:02d}/{m:02d}/{y}", f"{d}/{m}/{y}", f"{y}/{m:02d}/{d:02d}"]
    for name in _MONTH_WORDS[m - 1].split():
        forms += [f"{name} {d}, {y}", f"{name}. {d}, {y}", f"{d} {name} {y}", f"{d}. {name} {y}",
                  f"{d} de {name} de {y}", f"{d:02d} {name} {y}", f"{name} {d:02d}, {y}", f"{d:02d}. {name} {y}",
                  f"{d}. {name}. {y}", f"{d:02d}. {name}. {y}", f"{d} {name}. {y}", f"{d:02d} {name}. {y}"]
    return forms


def shown_in(text: str, day: date) -> bool:
    """``day`` is printed in ``text`` (the page's visible text, lower-cased, whitespace-collapsed)."""
    for form in day_forms(day):
        start = text.find(form)
        while start >= 0:
            end = start + len(form)
            # not part of a longer number ("12.3.2020" inside "112.3.2020", "2020-01-0" …)
            if (start == 0 or not text[start - 1].isdigit()) and (end == len(text) or not text[end].isdigit()):
                return True
            start = text.find(form, start + 1)
    return False


def prefer_shown(published: datetime | None, others: list[datetime | None], visible_text: str,
                 signals: list[str]) -> datetime | None:
    """A chosen publication day the page never prints, while it prints the day of another declared
    date (a second ``published`` meta, ``dateModified``, an "Updated" stamp): the page presents itself
    as of that day (a republished or updated piece), the day a reader and an archive date it by.
    Among several printed candidates the earliest wins."""
    if published is None:
        return published
    alternatives = sorted({c.date(): c for c in others if c is not None and c.date() != published.date()}.items())
    if not alternatives or shown_in(visible_text, published.date()):
        return published
    for day, value in alternatives:
        if shown_in(visible_text, day):
            signals.append("date:shown")
            return value
    return published


def _near(value: datetime, day: date, days: int = 1) -> bool:
    return abs((value.date() - day).days) <= days


EARLIEST = datetime(1995, 1, 1, tzinfo=UTC)  # before the web had news sites


def plausible(value: datetime, latest: datetime | None = None) -> bool:
    """A publication date can be neither before 1995 nor after the fetch (``latest``, default now)."""
    value = ensure_aware(value)
    return EARLIEST <= value <= (latest or datetime.now(UTC)) + timedelta(days=1)


def headline_date(shown: list[ShownDate]) -> ShownDate | None:
    """The publication date printed with the headline: the nearest one not labelled as something else."""
    for s in shown:
        if s.label in (None, "published") and not s.yearless:
            return s
    return None


def resolve_published(declared: datetime | None, markup: list[datetime], tree: object, url: str,
                      signals: list[str], shown: Callable[[], list[ShownDate]] | None = None,
                      labelled: Callable[[], list[datetime]] | None = None, weak: bool = False,
                      latest: datetime | None = None) -> datetime | None:
    """Choose the publication date: declared (JSON-LD/meta) → markup → headline → htmldate, checked against the URL.

    * A declared date stands unless the URL carries a date more than a day away
      (a declared "published" that is really the last modification or a re-index).
    * Visible markup dates (``<time>``, date boxes) are only trusted when htmldate's
      whole-page reading agrees on the day (sidebars and comment widgets print dates
      too); otherwise the date printed with the headline (byline, dateline) wins, then a
      date labelled "published" anywhere in the article, then htmldate's day (htmldate
      scores every date in the page, and picks sidebar, comment and archive dates when the
      page declares none).
    * A URL date is the last word on the day: a candidate far from it is replaced by
      another candidate near it, else by the URL date itself.
    """
    day = url_date(url)
    printed: list[list[ShownDate]] = []

    def shown_now() -> list[ShownDate]:  # computed once, only when needed: it walks the page
        if not printed:
            printed.append([s for s in (shown() if shown is not None else []) if s.yearless
                            or plausible(s.value, latest)])
        return printed[0]

    def labelled_now() -> list[datetime]:
        return [c for c in (labelled() if labelled is not None else []) if plausible(c, latest)]

    if declared is not None and not plausible(declared, latest):
        signals.append("date:implausible")
        declared = None
    markup = [c for c in markup if plausible(c, latest)]

    if declared is not None and (day is None or _near(declared, day)):
        if weak and day is None:
            # a generic date meta that the page contradicts where it prints the date for readers
            head = headline_date(shown_now())
            alt = [head.value] if head is not None else labelled_now()
            if alt and alt[0].date() != declared.date():
                signals.append("date:shown-over-meta")
                return alt[0]
        return declared
    if day is not None:
        for c in ([declared] if declared is not None else []) + markup:
            if _near(c, day):
                signals.append("date:url-checked")
                return c
        head = headline_date(shown_now())
        if head is not None and _near(head.value, day):
            signals.append("date:url-checked")
            return head.value
    found = ensure_aware(htmldate_fallback(tree, url))
    if day is not None:
        if found is not None and _near(found, day):
            signals.append("date:htmldate")
            return found
        signals.append("date:url")
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    if declared is not None:
        return declared
    for c in markup:
        if found is not None and c.date() == found.date():
            head = headline_date(shown_now())
            if head is not None and head.distance > 0 and 0 < abs((head.value.date() - c.date()).days) <= 3 and all(
                    s.value.date() != c.date() for s in shown_now()):
                # a date box the headline's surroundings do not print (the masthead's "today"), a
                # day or two from the dateline under the headline: the dateline is the article's
                signals.append("date:headline-over-markup")
                return head.value
            signals.append("date:markup")
            return c
    head = headline_date(shown_now())
    if head is not None:
        signals.append("date:headline")
        return head.value
    for c in labelled_now():
        signals.append("date:labelled")
        return c
    if found is None:
        if markup:
            signals.append("date:markup-unconfirmed")
        return markup[0] if markup else None
    yearless = next((s for s in shown_now() if s.yearless and s.label in (None, "published")), None)
    if yearless is not None:
        # the headline's day and month, in the year that puts it nearest htmldate's reading
        near = _with_year(yearless.value, found)
        if near is not None:
            signals.append("date:headline-yearless")
            return near
    signals.append("date:htmldate")
    if (found.month, found.day) == (1, 1) and not _shows_day(tree, found.date()):
        # htmldate fills a lone year (a copyright line) with 1 January: no day was found. The caller
        # drops it unless the page presents itself as of another date (see prefer_shown).
        signals.append("date:year-only")
    return found


def _shows_day(tree: Any, day: date) -> bool:
    """``day`` is printed somewhere in the page's visible text."""
    body = tree.find("body") if hasattr(tree, "find") else None
    chunks, _, _ = _text_chunks(body if body is not None else tree, None, skip=_OTHER_ITEMS)
    return shown_in(" ".join(" ".join(chunks).split()).lower(), day)


def _with_year(day_month: datetime, reference: datetime) -> datetime | None:
    """``day_month`` in the year that puts it nearest ``reference``, if within about half a year."""
    best = None
    for year in (reference.year - 1, reference.year, reference.year + 1):
        try:
            value = reference.replace(year=year, month=day_month.month, day=day_month.day)
        except ValueError:
            continue
        if best is None or abs(value - reference) < abs(best - reference):
            best = value
    return best if best is not None and abs(best - reference) <= timedelta(days=180) else None


def parse_hint(value: Any) -> datetime | None:
    """A crawler hint: a datetime, ISO 8601 (sitemaps), or RFC 2822 (feed pubDate, HTTP Last-Modified)."""
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    text = str(value).strip()
    parsed = parse_iso(text)
    if parsed is None:
        try:
            parsed = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            parsed = parse_visible(text)
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def _minute_precision(value: datetime) -> bool:
    return value.second == 0 and value.microsecond == 0


def late_hint_refines(published: datetime | None, hint: datetime) -> bool:
    """Whether a listing's publication time improves a ``published_at`` it agrees with: the page had
    no date, or one precise to the minute in the hint's very minute (the hint adds the seconds).
    The whole rule for a hint learned after extraction (a section page's teaser parsed later in the
    crawl, applied to the item in flight or the stored row); `refine_with_hints` adds the day-only
    rule, which needs the page's own zone that a stored UTC instant no longer has."""
    if hint.tzinfo is None:
        return False
    if published is None:
        return True
    return published.tzinfo is not None and _minute_precision(published) and published == hint.replace(
        second=0, microsecond=0) and hint != published


def refine_with_hints(published: datetime | None, modified: datetime | None, hints: Mapping[str, Any],
                      signals: list[str]) -> tuple[datetime | None, datetime | None]:
    """Add the precision a page lacks from what the crawler knows about the URL.

    * ``published_at`` (news-sitemap ``publication_date``, feed ``pubDate``, a listing teaser's
      ``<time datetime>``): its seconds for a minute-precision date in the same minute, its time
      for a day-only date on the same day; it stands in when the page has no date at all.
    * ``modified_at`` (sitemap ``lastmod``, HTTP ``Last-Modified``; ``last_modified`` is accepted
      too): the time of the last change. When it falls in the very minute the page says it was
      published, and the page shows no later update, the page has not changed since: the
      publication is that instant, to the second. A minute-precision "Updated" stamp in that
      minute gets its seconds the same way.
    Hints that disagree with the page are ignored: the page is the source of truth.
    """
    value = parse_hint(hints.get("published_at"))
    if value is not None:
        if published is None:
            signals.append("date:hint")
            published = value
        elif late_hint_refines(published, value) or (
                published.tzinfo is not None and published.time() == datetime.min.time()
                and published.date() in (value.date(), value.astimezone(published.tzinfo).date())):
            signals.append("date:hint-precision")  # the seconds of its minute, or the time of its day
            published = value
    changed = parse_hint(hints.get("modified_at") or hints.get("last_modified"))
    if changed is None:
        return published, modified
    minute = changed.replace(second=0, microsecond=0)
    if modified is not None and modified.tzinfo is not None and _minute_precision(modified) and modified == minute:
        modified = changed
    if (published is not None and published.tzinfo is not None and _minute_precision(published)
            and published == minute and (modified is None or modified <= changed)):
        signals.append("date:lastmod-precision")
        published = changed
    return published, modified


def publication_day(value: datetime | None, url: str, shown: list[datetime | None] | None = None) -> str | None:
    """The publication day in the publisher's calendar (see ``Page.published_day``).

    ``shown``: dates the page prints for its readers in the article region (``<time datetime>``
    with the publisher's own offset, a visible dateline). A declared instant in UTC (or another
    zone) can fall on the neighbouring day; the day the page shows is the publisher's calendar.
    """
    if value is None:
        return None
    if value.utcoffset() not in (None, timedelta(0)):
        return value.date().isoformat()  # stated in the publisher's own offset: its date is their calendar's
    day = url_date(url)
    if day is not None and _near(value, day):
        return day.isoformat()
    for c in shown or ():
        if c is None or (c.tzinfo is not None and c.utcoffset() == value.utcoffset()):
            continue  # a stamp in the declared instant's own zone says nothing about the local day
        if c.tzinfo is not None and value.tzinfo is not None and abs((c - value).total_seconds()) > 36 * 3600:
            continue
        if abs((c.date() - value.date()).days) == 1:
            return c.date().isoformat()
    return value.date().isoformat()


# -- the date printed with the headline -------------------------------------------------------

_TEXT_SKIP_TAGS = frozenset({"script", "style", "noscript", "template", "select", "option", "button", "svg", "head",
                             "aside", "nav", "footer", "form", "iframe", "figcaption"})
# furniture that prints other items' dates (comments, related stories, sidebars)
_OFF_ARTICLE = re.compile(
    r"(?:^|[-_\s])(?:comments?|comment-list|disqus|replies|related\w*|teasers?|sidebar|widgets?|recommend\w*"
    r"|most-?read|popular|trending|more-?stories|newsletter|share\w*|social|promo\w*|outbrain|taboola|cookies?"
    r"|consent|footer|menu|nav|navigation)(?:$|[-_\s])", re.I)
# what prints other items' dates even next to a "published" label: comments and lists of other stories
_OTHER_ITEMS = re.compile(
    r"(?:^|[-_\s])(?:comments?|comment-list|disqus|replies|related\w*|teasers?|recommend\w*|most-?read|popular"
    r"|trending|more-?stories|outbrain|taboola)(?:$|[-_\s])", re.I)
_PUB_LABEL = re.compile(
    r"(?:published|posted|written|released|created|first\s+published|veröffentlicht|erschienen|gepostet|erstellt"
    r"|datum|date|publié|publiée|publicado|publicada|pubblicato|gepubliceerd|geplaatst|опубликовано)", re.I)
_MOD_LABEL = re.compile(
    r"(?:updated?|modified|edited|aktualisiert|geändert|änderung|mis\s+à\s+jour|modifié|actualizado|actualización"
    r"|aggiornato|bijgewerkt|обновлено)", re.I)


_OTHER_LABEL = re.compile(
    r"(?:registered|registriert|joined|member\s+since|mitglied\s+seit|dabei\s+seit|inscrit|current\s+time"
    r"|aktuelle\s+zeit|today|heute|born|geboren|©|copyright|deadline|frist|bis\s+zum|until|event)", re.I)


@dataclass(frozen=True, slots=True)
class ShownDate:
    """A date printed near the headline: its value, distance in characters, and its label."""

    value: datetime
    has_time: bool
    distance: int  # characters between the headline and the date (negative: before the headline)
    label: str | None  # "published", "modified", "other" (not this page's date) or None
    yearless: bool = False  # printed without a year ("24 June", "6月24日"): ``value.year`` is a placeholder


def _text_chunks(root: Any, title_el: Any, after: int | None = None, skip: re.Pattern[str] = _OFF_ARTICLE,
                 skip_tags: frozenset[str] = _TEXT_SKIP_TAGS) -> tuple[list[str], int, int]:
    """Reader-visible text of ``root`` in document order, one chunk per text node, without
    furniture that prints other items' dates; also the chunk indexes where the headline starts
    and ends (``-1`` when ``title_el`` is not inside ``root``). ``after``: stop that many chunks
    after the headline (the dateline is close to it)."""
    chunks: list[str] = []
    first = last = -1
    stack: list[Any] = [root]
    end_title = object()
    # the page header that does not hold the headline is the site's masthead ("Tue, 14 Jan 2020": today)
    keep: set[Any] = set(title_el.iterancestors()) if title_el is not None else set()
    while stack:
        item = stack.pop()
        if item is end_title:
            last = len(chunks)
            continue
        if isinstance(item, str):
            chunks.append(item)
            if after is not None and last >= 0 and len(chunks) - last > after:
                break
            continue
        el = item
        if el is not root and el.tail and el.tail.strip():
            stack.append(el.tail)
        tag = el.tag
        if not isinstance(tag, str) or tag in skip_tags:
            continue
        if el is title_el:
            first = len(chunks)
            stack.append(end_title)
        elif tag == "header" and title_el is not None and el not in keep:
            continue
        else:
            cls = f"{el.get('class') or ''} {el.get('id') or ''}"
            if len(cls) > 1 and skip.search(cls):
                continue
        stack.extend(reversed(el))
        if el.text and el.text.strip():
            stack.append(el.text)
    return chunks, first, last


_HEADLINE_CLASS = re.compile(r"(?:^|[-_\s])(?:headline|title|heading|entry-title|post-title)(?:$|[-_\s])", re.I)


def headline_anchor(tree: Any, title: str | None) -> Any:
    """The element showing the headline when it is not an ``<h1>``: an ``<h2>``/``<h3>`` or an element
    with a title/headline class whose text matches the declared title (or one part of it: declared
    titles carry site names and kickers after " - ", " | ", ": ")."""
    full = " ".join(html.unescape(title or "").split()).casefold()
    parts = [p[:60] for p in [full, *re.split(r"\s+[|–—-]\s+|:\s+", full)] if len(p) >= 12]
    if not parts:
        return None
    for el in tree.iter("h1", "h2", "h3", "div", "span", "p", "header", "strong", "b", "td"):
        if el.tag in ("div", "span", "p", "header", "strong", "b", "td") and not _HEADLINE_CLASS.search(
                f"{el.get('class') or ''} {el.get('id') or ''}"):
            continue
        text = " ".join(el.text_content().split()).casefold()
        if not 10 <= len(text) <= 300:
            continue
        for part in parts:
            if text.startswith(part) or (len(text) >= 0.6 * len(part) and part.startswith(text[:60])) or (
                    len(text) <= 2 * len(part) and part in text):
                return el
    return None


def _date_label(before: str) -> str | None:
    """The label right before a date: "published" ("Published:", "Datum:"), "modified" ("Updated on",
    "aktualisiert am") or "other" (a forum member's "Registered:", "Current time:"), else ``None``."""
    tail = before[-40:]
    found = [(m.end(), kind) for kind, rx in (("published", _PUB_LABEL), ("modified", _MOD_LABEL),
                                              ("other", _OTHER_LABEL)) for m in rx.finditer(tail)]
    return max(found)[1] if found else None


# a day and month without a year, as datelines of current news print them ("МОСКВА, 29 июня",
# "24. Juni", "June 24", "6月24日")
_YEARLESS = [
    re.compile(rf"\b{_DAY}\.?\s+(?:de\s+)?{_MONTH_RE}(?![\w.]|,?\s*(?:de\s+)?\d)", re.I),
    re.compile(rf"(?<!\w){_MONTH_RE}\s+{_DAY}\b(?!,?\s*\d)", re.I),
    re.compile(r"(?<!\d)(?P<m>[01]?\d)\s*月\s*(?P<day>[0-3]?\d)\s*日"),
]


def shown_dates(root: Any, title_el: Any, day_first: bool | None = None, after: int = 600,
                before: int = 250) -> list[ShownDate]:
    """Dates printed with the headline: in the ``after`` characters of short text that follow it
    (byline, dateline, date box; of a long paragraph only its start, where a dateline sits) and the
    ``before`` characters that precede it (kicker, date line above the headline). Sorted by
    distance from the headline."""
    if title_el is None:
        return []
    chunks, first, last = _text_chunks(root, title_el, after=60)
    if first < 0:
        return []
    found: list[ShownDate] = []
    parts: list[str] = []
    size = long = 0
    for chunk in chunks[last:]:
        piece = " ".join(chunk.split())
        if len(piece) > 200:  # standfirst or body paragraph: only its start can be a dateline
            long += 1
            piece = piece[:80] + " …"
            if long > 2:
                parts.append(piece)
                break
        parts.append(piece)
        size += len(piece)
        if size > after:
            break
    text = " ".join(parts)
    for hit in find_dates(text, day_first):
        found.append(ShownDate(hit.value, hit.has_time, hit.start, _date_label(text[:hit.start])))
    if not found:
        matches = sorted((m for rx in _YEARLESS for m in rx.finditer(text[:200])), key=lambda m: m.start())
        for m in matches:
            groups = m.groupdict()
            try:
                month = MONTHS[groups["mon"].lower().rstrip(".")] if groups.get("mon") else int(groups["m"])
                value = datetime(2000, month, int(groups["day"]))  # a leap year: 29 February exists
            except (ValueError, KeyError):
                continue
            found.append(ShownDate(value, False, m.start(), _date_label(text[:m.start()]), yearless=True))
            break
    text = " ".join(" ".join(c.split()) for c in chunks[max(0, first - 12):first])[-before:]
    for hit in find_dates(text, day_first):
        found.append(ShownDate(hit.value, hit.has_time, hit.end - len(text) - 1, _date_label(text[:hit.start])))
    found.sort(key=lambda s: abs(s.distance))
    return found


_LABELLED = re.compile(
    r"(?:published|posted|first\s+published|veröffentlicht|erschienen|publié|publiée|publicado|publicada|pubblicato"
    r"|gepubliceerd|опубликовано)(?:\s+(?:on|am|le|el|il|op))?\s*:?\s*", re.I)


# German/Dutch put the participle last: "wurde am 3. Dezember 2011 um 14:05 Uhr veröffentlicht"
_LABEL_AFTER = re.compile(r"\b(?:veröffentlicht|erschienen|gepostet|publiziert|gepubliceerd)\b", re.I)


def labelled_dates(root: Any, day_first: bool | None = None) -> list[datetime]:
    """Dates anywhere in the page text (not in comments or related lists) with a publication label:
    "Published on …", "veröffentlicht am …", "erschienen am: …", "publié le …", or after the date
    ("… wurde am 3. Dezember 2011 veröffentlicht")."""
    chunks, _, _ = _text_chunks(root, None, skip=_OTHER_ITEMS, skip_tags=_TEXT_SKIP_TAGS - {"footer", "aside"})
    text = " ".join(" ".join(c.split()) for c in chunks)
    out: list[tuple[int, datetime]] = []
    for m in _LABELLED.finditer(text):
        hits = find_dates(text[m.end():m.end() + 60], day_first)
        if hits and hits[0].start <= 15:  # allow a weekday: "am Samstag, 3. Dezember 2011"
            out.append((m.start(), hits[0].value))
    for m in _LABEL_AFTER.finditer(text):
        start = max(0, m.start() - 90)
        hits = find_dates(text[start:m.start()], day_first)
        if hits and m.start() - (start + hits[-1].end) <= 35:
            out.append((m.start(), hits[-1].value))
    return [value for _, value in sorted(out, key=lambda o: o[0])]
