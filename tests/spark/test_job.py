"""``filedrop/spark/job.py`` as a ``spark-submit`` main file: the whole protocol in the driver."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import filedrop.spark.job
from filedrop.spark import jars
from tests.conftest import DB
from tests.support.loads import write
from tests.support.servers import DebianPostgres

ROUTES = """
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: items}
spec:
  match: {pattern: '^items.*\\.csv$'}
  table: items
  columns:
    - {name: id, type: integer, nullable: false}
    - {name: name, type: text}
  mode: upsert
  primaryKey: [id]
  onError: continue
  maxBadRowsPercent: 50
"""


def test_spark_submit_runs_the_job(warehouse: str, db: DB, tmp_path: Path) -> None:
    data = write(tmp_path / "items_1.csv", "id,name\n1,\"a\nb\"\n2,x\nthree,c\n")
    routes = write(tmp_path / "routes.yaml", ROUTES)
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "FILEDROP_WAREHOUSE_URL": warehouse}
    cmd = [str(spark_submit), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
           "--driver-class-path", ":".join(str(p) for p in jars.jar_paths(jars.S3A_JARS)),
           filedrop.spark.job.__file__, str(data), "--route", "items", "--routes", str(routes),
           "--filedrop", "fd-0123456789ab"]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert (out["status"], out["engine"], out["rows_loaded"], out["rows_rejected"]) == ("loaded", "spark", 2, 1)
    assert db.rows("SELECT id, name, _row_number FROM staging.items ORDER BY id") == [(1, "a\nb", 1), (2, "x", 2)]
    assert db.one("SELECT filedrop FROM filedrop.ingest_history") == "fd-0123456789ab"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0
    assert json.loads(again.stdout.strip().splitlines()[-1])["status"] == "skipped_duplicate"


def test_spark_submit_with_the_password_in_the_warehouse_url(tmp_path: Path) -> None:
    """The install guide's Secret holds the whole URL, password included, and the SparkApplication hands it
    to driver and executors as FILEDROP_WAREHOUSE_URL (no PGPASSWORD). The executors' COPY must log in with it
    (the driver sends them a conninfo without the password), and the password must not be printed."""
    password = "pw-" + secrets.token_hex(8)
    server = DebianPostgres().start()
    try:
        hba = server.data / "pg_hba.conf"
        hba.write_text(f"host all loader 127.0.0.1/32 scram-sha-256\n{hba.read_text()}")  # first match wins
        admin = DB(server.url)
        admin.execute(f"CREATE ROLE loader LOGIN SUPERUSER PASSWORD '{password}'")
        admin.execute("SELECT pg_reload_conf()")
        url = server.url.replace("postgres@", f"loader:{password}@")
        data = write(tmp_path / "items_1.csv", "id,name\n1,a\n2,b\n")
        routes = write(tmp_path / "routes.yaml", ROUTES)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, FILEDROP_WAREHOUSE_URL=url)
        cmd = [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]",
               "--conf", "spark.ui.enabled=false",
               "--driver-class-path", ":".join(str(p) for p in jars.jar_paths(jars.S3A_JARS)),
               filedrop.spark.job.__file__, str(data), "--route", "items", "--routes", str(routes)]
        run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        out = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert json.loads(out)["rows_loaded"] == 2
        assert admin.rows("SELECT id, name FROM staging.items ORDER BY id") == [(1, "a"), (2, "b")]
        assert password not in run.stdout + run.stderr
    finally:
        server.stop()
