"""Every kind of bad input gives its status and message, quarantines what it must, and harms nothing else."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from tests.conftest import DB
from tests.support.loads import items_route, load, write

HEADER = "id,name,qty,day\n"


@pytest.fixture
def preloaded(warehouse: str, db: DB, tmp_path: Path) -> str:
    """A good file already loaded: bad files must leave it exactly as it is."""
    route = items_route("append")
    good = write(tmp_path / "good" / "items_good.csv", HEADER + "100,keep,1,2020-01-01\n")
    assert load(warehouse, route, good).status == "loaded"
    return warehouse


def staged(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT id, name, qty, day::text FROM staging.items ORDER BY _loaded_at, _row_number")


def rejected(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT line_number, column_name, error, raw_line FROM filedrop.rejected_rows ORDER BY line_number")


GOOD = (100, "keep", 1, "2020-01-01")


@pytest.mark.parametrize("body,line,column,error_part", [
    ("1,a,1,2022-01-01\n2,b,2,2022-01-02,extra\n3,c,3,2022-01-03\n", 2, None, "expected 4 columns, found 5"),
    ("1,a,1,2022-01-01\n2,b,2\n3,c,3,2022-01-03\n", 2, None, "expected 4 columns, found 3"),
    ("1,a,1,2022-01-01\n2,b,2,2022-13-45\n3,c,3,2022-01-03\n", 2, "day", "date"),
    ("1,a,1,2022-01-01\n2,b,two,2022-01-02\n3,c,3,2022-01-03\n", 2, "qty",
     'invalid input syntax for type integer: "two"'),
    ("1,a,1,2022-01-01\n,b,2,2022-01-02\n3,c,3,2022-01-03\n", 2, "id", "missing value"),
    ("1,a,1,2022-01-01\n2,b,99999999999,2022-01-02\n3,c,3,2022-01-03\n", 2, "qty", "out of range"),
])
def test_bad_row_is_quarantined_and_the_rest_loads(preloaded: str, db: DB, tmp_path: Path, body: str, line: int,
                                                   column: str | None, error_part: str) -> None:
    result = load(preloaded, items_route("append"), write(tmp_path / "items_bad.csv", HEADER + body))
    assert result.status == "loaded", result.first_error
    assert (result.rows_parsed, result.rows_loaded, result.rows_rejected) == (3, 2, 1)
    assert result.first_error_line == line and error_part in (result.first_error or "")
    [(got_line, got_col, error, raw)] = rejected(db)
    assert (got_line, got_col) == (line, column) and error_part in error
    assert raw == body.splitlines()[line - 1]
    assert staged(db) == [GOOD, (1, "a", 1, "2022-01-01"), (3, "c", 3, "2022-01-03")]
    # lineage row numbers keep the file's record index, with the bad record's number missing
    assert db.rows("SELECT _row_number FROM staging.items WHERE _source_key = 'items_bad.csv' "
                   "ORDER BY 1") == [(1,), (3,)]


def test_non_utf8_bytes_are_quarantined(preloaded: str, db: DB, tmp_path: Path) -> None:
    body = HEADER.encode() + b"1,a,1,\n2,caf\xe9,2,\n3,c,3,\n"
    result = load(preloaded, items_route("append"), write(tmp_path / "items_latin.csv", body))
    assert (result.status, result.rows_loaded, result.rows_rejected) == ("loaded", 2, 1)
    [(line, _, error, raw)] = rejected(db)
    assert line == 2 and "invalid utf-8 byte(s) 0xe9" in error and raw == "2,caf\\xe9,2,"


def test_too_many_bad_rows_fails_the_file_and_harms_nothing(preloaded: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", max_bad=10)
    body = HEADER + "1,a,1,\n2,b,x,\n3,c,y,\n4,d,4,\n"
    result = load(preloaded, route, write(tmp_path / "items_bad.csv", body))
    assert result.status == "failed"
    assert "2 of 4 rows are bad (50.0% > maxBadRowsPercent 10)" in (result.first_error or "")
    assert result.first_error_line == 2
    assert staged(db) == [GOOD]
    assert [r[0] for r in rejected(db)] == [2, 3]  # quarantined with reasons, for diagnosis
    [h] = [h for h in db.history() if h["key"] == "items_bad.csv"]
    assert (h["status"], h["rows_parsed"], h["rows_rejected"], h["rows_loaded"]) == ("failed", 4, 2, 0)
    assert db.leftover_tables() == []


def test_abort_policy_fails_on_the_first_bad_row(preloaded: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", on_error="abort")
    result = load(preloaded, route, write(tmp_path / "items_bad.csv", HEADER + "1,a,1,\n2,b,2,2022-02-30\n"))
    assert result.status == "failed"
    assert result.first_error_line == 2
    assert result.first_error.startswith("line 2: day:") and "onError: abort" in result.first_error
    assert staged(db) == [GOOD]


@pytest.mark.parametrize("content,message", [
    (b"", "empty file"),
    (b"id,name,colour,day\n1,a,red,\n",
     "header does not match FileRoute items: missing column(s): qty; unexpected column(s): colour"),
    (b"id,name,day\n1,a,\n", "missing column(s): qty"),
    (b"id,name,qty,day,qty\n", "duplicated column(s): qty"),
])
def test_file_level_problems_fail_with_a_clear_message(preloaded: str, db: DB, tmp_path: Path, content: bytes,
                                                       message: str) -> None:
    result = load(preloaded, items_route("append"), write(tmp_path / "items_x.csv", content))
    assert result.status == "failed"
    assert message in (result.first_error or ""), result.first_error
    assert staged(db) == [GOOD]
    assert db.leftover_tables() == []
    [h] = [h for h in db.history() if h["key"] == "items_x.csv"]
    assert h["status"] == "failed" and message in h["first_error"]


def test_header_only_loads_zero_rows(preloaded: str, db: DB, tmp_path: Path) -> None:
    result = load(preloaded, items_route("append"), write(tmp_path / "items_h.csv", HEADER))
    assert (result.status, result.rows_parsed, result.rows_loaded) == ("loaded", 0, 0)
    assert staged(db) == [GOOD]


@pytest.mark.parametrize("name,content", [
    ("bom", b"\xef\xbb\xbfid,name,qty,day\n1,a,1,2022-01-01\n2,b,2,\n"),
    ("crlf", b"id,name,qty,day\r\n1,a,1,2022-01-01\r\n2,b,2,\r\n"),
    ("no-final-newline", b"id,name,qty,day\n1,a,1,2022-01-01\n2,b,2,"),
    ("columns-reordered", b"day,qty,name,id\n2022-01-01,1,a,1\n,2,b,2\n"),
])
def test_well_formed_variants_load_exactly(preloaded: str, db: DB, tmp_path: Path, name: str, content: bytes) -> None:
    result = load(preloaded, items_route("append"), write(tmp_path / f"items_{name}.csv", content))
    assert (result.status, result.rows_loaded, result.rows_rejected) == ("loaded", 2, 0), result.first_error
    assert staged(db) == [GOOD, (1, "a", 1, "2022-01-01"), (2, "b", 2, None)]


def test_quoted_fields_with_commas_newlines_and_quotes(preloaded: str, db: DB, tmp_path: Path) -> None:
    content = HEADER + '1,"apple, green",1,\n2,"two\nlines",2,\n3,"say ""hi""",3,\n4,"",4,\n'
    result = load(preloaded, items_route("append"), write(tmp_path / "items_q.csv", content))
    assert (result.status, result.rows_loaded) == ("loaded", 4)
    assert staged(db)[1:] == [(1, "apple, green", 1, None), (2, "two\nlines", 2, None),
                              (3, 'say "hi"', 3, None), (4, "", 4, None)]
    assert db.rows("SELECT _row_number FROM staging.items WHERE id = 3") == [(3,)]


def test_quoted_fields_survive_the_tolerant_pass(preloaded: str, db: DB, tmp_path: Path) -> None:
    content = HEADER + '1,"apple, green",1,\n2,"two\nlines",bad,\n3,"x",3,\n'
    result = load(preloaded, items_route("append"), write(tmp_path / "items_q.csv", content))
    assert (result.status, result.rows_loaded, result.rows_rejected) == ("loaded", 2, 1)
    assert staged(db)[1:] == [(1, "apple, green", 1, None), (3, "x", 3, None)]
    assert [r[0] for r in rejected(db)] == [2]


def test_gzip_file_by_extension_and_by_magic_bytes(preloaded: str, db: DB, tmp_path: Path) -> None:
    data = gzip.compress((HEADER + "1,a,1,\n2,b,2,\n").encode())
    r1 = load(preloaded, items_route("append"), write(tmp_path / "items_1.csv.gz", data))
    r2 = load(preloaded, items_route("append"), write(tmp_path / "items_2.csv", data))  # no .gz, magic bytes
    assert [(r.status, r.rows_loaded) for r in (r1, r2)] == [("loaded", 2), ("loaded", 2)]
    assert db.one("SELECT count(*) FROM staging.items") == 5


def test_truncated_gzip_fails_and_harms_nothing(preloaded: str, db: DB, tmp_path: Path) -> None:
    data = gzip.compress((HEADER + "".join(f"{i},n{i},{i},\n" for i in range(1, 5000))).encode())
    result = load(preloaded, items_route("append"), write(tmp_path / "items_t.csv.gz", data[: len(data) // 2]))
    assert result.status == "failed"
    assert "truncated gzip" in (result.first_error or ""), result.first_error
    assert staged(db) == [GOOD]
    assert db.leftover_tables() == []


def test_hostile_file_name_and_sql_looking_header(preloaded: str, db: DB, tmp_path: Path) -> None:
    name = "items_'; DROP TABLE staging.items; --.csv"
    ok = load(preloaded, items_route("append"), write(tmp_path / name, HEADER + "1,a,1,\n"))
    assert ok.status == "loaded"
    assert db.rows("SELECT _source_key FROM staging.items WHERE id = 1") == [(name,)]
    evil = 'id,"name""); DROP TABLE staging.items; --",qty,day\n1,a,1,\n'
    bad = load(preloaded, items_route("append"), write(tmp_path / "items_evil.csv", evil))
    assert bad.status == "failed" and "unexpected column(s): name\"); drop table staging.items; --" in bad.first_error
    assert db.one("SELECT count(*) FROM staging.items") == 2  # the table is still there, untouched


@pytest.mark.parametrize("name,content,status,expect", [
    ("utf16", "id,name,qty,day\n1,a,1,\n".encode("utf-16"), "failed", "header line is not valid utf-8"),
    ("cr-only", b"id,name,qty,day\r1,a,1,\r2,b,2,\r", "failed", "bare carriage return"),
    ("mixed-line-ends", b"id,name,qty,day\r\n1,a,1,\n2,b,2,\r\n", "loaded", 2),
    ("unclosed-quote", b'id,name,qty,day\n1,a,1,\n2,"b,2,\n', "loaded", 1),
    ("blank-lines", b"id,name,qty,day\n1,a,1,\n\n2,b,2,\n\n", "loaded", 2),
    ("huge-field", ("id,name,qty,day\n1," + "x" * 5_000_000 + ",1,\n").encode(), "loaded", 1),
    ("zero-byte-gzip", b"", "failed", "empty file"),
    ("not-really-gzip.csv.gz", b"id,name,qty,day\n1,a,1,\n", "failed", "cannot decompress"),
])
def test_more_shapes(preloaded: str, db: DB, tmp_path: Path, name: str, content: bytes, status: str,
                     expect: object) -> None:
    path = tmp_path / (name if name.endswith(".gz") else f"items_{name}.csv")
    if name.endswith(".gz"):
        path = tmp_path / f"items_{name}"
    result = load(preloaded, items_route("append"), write(path, content))
    assert result.status == status, (result.first_error, result.message)
    if status == "loaded":
        assert result.rows_loaded == expect
    else:
        assert str(expect) in (result.first_error or "")
    assert db.one("SELECT count(*) FROM staging.items WHERE id = 100") == 1
    assert db.leftover_tables() == []


def test_latin1_route(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", format="{encoding: latin-1}")
    result = load(warehouse, route, write(tmp_path / "items_l1.csv", "id,name,qty,day\n1,café,1,\n".encode("latin-1")))
    assert (result.status, result.rows_loaded) == ("loaded", 1)
    assert db.rows("SELECT name FROM staging.items") == [("café",)]
