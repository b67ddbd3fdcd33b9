"""The test control plane is a real one: versions, CRD validation, RBAC, controllers,
Pod Security admission, the third-party CRDs, helm. The spark-operator itself runs on the node
(tests/k8s/test_spark_pods.py).

There is no node here, so no Pod runs: Jobs on the real kubelet are tests/k8s/test_node.py's.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support.k8s.cluster import REPO, thirdparty_dir
from tests.support.k8s.kube import ApiError, token_kubeconfig

pytestmark = pytest.mark.k8s

SPARK = "/apis/sparkoperator.k8s.io/v1beta2"


def pinned_kubernetes_version() -> str:
    text = (REPO / "tools" / "k8s" / "kubernetes" / "go.mod").read_text()
    return re.search(r"^require k8s\.io/kubernetes (v\S+)", text, re.MULTILINE).group(1)


def dump(*objs: dict) -> str:
    return "\n---\n".join(json.dumps(o) for o in objs)


def test_server_reports_the_pinned_version(k8s_cluster):
    versions = k8s_cluster.kubectl_json("version")
    pinned = pinned_kubernetes_version()
    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned
    assert k8s_cluster.kube.get("/version")["minor"] == pinned.split(".")[1]
    assert "ok" in k8s_cluster.kubectl("get", "--raw", "/readyz").stdout


WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.test.filedrop.dev"},
    "spec": {
        "group": "test.filedrop.dev",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1",
            "served": True,
            "storage": True,
            "subresources": {"status": {}},
            "additionalPrinterColumns": [
                {"name": "Size", "type": "integer", "jsonPath": ".spec.size"},
                {"name": "Colour", "type": "string", "jsonPath": ".spec.colour"},
            ],
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {
                        "type": "object",
                        "required": ["size"],
                        "properties": {
                            "size": {"type": "integer", "minimum": 1, "maximum": 10},
                            "colour": {"type": "string", "enum": ["red", "blue"]},
                        },
                        "x-kubernetes-validations": [
                            {"rule": "self.size < 5 || self.colour == 'red'",
                             "message": "big widgets must be red"},
                        ],
                    },
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                },
            }},
        }],
    },
}


def widget(name: str, **spec) -> dict:
    return {"apiVersion": "test.filedrop.dev/v1", "kind": "Widget", "metadata": {"name": name}, "spec": spec}


def test_crd_with_structural_schema_is_served_and_validated(k8s_cluster, k8s_namespace):
    k = k8s_cluster
    k.kubectl("apply", "--server-side", "-f", "-", input=json.dumps(WIDGET_CRD))
    k.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/widgets.test.filedrop.dev")
    # Discovery can lag the Established condition a moment: poll until kubectl knows the kind.
    k.wait_for(lambda: k.kubectl("get", "widgets", "-n", k8s_namespace, check=False).returncode == 0,
               30, "widgets to be served")

    k.kubectl("apply", "-n", k8s_namespace, "-f", "-", input=dump(widget("small", size=3, colour="blue")))
    table = k.kubectl("get", "widgets", "-n", k8s_namespace).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "SIZE", "COLOUR"]
    assert row.split()[:3] == ["small", "3", "blue"]

    cases = [
        (widget("too-big", size=100),
         "spec.size: Invalid value: 100: spec.size in body should be less than or equal to 10"),
        (widget("no-size", colour="red"), "spec.size: Required value"),
        (widget("green", size=2, colour="green"), 'spec.colour: Unsupported value: "green"'),
        (widget("big-blue", size=7, colour="blue"), "big widgets must be red"),
        (widget("typo", size=2, colur="red"), 'unknown field "spec.colur"'),
    ]
    for obj, message in cases:
        proc = k.kubectl("create", "-n", k8s_namespace, "-f", "-", input=dump(obj), check=False)
        assert proc.returncode != 0, f"{obj['metadata']['name']} was accepted"
        assert message in proc.stderr, proc.stderr
    names = [w["metadata"]["name"] for w in k.kubectl_json("get", "widgets", "-n", k8s_namespace)["items"]]
    assert names == ["small"]


def test_rbac_denies_a_service_account_until_it_is_bound(k8s_cluster, k8s_namespace, tmp_path):
    k, ns = k8s_cluster, k8s_namespace
    k.kubectl("create", "serviceaccount", "reader", "-n", ns)
    k.kubectl("create", "configmap", "settings", "-n", ns, "--from-literal=a=1")
    token = k.kubectl("create", "token", "reader", "-n", ns, "--duration=10m").stdout.strip()
    config = tmp_path / "reader.kubeconfig"
    config.write_text(token_kubeconfig(k.server, k.kube._ca_data, token, ns))
    as_reader = {**k.env, "KUBECONFIG": str(config)}

    who = k.kubectl_json("auth", "whoami", env=as_reader)
    assert who["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    can = k.kubectl("auth", "can-i", "get", "configmaps", "-n", ns, env=as_reader, check=False)
    assert can.stdout.strip() == "no"
    denied = k.kubectl("get", "configmap", "settings", "-n", ns, env=as_reader, check=False)
    assert denied.returncode != 0
    assert "Forbidden" in denied.stderr and f"system:serviceaccount:{ns}:reader" in denied.stderr

    k.kubectl("create", "role", "cm-reader", "-n", ns, "--verb=get,list", "--resource=configmaps")
    k.kubectl("create", "rolebinding", "reader-cm", "-n", ns, "--role=cm-reader", f"--serviceaccount={ns}:reader")
    # The RBAC authorizer reads bindings through an informer: poll until it has seen them.
    k.wait_for(lambda: k.kubectl("auth", "can-i", "get", "configmaps", "-n", ns, env=as_reader,
                                 check=False).stdout.strip() == "yes", 30, "the RoleBinding to take effect")
    got = k.kubectl_json("get", "configmap", "settings", "-n", ns, env=as_reader)
    assert got["data"] == {"a": "1"}
    # Only what the Role grants.
    assert k.kubectl("auth", "can-i", "get", "secrets", "-n", ns, env=as_reader, check=False).stdout.strip() == "no"
    assert k.kubectl("auth", "can-i", "delete", "configmaps", "-n", ns, env=as_reader,
                     check=False).stdout.strip() == "no"


def test_owned_objects_are_garbage_collected(k8s_cluster, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    owner = k.kube.create(f"/api/v1/namespaces/{ns}/configmaps",
                          {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "owner"}})
    k.kube.create(f"/api/v1/namespaces/{ns}/configmaps", {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "child", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]}})
    k.kube.delete(f"/api/v1/namespaces/{ns}/configmaps/owner")

    def child_gone() -> bool:
        try:
            k.kube.get(f"/api/v1/namespaces/{ns}/configmaps/child")
            return False
        except ApiError as e:
            return e.status == 404
    k.wait_for(child_gone, 60, "the garbage collector to delete the child")


def privileged_pod(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["true"],
                                     "securityContext": {"privileged": True}}]}}


def test_pod_security_admission_refuses_privileged_pods_in_restricted_namespaces(k8s_cluster):
    k = k8s_cluster
    strict = k.create_namespace(labels={"pod-security.kubernetes.io/enforce": "restricted"})
    lax = k.create_namespace()
    try:
        refused = k.kubectl("create", "-n", strict, "-f", "-", input=dump(privileged_pod("p")), check=False)
        assert refused.returncode != 0
        assert 'violates PodSecurity "restricted:latest"' in refused.stderr
        assert "privileged" in refused.stderr
        # The same Pod is admitted where no policy is enforced (server-side dry run: nothing runs it).
        k.kubectl("create", "-n", lax, "--dry-run=server", "-f", "-", input=dump(privileged_pod("p")))
    finally:
        k.kubectl("delete", "namespace", strict, lax, "--wait=false", check=False)


def test_thirdparty_crds_validate_argo_objects(k8s_cluster, k8s_thirdparty_crds, k8s_namespace):
    k, ns = k8s_cluster, k8s_namespace
    for name in ("workflows.argoproj.io", "cronworkflows.argoproj.io", "workflowtemplates.argoproj.io",
                 "sparkapplications.sparkoperator.k8s.io", "scheduledsparkapplications.sparkoperator.k8s.io",
                 "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"):
        assert name in k8s_thirdparty_crds
    assert (thirdparty_dir() / "argo-workflows").is_dir()

    workflow_spec = {"entrypoint": "main", "templates": [
        {"name": "main", "container": {"image": "filedrop:test", "command": ["filedrop", "load"]}}]}
    cron = {"apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow", "metadata": {"name": "nightly"},
            "spec": {"schedules": ["0 2 * * *"], "concurrencyPolicy": "Forbid", "workflowSpec": workflow_spec}}
    k.kubectl("apply", "-n", ns, "-f", "-", input=dump(cron))
    wf = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "once"},
          "spec": workflow_spec}
    k.kubectl("apply", "-n", ns, "-f", "-", input=dump(wf))

    bad = [
        ({**cron, "metadata": {"name": "bad-policy"}, "spec": {**cron["spec"], "concurrencyPolicy": "Sometimes"}},
         'spec.concurrencyPolicy: Unsupported value: "Sometimes"'),
        ({**cron, "metadata": {"name": "no-schedules"},
          "spec": {"workflowSpec": workflow_spec}}, "spec.schedules: Required value"),
        ({**wf, "metadata": {"name": "bad-parallelism"}, "spec": {**workflow_spec, "parallelism": "many"}},
         'spec.parallelism: Invalid value: "string": spec.parallelism in body must be of type integer'),
        ({**wf, "metadata": {"name": "typo"}, "spec": {**workflow_spec, "entrypont": "main"}},
         'unknown field "spec.entrypont"'),
    ]
    for obj, message in bad:
        proc = k.kubectl("create", "-n", ns, "-f", "-", input=dump(obj), check=False)
        assert proc.returncode != 0, f"{obj['metadata']['name']} was accepted"
        assert message in proc.stderr, proc.stderr
    assert [c["metadata"]["name"] for c in k.kubectl_json("get", "cronworkflows", "-n", ns)["items"]] == ["nightly"]


def test_helm_talks_to_the_cluster(k8s_cluster, k8s_namespace, tmp_path):
    k, ns = k8s_cluster, k8s_namespace
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: tiny\ndata:\n  colour: {{ .Values.colour | quote }}\n")
    (chart / "values.yaml").write_text("colour: red\n")
    k.helm("install", "tiny", str(chart), "-n", ns, "--set", "colour=blue", "--wait", "--timeout", "60s")
    assert k.kube.get(f"/api/v1/namespaces/{ns}/configmaps/tiny")["data"] == {"colour": "blue"}
    assert "tiny" in k.helm("list", "-n", ns, "-q").stdout.split()
