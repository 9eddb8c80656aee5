"""The `newsingest` command: crawl | schedule | deploy | extract | demo | runs | export | db.

Exit codes: 0 success, 1 the crawl ran and failed, 2 bad input (config,
arguments, schema), 3 the database cannot be reached.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_DATABASE = 0, 1, 2, 3


def _fail(message: str, code: int) -> int:
    print(f"newsingest: {message}", file=sys.stderr)
    return code


# -- crawl --------------------------------------------------------------------------


def crawl_settings(overrides: Sequence[str], *, sources_path: Path, database_url: str,
                   trigger: str = "manual", run_id: int | None = None,
                   allow_private_networks: bool = False) -> Any:
    """Project settings plus the command line's `-s NAME=VALUE` overrides."""
    os.environ.setdefault("SCRAPY_SETTINGS_MODULE", "crawler.settings")
    from scrapy.utils.project import get_project_settings

    settings = get_project_settings()
    settings.set("NEWSINGEST_SOURCES", str(sources_path), priority="cmdline")
    settings.set("NEWSINGEST_DATABASE_URL", database_url, priority="cmdline")
    settings.set("NEWSINGEST_RUN_TRIGGER", trigger, priority="cmdline")
    # The address guard's resolver is process-wide: the source's choice must reach it here.
    settings.set("NEWSINGEST_ALLOW_PRIVATE_NETWORKS", allow_private_networks, priority="cmdline")
    if run_id is not None:  # the scheduler made the run record; the crawl completes it
        settings.set("NEWSINGEST_RUN_ID", run_id, priority="cmdline")
    for pair in overrides:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"-s expects NAME=VALUE, got {pair!r}")
        settings.set(name.strip(), value, priority="cmdline")
    return settings


def run_crawl(source_name: str, *, sources_file: str | None, database_url: str | None,
              overrides: Sequence[str] = (), trigger: str = "manual", run_id: int | None = None) -> int:
    """Crawl one source in this process; return the exit code from its run record."""
    from scrapy.crawler import CrawlerProcess
    from sqlalchemy.exc import OperationalError

    from crawler.sources import SourcesError, load_source, resolve_sources_path
    from storage.db import resolve_database_url
    from storage.migrate import SchemaError
    from storage.repository import open_repository

    try:
        sources_path = resolve_sources_path(sources_file)
        source = load_source(sources_path, source_name)
    except SourcesError as exc:
        return _fail(str(exc), EXIT_USAGE)
    url = resolve_database_url(database_url)
    try:
        open_repository(url)
    except SchemaError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OperationalError as exc:
        return _fail(f"database unreachable: {str(exc.orig or exc).splitlines()[0]}", EXIT_DATABASE)
    try:
        settings = crawl_settings(overrides, sources_path=sources_path, database_url=url, trigger=trigger,
                                  run_id=run_id, allow_private_networks=source.allow_private_networks)
    except ValueError as exc:
        return _fail(str(exc), EXIT_USAGE)
    process = CrawlerProcess(settings)
    crawler = process.create_crawler("news")
    process.crawl(crawler, source=source_name, sources_file=str(sources_path))
    process.start()
    status = crawler.stats.get_value("newsingest/run_status") if crawler.stats else None
    code = EXIT_OK if status == "succeeded" else EXIT_FAILED
    run = crawler.stats.get_value("newsingest/run_id") if crawler.stats else None
    if run is not None:
        # The crawl records its own exit code: a supervisor stopped meanwhile must not leave it empty.
        try:
            open_repository(url).set_exit_code(run, code)
        except Exception as exc:  # the run record already says how the crawl ended
            print(f"newsingest: could not record the exit code of run {run}: {exc}", file=sys.stderr)
    if code == EXIT_OK:
        return EXIT_OK
    return _fail(f"crawl of {source_name} {status or 'did not complete'}; see `newsingest runs`", EXIT_FAILED)


def cmd_crawl(args: argparse.Namespace) -> int:
    return run_crawl(args.source, sources_file=args.sources, database_url=args.db, overrides=args.set,
                     trigger=args.trigger, run_id=args.run_id)


# -- schedule ------------------------------------------------------------------------------


def cmd_schedule(args: argparse.Namespace) -> int:
    """Run the scheduler in the foreground, list its jobs, or trigger one crawl now."""
    from sqlalchemy.exc import OperationalError

    from crawler.schedule import SchedulerError, SchedulerOptions, SchedulerService, configure_logging
    from crawler.sources import SourcesError, load_executor, load_sources, resolve_sources_path
    from storage.db import resolve_database_url
    from storage.migrate import SchemaError

    if args.action is None and args.name is not None:
        return _fail(f"unexpected argument {args.name!r}; did you mean `schedule trigger {args.name}`?", EXIT_USAGE)
    if args.action == "trigger" and not args.name:
        return _fail("schedule trigger: name the source to crawl", EXIT_USAGE)
    sources_path = resolve_sources_path(args.sources)
    try:
        sources = load_sources(sources_path)
        options = SchedulerOptions.from_env(
            sources_path.resolve(), resolve_database_url(args.db), max_concurrent=args.max_concurrent,
            misfire_grace=args.misfire_grace, shutdown_grace=args.shutdown_grace, stop_grace=args.stop_grace,
            lease_ttl=args.lease_ttl, crawl_settings=args.set, executor=load_executor(sources_path))
        configure_logging(os.environ.get("NEWSINGEST_LOG_LEVEL", "INFO"))
        service = SchedulerService(options)
    except (SourcesError, SchedulerError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        if args.list:
            print_jobs(service.job_listing(sources))
            return EXIT_OK
        if args.action == "trigger":
            status = service.trigger_now(args.name)
            if status == "skipped":
                return _fail(f"{args.name} was not crawled: another scheduler is crawling it now "
                             "(its lease is held); see `newsingest runs`", EXIT_FAILED)
            print(f"crawl of {args.name}: {status}")
            return EXIT_OK if status == "succeeded" else EXIT_FAILED
        return service.run_forever()
    except (SchemaError, SchedulerError, SourcesError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OperationalError as exc:
        return _fail(f"database unreachable: {str(exc.orig or exc).splitlines()[0]}", EXIT_DATABASE)


def cmd_deploy(args: argparse.Namespace) -> int:
    """Upload this installed newsingest as an egg to every Scrapyd node of the [executor] table."""
    from crawler.deploy import DeployError, build_egg, deploy
    from crawler.sources import SourcesError, load_executor, resolve_sources_path

    if args.requirements:
        from crawler.deploy import node_requirements

        print("\n".join(node_requirements()))
        return EXIT_OK
    if args.build_only:
        egg = build_egg()
        Path(args.build_only).write_bytes(egg.data)
        print(f"wrote {args.build_only}: newsingest {egg.version}, {egg.files} files, {len(egg.data)} bytes")
        return EXIT_OK
    try:
        config = load_executor(resolve_sources_path(args.sources))
    except SourcesError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        done = deploy(config)
    except DeployError as exc:
        return _fail(f"deploy: {exc}", EXIT_FAILED)
    for item in done:
        print(f"node {item.node}: project {config.project} version {item.version} ({item.spiders} spider)")
    return EXIT_OK


def print_jobs(rows: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title="Scheduled crawls")
    for column in ("job", "schedule (UTC)", "next run (UTC)", "state"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.job_id, row.schedule,
                      f"{row.next_run:%Y-%m-%d %H:%M:%S}" if row.next_run else "—", row.state)
    console = make_console()
    console.print(table)
    if not rows:
        console.print("no source has a `schedule` table (or every scheduled source is disabled)")


# -- extract -------------------------------------------------------------------------


def extract_file(path: Path, url: str | None, zone: str | None = None) -> dict[str, Any]:
    """Extract and clean one saved page exactly as a crawl would (`zone`: the source's ``timezone``)."""
    from zoneinfo import ZoneInfo

    from crawler.extract import extract_page
    from pipelines.clean import clean_fields

    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    page = extract_page(data, url or path.resolve().as_uri(), zone=ZoneInfo(zone) if zone else None)
    fields = clean_fields(page.fields)
    return {"is_article": page.is_article, **fields}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def cmd_extract(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        return _fail(f"{path}: no such file", EXIT_USAGE)
    try:
        fields = extract_file(path, args.url, args.timezone)
    except (ValueError, LookupError) as exc:  # an unknown --timezone (ZoneInfoNotFoundError is a KeyError)
        return _fail(f"--timezone {args.timezone!r}: {exc}", EXIT_USAGE)
    if args.json:
        print(json.dumps(fields, default=_json_default, ensure_ascii=False))
        return EXIT_OK
    for key, value in fields.items():
        if key == "body":
            continue
        print(f"{key:>13}: {value.isoformat() if isinstance(value, datetime) else value}")
    print(f"{'body':>13}:\n{fields.get('body') or ''}")
    return EXIT_OK


# -- runs, export, db ---------------------------------------------------------------------


def _repository(db: str | None) -> Any:
    from storage.repository import open_repository

    return open_repository(db)


def _guard_db(func: Any) -> Any:
    """Turn database and schema errors into one-line messages and exit codes."""

    def wrapper(args: argparse.Namespace) -> int:
        from sqlalchemy.exc import OperationalError

        from storage.migrate import SchemaError

        try:
            return func(args)
        except SchemaError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except OperationalError as exc:
            return _fail(f"database unreachable: {str(exc.orig or exc).splitlines()[0]}", EXIT_DATABASE)

    return wrapper


def make_console() -> Any:
    """A rich console that stays readable when piped (rich assumes 80 columns)."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=150)


def runs_table(runs: Sequence[Any], title: str = "Recent crawl runs") -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("id", "source", "node", "trigger", "started (UTC)", "duration", "status", "pages", "stored",
                   "updated", "duplicates", "dropped", "errors"):
        table.add_column(column, justify="right" if column not in ("source", "node", "trigger", "status") else "left")
    for run in runs:
        duration = "—"
        if run.finished_at:
            duration = f"{(run.finished_at - run.started_at).total_seconds():.1f}s"
        status = {"succeeded": "[green]succeeded[/]", "failed": "[red]failed[/]", "lost": "[magenta]lost[/]",
                  "timed_out": "[yellow]timed_out[/]", "running": "[cyan]running[/]"}.get(run.status, run.status)
        # The Scrapyd node the run was dispatched to; a local crawl shows the host it ran on.
        node = getattr(run, "node", None) or run.hostname or "—"
        table.add_row(str(run.id), run.source, node, run.trigger, f"{run.started_at:%Y-%m-%d %H:%M:%S}", duration,
                      status, str(run.pages), str(run.items_stored), str(run.items_updated),
                      str(run.duplicates), str(run.dropped), str(run.errors))
    return table


@_guard_db
def cmd_runs(args: argparse.Namespace) -> int:
    repository = _repository(args.db)
    if args.per_source and not args.source:
        runs = repository.recent_runs_per_source(args.per_source)
    else:
        runs = repository.recent_runs(limit=args.per_source or args.limit, source=args.source)
    console = make_console()
    console.print(runs_table(runs))
    for run in runs:
        if run.error and run.status != "succeeded":
            console.print(f"[bold]run {run.id}[/] ({run.source}): {run.error.splitlines()[0]}")
    return EXIT_OK


def parse_since(value: str) -> datetime:
    """An ISO 8601 time (UTC if no offset) or a relative age like 24h / 7d / 30m."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].isdigit():
        return datetime.now(UTC) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


EXPORT_COLUMNS = ("id", "source", "url", "canonical_url", "title", "subtitle", "body", "authors",
                  "published_at", "modified_at", "language", "section", "tags", "image_url", "site_name",
                  "paywalled", "content_hash", "duplicate_of", "version", "first_seen_at", "last_seen_at", "updated_at")


@_guard_db
def cmd_export(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError:
        return _fail(f"--since: not a time or age: {args.since!r}", EXIT_USAGE)
    repository = _repository(args.db)
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for article in repository.iter_articles(since=since, source=args.source):
            row = {col: getattr(article, col) for col in EXPORT_COLUMNS}
            out.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} articles", file=sys.stderr)
    return EXIT_OK


def cmd_db(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from storage.db import get_engine, resolve_database_url
    from storage.migrate import current_revision, head_revision, upgrade

    engine = get_engine(resolve_database_url(args.db))
    try:
        if args.action == "upgrade":
            upgrade(engine, args.revision)
            print(f"database at revision {current_revision(engine)} (head {head_revision()})")
        else:
            print(f"current: {current_revision(engine)}; head: {head_revision()}")
    except OperationalError as exc:
        return _fail(f"database unreachable: {str(exc.orig or exc).splitlines()[0]}", EXIT_DATABASE)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from crawler.demo.run import run_demo

    return run_demo(database_url=args.db, keep_site=args.keep_site)


# -- entry point ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="newsingest", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help="database URL (default: $DATABASE_URL, else sqlite:///news.db)")

    p = sub.add_parser("crawl", help="crawl one configured source now")
    p.add_argument("source", help="source name in the sources file")
    p.add_argument("--sources", help="sources TOML (default: $NEWSINGEST_SOURCES, else ./sources.toml)")
    db_option(p)
    p.add_argument("-s", "--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override a Scrapy setting (repeatable)")
    p.add_argument("--trigger", default="manual", choices=("manual", "schedule", "demo"), help=argparse.SUPPRESS)
    p.add_argument("--run-id", type=int, help="complete this existing `running` run record (set by the scheduler)")
    p.set_defaults(func=cmd_crawl)

    p = sub.add_parser("schedule", help="run every source's crawl on its schedule (foreground service)",
                       description="Run the scheduler in the foreground (SIGTERM/SIGINT stop it gracefully); "
                                   "--list prints the jobs; `trigger NAME` crawls one source now. Durations "
                                   "take 30s / 15m / 1h. See docs/scheduler.md.")
    p.add_argument("action", nargs="?", choices=("trigger",), help="`trigger NAME`: crawl NAME now (trigger=manual)")
    p.add_argument("name", nargs="?", help=argparse.SUPPRESS)
    p.add_argument("--sources", help="sources TOML (default: $NEWSINGEST_SOURCES, else ./sources.toml)")
    db_option(p)
    p.add_argument("--list", action="store_true", help="print every job with its next run time, and exit")
    p.add_argument("--max-concurrent", metavar="N",
                   help="crawls running at once, all sources (default: $NEWSINGEST_MAX_CONCURRENT_CRAWLS, else 4)")
    p.add_argument("--misfire-grace", metavar="DURATION",
                   help="how late a run may still start (default: $NEWSINGEST_MISFIRE_GRACE, else 5m)")
    p.add_argument("--shutdown-grace", metavar="DURATION",
                   help="on SIGTERM, how long running crawls may finish (default: $NEWSINGEST_SHUTDOWN_GRACE, "
                        "else 60s)")
    p.add_argument("--stop-grace", metavar="DURATION",
                   help="after asking a crawl to stop, before forcing it (default: $NEWSINGEST_STOP_GRACE, else 15s)")
    p.add_argument("--lease-ttl", metavar="DURATION",
                   help="source lease lifetime, renewed every quarter (default: $NEWSINGEST_LEASE_TTL, else 60s)")
    p.add_argument("-s", "--set", action="append", default=[], metavar="NAME=VALUE",
                   help="Scrapy setting for every crawl (repeatable)")
    p.set_defaults(func=cmd_schedule)

    p = sub.add_parser("deploy", help="upload this newsingest as an egg to every Scrapyd node of [executor]",
                       description="Build the egg of the installed project and add the same version to every "
                                   "Scrapyd node listed in the sources file's [executor] table; refuses (exit 1) "
                                   "and names the node when one is unreachable. See docs/scale-out.md.")
    p.add_argument("--sources", help="sources TOML (default: $NEWSINGEST_SOURCES, else ./sources.toml)")
    p.add_argument("--build-only", metavar="FILE", help="only write the egg to FILE")
    p.add_argument("--requirements", action="store_true",
                   help="print what a node's environment needs (newsingest's dependencies and Scrapyd), and exit")
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser("extract", help="print the fields extracted from a saved HTML file")
    p.add_argument("file")
    p.add_argument("--url", help="the page's URL (resolves relative links and canonical URLs)")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--timezone", help="IANA zone of times the page prints without one (a source's `timezone`)")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser("demo", help="crawl the bundled offline demo site into a database and summarize")
    db_option(p)
    p.add_argument("--keep-site", metavar="DIR", help="build the demo site into DIR and keep it")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("runs", help="list recent crawl runs")
    db_option(p)
    p.add_argument("--source")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--per-source", type=int, metavar="N", help="the N latest runs of every source, by source")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("export", help="write articles as JSON lines")
    db_option(p)
    p.add_argument("--format", choices=("jsonl",), default="jsonl")
    p.add_argument("--since", help="only articles changed since TIME (ISO 8601) or AGE (24h, 7d)")
    p.add_argument("--source")
    p.add_argument("--output", "-o", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("db", help="database schema migrations")
    p.add_argument("action", choices=("upgrade", "current"))
    p.add_argument("revision", nargs="?", default="head")
    db_option(p)
    p.set_defaults(func=cmd_db)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
