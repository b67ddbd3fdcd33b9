"""Benchmark (not a test): one generated orders file loaded four ways, side by side (DESIGN §8).

    .venv/bin/python bench/spark_vs_direct.py --orders 6000000 [--warehouse URL] [--workdir DIR]

1. ``psql \\copy`` into a plain table — what a DBA types by hand, the machine's limit;
2. Spark's stock ``DataFrame.write.jdbc`` (the seed pipeline's way) into a plain table;
3. filedrop's Spark engine (``append`` route: parallel COPY, then the protocol's apply);
4. filedrop's direct engine (same route).

Prints throughput and the ratios of DESIGN §8 as a Markdown table for docs/benchmarks.md. Without
``--warehouse`` an embedded PostgreSQL is started in a temporary directory. Needs `make spark-jars`
(the JDBC driver for the baseline).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import psycopg

from filedrop.config import Settings
from filedrop.loader import load_object
from filedrop.routes import parse_routes_yaml
from filedrop.sample import SampleSpec, write_sample
from filedrop.sources import describe_uri
from filedrop.spark import jars

COLUMNS = [("order_id", "integer"), ("customer_id", "integer"), ("order_date", "date"), ("product_id", "integer"),
           ("unit_price", "integer"), ("quantity", "integer"), ("total_price", "integer")]
ROUTE = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: orders}
spec:
  match: {pattern: '^orders.*\\.csv$'}
  table: orders
  columns:
""" + "".join(f"    - {{name: {n}, type: {t}{', nullable: false' if n == 'order_id' else ''}}}\n" for n, t in COLUMNS)
                          + "  mode: append\n  onError: abort\n  engine: auto\n")[0]
PLAIN_DDL = "CREATE UNLOGGED TABLE IF NOT EXISTS {t} (" + ", ".join(f"{n} {t}" for n, t in COLUMNS) + ")"


def _plain_table(url: str, name: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"DROP TABLE IF EXISTS {name}")
        # a plain (logged) table like the staging tables; UNLOGGED only for the load tables
        c.execute(PLAIN_DDL.replace("UNLOGGED ", "").format(t=name))


def bench_psql_copy(url: str, path: Path) -> float:
    _plain_table(url, "bench_psql")
    started = time.perf_counter()
    subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-q", "-c",
                    f"\\copy bench_psql FROM '{path}' (FORMAT csv, HEADER)"], check=True)
    return time.perf_counter() - started


def bench_write_jdbc(spark: object, url: str, path: Path) -> float:
    from pyspark.sql import SparkSession
    from pyspark.sql.types import DateType, IntegerType, StructField, StructType

    assert isinstance(spark, SparkSession)
    _plain_table(url, "bench_jdbc")
    u = urlparse(url)
    jdbc = f"jdbc:postgresql://{u.hostname}:{u.port or 5432}{u.path}"
    schema = StructType([StructField(n, DateType() if t == "date" else IntegerType()) for n, t in COLUMNS])
    started = time.perf_counter()
    (spark.read.csv(f"file://{path}", schema=schema, header=True)
     .write.jdbc(jdbc, "bench_jdbc", mode="append",
                 properties={"user": u.username or "postgres", "driver": "org.postgresql.Driver",
                             "password": os.environ.get("PGPASSWORD", "")}))
    return time.perf_counter() - started


def bench_engine(url: str, path: Path, engine: str) -> float:
    settings = Settings(staging_schema=f"bench_{engine}", meta_schema=f"bench_{engine}_meta")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute(f"DROP SCHEMA IF EXISTS bench_{engine} CASCADE")
        c.execute(f"DROP SCHEMA IF EXISTS bench_{engine}_meta CASCADE")
    obj = describe_uri(str(path))
    started = time.perf_counter()
    result = load_object(url, settings, ROUTE, obj, engine=engine)
    elapsed = time.perf_counter() - started
    assert result.status == "loaded", result.first_error
    return elapsed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--orders", type=int, default=6_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--warehouse")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="filedrop-bench-"))
    stop = None
    url = args.warehouse
    if not url:
        from filedrop.warehouse import EmbeddedPostgres

        server = EmbeddedPostgres(work / "home")
        url, stop = server.start(), server.stop
    try:
        path = work / "data" / "orders.csv"
        if not path.exists():
            write_sample(work / "data", SampleSpec(orders=args.orders, seed=args.seed))
        size = path.stat().st_size
        rows = args.orders
        os.environ.setdefault("FILEDROP_SPARK_JARS_DIR", str(jars.jar_dir()))
        from filedrop.spark.session import get_session

        spark = get_session()
        spark.sparkContext.setLogLevel("ERROR")
        # Warm the JVM and the Python workers on a small file first: measure throughput, not start-up.
        warm = work / "warm" / "orders.csv"
        if not warm.exists():
            write_sample(warm.parent, SampleSpec(orders=20_000, seed=args.seed))
        bench_engine(url, warm, "spark")
        bench_write_jdbc(spark, url, warm)
        with psycopg.connect(url) as c:
            version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        results = {}
        for name, run in [("psql \\copy (plain table)", lambda: bench_psql_copy(url, path)),
                          ("Spark write.jdbc (stock)", lambda: bench_write_jdbc(spark, url, path)),
                          ("filedrop Spark engine (append)", lambda: bench_engine(url, path, "spark")),
                          ("filedrop direct engine (append)", lambda: bench_engine(url, path, "direct"))]:
            results[name] = run()
            print(f"{name}: {results[name]:.1f}s", file=sys.stderr)
        cores = os.cpu_count()
        print(f"\nfile: {size / 1e6:.0f} MB, {rows:,} rows; PostgreSQL {version}; {cores} cores; "
              f"Spark {spark.version} {spark.sparkContext.master}\n")
        print("| method | seconds | MB/s | rows/s |\n|---|---:|---:|---:|")
        for name, secs in results.items():
            print(f"| {name} | {secs:.1f} | {size / 1e6 / secs:.1f} | {rows / secs:,.0f} |")
        names = list(results)
        print(f"\nSpark engine vs write.jdbc: {results[names[1]] / results[names[2]]:.2f}x (target >= 3)")
        print(f"direct engine vs psql \\copy: {results[names[0]] / results[names[3]]:.2f}x (target >= 0.9)")
        print(f"Spark engine vs psql \\copy: {results[names[0]] / results[names[2]]:.2f}x")
        return 0
    finally:
        if stop:
            stop()
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
