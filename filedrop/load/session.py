"""The load protocol (DESIGN §3) and the direct engine.

:func:`load_object` is the one implementation of "exactly once per object version": check history,
parse into a private per-load table, then one short transaction that applies it by ``mode`` and
records ``loaded``. Engines only fill the per-load table (:class:`Parsed`); the direct engine here
streams the file into PostgreSQL ``COPY`` (PostgreSQL does the parsing and typing), and only when
COPY reports bad data re-reads the file tolerantly to quarantine exactly the bad records.
"""

from __future__ import annotations

import csv
import gzip
import importlib
import io
import logging
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg import errors as pgerrors

from filedrop import csvscan
from filedrop.config import Settings
from filedrop.load.sources import CHUNK, ObjectChanged, ObjectSuperseded, SourceError, open_stream
from filedrop.objects import SourceObject
from filedrop.protocol import choose_engine, decide, too_many_bad_rows
from filedrop.routes import DATE_TYPES, FileRoute
from filedrop.warehouse import history, sql
from filedrop.warehouse.server import WarehouseError, connect, ensure_meta, ensure_staging

log = logging.getLogger(__name__)
Conn = psycopg.Connection[Any]

#: Largest header line or CSV field we accept (a runaway quote otherwise swallows a whole file).
MAX_FIELD = 16 << 20
csv.field_size_limit(MAX_FIELD)

#: ``rejected_rows.raw_line`` keeps at most this many characters of a record.
RAW_LINE_CAP = 8192


class LoadFailed(Exception):
    """The file cannot be loaded as it is. ``retryable`` is False for problems in the file itself."""

    def __init__(self, message: str, *, line: int | None = None, retryable: bool = False) -> None:
        super().__init__(message)
        self.line = line
        self.retryable = retryable


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


@dataclass
class Parsed:
    """What an engine leaves in the per-load table."""

    rows_parsed: int
    rows_good: int
    rows_rejected: int
    first_error: str | None = None
    first_error_line: int | None = None
    notes: list[str] = field(default_factory=list)


# --- header ----------------------------------------------------------------------------------------

def read_header(stream: io.BufferedReader, route: FileRoute, max_bytes: int = MAX_FIELD) -> list[str]:
    """Consume the header line (if the route has one) and return the file's column order.

    Strict: the header must name exactly the route's columns (any order, case-insensitive); the
    error names what is missing and what is extra. At most ``max_bytes`` are read for it.
    """
    fmt = route.spec.format
    first = stream.peek(3)[:3]
    if first == b"":
        raise LoadFailed("empty file: no header line and no data" if fmt.header else "empty file: no data")
    if first.startswith(b"\xef\xbb\xbf"):
        stream.read(3)  # UTF-8 byte order mark
    if not fmt.header:
        return list(route.column_names)
    line = stream.readline(max_bytes + 1)
    if len(line) > max_bytes and not line.endswith(b"\n"):
        raise LoadFailed(f"header line longer than {max_bytes} bytes (FILEDROP_MAX_RECORD_BYTES): "
                         "not a CSV file with a header?", line=0)
    if b"\r" in line.rstrip(b"\r\n"):
        raise LoadFailed("lines end with a bare carriage return (classic Mac line ends): "
                         "convert the file to LF or CRLF line ends", line=0)
    try:
        text = line.decode(fmt.encoding)
    except UnicodeDecodeError as exc:
        raise LoadFailed(f"header line is not valid {fmt.encoding}: {exc.reason} at byte {exc.start}", line=0) from None
    if "\x00" in text:
        raise LoadFailed("header line contains NUL bytes (0x00): not a text file?", line=0)
    try:
        names = next(csv.reader([text.rstrip("\r\n")], delimiter=fmt.delimiter, quotechar=fmt.quote), [])
    except csv.Error as exc:
        raise LoadFailed(f"header line is not valid CSV: {exc}", line=0) from None
    got = [n.strip().lower() for n in names]
    want = list(route.column_names)
    missing = [c for c in want if c not in got]
    extra = [n for n in got if n not in want]
    dupes = sorted({n for n in got if got.count(n) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s): {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected column(s): {', '.join(extra) if any(extra) else '(empty name)'}")
    if dupes:
        problems.append(f"duplicated column(s): {', '.join(dupes)}")
    if problems:
        raise LoadFailed(
            f"header does not match FileRoute {route.name}: " + "; ".join(problems)
            + f" (expected {', '.join(want)})", line=0)
    return got


# --- the direct engine -------------------------------------------------------------------------------

class DirectEngine:
    """Streams bytes into COPY; on bad data, a tolerant second pass quarantines the bad records."""

    name = "direct"

    def __init__(self, conn: Conn, settings: Settings, route: FileRoute, obj: SourceObject, load_id: str,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.conn, self.settings, self.route, self.obj, self.load_id = conn, settings, route, obj, load_id
        self.on_bytes = on_bytes
        self.meta = settings.meta_schema

    def _open(self, on_bytes: Callable[[int], None] | None) -> io.BufferedReader:
        return open_stream(self.obj, self.route.spec.format.compression, on_bytes=on_bytes)

    def parse(self) -> Parsed:
        self.conn.execute(sql.load_table_ddl(self.meta, self.load_id, self.route))  # type: ignore[arg-type]
        try:
            try:
                return self._fast()
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                diag = exc.diag
                log.info("%s: COPY stopped at bad data (%s; %s), quarantining bad rows",
                         self.obj.display, diag.message_primary, diag.context)
            except csvscan.NeedsTolerant as exc:  # COPY was aborted: the load table is still empty
                log.info("%s: %s; reading it record by record", self.obj.display, exc)
            return self._tolerant()
        except EOFError as exc:  # gzip: "Compressed file ended before the end-of-stream marker was reached"
            raise LoadFailed(f"truncated gzip file: {exc}") from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise LoadFailed(f"cannot decompress: {exc}") from None

    def _fast(self) -> Parsed:
        with self._open(self.on_bytes) as stream:
            file_columns = read_header(stream, self.route, self.settings.max_record_bytes)
            check = fast_path_check(self.route, self.settings.max_record_bytes)
            stmt = sql.copy_csv(self.meta, self.load_id, self.route, file_columns)
            trim = len(self.route.spec.columns) > 1  # in a one-column file a blank line is a NULL value
            with self.conn.cursor() as cur:
                with cur.copy(stmt) as copy:  # type: ignore[arg-type]
                    held, line_start = b"", True  # blank lines held back, and whether COPY got a whole line
                    while chunk := stream.read(CHUNK):
                        check.feed(chunk)
                        if trim:
                            chunk, held, line_start = _hold_blank_lines(held + chunk, line_start)
                        copy.write(chunk)
                    check.finish()  # blank lines still held at the end are dropped, as the tolerant pass skips them
                rows = cur.rowcount
        self._check_formats()
        return Parsed(rows, rows, 0)

    def _check_formats(self) -> None:
        """Dates with a declared format were loaded as text: if one does not follow its format, empty the
        load table and let the tolerant pass quarantine exactly those rows."""
        row = first_format_violation(self.conn, self.meta, self.load_id, self.route)
        if row is not None:
            self.conn.execute(f"TRUNCATE {sql.qualified(self.meta, sql.load_table_name(self.load_id))}")  # type: ignore[arg-type]
            raise csvscan.NeedsTolerant(f"record {row}: a date not written in its column's format")

    def _tolerant(self) -> Parsed:
        """Re-read the file record by record (:class:`~filedrop.csvscan.RecordReader`, RFC 4180, the
        record's bytes kept as written); PostgreSQL types each value (``input_error``) so accepted values
        are exactly what COPY accepts."""
        fmt = self.route.spec.format
        meta, load_id = self.meta, self.load_id
        self.conn.execute(sql.raw_table_ddl(meta, load_id, self.route))  # type: ignore[arg-type]
        rejects: list[tuple[str, int, str, str, str | None]] = []
        rownum = 0
        stop_error: str | None = None
        with self._open(None) as stream:
            file_columns = read_header(stream, self.route, self.settings.max_record_bytes)
            reader = csvscan.RecordReader(stream, delimiter=fmt.delimiter, quote=fmt.quote, null=fmt.null_value,
                                          encoding=fmt.encoding, columns=len(file_columns),
                                          max_record=self.settings.max_record_bytes, chunk=CHUNK)
            with self.conn.cursor() as cur, cur.copy(sql.copy_raw(meta, load_id, file_columns)) as copy:  # type: ignore[arg-type]
                try:
                    for record in reader:
                        rownum += 1
                        raw = csvscan.printable(record.raw, fmt.encoding, RAW_LINE_CAP)
                        if record.values is None:
                            rejects.append((load_id, rownum, raw, record.error or "malformed record", None))
                            continue
                        copy.write_row([rownum, raw, *record.values])
                except csvscan.RecordTooLong as exc:
                    stop_error = f"unreadable CSV after data record {rownum}: {exc}"
        m = sql.ident(meta)
        with self.conn.transaction():
            if rejects:
                with self.conn.cursor() as cur:
                    cur.executemany(
                        f"INSERT INTO {m}.rejected_rows (load_id, line_number, raw_line, error, column_name) "
                        "VALUES (%s, %s, %s, %s, %s)", rejects)  # type: ignore[arg-type]
            if stop_error:
                self.conn.execute(
                    f"INSERT INTO {m}.rejected_rows (load_id, line_number, raw_line, error) VALUES (%s, %s, NULL, %s)",
                    (load_id, rownum + 1, stop_error))  # type: ignore[arg-type]
            params = {"load_id": load_id}
            self.conn.execute(sql.reject_typed_rows(meta, load_id, self.route), params)  # type: ignore[arg-type]
            good = self.conn.execute(sql.insert_typed_rows(meta, load_id, self.route), params).rowcount  # type: ignore[arg-type]
            self.conn.execute(f"DROP TABLE {sql.qualified(meta, sql.raw_table_name(load_id))}")  # type: ignore[arg-type]
            first = self.conn.execute(
                f"SELECT line_number, error, count(*) OVER () FROM {m}.rejected_rows WHERE load_id = %s "
                "ORDER BY line_number LIMIT 1", (load_id,)).fetchone()  # type: ignore[arg-type]
        rejected = int(first[2]) if first else 0
        parsed = rownum + (1 if stop_error else 0)
        out = Parsed(parsed, good, rejected, first[1] if first else None, first[0] if first else None)
        if stop_error:
            out.notes.append(stop_error)
        return out


def first_format_violation(conn: Conn, meta: str, load_id: str, route: FileRoute) -> int | None:
    """The first row of the load table whose date does not follow its column's declared format, or None
    (also when the route declares none); both engines ask it after their fast path."""
    query = sql.format_violation(meta, load_id, route)
    if query is None:
        return None
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    return int(row[0]) if row and row[0] is not None else None


def _hold_blank_lines(data: bytes, line_start: bool) -> tuple[bytes, bytes, bool]:
    """Split ``data`` into what to send to COPY now and the blank lines at its end, held until more data
    shows they are not the end of the file (COPY fails on a blank line, so a file ending in one used to
    take the slow path). ``line_start``: what was sent so far ends a line. Returns (send, held,
    line_start after send)."""
    body = len(data.rstrip(b"\r\n"))
    if body == 0 and line_start:
        return b"", data, True
    end = data.find(b"\n", body)
    if end < 0:
        return data, b"", False
    return data[:end + 1], data[end + 1:], True


def fast_path_check(route: FileRoute, max_record: int) -> csvscan.FastPathCheck:
    """The check that keeps COPY (the fast path) to the RFC 4180 reading and under the record byte cap
    (:mod:`filedrop.csvscan`)."""
    fmt = route.spec.format
    pair = csvscan.single_bytes(fmt.delimiter, fmt.quote, fmt.encoding)
    if pair is None:  # a multi-byte delimiter or quote: only the tolerant reader handles it
        raise csvscan.NeedsTolerant("a delimiter or quote of more than one byte")
    dates = any(c.type in DATE_TYPES and not c.format for c in route.spec.columns)
    return csvscan.FastPathCheck(*pair, dates=dates, max_record=max_record,
                                 ascii_only=sql.pg_encoding(fmt.encoding) == "SQL_ASCII")


class Engine(Protocol):
    """What the protocol needs from an engine: fill the per-load table, say what it left there."""

    name: str

    def parse(self) -> Parsed: ...


#: ``Engine(conn, settings, route, obj, load_id, on_bytes)``, as :class:`DirectEngine` takes them.
EngineFactory = Callable[[Conn, Settings, FileRoute, SourceObject, str, "Callable[[int], None] | None"], Engine]

ENGINES: dict[str, EngineFactory] = {"direct": DirectEngine}

#: Engines living in modules with optional dependencies (pyspark), imported on first use; importing
#: registers them in ENGINES. Named, not imported, so this layer depends on none of them.
ENGINE_MODULES: dict[str, str] = {"spark": "filedrop.spark.engine"}


def engine_factory(name: str) -> EngineFactory | None:
    """The engine called ``name``, or None when it is not installed."""
    if name not in ENGINES and name in ENGINE_MODULES:
        try:
            importlib.import_module(ENGINE_MODULES[name])
        except ImportError as exc:
            log.info("the %s engine is not available: %s", name, exc)
    return ENGINES.get(name)


# --- the protocol ------------------------------------------------------------------------------------

class LoadSession:
    """Loads that share one warehouse connection (the local runtime's passes over many files).

    The bookkeeping tables and each route's staging table are created or checked once per session
    instead of once per file; a lost connection is dropped and the next load opens a new one.
    """

    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings
        self._conn: Conn | None = None
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

    def _connection(self) -> Conn:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self.close()
            self._conn = connect(self.url)
            self._meta_ready, self._staging_ready = False, set()
        return self._conn

    def ensure_meta(self, conn: Conn) -> None:
        if not self._meta_ready:
            ensure_meta(conn, self.settings)
            self._meta_ready = True

    def ensure_staging(self, conn: Conn, route: FileRoute) -> None:
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


def _load(session: LoadSession, conn: Conn, route: FileRoute, obj: SourceObject, engine_override: str | None,
          filedrop: str | None, on_bytes: Callable[[int], None] | None, replay: str = "") -> LoadResult:
    settings = session.settings
    meta, spec = settings.meta_schema, route.spec
    session.ensure_meta(conn)
    engine = choose_engine(spec.engine, engine_override, obj.size, settings.spark_threshold_bytes)
    common = dict(obj=obj, route=route.name, table=spec.table, mode=spec.mode, engine=engine, replay=replay)
    try:
        session.ensure_staging(conn, route)
    except WarehouseError as exc:  # the table does not fit the route: permanent until someone migrates it
        history.insert(conn, meta, load_id=uuid.uuid4().hex, status="failed", filedrop=filedrop,
                       first_error=str(exc), finished=True, **common)  # type: ignore[arg-type]
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
    claim_error = _claim(conn, obj, settings.claim_wait_seconds)
    if claim_error is not None:
        history.insert(conn, meta, load_id=uuid.uuid4().hex, status="failed", filedrop=filedrop,
                       first_error=claim_error, finished=True, retryable=True, **common)  # type: ignore[arg-type]
        return LoadResult(obj, route.name, "failed", engine=engine, first_error=claim_error, message=claim_error,
                          retryable=True)
    try:
        decision = decide(obj, history.loaded_versions(conn, meta, obj.bucket, obj.key), replay)
        if decision.verdict != "load":
            history.insert(conn, meta, load_id=uuid.uuid4().hex, status=decision.verdict, filedrop=filedrop,
                           message=decision.reason, finished=True, **common)  # type: ignore[arg-type]
            return LoadResult(obj, route.name, decision.verdict, engine=engine, message=decision.reason)
        return _load_claimed(conn, settings, route, obj, engine, common, filedrop, on_bytes, note, replay)
    finally:
        if not (conn.closed or conn.broken):
            _release_claim(conn, obj)


def _claim_key(obj: SourceObject) -> str:
    return f"filedrop.claim:{obj.bucket}/{obj.key}"


def _claim(conn: Conn, obj: SourceObject, wait_seconds: float) -> str | None:
    """Take the object's claim, waiting at most ``wait_seconds`` for a loader that holds it; None when
    taken, else why not (the attempt is recorded as failed, retryable, and the run goes on). An object
    nobody else loads costs one statement; only a held claim pays for the bounded wait."""
    got = conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (_claim_key(obj),)).fetchone()
    if got and got[0]:
        return None
    previous = conn.execute("SELECT current_setting('lock_timeout')").fetchone()
    try:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(wait_seconds * 1000))}ms",))
        conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (_claim_key(obj),))
        return None
    except (pgerrors.LockNotAvailable, pgerrors.QueryCanceled):
        return (f"another loader has been loading {obj.display} for over {wait_seconds:g} s "
                "(FILEDROP_CLAIM_WAIT_SECONDS); this attempt loaded nothing and will be retried")
    finally:
        if not (conn.closed or conn.broken):
            conn.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0] if previous else "0",))


def _release_claim(conn: Conn, obj: SourceObject) -> None:
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (_claim_key(obj),))


def _load_claimed(conn: Conn, settings: Settings, route: FileRoute, obj: SourceObject, engine: str,
                  common: dict[str, Any], filedrop: str | None, on_bytes: Callable[[int], None] | None,
                  note: str, replay: str) -> LoadResult:
    """Parse and apply one object version this session has claimed; every outcome goes to history."""
    meta, spec = settings.meta_schema, route.spec
    load_id = uuid.uuid4().hex
    conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (history.load_lock_key(load_id),))
    history.insert(conn, meta, load_id=load_id, status="running", filedrop=filedrop,
                   attempt=history.next_attempt(conn, meta, obj), **common)  # type: ignore[arg-type]
    result = LoadResult(obj, route.name, "failed", load_id=load_id, engine=engine)
    try:
        parsed = ENGINES[engine](conn, settings, route, obj, load_id, on_bytes).parse()
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
        _finalize(conn, settings, route, obj, result, note, replay)
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
    except psycopg.OperationalError as exc:
        if conn.closed or conn.broken:
            raise  # connection lost: the running row is cleaned up as a dead load by the next run
        # the server refused this file's data (a limit, out of memory, a timeout): this file fails
        log.info("load of %s failed: %s", obj.display, exc)
        result.status, result.first_error = "failed", f"PostgreSQL: {str(exc).strip()}"
        result.message = result.first_error
        result.retryable = not isinstance(exc, pgerrors.ProgramLimitExceeded)
    except Exception as exc:  # noqa: BLE001 - recorded in history, then reported
        if conn.closed or conn.broken:
            raise
        log.exception("load of %s failed", obj.display)
        result.status, result.first_error, result.message = "failed", f"{type(exc).__name__}: {exc}", str(exc)
        result.retryable = isinstance(exc, OSError)
    result.first_error, result.message = history.clean(result.first_error), history.clean(result.message) or ""
    _abandon(conn, settings, result)
    return result


def _finalize(conn: Conn, settings: Settings, route: FileRoute, obj: SourceObject, result: LoadResult,
              note: str, replay: str = "") -> None:
    """The one short transaction: re-check under the key's lock, apply by mode, record ``loaded``."""
    meta = settings.meta_schema
    load_id = result.load_id
    assert load_id is not None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                     (history.object_lock_key(obj.bucket, obj.key),))
        versions = history.loaded_versions(conn, meta, obj.bucket, obj.key)
        loaded = [v for v in versions if v.loaded]
        decision = decide(obj, versions, replay)
        if decision.verdict != "load":  # another loader won the race while we parsed
            for stmt in sql.drop_load_tables(meta, load_id):
                conn.execute(stmt)  # type: ignore[arg-type]
            conn.execute(f"DELETE FROM {sql.ident(meta)}.rejected_rows WHERE load_id = %s", (load_id,))  # type: ignore[arg-type]
            history.finish(conn, meta, load_id, status=decision.verdict, message=decision.reason)
            result.status, result.message = decision.verdict, decision.reason
            result.rows_loaded = 0
            return
        params = {"bucket": obj.bucket, "key": obj.key, "etag": obj.etag, "load_id": load_id}
        conn.execute("SET LOCAL work_mem = '256MB'")
        changed = _apply(conn, settings, route, load_id, params)
        for stmt in sql.drop_load_tables(meta, load_id):
            conn.execute(stmt)  # type: ignore[arg-type]
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


def _apply(conn: Conn, settings: Settings, route: FileRoute, load_id: str, params: dict[str, str]) -> int:
    """Run the mode's statements; returns the rowcount of the last one.

    An upsert first assumes the file's keys are unique (no sort); if PostgreSQL finds a key twice
    it rolls back to the savepoint and applies "last row in the file wins" with a sort.
    """
    schema, meta = settings.staging_schema, settings.meta_schema
    if route.spec.mode == "upsert":
        try:
            with conn.transaction():  # a savepoint inside the final transaction
                stmts = sql.apply_statements(schema, meta, load_id, route, dedup=False)
                return conn.execute(stmts[-1], params).rowcount  # type: ignore[arg-type]
        except pgerrors.CardinalityViolation:
            log.info("%s: duplicate keys in the file; the last row per key wins", route.name)
    changed = 0
    for stmt in sql.apply_statements(schema, meta, load_id, route):
        changed = conn.execute(stmt, params).rowcount  # type: ignore[arg-type]
    return changed


def _abandon(conn: Conn, settings: Settings, result: LoadResult, status: str = "failed") -> None:
    """Record an attempt that applied nothing (``failed``, or skipped after it started); the staging
    table is untouched, the load tables are dropped."""
    meta = settings.meta_schema
    assert result.load_id is not None
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.rollback()
    for stmt in sql.drop_load_tables(meta, result.load_id):
        conn.execute(stmt)  # type: ignore[arg-type]
    history.finish(conn, meta, result.load_id, status=status, rows_parsed=result.rows_parsed or None,
                   rows_loaded=0, rows_rejected=result.rows_rejected or None, first_error=result.first_error,
                   first_error_line=result.first_error_line, message=result.message, retryable=result.retryable)
    _unlock(conn, result.load_id)


def _unlock(conn: Conn, load_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (history.load_lock_key(load_id),))
