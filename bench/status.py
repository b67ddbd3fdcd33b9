"""Benchmark (not a test): `filedrop status` against a large load history.

    .venv/bin/python bench/status.py [--versions 100000,1000000] [--warehouse URL]

Fills a fresh bookkeeping schema with synthetic history — three versions per key, each loaded once;
every 20th version with a failed attempt before its load, every 50th only failed — then times
`filedrop status` (the command, as a user runs it) at each size.
Without --warehouse it uses the embedded PostgreSQL under a temporary FILEDROP_HOME.
DESIGN/issue 13 target: < 1 s at 100 k versions, < 5 s at 1 M.
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

import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from filedrop.config import Settings  # noqa: E402
from filedrop.warehouse import EmbeddedPostgres, connect, ensure_meta  # noqa: E402

FILL = """
INSERT INTO filedrop.ingest_history (load_id, bucket, key, etag, route, target_table, mode, engine, status,
                                     rows_loaded, first_error, started_at, finished_at)
SELECT md5(v::text || a::text), 'bench', 'k' || (v / 3)::text || '.csv', md5(v::text), 'orders', 'orders',
       'append', 'direct',
       CASE WHEN a = 0 AND (v %% 20 = 0 OR v %% 50 = 0) THEN 'failed' ELSE 'loaded' END,
       100, CASE WHEN a = 0 THEN 'bad' END,
       timestamptz '2026-01-01' + (v * 2 + a) * interval '1 second',
       timestamptz '2026-01-01' + (v * 2 + a) * interval '1 second' + interval '0.5 second'
FROM generate_series(1, %(n)s) v, generate_series(0, 1) a
WHERE a = 1 AND v %% 50 <> 0 OR a = 0 AND (v %% 20 = 0 OR v %% 50 = 0)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--versions", default="100000,1000000")
    ap.add_argument("--warehouse")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="filedrop-bench-status-"))
    try:
        url = args.warehouse or EmbeddedPostgres(home).start()
        env = {**os.environ, "FILEDROP_HOME": str(home), "FILEDROP_NO_COLOR": "1"}
        print("| object versions | history rows | `filedrop status` seconds |")
        print("|---:|---:|---:|")
        for n in (int(x) for x in args.versions.split(",")):
            with connect(url) as conn:
                conn.execute("DROP SCHEMA IF EXISTS filedrop CASCADE")
                ensure_meta(conn, Settings(warehouse_url=url))
                conn.execute(FILL, {"n": n})  # type: ignore[arg-type]
                conn.execute("ANALYZE filedrop.ingest_history")
                rows = conn.execute("SELECT count(*) FROM filedrop.ingest_history").fetchone()[0]  # type: ignore[index]
            cmd = [sys.executable, "-m", "filedrop.cli", "status", "--warehouse", url]
            subprocess.run(cmd, check=True, capture_output=True, env=env)  # warm the catalog and the cache
            started = time.monotonic()
            subprocess.run(cmd, check=True, capture_output=True, env=env)
            print(f"| {n:,} | {rows:,} | {time.monotonic() - started:.2f} |", flush=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP SCHEMA IF EXISTS filedrop CASCADE")
    finally:
        if not args.warehouse:
            EmbeddedPostgres(home).stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
