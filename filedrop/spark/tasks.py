"""What the Spark engine runs in the Python workers: per-block statistics, parallel ``COPY`` of each
block's records, and the one-task reference load. Inputs are Arrow batches of the file's physical lines
(``line``: the bytes, exactly as in the file; ``block``: the Hadoop split they belong to).

No pyspark here: functions take and yield ``pyarrow.RecordBatch`` iterators (``DataFrame.mapInArrow``)
and talk to PostgreSQL through :class:`~filedrop.warehouse.client.Client`. The driver sends a conninfo
without password (it travels in the plan); each worker finds the password in its own environment
(:func:`worker_conninfo`), which a Secret fills in the cluster.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from filedrop.config import Settings
from filedrop.csvscan import FastPathCheck, NeedsTolerant, QuotedLineEnd
from filedrop.load.direct import DirectEngine
from filedrop.load.engine import LoadFailed, Parsed
from filedrop.load.sources import CHUNK
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute
from filedrop.spark.plan import (
    MAX_CONTINUATION,
    ROW_SEQUENCE_DDL,
    BlockPlan,
    block_base,
    row_sequence_setup,
)
from filedrop.warehouse.client import BadValue, Client, conninfo_with

BOM = b"\xef\xbb\xbf"

STATS_SCHEMA = "start bigint, lines bigint, even_ends bigint, first_odd bigint, parity bigint, head binary"
WRITE_SCHEMA = "start bigint, rows bigint, error string"
REFERENCE_SCHEMA = ("outcome string, rows_parsed bigint, rows_good bigint, rows_rejected bigint, "
                    "first_error string, first_error_line bigint, note string")


def segments(batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[int, pa.Array]]:
    """(block start, lines) runs in input order; a batch may span two blocks."""
    for batch in batches:
        if batch.num_rows == 0:
            continue
        lines, blocks = batch.column(0), batch.column(1)
        lo, hi = pc.min_max(blocks).values()
        if lo == hi:
            yield int(lo.as_py()), lines
            continue
        starts = blocks.to_pylist()
        begin = 0
        for i in range(1, len(starts) + 1):
            if i == len(starts) or starts[i] != starts[begin]:
                yield int(starts[begin]), lines.slice(begin, i - begin)
                begin = i


def join_lines(lines: pa.Array) -> bytes:
    """The lines with a ``\\n`` after each: the file's bytes again (C++, no Python loop per line)."""
    if len(lines) == 0:
        return b""
    offsets = pa.array([0, len(lines)], pa.int32())
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, lines), b"\n")
    return bytes(joined[0].as_py()) + b"\n"


def _strip_first(lines: pa.Array, start: int, header: bool, seen: int) -> pa.Array:
    """Drop the header line (the file's first physical line), or a byte order mark before the data."""
    if start != 0 or seen != 0 or len(lines) == 0:
        return lines
    if header:
        return lines.slice(1)
    first = lines[0].as_py()
    if first.startswith(BOM):
        return pa.concat_arrays([pa.array([first[3:]], pa.binary()), lines.slice(1)])
    return lines


@dataclass
class _Stats:
    start: int
    lines: int = 0
    even_ends: int = 0
    first_odd: int = -1
    parity: int = 0
    head: list[bytes] | None = field(default_factory=list)
    head_size: int = 0
    raw_seen: int = 0  # lines received, the header included

    def add(self, lines: pa.Array, quote: str) -> None:
        n = len(lines)
        if n == 0:
            return
        quotes = pc.cast(pc.count_substring(lines, pattern=quote), pa.int64())
        parity = pc.bit_wise_and(pc.add(pc.cumulative_sum(quotes), self.parity), 1)
        odd = pc.sum(parity).as_py() or 0
        self.even_ends += n - odd
        if self.first_odd < 0:
            idx = pc.index(parity, 1).as_py()
            take = n if idx < 0 else idx + 1
            if idx >= 0:
                self.first_odd = self.lines + idx
            if self.head is not None:
                piece = join_lines(lines.slice(0, take))
                self.head_size += len(piece)
                if self.head_size > MAX_CONTINUATION:
                    self.head = None
                else:
                    self.head.append(piece)
        self.parity = int(parity[n - 1].as_py())
        self.lines += n


def block_stats(batches: Iterable[pa.RecordBatch], *, quote: str, header: bool) -> Iterator[pa.RecordBatch]:
    """One row of :class:`~filedrop.spark.plan.BlockStats` per block of this partition."""
    found: dict[int, _Stats] = {}
    for start, lines in segments(batches):
        st = found.setdefault(start, _Stats(start))
        seen, st.raw_seen = st.raw_seen, st.raw_seen + len(lines)
        st.add(_strip_first(lines, start, header, seen), quote)
    rows = list(found.values())
    yield pa.RecordBatch.from_pydict({
        "start": [s.start for s in rows], "lines": [s.lines for s in rows],
        "even_ends": [s.even_ends for s in rows], "first_odd": [s.first_odd for s in rows],
        "parity": [s.parity for s in rows],
        "head": [b"".join(s.head) if s.head is not None else None for s in rows],
    }, schema=pa.schema([("start", pa.int64()), ("lines", pa.int64()), ("even_ends", pa.int64()),
                         ("first_odd", pa.int64()), ("parity", pa.int64()), ("head", pa.binary())]))


def worker_conninfo(conninfo: str) -> str:
    """The driver's ``conninfo`` with the password this worker holds: none added when libpq is given one
    (``PGPASSWORD``, ``PGPASSFILE``); else the one of ``FILEDROP_WAREHOUSE_URL`` (the install guide's
    Secret holds the whole URL, password included) when it names the same server, database and user."""
    url = os.environ.get("FILEDROP_WAREHOUSE_URL")
    if os.environ.get("PGPASSWORD") or os.environ.get("PGPASSFILE") or not url:
        return conninfo
    return conninfo_with(conninfo, password_from=url)


#: A one-pass block's error when one of its lines has an odd number of quotes: a quoted field runs over
#: a line end, so lines are not records and the file must be planned (:mod:`filedrop.spark.plan`).
SPANS_LINES = "a quoted field runs over a line end"


def write_blocks(batches: Iterable[pa.RecordBatch], *, conninfo: str, copy_stmt: str,
                 plans: dict[int, BlockPlan] | None, header: bool, single_line: bool = True,
                 check: tuple[int, int, bool, int, bool]) -> Iterator[pa.RecordBatch]:
    """COPY the records each block owns into the per-load table, numbered from the block's plan.

    Without ``plans`` (the one-pass read) every line is a record, numbered from the block's
    :func:`~filedrop.spark.plan.block_base`; a quoted field that runs over a line end ends the block's
    COPY with :data:`SPANS_LINES`, before anything of that block is stored. Not ``single_line``: the file
    is one block, and COPY finds its records (quoted line ends and all).
    One COPY (one transaction) per block; bad data ends that block's COPY and is reported, not raised:
    the engine then re-reads the file with the reference parser. ``check`` (delimiter byte, quote byte,
    dates, record byte cap, ascii only) configures the :class:`~filedrop.csvscan.FastPathCheck` every block's
    bytes pass, as in the direct engine: bytes COPY would read differently from RFC 4180 are reported like
    bad data.
    """
    out: dict[str, list[Any]] = {"start": [], "rows": [], "error": []}
    with Client.open(worker_conninfo(conninfo), application_name="filedrop-spark") as conn:
        conn.execute(ROW_SEQUENCE_DDL)
        for start, segs in groupby(segments(batches), key=lambda s: s[0]):
            plan = plans[start] if plans is not None else BlockPlan(start, 0, block_base(start), -1, b"")
            rows, lines_written, error = 0, 0, None
            scan = FastPathCheck(check[0], check[1], dates=check[2], max_record=check[3], ascii_only=check[4],
                                 single_line=plans is None and single_line)
            try:
                conn.execute(*row_sequence_setup(plan.first_row))
                with conn.copy(copy_stmt) as copy:
                    skip, seen = plan.skip, 0
                    for _, lines in segs:
                        lines_in = len(lines)
                        lines = _strip_first(lines, start, header, seen)
                        seen += lines_in
                        if skip:
                            take = min(skip, len(lines))
                            lines, skip = lines.slice(take), skip - take
                        if len(lines):
                            piece = join_lines(lines)
                            scan.feed(piece)
                            copy.write(piece)
                            lines_written += len(lines)
                    if plan.tail:
                        scan.feed(plan.tail)
                        copy.write(plan.tail)
                    scan.finish()
                rows = copy.rows
            except QuotedLineEnd:
                error = SPANS_LINES
            except BadValue as exc:
                error = (exc.diag.message_primary or str(exc)) + (f" ({exc.diag.context})" if exc.diag.context else "")
            except NeedsTolerant as exc:
                error = str(exc)
            expected = plan.rows if plans is not None else lines_written if single_line else rows
            if error is None and rows != expected:
                error = f"block at byte {start}: COPY stored {rows} rows, {expected} expected"
            out["start"].append(start)
            out["rows"].append(rows)
            out["error"].append(error)
    yield pa.RecordBatch.from_pydict(out, schema=pa.schema(
        [("start", pa.int64()), ("rows", pa.int64()), ("error", pa.string())]))


# --- the one-task reference load ------------------------------------------------------------------

class _Pieces(io.RawIOBase):
    """A read-once raw stream over an iterator of byte strings."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buf = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._pieces, None)
            if nxt is None:
                return 0
            self._buf = nxt
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def file_bytes(batches: Iterable[pa.RecordBatch], exact_size: int | None) -> Iterator[bytes]:
    """The whole file again from its lines, which must arrive in file order (checked).

    With ``exact_size`` the result is byte-exact (a final ``\\n`` only when the file has one), as a
    compressed file needs; otherwise a final ``\\n`` is always added, which no CSV reader tells apart.
    """
    last, size = -1, 0
    for start, lines in segments(batches):
        if start < last:
            raise RuntimeError(f"blocks arrived out of file order ({start} after {last})")
        last = start
        piece = join_lines(lines)
        size += len(piece)
        yield piece[:-1] if exact_size is not None and size > exact_size else piece


class _StreamEngine(DirectEngine):
    """The direct engine's parser over the bytes Spark read (so both engines share one parser)."""

    def __init__(self, stream: io.BufferedReader[Any], *args: Any) -> None:
        super().__init__(*args)
        self._stream = stream

    def _open(self, on_bytes: Any) -> io.BufferedReader[Any]:
        return self._stream


def reference_parse(batches: Iterable[pa.RecordBatch], *, conninfo: str, settings: Settings, route: FileRoute,
                    obj: SourceObject, load_id: str, step: str, gunzip: bool,
                    exact_size: int | None) -> Iterator[pa.RecordBatch]:
    """Run one step of :class:`~filedrop.load.session.DirectEngine` (``fast`` COPY, or the ``tolerant`` pass)
    over the whole file in this one task. Outcome ``ok``, ``bad_data`` (fast COPY met bad data) or
    ``failed`` (the file cannot be loaded: :class:`~filedrop.load.session.LoadFailed`)."""
    raw: io.BufferedReader[Any] = io.BufferedReader(_Pieces(file_bytes(batches, exact_size)), CHUNK)
    stream: io.BufferedReader[Any] = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), CHUNK) if gunzip else raw
    row: dict[str, Any] = dict(outcome="ok", rows_parsed=0, rows_good=0, rows_rejected=0, first_error=None,
                               first_error_line=None, note=None)
    with Client.open(worker_conninfo(conninfo), application_name="filedrop-spark") as conn:
        engine = _StreamEngine(stream, conn, settings, route, obj, load_id, None)
        try:
            try:
                parsed: Parsed = engine._fast() if step == "fast" else engine._tolerant()
            except EOFError as exc:
                raise LoadFailed(f"truncated gzip file: {exc}") from None
            except (gzip.BadGzipFile, zlib.error) as exc:
                raise LoadFailed(f"cannot decompress: {exc}") from None
            row.update(rows_parsed=parsed.rows_parsed, rows_good=parsed.rows_good,
                       rows_rejected=parsed.rows_rejected, first_error=parsed.first_error,
                       first_error_line=parsed.first_error_line, note=parsed.notes[0] if parsed.notes else None)
        except BadValue as exc:
            if step != "fast":
                raise
            row.update(outcome="bad_data", first_error=exc.diag.message_primary)
        except NeedsTolerant as exc:
            row.update(outcome="bad_data", first_error=str(exc))
        except LoadFailed as exc:
            row.update(outcome="failed", first_error=str(exc), first_error_line=exc.line)
    yield pa.RecordBatch.from_pylist([row], schema=pa.schema([
        ("outcome", pa.string()), ("rows_parsed", pa.int64()), ("rows_good", pa.int64()),
        ("rows_rejected", pa.int64()), ("first_error", pa.string()), ("first_error_line", pa.int64()),
        ("note", pa.string())]))
