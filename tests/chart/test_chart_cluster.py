"""The chart against the real control plane (with Argo's and spark-operator's real CRDs): lint, render,
server-side validation, install into a namespace that enforces the restricted Pod Security profile, RBAC both
ways, and the Argo manifests (as the chart renders them, as committed, and as `filedrop workflows apply`
submits them through Hera's client)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from filedrop.analytics import workflows as wf
from filedrop.cli import app
from tests.chart.conftest import ALL_ON, CHART, REPO, by_kind, dump, helm_template, older_crd
from tests.support.k8s.kube import ApiError

pytestmark = pytest.mark.k8s

PLAIN_DEFAULTS = ["--set", "argo.enabled=true", "--set", f"argo.exportTo={wf.WorkflowConfig.export_to}",
                  "--set", f"docs.s3Uri={wf.WorkflowConfig.docs_to}"]


def _no_warnings(stderr: str) -> None:
    lines = [ln for ln in stderr.splitlines() if "warning" in ln.lower() or ln.startswith("W1") or ln.startswith("W0")]
    assert lines == [], "\n".join(lines)


def test_helm_lint(k8s_cluster: Any) -> None:
    for args in ([], ["-f", str(ALL_ON)]):
        res = k8s_cluster.helm("lint", "--strict", str(CHART), *args)
        assert "1 chart(s) linted, 0 chart(s) failed" in res.stdout, res.stdout
    # the schema stops a typo and a missing required value before anything reaches the cluster
    res = k8s_cluster.helm("template", "x", str(CHART), "--set", "operator.maxLoad=2", check=False)
    assert res.returncode != 0 and "additional properties 'maxLoad' not allowed" in res.stderr
    res = k8s_cluster.helm("template", "x", str(CHART), "--set", "bridge.enabled=true", check=False)
    assert res.returncode != 0 and "queueUrl" in res.stderr


@pytest.mark.parametrize("values", [[], ["-f", str(ALL_ON)]], ids=["defaults", "all-on"])
def test_rendered_chart_is_valid_for_the_server(k8s_cluster: Any, chart_crds: list[str],
                                                restricted_namespace: str, values: list[str]) -> None:
    """Server-side dry-run apply: the API server checks every object against its (CRD) schema,
    including CEL rules, and Pod Security warns about any pod template the profile would refuse."""
    docs = helm_template(k8s_cluster, restricted_namespace, *values)
    kinds = {d["kind"] for d in docs}
    expected = {"ConfigMap", "ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding",
                "Deployment", "Service", "NetworkPolicy", "FileRoute"}
    if values:  # peering on; the Prometheus objects wait for their API (test_prometheus_objects_...)
        expected |= {"PodDisruptionBudget", "WorkflowTemplate", "CronWorkflow", "Ingress", "KopfPeering"}
    assert kinds == expected
    [operator] = by_kind(docs, "Deployment")["filedrop-operator"]["spec"]["template"]["spec"]["containers"]
    operator_args = operator["args"]
    assert ("--peering" in operator_args) == bool(values) and ("--standalone" in operator_args) == (not values)
    res = k8s_cluster.kubectl("apply", "--server-side", "--dry-run=server", "--field-manager=helm", "-n",
                              restricted_namespace, "-f", "-", input=dump(docs))
    _no_warnings(res.stderr)
    assert res.stdout.count("serverside-applied (server dry run)") == len(docs), res.stdout


def _values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_install_into_restricted_namespace(k8s_cluster: Any, chart_crds: list[str], restricted_namespace: str,
                                           tmp_path: Path) -> None:
    ns = restricted_namespace
    res = k8s_cluster.helm("install", "filedrop", str(CHART), "--namespace", ns, "-f", str(ALL_ON))
    _no_warnings(res.stderr)
    assert "STATUS: deployed" in res.stdout
    assert f"kubectl -n {ns} get filedrops" in res.stdout  # NOTES.txt
    # Pod Security admitted the pods the ReplicaSets created (nothing schedules them here)
    for component, replicas in (("operator", 1), ("bridge", 2), ("docs", 1)):
        def pods(component: str = component) -> list[Any]:
            return k8s_cluster.kubectl_json("get", "pods", "-n", ns, "-l",
                                            f"app.kubernetes.io/component={component}")["items"]
        k8s_cluster.wait_for(lambda r=replicas, p=pods: len(p()) == r, 60, f"{component} pods")
    events = k8s_cluster.kubectl("get", "events", "-n", ns, "--field-selector", "reason=FailedCreate").stdout
    assert "violates PodSecurity" not in events
    got = {d["kind"] for d in k8s_cluster.kubectl_json("get", "fileroutes,workflowtemplates,cronworkflows,kopfpeerings",
                                                       "-n", ns)["items"]}
    assert got == {"FileRoute", "WorkflowTemplate", "CronWorkflow", "KopfPeering"}
    # an upgrade with the same values changes nothing and warns about nothing
    res = k8s_cluster.helm("upgrade", "filedrop", str(CHART), "--namespace", ns, "-f", str(ALL_ON))
    _no_warnings(res.stderr)
    res = k8s_cluster.helm("uninstall", "filedrop", "--namespace", ns)
    # CRDs (crds/) stay, and with them every FileDrop: Helm never deletes what crds/ installed
    assert k8s_cluster.kubectl("get", "crd", "filedrops.filedrop.dev", check=False).returncode == 0


def _prometheus_operator_crds() -> list[Path]:
    """ServiceMonitor's and PrometheusRule's CRDs from the Prometheus Operator that
    tools/k8s/prometheus-operator/go.mod pins, read from Go's module cache."""
    from tools.k8s.base import module_dir

    d = module_dir(REPO / "tools" / "k8s" / "prometheus-operator", "github.com/prometheus-operator/prometheus-operator")
    return [d / "example" / "prometheus-operator-crd" / f"monitoring.coreos.com_{kind}.yaml"
            for kind in ("servicemonitors", "prometheusrules")]


def _exposed_metric_names() -> set[str]:
    """Every metric name the operator and the bridge expose (counters with their _total, histograms' series)."""
    from prometheus_client import REGISTRY, CollectorRegistry

    from filedrop.cluster import metrics

    backlog = CollectorRegistry()
    backlog.register(metrics.BacklogCollector(metrics.Backlog()))
    names = set()
    for registry in (REGISTRY, metrics.BRIDGE_REGISTRY, backlog):
        for family in registry.collect():
            names |= {family.name, f"{family.name}_total", f"{family.name}_count", f"{family.name}_bucket"}
    return names


def test_prometheus_objects_render_only_where_the_api_is_served(k8s_cluster: Any, chart_crds: list[str],
                                                                 restricted_namespace: str) -> None:
    import re

    import promql_parser

    ns = restricted_namespace
    # no monitoring.coreos.com API: asking for them renders nothing (an install would fail on an unknown kind)
    assert not {"ServiceMonitor", "PrometheusRule"} & {d["kind"] for d in helm_template(k8s_cluster, ns, "-f",
                                                                                         str(ALL_ON))}
    k8s_cluster.install_crds(_prometheus_operator_crds())
    # helm install asks the API server what it serves: now they are rendered, and the server validates them
    k8s_cluster.helm("install", "filedrop", str(CHART), "--namespace", ns, "-f", str(ALL_ON))
    monitors = k8s_cluster.kubectl_json("get", "servicemonitors", "-n", ns)["items"]
    assert sorted(m["metadata"]["name"] for m in monitors) == ["filedrop-bridge", "filedrop-operator"]
    services = {s["metadata"]["name"]: s for s in k8s_cluster.kubectl_json("get", "services", "-n", ns)["items"]}
    for monitor in monitors:  # each selects its component's Service, by a port that Service has
        service = services[monitor["metadata"]["name"]]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in service["spec"]["ports"]}
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    [rule] = k8s_cluster.kubectl_json("get", "prometheusrules", "-n", ns)["items"]
    alerts = {r["alert"]: r for r in rule["spec"]["groups"][0]["rules"]}
    assert set(alerts) == {"FileDropFailed", "FileDropBacklogOld", "FileRouteStale", "FileDropBridgeNotReceiving",
                           "FileDropOperatorDown", "FileDropBridgeDown"}
    # the "down" alerts name the Services the ServiceMonitors scrape (Prometheus labels targets with them)
    assert 'service="filedrop-operator"' in alerts["FileDropOperatorDown"]["expr"]
    exposed = _exposed_metric_names()
    for name, alert in alerts.items():
        promql_parser.parse(alert["expr"])  # valid PromQL (raises otherwise)
        used = set(re.findall(r"\bfiledrop_[a-z_]+", alert["expr"]))
        assert used <= exposed, f"{name} uses metrics filedrop does not expose: {used - exposed}"
        assert used or "absent(up{" in alert["expr"], name
        assert "{{" not in alert["annotations"]["description"]
    assert f'namespace="{ns}"' in alerts["FileDropBacklogOld"]["expr"]
    k8s_cluster.helm("uninstall", "filedrop", "--namespace", ns)


def test_rbac_is_operator_rbac_yaml(k8s_cluster: Any) -> None:
    """The chart's Roles are the least-privilege rules of operator/rbac.yaml (which the e2e tests use)."""
    ns = "data"
    reference = [d for d in yaml.safe_load_all((REPO / "operator" / "rbac.yaml").read_text().replace(
        "__NAMESPACE__", ns)) if d]
    chart = helm_template(k8s_cluster, ns, "-f", str(ALL_ON))
    for kind in ("Role", "ClusterRole"):
        ours = {n.removeprefix("filedrop-"): d["rules"] for n, d in by_kind(chart, kind).items()}
        theirs = {n.removeprefix("filedrop-"): d["rules"] for n, d in by_kind(reference, kind).items()}
        ours.pop("workflows", None)  # Argo's executor; not part of operator/rbac.yaml
        assert ours == theirs, kind
    sas = by_kind(chart, "ServiceAccount")
    assert set(sas) >= {n for n in by_kind(reference, "ServiceAccount")}
    assert sas["filedrop-loader"]["automountServiceAccountToken"] is False
    assert sas["filedrop-bridge"]["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/filedrop-bridge"}


def test_chart_sets_only_settings_filedrop_reads(k8s_cluster: Any) -> None:
    """Every FILEDROP_* variable the chart gives a container is one the package reads (no typo goes unnoticed),
    and the Spark engine is wired when a Spark image is given."""
    import re

    read = set(re.findall(r"FILEDROP_[A-Z_]+", "".join(p.read_text() for p in (REPO / "filedrop").rglob("*.py"))))
    chart = helm_template(k8s_cluster, "data", "-f", str(ALL_ON))
    given: set[str] = set(by_kind(chart, "ConfigMap")["filedrop-config"]["data"])
    for d in chart:
        spec = d.get("spec", {})
        pods = [spec["template"]["spec"]] if d["kind"] == "Deployment" else []
        containers = [c for p in pods for c in p["containers"]]
        containers += [t["container"] for t in [*spec.get("templates", []), spec.get("templateDefaults", {})]
                       if "container" in t]
        given |= {e["name"] for c in containers for e in c.get("env", [])}
    assert {g for g in given if g.startswith("FILEDROP_")} - read == set()
    [operator] = [d for d in chart if d["kind"] == "Deployment" and d["metadata"]["name"] == "filedrop-operator"]
    env = {e["name"]: e.get("value") for e in operator["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FILEDROP_SPARK_IMAGE"].endswith("filedrop-spark:0.1.0")
    assert env["FILEDROP_SPARK_SERVICE_ACCOUNT"] == "filedrop-spark"
    from filedrop.spark.sizing import parse_tiers

    assert [t.name for t in parse_tiers(env["FILEDROP_SPARK_TIERS"])] == ["small", "large"]
    defaults = helm_template(k8s_cluster, "data")
    [operator] = [d for d in defaults if d["kind"] == "Deployment"]
    env = operator["spec"]["template"]["spec"]["containers"][0]["env"]
    assert "FILEDROP_SPARK_IMAGE" not in {e["name"] for e in env}
    # small files are loaded by the operator itself: it may reach S3 (HTTPS); with inline loads off it may not
    values = {e["name"]: e.get("value") for e in env}
    assert (values["FILEDROP_INLINE_MAX_BYTES"], values["FILEDROP_INLINE_LOADS"]) == ("8388608", "4")

    def operator_ports(docs: list[dict[str, Any]]) -> set[int]:
        policy = by_kind(docs, "NetworkPolicy")["filedrop-operator"]
        return {p["port"] for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert 443 in operator_ports(defaults)
    api_on_6443 = ("--set", "networkPolicy.apiServerPorts={6443}")
    assert operator_ports(helm_template(k8s_cluster, "data", *api_on_6443)) == {53, 443, 5432, 6443}
    assert operator_ports(helm_template(k8s_cluster, "data", *api_on_6443, "--set", "operator.inlineMaxBytes=0")) == {
        53, 5432, 6443}


def test_service_accounts_are_denied_what_they_do_not_need(k8s_cluster: Any, chart_crds: list[str],
                                                           restricted_namespace: str) -> None:
    ns = restricted_namespace
    k8s_cluster.helm("install", "filedrop", str(CHART), "--namespace", ns, "-f", str(ALL_ON))

    def can(sa: str, verb: str, resource: str, sub: str = "") -> bool:
        extra = ["--subresource", sub] if sub else []
        res = k8s_cluster.kubectl("auth", "can-i", verb, resource, "-n", ns, *extra,
                                  f"--as=system:serviceaccount:{ns}:filedrop-{sa}", check=False)
        return res.stdout.strip() == "yes"

    allowed = [("bridge", "create", "filedrops.filedrop.dev"), ("bridge", "list", "fileroutes.filedrop.dev"),
               ("operator", "create", "jobs.batch"), ("operator", "create", "sparkapplications.sparkoperator.k8s.io"),
               ("operator", "patch", "filedrops.filedrop.dev", "status"),
               ("operator", "patch", "kopfpeerings.kopf.dev"),
               ("operator", "watch", "fileroutes.filedrop.dev"), ("spark", "create", "pods"),
               ("workflows", "create", "workflowtaskresults.argoproj.io")]
    denied = [("bridge", "delete", "filedrops.filedrop.dev"), ("bridge", "get", "filedrops.filedrop.dev"),
              ("bridge", "patch", "filedrops.filedrop.dev", "status"), ("bridge", "get", "secrets"),
              ("bridge", "create", "jobs.batch"), ("bridge", "create", "fileroutes.filedrop.dev"),
              ("bridge", "list", "pods"), ("operator", "delete", "jobs.batch"), ("operator", "get", "secrets"),
              ("operator", "create", "filedrops.filedrop.dev"), ("operator", "create", "pods"),
              ("operator", "update", "fileroutes.filedrop.dev"), ("loader", "list", "pods"),
              ("loader", "get", "filedrops.filedrop.dev"), ("workflows", "get", "secrets"),
              ("workflows", "list", "filedrops.filedrop.dev"), ("workflows", "create", "workflows.argoproj.io"),
              ("docs", "get", "configmaps"), ("spark", "get", "secrets")]
    assert [a for a in allowed if not can(*a)] == []
    assert [d for d in denied if can(*d)] == []
    # nothing outside the namespace either
    res = k8s_cluster.kubectl("auth", "can-i", "list", "filedrops.filedrop.dev", "-n", "default",
                              f"--as=system:serviceaccount:{ns}:filedrop-operator", check=False)
    assert res.stdout.strip() == "no"


def _normalized(doc: dict[str, Any]) -> dict[str, Any]:
    """What the chart sets from its own conventions (labels, namespace, envFrom) left out."""
    doc = json.loads(json.dumps(doc))
    for key in ("labels", "namespace", "annotations", "creationTimestamp", "generation", "managedFields",
                "resourceVersion", "uid"):
        doc["metadata"].pop(key, None)
    spec = doc["spec"]
    spec.get("workflowMetadata", {}).pop("labels", None)
    spec.get("podMetadata", {}).pop("labels", None)
    for t in [*spec.get("templates", []), spec.get("templateDefaults", {})]:
        t.get("container", {}).pop("envFrom", None)
    return doc


def test_chart_argo_manifests_are_the_hera_ones(k8s_cluster: Any) -> None:
    """With values equal to the Hera defaults, the chart renders the committed manifests: the escaping of
    Argo's {{...}} survives Helm, and chart values land where the defaults are."""
    chart = helm_template(k8s_cluster, "data", *PLAIN_DEFAULTS)
    for kind, key in (("WorkflowTemplate", "template"), ("CronWorkflow", "cron")):
        [rendered] = by_kind(chart, kind).values()
        committed = yaml.safe_load((REPO / "workflows" / wf.PLAIN_FILES[key]).read_text())
        assert _normalized(rendered) == _normalized(committed), kind
    text = k8s_cluster.helm("template", "filedrop", str(CHART), *PLAIN_DEFAULTS).stdout
    assert "'{{workflow.parameters.as_of_date}}'" in text and "{{`" not in text


def test_chart_makes_the_namespaces_artifact_repository_when_asked(k8s_cluster: Any) -> None:
    """argo.artifactRepository: the ConfigMap Argo resolves for a workflow that names no repository (its name
    and annotation are Argo's convention), with the pods' own credentials (IRSA) or a Secret's."""
    chart = helm_template(k8s_cluster, "data", "-f", str(ALL_ON))
    cm = by_kind(chart, "ConfigMap")["artifact-repositories"]
    assert cm["metadata"]["annotations"] == {"workflows.argoproj.io/default-artifact-repository": "default-v1"}
    repo = yaml.safe_load(cm["data"]["default-v1"])
    assert repo == {"archiveLogs": True, "s3": {
        "bucket": "d2b-argo-artifacts", "endpoint": "s3.eu-west-1.amazonaws.com", "region": "eu-west-1",
        "insecure": False, "keyFormat": "argo-artifacts/{{workflow.name}}/{{pod.name}}", "useSDKCreds": True}}
    keyed = helm_template(k8s_cluster, "data", "-f", str(ALL_ON), "--set",
                          "argo.artifactRepository.s3.credentialsSecret=argo-s3", "--set",
                          "argo.artifactRepository.s3.keyPrefix=runs/argo/")
    s3 = yaml.safe_load(by_kind(keyed, "ConfigMap")["artifact-repositories"]["data"]["default-v1"])["s3"]
    # the workflow pods may reach a repository on a port of its own (Argo's wait container uploads to it)
    minio = helm_template(k8s_cluster, "data", "-f", str(ALL_ON), "--set",
                          "argo.artifactRepository.s3.endpoint=minio.storage:9000")
    egress = by_kind(minio, "NetworkPolicy")["filedrop-workflows"]["spec"]["egress"]
    assert {"protocol": "TCP", "port": 9000} in [p for rule in egress for p in rule["ports"]]
    assert "useSDKCreds" not in s3 and s3["keyFormat"] == "runs/argo/{{workflow.name}}/{{pod.name}}"
    assert s3["accessKeySecret"] == {"name": "argo-s3", "key": "AWS_ACCESS_KEY_ID"}
    assert s3["secretKeySecret"] == {"name": "argo-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    # no bucket (the default): Argo's own repository is used, the chart makes none
    assert "artifact-repositories" not in by_kind(helm_template(k8s_cluster, "data", *PLAIN_DEFAULTS), "ConfigMap")
    bad = k8s_cluster.helm("template", "x", str(CHART), "-f", str(ALL_ON), "--set",
                           "argo.artifactRepository.s3.endpoint=https://s3.amazonaws.com", check=False)
    assert bad.returncode != 0 and "/argo/artifactRepository/s3/endpoint" in bad.stderr


def test_committed_argo_manifests_are_accepted_by_the_server(k8s_cluster: Any, chart_crds: list[str],
                                                             k8s_namespace: str) -> None:
    for name in wf.PLAIN_FILES.values():
        res = k8s_cluster.kubectl("apply", "--server-side", "-n", k8s_namespace, "-f", str(REPO / "workflows" / name))
        _no_warnings(res.stderr)
        assert "serverside-applied" in res.stdout
    stored = k8s_cluster.kubectl_json("get", "workflowtemplate", "filedrop-transform", "-n", k8s_namespace)
    committed = yaml.safe_load((REPO / "workflows" / wf.PLAIN_FILES["template"]).read_text())
    assert stored["spec"] == committed["spec"]  # nothing pruned: every field is in Argo's schema


class _ArgoServer:
    """The part of the Argo server API that Hera's WorkflowsService uses to create, get and update
    WorkflowTemplates and CronWorkflows, storing them in the test API server (as argo-server does)."""

    ROUTES = {"workflow-templates": ("workflowtemplates", "template"),
              "cron-workflows": ("cronworkflows", "cronWorkflow")}

    def __init__(self, kube: Any, token: str) -> None:
        self.kube, self.token, self.calls = kube, token, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, obj: Any) -> None:
                body = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method: str) -> None:
                outer.calls.append((method, self.path))
                if self.headers.get("Authorization") != f"Bearer {outer.token}":
                    self._reply(401, {"code": 16, "message": "token not valid"})
                    return
                parts = self.path.strip("/").split("/")  # api v1 <kind> <ns> [<name>]
                plural, body_key = outer.ROUTES[parts[2]]
                base = f"/apis/argoproj.io/v1alpha1/namespaces/{parts[3]}/{plural}"
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else {}
                try:
                    if method == "GET":
                        self._reply(200, outer.kube.get(f"{base}/{parts[4]}"))
                    elif method == "POST":
                        self._reply(200, outer.kube.create(base, body[body_key]))
                    else:
                        self._reply(200, outer.kube.request("PUT", f"{base}/{parts[4]}", body[body_key]))
                except ApiError as exc:
                    self._reply(exc.status, {"code": 5 if exc.status == 404 else 3, "message": exc.message})

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_PUT(self) -> None:  # noqa: N802
                self._handle("PUT")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> _ArgoServer:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def argo_server(k8s_cluster: Any, chart_crds: list[str]) -> Iterator[_ArgoServer]:
    with _ArgoServer(k8s_cluster.kube, "s3cr3t") as server:
        yield server


@pytest.mark.filterwarnings("ignore::DeprecationWarning:hera")  # Hera 7.1 calls pydantic's deprecated .json()
def test_workflows_apply_submits_through_hera(k8s_cluster: Any, k8s_namespace: str, argo_server: _ArgoServer,
                                              tmp_path: Path) -> None:
    ns = k8s_namespace
    config = _values_file(tmp_path, {"schedule": "15 4 * * *", "export_to": "s3://acme/exports",
                                     "docs_to": "s3://acme/docs"})
    args = ["workflows", "apply", "--argo-server", argo_server.url, "--namespace", ns, "--token", "s3cr3t",
            "--config", config, "--image", "registry.example.com/filedrop:1.0"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    assert f"WorkflowTemplate {ns}/filedrop-transform applied" in first.output
    assert f"CronWorkflow {ns}/filedrop-transform-daily applied" in first.output
    second = CliRunner().invoke(app, args)  # again: an update of what is there
    assert second.exit_code == 0, second.output
    assert ("PUT", f"/api/v1/cron-workflows/{ns}/filedrop-transform-daily") in argo_server.calls
    cfg = wf.config_from_mapping({"schedule": "15 4 * * *", "export_to": "s3://acme/exports",
                                  "docs_to": "s3://acme/docs", "image": "registry.example.com/filedrop:1.0",
                                  "namespace": ns})
    expected = wf.manifests(cfg)
    tmpl = k8s_cluster.kubectl_json("get", "workflowtemplate", "filedrop-transform", "-n", ns)
    cron = k8s_cluster.kubectl_json("get", "cronworkflow", "filedrop-transform-daily", "-n", ns)
    assert tmpl["spec"] == expected["template"]["spec"]
    assert cron["spec"] == expected["cron"]["spec"] and cron["spec"]["schedules"] == ["15 4 * * *"]
    bad = CliRunner().invoke(app, [*args[:-6], "--token", "wrong"])
    assert bad.exit_code == 1 and "WorkflowTemplate filedrop-transform: Unauthorized" in bad.output


def _env_vars(node: Any) -> Iterator[dict[str, Any]]:
    """Every container env entry anywhere in a manifest (Deployments, Argo templates, ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "env" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            else:
                yield from _env_vars(value)
    elif isinstance(node, list):
        for item in node:
            yield from _env_vars(item)


def test_rendered_manifests_carry_no_credentials(k8s_cluster: Any) -> None:
    """Secrets are only ever referenced: no Secret object, no literal credential in any env value."""
    import re

    docs = helm_template(k8s_cluster, "data", "-f", str(ALL_ON))
    docs += [d for f in sorted((REPO / "workflows").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    assert not [d["metadata"]["name"] for d in docs if d["kind"] == "Secret"]
    env = [e for d in docs for e in _env_vars(d)]
    assert len(env) > 10  # the scan really sees the containers' environments
    secretish = re.compile(r"PASSWORD|SECRET|TOKEN|WAREHOUSE_URL|PGPASS", re.I)
    # FILEDROP_*_SECRET(_KEY) name a Secret (and a key in it) for the operator's Jobs: names, not content
    naming = re.compile(r"FILEDROP_\w*SECRET(_KEY)?")
    literal = [e["name"] for e in env if secretish.search(e["name"]) and "value" in e
               and not (naming.fullmatch(e["name"]) and re.fullmatch(r"[a-z0-9.-]*", str(e["value"])))]
    assert literal == [], f"credentials as literal values: {literal}"
    userinfo = re.compile(r"://[^/@\s:]+:[^/@\s]+@")  # scheme://user:password@host
    text = dump(docs)
    assert not userinfo.search(text), userinfo.search(text)
    refs = [e for e in env if secretish.search(e["name"]) and not naming.fullmatch(e["name"])]
    assert refs and all("secretKeyRef" in (e.get("valueFrom") or {}) for e in refs)


def test_crd_upgrade_hook_replaces_the_crds_with_only_the_rights_it_needs(
        k8s_cluster: Any, chart_crds: list[str], restricted_namespace: str, tmp_path: Path) -> None:
    """crds.upgradeHook: `filedrop crds apply` as the hook's ServiceAccount (a token of it, nothing more) brings an
    older CRD back to the chart's, leaves a current one alone, and may touch no other CRD."""
    ns = restricted_namespace
    file = yaml.safe_load((CHART / "crds" / "filedrop.yaml").read_text())
    k8s_cluster.kubectl("replace", "-f", "-", input=json.dumps(older_crd(file)))
    stored = k8s_cluster.kubectl_json("get", "crd", "filedrops.filedrop.dev")
    assert "Key" not in [c["name"] for c in stored["spec"]["versions"][0]["additionalPrinterColumns"]]
    try:
        # the hook's ServiceAccount and RBAC as the chart renders them (helm runs them as hooks)
        hook = helm_template(k8s_cluster, ns, "--set", "crds.upgradeHook.enabled=true",
                             "--show-only", "templates/crds-serviceaccount.yaml",
                             "--show-only", "templates/crds-clusterrole.yaml",
                             "--show-only", "templates/crds-clusterrolebinding.yaml")
        k8s_cluster.kubectl("apply", "-n", ns, "-f", "-", input=dump(hook))
        sa = by_kind(hook, "ServiceAccount")
        [sa_name] = sa
        token = k8s_cluster.kubectl("create", "token", sa_name, "-n", ns).stdout.strip()
        admin = yaml.safe_load(Path(k8s_cluster.kubeconfig).read_text())
        as_sa = {**admin, "users": [{"name": "hook", "user": {"token": token}}],
                 "contexts": [{"name": "hook", "context": {"cluster": admin["clusters"][0]["name"], "user": "hook"}}],
                 "current-context": "hook"}
        (tmp_path / "kubeconfig").write_text(yaml.safe_dump(as_sa))
        env = {**os.environ, "KUBECONFIG": str(tmp_path / "kubeconfig"), "FILEDROP_HOME": str(tmp_path / "home")}

        def crds_apply(source: Path) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "filedrop", "crds", "apply", "--from", str(source)],
                                  env=env, capture_output=True, text=True, timeout=180)

        res = crds_apply(CHART / "crds")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "filedrops.filedrop.dev: updated, Established (served: v1alpha1)" in res.stdout
        assert "fileroutes.filedrop.dev: unchanged" in res.stdout
        now = k8s_cluster.kubectl_json("get", "crd", "filedrops.filedrop.dev")
        assert now["spec"]["versions"] == file["spec"]["versions"]  # exactly the chart's again
        # another group's CRD is refused before anything is sent
        (tmp_path / "other").mkdir()
        other = json.loads(json.dumps(file))
        other["metadata"]["name"], other["spec"]["group"] = "filedrops.example.com", "example.com"
        (tmp_path / "other" / "x.yaml").write_text(yaml.safe_dump(other))
        res = crds_apply(tmp_path / "other")
        assert res.returncode == 1 and "filedrops.example.com is not a filedrop.dev CRD" in res.stdout + res.stderr

        def can(verb: str, what: str) -> bool:
            out = k8s_cluster.kubectl("auth", "can-i", verb, what, f"--as=system:serviceaccount:{ns}:{sa_name}",
                                      check=False).stdout
            return out.strip() == "yes"
        assert can("update", "customresourcedefinitions/fileroutes.filedrop.dev")
        assert not can("create", "customresourcedefinitions")
        assert not can("delete", "customresourcedefinitions/filedrops.filedrop.dev")
        assert not can("update", "customresourcedefinitions/workflows.argoproj.io")
    finally:
        k8s_cluster.kubectl("replace", "-f", str(CHART / "crds" / "filedrop.yaml"))
        k8s_cluster.kubectl("delete", "clusterrolebinding,clusterrole", "-l", "app.kubernetes.io/component=crds",
                            check=False)
