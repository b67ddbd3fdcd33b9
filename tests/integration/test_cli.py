"""The `filedrop` command line as a user runs it: exit codes, summaries, history and status."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
from typer.testing import CliRunner

import filedrop
from filedrop.cli import app
from tests.conftest import D2B, DB


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("FILEDROP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("FILEDROP_WAREHOUSE_URL", raising=False)
    return CliRunner()


def test_run_reports_every_file_and_fails_when_one_fails(cli: CliRunner, warehouse: str, db: DB,
                                                         tmp_path: Path) -> None:
    src = tmp_path / "drop"
    src.mkdir()
    for f in ("orders.csv", "reviews.csv"):
        shutil.copy(D2B / f, src / f)
    (src / "shipment_deliveries.csv").write_text("shipment_id,order_id,shipment_date\n1,1,2022-01-01\n")
    (src / "notes.txt").write_text("hello")

    res = cli.invoke(app, ["run", "--source", str(src), "--warehouse", warehouse, "--no-transform"])
    assert res.exit_code == 1, res.output
    assert "2 loaded" in res.output and "1 failed" in res.output
    assert "header does not match" in res.output
    assert db.one("SELECT first_error FROM filedrop.ingest_history WHERE status = 'failed'").startswith(
        "header does not match FileRoute shipment-deliveries: missing column(s): delivery_date")
    assert "unmatched (no FileRoute):" in res.output and "notes.txt" in res.output
    assert "17,236 rows loaded" in res.output
    assert db.one("SELECT count(*) FROM staging.orders") == 10000  # the other files were still attempted

    shutil.copy(D2B / "shipment_deliveries.csv", src / "shipment_deliveries.csv")  # fixed upstream
    res = cli.invoke(app, ["run", "--source", str(src), "--warehouse", warehouse, "--no-transform"])
    assert res.exit_code == 0, res.output
    assert "1 loaded" in res.output and "2 skipped_duplicate" in res.output

    status = cli.invoke(app, ["status", "--warehouse", warehouse])
    assert status.exit_code == 0
    lines = {ln.split("│")[1].strip(): [c.strip() for c in ln.split("│")[1:-1]]
             for ln in status.output.splitlines() if ln.startswith("│")}
    assert lines["orders"][:6] == ["orders", "orders", "1", "0", "0", "10,000"]
    assert lines["shipment-deliveries"][2:6] == ["1", "0", "0", "10,000"]

    hist = cli.invoke(app, ["history", "--warehouse", warehouse, "--route", "shipment-deliveries"])
    assert hist.exit_code == 0
    assert hist.output.count("shipment_deliveries.csv") == 2
    assert "failed" in hist.output and "loaded" in hist.output


def test_bad_routes_file_is_a_clear_error(cli: CliRunner, tmp_path: Path, warehouse: str) -> None:
    bad = tmp_path / "routes.yaml"
    bad.write_text("""apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: things}
spec:
  match: {pattern: '^things'}
  table: Things-Table
  columns: [{name: id, type: int}]
  mode: upsert
""")
    res = cli.invoke(app, ["run", "--source", str(tmp_path), "--routes", str(bad), "--warehouse", warehouse])
    assert res.exit_code == 2
    out = res.output
    assert "FileRoute things" in out
    assert "table name 'Things-Table' is not a valid identifier" in out
    assert "columns.0.type" in out and "'integer'" in out


def test_load_command_and_missing_source(cli: CliRunner, warehouse: str, db: DB) -> None:
    res = cli.invoke(app, ["load", str(D2B / "reviews.csv"), "--route", "reviews", "--warehouse", warehouse])
    assert res.exit_code == 0, res.output
    assert db.one("SELECT count(*) FROM staging.reviews") == 7236
    res = cli.invoke(app, ["load", str(D2B / "nope.csv"), "--route", "reviews", "--warehouse", warehouse])
    assert res.exit_code == 2 and "no such file or directory" in res.output
    res = cli.invoke(app, ["load", str(D2B / "reviews.csv"), "--route", "nope", "--warehouse", warehouse])
    assert res.exit_code == 2 and "no FileRoute named 'nope'" in res.output


def test_embedded_warehouse_is_started_and_reused(cli: CliRunner, tmp_path: Path) -> None:
    """No --warehouse and no FILEDROP_WAREHOUSE_URL: the embedded PostgreSQL under FILEDROP_HOME."""
    from filedrop.warehouse import EmbeddedPostgres

    try:
        first = cli.invoke(app, ["run", "--source", str(D2B)])
        assert first.exit_code == 0, first.output
        assert "3 loaded" in first.output
        assert "agg_shipments" in first.output  # `run` builds the analytics after loading (no --no-transform)
        url = cli.invoke(app, ["warehouse", "url"]).output.strip()
        assert url.startswith("postgresql://postgres@127.0.0.1:")  # loopback TCP, for JDBC clients too
        second = cli.invoke(app, ["run", "--source", str(D2B), "--no-transform"])
        assert "3 skipped_duplicate" in second.output
        assert cli.invoke(app, ["warehouse", "url"]).output.strip() == url  # the same server, reused
        assert (tmp_path / "home" / "postgres" / "data" / "PG_VERSION").exists()
    finally:
        EmbeddedPostgres(tmp_path / "home").stop()


def test_watch_picks_up_a_file_dropped_later(warehouse: str, db: DB, tmp_path: Path) -> None:
    """`filedrop run --watch` as a long-running process: a new file shows up in staging by itself."""
    import os
    import signal
    import subprocess
    import sys
    import threading

    from tests.support.servers import wait_until

    src = tmp_path / "drop"
    src.mkdir()
    env = {**os.environ, "FILEDROP_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen([sys.executable, "-m", "filedrop", "run", "--source", str(src), "--warehouse", warehouse,
                             "--watch", "--interval", "0.2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        wait_until(lambda: bool(db.rows("SELECT 1 FROM pg_tables WHERE schemaname = 'filedrop' "
                                        "AND tablename = 'ingest_history'")), 60, "the watcher's first pass")
        shutil.copy(D2B / "reviews.csv", src / "reviews.csv")
        wait_until(lambda: db.rows("SELECT status FROM filedrop.ingest_history") == [("loaded",)], 60,
                   "the dropped file to be loaded")
        assert db.one("SELECT count(*) FROM staging.reviews") == 7236
        # the pass's report is printed after its loads commit
        wait_until(lambda: any("reviews.csv" in line for line in lines), 30, "the watcher to report the file")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        reader.join(10)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "reviews.csv" in output and "stopped" in output


def _json_lines(text: str) -> list[Any]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_output_filters_and_version_for_scripts(cli: CliRunner, warehouse: str, db: DB, tmp_path: Path,
                                                     aws: str) -> None:
    src = tmp_path / "drop"
    src.mkdir()
    shutil.copy(D2B / "reviews.csv", src / "reviews.csv")
    (src / "orders.csv").write_text("order_no,when\n1,2022-01-01\n")  # a header orders' route refuses
    res = cli.invoke(app, ["run", "--source", str(src), "--warehouse", warehouse, "--no-transform", "-o", "json"])
    assert res.exit_code == 1, res.output
    [doc] = _json_lines(res.stdout)  # stdout is only JSON: the table for people is not in it
    assert doc["kind"] == "load" and doc["ok"] is False and doc["counts"] == {"loaded": 1, "failed": 1}
    files = {f["key"]: f for f in doc["files"]}
    assert files["reviews.csv"]["rows_loaded"] == 7236
    assert files["reviews.csv"]["size"] == (D2B / "reviews.csv").stat().st_size
    assert files["orders.csv"]["status"] == "failed" and "header does not match" in files["orders.csv"]["first_error"]

    res = cli.invoke(app, ["history", "--warehouse", warehouse, "-o", "json", "--status", "failed", "--since", "1h"])
    assert res.exit_code == 0, res.output
    [failed] = json.loads(res.stdout)
    assert failed["key"] == "orders.csv" and failed["target_table"] == "orders" and failed["duration_seconds"] >= 0
    res = cli.invoke(app, ["history", "--warehouse", warehouse, "-o", "json", "--table", "reviews"])
    assert [h["key"] for h in json.loads(res.stdout)] == ["reviews.csv"]
    res = cli.invoke(app, ["history", "--warehouse", warehouse, "-o", "json", "--since", "2999-01-01"])
    assert json.loads(res.stdout) == []
    res = cli.invoke(app, ["history", "--warehouse", warehouse, "--since", "yesterday"])
    assert res.exit_code == 2 and "give a time ago" in res.output
    # the table for people has the size, duration and table columns
    table = cli.invoke(app, ["history", "--warehouse", warehouse]).stdout
    assert all(col in table for col in ("table", "size", "took")) and "kB" in table, table

    queue = boto3.client("sqs").create_queue(QueueName=f"status-depth-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    boto3.client("sqs").send_message(QueueUrl=queue, MessageBody="{}")
    res = cli.invoke(app, ["status", "--warehouse", warehouse, "-o", "json", "--queue", queue])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    routes = {r["route"]: r for r in doc["routes"]}
    assert routes["reviews"]["loaded"] == 1 and routes["reviews"]["rows_loaded"] == 7236
    assert routes["orders"]["failed"] == 1 and "header does not match" in routes["orders"]["last_error"]
    assert doc["queue"] == {"url": queue, "messages": 1, "in_flight": 0, "delayed": 0}
    res = cli.invoke(app, ["status", "--warehouse", warehouse, "--queue", queue])
    assert "queue: 1 notification(s) waiting" in res.stdout

    res = cli.invoke(app, ["load", str(src / "reviews.csv"), "--route", "reviews", "--warehouse", warehouse,
                           "-o", "json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["status"] == "skipped_duplicate"

    res = cli.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.startswith(f"filedrop {filedrop.__version__} ")
