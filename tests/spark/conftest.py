"""Spark fixtures: one local SparkSession for the whole run (starting Spark costs tens of seconds), and
helpers that load one file with both engines side by side and compare everything they left behind."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from filedrop.config import Settings
from filedrop.load.session import LoadResult, load_object
from filedrop.load.sources import describe_uri
from filedrop.routes import FileRoute
from filedrop.spark import jars
from tests.conftest import DB


@pytest.fixture(scope="session")
def spark(moto_endpoint: str) -> Iterator[Any]:
    """The session the Spark engine finds (``getActiveSession``), S3A pointed at moto over HTTP."""
    missing = jars.missing()
    assert not missing, f"Spark jars missing in {jars.jar_dir()}: run `make spark-jars` ({missing})"
    mp = pytest.MonkeyPatch()
    # S3A's settings are read from the environment when the session starts (as in a real job).
    mp.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    mp.setenv("AWS_ACCESS_KEY_ID", "testing")
    mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
    mp.setenv("FILEDROP_SPARK_MASTER", "local[2]")
    from filedrop.spark.session import get_session

    session = get_session()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        mp.undo()
        session.stop()


@contextmanager
def split_bytes(spark: Any, size: int) -> Iterator[None]:
    """Make Spark cut files into splits of ``size`` bytes, so records cross split boundaries."""
    keys = ("spark.sql.files.maxPartitionBytes", "spark.sql.files.openCostInBytes")
    old = {k: spark.conf.get(k) for k in keys}
    for k in keys:
        spark.conf.set(k, str(size))
    try:
        yield
    finally:
        for k, v in old.items():
            spark.conf.set(k, v)


DIRECT = Settings(staging_schema="stg_direct", meta_schema="fd_direct")
SPARK = Settings(staging_schema="stg_spark", meta_schema="fd_spark")

#: History columns that must agree between engines (not ids, times or the engine's name).
HISTORY = ("bucket", "key", "etag", "version_id", "size_bytes", "route", "target_table", "mode", "status",
           "rows_parsed", "rows_loaded", "rows_rejected", "first_error", "first_error_line", "attempt")


@dataclass
class Both:
    direct: LoadResult
    spark: LoadResult


def load_both(url: str, route: FileRoute, uri: str) -> Both:
    """The same object version through each engine, into separate staging and bookkeeping schemas."""
    obj = describe_uri(uri)
    direct = load_object(url, DIRECT, route, obj, engine="direct")
    spark = load_object(url, SPARK, route, obj, engine="spark")
    return Both(direct, spark)


def staged(db: DB, settings: Settings, route: FileRoute) -> set[tuple[Any, ...]]:
    """Every staging row as a tuple: route columns and lineage, without the per-load id and time."""
    cols = ", ".join(f'"{c}"' for c in route.column_names)
    return set(db.rows(f'SELECT {cols}, _source_key, _source_etag, _row_number '
                       f'FROM "{settings.staging_schema}"."{route.spec.table}"'))


def rejected(db: DB, settings: Settings) -> list[tuple[Any, ...]]:
    return db.rows(f'SELECT line_number, raw_line, error, column_name FROM "{settings.meta_schema}".rejected_rows '
                   "ORDER BY line_number, error")


def history(db: DB, settings: Settings) -> list[dict[str, Any]]:
    rows = db.rows(f'SELECT {", ".join(HISTORY)}, engine FROM "{settings.meta_schema}".ingest_history '
                   "ORDER BY started_at, load_id")
    return [dict(zip(HISTORY + ("engine",), r, strict=True)) for r in rows]


def assert_same(db: DB, route: FileRoute, both: Both) -> None:
    """Identical staging rows (with _row_number), quarantined rows and history, engine name aside."""
    d, s = both.direct, both.spark
    assert (s.status, s.rows_parsed, s.rows_loaded, s.rows_rejected, s.first_error_line) == (
        d.status, d.rows_parsed, d.rows_loaded, d.rows_rejected, d.first_error_line), (d, s)
    assert s.engine == "spark" and d.engine == "direct"
    if d.status == "loaded":
        direct_rows = staged(db, DIRECT, route)
        spark_rows = staged(db, SPARK, route)
        assert len(direct_rows) == d.rows_loaded or route.spec.mode == "upsert"
        assert spark_rows == direct_rows
    assert rejected(db, SPARK) == rejected(db, DIRECT)
    hd, hs = history(db, DIRECT), history(db, SPARK)
    assert [h.pop("engine") for h in hd] == ["direct"] * len(hd)
    assert [h.pop("engine") for h in hs] == ["spark"] * len(hs)
    for h in hd + hs:  # a file-level failure names its cause alike; the detail is each reader's own words
        if h["status"] == "failed":
            h["first_error"] = (h["first_error"] or "").split(":")[0]
    assert hs == hd
    assert db.rows("SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname IN ('fd_direct', 'fd_spark') AND relname ~ '^_(load|raw)_'") == []
