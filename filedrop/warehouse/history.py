"""``filedrop.ingest_history``: reads and writes of the per-file load history (DESIGN §3).

Adapter layer. Every statement binds values as parameters; the schema name is a validated
identifier quoted by :func:`filedrop.warehouse.sql.ident`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from filedrop.objects import SourceObject
from filedrop.protocol import LoadedVersion
from filedrop.warehouse.client import Client, load_lock
from filedrop.warehouse.sql import drop_load_tables, ident

#: Longest message stored in history (``first_error``, ``message``); longer ones are cut with a note.
MESSAGE_CAP = 2000


def clean(text: str | None, cap: int = MESSAGE_CAP) -> str | None:
    """A message fit to store and show: no NUL (PostgreSQL text cannot hold it), at most ``cap``
    characters. Messages quote file content (a header, a value), which can be anything."""
    if text is None:
        return None
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    if len(text) > cap:
        return text[:cap] + f"… ({len(text)} characters in all)"
    return text


def loaded_versions(conn: Client, meta: str, bucket: str, key: str) -> list[LoadedVersion]:
    """The loaded versions of one (bucket, key), in the order they were applied (the latest last), and
    the event-named versions recorded as duplicates of them (``loaded=False``; they order events)."""
    rows = conn.execute(
        f"""SELECT load_id, etag, version_id, sequencer, last_modified, replay, status = 'loaded'
            FROM {ident(meta)}.ingest_history
            WHERE bucket = %s AND key = %s
              AND (status = 'loaded' OR status = 'skipped_duplicate' AND sequencer IS NOT NULL)
            ORDER BY finished_at, load_id""",
        (bucket, key),
    ).fetchall()
    return [LoadedVersion(*r) for r in rows]


def next_attempt(conn: Client, meta: str, obj: SourceObject) -> int:
    row = conn.execute(
        f"""SELECT count(*) FROM {ident(meta)}.ingest_history
            WHERE bucket = %s AND key = %s AND etag = %s AND status IN ('running', 'failed', 'loaded')""",
        (obj.bucket, obj.key, obj.etag),
    ).fetchone()
    return int(row[0]) + 1 if row else 1


def insert(conn: Client, meta: str, *, load_id: str, obj: SourceObject, route: str, table: str, mode: str,
           engine: str, status: str, attempt: int = 1, filedrop: str | None = None, message: str | None = None,
           first_error: str | None = None, finished: bool = False, replay: str = "", retryable: bool = False) -> None:
    conn.execute(
        f"""INSERT INTO {ident(meta)}.ingest_history
            (load_id, bucket, key, etag, version_id, sequencer, last_modified, size_bytes, route, target_table,
             mode, engine, status, attempt, filedrop, message, first_error, replay, retryable, finished_at)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                    CASE WHEN %s THEN clock_timestamp() END)""",
        (load_id, obj.bucket, obj.key, obj.etag, obj.version_id, obj.sequencer, obj.last_modified, obj.size,
         route, table, mode, engine, status, attempt, filedrop, clean(message), clean(first_error), replay,
         retryable, finished),
    )


def finish(conn: Client, meta: str, load_id: str, *, status: str, rows_parsed: int | None = None,
           rows_loaded: int | None = None, rows_rejected: int | None = None, first_error: str | None = None,
           first_error_line: int | None = None, message: str | None = None, retryable: bool = False,
           previous_load_id: str | None = None) -> None:
    conn.execute(
        f"""UPDATE {ident(meta)}.ingest_history SET status = %s, rows_parsed = %s, rows_loaded = %s,
                rows_rejected = %s, first_error = %s, first_error_line = %s, message = %s, retryable = %s,
                previous_load_id = %s, finished_at = clock_timestamp()
            WHERE load_id = %s""",
        (status, rows_parsed, rows_loaded, rows_rejected, clean(first_error), first_error_line, clean(message),
         retryable, previous_load_id, load_id),
    )


def cleanup_dead_loads(conn: Client, meta: str) -> list[str]:
    """Mark loads whose loader died as failed and drop their tables; returns their load ids.

    A live loader holds a session advisory lock on its load id; if we can take that lock, the
    session that owned it is gone (PostgreSQL releases session locks when a connection ends).
    """
    m = ident(meta)
    running = [r[0] for r in conn.execute(
        f"SELECT load_id FROM {m}.ingest_history WHERE status = 'running'").fetchall()]
    cleaned = []
    for load_id in running:
        if not conn.try_lock(load_lock(load_id)):
            continue  # alive
        try:
            with conn.transaction():
                for stmt in drop_load_tables(meta, load_id):
                    conn.execute(stmt)
                conn.execute(
                    f"""UPDATE {m}.ingest_history SET status = 'failed', finished_at = clock_timestamp(),
                        first_error = coalesce(first_error, 'the loader stopped before finishing """
                    """(process killed or connection lost); nothing from this attempt is visible'),
                        message = 'cleaned up after a dead loader', retryable = true
                        WHERE load_id = %s AND status = 'running'""",
                    (load_id,),
                )
                conn.execute(f"DELETE FROM {m}.rejected_rows WHERE load_id = %s", (load_id,))
            cleaned.append(load_id)
        finally:
            conn.unlock(load_lock(load_id))
    # Per-load tables without a running history row (e.g. the history insert never committed).
    orphans = conn.execute(
        f"""SELECT DISTINCT right(c.relname, 32) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname ~ '^_(load|raw)_[0-9a-f]{{32}}$'
            AND NOT EXISTS (SELECT 1 FROM {m}.ingest_history h
                            WHERE h.load_id = right(c.relname, 32) AND h.status = 'running')""",
        (meta,),
    ).fetchall()
    for (load_id,) in orphans:
        for stmt in drop_load_tables(meta, load_id):
            conn.execute(stmt)
    return cleaned


@dataclass(frozen=True)
class RouteStatus:
    route: str
    table: str
    loaded: int
    failed: int
    skipped: int
    running: int
    rows_loaded: int
    last_load: datetime | None
    last_error: str | None


def recent(conn: Client, meta: str, limit: int = 50, route: str | None = None, *, since: datetime | None = None,
           status: str | None = None, table: str | None = None) -> list[dict[str, Any]]:
    """The newest loads first, filtered by route, start time, status (``skipped``: both kinds) and table;
    with each load's duration in seconds (None while it runs)."""
    return conn.dicts(
            f"""SELECT load_id, bucket, key, etag, route, target_table, mode, engine, status, rows_parsed,
                       rows_loaded, rows_rejected, first_error, first_error_line, message, attempt, size_bytes,
                       started_at, finished_at,
                       extract(epoch FROM finished_at - started_at)::float8 AS duration_seconds,
                       filedrop, replay
                FROM {ident(meta)}.ingest_history
                WHERE (%(route)s::text IS NULL OR route = %(route)s)
                  AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
                  AND (%(status)s::text IS NULL OR status = %(status)s
                       OR (%(status)s = 'skipped' AND status LIKE 'skipped%%'))
                  AND (%(table)s::text IS NULL OR target_table = %(table)s)
                ORDER BY started_at DESC, load_id DESC LIMIT %(limit)s""",
            {"route": route, "limit": limit, "since": since, "status": status, "table": table},
        )


def route_status(conn: Client, meta: str) -> list[RouteStatus]:
    """Per route, counting object versions: loaded; failed (and not since replaced by a newer loaded
    version of the same key); skipped; running; rows loaded; last load; the latest outstanding error."""
    rows = conn.execute(
        f"""WITH per_version AS (
                SELECT route, bucket, key, max(started_at) AS last_attempt, max(target_table) AS target_table,
                       bool_or(status = 'loaded') AS loaded,
                       (array_agg(status ORDER BY started_at DESC, load_id DESC))[1] AS last_status,
                       sum(rows_loaded) FILTER (WHERE status = 'loaded') AS rows_loaded,
                       max(finished_at) FILTER (WHERE status = 'loaded') AS last_load,
                       max(started_at) FILTER (WHERE status = 'failed') AS failed_at,
                       (array_agg(first_error ORDER BY started_at DESC) FILTER (WHERE status = 'failed'))[1]
                           AS last_error
                FROM {ident(meta)}.ingest_history GROUP BY route, bucket, key, etag),
            -- a failed version is no longer outstanding once a newer version of its key loaded
            -- (a window over the key's versions: linear, where a correlated subquery was quadratic)
            classified AS (
                SELECT v.*, (NOT v.loaded AND v.last_status = 'failed' AND NOT coalesce(
                    max(v.last_load) OVER (PARTITION BY v.bucket, v.key) > v.last_attempt, false))
                    AS outstanding_failure
                FROM per_version v)
            SELECT route, max(target_table),
                   count(*) FILTER (WHERE loaded),
                   count(*) FILTER (WHERE outstanding_failure),
                   count(*) FILTER (WHERE NOT loaded AND last_status LIKE 'skipped%%'),
                   count(*) FILTER (WHERE NOT loaded AND last_status = 'running'),
                   coalesce(sum(rows_loaded), 0)::bigint,
                   max(last_load),
                   (array_agg(last_error ORDER BY failed_at DESC NULLS LAST)
                       FILTER (WHERE outstanding_failure))[1]
            FROM classified GROUP BY route ORDER BY route"""
    ).fetchall()
    return [RouteStatus(*r) for r in rows]


def latest_for_filedrop(conn: Client, meta: str, filedrop: str) -> dict[str, Any] | None:
    """The newest history row a FileDrop's loads wrote (its current attempt's outcome)."""
    rows = conn.dicts(
            f"""SELECT load_id, status, rows_parsed, rows_loaded, rows_rejected, first_error, message, retryable,
                       started_at, finished_at
                FROM {ident(meta)}.ingest_history WHERE filedrop = %s
                ORDER BY started_at DESC, load_id DESC LIMIT 1""",
            (filedrop,),
        )
    return rows[0] if rows else None
