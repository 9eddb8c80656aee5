"""Hostile pages on a real crawl: each ends in a counted outcome, the good article is stored once.

A loopback server serves compression bombs, oversized pages (with and without
Content-Length), a redirect loop, redirects to file:/data:/ftp:, a drip-feed,
robots.txt with NUL bytes and invalid UTF-8, a broken sitemap, and one good
article. The crawl must finish quickly with bounded memory.
"""

from __future__ import annotations

import gzip
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import brotli
import pytest
from loopback import serve

from crawler.demo.run import write_sources_file
from storage.db import create_db_engine, session_factory
from storage.models import Article, CrawlRun

ROOT = Path(__file__).resolve().parents[1]
BOMB_BYTES = 200 * 1024 * 1024
GOOD_PARAGRAPHS = [
    f"Paragraph {i} of the only good article: the council voted on the harbour plan after a long debate, "
    "and residents who had campaigned for months said the decision was a turning point for the district."
    for i in range(1, 6)
]
GOOD_PAGE = (
    '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>Harbour plan approved | Test Gazette</title>'
    '<meta property="og:type" content="article">'
    '<meta property="article:published_time" content="2025-03-01T10:00:00+00:00"></head><body>'
    '<article><h1>Harbour plan approved</h1><p class="byline">By Ana Lima</p>'
    + "".join(f"<p>{p}</p>" for p in GOOD_PARAGRAPHS)
    + "</article></body></html>"
).encode()


def _bombs() -> dict[str, tuple[str, bytes]]:
    zeros = b"\0" * BOMB_BYTES
    deflate = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS)
    return {
        "gzip": ("gzip", gzip.compress(zeros, compresslevel=9)),
        "deflate": ("deflate", deflate.compress(zeros) + deflate.flush()),
        "br": ("br", brotli.compress(zeros, quality=5)),
    }


class Hostile(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hits: Counter[str] = Counter()
    bombs: dict[str, tuple[str, bytes]] = {}

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, *,
              content_length: bool = True) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": "text/html; charset=utf-8", **(headers or {})}.items():
            self.send_header(name, value)
        if content_length:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path
        self.hits[path] += 1
        if path == "/robots.txt":
            self._send(200, b"User-agent: *\x00\nDisallow: /private/\n\xff\xfe bad utf-8 \xc3\x28\n",
                       {"Content-Type": "text/plain"})
        elif path.startswith("/bomb/"):
            encoding, body = self.bombs[path.split("/")[2]]
            self._send(200, body, {"Content-Encoding": encoding})
        elif path == "/big/with-length/":
            self._send(200, b"<html><body>" + b"x" * (50 * 1024 * 1024) + b"</body></html>")
        elif path == "/big/chunked/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b"y" * (1024 * 1024)
            try:
                for _ in range(50):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
        elif path == "/loop/":
            self._send(302, b"", {"Location": "/loop/"})
        elif path.startswith("/redirect/"):
            target = {"file": "file:///etc/passwd", "data": "data:text/html,<h1>x</h1>",
                      "ftp": "ftp://127.0.0.1/secret"}[path.split("/")[2]]
            self._send(302, b"", {"Location": target})
        elif path == "/drip/":
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(30):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(1)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif path == "/sitemap.xml":
            self._send(200, b'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
                            b"<url><loc>/news/good/</loc></url><url><loc>/news/", {"Content-Type": "application/xml"})
        elif path == "/news/good/":
            self._send(200, GOOD_PAGE)
        else:
            self._send(404, b"<html><body>not found</body></html>")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_site() -> Iterator[str]:
    Hostile.bombs = _bombs()
    Hostile.hits = Counter()
    with serve(Hostile) as base_url:
        yield base_url


def test_hostile_pages_end_in_counted_outcomes(hostile_site: str, tmp_path: Path) -> None:
    base = hostile_site
    start = [f"{base}/bomb/gzip/", f"{base}/bomb/deflate/", f"{base}/bomb/br/", f"{base}/big/with-length/",
             f"{base}/big/chunked/", f"{base}/loop/", f"{base}/redirect/file/", f"{base}/redirect/data/",
             f"{base}/redirect/ftp/", f"{base}/drip/", f"{base}/private/secret/"]
    sources = write_sources_file(tmp_path / "sources.toml", {"hostile": {
        "allowed_domains": ["127.0.0.1"], "allow_private_networks": True, "start_urls": start,
        "sitemaps": [f"{base}/sitemap.xml"], "follow_depth": 0}})
    db = f"sqlite:///{tmp_path / 'news.db'}"
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "crawl", "hostile", "--sources", str(sources), "--db", db,
         "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "DOWNLOAD_TIMEOUT=5", "-s", "RETRY_TIMES=0"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - began
    assert elapsed < 90, "the crawl must not hang on a drip-feed or a bomb"

    engine = create_db_engine(db)
    with session_factory(engine)() as session:
        articles = session.query(Article).all()
        (run,) = session.query(CrawlRun).all()
    engine.dispose()
    stats = run.stats or {}
    # the good article, listed before the sitemap's error, is stored exactly once
    assert [a.title for a in articles] == ["Harbour plan approved"], result.stderr[-3000:]
    assert articles[0].body == "\n\n".join(GOOD_PARAGRAPHS)
    assert stats.get("newsingest/sitemap/invalid") == 1
    # robots.txt with NUL bytes and invalid UTF-8 still parsed: /private/ never fetched
    assert Hostile.hits["/private/secret/"] == 0
    # bombs are refused at decompression, oversized pages cancelled at the size limit, each fetched once
    for path in ("/bomb/gzip/", "/bomb/deflate/", "/bomb/br/", "/big/with-length/", "/big/chunked/"):
        assert Hostile.hits[path] == 1, path
    assert stats.get("robotstxt/forbidden") == 1
    assert stats.get("newsingest/fetch_failed/IgnoreRequest") == 3 + 1  # three bombs + robots
    assert stats.get("newsingest/fetch_failed/DownloadCancelledError") == 2
    # the drip-feed times out instead of holding the crawl
    assert stats.get("newsingest/fetch_failed/DownloadTimeoutError") == 1
    # the redirect loop stops at once; redirects to file:, data: and ftp: are not followed
    assert Hostile.hits["/loop/"] == 1 and stats.get("dupefilter/filtered") == 1
    assert stats.get("newsingest/fetch_failed/HttpError") == 3
    assert stats.get("downloader/request_count") == sum(Hostile.hits.values())  # every request came here
    assert run.status == "succeeded" and result.returncode == 0, (run.error, result.stderr[-2000:])
