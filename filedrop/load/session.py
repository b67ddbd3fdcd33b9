"""The load protocol (DESIGN §3): the one implementation of "exactly once per object version".

:func:`load_object` claims the object, checks its history, lets an engine (:mod:`filedrop.load.engine`)
parse it into a private per-load table, then runs one short transaction that applies it by ``mode`` and
records ``loaded``. Every outcome, failures included, is written to ``ingest_history``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from filedrop.config import Settings
from filedrop.load.engine import Engine, EngineFactory, LoadFailed, Parsed, engine_factory
from filedrop.load.sources import ObjectChanged, ObjectSuperseded, SourceError
from filedrop.objects import SourceObject
from filedrop.protocol import choose_engine, decide, too_many_bad_rows
from filedrop.routes import FileRoute, RouteSpec
from filedrop.warehouse import Client, WarehouseError, connect, ensure_meta, ensure_staging, history, sql
from filedrop.warehouse.client import (
    DuplicateKeys,
    LockTimeout,
    ServerError,
    StatementError,
    claim_lock,
    load_lock,
    object_lock,
)

log = logging.getLogger(__name__)


@dataclass
class LoadResult:
    obj: SourceObject
    route: str
    status: str  # loaded | skipped_duplicate | skipped_superseded | failed
    load_id: str | None = None
    engine: str = "direct"
    rows_parsed: int = 0
    rows_loaded: int = 0
    rows_rejected: int = 0
    rows_changed: int = 0
    first_error: str | None = None
    first_error_line: int | None = None
    message: str = ""
    retryable: bool = False


# --- the protocol ------------------------------------------------------------------------------------

class LoadSession:
    """Loads that share one warehouse connection (the local runtime's passes over many files).

    The bookkeeping tables and each route's staging table are created or checked once per session
    instead of once per file; a lost connection is dropped and the next load opens a new one.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings
        self._conn: Client | None = None
        self._meta_ready = False
        self._staging_ready: set[str] = set()

    def __enter__(self) -> LoadSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None

    def _connection(self) -> Client:
        if self._conn is None or not self._conn.alive:
            self.close()
            self._conn = connect(self.url)
            self._meta_ready, self._staging_ready = False, set()
        return self._conn

    def ensure_meta(self, conn: Client) -> None:
        if not self._meta_ready:
            ensure_meta(conn, self.settings)
            self._meta_ready = True

    def ensure_staging(self, conn: Client, route: FileRoute) -> None:
        key = route.model_dump_json()
        if key not in self._staging_ready:
            ensure_staging(conn, self.settings, route)
            self._staging_ready.add(key)

    def load(self, route: FileRoute, obj: SourceObject, *, engine: str | None = None, filedrop: str | None = None,
             on_bytes: Callable[[int], None] | None = None, replay: str = "") -> LoadResult:
        """Load one object version exactly once; every outcome is written to ``ingest_history``."""
        conn = self._connection()
        try:
            return _load(self, conn, route, obj, engine, filedrop, on_bytes, replay)
        except BaseException:  # connection lost, or left in an unknown state: the next load starts afresh
            self.close()
            raise


def load_object(url: str, settings: Settings, route: FileRoute, obj: SourceObject, *, engine: str | None = None,
                filedrop: str | None = None, on_bytes: Callable[[int], None] | None = None,
                replay: str = "") -> LoadResult:
    """Load one object version exactly once on a connection of its own (see :class:`LoadSession`).

    ``filedrop`` names the FileDrop the load is for (cluster runtime); ``replay`` is its replay token.
    """
    with LoadSession(url, settings) as session:
        return session.load(route, obj, engine=engine, filedrop=filedrop, on_bytes=on_bytes, replay=replay)


def _load(session: LoadSession, conn: Client, route: FileRoute, obj: SourceObject, engine_override: str | None,
          filedrop: str | None, on_bytes: Callable[[int], None] | None, replay: str = "") -> LoadResult:
    settings = session.settings
    meta, spec = settings.meta_schema, route.spec
    session.ensure_meta(conn)
    engine = choose_engine(spec.engine, engine_override, obj.size, settings.spark_threshold_bytes)
    common: dict[str, Any] = dict(obj=obj, route=route.name, table=spec.table, mode=spec.mode, engine=engine,
                                  replay=replay)
    try:
        session.ensure_staging(conn, route)
    except WarehouseError as exc:  # the table does not fit the route: permanent until someone migrates it
        history.insert(conn, meta, load_id=uuid.uuid4().hex, status="failed", filedrop=filedrop,
                       first_error=str(exc), finished=True, **common)
        return LoadResult(obj, route.name, "failed", engine=engine, first_error=str(exc), message=str(exc))
    note = ""
    if engine_factory(engine) is None:
        if (engine_override or spec.engine) == "auto":
            note = f"{engine} engine not installed; loaded with the direct engine"
            engine = "direct"
        else:
            return LoadResult(obj, route.name, "failed", engine=engine, first_error=(
                f"the {engine} engine is not available in this installation (choose --engine direct)"))
    common["engine"] = engine
    # Claim the object before deciding: a concurrent loader of the same (bucket, key) — another version,
    # or this one again — is waited for, so the decision sees what it applied (a rollback racing the
    # version before it) and a duplicate is never parsed only to lose at the apply.
    claim_error = _claim(conn, meta, obj, settings.claim_wait_seconds)
    if claim_error is not None:
        history.insert(conn, meta, load_id=uuid.uuid4().hex, status="failed", filedrop=filedrop,
                       first_error=claim_error, finished=True, retryable=True, **common)
        return LoadResult(obj, route.name, "failed", engine=engine, first_error=claim_error, message=claim_error,
                          retryable=True)
    try:
        decision = decide(obj, history.loaded_versions(conn, meta, obj.bucket, obj.key), replay)
        if decision.verdict != "load":
            history.insert(conn, meta, load_id=uuid.uuid4().hex, status=decision.verdict, filedrop=filedrop,
                           message=decision.reason, finished=True, **common)
            return LoadResult(obj, route.name, decision.verdict, engine=engine, message=decision.reason)
        return _load_claimed(conn, settings, route, obj, engine, common, filedrop, on_bytes, note, replay)
    finally:
        if conn.alive:
            _release_claim(conn, obj)


def _claim(conn: Client, meta: str, obj: SourceObject, wait_seconds: float) -> str | None:
    """Take the object's claim, waiting at most ``wait_seconds`` for a loader that holds it; None when
    taken, else why not (the attempt is recorded as failed, retryable, and the run goes on). An object
    nobody else loads costs one statement; only a held claim pays for the bounded wait."""
    name = claim_lock(obj.bucket, obj.key)
    if conn.try_lock(name):
        return None
    if conn.lock(name, wait_seconds):
        # The holder finished, or died mid-load (its session ended by the server, which releases the claim
        # only now): clean up after a dead one (history row failed, its tables dropped) rather than leave it
        # `running` until the next run.
        history.cleanup_dead_loads(conn, meta)
        return None
    return (f"another loader has been loading {obj.display} for over {wait_seconds:g} s "
            "(FILEDROP_CLAIM_WAIT_SECONDS); this attempt loaded nothing and will be retried")


def _release_claim(conn: Client, obj: SourceObject) -> None:
    conn.end_transaction()
    conn.unlock(claim_lock(obj.bucket, obj.key))


def _load_claimed(conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, engine: str,
                  common: dict[str, Any], filedrop: str | None, on_bytes: Callable[[int], None] | None,
                  note: str, replay: str) -> LoadResult:
    """Parse and apply one object version this session has claimed; every outcome goes to history."""
    meta, spec = settings.meta_schema, route.spec
    load_id = uuid.uuid4().hex
    conn.lock(load_lock(load_id))
    history.insert(conn, meta, load_id=load_id, status="running", filedrop=filedrop,
                   attempt=history.next_attempt(conn, meta, obj), **common)
    result = LoadResult(obj, route.name, "failed", load_id=load_id, engine=engine)
    try:
        parser = _engine(engine)(conn, settings, route, obj, load_id, on_bytes)
        if engine == "direct" and _attach_wanted(conn, settings, route, obj):
            _load_attached(conn, settings, route, obj, result, parser, note, replay)
        else:
            parsed = parser.parse()
            _take(result, parsed, spec)
            _finalize(conn, settings, route, obj, result, note, replay, row_number=parsed.row_number)
        _unlock(conn, load_id)  # the session may load more files: no lock outlives its load
        return result
    except LoadFailed as exc:
        result.status, result.retryable = "failed", exc.retryable
        result.first_error = str(exc)
        result.first_error_line = exc.line if exc.line is not None else result.first_error_line
        result.message = str(exc)
    except ObjectSuperseded as exc:  # a newer version replaced this one before it was read: not a failure
        result.status, result.message = "skipped_superseded", str(exc)
        result.rows_parsed = result.rows_loaded = result.rows_rejected = 0
        result.first_error = result.first_error_line = None
        _abandon(conn, settings, result, status="skipped_superseded")
        return result
    except SourceError as exc:
        result.status, result.first_error = "failed", str(exc)
        result.retryable = not isinstance(exc, ObjectChanged)  # ContentChanged (a local file) is retryable
        result.message = str(exc)
    except WarehouseError:
        raise
    except ServerError as exc:
        kind = conn.classify(exc)
        if kind == "connection":
            raise  # connection lost: the running row is cleaned up as a dead load by the next run
        # the server refused this file's data (a limit, out of memory, a timeout): this file fails
        log.info("load of %s failed: %s", obj.display, exc)
        result.status, result.first_error = "failed", f"PostgreSQL: {str(exc).strip()}"
        result.message = result.first_error
        result.retryable = kind == "retryable"
    except Exception as exc:  # noqa: BLE001 - recorded in history, then reported
        if not conn.alive:
            raise
        log.exception("load of %s failed", obj.display)
        result.status, result.first_error, result.message = "failed", f"{type(exc).__name__}: {exc}", str(exc)
        result.retryable = isinstance(exc, OSError)
    result.first_error, result.message = history.clean(result.first_error), history.clean(result.message) or ""
    _abandon(conn, settings, result)
    return result


def _take(result: LoadResult, parsed: Parsed, spec: RouteSpec) -> None:
    """Copy what the engine parsed into the result; raise LoadFailed when the route refuses it (a note
    that stops the load, a bad row under ``onError: abort``, too many bad rows)."""
    result.rows_parsed, result.rows_rejected = parsed.rows_parsed, parsed.rows_rejected
    result.rows_loaded = parsed.rows_good
    result.first_error, result.first_error_line = parsed.first_error, parsed.first_error_line
    if parsed.notes:
        raise LoadFailed(parsed.notes[0], line=parsed.first_error_line)
    if parsed.rows_rejected and spec.on_error == "abort":
        raise LoadFailed(f"line {parsed.first_error_line}: {parsed.first_error} (onError: abort)",
                         line=parsed.first_error_line)
    if too_many_bad_rows(parsed.rows_rejected, parsed.rows_parsed, spec.max_bad_rows_percent):
        pct = 100.0 * parsed.rows_rejected / max(parsed.rows_parsed, 1)
        raise LoadFailed(
            f"{parsed.rows_rejected} of {parsed.rows_parsed} rows are bad ({pct:.1f}% > maxBadRowsPercent "
            f"{spec.max_bad_rows_percent:g}); first: line {parsed.first_error_line}: {parsed.first_error}",
            line=parsed.first_error_line)


# --- loads that write each row once -------------------------------------------------------------------------

def _attach_wanted(conn: Client, settings: Settings, route: FileRoute, obj: SourceObject) -> bool:
    """Whether this load writes its rows once, into a table that becomes part of the staging table:
    a route that allows it, a file large enough to be worth a table, and a staging table that does not
    have too many attached already (each is one more table for every query of it to open)."""
    if not sql.attachable(route) or obj.size is None or obj.size < settings.attach_min_bytes:
        return False
    if settings.staging_schema == settings.meta_schema:  # the load table would never leave the bookkeeping
        return False
    rules = conn.one(sql.parent_rules(settings.staging_schema, route.spec.table))
    if rules and rules[0]:
        log.info("%s: staging table %s has %s, which would not cover an attached table: copying the rows",
                 obj.display, route.spec.table, rules[0])
        return False
    attached = conn.all(sql.attached_tables(settings.staging_schema, settings.meta_schema, route.spec.table))
    if len(attached) >= settings.attach_max_tables:
        log.info("%s: staging table %s has %d attached load tables (FILEDROP_ATTACH_MAX_TABLES): copying the rows",
                 obj.display, route.spec.table, len(attached))
        return False
    return True


def _load_attached(conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, result: LoadResult,
                   parser: Engine, note: str, replay: str) -> None:
    """Parse, check and attach in one transaction: the rows are written once, by the COPY, and become
    visible with the ``loaded`` history row, to every reader at once (the rows carry that transaction's
    id). A load the route refuses commits only its quarantined rows, as a copied load does."""
    refused: LoadFailed | None = None
    with conn.transaction():
        try:
            with conn.transaction():  # a parse that fails half-way leaves the load's transaction usable
                parsed = parser.parse(attach=True)
            _take(result, parsed, route.spec)
        except LoadFailed as exc:
            refused = exc
            for stmt in sql.drop_load_tables(settings.meta_schema, result.load_id or ""):
                conn.execute(stmt)
        else:
            _finalize(conn, settings, route, obj, result, note, replay, attach=True)
    if refused is not None:
        raise refused


def _attach(conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, load_id: str,
            params: dict[str, str], rows: int) -> int:
    """The mode's replacing (drop the load tables it replaces, delete the rows it replaces from the rest),
    then the load's table becomes part of the staging table. Returns the rows applied."""
    schema, meta, mode = settings.staging_schema, settings.meta_schema, route.spec.mode
    table = route.spec.table
    if mode == "replace_table":
        conn.execute(f"TRUNCATE {sql.qualified(schema, table)}")
    elif mode == "replace_source":
        conn.execute(sql.delete_object_rows(schema, route), params)  # the parent's, and any table not dropped
    try:
        with conn.transaction():
            for stmt in sql.attach_statements(schema, meta, load_id, route):
                conn.execute(stmt)
    except StatementError as exc:  # e.g. a CHECK constraint someone added to the staging table
        log.warning("%s: cannot attach its table to %s (%s); copying its rows instead", obj.display, table,
                    str(exc).strip())
        return _apply(conn, settings, route, load_id, params)
    return rows


def _drop_replaced(conn: Client, settings: Settings, route: FileRoute, params: dict[str, str], attach: bool) -> None:
    """Drop the attached load tables a ``replace_table`` or ``replace_source`` load replaces, whether this
    load attaches or copies: a drop costs nothing per row, and no emptied table is left behind. The
    mode's TRUNCATE or DELETE then removes the rest (the parent's rows, a table too busy to drop)."""
    schema, meta, mode, table = settings.staging_schema, settings.meta_schema, route.spec.mode, route.spec.table
    if mode not in ("replace_table", "replace_source") or not (attach or conn.all(
            sql.attached_tables(schema, meta, table))):
        return
    # The staging table's lock first, then its children's, in the order readers take them: dropping a
    # child first and locking the parent after deadlocks with a reader that came in between. replace_table
    # takes what its TRUNCATE takes anyway; replace_source a lock readers and writers pass but that another
    # load's drop waits for (two loads each dropping a child the other's DELETE must lock would deadlock).
    level = "ACCESS EXCLUSIVE" if mode == "replace_table" else "SHARE UPDATE EXCLUSIVE"
    conn.execute(f"LOCK TABLE {sql.qualified(schema, table)} IN {level} MODE")
    if mode == "replace_table":
        for (name,) in conn.all(sql.attached_tables(schema, meta, table)):
            conn.execute(f"DROP TABLE IF EXISTS {sql.qualified(schema, name)}")
    else:
        for (name,) in conn.all(sql.attached_tables(schema, meta, table, of_object=True), params):
            _drop_unless_busy(conn, schema, name)


#: How long a ``replace_source`` waits to drop the table it replaces while queries read it; then it
#: deletes the rows instead (readers are not held up behind a drop).
DROP_WAIT = "2s"


def _drop_unless_busy(conn: Client, schema: str, name: str) -> None:
    previous = conn.one("SHOW lock_timeout")
    try:
        with conn.transaction():
            conn.execute(f"SET LOCAL lock_timeout = '{DROP_WAIT}'")
            conn.execute(f"DROP TABLE IF EXISTS {sql.qualified(schema, name)}")
    except LockTimeout:
        log.info("%s.%s is being read: deleting its rows instead of dropping it", schema, name)
        return
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (previous[0] if previous else "0",))


def _finalize(conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, result: LoadResult,
              note: str, replay: str = "", *, attach: bool = False, row_number: str | None = None) -> None:
    """The one short transaction: re-check under the key's lock, apply by mode, record ``loaded``.
    ``row_number``: :attr:`Parsed.row_number`."""
    meta = settings.meta_schema
    load_id = result.load_id
    assert load_id is not None
    with conn.transaction():
        conn.lock_for_transaction(object_lock(obj.bucket, obj.key))
        versions = history.loaded_versions(conn, meta, obj.bucket, obj.key)
        loaded = [v for v in versions if v.loaded]
        decision = decide(obj, versions, replay)
        if decision.verdict != "load":  # another loader won the race while we parsed
            for stmt in sql.drop_load_tables(meta, load_id):
                conn.execute(stmt)
            conn.execute(f"DELETE FROM {sql.ident(meta)}.rejected_rows WHERE load_id = %s", (load_id,))
            history.finish(conn, meta, load_id, status=decision.verdict, message=decision.reason)
            result.status, result.message = decision.verdict, decision.reason
            result.rows_loaded = 0
            return
        params = {"bucket": obj.bucket, "key": obj.key, "etag": obj.etag, "load_id": load_id}
        conn.execute("SET LOCAL work_mem = '256MB'")
        _drop_replaced(conn, settings, route, params, attach)
        if attach:
            changed = _attach(conn, settings, route, obj, load_id, params, result.rows_loaded)
        else:
            changed = _apply(conn, settings, route, load_id, params, row_number)
        for stmt in sql.drop_load_tables(meta, load_id):
            conn.execute(stmt)
        result.rows_changed = changed
        msg = [f"{result.rows_loaded} rows applied by {route.spec.mode}"]
        if route.spec.mode == "upsert" and changed != result.rows_loaded:
            msg.append(f"{changed} inserted or changed")
        if result.rows_rejected:
            msg.append(f"{result.rows_rejected} quarantined")
        if note:
            msg.append(note)
        result.message = "; ".join(msg)
        history.finish(conn, meta, load_id, status="loaded", rows_parsed=result.rows_parsed,
                       rows_loaded=result.rows_loaded, rows_rejected=result.rows_rejected,
                       first_error=result.first_error, first_error_line=result.first_error_line,
                       message=result.message, previous_load_id=loaded[-1].load_id if loaded else None)
        result.status = "loaded"


def _apply(conn: Client, settings: Settings, route: FileRoute, load_id: str, params: dict[str, str],
           row_number: str | None = None) -> int:
    """Run the mode's statements; returns the rowcount of the last one.

    An upsert first assumes the file's keys are unique (no sort); if PostgreSQL finds a key twice
    it rolls back to the savepoint and applies "last row in the file wins" with a sort.
    """
    schema, meta = settings.staging_schema, settings.meta_schema
    if route.spec.mode == "upsert":
        try:
            with conn.transaction():  # a savepoint inside the final transaction
                stmts = sql.apply_statements(schema, meta, load_id, route, dedup=False, row_number=row_number)
                return conn.execute(stmts[-1], params).rowcount
        except DuplicateKeys:
            log.info("%s: duplicate keys in the file; the last row per key wins", route.name)
    changed = 0
    for stmt in sql.apply_statements(schema, meta, load_id, route, row_number=row_number):
        changed = conn.execute(stmt, params).rowcount
    return changed


def _abandon(conn: Client, settings: Settings, result: LoadResult, status: str = "failed") -> None:
    """Record an attempt that applied nothing (``failed``, or skipped after it started); the staging
    table is untouched, the load tables are dropped."""
    meta = settings.meta_schema
    assert result.load_id is not None
    conn.end_transaction()
    for stmt in sql.drop_load_tables(meta, result.load_id):
        conn.execute(stmt)
    history.finish(conn, meta, result.load_id, status=status, rows_parsed=result.rows_parsed or None,
                   rows_loaded=0, rows_rejected=result.rows_rejected or None, first_error=result.first_error,
                   first_error_line=result.first_error_line, message=result.message, retryable=result.retryable)
    _unlock(conn, result.load_id)


def _unlock(conn: Client, load_id: str) -> None:
    conn.unlock(load_lock(load_id))


def _engine(name: str) -> EngineFactory:
    factory = engine_factory(name)
    if factory is None:  # _load checked it is installed
        raise LoadFailed(f"the {name} engine is not available in this installation")
    return factory
