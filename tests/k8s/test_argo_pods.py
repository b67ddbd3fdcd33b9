"""The dbt workflows on the real Argo Workflows controller, in pods on the node (tools/k8s/argo.py).

One restricted namespace holds Argo's namespace install (controller, server, an artifact repository on moto's
S3) and the filedrop chart with ``argo.enabled``: its WorkflowTemplate and CronWorkflow, the steps' Secrets and
ServiceAccount. The warehouse (PostgreSQL on the host) has the d2b files loaded. Then, as a person would:
- a run submitted through the Argo server's API (what the UI's Submit does) goes freshness, build, docs,
  publish-docs, export in pods and Succeeds: the analytics rows, the docs site and the exports are where they
  belong, the docs artifact passed through the repository, the pods are collected; a second run created at
  the same time with ``kubectl create`` waits on the template's mutex, then runs;
- ``helm upgrade`` sets the CronWorkflow's schedule a minute ahead, and it fires and runs;
- ``filedrop workflows apply`` (Hera's client) installs a template through the server, and a run of it whose
  dbt test fails is Failed, not retried, with the failing test in the step's message;
- the Argo UI (built from the release's sources, tools/k8s/argo-ui), opened in headless Chromium, lists the
  run and shows its steps and the docs artifact.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
import yaml
from playwright.sync_api import expect, sync_playwright

from filedrop.analytics import workflows as wf
from filedrop.config import Settings
from filedrop.local.pipeline import run_once
from filedrop.routes import load_routes
from tests.chart.conftest import CHART, RESTRICTED
from tests.conftest import D2B, DB, point_aws_at
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import LOADER_IMAGE, TAG, fresh_database
from tests.support.servers import DebianPostgres
from tools.k8s import argo

# a node, an install and several workflow runs (a run is about 80 s on 2 cores) per test
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

RELEASE = "filedrop"
TEMPLATE = f"{RELEASE}-transform"
CRON = f"{TEMPLATE}-daily"
APPLIED = "filedrop-applied"
DAY = "2022-09-05"
NEXT_DAY = "2022-09-06"
PARAMETERS = {"as_of_date": DAY, "ingestion_date": DAY}
FINAL = ("Succeeded", "Failed", "Error")
#: Debian's Chromium (make test-deps), driven by Playwright; it resolves no name and so reaches only the
#: address it is given (the argo-server pod's)
CHROMIUM = "/usr/lib/chromium/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-default-apps"]


@dataclass
class Argo:
    cluster: Cluster
    ns: str
    db: DB
    bucket: str
    server: str
    #: step durations of the runs, for the report at the end
    timings: dict[str, dict[str, float]] = field(default_factory=dict)

    def kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        return str(self.cluster.kubectl(*args, "-n", self.ns, check=check, input=input).stdout)

    def json(self, *args: str) -> Any:
        return self.cluster.kubectl_json(*args, "-n", self.ns)

    def workflow(self, name: str) -> dict[str, Any]:
        return dict(self.json("get", "workflow", name))

    def story(self, name: str | None = None) -> str:
        parts = [self.kubectl("get", "workflows,pods", "-o", "wide", check=False),
                 self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)[-3000:],
                 "--- controller\n" + self.kubectl("logs", "deployment/workflow-controller", "--tail=40",
                                                   check=False)]
        if name:
            parts.append(json.dumps(self.json("get", "workflow", name).get("status"), indent=1)[-4000:])
        return "\n".join(parts)

    def wait_final(self, name: str, timeout: float = 900) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            w = self.workflow(name)
            return w if w.get("status", {}).get("phase") in FINAL else None
        try:
            return dict(self.cluster.wait_for(final, timeout, f"workflow {name} to finish"))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.story(name)}") from None

    def submit(self, template: str, parameters: dict[str, str]) -> str:
        """``kubectl create`` of a run of ``template``; its name."""
        return self.kubectl("create", "-f", "-", "-o", "jsonpath={.metadata.name}",
                            input=json.dumps(argo.workflow_run(template, parameters)))

    def succeeded_run(self) -> dict[str, Any]:
        """A Succeeded run of the chart's template (the first test's, or a new one)."""
        runs = [w for w in self.json("get", "workflows")["items"]
                if w["spec"].get("workflowTemplateRef", {}).get("name") == TEMPLATE
                and w.get("status", {}).get("phase") == "Succeeded"]
        if runs:
            return dict(runs[0])
        done = self.wait_final(self.submit(TEMPLATE, PARAMETERS))
        assert done["status"]["phase"] == "Succeeded", self.story(done["metadata"]["name"])
        return done

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """The Argo server's HTTP API, as the UI calls it."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 - a pod of this test
            return json.loads(resp.read().decode())


def steps(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The pod nodes of a run by template name (the DAG's tasks and the exit handler, ``record``; the last
    attempt of a retried step)."""
    nodes = [n for n in workflow["status"].get("nodes", {}).values() if n["type"] == "Pod"]
    by_name: dict[str, dict[str, Any]] = {}
    for n in sorted(nodes, key=lambda n: n.get("startedAt") or ""):
        by_name[n["templateName"]] = n
    return by_name


ALL_STEPS = sorted((*wf.STEPS, wf.EXIT_STEP))


def archived_log(a: Argo, workflow: str, step: str) -> str:
    """The step's log as archived in the artifact repository (archiveLogs), read from S3."""
    s3 = boto3.client("s3")
    node = steps(a.workflow(workflow))[step]
    [log] = [x for x in node["outputs"]["artifacts"] if x["name"] == "main-logs"]
    return str(s3.get_object(Bucket=a.bucket, Key=log["s3"]["key"])["Body"].read().decode())


def controller_metrics(a: Argo) -> str:
    """The workflow controller's Prometheus metrics (its pod's port 9090, TLS with its own certificate)."""
    import ssl

    [pod] = a.json("get", "pods", "-l", "app=workflow-controller")["items"]
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    url = f"https://{pod['status']['podIP']}:9090/metrics"
    with urllib.request.urlopen(url, timeout=30, context=insecure) as resp:  # noqa: S310 - a pod of this test
        return str(resp.read().decode())


def seconds(node: dict[str, Any]) -> float:
    def at(s: str) -> dt.datetime:
        return dt.datetime.fromisoformat(s.replace("Z", "+00:00"))
    return (at(node["finishedAt"]) - at(node["startedAt"])).total_seconds()


@pytest.fixture(scope="module")
def analytics(node_cluster: Cluster, argo_image: str, host_pg: DebianPostgres, host_moto: str,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[Argo]:
    tmp = tmp_path_factory.mktemp("argo")
    with pytest.MonkeyPatch.context() as mp:
        point_aws_at(host_moto, mp)
        admin_url, pod_url = fresh_database(host_pg)
        # the d2b files in the warehouse's staging tables (the loader's own tests cover loading them)
        report = run_once(admin_url, Settings(warehouse_url=admin_url, home=tmp / "load"), load_routes(), str(D2B))
        assert report.ok, report
        bucket = f"analytics-{uuid.uuid4().hex[:8]}"
        boto3.client("s3").create_bucket(Bucket=bucket)

        ns = node_cluster.create_namespace(labels=RESTRICTED)
        a: Argo | None = None
        try:
            node_cluster.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", ns,
                                 f"--from-literal=url={pod_url}")
            node_cluster.kubectl("create", "secret", "generic", "filedrop-aws", "-n", ns,
                                 "--from-literal=AWS_ACCESS_KEY_ID=testing",
                                 "--from-literal=AWS_SECRET_ACCESS_KEY=testing")
            # (kubectl's own deadline beyond rollout status's 180 s)
            argo.install(lambda *args, **kw: node_cluster.kubectl(*args, timeout=300, **kw).stdout, ns,
                         argo.controller_config())
            # the CronWorkflow must not fire before its own test sets the schedule: twelve hours away
            far = dt.datetime.now(dt.UTC) + dt.timedelta(hours=12)
            values = {
                "image": {"repository": "filedrop", "tag": TAG, "pullPolicy": "Never"},
                "aws": {"region": "us-east-1", "endpointUrl": host_moto, "existingSecret": "filedrop-aws"},
                "argo": {"enabled": True, "exportTo": f"s3://{bucket}/exports",
                         "schedule": far.strftime("%M %H * * *"),
                         # the namespace's artifact repository: the docs artifact, the archived logs
                         "artifactRepository": argo.chart_repository_values(bucket, host_moto, "filedrop-aws"),
                         # the test database has no if_common schema: the steps build it (as `make demo` does)
                         "dbtTarget": "local"},
                "docs": {"s3Uri": f"s3://{bucket}/docs"},
            }
            (tmp / "values.yaml").write_text(yaml.safe_dump(values))
            res = node_cluster.helm("install", RELEASE, str(CHART), "-n", ns, "-f", str(tmp / "values.yaml"))
            assert "warning" not in res.stderr.lower(), res.stderr
            a = Argo(node_cluster, ns, DB(admin_url), bucket, argo.server_url(node_cluster.kubectl_json, ns))
            yield a
        finally:
            if a is not None and a.timings:
                print(f"\nArgo step durations (s): {json.dumps(a.timings)}", file=sys.stderr)
            node_cluster.helm("uninstall", RELEASE, "-n", ns, "--wait", "--timeout", "120s", check=False)
            node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_runs_submitted_through_the_server_and_kubectl_succeed_in_pods_one_at_a_time(analytics: Argo) -> None:
    a = analytics
    assert a.api("GET", "/api/v1/version")["version"] == f"v{argo.version()}"
    # submitted as the UI's Submit button does: the chart's template, with parameters
    run = a.api("POST", f"/api/v1/workflows/{a.ns}/submit", {
        "resourceKind": "WorkflowTemplate", "resourceName": TEMPLATE,
        "submitOptions": {"parameters": [f"{k}={v}" for k, v in PARAMETERS.items()]}})
    name = run["metadata"]["name"]
    # and at once a second run with `kubectl create`, for the next day: it waits for the template's mutex
    second = a.submit(TEMPLATE, {"as_of_date": NEXT_DAY, "ingestion_date": NEXT_DAY})
    # (whether they overlapped is judged afterwards from the steps' times: Argo releases the mutex just
    # before it writes the first run's final phase)
    waiting_seen = False
    deadline = time.monotonic() + 600
    while a.workflow(name).get("status", {}).get("phase") not in FINAL:
        status = a.workflow(second).get("status", {})
        waiting_seen = waiting_seen or bool(status.get("synchronization", {}).get("mutex", {}).get("waiting"))
        assert time.monotonic() < deadline, a.story(name)
        time.sleep(0.5)  # poll interval
    assert waiting_seen, a.story(second)

    done = a.wait_final(name)
    assert done["status"]["phase"] == "Succeeded", a.story(name)
    pods = steps(done)
    assert sorted(pods) == ALL_STEPS
    assert {n["phase"] for n in pods.values()} == {"Succeeded"}
    # the exit handler recorded the run in the warehouse (what `filedrop status` shows)
    assert a.db.one("SELECT status, as_of_date::text, failures::text FROM filedrop.transform_runs "
                    "WHERE workflow = %s", (name,)) == ("Succeeded", DAY, "[]")
    # every step's log is archived in the chart's artifact repository, and outlives the collected pods
    assert "dbt build: ok" in archived_log(a, name, "build")
    assert f"recorded run {name}: Succeeded" in archived_log(a, name, wf.EXIT_STEP)
    a.timings[name] = {step: seconds(n) for step, n in pods.items()} | {"total": seconds(done["status"])}

    # the analytics of DESIGN §6, as `make demo` prints them
    assert a.db.one("SELECT tt_late_shipments, tt_undelivered_items FROM analytics.agg_shipments "
                    f"WHERE ingestion_date = '{DAY}'") == (175, 6586)
    s3 = boto3.client("s3")
    page = s3.get_object(Bucket=a.bucket, Key="docs/index.html")
    assert page["ContentType"].startswith("text/html") and b"dbt" in page["Body"].read()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=a.bucket)["Contents"]}
    assert {f"exports/analytics_export/analytics/{t}.csv"
            for t in ("agg_public_holiday", "agg_shipments", "best_performing_product")} <= keys
    # the docs artifact went docs -> repository -> publish-docs
    artifact = pods["docs"]["outputs"]["artifacts"][0]
    assert artifact["name"] == "docs" and artifact["s3"]["key"] in keys, artifact
    assert artifact["s3"]["key"].startswith(f"argo-artifacts/{name}/")
    # successful steps' pods are collected (podGC OnPodSuccess)
    a.cluster.wait_for(lambda: not a.json("get", "pods", "-l", f"workflows.argoproj.io/workflow={name}")["items"],
                       60, "the run's pods to be collected")

    # then the second run holds the mutex and runs the same DAG for its day
    next_done = a.wait_final(second)
    assert next_done["status"]["phase"] == "Succeeded", a.story(second)
    assert sorted(steps(next_done)) == ALL_STEPS
    assert min(n["startedAt"] for n in steps(next_done).values()) >= done["status"]["finishedAt"], "runs overlapped"
    assert a.db.one(f"SELECT count(*) FROM analytics.agg_shipments WHERE ingestion_date = '{NEXT_DAY}'") == 1
    a.timings[second] = {s: seconds(n) for s, n in steps(next_done).items()} | {"total": seconds(next_done["status"])}
    # the controller counts the finished runs and keeps the last one's duration, by status
    # (Argo prefixes the names with argo_workflows_)
    samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1])
               for ln in controller_metrics(a).splitlines() if "filedrop_transform" in ln and not ln.startswith("#")}
    assert samples.get('argo_workflows_filedrop_transform_runs_total{status="Succeeded"}', 0) >= 2, samples
    assert samples.get('argo_workflows_filedrop_transform_duration_seconds{status="Succeeded"}', 0) > 10, samples


def test_the_cron_workflow_fires_at_the_schedule_helm_upgrade_sets(analytics: Argo, tmp_path: Path) -> None:
    a = analytics
    # the next minute at least 40 s away (helm upgrade and the controller's reaction), in the schedule's
    # timezone (UTC)
    at = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=100)).replace(second=0, microsecond=0)
    a.cluster.helm("upgrade", RELEASE, str(CHART), "-n", a.ns, "--reuse-values",
                   "--set-string", f"argo.schedule={at:%M %H} * * *")
    assert a.json("get", "cronworkflow", CRON)["spec"]["schedules"] == [f"{at:%M %H} * * *"]

    def fired() -> dict[str, Any] | None:
        found = a.json("get", "workflows", "-l", f"workflows.argoproj.io/cron-workflow={CRON}")["items"]
        return found[0] if found else None
    run = a.cluster.wait_for(fired, (at - dt.datetime.now(dt.UTC)).total_seconds() + 90,
                             f"the CronWorkflow to fire at {at:%H:%M} UTC")
    created = dt.datetime.fromisoformat(run["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    assert at <= created < at + dt.timedelta(seconds=30)
    name = run["metadata"]["name"]
    done = a.wait_final(name)
    assert done["status"]["phase"] == "Succeeded", a.story(name)
    assert sorted(steps(done)) == ALL_STEPS
    # its dates are the day it was scheduled for (empty parameters; the schedule's timezone, UTC), which every
    # step read from the run's scheduled time, not from its own clock
    scheduled = run["metadata"]["annotations"]["workflows.argoproj.io/scheduled-time"]
    day = f"{at:%Y-%m-%d}"
    assert a.db.one(f"SELECT count(*) FROM analytics.agg_shipments WHERE ingestion_date = '{day}'") == 1
    for step in ("build", "docs", wf.EXIT_STEP):
        assert f"the run's day is {day}, from its scheduled time {scheduled}" in archived_log(a, name, step), step
    assert a.db.one("SELECT status, as_of_date::text FROM filedrop.transform_runs WHERE workflow = %s",
                    (name,)) == ("Succeeded", day)
    a.timings[name] = {s: seconds(n) for s, n in steps(done).items()} | {"total": seconds(done["status"])}


def test_applied_template_whose_dbt_test_fails_fails_the_run_with_the_reason(analytics: Argo,
                                                                              tmp_path: Path) -> None:
    a = analytics
    config = {"name": APPLIED, "image": LOADER_IMAGE, "image_pull_policy": "Never", "env_secret": "filedrop-aws",
              "export_to": f"s3://{a.bucket}/applied/exports", "docs_to": f"s3://{a.bucket}/applied/docs",
              # far from now: this test submits its own run
              "schedule": "0 0 1 1 *"}
    (tmp_path / "workflows.yaml").write_text(yaml.safe_dump(config))
    res = subprocess.run([sys.executable, "-m", "filedrop", "workflows", "apply", "--argo-server", a.server,
                          "-n", a.ns, "--config", str(tmp_path / "workflows.yaml")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"WorkflowTemplate {a.ns}/{APPLIED} applied" in res.stdout
    assert a.json("get", "workflowtemplate", APPLIED)["spec"]["templates"]

    # an order without its customer in staging: stg_orders' not_null test on customer_id fails
    customer = a.db.one("SELECT customer_id FROM staging.orders WHERE order_id = 1")
    a.db.execute("UPDATE staging.orders SET customer_id = NULL WHERE order_id = 1")
    try:
        name = a.submit(APPLIED, PARAMETERS)
        done = a.wait_final(name)
    finally:
        a.db.execute("UPDATE staging.orders SET customer_id = %s WHERE order_id = 1", (customer,))
    assert done["status"]["phase"] == "Failed", a.story(name)
    pods = steps(done)
    assert pods["freshness"]["phase"] == "Succeeded"
    build = pods["build"]
    assert build["phase"] == "Failed"
    # not retried: a failing test would fail the same way again
    assert sum(1 for n in done["status"]["nodes"].values() if n["type"] == "Pod"
               and n["displayName"].startswith("build")) == 1
    assert "not_null_stg_orders_customer_id" in build["message"], build
    assert "docs" not in pods and "export" not in pods
    # the exit handler ran all the same, and recorded the failure with the failing step and its reason
    assert pods[wf.EXIT_STEP]["phase"] == "Succeeded"
    status, failures = a.db.one("SELECT status, failures FROM filedrop.transform_runs WHERE workflow = %s", (name,))
    assert status == "Failed" and [f["step"] for f in failures] == ["build"], failures
    assert "not_null_stg_orders_customer_id" in failures[0]["message"]
    # the failed pod stays, with its log (podGC OnPodSuccess)
    assert a.json("get", "pods", "-l", f"workflows.argoproj.io/workflow={name}")["items"]
    a.timings[name] = {s: seconds(n) for s, n in pods.items()}


def test_the_argo_ui_shows_the_run_its_steps_and_the_docs_artifact(analytics: Argo, tmp_path: Path) -> None:
    a = analytics
    run = a.succeeded_run()
    name = run["metadata"]["name"]
    docs = steps(run)["docs"]
    key = docs["outputs"]["artifacts"][0]["s3"]["key"]
    with sync_playwright() as p:
        only = urlsplit(a.server).hostname
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=[*CHROMIUM_ARGS, f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {only}"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            # the namespace's runs
            page.goto(f"{a.server}/workflows/{a.ns}")
            expect(page.get_by_text(name).first).to_be_visible(timeout=30_000)
            page.screenshot(path=tmp_path / "argo-ui-workflows.png")
            # the run: its DAG, the docs step selected, its inputs and outputs with the docs artifact
            page.goto(f"{a.server}/workflows/{a.ns}/{name}?tab=workflow&nodeId={docs['id']}"
                      "&nodePanelView=inputs-outputs")
            for step in wf.STEPS:
                expect(page.get_by_text(step, exact=True).first).to_be_visible(timeout=30_000)
            download = f"/artifact-files/{a.ns}/workflows/{name}/{docs['id']}/outputs/docs"
            expect(page.locator(f'a[href$="{download}"]')).to_be_visible()
            expect(page.get_by_text(f"{wf.DOCS_DIR}/index.html").first).to_be_visible()
            page.screenshot(path=tmp_path / "argo-ui-run.png")
            assert not errors, errors
        finally:
            browser.close()
    print(f"\nArgo UI screenshots: {tmp_path}", file=sys.stderr)
    # the link downloads the docs site through the server, from the artifact repository
    with urllib.request.urlopen(a.server + download, timeout=30) as resp:  # noqa: S310 - a pod of this test
        assert b"dbt" in resp.read()
    assert key.startswith(f"argo-artifacts/{name}/")
