"""Throughput and memory, side by side: fetch-only Scrapy, naive Scrapy + trafilatura, `newsingest crawl`.

    python bench/crawl.py --articles 5000 [--db URL] [--pad-kb K] [--repeat N] [--only newsingest]

Builds (or reuses, under --cache) a newssite, serves it with nginx (`--no-faults`)
on a free loopback port, and crawls it three ways, one after the other, with the
same Scrapy settings (CONCURRENT_REQUESTS=32 and per domain 32, no download
delay, AutoThrottle off, robots.txt obeyed, discovery through the sitemaps listed
in robots.txt):

* fetch: a SitemapSpider whose callback only yields ``response.url`` (the ceiling);
* naive: the same spider with ``trafilatura.extract(with_metadata=True)`` in the callback;
* newsingest: ``newsingest crawl`` (real spider, extraction, pipelines, database): into a
  fresh SQLite file, and with ``--db URL`` (PostgreSQL) also into that database, in
  the same run, so that the PostgreSQL / SQLite ratio is measured side by side.

Each crawl runs in its own process; CPU time is its rusage including every child
process it waited for (extraction workers, the writer process), peak RSS is sampled
every 50 ms over the whole process tree (sum of RSS). nginx is not counted; its
access log counts the pages fetched so far, so the RSS of newsingest is printed at
every 5,000 pages fetched (the flat-memory check: RSS at 50,000 pages within 100 MB
of RSS at 5,000). A benchmark script, not a test: paste its output in closing
notes. Needs psutil and nginx.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from localsite import free_port

ROOT = Path(__file__).resolve().parents[1]

# The settings every crawler gets (baselines and newsingest alike).
COMMON_SETTINGS = {
    "CONCURRENT_REQUESTS": 32,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 32,
    "DOWNLOAD_DELAY": 0,
    "AUTOTHROTTLE_ENABLED": False,
    "ROBOTSTXT_OBEY": True,
    "LOG_LEVEL": "WARNING",
}


LABELS = {"fetch": "fetch", "naive": "naive", "newsingest": "newsingest/sqlite", "newsingest-pg": "newsingest/pg"}


# -- the baseline spiders (run in a child process: `bench/crawl.py --spider KIND ...`) -------------


def run_baseline(kind: str, base_url: str, stats_path: str) -> int:
    import scrapy
    from scrapy.crawler import CrawlerProcess
    from scrapy.spiders import SitemapSpider

    extract = None
    if kind == "naive":
        import trafilatura

        extract = trafilatura.extract

    class BenchSpider(SitemapSpider):
        name = f"bench-{kind}"
        sitemap_urls = [f"{base_url}/robots.txt"]

        def parse(self, response: scrapy.http.Response):  # type: ignore[override]
            if extract is None:
                yield {"url": response.url}
                return
            text = extract(response.text, url=response.url, with_metadata=True)
            yield {"url": response.url, "extracted": text is not None}

    process = CrawlerProcess({**COMMON_SETTINGS, "TELNETCONSOLE_ENABLED": False})
    crawler = process.create_crawler(BenchSpider)
    process.crawl(crawler)
    process.start()
    stats = crawler.stats.get_stats() if crawler.stats else {}
    Path(stats_path).write_text(json.dumps({
        "pages": stats.get("response_received_count", 0),
        "items": stats.get("item_scraped_count", 0),
    }), encoding="utf-8")
    return 0


# -- measuring ---------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    wall: float = 0.0
    cpu: float = 0.0
    peak_rss: int = 0
    pages: int = 0
    articles: int | None = None
    rss_trace: list[tuple[float, int, int]] = field(default_factory=list)  # (seconds, tree RSS, pages fetched)
    exit_code: int = 0
    sampled_child_cpu: float = 0.0  # CPU of child processes as last sampled (a check on rusage)

    @property
    def pages_per_s(self) -> float:
        return self.pages / self.wall if self.wall else 0.0

    @property
    def cpu_ms_per_page(self) -> float:
        return 1000 * self.cpu / self.pages if self.pages else 0.0


def tree_rss(proc: psutil.Process) -> int:  # noqa: F821
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


class AccessLog:
    """Requests nginx logged since this object was made (one line each): pages fetched so far."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.offset = path.stat().st_size if path is not None and path.exists() else 0
        self.lines = 0

    def count(self) -> int:
        if self.path is None or not self.path.exists():
            return self.lines
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        self.lines += data.count(b"\n")
        return self.lines


def measure(name: str, cmd: list[str], env: dict[str, str], log_path: Path, access_log: Path | None = None) -> Result:
    import psutil

    result = Result(name)
    fetched = AccessLog(access_log)
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        popen = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        proc = psutil.Process(popen.pid)
        stop = threading.Event()

        child_cpu: dict[int, float] = {}

        def sample() -> None:
            while not stop.is_set():
                with contextlib.suppress(psutil.Error):
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            times = child.cpu_times()
                            child_cpu[child.pid] = times.user + times.system
                rss = tree_rss(proc)
                result.peak_rss = max(result.peak_rss, rss)
                result.rss_trace.append((time.perf_counter() - started, rss, fetched.count()))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _pid, status, rusage = os.wait4(popen.pid, 0)
        result.wall = time.perf_counter() - started
        stop.set()
        sampler.join()
        popen.returncode = os.waitstatus_to_exitcode(status)
    result.exit_code = popen.returncode
    result.cpu = rusage.ru_utime + rusage.ru_stime
    result.sampled_child_cpu = sum(child_cpu.values())
    return result


# -- the site -------------------------------------------------------------------------------------------


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def build_site(args: argparse.Namespace, env: dict[str, str]) -> tuple[Path, int]:
    """Reuse a cached build when its port is free, else build one (its port is in its URLs)."""
    stem = f"newssite-{args.articles}-seed{args.seed}-pad{args.pad_kb}"
    for server_json in sorted(Path(args.cache).glob(f"{stem}*/server.json")):
        port = int(json.loads(server_json.read_text())["base_url"].rsplit(":", 1)[1].split("/")[0])
        if port_free(port) and (server_json.parent / "manifest.json").exists():
            return server_json.parent, port
    port = free_port()
    cache = Path(args.cache) / f"{stem}-port{port}"
    cache.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(cache.parent, 0o755)
    print(f"building newssite ({args.articles} articles, pad {args.pad_kb} KiB) in {cache} ...", flush=True)
    subprocess.run([sys.executable, "-m", "newssite", "build", str(cache), "--articles", str(args.articles),
                    "--seed", args.seed, "--port", str(port), "--pad-kb", str(args.pad_kb), "--quiet"],
                   env=env, check=True)
    return cache, port


def start_nginx(site: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if not shutil.which("nginx"):
        sys.exit("bench/crawl.py needs nginx (apt-get install -y nginx)")
    proc = subprocess.Popen([sys.executable, "-m", "newssite", "nginx", str(site), "--no-faults", "--access-log",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            if proc.poll() is not None:
                sys.exit(f"nginx did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
            time.sleep(0.05)
    sys.exit("nginx did not start listening")


# -- newsingest -----------------------------------------------------------------------------------------


def reset_db(url: str) -> None:
    """An empty database for each newsingest run (PostgreSQL: drop every table)."""
    from sqlalchemy import create_engine, text

    if not url.startswith("postgresql"):
        return
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


def count_rows(url: str) -> tuple[int, int]:
    from sqlalchemy import create_engine, text

    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        articles = conn.execute(text("SELECT count(*) FROM articles")).scalar_one()
        pages = conn.execute(text("SELECT pages FROM crawl_runs ORDER BY id DESC LIMIT 1")).scalar_one()
    engine.dispose()
    return int(articles), int(pages or 0)


def newsingest_settings(args: argparse.Namespace) -> dict[str, object]:
    settings: dict[str, object] = dict(COMMON_SETTINGS)
    settings["NEWSINGEST_EXTRACT_WORKERS"] = args.workers
    settings["NEWSINGEST_EXTRACT_MAX_INFLIGHT"] = args.max_inflight
    settings["NEWSINGEST_STORE_BATCH_SIZE"] = args.batch_size
    for item in args.set:
        name, _, value = item.partition("=")
        settings[name] = value
    return settings


# -- main ------------------------------------------------------------------------------------------------


def fmt_mb(n: int) -> str:
    return f"{n / 2**20:.0f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=5000)
    parser.add_argument("--db", help="a PostgreSQL URL: newsingest also crawls into it (its public schema is "
                                     "dropped before each run), besides the fresh SQLite file")
    parser.add_argument("--seed", default="42")
    parser.add_argument("--pad-kb", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=1, help="run the three crawls this many times, in turn")
    parser.add_argument("--only", action="append", choices=("fetch", "naive", "newsingest"),
                        help="run only these crawlers (repeatable; newsingest: into every database)")
    parser.add_argument("--workers", default="auto", help="NEWSINGEST_EXTRACT_WORKERS for newsingest")
    parser.add_argument("--max-inflight", type=int, default=16, help="NEWSINGEST_EXTRACT_MAX_INFLIGHT")
    parser.add_argument("--batch-size", type=int, default=100, help="NEWSINGEST_STORE_BATCH_SIZE")
    parser.add_argument("-s", "--set", action="append", default=[], help="extra -s NAME=VALUE for newsingest")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "newsingest-bench"))
    parser.add_argument("--newssite", default=str(ROOT.parent / "shared" / "bench"))
    parser.add_argument("--rss-step", type=int, default=5000, help="print newsingest's RSS every this many pages")
    parser.add_argument("--spider", choices=("fetch", "naive"), help=argparse.SUPPRESS)
    parser.add_argument("--base-url", help=argparse.SUPPRESS)
    parser.add_argument("--stats", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.spider:
        return run_baseline(args.spider, args.base_url, args.stats)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([args.newssite, str(ROOT)])}
    site, port = build_site(args, env)
    base = f"http://127.0.0.1:{port}"
    nginx = start_nginx(site, port, env)
    kinds = [kind for kind in args.only or ["fetch", "naive", "newsingest"] if kind != "newsingest"]
    if not args.only or "newsingest" in args.only:
        kinds += ["newsingest"] + (["newsingest-pg"] if args.db else [])
    settings = newsingest_settings(args)
    results: dict[str, list[Result]] = {k: [] for k in kinds}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-crawl-") as tmp:
            sources = Path(tmp) / "sources.toml"
            sources.write_text(
                "[sources.herald]\n"
                'site_name = "The Loopback Herald"\n'
                'allowed_domains = ["127.0.0.1"]\n'
                'allow_private_networks = true\n'
                f'sitemaps = ["{base}/robots.txt"]\n', encoding="utf-8")
            for rep in range(args.repeat):
                for kind in kinds:
                    stats_path = Path(tmp) / f"{kind}-{rep}.json"
                    log_path = Path(tmp) / f"{kind}-{rep}.log"
                    if kind.startswith("newsingest"):
                        db_url = args.db if kind == "newsingest-pg" else f"sqlite:///{tmp}/news-{rep}.db"
                        reset_db(db_url)
                        cmd = [sys.executable, "-m", "crawler.cli", "crawl", "herald", "--sources", str(sources),
                               "--db", db_url]
                        for name, value in settings.items():
                            cmd += ["-s", f"{name}={value}"]
                    else:
                        cmd = [sys.executable, str(Path(__file__).resolve()), "--spider", kind, "--base-url", base,
                               "--stats", str(stats_path)]
                    result = measure(kind, cmd, env, log_path, site / "nginx" / "access.log")
                    if kind.startswith("newsingest"):
                        result.articles, result.pages = count_rows(db_url)
                    elif stats_path.exists():
                        result.pages = json.loads(stats_path.read_text())["pages"]
                    if result.exit_code:
                        print(f"{kind} exited {result.exit_code}; log tail:\n"
                              + log_path.read_text(errors="replace")[-3000:])
                    results[kind].append(result)
                    print(f"  run {rep + 1} {LABELS[kind]}: {result.pages} pages in {result.wall:.1f}s "
                          f"({result.pages_per_s:.0f}/s), cpu {result.cpu_ms_per_page:.2f} ms/page, "
                          f"peak {fmt_mb(result.peak_rss)} MB (children cpu sampled {result.sampled_child_cpu:.1f}s "
                          f"of {result.cpu:.1f}s)", flush=True)
    finally:
        nginx.send_signal(signal.SIGTERM)
        nginx.wait(timeout=10)

    report(args, results, settings)
    return 0


def best(runs: list[Result]) -> Result:
    """The median run by pages/s (the table's row)."""
    ordered = sorted(runs, key=lambda r: r.pages_per_s)
    return ordered[len(ordered) // 2]


def report(args: argparse.Namespace, results: dict[str, list[Result]], settings: dict[str, object]) -> None:
    db = args.db.split("@")[-1] if args.db else None
    print()
    print(f"newssite {args.articles} articles, pad {args.pad_kb} KiB, nginx --no-faults; "
          f"{os.cpu_count()} cores; newsingest into SQLite (temp file){f' and PostgreSQL ({db})' if db else ''}; "
          f"median of {args.repeat} run(s)")
    print("newsingest settings: " + " ".join(f"{k}={v}" for k, v in settings.items()))
    head = (f"{'crawler':<19}{'pages':>8}{'wall s':>9}{'pages/s':>9}{'CPU ms/page':>13}{'peak RSS MB':>13}"
            f"{'articles':>10}")
    print(head)
    print("-" * len(head))
    rows = {k: best(v) for k, v in results.items() if v}
    for kind, r in rows.items():
        articles = "-" if r.articles is None else str(r.articles)
        print(f"{LABELS[kind]:<19}{r.pages:>8}{r.wall:>9.1f}{r.pages_per_s:>9.1f}{r.cpu_ms_per_page:>13.2f}"
              f"{fmt_mb(r.peak_rss):>13}{articles:>10}")
    for kind in ("newsingest", "newsingest-pg"):
        if not {"fetch", "naive", kind} <= rows.keys():
            continue
        ni, naive, fetch = rows[kind], rows["naive"], rows["fetch"]
        vs_naive = ni.pages_per_s / naive.pages_per_s
        vs_fetch = ni.pages_per_s / fetch.pages_per_s
        rss = ni.peak_rss / naive.peak_rss
        name = LABELS[kind]
        print(f"{name} / naive pages/s:  {vs_naive:.2f}x  (goal >= 2.0)  {met(vs_naive >= 2)}")
        print(f"{name} / fetch pages/s:  {vs_fetch:.2f}x  (goal >= 0.6)  {met(vs_fetch >= 0.6)}")
        print(f"{name} / naive peak RSS: {rss:.2f}x  (goal <= 1.5)  {met(rss <= 1.5)}")
        if args.repeat > 1:
            per_rep = [n.pages_per_s / v.pages_per_s for n, v in zip(results[kind], results["fetch"], strict=False)]
            print(f"per-run {name}/fetch: " + ", ".join(f"{x:.2f}" for x in per_rep))
    if {"newsingest", "newsingest-pg"} <= rows.keys():
        ratio = rows["newsingest-pg"].pages_per_s / rows["newsingest"].pages_per_s
        print(f"{LABELS['newsingest-pg']} / {LABELS['newsingest']} pages/s:  {ratio:.2f}x  (goal >= 0.9: within 10%)  "
              f"{met(ratio >= 0.9)}")
        if args.repeat > 1:
            per_rep = [p.pages_per_s / s.pages_per_s
                       for p, s in zip(results["newsingest-pg"], results["newsingest"], strict=False)]
            print("per-run postgresql/sqlite: " + ", ".join(f"{x:.2f}" for x in per_rep))
    for kind in ("newsingest", "newsingest-pg"):
        if kind in rows:
            print_rss_trace(rows[kind], args.rss_step, LABELS[kind])


def met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def print_rss_trace(r: Result, step: int, name: str) -> None:
    """Tree RSS when the crawl had fetched each multiple of `step` pages (nginx's access log), and at the end."""
    if not r.rss_trace or not r.rss_trace[-1][2]:
        return
    print(f"{name} RSS over the crawl (tree RSS when nginx had served N requests; step {step}):")
    marks = [*range(step, r.rss_trace[-1][2] + 1, step)]
    at: dict[int, int] = {}
    peak = 0
    for _t, rss, pages in r.rss_trace:
        peak = max(peak, rss)
        for mark in marks:
            if mark not in at and pages >= mark:
                at[mark] = rss
                print(f"  {mark:>7} pages: RSS {fmt_mb(rss)} MB (peak so far {fmt_mb(peak)} MB)")
    if len(at) >= 2:
        first, last = at[marks[0]], at[max(at)]
        growth = (last - first) / 2**20
        print(f"  RSS at {max(at)} pages - RSS at {marks[0]} pages: {growth:+.0f} MB "
              f"(goal <= 100)  {met(growth <= 100)}")


if __name__ == "__main__":
    sys.exit(main())
