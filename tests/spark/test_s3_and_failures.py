"""``s3a://`` reads from moto's S3 server over HTTP, and crash safety of the Spark engine."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import boto3
import pytest

from filedrop.load.session import load_object
from filedrop.load.sources import describe_uri
from filedrop.local.sample import SampleSpec, write_sample
from filedrop.routes import load_routes, route_named
from tests.conftest import DB
from tests.spark.conftest import SPARK, assert_same, load_both, split_bytes
from tests.support.loads import items_route
from tests.support.servers import wait_until


def test_s3a_from_moto(spark: Any, aws: str, warehouse: str, db: DB, tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="drops")
    [orders, _, _] = write_sample(tmp_path, SampleSpec(orders=40_000, seed=3))
    s3.upload_file(str(orders), "drops", "orders_data/orders.csv")
    s3.put_object(Bucket="drops", Key="items/items_q.csv",
                  Body=b'id,name,qty,day\n1,"two\nlines",1,\n2,b,x,\n3,c,3,2022-01-03\n')
    with split_bytes(spark, 256 << 10):
        both = load_both(warehouse, route_named(load_routes(), "orders"), "s3://drops/orders_data/orders.csv")
    assert both.spark.status == "loaded", both.spark.first_error
    assert both.spark.obj.is_s3 and both.spark.rows_loaded == 40_000
    assert_same(db, route_named(load_routes(), "orders"), both)
    assert db.one("SELECT DISTINCT _source_key FROM stg_spark.orders") == "orders_data/orders.csv"

    db.execute("DROP SCHEMA stg_direct CASCADE; DROP SCHEMA stg_spark CASCADE; "
               "DROP SCHEMA fd_direct CASCADE; DROP SCHEMA fd_spark CASCADE")
    route = items_route("append")
    both = load_both(warehouse, route, "s3://drops/items/items_q.csv")
    assert (both.spark.status, both.spark.rows_loaded, both.spark.rows_rejected) == ("loaded", 2, 1)
    assert_same(db, route, both)


def test_object_changed_after_it_was_described_is_not_loaded(spark: Any, aws: str, warehouse: str, db: DB) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="drops2")
    s3.put_object(Bucket="drops2", Key="items_1.csv", Body=b"id,name,qty,day\n1,a,1,\n")
    obj = describe_uri("s3://drops2/items_1.csv")
    s3.put_object(Bucket="drops2", Key="items_1.csv", Body=b"id,name,qty,day\n1,a,1,\n2,b,2,\n")
    result = load_object(warehouse, SPARK, items_route("append"), obj, engine="spark")
    # the version asked for is gone and a newer one replaced it: superseded, nothing loaded, no retry
    assert result.status == "skipped_superseded" and not result.retryable, result
    assert "overwritten by a newer version" in result.message
    assert db.rows("SELECT status FROM fd_spark.ingest_history") == [("skipped_superseded",)]
    assert db.one("SELECT count(*) FROM stg_spark.items") == 0


def test_job_failing_mid_write_leaves_nothing_and_rerun_loads_once(
        spark: Any, warehouse: str, db: DB, tmp_path: Path) -> None:
    """A Spark task loses its database session in the middle of its COPY: the job fails, the load is
    recorded as failed and leaves no rows and no tables; the rerun loads the file exactly once."""
    [orders, _, _] = write_sample(tmp_path, SampleSpec(orders=300_000, seed=5))
    route = route_named(load_routes(), "orders")
    obj = describe_uri(str(orders))
    killed: list[int] = []

    def kill_a_copy() -> bool:
        rows = db.rows("SELECT p.pid FROM pg_stat_progress_copy p JOIN pg_stat_activity a ON a.pid = p.pid "
                       "WHERE a.application_name = 'filedrop-spark' AND p.tuples_processed > 0")
        for (pid,) in rows[:1]:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
            killed.append(pid)
        return bool(killed)

    killer = threading.Thread(target=lambda: wait_until(kill_a_copy, 300, "a Spark COPY in progress", 0.01))
    with split_bytes(spark, 8 << 20):  # two big blocks: each COPY runs long enough to be caught
        killer.start()
        first = load_object(warehouse, SPARK, route, obj, engine="spark")
        killer.join()
    assert killed, "no COPY was caught in progress"
    assert first.status == "failed" and first.retryable, first
    assert "Spark" in (first.first_error or "")
    assert db.one("SELECT count(*) FROM stg_spark.orders") == 0
    assert db.rows("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname = 'fd_spark' AND relname ~ '^_(load|raw)_'") == []

    with split_bytes(spark, 512 << 10):
        again = load_object(warehouse, SPARK, route, obj, engine="spark")
    assert again.status == "loaded", again.first_error
    assert db.one("SELECT count(*), count(DISTINCT order_id), min(_row_number), max(_row_number), "
                  "count(DISTINCT _load_id) FROM stg_spark.orders") == (300_000, 300_000, 1, 300_000, 1)
    statuses = db.rows("SELECT status, attempt FROM fd_spark.ingest_history ORDER BY started_at")
    assert statuses == [("failed", 1), ("loaded", 2)]
    third = load_object(warehouse, SPARK, route, obj, engine="spark")
    assert third.status == "skipped_duplicate"
    assert db.one("SELECT count(*) FROM stg_spark.orders") == 300_000


@pytest.mark.parametrize("engine", ["spark", "auto"])
def test_engine_choice_is_recorded(spark: Any, warehouse: str, db: DB, tmp_path: Path, engine: str,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """``engine: auto`` picks Spark at the size threshold (now that it is installed), direct below."""
    from filedrop.config import Settings

    path = tmp_path / "items_1.csv"
    path.write_text("id,name,qty,day\n1,a,1,\n")
    settings = Settings(staging_schema="stg_spark", meta_schema="fd_spark", spark_threshold_bytes=10)
    result = load_object(warehouse, settings, items_route("append"), describe_uri(str(path)), engine=engine)
    assert (result.status, result.engine) == ("loaded", "spark")
    assert "not installed" not in result.message
    assert db.one("SELECT engine FROM fd_spark.ingest_history") == "spark"
