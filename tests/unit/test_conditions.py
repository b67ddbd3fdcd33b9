"""Ready conditions (metav1.Condition-shaped) of FileDrops and FileRoutes, and telling whether two routes
can match the same key."""

from __future__ import annotations

from typing import Any

from filedrop.cluster.conditions import camel, condition, filedrop_ready, route_readiness
from filedrop.cluster.resources import route_manifest
from filedrop.routes import load_routes, overlap, parse_route

T0, T1 = "2026-12-07T10:00:00Z", "2026-12-07T10:05:00Z"


def route(name: str, pattern: str, table: str | None = None, **match: str) -> dict[str, Any]:
    obj = {"apiVersion": "filedrop.dev/v1alpha1", "kind": "FileRoute", "metadata": {"name": name, "generation": 3},
           "spec": {"match": {"pattern": pattern, **match}, "table": table or name.replace("-", "_"),
                    "columns": [{"name": "id", "type": "integer"}]}}
    return obj


def test_reasons_are_camel_case_and_the_transition_time_moves_only_with_the_status() -> None:
    assert camel("skipped_duplicate") == "SkippedDuplicate" and camel("WaitingForLoadSlot") == "WaitingForLoadSlot"
    queued = filedrop_ready("Queued", "Queued", "queued", 1, None, T0)
    assert queued == {"type": "Ready", "status": "False", "observedGeneration": 1, "reason": "Queued",
                      "message": "queued", "lastTransitionTime": T0}
    loading = filedrop_ready("Loading", "Loading", "loading (attempt 1)", 1, [queued], T1)
    assert loading["lastTransitionTime"] == T0  # still False: no transition
    loaded = filedrop_ready("Loaded", "Loaded", "3 rows", 1, [loading], T1)
    assert (loaded["status"], loaded["lastTransitionTime"]) == ("True", T1)
    skipped = filedrop_ready("Skipped", "skipped_superseded", "newer version loaded", 2, None, T1)
    assert (skipped["status"], skipped["reason"], skipped["observedGeneration"]) == ("True", "SkippedSuperseded", 2)
    assert filedrop_ready("Failed", "NoRoute", "no FileRoute matches", 1, [loaded], T1)["status"] == "False"
    assert len(condition(False, "Invalid", "x" * 40000, 1, None, T0)["message"]) == 32768  # the API's limit


def test_overlap_is_decided_on_the_patterns_as_automata() -> None:
    def r(pattern: str, **match: str) -> Any:
        return parse_route(route("r", pattern, **match))

    assert overlap(r(r"^orders.*\.csv$"), r(r"^orders_2022.*\.csv$")) is True
    assert overlap(r("orders"), r(r"\.csv$")) is True  # search semantics: orders.csv matches both
    assert overlap(r(r"^orders\.csv$"), r(r"^orders\.csv\.gz$")) is False
    assert overlap(r(r"^a.*$"), r(r"^b.*$")) is False
    assert overlap(r("a", bucket="one"), r("a", bucket="two")) is False
    assert overlap(r("a", prefix="in/"), r("a", prefix="out/")) is False
    assert overlap(r("a", prefix="in/"), r("a", prefix="in/2022/")) is True
    assert overlap(r(r"^x/y$"), r("y")) is False  # a base name never holds a slash
    assert overlap(r("(?i)orders"), r("x")) is None  # beyond the checker: nothing is claimed
    routes = load_routes()  # the shipped d2b routes are disjoint
    assert {overlap(a, b) for i, a in enumerate(routes) for b in routes[i + 1:]} == {False}


def test_route_readiness_names_what_to_change() -> None:
    shipped = [route_manifest(r) for r in load_routes()]
    assert {name: v[:2] for name, v in route_readiness(shipped).items()} == {
        "orders": (True, "Valid"), "reviews": (True, "Valid"), "shipment-deliveries": (True, "Valid")}
    verdicts = route_readiness([
        route("orders", r"^orders.*\.csv$"),
        route("orders-2022", r"^orders_2022.*\.csv$"),  # overlaps orders
        route("copy", r"^copy.*\.csv$", table="orders_2022"),  # the same table as orders-2022
        route("broken", "(unclosed"),
    ])
    assert verdicts["broken"][:2] == (False, "Invalid") and "not a valid regular expression" in verdicts["broken"][2]
    assert verdicts["orders"][:2] == (False, "Overlapping") and "FileRoute orders-2022" in verdicts["orders"][2]
    ok, reason, message = verdicts["orders-2022"]
    assert not ok and "FileRoute orders" in message and "FileRoute copy also loads table orders_2022" in message
    assert verdicts["copy"][:2] == (False, "TableConflict")


def test_overlaps_the_checker_cannot_judge_are_said_not_hidden() -> None:
    def r(name: str, pattern: str) -> Any:
        return parse_route(route(name, pattern))

    # alternation inside a group and negated classes are judged (they used to be skipped as unreadable)
    assert overlap(r("a", r"^(orders|items)_.*\.csv$"), r("b", r"^orders_.*\.csv$")) is True
    assert overlap(r("a", r"^[^_]+_x\.csv$"), r("b", r"^y_x\.csv$")) is True
    # Python's \w and \d are Unicode (é.csv matches ^\w+\.csv$), greenery's ASCII: not judged, never "no overlap"
    assert overlap(r("a", r"^\w+\.csv$"), r("b", "^é")) is None
    assert overlap(r("a", r"^a|b$"), r("b", "^b$")) is None  # (^a)|(b$): anchors inside an alternation
    verdicts = route_readiness([route("words", r"^\w+\.csv$"), route("accents", r"^é.*\.csv$")])
    ok, reason, message = verdicts["words"]
    assert ok and reason == "Valid" and "FileRoute(s) accents was not checked" in message
