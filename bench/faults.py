"""The fault table of issue #7: every fault in the issue's test list, run for real, one row each.

    python bench/faults.py              # all faults (about 4 minutes; needs root for the namespace row)
    python bench/faults.py --only bomb  # the rows whose name contains "bomb"

Each fault is a real crawl (a subprocess, production settings unless a row
says otherwise) against a loopback server started here, or a real database
fault against a private PostgreSQL instance (tests/pgcluster.py; the shared
server is never touched). For each row: what happened (from the crawl's stats
and the servers' request logs), rows lost (expected articles not stored),
rows doubled (rows beyond one per expected article) and the peak RSS of the
crawl's process tree: the crawl process and all its children (extract
workers, the store's writer process), sampled every 20 ms and summed, next to
the largest single process's kernel high-water mark (VmHWM). Test helpers are
reused from tests/ (the hostile site, the SSRF namespaces, the outage faults).
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from loopback import serve  # noqa: E402
from test_hostile import Hostile, _bombs  # noqa: E402

from crawler.demo.run import write_sources_file  # noqa: E402
from crawler.demo.server import serve_demo_site  # noqa: E402
from crawler.demo.site import demo_source_config  # noqa: E402

MB = 1024 * 1024
GOOD = "/news/good/"
PARAGRAPHS = [f"Paragraph {i}: the regional orchestra announced its new season on Friday, with three premieres "
              "and a tour of the coastal towns that had not heard a full orchestra in more than a decade."
              for i in range(1, 6)]


def article_page(title: str, charset_meta: str = "") -> str:
    return (f"<!DOCTYPE html><html><head>{charset_meta}<title>{title} | Gazette</title>"
            '<meta property="og:type" content="article">'
            '<meta property="article:published_time" content="2025-03-01T10:00:00+00:00"></head><body>'
            f"<article><h1>{title}</h1>" + "".join(f"<p>{p} Déjà vu, naïve café.</p>" for p in PARAGRAPHS)
            + "</article></body></html>")


# --- measuring a process tree -----------------------------------------------------------


class TreeSampler:
    """Peak summed RSS of a process and its descendants, the largest VmHWM, and any listening socket."""

    started: ClassVar[list[TreeSampler]] = []  # every sampler, for the progress lines

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.started.append(self)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.peak_pss = 0  # shared pages split between sharers: a fork does not count twice
        self.peak_parts = ""
        self.hwm: dict[int, int] = {}
        self.listening: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _tree(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _run(self) -> None:
        while not self._stop.is_set():
            total = total_pss = 0
            parts: list[str] = []
            tree = self._tree()
            for proc in tree:
                try:
                    memory = proc.memory_full_info()
                    total += memory.rss
                    total_pss += getattr(memory, "pss", memory.rss)
                    parts.append(f"{proc.name()}:{memory.rss // MB}")
                    self.hwm[proc.pid] = max(self.hwm.get(proc.pid, 0), _vm_hwm(proc.pid))
                    if self.samples % 10 == 0:
                        for conn in proc.net_connections(kind="inet"):
                            if conn.status == psutil.CONN_LISTEN:
                                self.listening.add(f"{proc.pid}:{conn.laddr}")
                except (psutil.NoSuchProcess, psutil.AccessDenied, FileNotFoundError, ProcessLookupError):
                    continue
            if total > self.peak:
                self.peak = total
                self.peak_parts = "+".join(parts)  # which processes made the peak (MB each)
            self.peak_pss = max(self.peak_pss, total_pss)
            self.samples += 1
            self._stop.wait(self.interval)

    def stop(self) -> TreeSampler:
        self._stop.set()
        self._thread.join(5)
        return self

    @property
    def peak_mb(self) -> float:
        return self.peak / MB

    @property
    def pss_mb(self) -> float:
        return self.peak_pss / MB

    @property
    def hwm_mb(self) -> float:
        return max(self.hwm.values(), default=0) / MB


def _vm_hwm(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


# --- rows -------------------------------------------------------------------------------


@dataclass
class Row:
    fault: str
    happened: str
    lost: int | str
    doubled: int | str
    memory: TreeSampler | list[TreeSampler] | None  # several: the worst of them (a crawl and its rerun)
    ok: bool = True

    def _worst(self, attribute: str) -> str:
        samplers = self.memory if isinstance(self.memory, list) else [self.memory] if self.memory else []
        return f"{max(getattr(s, attribute) for s in samplers):.0f} MB" if samplers else "-"

    @property
    def cells(self) -> tuple[str, str, str]:
        """Peak RSS of the tree (summed), peak PSS of the tree, largest single-process high-water mark."""
        return self._worst("peak_mb"), self._worst("pss_mb"), self._worst("hwm_mb")


@dataclass
class Crawl:
    returncode: int
    stderr: str
    stats: dict[str, Any]
    status: str
    rows: list[str]
    sampler: TreeSampler
    seconds: float


def run_crawl(tmp: Path, tables: dict[str, dict[str, Any]], *settings: str, db: str | None = None,
              argv_prefix: list[str] | None = None, env: dict[str, str] | None = None,
              popen: Callable[..., subprocess.Popen[Any]] | None = None,
              during: Callable[[subprocess.Popen[Any]], None] | None = None) -> Crawl:
    """One `newsingest crawl` in a subprocess, sampled; its run record and stored canonical URLs."""
    name = next(iter(tables))
    sources = write_sources_file(tmp / f"sources-{uuid.uuid4().hex[:6]}.toml", tables)
    db = db or f"sqlite:///{tmp / f'news-{uuid.uuid4().hex[:6]}.db'}"
    argv = [sys.executable, "-m", "crawler.cli", "crawl", name, "--sources", str(sources), "--db", db,
            "-s", "AUTOTHROTTLE_ENABLED=False"]
    for setting in settings:
        argv += ["-s", setting]
    log = tmp / f"crawl-{uuid.uuid4().hex[:6]}.log"
    began = time.monotonic()
    with log.open("w") as err:
        kwargs: dict[str, Any] = {"cwd": ROOT, "stdout": subprocess.DEVNULL, "stderr": err, "env": env}
        proc = popen(argv, **kwargs) if popen else subprocess.Popen([*(argv_prefix or []), *argv], **kwargs)
        sampler = TreeSampler(proc.pid)
        try:
            if during is not None:
                during(proc)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            sampler.stop()
    stats, status, rows = read_db(db)
    return Crawl(proc.returncode, log.read_text(errors="replace"), stats, status, rows, sampler,
                 time.monotonic() - began)


def read_db(db: str) -> tuple[dict[str, Any], str, list[str]]:
    """The last run's stats and status, and every stored canonical URL."""
    from sqlalchemy import select

    from storage.db import create_db_engine, session_factory
    from storage.models import Article, CrawlRun

    engine = create_db_engine(db)
    try:
        with session_factory(engine)() as session:
            runs = list(session.scalars(select(CrawlRun).order_by(CrawlRun.id)))
            rows = list(session.scalars(select(Article.canonical_url)))
    finally:
        engine.dispose()
    last = runs[-1] if runs else None
    return (dict(last.stats or {}) if last else {}), (last.status if last else "none"), rows


def losses(rows: list[str], expected: set[str]) -> tuple[int, int]:
    """Rows lost (expected, not stored) and doubled (stored rows beyond one per expected article)."""
    stored = set(rows) & expected
    return len(expected - stored), len(rows) - len(stored)


def counted(stats: dict[str, Any], *prefixes: str) -> str:
    found = [f"{key.split('newsingest/', 1)[-1]}={value}" for key, value in sorted(stats.items())
             if any(key.startswith(p) for p in prefixes)]
    return ", ".join(found) or "nothing counted"


# --- the hostile loopback site ------------------------------------------------------------


class BenchSite(Hostile):
    """tests/test_hostile.py's site, plus charset pages and hostile sitemaps."""

    hits: ClassVar[Counter[str]] = Counter()
    extra: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def handle(self) -> None:
        with suppress(ConnectionResetError, BrokenPipeError):  # the crawler hung up on a bomb: the point
            super().handle()

    def do_GET(self) -> None:
        if self.path in self.extra:
            self.hits[self.path] += 1
            body, kind = self.extra[self.path]
            self._send(200, body, {"Content-Type": kind})
        else:
            super().do_GET()


class Canary(BaseHTTPRequestHandler):
    hits: ClassVar[Counter[str]] = Counter()

    def do_GET(self) -> None:
        self.hits[self.path] += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def sitemap_documents(canary: str, secret: Path) -> dict[str, tuple[bytes, str]]:
    ns = 'xmlns="http://www.sitemaps.org/schemas/sitemap/0.9"'
    good = f"<url><loc>{GOOD}</loc></url>"
    member = gzip.compress(b"\0" * (64 * MB), compresslevel=1)
    laughs = ('<!DOCTYPE urlset [<!ENTITY a "lol">'
              + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(9)) + "]>")
    return {
        "/sitemaps/2gib.xml.gz": (member * 32, "application/x-gzip"),
        "/sitemaps/laughs.xml": (f'<?xml version="1.0"?>{laughs}<urlset {ns}><url><loc>/&j;</loc></url></urlset>'
                                 .encode(), "application/xml"),
        "/sitemaps/xxe.xml": (f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY e SYSTEM "{canary}/xxe">'
                              f'<!ENTITY f SYSTEM "file:///etc/passwd"><!ENTITY s SYSTEM "file://{secret}">]>'
                              f"<urlset {ns}><url><loc>/&e;&f;&s;</loc></url></urlset>".encode(), "application/xml"),
        "/sitemaps/xxe-parameter.xml": (f'<?xml version="1.0"?><!DOCTYPE urlset [<!ENTITY % p SYSTEM "{canary}/p">'
                                        f"%p;]><urlset {ns}><url><loc>/&leak;</loc></url></urlset>".encode(),
                                        "application/xml"),
        "/sitemaps/deep.xml": (f'<?xml version="1.0"?><urlset {ns}>{good}<url>{"<x>" * 300}{"</x>" * 300}</url>'
                               "<url><loc>/after-the-error/</loc></url></urlset>".encode(), "application/xml"),
        "/sitemaps/huge-loc.xml": (f'<?xml version="1.0"?><urlset {ns}>{good}<url><loc>/{"a" * (10 * MB)}</loc>'
                                   "</url><url><loc>/after-the-error/</loc></url></urlset>".encode(),
                                   "application/xml"),
    }


@contextmanager
def hostile_site(tmp: Path) -> Iterator[tuple[str, str, str]]:
    """The hostile site and an XXE canary; yields (site URL, canary URL, secret token)."""
    BenchSite.bombs = _bombs()
    BenchSite.hits = Counter()
    Canary.hits = Counter()
    token = f"SECRET-{secrets.token_hex(6)}"
    secret = tmp / "secret.txt"
    secret.write_text(token)
    with serve(Canary) as canary, serve(BenchSite) as base:
        BenchSite.extra = {
            **sitemap_documents(canary, secret),
            "/charset/unknown/": (article_page("Unknown charset").encode("cp1252"),
                                  "text/html; charset=x-no-such-charset"),
            "/charset/invalid-utf8/": (article_page("Invalid UTF-8").encode("utf-8").replace(
                "Déjà".encode(), b"D\xc3\x28j\xe0", 1), "text/html; charset=utf-8"),
        }
        yield base, canary, token


def hostile_rows(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    with hostile_site(tmp) as (base, _canary, token):
        good = {f"{base}{GOOD}"}

        def crawl(fault: str, start: list[str], *, sitemaps: list[str] | None = None,
                  expected: set[str] | None = None, settings: tuple[str, ...] = (),
                  describe: Callable[[Crawl], tuple[str, bool]]) -> Iterator[Row]:
            if not only(fault):
                return
            table = {"allowed_domains": ["127.0.0.1"], "allow_private_networks": True, "follow_depth": 0,
                     "start_urls": [f"{base}{path}" for path in start]}
            if sitemaps:
                table["sitemaps"] = [f"{base}{path}" for path in sitemaps]
            result = run_crawl(tmp, {"hostile": table}, "DOWNLOAD_TIMEOUT=5", "RETRY_TIMES=0", *settings)
            lost, doubled = losses(result.rows, good if expected is None else expected)
            happened, ok = describe(result)
            if not (ok and lost == 0 and doubled == 0):
                print(f"--- {fault}: crawl log tail\n{result.stderr[-3000:]}", file=sys.stderr)
            yield Row(fault, f"{happened}; {result.seconds:.0f} s", lost, doubled, result.sampler,
                      ok and lost == 0 and doubled == 0)

        def failed_as(kind: str) -> Callable[[Crawl], tuple[str, bool]]:
            def describe(result: Crawl) -> tuple[str, bool]:
                n = result.stats.get(f"newsingest/fetch_failed/{kind}", 0)
                return f"dropped as {kind} (x{n}), good article stored", n >= 1
            return describe

        for encoding in ("gzip", "br", "deflate"):
            yield from crawl(f"{encoding} bomb (200 MB of zeros)", [f"/bomb/{encoding}/", GOOD],
                             describe=failed_as("IgnoreRequest"))
        yield from crawl("50 MB page with Content-Length", ["/big/with-length/", GOOD],
                         describe=failed_as("DownloadCancelledError"))
        yield from crawl("50 MB page without Content-Length", ["/big/chunked/", GOOD],
                         describe=failed_as("DownloadCancelledError"))

        def sitemap_invalid(result: Crawl) -> tuple[str, bool]:
            n = result.stats.get("newsingest/sitemap/invalid", 0)
            error = next((re.split(r"\.xml(?:\.gz)?(?: is unusable)?: ", line, maxsplit=1)[-1]
                          for line in result.stderr.splitlines() if "[crawler.spiders.news] ERROR" in line), "")
            error = re.sub(r", line \d+, column \d+", "", error.split(" (")[0])[:60]
            return f"sitemap/invalid={n} ({error}), good article stored", n == 1

        yield from crawl("2 GiB gzipped sitemap (2 MB on the wire)", [GOOD], sitemaps=["/sitemaps/2gib.xml.gz"],
                         describe=sitemap_invalid)
        yield from crawl("billion-laughs sitemap", [GOOD], sitemaps=["/sitemaps/laughs.xml"],
                         describe=sitemap_invalid)

        def xxe(result: Crawl) -> tuple[str, bool]:
            n = result.stats.get("newsingest/sitemap/invalid", 0)
            leaked = token in result.stderr or "root:x:0:0" in result.stderr or any(
                token in row or "root:" in row for row in result.rows)
            hits = sum(Canary.hits.values())
            return f"sitemap/invalid={n}, canary hits={hits}, file content leaked={leaked}", (
                n == 2 and hits == 0 and not leaked)

        yield from crawl("XXE sitemaps (external + parameter entity, http: and file:)", [GOOD],
                         sitemaps=["/sitemaps/xxe.xml", "/sitemaps/xxe-parameter.xml"], describe=xxe)
        for name, path in (("over-deep sitemap (300 levels)", "/sitemaps/deep.xml"),
                           ("sitemap with a 10 MB <loc>", "/sitemaps/huge-loc.xml")):
            yield from crawl(name, [], sitemaps=[path], describe=sitemap_invalid)  # the URL before the error

        def loop(result: Crawl) -> tuple[str, bool]:
            n = BenchSite.hits["/loop/"]
            return f"/loop/ fetched {n}x, dupefilter/filtered={result.stats.get('dupefilter/filtered', 0)}", n == 1

        yield from crawl("redirect loop", ["/loop/", GOOD], describe=loop)

        def schemes(result: Crawl) -> tuple[str, bool]:
            n = result.stats.get("newsingest/fetch_failed/HttpError", 0)
            return f"3 redirects not followed (HttpError x{n})", n == 3

        yield from crawl("redirects to file:, data:, ftp:", ["/redirect/file/", "/redirect/data/", "/redirect/ftp/",
                                                           GOOD], describe=schemes)

        def drip(result: Crawl) -> tuple[str, bool]:
            n = result.stats.get("newsingest/fetch_failed/DownloadTimeoutError", 0)
            return f"timed out after DOWNLOAD_TIMEOUT=5 s (x{n})", n == 1

        yield from crawl("1 byte per second drip", ["/drip/", GOOD], describe=drip)

        def robots(result: Crawl) -> tuple[str, bool]:
            n = BenchSite.hits["/private/secret/"]
            return (f"rules parsed: /private/ fetched {n}x, robotstxt/forbidden="
                    f"{result.stats.get('robotstxt/forbidden', 0)}, robots/nul_bytes="
                    f"{result.stats.get('newsingest/robots/nul_bytes', 0)}", n == 0)

        yield from crawl("robots.txt with NUL bytes and invalid UTF-8", ["/private/secret/", GOOD], describe=robots)

        charset_pages = {f"{base}/charset/unknown/", f"{base}/charset/invalid-utf8/"}

        def charsets(result: Crawl) -> tuple[str, bool]:
            detected = result.stats.get("newsingest/encoding/detected", 0)
            return f"both stored as valid Unicode, encoding/detected={detected}", True

        yield from crawl("invalid UTF-8 and an unknown charset", ["/charset/unknown/", "/charset/invalid-utf8/"],
                         expected=charset_pages, describe=charsets)


# --- SSRF -----------------------------------------------------------------------------------

FORMS = ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "127.1", "[::1]", "[::ffff:127.0.0.1]"]


def ssrf_rows(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    fault = "SSRF forms direct (127.0.0.1, localhost, 2130706433, 0x7f.1, 127.1)"
    if only(fault):
        BenchSite.hits = Counter()
        BenchSite.extra = {}
        with serve(BenchSite) as base:
            port = base.rsplit(":", 1)[1]
            spellings = FORMS[:5]  # a source cannot list IPv6 literals: [::1] forms are in the next row
            result = run_crawl(tmp, {"guarded": {"allowed_domains": spellings, "follow_depth": 0,
                                                 "start_urls": [f"http://{h}:{port}{GOOD}" for h in spellings]}},
                               "ROBOTSTXT_OBEY=False")
            hits = sum(BenchSite.hits.values())
        blocked = result.stats.get("newsingest/blocked/private_address", 0)
        yield Row(fault, f"blocked={blocked}, server hits={hits}, run {result.status}", 0, len(result.rows),
                  result.sampler, blocked == 5 and hits == 0)

    fault = "SSRF via 302/307/meta refresh from a public site (7 forms each, netns)"
    if only(fault):
        yield from _ssrf_redirect_row(tmp, fault)


def _ssrf_redirect_row(tmp: Path, fault: str) -> Iterator[Row]:
    import netns
    import test_ssrf_redirects as ssrf

    from crawler import settings as project_settings

    reason = netns.netns_unavailable()
    if reason:
        yield Row(fault, f"not run: {reason}", "-", "-", None)
        return
    ssrf.Origin.hits, ssrf.Canary.hits, ssrf.Canary.hosts = Counter(), Counter(), []
    with netns.topology() as topo:
        canary = topo.serve(topo.client, ssrf.Canary, "127.0.0.1", 0)
        port = canary.server_address[1]
        topo.serve(topo.client, ssrf.Canary, "::1", port)
        ssrf.Origin.canary_port = port
        topo.serve(topo.origin, ssrf.Origin, netns.ORIGIN_IP, ssrf.ORIGIN_PORT)
        middlewares = {**project_settings.DOWNLOADER_MIDDLEWARES,
                       "scrapy.downloadermiddlewares.offsite.OffsiteMiddleware": None}
        base = f"http://{netns.ORIGIN_IP}:{ssrf.ORIGIN_PORT}"
        result = run_crawl(tmp, {"public": {"allowed_domains": [netns.ORIGIN_IP], "start_urls": [f"{base}/"],
                                            "follow_depth": 1}},
                           "DOWNLOAD_TIMEOUT=5", f"DOWNLOADER_MIDDLEWARES={json.dumps(middlewares)}",
                           popen=lambda argv, **kw: topo.popen(topo.client, argv, **kw))
    expected = {f"{base}{path}" for path in ssrf.ARTICLES}
    lost, doubled = losses(result.rows, expected)
    blocked = result.stats.get("newsingest/blocked/private_address", 0)
    hits = sum(ssrf.Canary.hits.values())
    yield Row(fault, f"blocked={blocked} (21 targets + 7 robots.txt), canary hits={hits}, "
                     f"{len(set(result.rows) & expected)} public articles stored", lost, doubled,
              result.sampler, blocked == 28 and hits == 0 and lost == 0)


# --- robots.txt race ------------------------------------------------------------------------


def robots_race_row(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    fault = "robots.txt race (6 requests wait for a slow robots.txt)"
    if not only(fault):
        return
    from test_robots import SlowRobotsSite

    SlowRobotsSite.hits = Counter()
    with serve(SlowRobotsSite) as base:
        result = run_crawl(tmp, {"site": {"allowed_domains": ["127.0.0.1"], "allow_private_networks": True,
                                          "follow_depth": 0,
                                          "start_urls": [*(f"{base}/private/page-{i}/" for i in range(5)),
                                                         f"{base}/public/"]}},
                           "CONCURRENT_REQUESTS_PER_DOMAIN=16")
    private = sum(n for path, n in SlowRobotsSite.hits.items() if path.startswith("/private/"))
    yield Row(fault, f"robots.txt fetched {SlowRobotsSite.hits['/robots.txt']}x, private pages fetched {private}, "
                     f"robotstxt/forbidden={result.stats.get('robotstxt/forbidden', 0)}", 0, len(result.rows),
              result.sampler, private == 0)


# --- the demo site: production crawl, kill -9, SIGTERM -------------------------------------------


def demo_rows(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    wanted = [f for f in ("production crawl: listening sockets", "kill -9 mid-crawl, then rerun",
                          "one SIGTERM mid-crawl, then rerun") if only(f)]
    if not wanted:
        return
    with serve_demo_site(tmp / "demo-site") as (server, manifest):
        table = {"demo": demo_source_config(server.base_url)}
        expected = {a["url"] for a in manifest["articles"] if a["kind"] in ("article", "syndicated")}
        if "production crawl: listening sockets" in wanted:
            result = run_crawl(tmp, table)
            lost, doubled = losses(result.rows, expected)
            yield Row("production crawl: listening sockets", f"{len(result.sampler.listening)} listening sockets in "
                      f"{result.sampler.samples // 10} checks of the tree; {len(result.rows)} articles, "
                      f"{result.seconds:.0f} s", lost, doubled, result.sampler,
                      not result.sampler.listening and lost == 0 and doubled == 0)
        for fault, sig in (("kill -9 mid-crawl, then rerun", signal.SIGKILL),
                           ("one SIGTERM mid-crawl, then rerun", signal.SIGTERM)):
            if fault in wanted:
                yield _interrupted(tmp, table, expected, fault, sig)


def _interrupted(tmp: Path, table: dict[str, Any], expected: set[str], fault: str, sig: int) -> Row:
    db = f"sqlite:///{tmp / f'interrupted-{sig}.db'}"
    stored_before: list[int] = []

    def interrupt(proc: subprocess.Popen[Any]) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
            try:
                if len(read_db(db)[2]) >= 6:
                    break
            except Exception:  # schema not there yet
                continue
        proc.send_signal(sig)
        proc.wait(60)
        time.sleep(2)  # the writer process may commit the batch it had in hand
        stored_before.append(len(read_db(db)[2]))

    first = run_crawl(tmp, table, "DOWNLOAD_DELAY=0.15", "CONCURRENT_REQUESTS_PER_DOMAIN=1",
                      "NEWSINGEST_STORE_BATCH_SIZE=3", "NEWSINGEST_STORE_FLUSH_SECONDS=0.5", db=db, during=interrupt)
    killed_status = first.status if sig != signal.SIGKILL else "left running"
    rerun = run_crawl(tmp, table, db=db)
    runs = _run_statuses(db)
    lost, doubled = losses(rerun.rows, expected)
    if lost or doubled or rerun.status != "succeeded":
        print(f"--- {fault}: first crawl log tail\n{first.stderr[-3000:]}\n--- rerun log tail\n{rerun.stderr[-3000:]}",
              file=sys.stderr)
    return Row(fault, f"{stored_before[0]} stored before the signal (run {killed_status}); rerun {rerun.status}, "
                      f"runs now {runs}", lost, doubled, [first.sampler, rerun.sampler], lost == 0 and doubled == 0)


def _run_statuses(db: str) -> str:
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        return "/".join(row[0] for row in conn.execute("SELECT status FROM crawl_runs ORDER BY id"))


# --- PostgreSQL faults --------------------------------------------------------------------------


def postgres_rows(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    faults = [f for f in ("PostgreSQL restarted mid-crawl", "PostgreSQL down for 30 s then back",
                          "PostgreSQL killed (SIGKILL) mid-crawl", "one NOT NULL violation among 49 good items",
                          "the same upsert from two processes at once") if only(f)]
    if not faults:
        return
    import pgcluster
    import test_pg_outage as outage

    reason = pgcluster.unavailable()
    if reason:
        for fault in faults:
            yield Row(fault, f"not run: {reason}", "-", "-", None)
        return
    with pgcluster.pg_cluster() as cluster:
        for fault, action in (("PostgreSQL restarted mid-crawl", outage.restart),
                              ("PostgreSQL down for 30 s then back", outage.down_30s),
                              ("PostgreSQL killed (SIGKILL) mid-crawl", outage.crash)):
            if fault not in faults:
                continue
            db = cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}")
            samplers: list[TreeSampler] = []
            workdir = tmp / fault.split()[1]
            workdir.mkdir()
            result = outage.crawl_through_fault(cluster, db, workdir, action,
                                                on_start=lambda pid, into=samplers: into.append(TreeSampler(pid)))
            sampler = samplers[0].stop()
            lost, doubled = losses(result.urls, result.expected)
            stats = result.run.stats or {}
            yield Row(fault, f"run {result.run.status}; batches replayed="
                             f"{stats.get('newsingest/store/retried_batches', 0)}, seen checks skipped="
                             f"{stats.get('newsingest/incremental/lookup_failed', 0)}", lost, doubled,
                      sampler, result.run.status == "succeeded" and not lost and not doubled)
        for fault, mode in (("one NOT NULL violation among 49 good items", "not-null"),
                            ("the same upsert from two processes at once", "two-writers")):
            if fault not in faults:
                continue
            for backend, db in (("PostgreSQL", cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}")),
                                ("SQLite", f"sqlite:///{tmp / f'{mode}.db'}")):
                yield _child_row(f"{fault} ({backend})", mode, db)


def _child_row(fault: str, mode: str, db: str) -> Row:
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, db], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    sampler = TreeSampler(proc.pid)
    out, err = proc.communicate(timeout=300)
    sampler.stop()
    if proc.returncode:
        return Row(fault, f"child failed: {err.strip().splitlines()[-1:]}", "-", "-", sampler, False)
    report = json.loads(out.strip().splitlines()[-1])
    return Row(fault, report["happened"], report["lost"], report["doubled"], sampler,
               report["lost"] == 0 and report["doubled"] == 0)


def _records(n: int, prefix: str = "story") -> list[dict[str, Any]]:
    return [{"source": "bench", "canonical_url": f"https://example.com/{prefix}-{i}/",
             "url": f"https://example.com/{prefix}-{i}/", "content_hash": f"hash-{prefix}-{i}",
             "title": f"Story {i}", "subtitle": None, "body": f"Body of story {i}.\n\nSecond paragraph.",
             "authors": ["Ana Lima"], "published_at": datetime(2025, 3, 1, tzinfo=UTC), "modified_at": None,
             "language": "en", "section": None, "tags": [], "image_url": None, "site_name": None}
            for i in range(n)]


def _two_writer(db: str, barrier: Any, queue: Any) -> None:
    from storage.repository import open_repository

    repository = open_repository(db)
    barrier.wait(timeout=60)
    failed = inserted = 0
    records = _records(60)
    for start in range(0, len(records), 10):
        result = repository.upsert_articles(records[start:start + 10])
        failed += len(result.failed)
        inserted += result.inserted
    queue.put((inserted, failed))


def child(mode: str, db: str) -> None:
    """Run one repository-level fault in this (sampled) process; print a JSON report."""
    from storage.repository import open_repository

    repository = open_repository(db)
    repository.ensure_source("bench", "Bench")
    if mode == "not-null":
        records = _records(50, "item")
        records[25]["title"] = None  # NOT NULL violation in the middle of the batch
        result = repository.upsert_articles(records)
        count = repository.count_articles()
        report = {"happened": f"1 rejected and counted ({result.failed[0][1][:40]}...), {result.inserted} committed",
                  "lost": 49 - min(count, 49), "doubled": max(0, count - 49)}
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, queue = ctx.Barrier(2), ctx.Queue()
        workers = [ctx.Process(target=_two_writer, args=(db, barrier, queue)) for _ in range(2)]
        for worker in workers:
            worker.start()
        results = [queue.get(timeout=120) for _ in workers]
        for worker in workers:
            worker.join(60)
        count = repository.count_articles()
        report = {"happened": f"2 x 60 upserts at once: inserted {sum(r[0] for r in results)}, "
                              f"failed {sum(r[1] for r in results)}, rows {count}",
                  "lost": 60 - min(count, 60), "doubled": max(0, count - 60)}
    print(json.dumps(report))


# --- fuzz -------------------------------------------------------------------------------------


def fuzz_row(tmp: Path, only: Callable[[str], bool]) -> Iterator[Row]:
    fault = "random bytes and random HTML into extraction and cleaning (hypothesis)"
    if not only(fault):
        return
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/test_fuzz_extraction.py"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    sampler = TreeSampler(proc.pid)
    out, _ = proc.communicate(timeout=600)
    sampler.stop()
    summary = out.strip().splitlines()[-1] if out.strip() else "no output"
    yield Row(fault, f"no exception escaped: {summary}", "-", "-", sampler,
              proc.returncode == 0)


# --- main -----------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    print("| fault | what happened | rows lost | rows doubled | peak RSS (tree) | peak PSS (tree) "
          "| largest process HWM |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for row in rows:
        rss, pss, hwm = row.cells
        mark = "" if row.ok else " **(unexpected)**"
        print(f"| {row.fault} | {row.happened}{mark} | {row.lost} | {row.doubled} | {rss} | {pss} | {hwm} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", action="append", default=[], help="run rows whose fault contains this text")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return 0

    def only(fault: str) -> bool:
        return not args.only or any(text.lower() in fault.lower() for text in args.only)

    rows: list[Row] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="newsingest-faults-") as tmp_name:
        tmp = Path(tmp_name)
        for group in (hostile_rows, ssrf_rows, robots_race_row, demo_rows, postgres_rows, fuzz_row):
            for row in group(tmp, only):
                rows.append(row)
                peaks = " / ".join(sampler.peak_parts for sampler in TreeSampler.started)
                TreeSampler.started.clear()
                print(f"  {row.fault}: {row.happened} [peak MB by process: {peaks}]", file=sys.stderr, flush=True)
    print_table(rows)
    print(f"\n{len(rows)} faults in {time.monotonic() - began:.0f} s; "
          f"{sum(not r.ok for r in rows)} with an unexpected outcome")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
