"""FileRoute model: the shipped d2b routes, matching, and validation messages a user can act on."""

from __future__ import annotations

from pathlib import Path

import pytest

from filedrop.routes import RouteError, load_routes, parse_routes_yaml, route_for, route_named

BASE = """apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {{name: {name}}}
spec:
  match: {{{match}}}
  table: {table}
  columns: {columns}
  mode: {mode}{extra}
"""


def route_yaml(name: str = "things", match: str = "pattern: '^things'", table: str = "things",
               columns: str = "[{name: id, type: integer}]", mode: str = "append", extra: str = "") -> str:
    return BASE.format(name=name, match=match, table=table, columns=columns, mode=mode, extra=extra)


def test_default_d2b_routes() -> None:
    routes = load_routes()
    assert [(r.name, r.spec.table, r.spec.mode, r.spec.primary_key) for r in routes] == [
        ("orders", "orders", "upsert", ("order_id",)),
        ("reviews", "reviews", "replace_source", ()),
        ("shipment-deliveries", "shipment_deliveries", "upsert", ("shipment_id",)),
    ]
    orders = route_named(routes, "orders")
    assert orders.column_names == ("order_id", "customer_id", "order_date", "product_id", "unit_price",
                                   "quantity", "total_price")


@pytest.mark.parametrize("bucket,key,expected", [
    (None, "orders.csv", "orders"),
    ("any-bucket", "orders_data/orders.csv.gz", "orders"),
    (None, "sub/dir/reviews_2022.csv", "reviews"),
    (None, "shipment_deliveries.csv", "shipment-deliveries"),
    (None, "shipments_deliveries.csv", "shipment-deliveries"),  # the brief's spelling
    (None, "orders.json", None),
    (None, "old_orders.csv", None),  # the pattern is anchored on the base name
])
def test_matching_by_base_name(bucket: str | None, key: str, expected: str | None) -> None:
    found = route_for(load_routes(), bucket, key)
    assert (found.name if found else None) == expected


def test_bucket_and_prefix_filter_s3_objects_only() -> None:
    [r] = parse_routes_yaml(route_yaml(match="bucket: b1, prefix: in/, pattern: '^things'"))
    assert r.matches("b1", "in/things.csv")
    assert not r.matches("b2", "in/things.csv")
    assert not r.matches("b1", "out/things.csv")
    assert r.matches(None, "out/things.csv")  # local files: no bucket, prefix does not apply


@pytest.mark.parametrize("kwargs,message", [
    ({"table": "Bad-Name"}, "spec.table: table name 'Bad-Name' is not a valid identifier"),
    ({"table": "x" * 64}, "is not a valid identifier"),
    ({"columns": "[{name: id, type: int}]"}, "spec.columns.0.type: Input should be 'integer'"),
    ({"columns": '[{name: "drop table", type: text}]'}, "column name 'drop table' is not a valid identifier"),
    ({"columns": "[{name: _row_number, type: bigint}]"}, "reserved for lineage"),
    ({"columns": "[{name: a, type: text}, {name: a, type: text}]"}, "duplicate column name(s): a"),
    ({"mode": "upsert"}, "mode 'upsert' needs primaryKey"),
    ({"mode": "upsert", "extra": "\n  primaryKey: [nope]"}, "primaryKey column(s) not in columns: nope"),
    ({"mode": "merge"}, "spec.mode: Input should be 'append', 'replace_source', 'replace_table' or 'upsert'"),
    ({"match": "pattern: '('"}, "pattern '(' is not a valid regular expression"),
    ({"extra": "\n  onError: ignore"}, "spec.onError"),
    ({"extra": "\n  maxBadRowsPercent: 150"}, "less than or equal to 100"),
    ({"extra": "\n  format: {delimiter: ';;'}"}, "must be exactly one character"),
    ({"extra": "\n  format: {encoding: klingon}"}, "unknown encoding 'klingon'"),
    ({"extra": "\n  colums: []"}, "spec.colums: Extra inputs are not permitted"),
    ({"name": "Orders"}, "metadata.name 'Orders' must be a Kubernetes name"),
])
def test_validation_messages(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(RouteError) as exc:
        parse_routes_yaml(route_yaml(**kwargs), "routes.yaml")
    assert message in str(exc.value)
    assert str(exc.value).startswith("routes.yaml document 1")


def test_wrong_kind_and_version() -> None:
    with pytest.raises(RouteError, match="kind is 'FileDrop', expected 'FileRoute'"):
        parse_routes_yaml(route_yaml().replace("kind: FileRoute", "kind: FileDrop"))
    with pytest.raises(RouteError, match="apiVersion is 'filedrop.dev/v1'"):
        parse_routes_yaml(route_yaml().replace("v1alpha1", "v1"))


def test_files_and_directories_and_uniqueness(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(route_yaml("a", table="ta") + "---\n" + route_yaml("b", table="tb"))
    (tmp_path / "c.yml").write_text(route_yaml("c", table="tc"))
    (tmp_path / "ignored.txt").write_text("not yaml")
    assert [r.name for r in load_routes([tmp_path])] == ["a", "b", "c"]
    (tmp_path / "d.yaml").write_text(route_yaml("d", table="ta"))
    with pytest.raises(RouteError, match="both target table 'ta'"):
        load_routes([tmp_path])
    with pytest.raises(RouteError, match="no FileRoute manifests found"):
        load_routes([tmp_path / "missing"])


def test_overlapping_routes_are_reported() -> None:
    routes = parse_routes_yaml(route_yaml("a", table="ta") + "---\n" + route_yaml("b", table="tb"))
    with pytest.raises(RouteError, match="matches several FileRoutes: a, b"):
        route_for(routes, None, "things.csv")
