"""Crash safety: a loader SIGKILLed in the middle of a large load, then rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from filedrop.local.sample import SampleSpec, write_sample
from tests.conftest import DB
from tests.support.servers import wait_until

ORDERS = 1_500_000


def _copy_progress(db: DB) -> tuple[int, int] | None:
    rows = db.rows("SELECT pid, tuples_processed FROM pg_stat_progress_copy p JOIN pg_class c ON c.oid = p.relid "
                   "WHERE c.relname LIKE '\\_load\\_%'")
    return (int(rows[0][0]), int(rows[0][1])) if rows else None


def test_killed_loader_leaves_nothing_and_rerun_loads_exactly_once(warehouse: str, db: DB, tmp_path: Path) -> None:
    [orders, _, _] = write_sample(tmp_path / "data", SampleSpec(orders=ORDERS, seed=7))
    cmd = [sys.executable, "-m", "filedrop", "load", str(orders), "--route", "orders", "--warehouse", warehouse]
    env = {**os.environ, "FILEDROP_HOME": str(tmp_path / "home")}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        progress: list[tuple[int, int]] = []

        def copying() -> bool:
            p = _copy_progress(db)
            if p and p[1] > 100_000:
                progress.append(p)
                return True
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            return False

        wait_until(copying, 120, "the loader to be in the middle of COPY")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    backend = progress[0][0]
    assert progress[0][1] < ORDERS  # really in the middle
    # PostgreSQL notices the dead client and ends its backend; then its locks are free.
    wait_until(lambda: not db.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)), 60,
               "the killed loader's backend to exit")
    [dead] = db.history()
    assert dead["status"] == "running"  # what the history honestly knew at the time of the crash
    assert db.one("SELECT count(*) FROM staging.orders") == 0

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert db.one("SELECT count(*), count(DISTINCT order_id), max(_row_number) FROM staging.orders") == (
        ORDERS, ORDERS, ORDERS)
    assert db.leftover_tables() == []
    history = {h["load_id"]: h for h in db.history()}
    assert history[dead["load_id"]]["status"] == "failed"
    assert "stopped before finishing" in history[dead["load_id"]]["first_error"]
    [ok] = [h for h in history.values() if h["status"] == "loaded"]
    assert (ok["rows_loaded"], ok["attempt"]) == (ORDERS, 2)
    assert db.one("SELECT count(DISTINCT _load_id) FROM staging.orders") == 1
    assert db.one("SELECT count(*) FROM filedrop.rejected_rows") == 0
