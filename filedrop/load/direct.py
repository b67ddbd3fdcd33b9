"""The direct engine: streams the file into PostgreSQL ``COPY`` (PostgreSQL parses and types it), and
only when COPY reports bad data re-reads the file tolerantly to quarantine exactly the bad records."""

from __future__ import annotations

import gzip
import io
import logging
import zlib
from collections.abc import Callable
from typing import Any

from filedrop import csvrecords, csvscan
from filedrop.config import Settings
from filedrop.load.engine import (
    ENGINES,
    RAW_LINE_CAP,
    LoadFailed,
    Parsed,
    fast_path_check,
    first_format_violation,
    read_header,
)
from filedrop.load.sources import CHUNK, open_stream
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute
from filedrop.warehouse import Client, sql
from filedrop.warehouse.client import BadValue

log = logging.getLogger(__name__)


class DirectEngine:
    """Streams bytes into COPY; on bad data, a tolerant second pass quarantines the bad records."""

    name = "direct"

    def __init__(self, conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, load_id: str,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.conn, self.settings, self.route, self.obj, self.load_id = conn, settings, route, obj, load_id
        self.on_bytes = on_bytes
        self.meta = settings.meta_schema

    def _open(self, on_bytes: Callable[[int], None] | None) -> io.BufferedReader[Any]:
        return open_stream(self.obj, self.route.spec.format.compression, on_bytes=on_bytes)

    def parse(self, *, attach: bool = False) -> Parsed:
        """Fill the per-load table. With ``attach`` (inside the load's one transaction) the table is shaped
        to become part of the staging table (:func:`~filedrop.warehouse.sql.attach_table_ddl`)."""
        if attach:
            obj = self.obj
            row = self.conn.one("SELECT format(%s, %s::text, %s::text, %s::text, %s::text)",
                                (sql.attach_table_ddl(self.meta, self.load_id, self.route), obj.bucket, obj.key,
                                 obj.etag, self.load_id))
            assert row is not None
            self.conn.execute(row[0])
        else:
            self.conn.execute(sql.load_table_ddl(self.meta, self.load_id, self.route))
        try:
            try:
                return self._fast()
            except BadValue as exc:
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
            # a transaction of its own, or a savepoint in the load's: bad data rolls back only the COPY
            with self.conn.transaction(), self.conn.copy(stmt) as copy:
                held, line_start = b"", True  # blank lines held back, and whether COPY got a whole line
                while chunk := stream.read(CHUNK):
                    check.feed(chunk)
                    if trim:
                        chunk, held, line_start = _hold_blank_lines(held + chunk, line_start)
                    copy.write(chunk)
                check.finish()  # blank lines still held at the end are dropped, as the tolerant pass skips them
            rows = copy.rows
        self._check_formats()
        return Parsed(rows, rows, 0)

    def _check_formats(self) -> None:
        """Dates with a declared format were loaded as text: if one does not follow its format, empty the
        load table and let the tolerant pass quarantine exactly those rows."""
        row = first_format_violation(self.conn, self.meta, self.load_id, self.route)
        if row is not None:
            self.conn.execute(f"TRUNCATE {sql.qualified(self.meta, sql.load_table_name(self.load_id))}")
            raise csvscan.NeedsTolerant(f"record {row}: a date not written in its column's format")

    def _tolerant(self) -> Parsed:
        """Re-read the file record by record (:class:`~filedrop.csvrecords.RecordReader`, RFC 4180, the
        record's bytes kept as written); PostgreSQL types each value (``input_error``) so accepted values
        are exactly what COPY accepts."""
        fmt = self.route.spec.format
        meta, load_id = self.meta, self.load_id
        self.conn.execute(sql.raw_table_ddl(meta, load_id, self.route))
        rejects: list[tuple[str, int, str, str, str | None]] = []
        rownum = 0
        stop_error: str | None = None
        with self._open(None) as stream:
            file_columns = read_header(stream, self.route, self.settings.max_record_bytes)
            reader = csvrecords.RecordReader(stream, delimiter=fmt.delimiter, quote=fmt.quote, null=fmt.null_value,
                                          encoding=fmt.encoding, columns=len(file_columns),
                                          max_record=self.settings.max_record_bytes, chunk=CHUNK)
            with self.conn.copy(sql.copy_raw(meta, load_id, file_columns)) as copy:
                try:
                    for record in reader:
                        rownum += 1
                        raw = csvrecords.printable(record.raw, fmt.encoding, RAW_LINE_CAP)
                        if record.values is None:
                            rejects.append((load_id, rownum, raw, record.error or "malformed record", None))
                            continue
                        copy.write_row([rownum, raw, *record.values])
                except csvrecords.RecordTooLong as exc:
                    stop_error = f"unreadable CSV after data record {rownum}: {exc}"
        m = sql.ident(meta)
        with self.conn.transaction():
            if rejects:
                self.conn.executemany(
                    f"INSERT INTO {m}.rejected_rows (load_id, line_number, raw_line, error, column_name) "
                    "VALUES (%s, %s, %s, %s, %s)", rejects)
            if stop_error:
                self.conn.execute(
                    f"INSERT INTO {m}.rejected_rows (load_id, line_number, raw_line, error) VALUES (%s, %s, NULL, %s)",
                    (load_id, rownum + 1, stop_error))
            params = {"load_id": load_id}
            self.conn.execute(sql.reject_typed_rows(meta, load_id, self.route), params)
            good = self.conn.execute(sql.insert_typed_rows(meta, load_id, self.route), params).rowcount
            self.conn.execute(f"DROP TABLE {sql.qualified(meta, sql.raw_table_name(load_id))}")
            first = self.conn.one(
                f"SELECT line_number, error, count(*) OVER () FROM {m}.rejected_rows WHERE load_id = %s "
                "ORDER BY line_number LIMIT 1", (load_id,))
        rejected = int(first[2]) if first else 0
        parsed = rownum + (1 if stop_error else 0)
        out = Parsed(parsed, good, rejected, first[1] if first else None, first[0] if first else None)
        if stop_error:
            out.notes.append(stop_error)
        return out


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



ENGINES["direct"] = DirectEngine
