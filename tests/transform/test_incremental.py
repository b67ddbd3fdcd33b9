"""One analytics row per ingestion_date across runs, upserted staging rows flowing into the next run,
configurable schema names (the brief's `{id}_staging` / `{id}_analytics`), and a production run that
only reads if_common."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from filedrop.analytics.transform import transform
from filedrop.config import Settings
from tests.conftest import D2B, DB
from tests.transform.conftest import AS_OF, load_dir, make_config
from tests.transform.expected import Day, analytics, latest_by_key, read_csv

TABLES = ["agg_public_holiday", "agg_shipments", "best_performing_product"]
STAGING, ANALYTICS, COMMON = "abc123_staging", "abc123_analytics", "abc123_common"


def _rows(url: str, table: str) -> list[dict[str, Any]]:
    with psycopg.connect(url) as conn, conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(f"SELECT * FROM {ANALYTICS}.{table} ORDER BY ingestion_date").fetchall()


def _expected(orders: list[dict[str, str]], reviews: list[dict[str, str]], shipments: list[dict[str, str]],
              db: DB, ingestion_date: date, products: dict[int, str]) -> dict[str, dict[str, Any]]:
    calendar = {d: Day(dow, w) for d, dow, w in db.rows(
        f"SELECT calendar_dt, day_of_the_week_num, working_day FROM {COMMON}.dim_dates")}
    out = analytics(orders, reviews, shipments, calendar, AS_OF, ingestion_date)
    best = out["best_performing_product"]
    best["product_name"] = products[best.pop("product_id")]
    return out


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        fh.write(",".join(rows[0]) + "\n")
        for r in rows:
            fh.write(",".join(r.values()) + "\n")


def test_one_row_per_ingestion_date_and_upserts_reach_the_next_run(warehouse: str, db: DB, tmp_path: Path) -> None:
    settings = Settings(warehouse_url=warehouse, home=tmp_path / "home", staging_schema=STAGING)
    cfg = make_config(settings, analytics_schema=ANALYTICS, if_common_schema=COMMON)
    load_dir(warehouse, settings, D2B)
    orders, reviews = read_csv(D2B / "orders.csv"), read_csv(D2B / "reviews.csv")
    shipments = read_csv(D2B / "shipment_deliveries.csv")

    # first run: one row per table, in the configured schemas
    first = transform(warehouse, settings, as_of=AS_OF, ingestion_date=AS_OF, cfg=cfg, docs=False)
    assert first.ok, [(n.name, n.status, n.message) for s in first.steps for n in s.nodes if n.status != "pass"]
    products = dict(db.rows(f"SELECT product_id, product_name FROM {COMMON}.dim_products"))
    day1 = _expected(orders, reviews, shipments, db, AS_OF, products)
    for table in TABLES:
        assert _rows(warehouse, table) == [day1[table]], table
    assert db.one("SELECT count(*) FROM pg_namespace WHERE nspname IN ('analytics', 'staging')") == 0

    # a rerun on the same ingestion_date replaces that day's row
    again = transform(warehouse, settings, as_of=AS_OF, ingestion_date=AS_OF, cfg=cfg, docs=False)
    assert again.ok
    for table in TABLES:
        assert _rows(warehouse, table) == [day1[table]], table

    # upserted staging rows: some late shipments get delivered, some orders move to a public holiday
    late = [s for s in shipments if s["shipment_date"] and not s["delivery_date"]
            and date.fromisoformat(s["shipment_date"]) >= date.fromisoformat(
                next(o for o in orders if o["order_id"] == s["order_id"])["order_date"]) + timedelta(days=6)]
    delivered = [{**s, "delivery_date": (date.fromisoformat(s["shipment_date"]) + timedelta(days=2)).isoformat()}
                 for s in late[:40]]
    holiday = db.one(f"SELECT min(calendar_dt)::text FROM {COMMON}.dim_dates WHERE calendar_dt > '2021-09-05' "
                     "AND day_of_the_week_num <= 5 AND NOT working_day AND extract(month FROM calendar_dt) = 10")
    moved = [{**o, "order_date": holiday} for o in orders if o["product_id"] == "7"][:30]
    drop = tmp_path / "drop2"
    _write_csv(drop / "orders_2022-09-06.csv", moved)
    _write_csv(drop / "shipment_deliveries_2022-09-06.csv", delivered)
    load_dir(warehouse, settings, drop)
    assert db.one(f"SELECT count(*) FROM {STAGING}.orders WHERE order_date = %s", (holiday,)) >= 30

    day2_date = AS_OF + timedelta(days=1)
    second = transform(warehouse, settings, as_of=AS_OF, ingestion_date=day2_date, cfg=cfg, docs=False)
    assert second.ok
    orders2 = latest_by_key(orders, moved, key="order_id")
    shipments2 = latest_by_key(shipments, delivered, key="shipment_id")
    day2 = _expected(orders2, reviews, shipments2, db, day2_date, products)
    for table in TABLES:
        assert _rows(warehouse, table) == [day1[table], day2[table]], table
    assert day2["agg_shipments"]["tt_late_shipments"] < day1["agg_shipments"]["tt_late_shipments"]
    assert day2["agg_public_holiday"]["tt_order_hol_oct"] > day1["agg_public_holiday"]["tt_order_hol_oct"]

    # production: if_common exists and is only read: no seeds, no dim_dates generation, no changes
    db.execute(f"UPDATE {COMMON}.dim_products SET product_name = 'Screwdriver (prod catalogue)' "
               "WHERE product_id = 23")
    db.execute(f"DELETE FROM {COMMON}.dim_dates WHERE calendar_dt > '2029-12-31'")  # prod's calendar is shorter
    before = _fingerprint(db)
    prod = make_config(settings, target="prod", analytics_schema=ANALYTICS, if_common_schema=COMMON)
    day3_date = AS_OF + timedelta(days=2)
    third = transform(warehouse, settings, as_of=AS_OF, ingestion_date=day3_date, cfg=prod, docs=False)
    assert third.ok, [(n.name, n.status, n.message) for s in third.steps for n in s.nodes if n.failed]
    assert third.dim_dates is None
    assert not [n for n in third.steps[0].nodes if n.resource_type == "seed"]
    assert _fingerprint(db) == before
    assert _rows(warehouse, "best_performing_product")[-1]["product_name"] == "Screwdriver (prod catalogue)"
    assert [r["ingestion_date"] for r in _rows(warehouse, "agg_shipments")] == [AS_OF, day2_date, day3_date]


def _fingerprint(db: DB) -> list[tuple[str, str]]:
    """A digest of every if_common table's content and definition."""
    tables = [r[0] for r in db.rows("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (COMMON,))]
    assert tables == ["dim_addresses", "dim_customers", "dim_dates", "dim_products"]
    out = []
    for t in tables:
        digest = db.one(f"SELECT md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {COMMON}.{t} x")
        ddl = db.one("SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' ORDER BY attnum) "
                     "FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0", (f"{COMMON}.{t}",))
        out.append((digest, ddl))
    return out
