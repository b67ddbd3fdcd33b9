"""Deterministic d2b-shaped sample files (``filedrop sample``), generated column-wise with Arrow.

Same ``--orders`` and ``--seed`` give byte-identical files. Keys are consistent across the three
files: every shipment belongs to an order (shipment_id = order_id), reviews name products that are
ordered. Orders are written in chunks, so memory stays flat and a 1 GB file takes about a minute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

CHUNK_ROWS = 1_000_000
# Ids as in the real d2b files and the if_common dimensions (dbt's relationship tests hold them to it):
PRODUCTS = 25  # product ids 1..25; 22 is the Scooter, 23 the Screwdriver (DESIGN §6)
CUSTOMERS = 25  # customer ids 1..25
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class SampleSpec:
    orders: int
    seed: int = 0
    end_date: date = date(2022, 9, 5)
    days: int = 365
    gzip: bool = False


def _uniform(n: int, seed: int, salt: int) -> pa.Array:
    return pc.random(n, initializer=seed * 1_000_003 + salt)


def _ints(n: int, seed: int, salt: int, low: int, high: int) -> pa.Array:
    """Deterministic integers in [low, high]."""
    r = _uniform(n, seed, salt)
    return pc.add(pc.cast(pc.floor(pc.multiply(r, high - low + 1)), pa.int64()), low)


def _chunks(total: int) -> Iterator[tuple[int, int, int]]:
    for i, start in enumerate(range(0, total, CHUNK_ROWS)):
        yield i, start, min(CHUNK_ROWS, total - start)


def _order_dates(spec: SampleSpec, chunk: int, n: int) -> pa.Array:
    first = (spec.end_date - _EPOCH).days - spec.days + 1
    days = _ints(n, spec.seed, 10 * chunk + 1, first, first + spec.days - 1)
    return pc.cast(pc.cast(days, pa.int32()), pa.date32())


def orders_chunk(spec: SampleSpec, chunk: int, start: int, n: int) -> pa.Table:
    seed = spec.seed
    unit = _ints(n, seed, 10 * chunk + 2, 10, 1000)
    qty = _ints(n, seed, 10 * chunk + 3, 1, 10)
    return pa.table({
        "order_id": pa.array(range(start + 1, start + n + 1), pa.int64()),
        "customer_id": _ints(n, seed, 10 * chunk + 4, 1, CUSTOMERS),
        "order_date": _order_dates(spec, chunk, n),
        "product_id": _ints(n, seed, 10 * chunk + 5, 1, PRODUCTS),
        "unit_price": unit,
        "quantity": qty,
        "total_price": pc.multiply(unit, qty),
    })


def shipments_chunk(spec: SampleSpec, chunk: int, start: int, n: int) -> pa.Table:
    seed = spec.seed + 7919
    order_date = pc.cast(pc.cast(_order_dates(spec, chunk, n), pa.int32()), pa.int64())
    ship = pc.add(order_date, _ints(n, seed, 10 * chunk + 6, 0, 10))
    no_ship = pc.less(_uniform(n, seed, 10 * chunk + 7), 0.35)
    deliver = pc.add(ship, _ints(n, seed, 10 * chunk + 8, 1, 7))
    no_delivery = pc.or_(no_ship, pc.less(_uniform(n, seed, 10 * chunk + 9), 0.4))

    def as_date(values: pa.Array, null_mask: pa.Array) -> pa.Array:
        d = pc.cast(pc.cast(values, pa.int32()), pa.date32())
        return pc.if_else(null_mask, pa.scalar(None, pa.date32()), d)

    ids = pa.array(range(start + 1, start + n + 1), pa.int64())
    return pa.table({
        "shipment_id": ids,
        "order_id": ids,
        "shipment_date": as_date(ship, no_ship),
        "delivery_date": as_date(deliver, no_delivery),
    })


def reviews_chunk(spec: SampleSpec, chunk: int, start: int, n: int) -> pa.Table:
    seed = spec.seed + 104729
    return pa.table({
        "review": _ints(n, seed, 10 * chunk + 1, 1, 5),
        "product_id": _ints(n, seed, 10 * chunk + 2, 1, PRODUCTS),
    })


def _write(path: Path, total: int, make: Callable[[SampleSpec, int, int, int], pa.Table], spec: SampleSpec,
           on_rows: Callable[[int], None] | None) -> Path:
    if spec.gzip:
        path = path.with_name(path.name + ".gz")
    tmp = path.with_name(path.name + ".part")
    sink: pa.NativeFile = pa.OSFile(str(tmp), "wb")
    if spec.gzip:
        sink = pa.CompressedOutputStream(sink, "gzip")
    options = pacsv.WriteOptions(include_header=False, quoting_style="none")
    with sink:
        sink.write((",".join(make(spec, 0, 0, 0).column_names) + "\n").encode())
        for i, start, n in _chunks(total):
            pacsv.write_csv(make(spec, i, start, n), sink, options)
            if on_rows:
                on_rows(n)
    tmp.replace(path)  # readers never see a half-written file
    return path


def write_sample(out: Path, spec: SampleSpec, on_rows: Callable[[int], None] | None = None) -> list[Path]:
    """Write orders.csv, reviews.csv and shipment_deliveries.csv (``.gz`` with ``gzip``) into ``out``."""
    if spec.orders < 0:
        raise ValueError("--orders must be zero or more")
    out.mkdir(parents=True, exist_ok=True)
    reviews = int(spec.orders * 0.7236)
    return [
        _write(out / "orders.csv", spec.orders, orders_chunk, spec, on_rows),
        _write(out / "reviews.csv", reviews, reviews_chunk, spec, on_rows),
        _write(out / "shipment_deliveries.csv", spec.orders, shipments_chunk, spec, on_rows),
    ]


def total_rows(spec: SampleSpec) -> int:
    return 2 * spec.orders + int(spec.orders * 0.7236)
