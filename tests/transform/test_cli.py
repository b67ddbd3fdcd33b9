"""`filedrop run`, `filedrop transform` as a user runs them: analytics printed, docs written, exit codes,
and a deliberately broken staging row failing the data test that guards it."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from filedrop.cli import app
from tests.conftest import D2B, DB

#: Lines dbt prints on its own console; the CLI switches that output off and reports itself.
DBT_NOISE = ("Running with dbt=", "Registered adapter", "Concurrency:", "Finished running", "START sql")


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("FILEDROP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    for var in ("FILEDROP_WAREHOUSE_URL", "FILEDROP_DBT_TARGET", "FILEDROP_ANALYTICS_SCHEMA",
                "FILEDROP_STAGING_SCHEMA", "FILEDROP_IF_COMMON_SCHEMA", "FILEDROP_HOLIDAYS_COUNTRY"):
        monkeypatch.delenv(var, raising=False)
    return CliRunner()


def test_run_loads_then_transforms_and_prints_the_analytics(cli: CliRunner, warehouse: str, db: DB,
                                                             tmp_path: Path) -> None:
    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--as-of", "2022-09-05"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "3 loaded" in out and "as_of_date 2022-09-05" in out
    assert "dbt build:" in out and "0 failed" in out
    for table in ("analytics.agg_public_holiday", "analytics.agg_shipments", "analytics.best_performing_product"):
        assert table in out
    assert "Screwdriver" in out and "6586" in out and "175" in out and "18.99" in out
    docs = tmp_path / "home" / "docs" / "index.html"
    assert f"docs: {docs}" in out.replace("\n", "") and docs.is_file()
    assert not any(noise in out for noise in DBT_NOISE), out
    assert db.one("SELECT count(*) FROM analytics.agg_shipments") == 1


def test_no_transform_and_bad_options(cli: CliRunner, warehouse: str, db: DB) -> None:
    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--no-transform"])
    assert res.exit_code == 0, res.output
    assert "3 loaded" in res.output and "dbt" not in res.output
    assert db.one("SELECT count(*) FROM pg_namespace WHERE nspname = 'analytics'") == 0

    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--transform-schedule", "0 6 * * *"])
    assert res.exit_code == 2 and "--transform-schedule needs --watch" in res.output
    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--watch",
                           "--transform-schedule", "at six"])
    assert res.exit_code == 2 and "is not a cron expression" in res.output
    res = cli.invoke(app, ["transform", "--warehouse", warehouse, "--as-of", "2022-13-01"])
    assert res.exit_code == 2 and "--as-of must be a date YYYY-MM-DD" in res.output
    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--as-of", "yesterday"])
    assert res.exit_code == 2 and "--as-of must be a date" in res.output


def test_a_broken_staging_row_fails_its_test_and_the_transform(cli: CliRunner, warehouse: str, db: DB) -> None:
    res = cli.invoke(app, ["run", "--source", str(D2B), "--warehouse", warehouse, "--no-transform"])
    assert res.exit_code == 0, res.output
    lineage = "'x', 'broken.csv', 'x', 'x', 1, now()"
    db.execute(f"INSERT INTO staging.reviews VALUES (9, 23, {lineage})")                 # 9 stars
    db.execute(f"INSERT INTO staging.shipment_deliveries VALUES (99999, 424242, NULL, NULL, {lineage})")  # no order

    res = cli.invoke(app, ["transform", "--warehouse", warehouse, "--as-of", "2022-09-05"])
    assert res.exit_code == 1, res.output
    problems = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[2:-1]]
                for ln in res.output.splitlines() if ln.startswith("│")}
    failed = [k for k in problems if k.startswith("accepted_values_stg_reviews_review")]
    assert failed and problems[failed[0]][:2] == ["test", "fail"], res.output
    assert "1 failing row(s)" in problems[failed[0]][2]
    warned = [k for k in problems if k.startswith("relationships_stg_shipment_deliveries_order_id")]
    assert warned and problems[warned[0]][:2] == ["test", "warn"], res.output
    assert problems["best_performing_product"][:2] == ["model", "skipped"]  # built on a failed test: not built
    assert "dbt log:" in res.output
    assert not any(noise in res.output for noise in DBT_NOISE), res.output
    # what the failing test did not guard still got built
    assert db.one("SELECT tt_late_shipments FROM analytics.agg_shipments") == 175
    assert db.one("SELECT count(*) FROM pg_tables WHERE tablename = 'best_performing_product'") == 0
