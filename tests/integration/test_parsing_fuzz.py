"""Differential fuzz of the two CSV paths (DESIGN §3 "Parsing rules"), on real PostgreSQL.

Random short files over the characters that matter (delimiter, quote, doubled quote, LF, CRLF, bare CR,
backslash, `\\.`, space) with 1–3 columns. For each:

- :class:`~filedrop.csvscan.FastPathCheck` gives the same verdict whatever the chunking;
- :class:`~filedrop.csvrecords.RecordReader` reads the same records whatever the chunking;
- where the check lets the bytes through to PostgreSQL's COPY (the fast path) and COPY accepts them, COPY's
  rows equal the reader's (the tolerant path): a value never depends on the path.

`FILEDROP_FUZZ_CASES` (default 800 per column count) sizes it; the seed is fixed so a failure repeats.
"""

from __future__ import annotations

import io
import os
import random

import psycopg

from filedrop.csvrecords import RecordReader
from filedrop.csvscan import FastPathCheck, NeedsTolerant, QuotedLineEnd
from filedrop.load.direct import _hold_blank_lines

TOKENS = ["a", "b", ",", ",", '"', '""', "\n", "\n", "\r\n", "\r", "\\", ".", "\\.", " ", "x"]
CASES = int(os.environ.get("FILEDROP_FUZZ_CASES", "800"))


def check_passes(data: bytes, chunk: int) -> bool:
    check = FastPathCheck(ord(","), ord('"'), dates=False, max_record=1 << 20)
    try:
        for i in range(0, len(data), chunk):
            check.feed(data[i:i + chunk])
        check.finish()
        return True
    except NeedsTolerant:
        return False


def reader_rows(data: bytes, columns: int, chunk: int) -> list[tuple[object, ...]]:
    reader = RecordReader(io.BytesIO(data), delimiter=",", quote='"', null="", encoding="utf-8",
                          columns=columns, max_record=1 << 20, chunk=chunk)
    return [tuple(r.values) if r.values is not None else ("rejected", r.raw) for r in reader]


def copy_rows(conn: psycopg.Connection[tuple[object, ...]], data: bytes,
              columns: int) -> list[tuple[object, ...]] | None:
    """What the direct engine's fast path sends COPY (blank lines at the end held back) and what COPY
    stores; None when COPY refuses the data (the file then takes the tolerant path)."""
    sent, held, line_start = b"", b"", True
    for i in range(0, len(data), 7):
        piece = data[i:i + 7]
        if columns > 1:
            piece, held, line_start = _hold_blank_lines(held + piece, line_start)
        sent += piece
    names = ", ".join(f"c{i}" for i in range(columns))
    conn.execute("TRUNCATE fuzz")
    try:
        with conn.cursor() as cur, cur.copy(f"COPY fuzz ({names}) FROM STDIN (FORMAT csv)") as copy:
            copy.write(sent)
    except psycopg.Error:
        return None
    return [tuple(r) for r in conn.execute(f"SELECT {names} FROM fuzz ORDER BY n").fetchall()]


def test_both_paths_read_random_csv_alike(warehouse: str) -> None:
    rnd = random.Random(20261203)
    problems = []
    with psycopg.connect(warehouse, autocommit=True) as conn:
        for columns in (1, 2, 3):
            conn.execute("DROP TABLE IF EXISTS fuzz")
            conn.execute("CREATE TABLE fuzz (n bigint GENERATED ALWAYS AS IDENTITY, "
                         + ", ".join(f"c{i} text" for i in range(columns)) + ")")
            for _ in range(CASES):
                data = "".join(rnd.choice(TOKENS) for _ in range(rnd.randint(1, 14))).encode()
                verdicts = {check_passes(data, k) for k in (1, 2, 3, 5, len(data))}
                readings = {tuple(reader_rows(data, columns, k)) for k in (1, 2, 3, 64)}
                if len(verdicts) > 1:
                    problems.append(("the check depends on chunking", columns, data))
                if len(readings) > 1:
                    problems.append(("the reader depends on chunking", columns, data))
                if verdicts == {True}:
                    got = copy_rows(conn, data, columns)
                    if got is not None and got != reader_rows(data, columns, 64):
                        problems.append(("COPY and the reader disagree", columns, data))
    assert not problems, problems[:20]


def single_line_verdict(data: bytes, chunk: int) -> str:
    check = FastPathCheck(ord(","), ord('"'), dates=False, max_record=1 << 20, single_line=True)
    try:
        for i in range(0, len(data), chunk):
            check.feed(data[i:i + chunk])
        check.finish()
        return "passes"
    except QuotedLineEnd:
        return "quoted line end"
    except NeedsTolerant:
        return "needs tolerant"


def test_single_line_check_finds_every_quoted_line_end() -> None:
    """The Spark engine's one-pass read takes each line for a record and relies on this check to say
    when that is wrong: on bytes the plain check lets through, it must raise exactly when some line feed
    lies inside quotes (an odd number of quotes before it, COPY's rule), whatever the chunking."""
    rnd = random.Random(20261207)
    problems = []
    for _ in range(CASES * 3):
        data = "".join(rnd.choice(TOKENS) for _ in range(rnd.randint(1, 14))).encode()
        verdicts = {single_line_verdict(data, k) for k in (1, 2, 3, 5, len(data))}
        if not check_passes(data, len(data)):
            if "passes" in verdicts:
                problems.append(("passes what the plain check refuses", data))
            continue
        inside = any(data[:i].count(b'"') & 1 for i, byte in enumerate(data) if byte == ord("\n"))
        if verdicts != {"quoted line end" if inside else "passes"}:
            problems.append((verdicts, data))
    assert not problems, problems[:20]
