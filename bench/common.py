"""Shared helpers of the benchmark scripts (not a test, not part of the package).

- :func:`warehouse` — the ``--warehouse`` URL, else an embedded PostgreSQL in a temporary directory;
- :func:`orders_file` — a generated orders file (``filedrop.local.sample``'s generator), cached by size and seed;
- :func:`median`, :func:`table`, :func:`note` — medians, Markdown tables, progress on stderr;
- :func:`save` — results as JSON for the chart (``bench/chart.py``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from filedrop.local.sample import SampleSpec, _chunks, orders_chunk

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "filedrop"
DEFAULT_DATA = CACHE / "bench-data"
DEFAULT_RESULTS = CACHE / "bench-results"

#: The orders columns as the d2b route types them.
COLUMNS = [("order_id", "integer"), ("customer_id", "integer"), ("order_date", "date"), ("product_id", "integer"),
           ("unit_price", "integer"), ("quantity", "integer"), ("total_price", "integer")]
COLUMN_LIST = ", ".join(n for n, _ in COLUMNS)
TYPED_COLUMNS = ", ".join(f"{n} {t}" for n, t in COLUMNS)

_T0 = time.monotonic()


def note(message: str) -> None:
    """Progress on stderr (stdout carries only the Markdown report)."""
    elapsed = time.monotonic() - _T0
    print(f"[{time.strftime('%H:%M:%S')} +{elapsed:5.0f}s] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float]) -> str:
    """``median (min–max, n)`` for the tables."""
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; ``align`` is one char per column, ``l`` or ``r`` (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def md5sum(path: Path) -> str:
    import hashlib

    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def orders_file(data_dir: Path, orders: int, *, seed: int = 1, first_id: int = 1) -> Path:
    """``orders-<N>-s<seed>[-from<id>].csv``: ``filedrop.local.sample``'s orders columns, order ids from ``first_id``.

    Written once and reused (the generator is deterministic); only the orders file is written, not the
    reviews and shipments ``filedrop sample`` writes beside it, to save a minute on the 1 GB file.
    """
    name = f"orders-{orders}-s{seed}" + (f"-from{first_id}" if first_id != 1 else "") + ".csv"
    path = data_dir / name
    if path.exists():
        return path
    data_dir.mkdir(parents=True, exist_ok=True)
    note(f"generating {path.name} ({orders:,} orders)")
    spec = SampleSpec(orders=orders, seed=seed)
    tmp = path.with_name(path.name + ".part")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(tmp), "wb") as sink:
        sink.write((COLUMN_LIST.replace(" ", "") + "\n").encode())
        for i, start, n in _chunks(orders):
            chunk = orders_chunk(spec, i, start, n)
            if first_id != 1:
                chunk = chunk.set_column(0, "order_id", pc.add(chunk.column("order_id"), first_id - 1))
            pacsv.write_csv(chunk, sink, options)
    tmp.replace(path)
    return path


@contextlib.contextmanager
def warehouse(url: str | None, workdir: Path | None = None) -> Iterator[str]:
    """The given URL, else an embedded PostgreSQL in a temporary directory, stopped and removed afterwards."""
    if url:
        yield url
        return
    from filedrop.warehouse import EmbeddedPostgres

    home = Path(tempfile.mkdtemp(prefix="filedrop-bench-pg-", dir=workdir))
    server = EmbeddedPostgres(home)
    note(f"starting an embedded PostgreSQL in {home}")
    started = server.start()
    try:
        yield started
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def server_facts(url: str) -> dict[str, Any]:
    with psycopg.connect(url) as c:
        version = c.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        settings = dict(c.execute(  # type: ignore[arg-type]
            "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
            "('shared_buffers', 'max_wal_size', 'synchronous_commit', 'fsync', 'wal_level')").fetchall())
    git = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "filedrop"], capture_output=True,
                           text=True)
    return {"postgres": version, "settings": settings, "cores": os.cpu_count(), "git": git.stdout.strip(),
            "uncommitted_engine_changes": dirty.stdout.split("\n") if dirty.stdout.strip() else [],
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "load_avg": os.getloadavg()}


def checkpoint(url: str) -> None:
    """Flush dirty buffers before a timed run so one method does not pay for the previous one's writes."""
    with contextlib.suppress(psycopg.Error), psycopg.connect(url, autocommit=True) as c:
        c.execute("CHECKPOINT")


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as c:
        for s in statements:
            c.execute(s)  # type: ignore[arg-type]


def scalar(url: str, query: str) -> Any:
    """The first column of the first row of ``query``."""
    with psycopg.connect(url, autocommit=True) as c:
        row = c.execute(query).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


def psql(url: str, *commands: str) -> float:
    """Run ``psql -c`` commands in one session; returns the wall time of the whole process."""
    argv = ["psql", url, "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for c in commands:
        argv += ["-c", c]
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def save(results_dir: Path, name: str, data: dict[str, Any]) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str))
    note(f"results written to {path}")
    return path


def filedrop_cmd() -> list[str]:
    """The CLI as a subprocess, from this interpreter's environment."""
    return [sys.executable, "-m", "filedrop"]
