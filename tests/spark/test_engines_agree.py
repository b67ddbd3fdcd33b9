"""The same files through the direct and the Spark engine give identical staging rows (lineage
``_row_number`` included), identical quarantined rows and equivalent history (DESIGN §3 "Engines")."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import pytest

from filedrop.local.sample import SampleSpec, write_sample
from filedrop.routes import load_routes, route_named
from tests.conftest import D2B, DB
from tests.spark.conftest import DIRECT, SPARK, assert_same, load_both, split_bytes, staged
from tests.support.loads import items_route, write

HEADER = "id,name,qty,day\n"


@pytest.mark.parametrize("name,route", [("orders.csv", "orders"), ("reviews.csv", "reviews"),
                                        ("shipment_deliveries.csv", "shipment-deliveries")])
def test_real_d2b_files(spark: Any, warehouse: str, db: DB, name: str, route: str) -> None:
    r = route_named(load_routes(), route)
    with split_bytes(spark, 64 << 10):  # several splits even for these small files
        both = load_both(warehouse, r, str(D2B / name))
    assert both.spark.status == "loaded", both.spark.first_error
    assert_same(db, r, both)
    expected = {"orders.csv": 10000, "reviews.csv": 7236, "shipment_deliveries.csv": 10000}[name]
    assert db.one(f'SELECT count(*), min(_row_number), max(_row_number) FROM stg_spark."{r.spec.table}"') == (
        expected, 1, expected)


@pytest.mark.parametrize("compressed", [False, True], ids=["csv", "gzip"])
def test_generated_orders_file(spark: Any, warehouse: str, db: DB, tmp_path: Path, compressed: bool) -> None:
    [orders, _, _] = write_sample(tmp_path, SampleSpec(orders=150_000, seed=11, gzip=compressed))
    r = route_named(load_routes(), "orders")
    with split_bytes(spark, 1 << 20):
        both = load_both(warehouse, r, str(orders))
    assert both.spark.status == "loaded", both.spark.first_error
    assert both.spark.rows_loaded == 150_000
    assert_same(db, r, both)


BAD = (HEADER
       + '1,"apple, green",1,2022-01-01\n'
       + "2,b,two,2022-01-02\n"                    # not an integer
       + '3,"three\nlines\nhere",3,\n'              # quoted newlines
       + "4,d,4,2022-13-45\n"                      # not a date
       + "5,e,5\n"                                 # a column short
       + ",f,6,2022-01-06\n"                       # key missing
       + '7,"say ""hi""",7,2022-01-07\n'
       + "8,caf\xe9,8,\n"                           # replaced below by a latin-1 byte
       + "9,i,99999999999,\n"                      # out of range
       + "".join(f'{i},"n\n{i}",{i},2022-02-{1 + i % 28:02d}\n' for i in range(10, 400)))


@pytest.mark.parametrize("split", [64, 4096], ids=["tiny-splits", "small-splits"])
def test_file_with_bad_rows(spark: Any, warehouse: str, db: DB, tmp_path: Path, split: int) -> None:
    path = write(tmp_path / "items_bad.csv", BAD.encode("utf-8").replace("caf\xe9".encode(), b"caf\xe9"))
    route = items_route("append", max_bad=50)
    with split_bytes(spark, split):
        both = load_both(warehouse, route, str(path))
    assert both.direct.status == "loaded" and both.direct.rows_rejected == 6, both.direct
    assert_same(db, route, both)


def _spark_path(caplog: pytest.LogCaptureFixture) -> str:
    return " | ".join(r.getMessage() for r in caplog.records if r.name == "filedrop.spark.engine")


def test_lines_as_records_are_read_once(spark: Any, warehouse: str, db: DB, tmp_path: Path,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """No quoted field runs over a line end: no planning pass; the blocks' own numbers become the file's."""
    body = HEADER + "".join(f'{i},"n ""{i}"", x",{i},\n' for i in range(1, 3000))
    route = items_route("append")
    caplog.set_level("INFO", logger="filedrop.spark.engine")
    with split_bytes(spark, 4096):
        both = load_both(warehouse, route, str(write(tmp_path / "items_lines.csv", body)))
    assert both.spark.status == "loaded" and both.spark.rows_loaded == 2999, both.spark.first_error
    assert "one pass" in _spark_path(caplog) and "planned" not in _spark_path(caplog), _spark_path(caplog)
    assert_same(db, route, both)
    assert db.one("SELECT min(_row_number), max(_row_number), count(DISTINCT _row_number) FROM stg_spark.items") == (
        1, 2999, 2999)


def test_a_quoted_line_end_past_the_first_bytes_is_planned(spark: Any, warehouse: str, db: DB, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The head looks like one line per record; a record far into the file spans lines: the one-pass
    read is thrown away and the file is planned, with the same rows as the direct engine."""
    rows = [f"{i},name {i},{i},\n" for i in range(1, 60_000)]
    rows[55_000] = '55001,"two\nlines",55001,\n'
    body = HEADER + "".join(rows)
    assert body.index("two\nlines") > 1 << 20  # past the bytes the driver reads first
    route = items_route("append")
    caplog.set_level("INFO", logger="filedrop.spark.engine")
    with split_bytes(spark, 256 << 10):
        both = load_both(warehouse, route, str(write(tmp_path / "items_late.csv", body)))
    assert both.spark.status == "loaded" and both.spark.rows_loaded == 59_999, both.spark.first_error
    messages = _spark_path(caplog)
    assert "a quoted field runs over a line end in the block at byte" in messages, messages
    assert "planned)" in messages, messages
    assert_same(db, route, both)
    assert db.one("SELECT name FROM stg_spark.items WHERE _row_number = 55001") == "two\nlines"


def test_a_gzip_file_is_read_once_quoted_line_ends_and_all(spark: Any, warehouse: str, db: DB, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A .gz file is one split, whose records start where it does: one read, no planning, even with
    quoted fields over line ends."""
    body = HEADER + "".join(f'{i},"line {i}\nmore ""{i}""",{i},\n' for i in range(1, 2000))
    route = items_route("append")
    caplog.set_level("INFO", logger="filedrop.spark.engine")
    both = load_both(warehouse, route, str(write(tmp_path / "items_multi.csv.gz", gzip.compress(body.encode()))))
    assert both.spark.status == "loaded" and both.spark.rows_loaded == 1999, both.spark.first_error
    assert "one pass" in _spark_path(caplog) and "planned" not in _spark_path(caplog), _spark_path(caplog)
    assert_same(db, route, both)


GOOD_VARIANTS = {
    "quoted-newlines": HEADER + "".join(f'{i},"line {i}\nmore ""{i}""\n",{i},2022-03-{1 + i % 28:02d}\n'
                                       for i in range(1, 300)),
    "crlf": HEADER.replace("\n", "\r\n") + "".join(f"{i},n{i},{i},\r\n" for i in range(1, 300)),
    "no-final-newline": HEADER + "".join(f"{i},n{i},{i},\n" for i in range(1, 300)).rstrip("\n"),
    "bom-reordered": "\ufeffday,qty,name,id\n" + "".join(f",{i},n{i},{i}\n" for i in range(1, 300)),
    "header-only": HEADER,
}


@pytest.mark.parametrize("name", sorted(GOOD_VARIANTS))
def test_well_formed_variants(spark: Any, warehouse: str, db: DB, tmp_path: Path, name: str) -> None:
    path = write(tmp_path / f"items_{name}.csv", GOOD_VARIANTS[name])
    route = items_route("append")
    with split_bytes(spark, 200):  # records (and quoted newlines) cross split boundaries
        both = load_both(warehouse, route, str(path))
    assert both.spark.status == "loaded", both.spark.first_error
    assert both.spark.rows_rejected == 0
    assert_same(db, route, both)


@pytest.mark.parametrize("name,content", [
    ("gzip-named-csv", gzip.compress((HEADER + "1,a,1,\n2,b,x,\n3,c,3,\n").encode())),  # gzip by magic bytes
    ("truncated.csv.gz", gzip.compress((HEADER + "".join(f"{i},n{i},{i},\n" for i in range(1, 5000))).encode())[:3000]),
    ("empty", b""),
    ("wrong-header", b"id,name,colour,day\n1,a,red,\n"),
    ("mac", (HEADER + "1,a,1,\n2,b,2,\n").replace("\n", "\r").encode()),
])
def test_odd_files(spark: Any, warehouse: str, db: DB, tmp_path: Path, name: str, content: bytes) -> None:
    path = write(tmp_path / f"items_{name}", content)
    route = items_route("append")
    both = load_both(warehouse, route, str(path))
    assert_same(db, route, both)


#: DESIGN §3 "Parsing rules": inputs RFC 4180 reads one way and PostgreSQL's CSV mode another, or that
#: depend on the path; both engines must give the same rows, rejects and history for each.
PARSING_CASES = {
    "quoted-empty-vs-null": HEADER + "".join(f'{i},"",{i},\n{i + 1000},,{i},\n' for i in range(1, 200)),
    "quoted-empty-tolerant": HEADER + "".join(f'{i},"",{i},\n' for i in range(1, 200)) + "9999,x,bad,\n",
    "quote-in-unquoted-field": HEADER + "".join(f"{i},5'{i % 9}\",{i},\n" if i % 37 == 0 else f"{i},n{i},{i},\n"
                                                for i in range(1, 400)),
    "text-after-closing-quote": HEADER + "".join(f'{i},"q"{i},{i},\n' if i % 53 == 0 else f'{i},"n{i}",{i},\n'
                                                 for i in range(1, 400)),
    "backslash-dot-line": HEADER.replace("id,name,qty,day", "name,id,qty,day")
    + "".join("\\.\n" if i == 150 else f"n{i},{i},{i},\n" for i in range(1, 300)),
    "ambiguous-dates": HEADER + "".join(f"{i},n{i},{i},{'03/04/22' if i % 41 == 0 else '2022-04-03'}\n"
                                        for i in range(1, 300)),
}


@pytest.mark.parametrize("name", sorted(PARSING_CASES))
def test_parsing_rules_agree(spark: Any, warehouse: str, db: DB, tmp_path: Path, name: str) -> None:
    path = write(tmp_path / f"items_{name}.csv", PARSING_CASES[name])
    route = items_route("append", max_bad=100)
    with split_bytes(spark, 256):  # many blocks: the check runs in every one of them
        both = load_both(warehouse, route, str(path))
    assert both.direct.status == "loaded", both.direct.first_error
    assert_same(db, route, both)


def test_declared_date_formats_agree(spark: Any, warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", max_bad=100, day_format="DD/MM/YYYY")
    body = HEADER + "".join(f"{i},n{i},{i},{'3/4/2022' if i % 61 == 0 else f'{1 + i % 28:02d}/04/2022'}\n"
                            for i in range(1, 400))
    with split_bytes(spark, 256):
        both = load_both(warehouse, route, str(write(tmp_path / "items_dmy.csv", body)))
    assert (both.direct.status, both.direct.rows_rejected) == ("loaded", 6), both.direct.first_error
    assert_same(db, route, both)


def test_replace_and_upsert_modes_agree(spark: Any, warehouse: str, db: DB, tmp_path: Path) -> None:
    """Duplicate keys in one file: the last record wins, by _row_number, in both engines."""
    route = items_route("upsert")
    body = HEADER + "".join(f"{i % 50},n{i},{i},\n" for i in range(1, 400))
    with split_bytes(spark, 512):
        both = load_both(warehouse, route, str(write(tmp_path / "items_dup.csv", body)))
    assert both.spark.status == "loaded"
    assert_same(db, route, both)
    assert len(staged(db, SPARK, route)) == 50
    assert db.one("SELECT max(_row_number) FROM stg_spark.items") == 399


def test_local_uri_forms(spark: Any, warehouse: str, db: DB, tmp_path: Path) -> None:
    """A local file given as file:// loads the same as by path; its key is the path, not the URI."""
    src = write(tmp_path / "a b" / "items_1.csv", HEADER + "1,a,1,\n2,b,2,\n")
    route = items_route("append")
    both = load_both(warehouse, route, "file://" + str(src))
    assert both.spark.status == "loaded" and both.spark.rows_loaded == 2
    assert_same(db, route, both)
    assert {r[-3] for r in staged(db, DIRECT, route)} == {"items_1.csv"}
