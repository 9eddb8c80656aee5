"""Schema migrations through Alembic, with the scripts shipped in this package.

Production paths never call `create_all`: the schema is whatever the
migrations build, so SQLite and PostgreSQL databases stay comparable.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


class SchemaError(RuntimeError):
    """The database schema is not one this version can write to."""

    exit_code = 2


def alembic_config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply migrations up to `revision` in one transaction per step."""
    cfg = alembic_config(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def ensure_schema(engine: Engine) -> None:
    """Make an empty database usable; refuse to write to an outdated one.

    An empty database is upgraded to head (so a first `newsingest crawl`
    just works). A database at an older revision is left alone: upgrading
    production data is the operator's decision (`newsingest db upgrade`).
    """
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        tables = set(inspect(engine).get_table_names())
        if tables & {"articles", "crawl_runs", "sources"}:
            raise SchemaError(
                f"database {engine.url.render_as_string()} has newsingest tables but no "
                "alembic_version: it was not created by newsingest migrations"
            )
        upgrade(engine)
        return
    script = ScriptDirectory.from_config(alembic_config())
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        raise SchemaError(
            f"database schema revision {current} is newer than this newsingest ({head}): upgrade newsingest"
        )
    raise SchemaError(
        f"database schema is at revision {current}, this newsingest needs {head}: "
        "run `newsingest db upgrade` first"
    )
