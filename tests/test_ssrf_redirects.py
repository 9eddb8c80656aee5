"""SSRF through a public site: 302, 307 and meta refresh to every spelling of a private address.

A loopback test server cannot play this part: a source on loopback must say
`allow_private_networks = true`, which turns the guard off. So the site here
is "public": it lives in a network namespace at 11.0.0.1 (a global address,
see tests/netns.py), and the crawl runs with the production guard in a client
namespace whose own loopback (127.0.0.1 and ::1) holds a canary server. The
site's start page links to pages that redirect (302, 307) or meta-refresh to
the canary under each private spelling. The canary must get no request; every
redirect target, and each private host's robots.txt, must be blocked once and
counted on `newsingest/blocked/private_address`; the site's articles are stored.

Scrapy's offsite filter is turned off for these crawls (`-s DOWNLOADER_MIDDLEWARES`),
so it cannot hide a hole in the guard: every private request reaches the guard.
Blocks of host *names* (localhost, 127.1, 0x7f.1, 2130706433) must carry the
resolver's reason ("... resolves to a ..."): proof that the connection attempt
went through `GuardedResolver`, since the middleware resolves names only for
proxied requests. A second crawl goes through an HTTP proxy named in the
environment (`http_proxy`), which forwards anything it is asked for: it must be
asked only for the public site.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
from loopback import QuietHandler
from netns import ORIGIN_IP, Topology, require_netns, topology

from crawler import settings as project_settings
from storage.db import create_db_engine, session_factory
from storage.models import Article, CrawlRun

ROOT = Path(__file__).resolve().parents[1]
# Every spelling of the client's loopback the issue lists; the names go through the resolver.
FORMS = ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"]
NAMES = {"localhost", "2130706433", "0x7f.1", "127.1"}
METHODS = ["302", "307", "meta"]
ORIGIN_PORT = 8080
PARAGRAPHS = [
    f"Paragraph {i}: the harbour authority published its annual report on Monday, and the figures showed "
    "that container traffic grew for the third year in a row while passenger numbers fell slightly."
    for i in range(1, 6)
]


def _article(title: str) -> bytes:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title} | Public Gazette</title>'
        '<meta property="og:type" content="article">'
        '<meta property="article:published_time" content="2025-03-01T10:00:00+00:00"></head><body>'
        f'<article><h1>{title}</h1><p class="byline">By Ana Lima</p>'
        + "".join(f"<p>{p}</p>" for p in PARAGRAPHS) + "</article></body></html>"
    ).encode()


ARTICLES = {"/news/harbour-report/": "Harbour report published", "/news/ferry-timetable/": "Ferry timetable changes"}


class Handler(QuietHandler):
    """Shared base: counts requests, sends small bodies, keeps quiet."""

    protocol_version = "HTTP/1.1"
    hits: ClassVar[Counter[str]]
    lock = threading.Lock()

    def record(self) -> None:
        with self.lock:
            self.hits[self.path] += 1



class Canary(Handler):
    """On the client's loopback: any request here is an SSRF that got through."""

    hits: ClassVar[Counter[str]] = Counter()
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.record()
        with self.lock:
            self.hosts.append(self.headers.get("Host", ""))
        self.reply(200, b"internal secret")


class Origin(Handler):
    """The public site: two articles and pages that send the crawler to the canary."""

    hits: ClassVar[Counter[str]] = Counter()
    canary_port = 0

    def target(self, method: str, index: int) -> str:
        return f"http://{FORMS[index]}:{self.canary_port}/canary/{method}/{index}/"

    def do_GET(self) -> None:
        self.record()
        parts = self.path.strip("/").split("/")
        if self.path == "/robots.txt":
            self.reply(200, b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"})
        elif self.path == "/":
            links = [*ARTICLES] + [f"/go/{m}/{i}/" for m in METHODS for i in range(len(FORMS))]
            body = "".join(f'<li><a href="{link}">{link}</a></li>' for link in links)
            self.reply(200, f"<html><head><title>Public Gazette</title></head><body><ul>{body}</ul></body></html>"
                      .encode())
        elif self.path in ARTICLES:
            self.reply(200, _article(ARTICLES[self.path]))
        elif len(parts) == 3 and parts[0] == "go" and parts[1] in ("302", "307"):
            self.reply(int(parts[1]), b"", {"Location": self.target(parts[1], int(parts[2]))})
        elif len(parts) == 3 and parts[0] == "go" and parts[1] == "meta":
            url = self.target("meta", int(parts[2]))
            self.reply(200, f'<html><head><meta http-equiv="refresh" content="0; url={url}"></head>'
                           f"<body>moved</body></html>".encode())
        else:
            self.reply(404, b"not found")


class Proxy(QuietHandler):
    """A forwarding HTTP proxy on the client's loopback: it fetches whatever it is asked for."""

    protocol_version = "HTTP/1.1"
    requested: ClassVar[list[str]] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        with self.lock:
            self.requested.append(self.path)
        parts = urlsplit(self.path)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=5)
        try:
            conn.request("GET", parts.path or "/", headers={"Host": parts.netloc})
            upstream = conn.getresponse()
            body = upstream.read()
            status, headers = upstream.status, upstream.getheaders()
        except OSError as exc:
            status, headers, body = 502, [], str(exc).encode()
        finally:
            conn.close()
        self.reply(status, body, {name: value for name, value in headers
                                  if name.lower() not in ("content-length", "connection", "transfer-encoding")})


@pytest.fixture
def net() -> Iterator[Topology]:
    require_netns()
    Origin.hits, Canary.hits, Proxy.requested = Counter(), Counter(), []
    Canary.hosts = []
    with topology() as topo:
        canary = topo.serve(topo.client, Canary, "127.0.0.1", 0)
        port = canary.server_address[1]
        topo.serve(topo.client, Canary, "::1", port)  # [::1] on the same port as 127.0.0.1
        Origin.canary_port = port
        topo.serve(topo.origin, Origin, ORIGIN_IP, ORIGIN_PORT)
        yield topo


def _control(topo: Topology, proxy: str | None = None) -> None:
    """The canary is reachable under every spelling from where the crawl runs: a leak would show."""
    port = Origin.canary_port
    urls = [f"http://{form}:{port}/control/{i}/" for i, form in enumerate(FORMS)]
    script = ("import sys, urllib.request as u\n"
              f"opener = u.build_opener(u.ProxyHandler({{'http': {proxy!r}}} if {proxy!r} else {{}}))\n"
              "for url in sys.argv[1:]:\n    opener.open(url, timeout=5).read()\n")
    result = topo.run(topo.client, [sys.executable, "-c", script, *urls], timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert sum(Canary.hits.values()) == len(FORMS), Canary.hits
    Canary.hits.clear()
    Canary.hosts.clear()


def _crawl(topo: Topology, tmp_path: Path, env_proxy: str | None = None) -> tuple[str, dict[str, int], list[str]]:
    """Crawl the public site from the client namespace with production settings and the guard on."""
    base = f"http://{ORIGIN_IP}:{ORIGIN_PORT}"
    sources = tmp_path / "sources.toml"
    sources.write_text(f'[sources.public]\nallowed_domains = ["{ORIGIN_IP}"]\nstart_urls = ["{base}/"]\n'
                       "follow_depth = 1\n", encoding="utf-8")
    middlewares = {**project_settings.DOWNLOADER_MIDDLEWARES,
                   "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None}
    db = f"sqlite:///{tmp_path / 'news.db'}"
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}  # only the one we set
    if env_proxy:
        env["http_proxy"] = env_proxy
    result = topo.run(topo.client, [
        sys.executable, "-m", "crawler.cli", "crawl", "public", "--sources", str(sources), "--db", db,
        "-s", "AUTOTHROTTLE_ENABLED=False", "-s", "DOWNLOAD_TIMEOUT=5",
        "-s", f"DOWNLOADER_MIDDLEWARES={json.dumps(middlewares)}"], timeout=180, cwd=ROOT, env=env)
    engine = create_db_engine(db)
    with session_factory(engine)() as session:
        titles = sorted(a.title for a in session.query(Article).all())
        (run,) = session.query(CrawlRun).all()
    engine.dispose()
    assert result.returncode == 0 and run.status == "succeeded", (run.error, result.stderr[-3000:])
    return result.stderr, dict(run.stats or {}), titles


def _check_blocks(stderr: str, stats: dict[str, int], titles: list[str]) -> None:
    port = Origin.canary_port
    assert sum(Canary.hits.values()) == 0, (Canary.hits, Canary.hosts)
    # every redirect/meta refresh was followed to its target, and each target was refused there
    for method in METHODS:
        for i in range(len(FORMS)):
            assert Origin.hits[f"/go/{method}/{i}/"] == 1
    blocked: dict[str, str] = {}
    for url, reason in re.findall(r"blocked (\S+): (.+)", stderr):
        assert url not in blocked, f"{url} blocked twice: retried"
        blocked[url] = reason
    expected = {f"http://{form}:{port}/canary/{m}/{i}/" for m in METHODS for i, form in enumerate(FORMS)}
    expected |= {f"http://{form}:{port}/robots.txt" for form in FORMS}  # robots.txt is an SSRF too
    assert set(blocked) == expected, sorted(set(blocked) ^ expected)
    assert stats.get("newsingest/blocked/private_address") == len(expected)
    assert not stats.get("offsite/filtered") and not stats.get("retry/count")
    for url, reason in blocked.items():
        host = urlsplit(url).netloc.rsplit(":", 1)[0]
        if host in NAMES:
            assert f"{host} resolves to a loopback address 127.0.0.1" in reason, (url, reason)
        else:
            assert "loopback address" in reason, (url, reason)
    assert titles == sorted(ARTICLES.values())


def test_redirects_and_meta_refresh_from_a_public_site_to_private_addresses(net: Topology, tmp_path: Path) -> None:
    _control(net)
    stderr, stats, titles = _crawl(net, tmp_path)
    _check_blocks(stderr, stats, titles)


def test_an_http_proxy_in_the_environment_does_not_bypass_the_guard(net: Topology, tmp_path: Path) -> None:
    proxy = net.serve(net.client, Proxy, "127.0.0.1", 0)
    proxy_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    _control(net, proxy_url)  # the proxy forwards to the canary when asked
    Proxy.requested.clear()
    stderr, stats, titles = _crawl(net, tmp_path, env_proxy=proxy_url)
    _check_blocks(stderr, stats, titles)
    # the crawl went through the proxy, and asked it for the public site only
    assert Proxy.requested and all(urlsplit(url).hostname == ORIGIN_IP for url in Proxy.requested), \
        Proxy.requested
    assert stats.get("newsingest/blocked/private_address")
