"""DESIGN §3 "Parsing rules" on real PostgreSQL: one RFC 4180 reading of every record on every path.

Each case was loaded wrong without a word before these rules: a quoted empty string turned NULL when
another record was bad, two records merged into one, rows after a ``\\.`` line vanished (PostgreSQL 15),
and dates depended on the loader's environment.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from filedrop.routes import parse_routes_yaml
from tests.conftest import DB
from tests.support.loads import items_route, load, write

HEADER = "id,name,qty,day\n"
BAD_ROW = "9,bad,not-a-number,\n"  # sends a file down the tolerant path


def staged(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT id, name, qty, day::text FROM staging.items ORDER BY _row_number")


def rejected(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT line_number, raw_line, error FROM filedrop.rejected_rows ORDER BY line_number")


@pytest.mark.parametrize("path", ["fast", "tolerant"])
def test_quoted_empty_string_is_empty_and_only_unquoted_empty_is_null(warehouse: str, db: DB, tmp_path: Path,
                                                                      path: str) -> None:
    body = HEADER + '1,"",1,\n2,,2,\n3,"x",3,\n' + (BAD_ROW if path == "tolerant" else "")
    result = load(warehouse, items_route("append"), write(tmp_path / "items.csv", body))
    assert result.status == "loaded", result.first_error
    assert staged(db) == [(1, "", 1, None), (2, None, 2, None), (3, "x", 3, None)]


def test_quoted_empty_string_into_a_not_null_column_loads_on_both_paths(warehouse: str, db: DB,
                                                                       tmp_path: Path) -> None:
    """On the tolerant path "" used to become NULL, so the good record was quarantined as missing a value."""
    body = HEADER + '1,"",1,\n' + BAD_ROW
    result = load(warehouse, items_route("append", name_nullable=False), write(tmp_path / "items.csv", body))
    assert (result.status, result.rows_loaded, result.rows_rejected) == ("loaded", 1, 1), result.first_error
    assert staged(db) == [(1, "", 1, None)]


def test_null_value_quoted_is_a_string(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", format="{nullValue: NA}")
    for name, extra in (("items_fast.csv", ""), ("items_tol.csv", BAD_ROW)):
        body = HEADER + f'1,NA,1,NA\n2,"NA",2,NA\n{extra}'
        assert load(warehouse, route, write(tmp_path / name, body)).status == "loaded"
    got = db.rows("SELECT _source_key, id, name FROM staging.items ORDER BY 1, 2")
    assert got == [("items_fast.csv", 1, None), ("items_fast.csv", 2, "NA"),
                   ("items_tol.csv", 1, None), ("items_tol.csv", 2, "NA")]


def test_raw_line_is_the_record_as_written(warehouse: str, db: DB, tmp_path: Path) -> None:
    body = HEADER + '1,"a, ""quoted"" name",1,\n2,"two\nlines",bad,\n3,"x",3,2022-02-30\n'
    result = load(warehouse, items_route("append", max_bad=100), write(tmp_path / "items.csv", body))
    assert (result.status, result.rows_loaded, result.rows_rejected) == ("loaded", 1, 2)
    assert [r[:2] for r in rejected(db)] == [(2, '2,"two\nlines",bad,'), (3, '3,"x",3,2022-02-30')]
    assert staged(db) == [(1, 'a, "quoted" name', 1, None)]


def test_raw_line_is_capped(warehouse: str, db: DB, tmp_path: Path) -> None:
    body = HEADER + f"1,{'x' * 100_000},bad,\n2,b,2,\n"
    result = load(warehouse, items_route("append"), write(tmp_path / "items.csv", body))
    assert (result.status, result.rows_rejected) == ("loaded", 1)
    [(_, raw, _)] = rejected(db)
    assert raw.startswith("1,xxx") and raw.endswith("(100007 bytes in all)") and len(raw) < 9000


@pytest.mark.parametrize("body,bad_lines,reason", [
    # PostgreSQL's CSV mode used to merge each pair into one row holding a newline: `loaded`, 0 rejected
    ("1,5'3\",1,\n2,6'1\",2,\n3,ok,3,\n", [1, 2], "a quote character inside an unquoted field"),
    ("1,a\"b,1,\n2,c,2,\n3,d\"e,3,\n4,ok,4,\n", [1, 3], "a quote character inside an unquoted field"),
    ("1,\"quoted\"tail,1,\n2,ok,2,\n", [1], "text after the closing quote of a quoted field"),
])
def test_a_quote_inside_an_unquoted_field_rejects_that_record_only(warehouse: str, db: DB, tmp_path: Path,
                                                                   body: str, bad_lines: list[int],
                                                                   reason: str) -> None:
    result = load(warehouse, items_route("append", max_bad=100), write(tmp_path / "items.csv", HEADER + body))
    records = body.splitlines()
    assert result.status == "loaded", result.first_error
    assert (result.rows_parsed, result.rows_rejected) == (len(records), len(bad_lines))
    assert rejected(db) == [(n, records[n - 1], reason) for n in bad_lines]
    assert [r[0] for r in staged(db)] == [n for n in range(1, len(records) + 1) if n not in bad_lines]
    assert db.one("SELECT count(*) FROM staging.items WHERE name LIKE '%' || chr(10) || '%'") == 0


def test_a_line_holding_only_backslash_dot_is_data(warehouse: str, db: DB, tmp_path: Path) -> None:
    """PostgreSQL before 18 ends COPY data at a `\\.` line and drops what follows, without an error."""
    body = HEADER + "1,a,1,\n2,\\.,2,\n3,c,3,\n"
    single = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: notes}
spec:
  match: {pattern: '^notes.*$'}
  table: notes
  columns: [{name: note, type: text}]
""")[0]
    result = load(warehouse, items_route("append"), write(tmp_path / "items.csv", body))
    assert (result.status, result.rows_loaded) == ("loaded", 3)
    assert staged(db) == [(1, "a", 1, None), (2, "\\.", 2, None), (3, "c", 3, None)]
    notes = load(warehouse, single, write(tmp_path / "notes.csv", "note\nfirst\n\\.\nlast\n"))
    assert (notes.status, notes.rows_loaded) == ("loaded", 3)
    assert db.rows("SELECT note FROM staging.notes ORDER BY _row_number") == [("first",), ("\\.",), ("last",)]


TS_ROUTE = """
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: events}
spec:
  match: {pattern: '^events.*\\.csv$'}
  table: events
  columns:
    - {name: id, type: integer, nullable: false}
    - {name: day, type: date}
    - {name: at, type: timestamptz}
    - {name: local_at, type: timestamp}
  onError: continue
  maxBadRowsPercent: 100
"""


@pytest.mark.parametrize("extra", ["", "9,bad-date,,\n"], ids=["fast", "tolerant"])
def test_dates_do_not_depend_on_the_loaders_environment(warehouse: str, db: DB, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch, extra: str) -> None:
    """libpq sends PGDATESTYLE and PGTZ to the server: a loader's environment used to change the values
    loaded from identical bytes (03/04/2022 read as 3 April under DMY; a naive timestamptz in PGTZ)."""
    monkeypatch.setenv("PGDATESTYLE", "SQL, DMY")
    monkeypatch.setenv("PGTZ", "America/New_York")
    route = parse_routes_yaml(TS_ROUTE)[0]
    body = ("id,day,at,local_at\n1,2022-03-04,2022-03-04 10:00:00,2022-03-04 10:00:00\n"
            "2,03/04/2022,2022-03-04T10:00:00+02:00,2022-03-04 10:00\n" + extra)
    result = load(warehouse, route, write(tmp_path / "events.csv", body))
    assert result.status == "loaded", result.first_error
    rows = db.rows("SELECT id, to_char(day, 'YYYY-MM-DD'), to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), "
                   "to_char(local_at, 'YYYY-MM-DD HH24:MI:SS') FROM staging.events ORDER BY id")
    assert rows == [(1, "2022-03-04", "2022-03-04 10:00", "2022-03-04 10:00:00")]
    bad = db.rows("SELECT line_number, error FROM filedrop.rejected_rows ORDER BY 1")
    assert bad[0][0] == 2 and bad[0][1].startswith("day: ") and "out of range" in bad[0][1]


@pytest.mark.parametrize("extra", ["", "9,bad-date,,\n"], ids=["fast", "tolerant"])
def test_ambiguous_short_dates_are_rejected_not_guessed(warehouse: str, db: DB, tmp_path: Path,
                                                        extra: str) -> None:
    """01/02/03 is 2001-02-03 under YMD, 2003-01-02 under MDY and 2003-02-01 under DMY."""
    route = parse_routes_yaml(TS_ROUTE)[0]
    body = ("id,day,at,local_at\n1,01/02/03,,\n2,2022-09-05,,22-09-05 10:00\n3,2022-09-05,,\n" + extra)
    result = load(warehouse, route, write(tmp_path / "events.csv", body))
    assert result.status == "loaded", result.first_error
    assert db.rows("SELECT id, day::text FROM staging.events ORDER BY id") == [(3, "2022-09-05")]
    bad = db.rows("SELECT line_number, column_name, error FROM filedrop.rejected_rows ORDER BY 1")
    assert [(n, c) for n, c, _ in bad[:2]] == [(1, "day"), (2, "local_at")]
    assert "ambiguous date '01/02/03'" in bad[0][2] and "YYYY-MM-DD" in bad[0][2]


def test_records_straddling_read_chunks_keep_their_values(warehouse: str, db: DB, tmp_path: Path) -> None:
    """The tolerant reader carries a record across its 1 MiB reads: quoted fields with newlines and
    doubled quotes at every offset load exactly as COPY loads them."""
    rows = [(i, f'v{i} "q" ,\n{"z" * (i % 700)}') for i in range(1, 4000)]
    body = HEADER + "".join(f'{i},"{v.replace(chr(34), chr(34) * 2)}",{i},\n' for i, v in rows)
    fast = load(warehouse, items_route("append"), write(tmp_path / "items_fast.csv", body))
    tolerant = load(warehouse, items_route("append"), write(tmp_path / "items_tol.csv", body + BAD_ROW))
    assert (fast.status, fast.rows_loaded, tolerant.status, tolerant.rows_loaded) == ("loaded", 3999, "loaded", 3999)
    got = db.rows("SELECT _source_key, id, name FROM staging.items ORDER BY 1, 2")
    assert got == [("items_fast.csv", i, v) for i, v in rows] + [("items_tol.csv", i, v) for i, v in rows]


DMY_ROUTE = """
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: events}
spec:
  match: {pattern: '^events.*\\\\.csv$'}
  table: events
  columns:
    - {name: id, type: integer, nullable: false}
    - {name: day, type: date, format: DD/MM/YYYY}
    - {name: at, type: timestamptz, format: 'DD/MM/YYYY HH24:MI'}
    - {name: local_at, type: timestamp, format: 'YYYYMMDD"T"HH24MISS'}
  mode: MODE
  primaryKey: [id]
  onError: continue
  maxBadRowsPercent: 100
"""


@pytest.mark.parametrize("mode", ["append", "upsert"])
@pytest.mark.parametrize("extra", ["", "9,bad,,\n"], ids=["fast", "tolerant"])
def test_a_declared_date_format_reads_values_exactly_as_declared(warehouse: str, db: DB, tmp_path: Path,
                                                                 extra: str, mode: str) -> None:
    route = parse_routes_yaml(DMY_ROUTE.replace("MODE", mode))[0]
    body = ("id,day,at,local_at\n"
            "1,03/04/2022,03/04/2022 10:15,20220403T101500\n"
            "2,3/4/2022,,\n"           # not zero-padded: not the declared format
            "3,03/04/22,,\n"           # a two-digit year: to_date alone would read the year 22
            "4,31/02/2022,,\n"         # no such day
            "5,03/04/2022 junk,,\n"    # trailing text: to_date alone would ignore it
            "6,,,\n" + extra)
    result = load(warehouse, route, write(tmp_path / "events.csv", body))
    assert result.status == "loaded", result.first_error
    rows = db.rows("SELECT id, to_char(day, 'YYYY-MM-DD'), to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), "
                   "to_char(local_at, 'YYYY-MM-DD HH24:MI:SS') FROM staging.events ORDER BY id")
    assert rows == [(1, "2022-04-03", "2022-04-03 10:15", "2022-04-03 10:15:00"), (6, None, None, None)]
    bad = db.rows("SELECT line_number, column_name FROM filedrop.rejected_rows ORDER BY 1")
    assert bad[:4] == [(2, "day"), (3, "day"), (4, "day"), (5, "day")]


def test_format_is_refused_on_columns_that_are_not_dates() -> None:
    from filedrop.routes import RouteError

    with pytest.raises(RouteError, match="format applies to date, timestamp, timestamptz columns only"):
        parse_routes_yaml(DMY_ROUTE.replace("MODE", "append").replace(
            "{name: id, type: integer, nullable: false}", "{name: id, type: integer, nullable: false, format: x}"))
