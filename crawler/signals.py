"""The crawl's own signals, besides Scrapy's (``crawler.signals.connect(handler, signal=...)``)."""

#: A listing (a section page's teaser, a feed, a news sitemap) gave a publication time for a page the
#: spider had already handed to extraction, too late to travel with the page as a hint. Sent with
#: ``url`` (as listed) and ``published_at`` (the listing's text: ISO 8601 or RFC 2822). The store
#: stage applies it to that page's article, in flight or stored (``late_hint_refines``).
late_published_hint = object()
