"""Publication dates: visible date formats in several languages, the date printed with the headline,
labelled dates, weak meta, and the precision crawler hints add (newssite pages, real generator)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from lxml import etree

from crawler.discovery import parse_listing
from crawler.extract import extract_page
from crawler.extract.dates import find_dates, parse_hint, parse_visible, refine_with_hints

NEWSSITE = Path(__file__).resolve().parents[2] / "shared" / "bench"
PARAS = "".join(f"<p>Paragraph {i} of the story, long enough to count as the article body text here.</p>"
                for i in range(8))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("Dieser Beitrag wurde am 19. Mai 2010 um 23:03 Uhr gepostet", datetime(2010, 5, 19, 23, 3)),
        ("News24 13 Jan 2020, 22:11 GMT+10", datetime(2020, 1, 13, 22, 11, tzinfo=timezone(timedelta(hours=10)))),
        ("Datum: 03.02.2022 Autor: se", datetime(2022, 2, 3)),
        ("von Deutscher Tennis Bund 4. 2. 2022.", datetime(2022, 2, 4)),
        ("Le 11 septembre 2018 à 12:57", datetime(2018, 9, 11, 12, 57)),
        ("aktualisiert am 06. Mär. 2023", datetime(2023, 3, 6)),
        ("3 de junio de 2020", datetime(2020, 6, 3)),
        ("29 июня 2020 г.", datetime(2020, 6, 29)),
        ("2020年6月3日", datetime(2020, 6, 3)),
        ("written: 2023-11-07 15:03:30 / updated", datetime(2023, 11, 7, 15, 3, 30)),
        ("19 FEB 2020 - 18:37 CET", datetime(2020, 2, 19, 18, 37, tzinfo=timezone(timedelta(hours=1)))),
        ("Thursday, November 9, 2023 4:41AM", datetime(2023, 11, 9, 4, 41)),
        ("12 ottobre 2021 alle 10:30", datetime(2021, 10, 12, 10, 30)),
        ("Ausgabe (10-2023)", None),
        ("May 2010", None),
    ],
)
def test_visible_dates_in_several_languages(text: str, want: datetime | None) -> None:
    assert parse_visible(text) == want


def test_numeric_order_follows_the_page_language() -> None:
    assert find_dates("05/03/2024")[0].value == datetime(2024, 5, 3)  # US English: month first
    assert find_dates("05/03/2024", day_first=True)[0].value == datetime(2024, 3, 5)
    assert find_dates("17/02/2022")[0].value == datetime(2022, 2, 17)  # cannot be month-first
    # a French "et" is not the US "ET" zone
    assert find_dates("le 3 juin 2024 à 16:15 et puis")[0].value.tzinfo is None


def _page(head: str, body: str, lang: str = "de") -> str:
    return f'<html lang="{lang}"><head>{head}</head><body>{body}</body></html>'


SIDEBAR = ('<aside class="sidebar"><h3>Neueste</h3><ul>'
           + "".join(f'<li><a href="/n{i}">Meldung {i}</a> 0{i}.01.2022</li>' for i in range(1, 6)) + "</ul></aside>")
COMMENTS = '<div class="comments"><p>Markus 04.02.2022 - 00:00 Uhr: Es ist völlig egal.</p></div>'


def test_the_date_under_the_headline_beats_sidebar_and_comment_dates() -> None:
    """No declared date: the byline's date is the publication, not a sidebar's or a comment's."""
    html = _page("<title>Die Autohäuser bleiben</title>",
                 '<nav><a href="/">Home</a></nav><h1>Die Autohäuser bleiben</h1>'
                 f"<div>Datum: 03.02.2022</div><div>Autor: se</div>{PARAS}{COMMENTS}{SIDEBAR}")
    page = extract_page(html, "https://example.de/nachrichten/autohaeuser-bleiben-3126349", assume_article=True)
    assert page.published_day == "2022-02-03"
    assert "date:headline" in page.signals


def test_a_forum_members_registration_date_is_not_the_post_date() -> None:
    html = _page("<title>Was ist Freie Software</title>",
                 "<h1>Was ist Freie Software</h1><div>r23 Beiträge: 1626 Registriert: 18.09.2008, 05:56</div>"
                 f"<div>Beitrag von r23 » 21.01.2009, 05:42</div>{PARAS}")
    page = extract_page(html, "https://forum.example.de/viewtopic.php?t=167", assume_article=True)
    assert page.published_day == "2009-01-21"


def test_a_labelled_date_anywhere_in_the_article() -> None:
    """'Erschienen am' in the footer of a review, no date near the headline."""
    html = _page("<title>Vom Boden aus gedacht</title>",
                 f"<h1>Vom Boden aus gedacht</h1>{PARAS}"
                 '<div class="rez_footer"><p>Letzte Änderung: 31.10.2023 - 14:49:39<br>Erschienen am: 01.11.2023'
                 "</p></div>")
    page = extract_page(html, "https://literatur.example.de/rezension,30063.html", assume_article=True)
    assert page.published_day == "2023-11-01"
    assert "date:labelled" in page.signals
    # German word order: the label after the date
    after = html.replace("Erschienen am: 01.11.2023",
                         "Dieser Beitrag wurde am Samstag, 3. Dezember 2011 veröffentlicht")
    assert extract_page(after, "https://blog.example.de/kein-cyberterrorismus/", assume_article=True
                        ).published_day == "2011-12-03"


def test_a_generic_date_meta_contradicted_by_the_printed_date() -> None:
    """A bare <meta name="date"> (often the build date) loses to the date printed under the headline;
    article:published_time does not."""
    body = f"<h1>Eva Welskop-Deffaa gewählt</h1><p>Stand: 13.10.2021 18:00 Uhr</p>{PARAS}"
    weak = _page('<title>Eva Welskop-Deffaa gewählt</title><meta name="date" content="2021-10-15">', body)
    page = extract_page(weak, "https://www.example.de/presse/welskop-deffaa-gewaehlt", assume_article=True)
    assert page.published_day == "2021-10-13" and "date:shown-over-meta" in page.signals
    strong = weak.replace('name="date"', 'property="article:published_time"')
    assert extract_page(strong, "https://www.example.de/presse/welskop-deffaa-gewaehlt",
                        assume_article=True).published_day == "2021-10-15"


def test_microdata_date_published_is_declared() -> None:
    html = _page("<title>eBay-Vorlagen angepasst</title>",
                 '<h1>eBay-Vorlagen angepasst</h1><time itemprop="dateModified" class="hidden">2018-08-29 14:15:57'
                 '</time><time itemprop="datePublished" datetime="2018-06-22 10:20:00" class="hidden"></time>'
                 f"{PARAS}<p>Zuletzt geprüft am 29.08.2018, zuerst erstellt 22.06.2018 10:20.</p>")
    page = extract_page(html, "https://shop.example.de/ebay-vorlagen", assume_article=True)
    assert page.published_day == "2018-06-22"
    plain = html.replace(' itemprop="datePublished"', "")
    assert extract_page(plain, "https://shop.example.de/ebay-vorlagen", assume_article=True
                        ).published_day == "2018-08-29"


def test_hint_parsing() -> None:
    assert parse_hint("Fri, 28 Feb 2025 18:19:50 +0000") == datetime(2025, 2, 28, 18, 19, 50, tzinfo=UTC)
    assert parse_hint("Fri, 28 Feb 2025 18:19:50 GMT") == datetime(2025, 2, 28, 18, 19, 50, tzinfo=UTC)
    assert parse_hint("2025-02-28T13:19:50-05:00") == datetime(2025, 2, 28, 18, 19, 50, tzinfo=UTC)
    assert parse_hint("2025-02-28") is None  # no zone, no instant
    assert parse_hint("garbage") is None


def test_lastmod_adds_seconds_only_to_an_unchanged_page() -> None:
    est = timezone(timedelta(hours=-5))
    published = datetime(2025, 2, 27, 13, 8, tzinfo=est)
    signals: list[str] = []
    got, _ = refine_with_hints(published, None, {"modified_at": "2025-02-27T18:08:33Z"}, signals)
    assert got == datetime(2025, 2, 27, 18, 8, 33, tzinfo=UTC) and signals == ["date:lastmod-precision"]
    # changed later: lastmod is the update, not the publication
    got, _ = refine_with_hints(published, None, {"modified_at": "2025-02-28T06:09:33Z"}, [])
    assert got == published
    # the page shows a later update in the same minute range: the update gets the seconds, not the publication
    updated = datetime(2025, 2, 28, 1, 9, tzinfo=est)
    got, mod = refine_with_hints(published, updated, {"last_modified": "Fri, 28 Feb 2025 06:09:33 GMT"}, [])
    assert got == published and mod == datetime(2025, 2, 28, 6, 9, 33, tzinfo=UTC)
    # a page date with seconds is never replaced
    exact = datetime(2025, 2, 27, 18, 8, 12, tzinfo=UTC)
    assert refine_with_hints(exact, None, {"modified_at": "2025-02-27T18:08:33Z"}, [])[0] == exact


@pytest.fixture(scope="module")
def newssite(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (NEWSSITE / "newssite").is_dir():
        pytest.skip("shared newssite generator not available")
    out = tmp_path_factory.mktemp("newssite") / "build"
    subprocess.run([sys.executable, "-m", "newssite", "build", str(out), "--articles", "150", "--seed", "7",
                    "--port", "8080", "--rate", "visible_date_only=0.5"],
                   env={**os.environ, "PYTHONPATH": str(NEWSSITE)}, check=True, stdout=subprocess.DEVNULL)
    return out


def test_newssite_visible_dates_get_seconds_from_sitemap_lastmod_and_feed(newssite: Path) -> None:
    """Pages whose only date is a visible one (minute precision) are exact to the second with the
    hints a crawler has: the sitemap's lastmod (or Last-Modified) and the feed's pubDate."""
    manifest = json.loads((newssite / "manifest.json").read_text(encoding="utf-8"))
    base, root = manifest["base_url"], newssite / "site"
    lastmod = {}
    for path in root.glob("sitemaps/articles-*.xml"):
        lastmod.update({e.loc: e.lastmod for e in parse_listing(path.read_bytes(), base).entries})
    pubdate = {item.findtext("link").split("?")[0]: item.findtext("pubDate")
               for item in etree.fromstring((root / "rss.xml").read_bytes()).iter("item")}
    checked = unchanged = without_hints_exact = 0
    for article in manifest["articles"]:
        if article["date_markup"] != "visible" or article["kind"] == "stub":
            continue
        html = (root / article["url"][len(base) + 1:] / "index.html").read_bytes()
        want = datetime.fromisoformat(article["published"])
        hints = {"modified_at": lastmod[article["url"]]}
        if article["url"] in pubdate:
            hints["published_at"] = pubdate[article["url"]]
        page = extract_page(html, article["url"], encoding=article["encoding"], hints=hints)
        plain = extract_page(html, article["url"], encoding=article["encoding"]).fields["published_at"]
        assert plain.replace(second=0) == want.replace(second=0), article["id"]  # the minute, from the page
        without_hints_exact += plain == want
        if article["published"] == article["modified"] or article["url"] in pubdate:
            assert page.fields["published_at"] == want, (article["id"], page.signals)
            unchanged += 1
        else:  # updated later and not in the feed: the page's minute, nothing invented
            assert page.fields["published_at"] == plain
        checked += 1
    assert checked >= 40 and unchanged >= 25
    assert without_hints_exact < unchanged  # the seconds come from the hints


def test_the_mastheads_today_is_not_the_articles_date() -> None:
    """A date box in the site header (today's date) against the dateline under the headline."""
    html = _page('<meta property="og:type" content="article"><title>Megablaze brought under control</title>',
                 '<header><div class="logo"><a href="/">Star</a></div><span class="date">Tue, 14 Jan 2020</span>'
                 '</header><div class="single"><h2>Megablaze brought under control</h2>'
                 f"<p>News24<br>13 Jan 2020, 22:11 GMT+10</p>{PARAS}</div>", lang="en")
    page = extract_page(html, "https://www.example.com/news/263700449/megablaze-brought-under-control",
                        assume_article=True)
    assert page.fields["published_at"] == datetime(2020, 1, 13, 12, 11, tzinfo=UTC)
    assert page.published_day == "2020-01-13"  # the publisher's calendar: stated with its own offset


def test_a_lone_copyright_year_is_not_a_publication_day() -> None:
    html = _page("<title>Neubau Werkstattgebäude</title>",
                 f"<h1>Neubau Werkstattgebäude</h1>{PARAS}<footer>© 1998-2022 WSL</footer>")
    page = extract_page(html, "https://neubau.example.ch/de/index.html", assume_article=True)
    assert page.fields["published_at"] is None and "date:year-only" in page.signals


def test_published_day_of_an_instant_in_the_publishers_offset() -> None:
    """The URL holds the day the story was started; the page states 19 Feb 18:37 +01:00."""
    html = _page('<meta property="article:published_time" content="2020-02-19T18:37:32+01:00">'
                 "<title>La Antártida a 20 grados</title>", f"<h1>La Antártida a 20 grados</h1>{PARAS}", lang="es")
    page = extract_page(html, "https://elpais.example/elpais/2020/02/18/ciencia/1582045946.html", assume_article=True)
    assert page.published_day == "2020-02-19"
    # a UTC instant just after midnight stays on the URL's (local) day
    utc = html.replace("2020-02-19T18:37:32+01:00", "2020-02-19T02:10:00Z")
    assert extract_page(utc, "https://elpais.example/elpais/2020/02/18/ciencia/1582045946.html",
                        assume_article=True).published_day == "2020-02-18"


def test_a_dateline_without_a_year_takes_the_nearest_year() -> None:
    html = _page("<title>NEWS WEB EASY|体罰を禁止する法律</title>",
                 '<h1>子<ruby>供<rt>ども</rt></ruby>への体罰を禁止する法律ができる</h1>'
                 f'<p class="article-main__date">[06月24日 11時30分]</p>{PARAS}'
                 "<div>Archiv: 2019-06-19 Meldung</div>", lang="ja")
    page = extract_page(html, "https://www3.example.jp/news/easy/k10011959621000.html", assume_article=True)
    assert page.published_day == "2019-06-24" and "date:headline-yearless" in page.signals


def test_no_publication_date_after_the_fetch_or_before_1995() -> None:
    """An event date under the headline ("am 4. März 2022") cannot be the publication of a page fetched
    before it; a 1975 birth date cannot be a web page's."""
    html = _page("<title>Davis-Cup: Kohlmann nominiert</title>",
                 "<h1>Davis-Cup: Kohlmann nominiert</h1><p>Qualifiers am 4. März 2022 in Rio</p>"
                 f"<p>Born 28 January 1975</p>{PARAS}<p>Veröffentlicht am 04.02.2022</p>")
    url = "https://www.example.de/davis-cup/kohlmann-nominiert"
    fetched = {"fetched_at": "2022-02-10T09:00:00Z"}
    assert extract_page(html, url, assume_article=True).published_day == "2022-03-04"  # fetched "now": plausible
    page = extract_page(html, url, assume_article=True, hints=fetched)
    assert page.published_day == "2022-02-04" and "date:labelled" in page.signals


_FERRY = " ".join(f"Paragraph {i}: the harbour authority approved the new ferry timetable after a long "
                  "consultation with the islands." for i in range(8))


def _ferry_page(dateline: str) -> str:
    paragraphs = "".join(f"<p>{p}.</p>" for p in _FERRY.split(". "))
    return ("<html><head><title>Ferry timetable approved</title></head><body><article><h1>Ferry timetable "
            f"approved</h1>{dateline}{paragraphs}</article></body></html>")


@pytest.mark.parametrize(("dateline", "zone", "want"), [
    # a time printed without a zone is the source's local time, standard or summer
    ('<div class="article-date">12.03.2025 um 14:05 Uhr</div>', "Europe/Berlin", datetime(2025, 3, 12, 13, 5)),
    ('<div class="article-date">12.07.2025 um 14:05 Uhr</div>', "Europe/Berlin", datetime(2025, 7, 12, 12, 5)),
    ('<time datetime="2025-03-12T14:05">12 March</time>', "America/New_York", datetime(2025, 3, 12, 18, 5)),
    # without a source zone: UTC, the last resort
    ('<div class="article-date">12.03.2025 um 14:05 Uhr</div>', None, datetime(2025, 3, 12, 14, 5)),
    # a zone the page prints wins; a day without a time stays that day
    ('<div class="article-date">12 March 2025, 14:05 GMT</div>', "Europe/Berlin", datetime(2025, 3, 12, 14, 5)),
    ('<time datetime="2025-03-12T14:05:00+05:30">12 March</time>', "Europe/Berlin", datetime(2025, 3, 12, 8, 35)),
    ('<div class="article-date">12 March 2025</div>', "America/Los_Angeles", datetime(2025, 3, 12)),
])
def test_a_time_without_a_zone_is_the_sources_local_time(dateline: str, zone: str | None, want: datetime) -> None:
    from zoneinfo import ZoneInfo

    page = extract_page(_ferry_page(dateline), "https://islands.example/news/ferry-timetable/",
                        zone=ZoneInfo(zone) if zone else None)
    assert page.fields["published_at"].astimezone(UTC) == want.replace(tzinfo=UTC)


def test_the_crawl_extracts_in_the_sources_zone(tmp_path: Path) -> None:
    """`timezone` in the sources file reaches the extractor (crawler/extract_pool.py ``process_page``)."""
    from crawler.demo.run import write_sources_file
    from crawler.extract_pool import process_page
    from crawler.sources import load_source

    sources = write_sources_file(tmp_path / "sources.toml", {"islands": {
        "allowed_domains": ["islands.example"], "feeds": ["https://islands.example/rss"],
        "timezone": "Europe/Berlin"}})
    result = process_page(load_source(sources, "islands"), "https://islands.example/news/ferry-timetable/",
                          _ferry_page('<div class="article-date">12.03.2025 um 14:05 Uhr</div>').encode(),
                          "text/html; charset=utf-8")
    assert result.fields is not None
    assert result.fields["published_at"].astimezone(UTC) == datetime(2025, 3, 12, 13, 5, tzinfo=UTC)
