"""`newsingest demo`: crawl the bundled demo site into a database and summarize.

The main job of the README's first command: serve the generated site on a
free loopback port, crawl it with the real spider and pipelines (in this
process), then print what the database holds.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from crawler.demo.server import serve_demo_site
from crawler.demo.site import demo_source_config

DEMO_SOURCE = "demo"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def write_sources_file(path: Path, tables: dict[str, dict[str, Any]]) -> Path:
    """Write a sources TOML file (flat keys and one level of sub-tables)."""
    lines: list[str] = []
    for name, table in tables.items():
        lines.append(f"[sources.{name}]")
        subtables = {k: v for k, v in table.items() if isinstance(v, dict)}
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items() if k not in subtables]
        for sub, values in subtables.items():
            lines.append(f"\n[sources.{name}.{sub}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_demo(database_url: str | None = None, keep_site: str | None = None) -> int:
    from crawler.cli import run_crawl
    from storage.db import resolve_database_url

    url = resolve_database_url(database_url)
    with tempfile.TemporaryDirectory(prefix="newsingest-demo-") as tmp:
        workdir = Path(keep_site) if keep_site else Path(tmp) / "site"
        with serve_demo_site(workdir) as (server, manifest):
            print(f"demo site: {manifest['site_name']} at {server.base_url}/ "
                  f"({len(manifest['articles'])} articles in its manifest)")
            sources = write_sources_file(Path(tmp) / "sources.toml", {DEMO_SOURCE: {
                **demo_source_config(server.base_url),
                # A local site needs no politeness delay.
                "settings": {"AUTOTHROTTLE_ENABLED": False},
            }})
            code = run_crawl(DEMO_SOURCE, sources_file=str(sources), database_url=url, trigger="demo",
                             overrides=["LOG_LEVEL=WARNING"])
            print_summary(url, manifest)
    return code


def print_summary(database_url: str, manifest: dict[str, Any]) -> None:
    from rich.table import Table
    from sqlalchemy import func, select

    from crawler.cli import make_console, runs_table
    from storage.db import mask_url
    from storage.models import Article
    from storage.repository import open_repository

    repository = open_repository(database_url)
    console = make_console()
    runs = repository.recent_runs(limit=1, source=DEMO_SOURCE)
    console.print(runs_table(runs, title="Demo crawl run"))
    with repository.sessions() as session:
        total = session.scalar(select(func.count(Article.id)).where(Article.source == DEMO_SOURCE)) or 0
        duplicates = session.scalar(select(func.count(Article.id)).where(
            Article.source == DEMO_SOURCE, Article.duplicate_of.is_not(None))) or 0
        stored_urls = set(session.scalars(select(Article.canonical_url).where(Article.source == DEMO_SOURCE)))
    expected = {a["url"] for a in manifest["articles"] if a["kind"] != "stub" and not a.get("duplicate_of")}
    found = len(expected & stored_urls)
    run = runs[0] if runs else None

    table = Table(title=f"Stored in {mask_url(database_url)}")
    table.add_column("what")
    table.add_column("count", justify="right")
    table.add_row("article rows (source demo)", str(total))
    table.add_row("  of which duplicates of an earlier row (duplicate_of)", str(duplicates))
    table.add_row("  one row per story", str(total - duplicates))
    table.add_row("manifest articles found", f"{found} / {len(expected)}")
    if run is not None:
        table.add_row("this run: new rows / updated", f"{run.items_stored} / {run.items_updated}")
        table.add_row("this run: duplicates / dropped", f"{run.duplicates} / {run.dropped}")
    console.print(table)

    coverage = repository.field_coverage(DEMO_SOURCE)
    if coverage:
        cov = Table(title="Field coverage")
        cov.add_column("field")
        cov.add_column("filled", justify="right")
        for name, share in coverage.items():
            cov.add_row(name, f"{share:.0%}")
        console.print(cov)
