"""Benchmark (not a test): many small files through the local runtime (issue 8 item 4).

    .venv/bin/python bench/small_files.py [--files 1000] [--rows 260] [--repeat 3] [--profile-files 300]
        [--warehouse URL]

Splits a generated orders file into ``--files`` files of ``--rows`` rows (about 10 KB each, distinct order ids,
named ``orders_0001.csv`` …) and times ``filedrop run --source DIR --no-transform --warehouse URL`` (the d2b
routes: orders is an ``upsert`` route) into fresh staging and bookkeeping schemas each run. For scale, the
floor: one connection running one ``COPY`` per file into a plain table, and what opening a connection costs.
Then one run under cProfile (``python -m cProfile -m filedrop run …``, into fresh schemas, on the first
``--profile-files`` files) and the per-file cost of filedrop's own steps (cumulative time / files).
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from common import (
    COLUMN_LIST,
    DEFAULT_DATA,
    DEFAULT_RESULTS,
    TYPED_COLUMNS,
    execute,
    filedrop_cmd,
    median,
    note,
    orders_file,
    save,
    spread,
    table,
    warehouse,
)

#: filedrop functions whose cumulative time the profile summary names, with what they stand for.
STEPS = [
    ("pipeline.py", "run_once", "the whole run"),
    ("session.py", "load_object", "one load, everything below (one connection per call)"),
    ("session.py", "_load", "one load, everything below"),
    ("client.py", "open", "open a connection"),
    ("schema.py", "ensure_meta", "bookkeeping DDL (CREATE … IF NOT EXISTS, CREATE OR REPLACE FUNCTION)"),
    ("schema.py", "ensure_staging", "staging DDL + catalog check"),
    ("history.py", "loaded_versions", "history: loaded versions of the key (twice per file)"),
    ("history.py", "next_attempt", "history: attempt number"),
    ("history.py", "insert", "history: insert the running row"),
    ("history.py", "finish", "history: mark loaded"),
    ("direct.py", "parse", "engine: CREATE the load table + COPY"),
    ("session.py", "_finalize", "the apply transaction (upsert, drop load table, history)"),
    ("session.py", "_apply", "  of which the upsert statement"),
    ("sources.py", "describe", "MD5 of the file"),
    ("sources.py", "list_objects", "listing the directory"),
    ("schema.py", "prepare_meta", "dead-load cleanup (once per run)"),
]


def split_files(data: Path, files: int, rows: int, seed: int) -> Path:
    out = data / f"small-{files}x{rows}"
    if (out / f"orders_{files:04d}.csv").exists():
        return out
    src = orders_file(data, files * rows, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    note(f"splitting {src.name} into {files} files of {rows} rows in {out}")
    with open(src, "rb") as f:
        header = f.readline()
        for i in range(1, files + 1):
            body = b"".join(f.readline() for _ in range(rows))
            (out / f"orders_{i:04d}.csv").write_bytes(header + body)
    return out


def run_cli(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout.decode()[-3000:]}")
    return elapsed


def floor(url: str, paths: list[Path]) -> float:
    execute(url, "DROP TABLE IF EXISTS bench_small_floor", f"CREATE TABLE bench_small_floor ({TYPED_COLUMNS})")
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        for p in paths:
            with cur.copy(f"COPY bench_small_floor ({COLUMN_LIST}) FROM STDIN (FORMAT csv, HEADER)") as copy:
                copy.write(p.read_bytes())
    elapsed = time.perf_counter() - started
    execute(url, "DROP TABLE bench_small_floor")
    return elapsed


def connect_cost(url: str, n: int = 50) -> float:
    started = time.perf_counter()
    for _ in range(n):
        psycopg.connect(url, autocommit=True, application_name="filedrop").close()
    return (time.perf_counter() - started) / n


def fresh(url: str, name: str) -> dict[str, str]:
    execute(url, f"DROP SCHEMA IF EXISTS {name} CASCADE", f"DROP SCHEMA IF EXISTS {name}_meta CASCADE")
    return {**os.environ, "FILEDROP_STAGING_SCHEMA": name, "FILEDROP_META_SCHEMA": f"{name}_meta",
            "FILEDROP_NO_COLOR": "1", "COLUMNS": "160"}


def profile_summary(prof: Path, files: int) -> tuple[list[list[str]], list[list[str]]]:
    stats = pstats.Stats(str(prof))
    raw = stats.stats  # type: ignore[attr-defined]
    ours = []
    for fname, name, what in STEPS:
        hits = [(k, v) for k, v in raw.items() if k[0].endswith(f"filedrop/{fname}") and k[2] == name]
        if not hits:
            continue
        cum = sum(v[3] for _, v in hits)
        calls = sum(v[1] for _, v in hits)
        ours.append([f"`{fname.removesuffix('.py')}.{name}`", what, f"{calls:,}", f"{cum:.2f}",
                     f"{1000 * cum / files:.1f}"])
    top = sorted(raw.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    flat = [[f"`{Path(k[0]).name}:{k[1]}({k[2]})`", f"{v[1]:,}", f"{v[2]:.2f}", f"{1000 * v[2] / files:.1f}"]
            for k, v in top]
    return ours, flat


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rows", type=int, default=260, help="rows per file (260 rows are about 10 KB)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile-files", type=int, default=300, help="files in the profiled run (0: no profile)")
    ap.add_argument("--warehouse")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    args = ap.parse_args()
    src = split_files(args.data, args.files, args.rows, args.seed)
    paths = sorted(src.glob("orders_*.csv"))[: args.files]
    avg_kb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
    with warehouse(args.warehouse) as url:
        walls, floors = [], []
        for r in range(args.repeat):
            env = fresh(url, "bench_small")
            note(f"small files: filedrop run, {len(paths)} files, run {r + 1}/{args.repeat}")
            walls.append(run_cli(filedrop_cmd() + ["run", "--source", str(src), "--no-transform", "--warehouse", url],
                                 env))
            note(f"  {walls[-1]:.1f}s, {len(paths) / walls[-1]:.1f} files/s")
            floors.append(floor(url, paths))
            note(f"  floor (one connection, one COPY per file): {floors[-1]:.2f}s")
        startup = run_cli(filedrop_cmd() + ["--help"], dict(os.environ))
        conn_s = connect_cost(url)
        ours: list[list[str]] = []
        flat: list[list[str]] = []
        if args.profile_files:
            pdir = args.data / f"small-profile-{args.profile_files}"
            pdir.mkdir(exist_ok=True)
            for p in paths[: args.profile_files]:
                if not (pdir / p.name).exists():
                    os.link(p, pdir / p.name)
            prof = args.results / "small_files.prof"
            args.results.mkdir(parents=True, exist_ok=True)
            env = fresh(url, "bench_small")
            note(f"small files: profiled run on {args.profile_files} files (cProfile)")
            secs = run_cli([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "filedrop", "run", "--source",
                            str(pdir), "--no-transform", "--warehouse", url], env)
            note(f"  {secs:.1f}s under cProfile; profile in {prof}")
            ours, flat = profile_summary(prof, args.profile_files)
        execute(url, "DROP SCHEMA IF EXISTS bench_small CASCADE", "DROP SCHEMA IF EXISTS bench_small_meta CASCADE")
    n = len(paths)
    save(args.results, "small_files", {"files": n, "avg_kb": avg_kb, "walls": walls, "floors": floors,
                                       "cli_startup": startup, "connect": conn_s})
    print(f"\n### {n:,} files of ~{avg_kb:.1f} KB ({args.rows} rows) through `filedrop run --no-transform` "
          f"({args.repeat} run{'s' if args.repeat > 1 else ''})\n")
    wall = median(walls)
    print(table(["what", "seconds, median (min–max)", "files/s", "ms per file"], [
        ["`filedrop run --source DIR --no-transform` (whole command)", spread(walls), f"{n / wall:.1f}",
         f"{1000 * wall / n:.1f}"],
        ["floor: one connection, one `COPY` per file into a plain table", spread(floors),
         f"{n / median(floors):.0f}", f"{1000 * median(floors) / n:.2f}"],
    ]))
    print(f"\n- CLI start-up (`filedrop --help`): {startup:.2f} s; opening one connection: {1000 * conn_s:.1f} ms")
    if ours:
        print(f"\nProfile (cProfile, {args.profile_files} files; ms per file are cumulative time / files; "
              "nested rows are included in their parents):\n")
        print(table(["function", "what", "calls", "seconds", "ms per file"], ours, "llrrr"))
        print("\nTop functions by own time (tottime):\n")
        print(table(["function", "calls", "seconds", "ms per file"], flat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
