"""Each step of the Argo workflow, run locally the way its pod would run it: the command lines come from the
rendered WorkflowTemplate (Argo's parameters substituted, the docs artifact a local directory), against a real
PostgreSQL with the d2b files loaded and moto's S3, with the docs server running. They must succeed and leave
the analytics rows, the docs site (in S3 and served) and the exports behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest

from filedrop.analytics import workflows as wf
from filedrop.config import Settings
from filedrop.local.pipeline import run_once
from filedrop.routes import load_routes
from tests.conftest import D2B, DB
from tests.support.servers import free_port, wait_until

pytestmark = pytest.mark.parametrize("pg_server", ["pg18-embedded"], indirect=True)

PARAMS = {"as_of_date": "2022-09-05", "ingestion_date": "2022-09-05", "selection": "", "full_refresh": "false"}


def _dag_order(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The DAG's tasks in an order that respects `depends` (what Argo would run first)."""
    entry = next(t for t in spec["templates"] if t["name"] == spec["entrypoint"])
    tasks = {t["name"]: t for t in entry["dag"]["tasks"]}
    done: list[str] = []
    while len(done) < len(tasks):
        for name, t in tasks.items():
            deps = re.findall(r"[\w-]+", t.get("depends", ""))
            if name not in done and all(d in done for d in deps):
                done.append(name)
    return [tasks[n] for n in done]


#: Argo's variables of a run nobody scheduled: it leaves {{workflow.scheduledTime}} as it is
RUN = {"workflow.name": "filedrop-transform-x7k2p", "workflow.creationTimestamp": "2022-09-05T05:59:58Z",
       "workflow.status": "Succeeded", "workflow.duration": "83.250000", "workflow.failures": "null"}


def _container(spec: dict[str, Any], template: str) -> dict[str, Any]:
    """A step's container as Argo runs it: templateDefaults' container with the template's on top."""
    return {**spec["templateDefaults"]["container"],
            **next(t for t in spec["templates"] if t["name"] == template)["container"]}


def _argv(container: dict[str, Any], params: dict[str, str], docs_dir: Path,
          run: dict[str, str] | None = None) -> list[str]:
    variables = {**(run or RUN), **{f"workflow.parameters.{k}": v for k, v in params.items()}}

    def sub(arg: str) -> str:
        arg = re.sub(r"\{\{([\w.]+)\}\}", lambda m: variables.get(m.group(1), m.group(0)), arg)
        return arg.replace(wf.DOCS_DIR, str(docs_dir))  # the docs artifact: one local directory for both steps
    return [sub(a) for a in container["command"] + container.get("args", [])]


def _env(container: dict[str, Any], warehouse: str, home: Path) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"].replace(wf.TMP, str(home))
    assert container["env"][0]["name"] == "FILEDROP_WAREHOUSE_URL"  # from the Secret, in the cluster
    env["FILEDROP_WAREHOUSE_URL"] = warehouse
    # The test database has no if_common: build it as the local target does (in production it exists).
    env["FILEDROP_DBT_TARGET"] = "local"
    return env


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        return str(resp.read().decode())


def test_each_workflow_step_runs_locally(warehouse: str, db: DB, aws: str, tmp_path: Path) -> None:
    report = run_once(warehouse, Settings(warehouse_url=warehouse, home=tmp_path / "load"), load_routes(), str(D2B))
    assert report.ok
    bucket = f"analytics-{uuid.uuid4().hex[:8]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    port = free_port()
    env = {**os.environ, "FILEDROP_HOME": str(tmp_path / "docs-server")}
    server = subprocess.Popen([sys.executable, "-m", "filedrop", "workflows", "serve-docs", "--from",
                               f"s3://{bucket}/docs", "--host", "127.0.0.1", "--port", str(port), "--refresh", "3600"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: _health(port), 30, "the docs server")
        assert "no docs published" in _status(f"http://127.0.0.1:{port}/")[1]
        cfg = wf.WorkflowConfig(export_to=f"s3://{bucket}/exports", docs_to=f"s3://{bucket}/docs",
                                docs_server=f"http://127.0.0.1:{port}/-/reload")
        spec = wf.manifests(cfg)["template"]["spec"]
        ran = []
        for task in _dag_order(spec):
            container = _container(spec, task["template"])
            argv = _argv(container, PARAMS, tmp_path / "docs")
            res = subprocess.run(argv, env=_env(container, warehouse, tmp_path / f"pod-{task['name']}"),
                                 capture_output=True, text=True, timeout=600)
            assert res.returncode == 0, f"step {task['name']}: {argv}\n{res.stdout}\n{res.stderr}"
            ran.append((task["name"], res.stdout))
        assert sorted(n for n, _ in ran) == sorted(wf.STEPS)
        out = dict(ran)
        assert "dbt source freshness: ok" in out["freshness"]
        assert "dbt build: ok" in out["build"] and "as_of_date 2022-09-05" in out["build"]

        # the analytics rows of DESIGN §6
        assert db.one("SELECT tt_late_shipments, tt_undelivered_items FROM analytics.agg_shipments "
                      "WHERE ingestion_date = '2022-09-05'") == (175, 6586)
        # the docs: in S3 and served by the docs server, which the publish step told to reload
        page = s3.get_object(Bucket=bucket, Key="docs/index.html")
        assert page["ContentType"].startswith("text/html") and b"dbt" in page["Body"].read()
        assert "reloaded 1 file(s)" in out["publish-docs"]
        status, body = _status(f"http://127.0.0.1:{port}/")
        assert status == 200 and "dbt" in body
        # the exports: one CSV per analytics table
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="exports/")["Contents"])
        assert keys == [f"exports/analytics_export/analytics/{t}.csv"
                        for t in ("agg_public_holiday", "agg_shipments", "best_performing_product")]

        # the exit handler records the run, and `filedrop status` shows it
        record = _container(spec, wf.EXIT_STEP)
        res = subprocess.run(_argv(record, PARAMS, tmp_path / "docs"), env=_env(record, warehouse, tmp_path / "pod-r"),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "recorded run filedrop-transform-x7k2p: Succeeded in 83s, as_of_date 2022-09-05" in res.stdout
        failed = {**RUN, "workflow.name": "filedrop-transform-q9w", "workflow.status": "Failed",
                  "workflow.creationTimestamp": "2022-09-06T05:59:58Z",
                  "workflow.failures": json.dumps(json.dumps([{
                      "displayName": "build", "templateName": "build", "phase": "Failed",
                      "message": "Error (exit code 1)", "podName": "p", "finishedAt": "2022-09-06T06:01:00Z"}]))}
        res = subprocess.run(_argv(record, {**PARAMS, "as_of_date": "", "ingestion_date": ""}, tmp_path / "docs",
                                   failed), env=_env(record, warehouse, tmp_path / "pod-r2"),
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "the run's day is 2022-09-06, from its creation time 2022-09-06T05:59:58Z" in res.stderr
        status = subprocess.run([sys.executable, "-m", "filedrop", "status", "-o", "json", "--warehouse", warehouse],
                                env={**os.environ, "FILEDROP_HOME": str(tmp_path / "status")}, capture_output=True,
                                text=True, timeout=120)
        assert status.returncode == 0, status.stderr
        runs = json.loads(status.stdout)["transform_runs"]
        assert [(r["workflow"], r["status"], r["as_of_date"]) for r in runs] == [
            ("filedrop-transform-q9w", "Failed", "2022-09-06"),  # empty dates: the run's day
            ("filedrop-transform-x7k2p", "Succeeded", "2022-09-05")]
        assert runs[0]["failures"] == [{"step": "build", "phase": "Failed", "message": "Error (exit code 1)"}]
        assert runs[1]["duration_seconds"] == 83.25 and runs[1]["finished_at"].startswith("2022-09-05T06:01:21")

        # the parameters reach dbt: a selected full refresh of one model on another day
        build = _container(spec, "build")
        again = subprocess.run(_argv(build, {**PARAMS, "ingestion_date": "2022-09-06", "selection": "agg_shipments",
                                             "full_refresh": "true"}, tmp_path / "docs"),
                               env=_env(build, warehouse, tmp_path / "pod-again"), capture_output=True, text=True,
                               timeout=600)
        assert again.returncode == 0, again.stdout + again.stderr
        # a full refresh rebuilt the table: only the new day's row is left
        assert db.rows("SELECT ingestion_date::text FROM analytics.agg_shipments") == [("2022-09-06",)]
        assert db.one("SELECT count(*) FROM analytics.agg_public_holiday") == 1  # not selected, untouched
    finally:
        server.terminate()
        server.wait(10)


def _status(url: str) -> tuple[int, str]:
    try:
        return 200, _get(url)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _health(port: int) -> bool:
    try:
        return _get(f"http://127.0.0.1:{port}/healthz").strip() == "ok"
    except OSError:
        return False
