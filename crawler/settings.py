"""Scrapy settings for newsingest: production defaults for crawling news sites.

Only settings live here. Stock Scrapy is tuned for a developer's laptop: its
consoles listen on the network, robots.txt is ignored and a response may be
1 GiB. A service that crawls the open web on a schedule needs the opposite.
Per-source overrides come from the sources file (`settings` table) and the
command line (`-s NAME=VALUE`).
"""

from __future__ import annotations

import os

BOT_NAME = "newsingest"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

USER_AGENT = os.environ.get(
    "NEWSINGEST_USER_AGENT",
    "newsingest/0.1 (+https://github.com/newsingest/newsingest; news archive crawler)",
)

# --- politeness ----------------------------------------------------------------
ROBOTSTXT_OBEY = True
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 0.5
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 4.0
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 8
# Items processed at once per response. The news spider yields at most one item per
# response, and Scrapy starts this many asyncio tasks for every response it scrapes
# (100 by default: a third of the reactor thread's time in a fast crawl).
CONCURRENT_ITEMS = 4
DOWNLOAD_DELAY = 0
RETRY_ENABLED = True
RETRY_TIMES = 2
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
DOWNLOAD_TIMEOUT = 30

# --- safety: no open consoles, bounded responses, bounded crawls -----------------
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
DOWNLOAD_MAXSIZE = 16 * 1024 * 1024  # news pages are < 2 MB; sitemaps may be 10 MB
DOWNLOAD_WARNSIZE = 4 * 1024 * 1024
DEPTH_LIMIT = 6  # sitemap index -> sitemap -> article; front -> section -> page N -> article
DEPTH_PRIORITY = 0
URLLENGTH_LIMIT = 2083
REDIRECT_MAX_TIMES = 5
CLOSESPIDER_TIMEOUT = 0  # the scheduler sets a per-source timeout
MEMUSAGE_ENABLED = True
MEMUSAGE_LIMIT_MB = 2048
MEMUSAGE_WARNING_MB = 1024
COOKIES_ENABLED = False
HTTPCACHE_ENABLED = False

# --- components -------------------------------------------------------------------
ITEM_PIPELINES = {
    "pipelines.extract.ExtractPipeline": 50,
    "pipelines.validate.ValidatePipeline": 100,
    "pipelines.clean.CleanPipeline": 200,
    "pipelines.dedupe.DedupePipeline": 300,
    "pipelines.store.StorePipeline": 400,
}
DOWNLOADER_MIDDLEWARES = {
    # before robots.txt: a stored article is not requested again (crawler/middlewares.py)
    "crawler.middlewares.IncrementalMiddleware": 50,
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "crawler.middlewares.RobotsTxtMiddleware": 100,
    # after HttpProxyMiddleware (750), so proxied targets are checked too
    "crawler.netguard.AddressGuardMiddleware": 760,
}
# The address guard (crawler/netguard.py): no connection to loopback, private, link-local
# or other non-public addresses, unless the source sets allow_private_networks = true.
TWISTED_DNS_RESOLVER = "crawler.netguard.GuardedResolver"
NEWSINGEST_ADDRESS_GUARD_ENABLED = True
NEWSINGEST_ALLOW_PRIVATE_NETWORKS = False
SPIDER_MIDDLEWARES = {
    # last on the way out (after depth, URL length): one seen lookup per listing's page requests
    "crawler.middlewares.IncrementalSpiderMiddleware": 40,
}
EXTENSIONS = {
    "crawler.runrecord.CrawlRunRecorder": 10,
}

# --- newsingest ---------------------------------------------------------------------
# Database: `--db` / DATABASE_URL / ./news.db (see storage/db.py).
NEWSINGEST_DATABASE_URL = None
# Sources file: `--sources` / NEWSINGEST_SOURCES / ./sources.toml (see crawler/sources.py).
NEWSINGEST_SOURCES = None
NEWSINGEST_RUN_TRIGGER = "manual"
NEWSINGEST_MIN_BODY_CHARS = 200
NEWSINGEST_STORE_BATCH_SIZE = 50
NEWSINGEST_STORE_FLUSH_SECONDS = 2.0
NEWSINGEST_STORE_MAX_PENDING_BATCHES = 4
# Where batches are written (pipelines/store.py): "worker" = in the first extraction worker
# (no extra process; a writer process of its own when there are no extraction workers),
# "process" = a writer process of its own (storage/writer.py), "thread" = a thread of the crawl
# process. Either process keeps the ORM work off the reactor's GIL.
NEWSINGEST_STORE_WRITER = "worker"
# Extraction (pipelines/extract.py, docs/performance.md): worker processes ("auto" = cores - 1,
# 0 = inline on the reactor thread), pages extracted inline before the pool starts, pages in the
# pool at once (0 = 4 per worker), and whether a page that finds the pool full is extracted
# inline (else it waits: Scrapy's back-pressure holds downloads).
NEWSINGEST_EXTRACT_WORKERS = os.environ.get("NEWSINGEST_EXTRACT_WORKERS", "auto")
NEWSINGEST_EXTRACT_POOL_MIN_PAGES = 50
NEWSINGEST_EXTRACT_MAX_INFLIGHT = 0
NEWSINGEST_EXTRACT_STEAL = True
# Incremental crawls (crawler/middlewares.py IncrementalMiddleware): an article URL already stored
# is not requested again, unless published less than this many days ago; then it is requested
# with If-None-Match / If-Modified-Since, and a 304 only moves its last_seen_at.
NEWSINGEST_INCREMENTAL = True
NEWSINGEST_RECRAWL_WINDOW_DAYS = 3
# Near-duplicates: see NEWSINGEST_NEAR_DUP_THRESHOLD (environment, storage/repository.py).

LOG_LEVEL = os.environ.get("NEWSINGEST_LOG_LEVEL", "INFO")
# Scrapy's formatter, minus the per-page DEBUG messages when LOG_LEVEL is above DEBUG (crawler/middlewares.py).
LOG_FORMATTER = "crawler.middlewares.LevelLogFormatter"
FEED_EXPORT_ENCODING = "utf-8"
