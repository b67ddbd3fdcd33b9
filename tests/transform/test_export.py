"""`filedrop export` against moto's S3 server: one CSV with a header per analytics table under
analytics_export/<id>/, contents equal to the tables, earlier exports replaced, big tables streamed."""

from __future__ import annotations

import csv
import io
import tracemalloc
from pathlib import Path

import boto3
import pytest
from typer.testing import CliRunner

from filedrop.analytics.export import ExportError, export, export_id, export_prefix
from filedrop.cli import app
from tests.conftest import DB
from tests.transform.conftest import Transformed

TABLES = ["agg_public_holiday", "agg_shipments", "best_performing_product"]


def _s3():  # type: ignore[no-untyped-def]
    return boto3.client("s3")


def _csv(bucket: str, key: str) -> list[list[str]]:
    body = _s3().get_object(Bucket=bucket, Key=key)["Body"].read().decode()
    return list(csv.reader(io.StringIO(body)))


def _keys(bucket: str, prefix: str = "") -> list[str]:
    return sorted(o["Key"] for o in _s3().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", []))


def test_export_writes_each_table_with_header_and_replaces_earlier_exports(
        d2b: Transformed, aws: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = "exports-" + d2b.url.rsplit("/", 1)[1].replace("_", "-")
    _s3().create_bucket(Bucket=bucket)
    base = "daily/analytics_export/analytics/"
    # an earlier export of a table that no longer exists, and a file that is not an export
    _s3().put_object(Bucket=bucket, Key=base + "old_table.csv", Body=b"x\n1\n")
    _s3().put_object(Bucket=bucket, Key=base + "README.txt", Body=b"kept")
    monkeypatch.setenv("FILEDROP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FILEDROP_EXPORT_ID", raising=False)
    monkeypatch.delenv("FILEDROP_ANALYTICS_SCHEMA", raising=False)

    res = CliRunner().invoke(app, ["export", "--to", f"s3://{bucket}/daily/", "--warehouse", d2b.url])
    assert res.exit_code == 0, res.output
    assert f"removed s3://{bucket}/{base}old_table.csv" in res.output
    assert _keys(bucket) == sorted([base + "README.txt"] + [f"{base}{t}.csv" for t in TABLES])

    assert _csv(bucket, base + "agg_shipments.csv") == [
        ["ingestion_date", "tt_late_shipments", "tt_undelivered_items"], ["2022-09-05", "175", "6586"]]
    assert _csv(bucket, base + "best_performing_product.csv") == [
        ["ingestion_date", "product_name", "most_ordered_day", "is_public_holiday", "tt_review_points",
         "pct_one_star_review", "pct_two_star_review", "pct_three_star_review", "pct_four_star_review",
         "pct_five_star_review", "pct_early_shipments", "pct_late_shipments"],
        ["2022-09-05", "Screwdriver", "2022-03-06", "false", "940", "18.67", "23.42", "18.67", "20.25", "18.99",
         "91.23", "8.77"]]
    holiday = _csv(bucket, base + "agg_public_holiday.csv")
    db_row = d2b.db.rows("SELECT * FROM analytics.agg_public_holiday")
    assert holiday[0] == ["ingestion_date"] + [f"tt_order_hol_{m}" for m in (
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")]
    assert holiday[1:] == [[str(v) for v in r] for r in db_row]
    meta = _s3().head_object(Bucket=bucket, Key=base + "agg_shipments.csv")
    assert meta["ContentType"].startswith("text/csv")

    # exporting again replaces the objects in place; --id picks the path segment
    res = CliRunner().invoke(app, ["export", "--to", f"s3://{bucket}/daily", "--warehouse", d2b.url])
    assert res.exit_code == 0 and "removed" not in res.output
    res = CliRunner().invoke(app, ["export", "--to", f"s3://{bucket}", "--id", "abc123", "--warehouse", d2b.url])
    assert res.exit_code == 0, res.output
    assert _keys(bucket, "analytics_export/") == [f"analytics_export/abc123/{t}.csv" for t in TABLES]
    assert len(_keys(bucket, base)) == 4

    res = CliRunner().invoke(app, ["export", "--to", "s3://no-such-bucket-here/x", "--warehouse", d2b.url])
    assert res.exit_code == 2 and "cannot write to s3://no-such-bucket-here/x/analytics_export/analytics/" in res.output
    res = CliRunner().invoke(app, ["export", "--to", "/tmp/somewhere", "--warehouse", d2b.url])
    assert res.exit_code == 2 and "must be an s3://bucket/prefix URI" in res.output


def test_export_paths_follow_the_brief() -> None:
    assert export_id("abc123_analytics") == "abc123"
    assert export_id("analytics") == "analytics"
    assert export_id("abc123_analytics", "given") == "given"
    assert export_prefix("s3://b/p/q/", "abc") == ("b", "p/q/analytics_export/abc/")
    assert export_prefix("s3://b", "abc") == ("b", "analytics_export/abc/")
    with pytest.raises(ExportError):
        export_id("x", "a/b")


def test_a_big_table_streams_in_parts_with_flat_memory(warehouse: str, db: DB, aws: str) -> None:
    """~78 MB of CSV goes up as a multipart upload while Python holds a few 8 MiB parts, not the table.

    One 8 MiB part is read, uploaded, then the next: the peak does not grow with the table.
    """
    db.execute("CREATE SCHEMA analytics")
    db.execute("CREATE TABLE analytics.big AS SELECT i AS id, md5(i::text) || md5((-i)::text) AS payload, "
               "i % 2 = 0 AS even FROM generate_series(1, 1000000) AS i")
    _s3().create_bucket(Bucket="big-export")
    tracemalloc.start()
    try:
        report = export(warehouse, "s3://big-export/x", "analytics")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    [item] = report.tables
    assert (item.table, item.rows) == ("big", 1000000)
    assert item.bytes > 77_000_000
    head = _s3().head_object(Bucket="big-export", Key="x/analytics_export/analytics/big.csv")
    assert head["ContentLength"] == item.bytes
    assert "-" in head["ETag"]  # a multipart upload
    assert peak < 32 * 1024 * 1024, peak  # one part and its copies (measured 25.7 MB), not the 78 MB table
    body = _s3().get_object(Bucket="big-export", Key="x/analytics_export/analytics/big.csv", Range="bytes=0-200")
    first = body["Body"].read().decode().splitlines()
    assert first[0] == "id,payload,even" and first[1].startswith("1,") and first[1].endswith(",false")
