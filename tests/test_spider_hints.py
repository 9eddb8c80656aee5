"""What feeds and sitemaps say of a URL reaches its extraction, whichever listing named it first."""

from __future__ import annotations

from scrapy.http import Request

from crawler.discovery import SitemapEntry
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


def test_teaser_times_from_a_section_page() -> None:
    from scrapy.http import HtmlResponse

    body = b"""<html><body>
<article class="teaser"><h2><a href="/world/a/">A</a></h2><time datetime="2025-02-23T06:36:07Z">Feb 23</time></article>
<article><a href="/world/b/">B</a><time datetime="2025-02-22">Feb 22</time></article>
<article><a href="/world/c/">C</a><time datetime="2025-02-21T01:02:03Z">x</time>
  <time datetime="2025-02-21T05:06:07Z">y</time></article>
<ul><li><a href="/world/d/">D</a> <time datetime="2025-02-20T10:11:12+01:00">Feb 20</time></li></ul>
</body></html>"""
    response = HtmlResponse("https://news.example.com/world/", body=body, encoding="utf-8")
    # Only a teaser with exactly one full timestamp speaks for its links.
    assert NewsSpider._teaser_times(response) == {
        "https://news.example.com/world/a/": "2025-02-23T06:36:07Z",
        "https://news.example.com/world/d/": "2025-02-20T10:11:12+01:00",
    }
