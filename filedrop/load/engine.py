"""What a load engine is, and what every engine shares: the header check, the fast path's check,
the declared-format check, and the registry of engines by name.

An engine only fills the load's private per-load table and says what it left there (:class:`Parsed`);
the protocol around it (:mod:`filedrop.load.session`) decides, applies and records.
"""

from __future__ import annotations

import csv
import importlib
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from filedrop import csvscan
from filedrop.config import Settings
from filedrop.objects import SourceObject
from filedrop.routes import DATE_TYPES, FileRoute
from filedrop.warehouse import Client, sql

log = logging.getLogger(__name__)

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
class Parsed:
    """What an engine leaves in the per-load table."""

    rows_parsed: int
    rows_good: int
    rows_rejected: int
    first_error: str | None = None
    first_error_line: int | None = None
    notes: list[str] = field(default_factory=list)
    #: SQL giving a load-table row's record number in the file from ``l."_row_number"``, when the
    #: engine stored other numbers (the Spark engine's one-pass read); None: ``_row_number`` is it.
    row_number: str | None = None


# --- what every engine shares ----------------------------------------------------------------------------------------

def read_header(stream: io.BufferedReader[Any], route: FileRoute, max_bytes: int = MAX_FIELD) -> list[str]:
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


def first_format_violation(conn: Client, meta: str, load_id: str, route: FileRoute) -> int | None:
    """The first row of the load table whose date does not follow its column's declared format, or None
    (also when the route declares none); both engines ask it after their fast path."""
    query = sql.format_violation(meta, load_id, route)
    if query is None:
        return None
    row = conn.one(query)
    return int(row[0]) if row and row[0] is not None else None


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

    def parse(self, *, attach: bool = False) -> Parsed: ...


#: ``Engine(conn, settings, route, obj, load_id, on_bytes)``, as the direct engine takes them.
EngineFactory = Callable[[Client, Settings, FileRoute, SourceObject, str, "Callable[[int], None] | None"], Engine]

ENGINES: dict[str, EngineFactory] = {}

#: Where each engine lives, imported on first use (importing a module registers its engine in ENGINES).
#: Named, not imported: this module depends on no engine, and the Spark one needs optional pyspark.
ENGINE_MODULES: dict[str, str] = {"direct": "filedrop.load.direct", "spark": "filedrop.spark.engine"}


def engine_factory(name: str) -> EngineFactory | None:
    """The engine called ``name``, or None when it is not installed."""
    if name not in ENGINES and name in ENGINE_MODULES:
        try:
            importlib.import_module(ENGINE_MODULES[name])
        except ImportError as exc:
            log.info("the %s engine is not available: %s", name, exc)
    return ENGINES.get(name)
