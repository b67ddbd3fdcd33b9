"""Idempotent schema setup: the bookkeeping tables and the routes' staging tables (DESIGN §3).

Safe to run concurrently: changes serialize on one transaction lock, and a schema that is already
current costs one catalog read and takes no lock.
"""

from __future__ import annotations

import logging

from filedrop.config import Settings
from filedrop.routes import FileRoute
from filedrop.warehouse import ddl, history, sql
from filedrop.warehouse.client import Client, WarehouseError, connect

log = logging.getLogger(__name__)


def ensure_meta(conn: Client, settings: Settings) -> None:
    """Create the bookkeeping schema and tables if they are missing or older than this release (safe to
    run concurrently). A current schema costs one catalog read and takes no lock on any table: an
    analyst's open transaction on the history table blocks no command."""
    if _meta_is_current(conn, settings.meta_schema):
        return
    with conn.transaction():
        conn.lock_ddl()
        if _meta_is_current(conn, settings.meta_schema):
            return
        log.info("creating or upgrading the bookkeeping schema %s", settings.meta_schema)
        for stmt in ddl.meta_ddl(settings.meta_schema, conn.server_version):
            conn.execute(stmt)


def _meta_is_current(conn: Client, meta: str) -> bool:
    row = conn.execute(
        "SELECT obj_description(to_regclass(%s), 'pg_class'), "
        "(SELECT count(*) FROM unnest(%s::text[]) AS o(name) WHERE to_regclass(o.name) IS NOT NULL)",
        (f"{sql.ident(meta)}.ingest_history", [f"{sql.ident(meta)}.{sql.ident(n)}" for n in ddl.LEGACY_META_OBJECTS]),
    ).fetchone()
    return row is not None and row[0] == ddl.meta_version_comment() and row[1] == 0


def ensure_staging(conn: Client, settings: Settings, route: FileRoute) -> None:
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
        conn.lock_ddl()
        statements = ddl.staging_ddl(schema, route)
        for stmt in statements[:2]:  # schema and table
            conn.execute(stmt)
        rows = _columns(conn, schema, route.spec.table)
        if "_source_key" in {n for n, _ in rows} and "_source_bucket" not in {n for n, _ in rows}:
            log.info("adding _source_bucket to %s.%s (from the load history)", schema, route.spec.table)
            for stmt in ddl.staging_bucket_migration(schema, settings.meta_schema, route.spec.table):
                conn.execute(stmt)
            rows = _columns(conn, schema, route.spec.table)
        if "_source_bucket" in {n for n, _ in rows}:
            for stmt in statements[2:]:  # indexes
                conn.execute(stmt)
    _check_columns(schema, route, rows)
    _check_primary_key(conn, schema, route)


def _indexes_present(conn: Client, schema: str, route: FileRoute) -> bool:
    wanted = ddl.staging_index_names(route)
    if not wanted:
        return True
    found = conn.execute(
        """SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind = 'i' AND c.relname = ANY(%s)""", (schema, wanted)).fetchone()
    return found is not None and int(found[0]) == len(wanted)


def _check_primary_key(conn: Client, schema: str, route: FileRoute) -> None:
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
            "the table (DROP TABLE … CASCADE: with the load tables attached to it) to let filedrop recreate it.")
    attached = [r[0] for r in conn.all(sql.attached_tables(schema, "", route.spec.table))]
    if attached:
        raise WarehouseError(
            f"table {schema}.{route.spec.table} has {len(attached)} load table(s) attached by large appends or "
            f"replacements ({', '.join(attached[:3])}{', …' if len(attached) > 3 else ''}): its primary key does "
            f"not cover their rows, so FileRoute {route.name} (mode upsert) would duplicate them. Fold them into "
            "the table first (docs/operations.md, \"Attached load tables\").")


def _check_columns(schema: str, route: FileRoute, rows: list[tuple[str, str]]) -> None:
    have = {str(n): str(t) for n, t in rows}
    want = {n: t for n, t, _ in ddl.staging_columns(route)}
    problems = []
    missing = [n for n in want if n not in have]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)}")
    retyped = [f"{n} is {have[n]}, route says {want[n]}" for n in want if n in have and have[n] != want[n]]
    problems += retyped
    if problems:
        raise WarehouseError(
            f"table {schema}.{route.spec.table} exists but does not match FileRoute {route.name}: "
            + "; ".join(problems) + ". Migrate the table, or drop it (DROP TABLE … CASCADE: with the load "
            "tables attached to it) to let filedrop recreate it."
        )


def _columns(conn: Client, schema: str, table: str) -> list[tuple[str, str]]:
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
