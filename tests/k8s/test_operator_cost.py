"""What a waiting FileDrop costs the API server, and how soon the operator notices that its Job ended.

The operator runs as in the end-to-end tests (a subprocess with its ServiceAccount's token), but talks to
kube-apiserver through a counting proxy (tests/support/apiproxy.py), so every request it makes is seen.
Two FileDrops wait: one Loading while its Job cannot run (the Job is suspended), one Queued behind it
(FILEDROP_MAX_LOADS=1). Over a window of FILEDROP_COST_WINDOW seconds (default 30) the operator must make
almost no request (the operator's own upkeep, watch streams renewing and the peering keep-alive, is
reported, not counted). Then the Job is let run: the FileDrop must leave Loading within seconds, and both
must end Loaded. The figures are printed, and written to FILEDROP_COST_REPORT (JSON) if set.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from filedrop.cluster.jobs import job_name
from filedrop.cluster.resources import FILEDROP_LABEL, filedrop_manifest
from filedrop.routes import parse_routes_yaml
from tests.support.apiproxy import CountingProxy, Request
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import LOADER_IMAGE, stack_in_new_namespace
from tests.support.k8s.topology import Stack

REPO = Path(__file__).resolve().parents[2]
WINDOW = float(os.environ.get("FILEDROP_COST_WINDOW", "30"))
#: requests per minute the two waiting FileDrops may cost together (a safety re-check each, say)
BUDGET_PER_MINUTE = 6
pytestmark = pytest.mark.k8s

ITEMS_ROUTE = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: items}
spec:
  match: {pattern: '^items.*\\.csv$'}
  table: items
  columns:
    - {name: id, type: integer, nullable: false}
    - {name: name, type: text}
  mode: append
""")[0]


def _ca_data(kubeconfig: Path) -> str | None:
    cluster = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]
    if cluster.get("certificate-authority-data"):
        return str(cluster["certificate-authority-data"])
    if cluster.get("certificate-authority"):
        return base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
    return None


class ProxiedStack(Stack):
    """The Stack, with the components' kubeconfigs pointing at the counting proxy."""

    proxy: CountingProxy

    def token_kubeconfig(self, service_account: str) -> str:
        path = Path(super().token_kubeconfig(service_account))
        doc = json.loads(path.read_text())
        doc["clusters"][0]["cluster"] = {"server": self.proxy.url}
        path.write_text(json.dumps(doc))
        return str(path)


@pytest.fixture
def stack(node_cluster: Cluster, pod_warehouse: tuple[str, str], pod_aws: str,
          tmp_path: Path) -> Iterator[ProxiedStack]:
    """As the end-to-end tests' stack (loader Jobs run as pods on the node), the operator behind the proxy."""
    ca = _ca_data(Path(node_cluster.kubeconfig))
    proxy = CountingProxy(node_cluster.server, base64.b64decode(ca).decode() if ca else None).start()
    try:
        with stack_in_new_namespace(node_cluster, pod_warehouse[1], pod_aws, tmp_path, cls=ProxiedStack) as s:
            assert isinstance(s, ProxiedStack)
            s.proxy = proxy
            yield s
    finally:
        proxy.stop()


def _status(stack: Stack, key: str) -> dict[str, Any]:
    for fd in stack.filedrops():
        if fd["spec"]["key"] == key:
            return dict(fd.get("status") or {})
    return {}


def _suspended_job(namespace: str, name: str, filedrop: str) -> dict[str, Any]:
    """What the operator would create as the FileDrop's first loader Job, but suspended: it cannot run."""
    labels = {FILEDROP_LABEL: filedrop}
    pod = {"restartPolicy": "Never", "automountServiceAccountToken": False,
           "containers": [{"name": "load", "image": LOADER_IMAGE, "imagePullPolicy": "Never", "command": ["true"]}]}
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {"suspend": True, "backoffLimit": 0, "template": {"metadata": {"labels": labels}, "spec": pod}}}


def _summary(requests: list[Request]) -> dict[str, int]:
    return dict(Counter(f"{r.method} {r.path.split('?')[0]}" for r in requests).most_common())


def test_waiting_filedrops_cost_almost_no_api_calls(stack: ProxiedStack) -> None:
    stack.setup([ITEMS_ROUTE], notify=False)
    manifests = {}
    for key in ("items_a.csv", "items_b.csv"):
        put = stack.put(key, f"id,name\n1,{key}\n".encode())
        manifests[key] = filedrop_manifest(bucket=stack.bucket, key=key, etag=put["ETag"].strip('"'),
                                           size=len(f"id,name\n1,{key}\n"), source="manual", route="items")
    a, b = manifests["items_a.csv"], manifests["items_b.csv"]
    first_job = job_name(a["metadata"]["name"], 1)
    stack.apply([_suspended_job(stack.ns, first_job, a["metadata"]["name"])])
    stack.start_operator(FILEDROP_MAX_LOADS="1")
    stack.apply([a])
    stack.wait(lambda: _status(stack, "items_a.csv").get("phase") == "Loading", "items_a.csv Loading")
    stack.apply([b])
    stack.wait(lambda: _status(stack, "items_b.csv").get("phase") == "Queued"
               and "waiting" in (_status(stack, "items_b.csv").get("message") or ""), "items_b.csv waiting")

    settle = 3.0
    start = time.monotonic() + settle
    threading.Event().wait(settle + WINDOW)  # the measurement window itself: a rate needs a duration
    seen = stack.proxy.between(start, start + WINDOW)
    # the operator's own upkeep (watch streams renewing, the peering keep-alive) is not the FileDrops' cost
    upkeep = [r for r in seen if r.is_watch or "/kopfpeerings/" in r.path]
    calls = [r for r in seen if r not in upkeep]
    per_minute = len(calls) * 60 / WINDOW
    report = {"window_seconds": WINDOW, "requests": len(calls), "requests_per_minute_both": per_minute,
              "requests_per_minute_per_filedrop": per_minute / 2, "by_request": _summary(calls),
              "operator_upkeep": _summary(upkeep)}
    print(json.dumps(report, indent=2))
    if os.environ.get("FILEDROP_COST_REPORT"):
        Path(os.environ["FILEDROP_COST_REPORT"]).write_text(json.dumps(report, indent=2) + "\n")
    assert _status(stack, "items_a.csv")["phase"] == "Loading" and _status(stack, "items_b.csv")["phase"] == "Queued"
    assert per_minute <= BUDGET_PER_MINUTE, report

    # The Job runs (and ends without loading: a transient failure); the operator must see it at once.
    stack.kubectl("patch", "job", first_job, "-n", stack.ns, "--type=merge", "-p", '{"spec":{"suspend":false}}')
    ended = stack.wait(lambda: any(c.get("type") == "Complete" and c.get("status") == "True" for c in (
        json.loads(stack.kubectl("get", "job", first_job, "-n", stack.ns, "-o", "json").stdout)
        .get("status") or {}).get("conditions") or []) and time.monotonic(), "the first Job Complete", 60)
    noticed = stack.wait(lambda: _status(stack, "items_a.csv").get("phase") != "Loading" and time.monotonic(),
                         "items_a.csv out of Loading", 60)
    print(f"Job Complete seen by the test -> FileDrop out of Loading: {noticed - ended:.2f}s")
    assert noticed - ended < 10
    stack.wait(lambda: {_status(stack, k).get("phase") for k in manifests} == {"Loaded"}, "both Loaded", 120)
    assert _status(stack, "items_a.csv")["attempts"] == 2 and _status(stack, "items_b.csv")["attempts"] == 1
