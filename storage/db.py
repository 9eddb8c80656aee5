"""Engine and session factories: the one place that knows how to connect.

SQLite (the embedded default) runs in WAL mode with a busy timeout so a reader
never blocks the crawler; PostgreSQL goes through psycopg 3 with pre-ping, so a
server restart costs a reconnect instead of an error.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

DEFAULT_DATABASE_URL = "sqlite:///news.db"


def resolve_database_url(cli_value: str | None = None) -> str:
    """`--db URL`, else env DATABASE_URL, else ./news.db (SQLite)."""
    url = cli_value or os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    return normalize_database_url(url)


def normalize_database_url(url: str) -> str:
    """Route PostgreSQL URLs through psycopg 3 whatever driver they name."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() != "psycopg":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, for anything a person or a log may see."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a database URL: mask everything between :// and @
        head, sep, tail = url.partition("://")
        return head + sep + (("***@" + tail.split("@", 1)[1]) if "@" in tail else tail)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def create_db_engine(url: str | None = None, *, echo: bool = False) -> Engine:
    """A new engine for `url` (resolved as the CLI does when None)."""
    url = resolve_database_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(
        url,
        echo=echo,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=5,
        connect_args={"connect_timeout": 10},
    )


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """A process-wide engine per URL (engines own connection pools: share them)."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = create_db_engine(url)
        return engine


def dispose_engines() -> None:
    """Close every pooled connection (tests, and before a process forks)."""
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
