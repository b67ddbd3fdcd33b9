"""The d2b files, loaded and transformed with as_of_date 2022-09-05: every number of the analytics
tables against an independent computation, the data tests, the contract, the docs site."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from filedrop.analytics import dims
from filedrop.analytics.dbt import connection_env, dbt_args, dbt_env, run_dbt
from tests.conftest import D2B, REPO
from tests.transform.conftest import AS_OF, Transformed
from tests.transform.expected import Day, analytics, read_csv

PROJECT = REPO / "filedrop" / "dbt_project"
TABLES = ["agg_public_holiday", "agg_shipments", "best_performing_product"]


def _calendar(t: Transformed) -> dict[date, Day]:
    return {d: Day(dow, working) for d, dow, working in t.db.rows(
        "SELECT calendar_dt, day_of_the_week_num, working_day FROM if_common.dim_dates")}


def _row(t: Transformed, table: str) -> dict[str, object]:
    with psycopg.connect(t.url) as conn, conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT * FROM analytics.{table}").fetchall()
    assert len(rows) == 1, rows
    return rows[0]


def test_build_runs_every_test_and_all_pass(d2b: Transformed) -> None:
    build, docs = d2b.report.steps
    assert build.success and docs.success, (build.error, [(n.name, n.status, n.message) for n in build.nodes])
    by_type: dict[str, list[str]] = {}
    for n in build.nodes:
        by_type.setdefault(n.resource_type, []).append(n.status)
    assert set(by_type["test"]) == {"pass"} and len(by_type["test"]) >= 45
    assert set(by_type["unit_test"]) == {"pass"} and len(by_type["unit_test"]) >= 5
    assert set(by_type["model"]) == {"success"} and len(by_type["model"]) == 11
    assert set(by_type["seed"]) == {"success"} and len(by_type["seed"]) == 3
    assert d2b.report.ok


def test_every_number_equals_an_independent_computation(d2b: Transformed) -> None:
    orders, reviews = read_csv(D2B / "orders.csv"), read_csv(D2B / "reviews.csv")
    shipments = read_csv(D2B / "shipment_deliveries.csv")
    expected = analytics(orders, reviews, shipments, _calendar(d2b), AS_OF, AS_OF)
    products = {int(p["product_id"]): p["product_name"] for p in read_csv(PROJECT / "seeds/if_common/dim_products.csv")}

    assert _row(d2b, "agg_public_holiday") == expected["agg_public_holiday"]
    assert _row(d2b, "agg_shipments") == expected["agg_shipments"]
    best = dict(expected["best_performing_product"])
    best["product_name"] = products[best.pop("product_id")]
    assert _row(d2b, "best_performing_product") == best

    # the figures DESIGN §6 quotes for these files
    assert expected["agg_shipments"] == {"ingestion_date": AS_OF, "tt_late_shipments": 175,
                                         "tt_undelivered_items": 6586}
    assert (best["product_name"], best["most_ordered_day"], best["is_public_holiday"], best["tt_review_points"]) == (
        "Screwdriver", date(2022, 3, 6), False, 940)
    assert [best[f"pct_{s}_star_review"] for s in ("one", "two", "three", "four", "five")] == [
        Decimal("18.67"), Decimal("23.42"), Decimal("18.67"), Decimal("20.25"), Decimal("18.99")]
    # and what the transform printed is what the tables hold
    printed = {t.name: dict(zip(t.columns, t.rows[0], strict=True)) for t in d2b.report.tables}
    assert printed["agg_shipments"] == expected["agg_shipments"]
    assert printed["best_performing_product"]["product_name"] == "Screwdriver"


def test_dim_dates_is_generated_from_the_holidays_package(d2b: Transformed) -> None:
    rows = d2b.db.rows("SELECT calendar_dt::text, year_num, month_of_the_year_num, day_of_the_month_num, "
                       "day_of_the_week_num, working_day::text FROM if_common.dim_dates ORDER BY 1")
    assert rows == [d.as_row() for d in dims.calendar("NG")]
    assert (rows[0][0], rows[-1][0], len(rows)) == ("2015-01-01", "2030-12-31", 5844)
    cal = _calendar(d2b)
    assert cal[date(2022, 1, 3)] == Day(1, False)        # New Year's Day observed: a Monday off
    assert cal[date(2022, 1, 3)].is_public_holiday
    assert cal[date(2022, 3, 6)] == Day(7, False)        # a Sunday: not a working day, not a public holiday
    assert not cal[date(2022, 3, 6)].is_public_holiday
    assert cal[date(2022, 3, 7)] == Day(1, True)


def test_analytics_tables_have_the_contracted_columns_and_key(d2b: Transformed) -> None:
    cols = d2b.db.rows("""SELECT table_name, column_name, data_type, numeric_precision, numeric_scale, is_nullable
                          FROM information_schema.columns WHERE table_schema = 'analytics'
                          AND table_name = ANY(%s) ORDER BY table_name, ordinal_position""", (TABLES,))
    got: dict[str, list[tuple[str, str]]] = {}
    for table, col, typ, prec, scale, nullable in cols:
        typ = f"numeric({prec},{scale})" if typ == "numeric" else typ
        got.setdefault(table, []).append((col, typ + ("" if nullable == "YES" else " not null")))
    months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    assert got["agg_public_holiday"] == [("ingestion_date", "date not null")] + [
        (f"tt_order_hol_{m}", "integer not null") for m in months]
    assert got["agg_shipments"] == [("ingestion_date", "date not null"), ("tt_late_shipments", "integer not null"),
                                    ("tt_undelivered_items", "integer not null")]
    assert got["best_performing_product"] == [
        ("ingestion_date", "date not null"), ("product_name", "text not null"), ("most_ordered_day", "date"),
        ("is_public_holiday", "boolean"), ("tt_review_points", "integer not null")] + [
        (f"pct_{s}_star_review", "numeric(5,2) not null") for s in ("one", "two", "three", "four", "five")] + [
        ("pct_early_shipments", "numeric(5,2)"), ("pct_late_shipments", "numeric(5,2)")]
    keys = d2b.db.rows("""SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
                          JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
                          WHERE tc.table_schema = 'analytics' AND tc.constraint_type = 'PRIMARY KEY'
                          ORDER BY 1""")
    assert keys == [(t, "ingestion_date") for t in TABLES]


def test_docs_site_is_generated_and_lists_every_model(d2b: Transformed) -> None:
    site = d2b.report.docs
    assert site == d2b.settings.home / "docs" / "index.html" and site.is_file()
    html = site.read_text()
    models = sorted(p.stem for p in (PROJECT / "models").rglob("*.sql"))
    assert len(models) == 11
    for name in models:
        assert f'"model.filedrop.{name}"' in html, name
    for seed in ("dim_products", "dim_customers", "dim_addresses"):
        assert f'"seed.filedrop.{seed}"' in html
    for source in ("staging.orders", "staging.reviews", "staging.shipment_deliveries", "if_common.dim_dates"):
        assert f'"source.filedrop.{source}"' in html, source
    # the site opens on this project's overview (routes -> staging -> marts, where loads are recorded), not on
    # dbt's generic welcome page
    manifest = json.loads((d2b.cfg.target_path / "manifest.json").read_text())
    [overview] = [d["block_contents"] for d in manifest["docs"].values()
                  if d["name"] == "__overview__" and d["package_name"] == "filedrop"]
    for text in ("FileRoute", "filedrop.ingest_history", "filedrop.rejected_rows", "agg_shipments"):
        assert text in overview, text
    assert "filedrop.ingest_history" in html


def test_every_model_and_column_is_described_with_its_grain(d2b: Transformed) -> None:
    manifest = json.loads((d2b.cfg.target_path / "manifest.json").read_text())
    catalog = json.loads((d2b.cfg.target_path / "catalog.json").read_text())
    nodes = {k: v for k, v in manifest["nodes"].items() if v["resource_type"] in ("model", "seed")}
    assert len(nodes) == 14
    for uid, node in nodes.items():
        assert node["description"].strip(), uid
        if node["resource_type"] == "model":
            assert "one row per" in node["description"].lower(), uid
        built = catalog["nodes"][uid]["columns"]  # every column the relation has is documented
        assert set(built) == set(node["columns"]), uid
        for col, spec in node["columns"].items():
            assert spec["description"].strip(), f"{uid}.{col}"
    for uid, source in manifest["sources"].items():
        assert source["description"].strip(), uid


def test_source_freshness_is_checked_on_loaded_at(d2b: Transformed) -> None:
    env = {**connection_env(d2b.url), **dbt_env(d2b.cfg)}
    step = run_dbt(dbt_args(["source", "freshness"], d2b.cfg), env)
    assert step.success, step.error
    assert sorted((n.name, n.status) for n in step.nodes) == [
        ("orders", "pass"), ("reviews", "pass"), ("shipment_deliveries", "pass")]
    sources = json.loads((d2b.cfg.target_path / "sources.json").read_text())
    assert {r["unique_id"].rsplit(".", 1)[1] for r in sources["results"]} == {"orders", "reviews",
                                                                               "shipment_deliveries"}


def test_staging_tables_with_attached_loads_have_statistics_over_them(d2b: Transformed) -> None:
    # Autovacuum never analyzes a parent over its children: the run's on-run-start hook does.
    attached = d2b.db.rows("SELECT DISTINCT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhparent")
    assert attached == [("reviews",)]
    assert d2b.db.one("SELECT count(*) FROM pg_stats WHERE schemaname = 'staging' AND tablename = 'reviews' "
                      "AND inherited AND attname = 'product_id'") == 1


def test_dbt_leaves_nothing_in_the_repository(d2b: Transformed) -> None:
    assert d2b.report.steps
    for leftover in ("target", "logs", ".user.yml", "dbt_packages", "package-lock.yml"):
        assert not (PROJECT / leftover).exists(), leftover
    assert (d2b.cfg.target_path / "manifest.json").is_file()
    assert (d2b.cfg.log_path / "dbt.log").is_file()
    assert isinstance(d2b.cfg.project_dir, Path) and d2b.cfg.project_dir.resolve() == PROJECT.resolve()
