"""The dlt peer of bench/throughput.py (issue 19): one orders CSV into PostgreSQL through a dlt pipeline, on
dlt's fastest path there — the file read by pyarrow's streaming CSV reader into typed Arrow batches, which
dlt writes as ``csv`` (loaded with ``COPY``) or ``parquet`` (loaded through the ADBC driver's binary ``COPY``).

Runs in its own virtualenv (``make bench-dlt-venv``: dlt is not a dependency of filedrop):

    ~/.cache/filedrop/dlt-venv/bin/python bench/dlt_peer.py --url URL --file orders.csv --format csv

Prints one JSON line: ``{"seconds": ..., "format": ...}``, the time of ``pipeline.run`` (extract, normalize,
load; the interpreter's start and dlt's import are not timed, as Spark's session start is not either).
dlt's anonymous telemetry is switched off: nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"  # before dlt is imported: no usage reports

import dlt  # noqa: E402
import pyarrow as pa  # noqa: E402
from pyarrow import csv  # noqa: E402

#: the orders file's columns (bench/common.py COLUMNS), as Arrow types
ARROW = {"integer": pa.int32(), "date": pa.date32()}


def batches(path: Path, columns: list[tuple[str, str]], block_mb: int = 64) -> Iterator[pa.RecordBatch]:
    reader = csv.open_csv(path, read_options=csv.ReadOptions(block_size=block_mb << 20),
                          convert_options=csv.ConvertOptions(column_types={n: ARROW[t] for n, t in columns}))
    yield from reader


def with_password(url: str) -> str:
    """dlt insists on a password; a server that trusts local connections (the benchmark's embedded one) ignores
    whatever is given."""
    from urllib.parse import urlsplit, urlunsplit

    u = urlsplit(url)
    if u.password is not None:
        return url
    user = u.username or "postgres"
    return urlunsplit(u._replace(netloc=f"{user}:unused@{u.hostname}{f':{u.port}' if u.port else ''}"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--file", type=Path, required=True)
    ap.add_argument("--format", choices=("csv", "parquet"), default="csv")
    ap.add_argument("--dataset", default="bench_dlt")
    ap.add_argument("--columns", required=True, help="name:type,... (integer or date)")
    args = ap.parse_args()
    columns = [tuple(c.split(":", 1)) for c in args.columns.split(",")]
    with tempfile.TemporaryDirectory(prefix="dlt-bench-") as work:
        pipeline = dlt.pipeline(pipeline_name="bench_dlt", pipelines_dir=work,
                                destination=dlt.destinations.postgres(credentials=with_password(args.url)),
                                dataset_name=args.dataset)
        resource = dlt.resource(batches(args.file, columns), name="orders", write_disposition="append")
        started = time.perf_counter()
        info = pipeline.run(resource, loader_file_format=args.format)
        seconds = time.perf_counter() - started
        info.raise_on_failed_jobs()
    print(json.dumps({"seconds": seconds, "format": args.format, "dlt": dlt.__version__}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
