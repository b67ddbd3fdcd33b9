"""The chart's files against their sources, without a cluster: CRDs identical to crds/,
default FileRoutes equal to the shipped d2b routes, values typed by a strict schema and documented."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from filedrop.routes import load_routes, parse_route

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "filedrop"


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@pytest.mark.parametrize("name", ["filedrop.yaml", "fileroute.yaml"])
def test_chart_crds_are_the_repositorys(name: str) -> None:
    # Copied, not linked: `helm package` and chart repositories want real files. Fix with:
    #   cp crds/*.yaml helm/filedrop/crds/
    assert (CHART / "crds" / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
        f"helm/filedrop/crds/{name} differs from crds/{name}: cp crds/{name} helm/filedrop/crds/")
    # kopf's peering CRDs are a prerequisite like Argo's and spark-operator's (not copied into the chart)
    assert sorted(p.name for p in (CHART / "crds").glob("*.yaml")) == ["filedrop.yaml", "fileroute.yaml"]


def test_default_fileroutes_are_the_d2b_routes() -> None:
    from_values = {name: parse_route({"apiVersion": "filedrop.dev/v1alpha1", "kind": "FileRoute",
                                      "metadata": {"name": name}, "spec": spec}, "values.yaml")
                   for name, spec in _values()["fileRoutes"].items()}
    shipped = {r.name: r for r in load_routes()}
    assert from_values == shipped


def test_fileroute_schema_in_values_is_the_crds() -> None:
    crd = yaml.safe_load((REPO / "crds" / "fileroute.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

    def strip(o: Any) -> Any:  # the Kubernetes extensions (CEL rules, list types) mean nothing to Helm
        if isinstance(o, dict):
            return {k: strip(v) for k, v in o.items() if not k.startswith("x-kubernetes-")}
        return [strip(v) for v in o] if isinstance(o, list) else o
    assert _schema()["$defs"]["fileRouteSpec"] == strip(spec), (
        "crds/fileroute.yaml changed: copy its spec schema, without the x-kubernetes-* keys, into "
        "helm/filedrop/values.schema.json $defs.fileRouteSpec")


def test_values_schema_is_strict_and_accepts_the_shipped_values() -> None:
    schema = _schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    v = jsonschema.Draft202012Validator(schema)
    values = _values()
    assert list(v.iter_errors(values)) == []
    all_on = _merge(values, yaml.safe_load((CHART / "ci" / "all-on-values.yaml").read_text()))
    assert list(v.iter_errors(all_on)) == []

    def errors(over: dict[str, Any]) -> list[str]:
        return [e.message for e in v.iter_errors(_merge(values, over))]
    assert errors({"operator": {"maxLoad": 3}}) and errors({"typo": 1})  # unknown keys are refused
    assert errors({"bridge": {"enabled": True}})  # needs queueUrl
    assert errors({"argo": {"enabled": True, "exportTo": "s3://b/x"}})  # needs docs.s3Uri
    assert errors({"argo": {"schedule": "every day"}})
    assert errors({"fileRoutes": {"orders": {"table": "Orders"}}})
    assert errors({"image": {"pullPolicy": "Sometimes"}})

    # every object of the schema says which keys it has; descriptions for every property
    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                assert node.get("additionalProperties") is False, f"{path} accepts unknown keys"
                for key, sub in node["properties"].items():
                    assert "description" in sub or path.startswith("$defs"), f"{path}.{key} has no description"
            for k, sub in node.items():
                walk(sub, f"{path}.{k}" if path else k)
    walk({k: v for k, v in schema.items() if k != "$defs"}, "")


def _leaf_paths(node: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        return [p for k, v in node.items() for p in _leaf_paths(v, (*prefix, str(k)))]
    return [prefix]


def test_every_value_is_documented_in_values_yaml() -> None:
    """Each leaf value, or a map it is part of (resources, fileRoutes ...), has a `# --` comment above it."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    documented: set[tuple[str, ...]] = set()
    stack: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z0-9_.-]+):", line)
        if not m:
            continue
        indent, key = len(m.group(1)), m.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --"):
            j -= 1
        if j >= 0 and lines[j].strip().startswith("# --"):
            documented.add(tuple(k for _, k in stack))
    undocumented = [".".join(p) for p in _leaf_paths(_values())
                    if not any(p[:n] in documented for n in range(1, len(p) + 1))]
    assert undocumented == []


def test_templates_one_resource_kind_per_file_named_component_kind() -> None:
    allowed_components = {"operator", "bridge", "loader", "spark", "submitter", "workflows", "docs", "crds"}
    for path in (CHART / "templates").glob("*.yaml"):
        if path.name in ("configmap.yaml", "fileroute.yaml"):
            continue
        component, _, kind = path.stem.partition("-")
        assert component in allowed_components and kind, path.name
        kinds = set(re.findall(r"^kind: (\w+)", path.read_text(), re.M))
        assert len(kinds) == 1 and kind == next(iter(kinds)).lower(), (path.name, kinds)
