"""Date parsing: machine dates (ISO 8601) and the visible date strings news pages print.

Every function returns a timezone-aware ``datetime`` or ``None``. A zone label
("EST", "GMT", "(EST)") or an offset wins; a naive value is taken as UTC only
as the last resort, because storing a naive datetime would make rows
incomparable.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta, timezone

MONTHS: dict[str, int] = {}
for _i, _names in enumerate(
    (
        "january jan", "february feb", "march mar", "april apr", "may", "june jun",
        "july jul", "august aug", "september sep sept", "october oct", "november nov",
        "december dec",
    ),
    start=1,
):
    for _n in _names.split():
        MONTHS[_n] = _i

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

_MONTH_RE = (
    r"(?P<mon>jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    r"|sept?(?:ember)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)\.?"
)
_DAY = r"(?P<day>[0-3]?\d)(?:st|nd|rd|th)?"
_YEAR = r"(?P<year>(?:19|20)\d\d)"
_DATE_PATTERNS = [
    # June 3, 2024 / Jun. 3 2024 / February 2, 2023
    re.compile(rf"\b{_MONTH_RE}\s+{_DAY},?\s+{_YEAR}\b", re.I),
    # 3 June 2024 / Mon 3 Jun 2024 / 3rd of June, 2024
    re.compile(rf"\b{_DAY}\.?\s+(?:of\s+)?{_MONTH_RE},?\s+{_YEAR}\b", re.I),
    # 2024-06-03 (not followed by T: full ISO strings go through parse_iso)
    re.compile(r"\b(?P<year>(?:19|20)\d\d)[-/.](?P<m>[01]?\d)[-/.](?P<day>[0-3]?\d)\b"),
    # 06/03/2024 (US order unless the first number cannot be a month) / 03.06.2024
    re.compile(r"\b(?P<a>[0-3]?\d)(?P<sep>[/.-])(?P<b>[0-3]?\d)(?P=sep)(?P<year>(?:19|20)\d\d)\b"),
]
_TIME_RE = re.compile(
    r"^[\s,|·•–-]*(?:at\s+|um\s+|à\s+)?(?P<h>[0-2]?\d)[:.h](?P<mi>[0-5]\d)(?::(?P<s>[0-5]\d))?"
    r"\s*(?P<ampm>[ap]\.?\s?m\.?)?",
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


def ensure_aware(value: datetime | None) -> datetime | None:
    """Naive -> UTC (the documented last resort)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
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


def _visible_match(text: str) -> tuple[datetime, int] | None:
    """Find the first date in free text; returns the naive date and where it ends."""
    best: tuple[int, datetime, int] | None = None
    for pattern in _DATE_PATTERNS:
        for m in pattern.finditer(text):
            groups = m.groupdict()
            try:
                year, day = int(groups["year"]), int(groups["day"]) if groups.get("day") else 0
                if groups.get("mon"):
                    month = MONTHS[groups["mon"].lower().rstrip(".")]
                elif groups.get("m"):
                    month = int(groups["m"])
                else:
                    a, b = int(groups["a"]), int(groups["b"])
                    # '/' is US month-first; '.' and '-' are day-first; a value > 12 settles it
                    month_first = groups["sep"] == "/" and a <= 12
                    if a > 12:
                        month_first = False
                    elif b > 12:
                        month_first = True
                    month, day = (a, b) if month_first else (b, a)
                value = datetime(year, month, day)
            except (ValueError, KeyError):
                continue
            if best is None or m.start() < best[0]:
                best = (m.start(), value, m.end())
            break
    if best is None:
        return None
    return best[1], best[2]


def parse_visible(text: str | None) -> datetime | None:
    """Parse a human-readable date with optional time and zone.

    Handles e.g. ``June 3, 2024 at 4:15 p.m. EST``, ``3 June 2024, 16:15 EST``,
    ``Mon 3 Jun 2024 21.15 GMT``, ``2024-06-03 16:15 (EST)``, ``06/03/2024 04:15 PM EST``
    and ``February 2, 2023``. Returns a naive datetime when no zone is printed (the
    caller decides what a naive value means).
    """
    if not text:
        return None
    text = " ".join(text.split())
    iso = parse_iso(text)
    if iso is not None:
        return iso
    found = _visible_match(text)
    if found is None:
        return None
    value, end = found
    rest = text[end:]
    m = _TIME_RE.match(rest)
    if m:
        hour, minute, second = int(m["h"]), int(m["mi"]), int(m["s"] or 0)
        ampm = (m["ampm"] or "").lower().replace(".", "").replace(" ", "")
        if ampm == "pm" and hour < 12:
            hour += 12
        elif ampm == "am" and hour == 12:
            hour = 0
        if hour > 23:
            return value
        value = value.replace(hour=hour, minute=minute, second=second)
        rest = rest[m.end():]
        tz_m = _TZ_RE.match(rest)
        if tz_m:
            tz = _offset(tz_m["off"]) if tz_m["off"] else _label(tz_m["lab"])
            if tz is not None:
                value = value.replace(tzinfo=tz)
    return value


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


# month names as pages print them (en, de, fr, es, it, nl, pt), for matching a known day in visible text
_MONTH_NAMES = [
    "january jan januar janvier enero gennaio januari janeiro", "february feb februar février febrero febbraio"
    " februari fevereiro", "march mar märz mars marzo maart março", "april apr avril abril aprile",
    "may mai mayo maggio mei maio", "june jun juni juin junio giugno junho", "july jul juli juillet julio luglio"
    " julho", "august aug août agosto augustus", "september sep sept septembre septiembre settembre setembro",
    "october oct oktober octobre octubre ottobre outubro", "november nov novembre noviembre novembro",
    "december dec dezember décembre diciembre dicembre dezembro",
]


def day_forms(day: date) -> list[str]:
    """Ways a page prints ``day`` for readers (lower-case): ISO, numeric day/month orders, month names."""
    y, m, d = day.year, day.month, day.day
    forms = [day.isoformat(), f"{d:02d}.{m:02d}.{y}", f"{d}.{m}.{y}", f"{d:02d}.{m:02d}.{y % 100:02d}",
             f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y}", f"{d:02d}/{m:02d}/{y}", f"{d}/{m}/{y}", f"{y}/{m:02d}/{d:02d}"]
    for name in _MONTH_NAMES[m - 1].split():
        forms += [f"{name} {d}, {y}", f"{name}. {d}, {y}", f"{d} {name} {y}", f"{d}. {name} {y}",
                  f"{d} de {name} de {y}", f"{d:02d} {name} {y}", f"{name} {d:02d}, {y}"]
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


def resolve_published(declared: datetime | None, markup: list[datetime], tree: object, url: str,
                      signals: list[str]) -> datetime | None:
    """Choose the publication date: declared (JSON-LD/meta) → markup → htmldate, checked against the URL.

    * A declared date stands unless the URL carries a date more than a day away
      (a declared "published" that is really the last modification or a re-index).
    * Visible markup dates (``<time>``, date boxes) are only trusted when htmldate's
      whole-page reading agrees on the day (sidebars and comment widgets print dates
      too); otherwise htmldate's day wins.
    * A URL date is the last word on the day: a candidate far from it is replaced by
      another candidate near it, else by the URL date itself.
    """
    day = url_date(url)
    if declared is not None and (day is None or _near(declared, day)):
        return declared
    candidates = ([declared] if declared is not None else []) + markup
    if day is not None:
        for c in candidates:
            if _near(c, day):
                signals.append("date:url-checked")
                return c
    found = ensure_aware(htmldate_fallback(tree, url))
    if day is not None:
        if found is not None and _near(found, day):
            signals.append("date:htmldate")
            return found
        signals.append("date:url")
        return datetime(day.year, day.month, day.day, tzinfo=UTC)
    if declared is not None:
        return declared
    if found is None:
        if markup:
            signals.append("date:markup-unconfirmed")
        return markup[0] if markup else None
    for c in markup:
        if c.date() == found.date():
            signals.append("date:markup")
            return c
    signals.append("date:htmldate")
    return found


def publication_day(value: datetime | None, url: str, shown: list[datetime | None] | None = None) -> str | None:
    """The publication day in the publisher's calendar (see ``Page.published_day``).

    ``shown``: dates the page prints for its readers in the article region (``<time datetime>``
    with the publisher's own offset, a visible dateline). A declared instant in UTC (or another
    zone) can fall on the neighbouring day; the day the page shows is the publisher's calendar.
    """
    if value is None:
        return None
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
