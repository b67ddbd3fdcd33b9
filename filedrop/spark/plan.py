"""Record numbering over Hadoop splits: which lines each split writes, and the row number of its first
record. Pure: no I/O, no pyspark.

Most files have no quoted field that runs over a line end: then every line is one record, and the
engine reads the file once (:class:`Numbering`): each block numbers its records from a base of its own
(:func:`block_base`, derived from its byte offset) and the apply turns those numbers into the file's.
A line with an odd number of quotes ends that pass, and the file is planned as below.

Spark reads the file as physical lines (``\\n``-separated, byte-exact) in splits ("blocks"). A CSV record
ends at a line end that lies outside quotes; PostgreSQL's ``COPY ... (FORMAT csv)`` decides that by the
parity of quote characters since the start of the data (a doubled quote inside a quoted field toggles
twice), so the same rule, applied here, splits the file exactly where COPY would. Each block reports
(:class:`BlockStats`) its line count and quote parities *for both possible starting states* (outside or
inside a quoted field); the driver then walks the blocks in file order (:func:`make_plan`), learns each
block's real starting state, and gives every block the lines it owns (records that *start* in it), the
1-based number of its first record (header not counted) and, when its last record runs on into later
blocks, the continuation bytes (:attr:`BlockPlan.tail`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from filedrop.routes import FileRoute
from filedrop.warehouse import sql

#: Largest continuation (a record spanning a split boundary) carried from one block to another; a
#: longer one makes the engine load the file in one task instead (:class:`NeedsOneTask`).
MAX_CONTINUATION = 16 << 20

#: Session-local sequence that numbers rows: each COPY session sets it to its first row number.
ROW_SEQUENCE = "filedrop_row_number"


class NeedsOneTask(Exception):
    """The file cannot be split safely; it is read by one task with the reference (direct) parser."""


@dataclass(frozen=True)
class BlockStats:
    """What one block (Hadoop split) of the file looks like, from its own lines only.

    ``even_ends`` counts the lines after which the quote parity counted from the block start is even:
    the record ends there when the block starts outside quotes. ``first_odd`` is the first line after
    which it is odd (-1 when never): when the block starts inside a quoted field, the record that began
    earlier ends there. ``head`` holds lines ``0..first_odd`` (or all lines when ``first_odd`` is -1),
    each followed by ``\\n``, or None when longer than :data:`MAX_CONTINUATION`.
    """

    start: int
    lines: int
    even_ends: int
    first_odd: int
    parity: int
    head: bytes | None


@dataclass(frozen=True)
class BlockPlan:
    start: int
    skip: int        # leading lines that finish a record begun in an earlier block
    first_row: int   # row number of the first record that starts in this block
    rows: int        # records that start in this block
    tail: bytes      # lines of later blocks that complete this block's last record


def make_plan(blocks: Sequence[BlockStats]) -> list[BlockPlan]:
    """Plans for the blocks, in file order. Blocks without lines may be absent."""
    ordered = sorted(blocks, key=lambda b: b.start)
    plans: list[BlockPlan] = []
    state, ended = 0, 0  # inside quotes at the block start?; records ended before it
    for i, b in enumerate(ordered):
        if state == 0:
            skip, ends = 0, b.even_ends
        elif b.first_odd < 0:
            skip, ends = b.lines, 0  # the whole block lies inside a record begun earlier
        else:
            skip, ends = b.first_odd + 1, b.lines - b.even_ends
        new_state = state ^ b.parity
        rows = (ended + ends + new_state) - (ended + state)
        tail = b""
        if new_state == 1 and rows > 0:
            tail = _continuation(ordered[i + 1:])
        plans.append(BlockPlan(b.start, skip, ended + state + 1, rows, tail))
        state, ended = new_state, ended + ends
    return plans


def _continuation(later: Sequence[BlockStats]) -> bytes:
    parts: list[bytes] = []
    size = 0
    for b in later:
        if b.head is None:
            raise NeedsOneTask(f"a record at byte {b.start} runs on for more than {MAX_CONTINUATION} bytes")
        parts.append(b.head)
        size += len(b.head)
        if size > MAX_CONTINUATION:
            raise NeedsOneTask(f"a record at byte {b.start} runs on for more than {MAX_CONTINUATION} bytes")
        if b.first_odd >= 0:
            break
    # An open quote at the end of the file leaves the tail unfinished: COPY then reports it.
    return b"".join(parts)


def quoted_line_end(data: bytes, quote: str, *, header: bool) -> bool:
    """Whether a quoted field in ``data`` (the file's first bytes) runs over a line end: a complete data
    line with an odd number of quote characters. The header line (read on its own, never by COPY) does not
    count; the last line counts only when ``data`` ends with a line end (it may be cut off)."""
    q = quote.encode()
    lines = data.split(b"\n")[1 if header else 0:]
    return any(line.count(q) & 1 for line in lines[:-1])


def block_base(start: int) -> int:
    """First row number a block starting at byte ``start`` gives its records in the one-pass read. A block
    holds at most one line per byte from its start to the next block's start, plus one, so bases twice
    the offset apart never let two blocks' numbers meet (:meth:`Numbering.of` checks it anyway)."""
    return 2 * start + 1


@dataclass(frozen=True)
class Numbering:
    """How the one-pass read's row numbers (block base + record index) map to the file's record numbers
    (1, 2, …): per block, in file order, the lowest number it used and what to add to its numbers."""

    bases: tuple[int, ...]
    shifts: tuple[int, ...]

    @classmethod
    def of(cls, blocks: Sequence[tuple[int, int]]) -> Numbering | None:
        """From (block start, records written) of every block that wrote records; None when two blocks'
        numbers overlap (the one-pass numbering cannot tell them apart)."""
        bases, shifts, first = [], [], 1
        ordered = sorted((start, rows) for start, rows in blocks if rows > 0)
        for i, (start, rows) in enumerate(ordered):
            base = block_base(start)
            if i + 1 < len(ordered) and base + rows > block_base(ordered[i + 1][0]):
                return None
            bases.append(base)
            shifts.append(first - base)
            first += rows
        return cls(tuple(bases), tuple(shifts))

    def row(self, number: int) -> int:
        """The file's record number of a one-pass row number."""
        i = max(j for j, base in enumerate(self.bases) if base <= number)
        return number + self.shifts[i]

    def sql(self) -> str | None:
        """The same mapping over ``l."_row_number"`` of the load table, or None when it is the identity."""
        if not any(self.shifts):
            return None
        bases = ", ".join(str(b) for b in self.bases)
        shifts = ", ".join(str(s) for s in self.shifts)
        return (f'(l."_row_number" + (ARRAY[{shifts}]::bigint[])'
                f'[width_bucket(l."_row_number", ARRAY[{bases}]::bigint[])])')


def total_rows(plans: Sequence[BlockPlan]) -> int:
    return sum(p.rows for p in plans)


def load_table_ddl(meta: str, load_id: str, route: FileRoute) -> str:
    """The per-load table as :func:`filedrop.warehouse.sql.load_table_ddl` makes it, except ``_row_number``: many
    sessions COPY into it at once, each numbering its rows from its own session-local (temporary)
    sequence. ``nextval('pg_temp.…'::text)`` binds late, so each session resolves its own sequence."""
    cols = [f"{sql.ident(c.name)} {sql.load_type(c)}"
            f"{'' if c.nullable and c.name not in route.spec.primary_key else ' NOT NULL'}"
            for c in route.spec.columns]
    cols.append(f"\"_row_number\" bigint NOT NULL DEFAULT nextval('pg_temp.{ROW_SEQUENCE}'::text)")
    return f"CREATE UNLOGGED TABLE {sql.qualified(meta, sql.load_table_name(load_id))} ({', '.join(cols)})"


def row_sequence_setup(first_row: int) -> tuple[str, tuple[int]]:
    """Statement (and parameters) that makes the next ``_row_number`` of this session ``first_row``."""
    return (f"SELECT setval('pg_temp.{ROW_SEQUENCE}', %s, false)", (first_row,))


ROW_SEQUENCE_DDL = f"CREATE TEMPORARY SEQUENCE IF NOT EXISTS {ROW_SEQUENCE} MINVALUE 1"
