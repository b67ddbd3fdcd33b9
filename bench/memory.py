"""Benchmark (not a test): peak RSS of the direct engine against file size (DESIGN §8, issue 8 item 2).

    .venv/bin/python bench/memory.py --orders 2600000,13000000,27000000 [--repeat 1] [--warehouse URL]

Runs ``filedrop load FILE --route orders --engine direct --warehouse URL`` as a subprocess for each generated
orders file (about 100 MB, 500 MB and 1 GB by default) and reads the child's peak resident set size from
``wait4()``'s rusage (``ru_maxrss``: the kernel's high-water mark of that one process, nothing sampled).
The route is the d2b orders route with ``mode: append`` (the client's memory does not depend on the mode:
the apply runs inside PostgreSQL; ``append`` keeps the 1 GB run short). Target: flat, < 300 MB at 1 GB.
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

from common import (
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    execute,
    filedrop_cmd,
    median,
    note,
    orders_file,
    save,
    server_facts,
    table,
    warehouse,
)

TIME = shutil.which("time", path="/usr/bin:/bin") or "/usr/bin/time"

ROUTE_YAML = """apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: orders}
spec:
  match: {pattern: '^orders.*\\.csv$'}
  table: orders
  columns:
    - {name: order_id, type: integer, nullable: false}
    - {name: customer_id, type: integer}
    - {name: order_date, type: date}
    - {name: product_id, type: integer}
    - {name: unit_price, type: integer}
    - {name: quantity, type: integer}
    - {name: total_price, type: integer}
  mode: append
  onError: abort
  engine: auto
"""


def peak_rss(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS in bytes of one command.

    Measured by GNU time (``/usr/bin/time -f %M``: ``wait4()``'s ``ru_maxrss`` of its own child). Not by this
    process's ``wait4()`` on a direct child: Linux counts the RSS a child had between ``fork()`` and ``exec()``,
    i.e. this (large, pyarrow-importing) benchmark process, which would hide the command's own footprint.
    """
    tmp = Path(tempfile.mkstemp(prefix="bench-rss-")[1])
    started = time.perf_counter()
    proc = subprocess.run([TIME, "-f", "%M", "-o", str(tmp)] + argv, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - started
    kib = tmp.read_text().strip().splitlines()[-1]
    tmp.unlink()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    return elapsed, int(kib) * 1024  # GNU time reports KiB


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", default="2600000,13000000,27000000")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--warehouse")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = ap.parse_args()
    sizes = [int(x) for x in args.orders.split(",") if x]
    files = [orders_file(args.data, n, seed=args.seed) for n in sizes]
    routes = args.data / "bench-orders-append.yaml"
    routes.write_text(ROUTE_YAML)
    # A baseline: the same interpreter importing the CLI and printing its help (what any command costs).
    base_env = {**os.environ, "FILEDROP_NO_COLOR": "1", "COLUMNS": "160"}
    _, idle = peak_rss(filedrop_cmd() + ["load", "--help"], base_env)
    with warehouse(args.warehouse) as url:
        facts = server_facts(url)
        runs = []
        for n, path in zip(sizes, files, strict=True):
            for r in range(args.repeat):
                execute(url, "DROP SCHEMA IF EXISTS bench_mem CASCADE", "DROP SCHEMA IF EXISTS bench_mem_meta CASCADE")
                env = {**base_env, "FILEDROP_STAGING_SCHEMA": "bench_mem", "FILEDROP_META_SCHEMA": "bench_mem_meta"}
                note(f"memory: filedrop load {path.name} ({path.stat().st_size / 1e6:.0f} MB) "
                     f"run {r + 1}/{args.repeat}")
                secs, rss = peak_rss(filedrop_cmd() + ["load", str(path), "--route", "orders", "--routes", str(routes),
                                                       "--engine", "direct", "--warehouse", url], env)
                note(f"  {secs:.1f}s, peak RSS {rss / 2**20:.0f} MiB")
                runs.append({"orders": n, "bytes": path.stat().st_size, "seconds": secs, "peak_rss": rss})
        execute(url, "DROP SCHEMA IF EXISTS bench_mem CASCADE", "DROP SCHEMA IF EXISTS bench_mem_meta CASCADE")
    out = {"facts": facts, "idle_rss": idle, "runs": runs}
    save(args.results, "memory", out)
    body = []
    for n in sizes:
        mine = [r for r in runs if r["orders"] == n]
        rss = median([r["peak_rss"] for r in mine]) / 2**20
        secs = median([r["seconds"] for r in mine])
        size = mine[0]["bytes"]
        body.append([f"{size / 1e6:,.0f} MB", f"{n:,}", f"{rss:.0f}", f"{secs:.1f}", f"{size / 1e6 / secs:.1f}"])
    print(f"\n### Direct engine peak RSS (`filedrop load FILE --route orders --engine direct`, append route, "
          f"{args.repeat} run{'s' if args.repeat > 1 else ''} each)\n")
    print(table(["file", "rows", "peak RSS, MiB", "seconds (whole command)", "MB/s"], body))
    top = max(r["peak_rss"] for r in runs) / 2**20
    low = min(r["peak_rss"] for r in runs) / 2**20
    print(f"\n- `filedrop load --help` alone (interpreter + imports): {idle / 2**20:.0f} MiB")
    print(f"- largest file: {top:.0f} MiB, spread over sizes {top - low:.0f} MiB — target < 300 MB and flat: "
          + ("met" if top * 2**20 < 300e6 and top - low < 50 else "**not met**"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
