"""filedrop's CRDs on the real API server, as a user meets them: `kubectl explain` describes every field,
`kubectl get` shows the key, conditions are metav1.Condition-shaped, and `filedrop status -n` counts the
FileDrops the API server has."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from filedrop.cluster.resources import filedrop_manifest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.k8s


@pytest.fixture(scope="module")
def crds(k8s_cluster: Any) -> list[str]:
    return list(k8s_cluster.install_crds([REPO / "crds"]))


def _undescribed(schema: dict[str, Any], path: str) -> tuple[int, list[str]]:
    """(fields, fields without a description) under an OpenAPI v3 schema the server publishes."""
    fields, missing = 0, []
    for name, sub in (schema.get("properties") or {}).items():
        fields += 1
        if not (sub.get("description") or "").strip():
            missing.append(f"{path}.{name}")
        n, m = _undescribed(sub, f"{path}.{name}")
        fields, missing = fields + n, missing + m
    if "items" in schema:
        n, m = _undescribed(schema["items"], f"{path}[]")
        fields, missing = fields + n, missing + m
    return fields, missing


def test_kubectl_explain_describes_every_field(k8s_cluster: Any, crds: list[str]) -> None:
    # the server publishes a new CRD's OpenAPI a moment after it is Established
    raw = k8s_cluster.wait_for(lambda: k8s_cluster.kubectl("get", "--raw", "/openapi/v3/apis/filedrop.dev/v1alpha1",
                                                           check=False).stdout, 60, "the CRDs' OpenAPI")
    doc = json.loads(raw)
    schemas = doc["components"]["schemas"]
    for kind, at_least in (("FileDrop", 30), ("FileRoute", 35)):
        [schema] = [s for name, s in schemas.items() if name.endswith(f".v1alpha1.{kind}")]
        spec_and_status = {"properties": {k: schema["properties"][k] for k in ("spec", "status")}}
        fields, missing = _undescribed(spec_and_status, kind.lower())
        assert fields >= at_least and missing == [], f"{kind}: {len(missing)} of {fields} fields undescribed"
    # what a user reads
    out = k8s_cluster.kubectl("explain", "filedrop.status.conditions.reason").stdout
    assert "CamelCase" in out
    out = " ".join(k8s_cluster.kubectl("explain", "filedrop.status.phase").stdout.split())
    assert "waiting for a load slot" in out and "Skipped" in out
    assert "not final yet" in " ".join(k8s_cluster.kubectl("explain", "fileroute.status.filesPending").stdout.split())


def test_get_filedrops_shows_the_key_and_conditions_are_metav1_shaped(k8s_cluster: Any, crds: list[str],
                                                                      k8s_namespace: str) -> None:
    ns = k8s_namespace
    body = filedrop_manifest(bucket="drop", key="in/orders_2022-09-05.csv", etag="e1", size=10, source="manual",
                             route="orders")
    k8s_cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body))
    name = body["metadata"]["name"]
    header, row = k8s_cluster.kubectl("get", "filedrops", "-n", ns).stdout.splitlines()[:2]
    assert header.split() == ["NAME", "KEY", "ROUTE", "PHASE", "ROWS", "SIZE", "AGE"]
    assert row.split()[1] == "in/orders_2022-09-05.csv"
    wide = k8s_cluster.kubectl("get", "filedrops", "-n", ns, "-o", "wide").stdout.splitlines()[0].split()
    assert wide == ["NAME", "KEY", "ROUTE", "PHASE", "ROWS", "REJECTED", "SIZE", "ENGINE", "BUCKET", "MESSAGE", "AGE"]
    # the singular names one object (a category named "filedrop" used to shadow it: "only one resource")
    assert "in/orders_2022-09-05.csv" in k8s_cluster.kubectl("describe", "filedrop", name, "-n", ns).stdout
    assert k8s_cluster.kubectl_json("get", "filedrop", name, "-n", ns)["spec"]["etag"] == "e1"
    assert name in k8s_cluster.kubectl("get", "filedrop-all", "-n", ns).stdout  # the category: both kinds

    def patch(condition: dict[str, Any]) -> Any:
        return k8s_cluster.kubectl("patch", "filedrop", name, "-n", ns, "--subresource=status", "--type=merge",
                                   "-p", json.dumps({"status": {"phase": "Queued", "conditions": [condition]}}),
                                   check=False)
    good = {"type": "Ready", "status": "False", "observedGeneration": 1, "reason": "WaitingForLoadSlot",
            "message": "waiting", "lastTransitionTime": "2026-12-07T10:00:00Z"}
    assert patch(good).returncode == 0
    bad = patch({**good, "reason": "skipped_duplicate!"})  # not a CamelCase word
    assert bad.returncode != 0 and "reason" in bad.stderr
    missing = patch({k: v for k, v in good.items() if k != "lastTransitionTime"})
    assert missing.returncode != 0 and "lastTransitionTime: Required value" in missing.stderr
    # kubectl wait reads it (False now: it times out at once, naming the condition)
    waited = k8s_cluster.kubectl("wait", "filedrop", name, "-n", ns, "--for=condition=Ready", "--timeout=1s",
                                 check=False)
    assert waited.returncode != 0 and "timed out" in waited.stderr


def test_status_counts_the_namespaces_filedrops(k8s_cluster: Any, crds: list[str], k8s_namespace: str,
                                               warehouse: str, tmp_path: Path) -> None:
    ns = k8s_namespace
    phases = {"a.csv": "Queued", "b.csv": "Loading", "c.csv": "Loaded", "d.csv": None}
    for key, phase in phases.items():
        body = filedrop_manifest(bucket="drop", key=f"orders_{key}", etag="e", size=1, source="manual",
                                 route="orders")
        k8s_cluster.kubectl("create", "-n", ns, "-f", "-", input=json.dumps(body))
        if phase:
            k8s_cluster.kubectl("patch", "filedrop", body["metadata"]["name"], "-n", ns, "--subresource=status",
                                "--type=merge", "-p", json.dumps({"status": {"phase": phase}}))
    def status(*args: str, kubeconfig: str = str(k8s_cluster.kubeconfig)) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": kubeconfig, "FILEDROP_HOME": str(tmp_path / "home")}
        return subprocess.run([sys.executable, "-m", "filedrop", "status", "--warehouse", warehouse, "-n", ns, *args],
                              capture_output=True, text=True, env=env, timeout=120)
    res = status("-o", "json")
    assert res.returncode == 0, res.stderr
    drops = json.loads(res.stdout)["filedrops"]
    assert drops["by_phase"] == {"Pending": 1, "Queued": 1, "Loading": 1, "Loaded": 1} and drops["waiting"] == 2
    assert drops["oldest_waiting"]["key"] in ("orders_a.csv", "orders_d.csv")  # created in that order
    assert drops["oldest_waiting"]["age_seconds"] >= 0
    assert f"FileDrops in {ns}: 1 Pending, 1 Queued, 1 Loading, 1 Loaded; 2 waiting" in status().stdout
    res = status(kubeconfig=str(tmp_path / "nowhere"))
    assert res.returncode == 75 and "cannot list FileDrops" in res.stderr, res.stderr
