"""Large loads in ``append``, ``replace_source`` and ``replace_table`` write each row once: the per-load
table becomes part of the staging table (an inheritance child, attached in the load's one transaction)
instead of being copied into it. The threshold (FILEDROP_ATTACH_MIN_BYTES) is 0 here, so tiny files take
that path; every outcome a user sees must be the one the copying path gives."""

from __future__ import annotations

import gzip
import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from filedrop.config import Settings
from filedrop.local.sample import SampleSpec, write_sample
from filedrop.routes import load_routes
from filedrop.warehouse import connect, history
from filedrop.warehouse.client import object_lock
from tests.conftest import DB
from tests.support.loads import items_route, load, route_variant, routes_file, write
from tests.support.servers import wait_until

T0 = 1_700_000_000.0


def attach_settings(url: str, **kw: object) -> Settings:
    return Settings(warehouse_url=url, attach_min_bytes=0, **kw)  # type: ignore[arg-type]


def contents(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT id, name, qty, day::text, _source_key, _row_number FROM staging.items "
                   "ORDER BY id, _source_key, _row_number")


def attached(db: DB) -> dict[str, int]:
    """The tables attached to staging.items, with their row counts."""
    names = [r[0] for r in db.rows("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                   "WHERE i.inhparent = 'staging.items'::regclass ORDER BY 1")]
    return {n: db.one(f'SELECT count(*) FROM staging."{n}"') for n in names}


def in_parent(db: DB) -> int:
    return db.one("SELECT count(*) FROM ONLY staging.items")


def test_a_large_append_writes_its_rows_once_and_reads_as_one_table(warehouse: str, db: DB, tmp_path: Path) -> None:
    route, settings = items_route("append"), attach_settings(warehouse)
    a = write(tmp_path / "items_a.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n2,pear,,2022-01-02\n")
    b = write(tmp_path / "items_b.csv", "id,name,qty,day\n1,apple,4,2022-01-03\n")
    ra, rb = load(warehouse, route, a, settings), load(warehouse, route, b, settings)
    assert (ra.status, ra.rows_loaded, rb.status, rb.rows_loaded) == ("loaded", 2, "loaded", 1)
    assert contents(db) == [
        (1, "apple", 3, "2022-01-01", "items_a.csv", 1),
        (1, "apple", 4, "2022-01-03", "items_b.csv", 1),
        (2, "pear", None, "2022-01-02", "items_a.csv", 2),
    ]
    # the rows were written once, into the load's own table, now part of staging.items
    assert in_parent(db) == 0
    assert attached(db) == {f"_load_{ra.load_id}": 2, f"_load_{rb.load_id}": 1}
    lineage = db.rows("SELECT DISTINCT _source_bucket, _source_etag, _load_id FROM staging.items "
                      "WHERE _source_key = 'items_a.csv'")
    assert lineage == [(str(tmp_path), ra.obj.etag, ra.load_id)]
    assert [h["status"] for h in db.history()] == ["loaded", "loaded"]
    assert db.leftover_tables() == []


def test_replace_source_drops_the_replaced_files_table(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("replace_source")
    a = write(tmp_path / "items_a.csv", "id,name,qty,day\n1,apple,3,\n2,pear,1,\n", mtime=T0)
    other = write(tmp_path / "items_other.csv", "id,name,qty,day\n9,fig,9,\n", mtime=T0)
    first = load(warehouse, route, a)  # the copying path: its rows live in the parent
    other_load = load(warehouse, route, other, attach_settings(warehouse))
    assert (first.status, other_load.status) == ("loaded", "loaded")
    write(a, "id,name,qty,day\n3,plum,5,\n", mtime=T0 + 60)
    second = load(warehouse, route, a, attach_settings(warehouse))
    assert second.status == "loaded", second.first_error
    assert contents(db) == [(3, "plum", 5, None, "items_a.csv", 1), (9, "fig", 9, None, "items_other.csv", 1)]
    assert in_parent(db) == 0  # the first version's rows, deleted from the parent
    write(a, "id,name,qty,day\n4,kiwi,6,\n5,lime,7,\n", mtime=T0 + 120)
    third = load(warehouse, route, a, attach_settings(warehouse))
    assert third.status == "loaded", third.first_error
    assert contents(db) == [(4, "kiwi", 6, None, "items_a.csv", 1), (5, "lime", 7, None, "items_a.csv", 2),
                            (9, "fig", 9, None, "items_other.csv", 1)]
    # the second version's table was dropped, not emptied row by row; the other file's is untouched
    assert attached(db) == {f"_load_{other_load.load_id}": 1, f"_load_{third.load_id}": 2}
    # a small version copies its rows; it still drops the table it replaces (no emptied table left behind)
    write(a, "id,name,qty,day\n6,date,8,\n", mtime=T0 + 180)
    assert load(warehouse, route, a).status == "loaded"
    assert attached(db) == {f"_load_{other_load.load_id}": 1}
    assert contents(db) == [(6, "date", 8, None, "items_a.csv", 1), (9, "fig", 9, None, "items_other.csv", 1)]


def test_replace_source_deletes_instead_of_waiting_for_a_reader_of_the_table_it_replaces(
        warehouse: str, db: DB, tmp_path: Path) -> None:
    route, settings = items_route("replace_source"), attach_settings(warehouse)
    a = write(tmp_path / "items_a.csv", "id,name,qty,day\n1,apple,3,\n", mtime=T0)
    first = load(warehouse, route, a, settings)
    with psycopg.connect(warehouse) as reader:  # a report reading the table, its transaction still open
        assert reader.execute("SELECT count(*) FROM staging.items").fetchone() == (1,)
        write(a, "id,name,qty,day\n2,pear,4,\n", mtime=T0 + 60)
        second = load(warehouse, route, a, settings)
        assert second.status == "loaded", second.first_error
        reader.rollback()
    assert contents(db) == [(2, "pear", 4, None, "items_a.csv", 1)]
    # the busy table was emptied instead of dropped; the next version drops it
    assert attached(db) == {f"_load_{first.load_id}": 0, f"_load_{second.load_id}": 1}
    write(a, "id,name,qty,day\n3,plum,5,\n", mtime=T0 + 120)
    third = load(warehouse, route, a, settings)
    assert third.status == "loaded", third.first_error
    assert attached(db) == {f"_load_{third.load_id}": 1}


def test_replace_table_keeps_only_the_latest_files_table(warehouse: str, db: DB, tmp_path: Path) -> None:
    route, settings = items_route("replace_table"), attach_settings(warehouse)
    assert load(warehouse, route, write(tmp_path / "items_0.csv", "id,name,qty,day\n5,e,5,\n")).status == "loaded"
    assert load(warehouse, route, write(tmp_path / "items_1.csv", "id,name,qty,day\n1,a,1,\n2,b,2,\n"),
                settings).status == "loaded"
    last = load(warehouse, route, write(tmp_path / "items_2.csv", "id,name,qty,day\n7,g,7,\n"), settings)
    assert last.status == "loaded"
    assert contents(db) == [(7, "g", 7, None, "items_2.csv", 1)]
    assert attached(db) == {f"_load_{last.load_id}": 1}
    assert load(warehouse, route, write(tmp_path / "items_3.csv", "id,name,qty,day\n8,h,8,\n")).status == "loaded"
    assert contents(db) == [(8, "h", 8, None, "items_3.csv", 1)]
    assert attached(db) == {}


def test_bad_rows_are_quarantined_and_the_good_ones_attached(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append")
    f = write(tmp_path / "items_bad.csv", "id,name,qty,day\n1,a,1,\n2,b,lots,\n3,c,3,2022-13-45\n4,d,4,\n")
    result = load(warehouse, route, f, attach_settings(warehouse))
    assert (result.status, result.rows_parsed, result.rows_loaded, result.rows_rejected) == ("loaded", 4, 2, 2)
    assert contents(db) == [(1, "a", 1, None, "items_bad.csv", 1), (4, "d", 4, None, "items_bad.csv", 4)]
    assert in_parent(db) == 0
    assert db.rows("SELECT line_number, column_name FROM filedrop.rejected_rows ORDER BY 1") == [
        (2, "qty"), (3, "day")]
    assert db.leftover_tables() == []


def test_a_failed_large_load_leaves_nothing_but_its_quarantined_rows(warehouse: str, db: DB, tmp_path: Path) -> None:
    route = items_route("append", max_bad=10)
    f = write(tmp_path / "items_bad.csv", "id,name,qty,day\n1,a,1,\n2,b,lots,\n")
    result = load(warehouse, route, f, attach_settings(warehouse))
    assert result.status == "failed" and "maxBadRowsPercent" in (result.first_error or "")
    assert db.one("SELECT count(*) FROM staging.items") == 0
    assert attached(db) == {}
    assert db.rows("SELECT line_number, column_name FROM filedrop.rejected_rows") == [(2, "qty")]
    assert db.leftover_tables() == []
    assert db.rows("SELECT relname FROM pg_class WHERE relname ~ '^_load_'") == []


@pytest.mark.parametrize("kind", ["primary key", "declared date format"])
def test_routes_whose_table_differs_from_the_load_table_keep_copying(warehouse: str, db: DB, tmp_path: Path,
                                                                      kind: str) -> None:
    route = (route_variant(items_route("append"), "items", primaryKey=["id"]) if kind == "primary key"
             else items_route("append", day_format="DD.MM.YYYY"))
    f = write(tmp_path / "items_a.csv", "id,name,qty,day\n1,apple,3,\n2,pear,1,\n")
    assert load(warehouse, route, f, attach_settings(warehouse)).status == "loaded"
    assert in_parent(db) == 2 and attached(db) == {}


def test_past_the_limit_of_attached_tables_loads_copy_into_the_parent(warehouse: str, db: DB, tmp_path: Path) -> None:
    route, settings = items_route("append"), attach_settings(warehouse, attach_max_tables=2)
    for i in range(3):
        assert load(warehouse, route, write(tmp_path / f"items_{i}.csv", f"id,name,qty,day\n{i},x,1,\n"),
                    settings).status == "loaded"
    assert len(attached(db)) == 2 and in_parent(db) == 1
    assert db.one("SELECT count(*) FROM staging.items") == 3


def test_staging_and_bookkeeping_in_one_schema_copy_instead(warehouse: str, db: DB, tmp_path: Path) -> None:
    # An attached table would stay in the bookkeeping schema, where dead-load cleanup drops load tables.
    settings = attach_settings(warehouse, staging_schema="filedrop", meta_schema="filedrop")
    result = load(warehouse, items_route("append"), write(tmp_path / "items_a.csv", "id,name,qty,day\n1,a,1,\n"),
                  settings)
    assert result.status == "loaded"
    with connect(warehouse) as conn:
        history.cleanup_dead_loads(conn, "filedrop")
    assert db.one("SELECT count(*) FROM filedrop.items") == 1


def test_a_staging_table_with_its_own_unique_index_is_copied_into(warehouse: str, db: DB, tmp_path: Path) -> None:
    # An attached table escapes the parent's unique index: a duplicate must fail the file, as when copying.
    route = items_route("append")
    assert load(warehouse, route, write(tmp_path / "items_a.csv", "id,name,qty,day\n1,a,1,\n")).status == "loaded"
    db.execute("CREATE UNIQUE INDEX items_id ON staging.items (id)")
    result = load(warehouse, route, write(tmp_path / "items_b.csv", "id,name,qty,day\n1,b,2,\n2,c,3,\n"),
                  attach_settings(warehouse))
    assert result.status == "failed" and "items_id" in (result.first_error or ""), result.first_error
    assert db.rows("SELECT id, name FROM staging.items") == [(1, "a")]
    assert attached(db) == {}


def test_a_table_that_cannot_be_attached_is_copied(warehouse: str, db: DB, tmp_path: Path) -> None:
    # A CHECK constraint added to the staging table: PostgreSQL refuses a child without it.
    route = items_route("append")
    assert load(warehouse, route, write(tmp_path / "items_a.csv", "id,name,qty,day\n1,a,1,\n")).status == "loaded"
    db.execute("ALTER TABLE staging.items ADD CONSTRAINT qty_positive CHECK (qty > 0)")
    result = load(warehouse, route, write(tmp_path / "items_b.csv", "id,name,qty,day\n2,b,2,\n3,c,3,\n"),
                  attach_settings(warehouse))
    assert result.status == "loaded", result.first_error
    assert in_parent(db) == 3 and attached(db) == {}
    assert db.rows("SELECT relname FROM pg_class WHERE relname ~ '^_(load|raw)_'") == []


def test_a_file_that_fails_half_way_through_its_tolerant_read_says_why(warehouse: str, db: DB,
                                                                      tmp_path: Path) -> None:
    # A quote inside an unquoted field sends the file to the tolerant reader, which meets the gzip's cut end.
    rows = "".join(f"{i},n{i},{i},\n" for i in range(2, 400_000))  # more than one read (1 MiB) before the cut
    whole = gzip.compress(("id,name,qty,day\n1,a\"b,1,\n" + rows).encode())
    f = write(tmp_path / "items_cut.csv.gz", whole[:len(whole) // 2])
    result = load(warehouse, items_route("append"), f, attach_settings(warehouse))
    assert result.status == "failed"
    assert "truncated gzip file" in (result.first_error or ""), result.first_error
    assert db.one("SELECT count(*) FROM staging.items") == 0
    assert db.rows("SELECT relname FROM pg_class WHERE relname ~ '^_(load|raw)_'") == []


def test_replace_table_and_readers_do_not_deadlock(warehouse: str, db: DB, tmp_path: Path) -> None:
    route, settings = items_route("replace_table"), attach_settings(warehouse)
    assert load(warehouse, route, write(tmp_path / "items_1.csv", "id,name,qty,day\n1,a,1,\n"),
                settings).status == "loaded"
    f = write(tmp_path / "items_2.csv", "id,name,qty,day\n2,b,2,\n")
    waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation IS NOT NULL"
    with psycopg.connect(warehouse) as first_reader, ThreadPoolExecutor(2) as pool:
        first_reader.execute("SELECT count(*) FROM staging.items").fetchone()  # holds the tables until it ends
        loading = pool.submit(load, warehouse, route, f, settings)
        wait_until(lambda: db.one(waiting) >= 1, 30, "the load to wait for the first reader")

        def read() -> int:
            with psycopg.connect(warehouse) as c:
                return c.execute("SELECT count(*) FROM staging.items").fetchone()[0]  # type: ignore[index]
        second = pool.submit(read)
        wait_until(lambda: db.one(waiting) >= 2 or second.done(), 30, "the second reader to queue")
        first_reader.rollback()
        result = loading.result(60)
        assert result.status == "loaded", result.first_error
        assert second.result(60) in (1, 2) and not isinstance(second.exception(), psycopg.Error)
    assert contents(db) == [(2, "b", 2, None, "items_2.csv", 1)]


def test_an_upsert_route_refuses_a_table_with_attached_loads(warehouse: str, db: DB, tmp_path: Path) -> None:
    # A primary key on the parent does not cover the attached tables' rows: an upsert would duplicate them.
    appended = load(warehouse, items_route("append"), write(tmp_path / "items_a.csv", "id,name,qty,day\n1,a,1,\n"),
                    attach_settings(warehouse))
    assert appended.status == "loaded"
    db.execute("ALTER TABLE staging.items ADD PRIMARY KEY (id)")
    result = load(warehouse, items_route("upsert"), write(tmp_path / "items_b.csv", "id,name,qty,day\n1,b,2,\n"))
    assert result.status == "failed"
    assert f"_load_{appended.load_id}" in (result.first_error or "")
    assert db.one("SELECT count(*) FROM staging.items") == 1
    # the fold the message points to (docs/operations.md), then the upsert merges into the one row
    db.execute(fold_sql().replace("staging.orders", "staging.items"))
    assert attached(db) == {} and in_parent(db) == 1
    again = load(warehouse, items_route("upsert"), tmp_path / "items_b.csv")
    assert again.status == "loaded", again.first_error
    assert db.rows("SELECT id, name, qty FROM staging.items") == [(1, "b", 2)]


def fold_sql() -> str:
    text = (Path(__file__).parents[2] / "docs" / "operations.md").read_text()
    section = text.split("## Attached load tables", 1)[1].split("\n## ", 1)[0]
    return section.split("```sql\n", 1)[1].split("```", 1)[0]


# --- faults ---------------------------------------------------------------------------------------------------------

ORDERS = 400_000


def _orders_append(tmp_path: Path) -> tuple[Path, Path]:
    [orders, _, _] = write_sample(tmp_path / "d", SampleSpec(orders=ORDERS, seed=11))
    [base] = [r for r in load_routes() if r.name == "orders"]
    return orders, routes_file(tmp_path / "routes.yaml", route_variant(base, "orders", mode="append", primaryKey=[]))


def _loader(orders: Path, routes: Path, url: str, home: Path) -> list[str]:
    return [sys.executable, "-m", "filedrop", "load", str(orders), "--routes", str(routes), "--route", "orders",
            "--warehouse", url]


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "FILEDROP_HOME": str(home), "FILEDROP_ATTACH_MIN_BYTES": "0"}


def test_killed_in_the_middle_of_an_attach_loads_copy(warehouse: str, db: DB, tmp_path: Path) -> None:
    orders, routes = _orders_append(tmp_path)
    cmd = _loader(orders, routes, warehouse, tmp_path / "home")
    proc = subprocess.Popen(cmd, env=_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: bool(db.rows("SELECT 1 FROM pg_stat_progress_copy WHERE tuples_processed > 20000"))
                   or proc.poll() is not None, 120, "a COPY in progress")
        assert proc.poll() is None, "the load finished before it could be killed"
        backend = db.one("SELECT pid FROM pg_stat_progress_copy")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    wait_until(lambda: not db.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)), 60,
               "the killed loader's backend to exit")
    assert db.one("SELECT count(*) FROM staging.orders") == 0
    assert db.rows("SELECT relname FROM pg_class WHERE relname ~ '^_load_'") == []  # rolled back with its load
    rerun = subprocess.run(cmd, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert db.one("SELECT count(*), count(DISTINCT order_id), max(_row_number) FROM staging.orders") == (
        ORDERS, ORDERS, ORDERS)
    assert db.one("SELECT count(*) FROM ONLY staging.orders") == 0
    assert sorted(h["status"] for h in db.history()) == ["failed", "loaded"]
    assert db.leftover_tables() == []


def test_killed_inside_an_attach_loads_final_transaction(warehouse: str, db: DB, tmp_path: Path) -> None:
    orders, routes = _orders_append(tmp_path)
    cmd = _loader(orders, routes, warehouse, tmp_path / "home")
    with psycopg.connect(warehouse, autocommit=True) as blocker:
        key = object_lock(str(orders.parent), orders.name)
        blocker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        proc = subprocess.Popen(cmd, env=_env(tmp_path / "home"), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        waiting = ("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = "
                   "'advisory' AND NOT l.granted AND a.application_name = 'filedrop'")
        wait_until(lambda: bool(db.rows(waiting)), 120, "the loader to wait inside its final transaction")
        backend = db.one(waiting)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        blocker.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    wait_until(lambda: not db.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)), 60,
               "the killed loader's backend to exit")
    assert db.one("SELECT count(*) FROM staging.orders") == 0
    rerun = subprocess.run(cmd, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert db.one("SELECT count(*), count(DISTINCT order_id) FROM staging.orders") == (ORDERS, ORDERS)
    assert sorted(h["status"] for h in db.history()) == ["failed", "loaded"]
    assert db.leftover_tables() == []
