"""Benchmark (not a test): does the transform follow new data or history? (DESIGN §8, issue 8 item 5)

    .venv/bin/python bench/transform_scaling.py [--orders 100000] [--new-percent 1] [--repeat 3] [--warehouse URL]

1. ``filedrop sample --orders 100000`` (10× the d2b volume of 10,000 orders) and ``filedrop run --no-transform``;
2. a first ``filedrop transform`` (seeds, models, tests, docs) for ingestion_date 2022-09-05;
3. 1 % new orders: ``filedrop sample --orders 1000 --seed 2`` with order and shipment ids shifted past the first
   sample's (``filedrop.local.sample`` numbers ids from 1), dropped beside the others as ``*_new.csv`` and loaded
   (``orders`` and ``shipment-deliveries`` are ``upsert`` routes, ``reviews`` ``replace_source``: new keys add rows);
4. timed, ``--repeat`` times, interleaved, for ingestion_date 2022-09-06 — the same command both ways:
   ``filedrop workflows step build`` (= the ``dbt build`` of ``filedrop transform``), incremental, and with
   ``--full-refresh true``; then one ``filedrop transform`` (build + docs) for what a user waits for.
Per-model execution times come from dbt's ``run_results.json`` of the last run of each kind.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.csv as pacsv
from common import DEFAULT_RESULTS, execute, filedrop_cmd, median, note, save, spread, table, warehouse

AS_OF = "2022-09-05"


def cli(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    proc = subprocess.run(filedrop_cmd() + args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    text = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"filedrop {' '.join(args)} exited {proc.returncode}:\n{text[-4000:]}")
    return elapsed, text


def rewrite(path: Path, shift: dict[str, int]) -> None:
    """Add ``shift[c]`` to id column ``c``."""
    t = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    for c, by in shift.items():
        t = t.set_column(t.column_names.index(c), c, pc.add(t.column(c), by))
    pacsv.write_csv(t, path, pacsv.WriteOptions(quoting_style="none"))
    # pyarrow quotes the header names; filedrop accepts quoted headers, but keep the file d2b-shaped
    lines = path.read_text().split("\n", 1)
    path.write_text(lines[0].replace('"', "") + "\n" + lines[1])


def fit_seeds(directory: Path, shift: int = 0) -> None:
    """Move a ``filedrop sample``'s order/shipment ids up by ``shift`` (new orders that do not collide).
    Its customer and product ids already fit the if_common seeds (1..25, as in the real d2b files)."""
    if shift:
        rewrite(directory / "orders.csv", {"order_id": shift})
        rewrite(directory / "shipment_deliveries.csv", {"shipment_id": shift, "order_id": shift})


def node_times(home: Path) -> dict[str, float]:
    results = json.loads((home / "dbt" / "target" / "run_results.json").read_text())
    return {r["unique_id"]: r["execution_time"] for r in results["results"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--orders", type=int, default=100_000)
    ap.add_argument("--new-percent", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warehouse")
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="filedrop-bench-transform-"))
    new_orders = max(1, int(args.orders * args.new_percent / 100))
    names = {"staging": "bench_tf_staging", "meta": "bench_tf_meta", "analytics": "bench_tf_analytics",
             "if_common": "bench_tf_if_common"}
    try:
        with warehouse(args.warehouse) as url:
            for schema in names.values():
                execute(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            env = {**os.environ, "FILEDROP_HOME": str(work / "home"), "FILEDROP_WAREHOUSE_URL": url,
                   "FILEDROP_STAGING_SCHEMA": names["staging"], "FILEDROP_META_SCHEMA": names["meta"],
                   "FILEDROP_ANALYTICS_SCHEMA": names["analytics"], "FILEDROP_IF_COMMON_SCHEMA": names["if_common"],
                   "FILEDROP_NO_COLOR": "1", "COLUMNS": "160"}
            src, new = work / "source", work / "new"
            note(f"transform: sample {args.orders:,} orders and load them")
            cli(["sample", "--out", str(src), "--orders", str(args.orders), "--seed", "1"], env)
            fit_seeds(src)
            load_s, _ = cli(["run", "--source", str(src), "--no-transform"], env)
            note(f"  loaded in {load_s:.1f}s; first transform")
            first_s, _ = cli(["transform", "--as-of", AS_OF, "--ingestion-date", AS_OF], env)
            note(f"  first transform {first_s:.1f}s; adding {new_orders:,} new orders ({args.new_percent:g}%)")
            cli(["sample", "--out", str(new), "--orders", str(new_orders), "--seed", "2"], env)
            fit_seeds(new, shift=args.orders)
            for f in ("orders", "reviews", "shipment_deliveries"):
                shutil.copy(new / f"{f}.csv", src / f"{f}_new.csv")
            new_load_s, out = cli(["run", "--source", str(src), "--no-transform"], env)
            note(f"  new files loaded in {new_load_s:.1f}s")
            runs: dict[str, list[float]] = {"incremental": [], "full-refresh": []}
            nodes: dict[str, dict[str, float]] = {}
            for r in range(args.repeat):
                for kind, flag in (("incremental", "false"), ("full-refresh", "true")):
                    secs, _ = cli(["workflows", "step", "build", "--as-of", AS_OF, "--ingestion-date", "2022-09-06",
                                   "--full-refresh", flag], env)
                    runs[kind].append(secs)
                    nodes[kind] = node_times(work / "home")
                    note(f"  run {r + 1}/{args.repeat}: dbt build, {kind}: {secs:.1f}s")
            transform_s, _ = cli(["transform", "--as-of", AS_OF, "--ingestion-date", "2022-09-06"], env)
            note(f"  filedrop transform (build + docs): {transform_s:.1f}s")
            with __import__("psycopg").connect(url) as c:
                counts = {t: c.execute(f"SELECT count(*) FROM {names['staging']}.{t}").fetchone()[0]  # type: ignore
                          for t in ("orders", "reviews", "shipment_deliveries")}
            for schema in names.values():
                execute(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    save(args.results, "transform", {"orders": args.orders, "new_orders": new_orders, "load": load_s,
                                     "first_transform": first_s, "new_load": new_load_s, "runs": runs,
                                     "nodes": nodes, "transform": transform_s, "staging_rows": counts})
    inc, full = median(runs["incremental"]), median(runs["full-refresh"])
    print(f"\n### Transform: {args.orders:,} orders ({args.orders / 10_000:g}× d2b) + "
          f"{new_orders:,} new ({args.new_percent:g}%), "
          f"{args.repeat} run{'s' if args.repeat > 1 else ''} each\n")
    print("staging rows after the new files: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()) + "\n")
    print(table(["step", "seconds, median (min–max)"], [
        [f"load the {args.orders:,}-order sample (`filedrop run --no-transform`)", f"{load_s:.1f}"],
        ["first `filedrop transform` (seeds, models, tests, docs)", f"{first_s:.1f}"],
        [f"load the {new_orders:,}-order new files", f"{new_load_s:.1f}"],
        ["`dbt build` after the new files, incremental (`filedrop workflows step build`)", spread(runs["incremental"])],
        ["`dbt build` after the new files, `--full-refresh true`", spread(runs["full-refresh"])],
        ["`filedrop transform` after the new files (build + docs)", f"{transform_s:.1f}"],
    ]))
    print(f"\n- incremental / full refresh: **{inc / full:.2f}** (1.0 = the incremental run costs what rebuilding "
          "from all history costs)")
    models = sorted({k for v in nodes.values() for k in v if k.startswith("model.")})
    rows = [[m.split(".")[-1], f"{nodes['incremental'].get(m, 0):.2f}", f"{nodes['full-refresh'].get(m, 0):.2f}"]
            for m in models]
    rows.append(["all nodes (models, seeds, tests)", f"{sum(nodes['incremental'].values()):.2f}",
                 f"{sum(nodes['full-refresh'].values()):.2f}"])
    print("\nPer model, dbt's execution_time in seconds (last run of each kind):\n")
    print(table(["model", "incremental", "full refresh"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
