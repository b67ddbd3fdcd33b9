"""`filedrop sample`: deterministic, consistent keys, gzip."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

from filedrop.local.sample import SampleSpec, write_sample

REPO = Path(__file__).resolve().parents[2]


def digest(paths: list[Path]) -> list[str]:
    return [hashlib.md5(p.read_bytes()).hexdigest() for p in paths]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = write_sample(tmp_path / "a", SampleSpec(orders=2000, seed=3))
    b = write_sample(tmp_path / "b", SampleSpec(orders=2000, seed=3))
    c = write_sample(tmp_path / "c", SampleSpec(orders=2000, seed=4))
    assert digest(a) == digest(b)
    assert digest(a) != digest(c)


def test_shape_and_consistent_keys(tmp_path: Path) -> None:
    orders_p, reviews_p, ships_p = write_sample(tmp_path, SampleSpec(orders=3000, seed=1))
    orders = list(csv.DictReader(orders_p.open()))
    reviews = list(csv.DictReader(reviews_p.open()))
    ships = list(csv.DictReader(ships_p.open()))
    assert list(orders[0]) == ["order_id", "customer_id", "order_date", "product_id", "unit_price", "quantity",
                               "total_price"]
    assert len(orders) == 3000 and len(ships) == 3000 and len(reviews) == int(3000 * 0.7236)
    by_id = {o["order_id"]: o for o in orders}
    assert all(int(o["total_price"]) == int(o["unit_price"]) * int(o["quantity"]) for o in orders)
    assert all(s["order_id"] in by_id for s in ships)
    assert all(s["shipment_date"] >= by_id[s["order_id"]]["order_date"] for s in ships if s["shipment_date"])
    assert all(not s["delivery_date"] or (s["shipment_date"] and s["delivery_date"] > s["shipment_date"])
               for s in ships)
    assert all("2021-09-06" <= o["order_date"] <= "2022-09-05" for o in orders)
    assert {r["review"] for r in reviews} == {"1", "2", "3", "4", "5"}
    assert {"22", "23"} <= {r["product_id"] for r in reviews}
    # the ids of the if_common dimensions (dbt's relationship tests), as in the real d2b files
    seeds = REPO / "filedrop" / "dbt_project" / "seeds" / "if_common"
    products = {r["product_id"] for r in csv.DictReader((seeds / "dim_products.csv").open())}
    customers = {r["customer_id"] for r in csv.DictReader((seeds / "dim_customers.csv").open())}
    assert {o["product_id"] for o in orders} | {r["product_id"] for r in reviews} <= products
    assert {o["customer_id"] for o in orders} <= customers


def test_gzip(tmp_path: Path) -> None:
    [orders, _, _] = write_sample(tmp_path, SampleSpec(orders=100, seed=1, gzip=True))
    assert orders.name == "orders.csv.gz"
    assert gzip.decompress(orders.read_bytes()).decode().count("\n") == 101
