"""What feeds and sitemaps say of a URL reaches its extraction, whichever listing named it first."""

from __future__ import annotations

from pathlib import Path

from scrapy.http import Request

from crawler.demo.run import write_sources_file
from crawler.discovery import SitemapEntry
from crawler.sources import load_source
from crawler.spiders.news import NewsSpider

URL = "https://news.example.com/world/2025/02/20/a/"


def test_hints_of_later_listings_merge_into_the_first_request() -> None:
    spider = NewsSpider(source="herald")
    from_feed = spider._remember_hints(URL, SitemapEntry(URL, published="Thu, 20 Feb 2025 19:29:55 +0000"))
    # The news sitemap lists it later: its request is dropped by the dupefilter, its hints are not.
    later = spider._remember_hints(URL, SitemapEntry(URL, lastmod="2025-02-21T08:00:00Z",
                                                     news_publication_date="2025-02-20T19:29:56Z"))
    assert later is from_feed
    assert from_feed == {"published_at": "2025-02-20T19:29:56Z", "modified_at": "2025-02-21T08:00:00Z"}
    # A feed listing it once more does not displace the news sitemap's time.
    spider._remember_hints(URL, SitemapEntry(URL, published="Thu, 20 Feb 2025 19:00:00 +0000"))
    assert from_feed["published_at"] == "2025-02-20T19:29:56Z"


def test_a_teaser_time_reaches_a_page_listed_without_dates_and_handled_pages_are_forgotten() -> None:
    spider = NewsSpider(source="herald")
    hints = spider._remember_hints(URL, SitemapEntry(URL))
    assert hints == {}
    assert spider._remember_hints(URL, SitemapEntry(URL, lastmod="2025-02-21")) is hints
    redirected = Request(URL.rstrip("/") + "-moved/", meta={"newsingest_hints": hints, "redirect_urls": [URL]})
    assert spider._pop_hints(redirected) == {"modified_at": "2025-02-21"}
    assert spider._listed_hints == {}


def test_a_teaser_time_reaches_a_page_first_requested_from_a_plain_link() -> None:
    """The page was requested from a link with no time (a related-stories list); a section teaser gives
    its time while that request waits (the sitemap's request of it is dropped as a duplicate)."""
    spider = NewsSpider(source="herald")
    plain = Request(URL, meta={"follow_depth": 2})
    spider._remember_hints(URL, SitemapEntry(URL, published="2025-02-20T19:29:56Z"))
    assert spider._pop_hints(plain) == {"published_at": "2025-02-20T19:29:56Z"}
    assert spider._listed_hints == {}


def test_teaser_times_from_a_section_page() -> None:
    from scrapy.http import HtmlResponse

    body = b"""<html><body>
<article class="teaser"><h2><a href="/world/a/">A</a></h2><time datetime="2025-02-23T06:36:07Z">Feb 23</time>
  <a href="/author/ana-lima/">Ana Lima</a></article>
<article><a href="/world/b/">B</a><time datetime="2025-02-22">Feb 22</time></article>
<article><a href="/world/c/">C</a><time datetime="2025-02-21T01:02:03Z">x</time>
  <time datetime="2025-02-21T05:06:07Z">y</time></article>
<ul><li><a href="/world/d/">D</a> <time datetime="2025-02-20T10:11:12+01:00">Feb 20</time></li></ul>
</body></html>"""
    response = HtmlResponse("https://news.example.com/world/", body=body, encoding="utf-8")
    # Only a teaser with exactly one full timestamp speaks for its links: its headline's, when it has one.
    assert NewsSpider._teaser_times(response) == {
        "https://news.example.com/world/a/": "2025-02-23T06:36:07Z",
        "https://news.example.com/world/d/": "2025-02-20T10:11:12+01:00",
    }


def test_numbered_pages_of_a_listing_stay_at_its_depth(tmp_path: Path) -> None:
    """Page 2 of a section links "next" (page 3) and the numbered pages (6, 12): all are the listing's
    own pages, so they keep its depth whichever link is met first; an article link is one hop deeper.
    Otherwise page 6, met first as a numbered link one hop down, is at the depth limit: its teasers'
    links are never followed and no page links to page 7."""
    from scrapy.http import HtmlResponse

    sources = write_sources_file(tmp_path / "sources.toml", {"herald": {
        "allowed_domains": ["news.example.com"], "start_urls": ["https://news.example.com/"], "follow_depth": 2}})
    spider = NewsSpider(source="herald")
    spider.source = load_source(sources, "herald")
    body = b"""<html><head><link rel="next" href="/sports/page/3/"></head><body>
<article><h2><a href="/sports/2025/01/03/injury-a001336/">Injury</a></h2></article>
<nav><a href="/sports/">1</a> <a href="/sports/page/3/">3</a> <a href="/sports/page/6/">6</a>
<a href="/sports/page/12/">12</a> <a rel="next" href="/sports/page/3/">Next</a></nav></body></html>"""
    page = Request("https://news.example.com/sports/page/2/", meta={"follow_depth": 1})
    response = HtmlResponse(page.url, body=body, encoding="utf-8", request=page)
    depths = {r.url.removeprefix("https://news.example.com"): r.meta["follow_depth"] for r in spider._follow(response)}
    assert depths == {"/sports/2025/01/03/injury-a001336/": 2, "/sports/": 2, "/sports/page/3/": 1,
                      "/sports/page/6/": 1, "/sports/page/12/": 1}


def test_a_linked_page_at_the_depth_limit_still_gives_its_teaser_times(tmp_path: Path) -> None:
    """Its links are not followed, but a teaser time reaches a page already requested (merged into that
    request's hints) and is sent as a late hint for a page already handled; a URL never requested is
    not remembered (nothing would ever forget it)."""
    from scrapy.http import HtmlResponse
    from scrapy.utils.test import get_crawler

    from crawler.signals import late_published_hint

    sources = write_sources_file(tmp_path / "sources.toml", {"herald": {
        "allowed_domains": ["news.example.com"], "start_urls": ["https://news.example.com/"], "follow_depth": 1}})
    crawler = get_crawler(NewsSpider)
    spider = NewsSpider(source="herald")
    spider._set_crawler(crawler)
    spider.source = load_source(sources, "herald")
    crawler.stats.open_spider()
    sent: list[tuple[str, str]] = []

    def receive(url: str, published_at: str) -> None:
        sent.append((url, published_at))

    crawler.signals.connect(receive, signal=late_published_hint)  # held weakly: `receive` must stay referenced
    pending = spider._remember_hints("https://news.example.com/world/pending/", SitemapEntry(
        "https://news.example.com/world/pending/"))
    spider._handled.add(hash("https://news.example.com/world/done/"))
    teasers = "".join(f'<article><h2><a href="/world/{slug}/">{slug}</a></h2>'
                      f'<time datetime="2025-02-2{i}T0{i}:1{i}:3{i}Z">x</time></article>'
                      for i, slug in enumerate(["pending", "done", "unknown"], start=1))
    page = Request("https://news.example.com/world/page/7/", meta={"follow_depth": 1})
    response = HtmlResponse(page.url, body=f"<html><body>{teasers}</body></html>".encode(), encoding="utf-8",
                            request=page)
    assert list(spider._follow(response)) == []
    assert pending == {"published_at": "2025-02-21T01:11:31Z"}
    assert sent == [("https://news.example.com/world/done/", "2025-02-22T02:12:32Z")]
    assert "https://news.example.com/world/unknown/" not in spider._listed_hints
    assert crawler.stats.get_value("newsingest/dates/late_hints") == 1
