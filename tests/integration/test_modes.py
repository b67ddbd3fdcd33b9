"""Each load mode on small hand-made files, with exact table contents; version ordering."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DB
from tests.support.loads import items_route, load, write

T0 = 1_700_000_000.0


def contents(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT id, name, qty, day::text, _source_key FROM staging.items "
                   "ORDER BY id, _source_key, _row_number")


def test_append_adds_every_file(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append")
    a = write(tmp_path / "items_a.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n2,pear,,2022-01-02\n")
    b = write(tmp_path / "items_b.csv", "id,name,qty,day\n1,apple,4,2022-01-03\n")
    assert load(warehouse, route, a).status == "loaded"
    assert load(warehouse, route, b).status == "loaded"
    assert contents(db) == [
        (1, "apple", 3, "2022-01-01", "items_a.csv"),
        (1, "apple", 4, "2022-01-03", "items_b.csv"),
        (2, "pear", None, "2022-01-02", "items_a.csv"),
    ]


def test_replace_source_replaces_rows_of_the_same_key_only(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("replace_source")
    a = write(tmp_path / "a" / "items_a.csv", "id,name,qty,day\n1,apple,3,\n2,pear,1,\n", mtime=T0)
    other = write(tmp_path / "a" / "items_other.csv", "id,name,qty,day\n9,fig,9,\n", mtime=T0)
    assert load(warehouse, route, a).status == "loaded"
    assert load(warehouse, route, other).status == "loaded"
    # a new version of items_a.csv replaces its rows and leaves items_other.csv's alone
    write(a, "id,name,qty,day\n3,plum,5,\n", mtime=T0 + 60)
    result = load(warehouse, route, a)
    assert result.status == "loaded", result.first_error
    assert contents(db) == [(3, "plum", 5, None, "items_a.csv"), (9, "fig", 9, None, "items_other.csv")]


def test_replace_table_keeps_only_the_latest_file(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("replace_table")
    assert load(warehouse, route,
                write(tmp_path / "items_1.csv", "id,name,qty,day\n1,a,1,\n2,b,2,\n")).status == "loaded"
    assert load(warehouse, route, write(tmp_path / "items_2.csv", "id,name,qty,day\n7,g,7,\n")).status == "loaded"
    assert contents(db) == [(7, "g", 7, None, "items_2.csv")]


def test_upsert_merges_on_the_key_and_the_last_row_in_a_file_wins(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("upsert")
    first = write(tmp_path / "items_1.csv", "id,name,qty,day\n1,apple,1,\n2,pear,2,\n1,apple,10,\n")
    r1 = load(warehouse, route, first)
    assert (r1.status, r1.rows_parsed) == ("loaded", 3)
    assert contents(db) == [(1, "apple", 10, None, "items_1.csv"), (2, "pear", 2, None, "items_1.csv")]
    second = write(tmp_path / "items_2.csv", "id,name,qty,day\n2,pear,20,2022-02-02\n3,plum,3,\n1,apple,10,\n")
    r2 = load(warehouse, route, second)
    assert r2.status == "loaded"
    assert r2.rows_changed == 2  # id 1 is unchanged: not rewritten
    assert contents(db) == [
        (1, "apple", 10, None, "items_1.csv"),
        (2, "pear", 20, "2022-02-02", "items_2.csv"),
        (3, "plum", 3, None, "items_2.csv"),
    ]


def test_same_content_again_is_skipped_duplicate(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append")
    path = write(tmp_path / "items.csv", "id,name,qty,day\n1,a,1,\n", mtime=T0)
    assert load(warehouse, route, path).status == "loaded"
    write(path, "id,name,qty,day\n1,a,1,\n", mtime=T0 + 10)  # touched, same bytes
    assert load(warehouse, route, path).status == "skipped_duplicate"
    assert db.one("SELECT count(*) FROM staging.items") == 1


@pytest.mark.parametrize("mode,expected", [
    ("append", [(1, "v1"), (1, "v2")]),
    ("replace_source", [(1, "v2")]),
    ("upsert", [(1, "v2")]),
])
def test_changed_object_under_the_same_key_follows_its_mode(warehouse: str, db: DB, tmp_path: Path,
                                                            mode: str, expected: list[tuple[int, str]]) -> None:
    route = items_route(mode)
    path = write(tmp_path / "items.csv", "id,name,qty,day\n1,v1,1,\n", mtime=T0)
    assert load(warehouse, route, path).status == "loaded"
    write(path, "id,name,qty,day\n1,v2,1,\n", mtime=T0 + 10)
    assert load(warehouse, route, path).status == "loaded"
    assert db.rows("SELECT id, name FROM staging.items ORDER BY name") == expected


def test_table_that_no_longer_fits_the_route_fails_that_file_only(warehouse: str, db: DB, tmp_path: Path) -> None:
    db.execute("CREATE SCHEMA staging; CREATE TABLE staging.items (id text, other int)")
    result = load(warehouse, items_route("append"), write(tmp_path / "items.csv", "id,name,qty,day\n1,a,1,\n"))
    assert result.status == "failed"
    assert "table staging.items exists but does not match FileRoute items: missing column(s) name" in result.first_error
    assert "id is text, route says integer" in result.first_error
    [h] = db.history()
    assert h["status"] == "failed" and "Migrate the table" in h["first_error"]
