"""The real d2b files through `filedrop run`: exact counts, lineage, history, exactly once."""

from __future__ import annotations

import hashlib

from filedrop.config import Settings
from filedrop.local.pipeline import run_once
from filedrop.routes import load_routes
from tests.conftest import D2B, DB


def test_real_files_load_once_with_lineage(warehouse: str, db: DB) -> None:
    settings = Settings(warehouse_url=warehouse)
    report = run_once(warehouse, settings, load_routes(), str(D2B))

    assert report.ok, [r.first_error for r in report.failed]
    assert {r.obj.key: (r.status, r.rows_loaded) for r in report.results} == {
        "orders.csv": ("loaded", 10000),
        "reviews.csv": ("loaded", 7236),
        "shipment_deliveries.csv": ("loaded", 10000),
    }
    assert report.unmatched == [str(D2B / "SOURCE.md")]
    assert db.one("SELECT count(*) FROM staging.orders") == 10000
    assert db.one("SELECT count(*) FROM staging.reviews") == 7236
    assert db.one("SELECT count(*) FROM staging.shipment_deliveries") == 10000

    # lineage: key, etag (content MD5), load id, 1-based record index, load time
    md5 = hashlib.md5((D2B / "orders.csv").read_bytes()).hexdigest()
    assert db.one("SELECT count(*) FROM staging.orders WHERE _source_key = 'orders.csv' "
                  "AND _source_etag = %s AND _load_id IS NOT NULL AND _loaded_at IS NOT NULL", (md5,)) == 10000
    assert db.one("SELECT min(_row_number), max(_row_number), count(DISTINCT _row_number) "
                  "FROM staging.reviews") == (1, 7236, 7236)
    # the last row of orders.csv (no final newline) is there, typed
    last = (D2B / "orders.csv").read_text().rsplit("\n", 1)[1].split(",")
    assert db.one("SELECT order_id, order_date::text, total_price FROM staging.orders WHERE _row_number = 10000") == (
        int(last[0]), last[2], int(last[6]))
    assert db.one("SELECT count(*) FROM staging.shipment_deliveries WHERE delivery_date IS NULL") > 0

    loaded = [h for h in db.history() if h["status"] == "loaded"]
    assert sorted((h["key"], h["rows_parsed"], h["rows_loaded"], h["rows_rejected"]) for h in loaded) == [
        ("orders.csv", 10000, 10000, 0), ("reviews.csv", 7236, 7236, 0), ("shipment_deliveries.csv", 10000, 10000, 0)]
    assert all(h["etag"] and h["size_bytes"] > 0 and h["finished_at"] for h in loaded)

    again = run_once(warehouse, settings, load_routes(), str(D2B))
    assert [r.status for r in again.results] == ["skipped_duplicate"] * 3
    assert db.one("SELECT count(*) FROM staging.orders") == 10000
    assert db.one("SELECT count(*) FROM staging.reviews") == 7236
    statuses = sorted(h["status"] for h in db.history())
    assert statuses == ["loaded"] * 3 + ["skipped_duplicate"] * 3
    assert db.leftover_tables() == []
