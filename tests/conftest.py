"""Shared fixtures: real databases (SQLite file and a fresh PostgreSQL database).

PostgreSQL tests run against the server at $NEWSINGEST_TEST_PG (default
postgresql+psycopg://postgres@127.0.0.1:5432/test); each test gets a database
of its own, dropped afterwards. They fail, not skip, when the server is down,
unless NEWSINGEST_SKIP_PG=1 says so on purpose.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

PG_ADMIN_URL = os.environ.get("NEWSINGEST_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BACKENDS = ["sqlite", "postgresql"]


def _pg_conninfo(url: str) -> str:
    parsed = make_url(url)
    return (f"host={parsed.host or '127.0.0.1'} port={parsed.port or 5432} "
            f"user={parsed.username or 'postgres'} dbname={parsed.database or 'postgres'}"
            + (f" password={parsed.password}" if parsed.password else ""))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    if os.environ.get("NEWSINGEST_SKIP_PG") == "1":
        pytest.skip("NEWSINGEST_SKIP_PG=1")
    name = f"newsingest_test_{uuid.uuid4().hex[:10]}"
    admin = _pg_conninfo(PG_ADMIN_URL)
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        from storage.db import dispose_engines

        dispose_engines()  # drop pooled connections before DROP DATABASE
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'news.db'}"


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest) -> str:
    """An empty database of each backend (the test runs once per backend)."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")
