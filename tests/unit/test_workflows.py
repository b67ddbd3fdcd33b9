"""The Hera workflows (filedrop/analytics/workflows.py): the step command lines, the DAG, retries and deadlines,
the Helm escaping of the chart templates, and that the committed manifests are what the code renders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from filedrop.analytics import chart as helm_chart
from filedrop.analytics import workflows as wf
from filedrop.cli import app
from filedrop.cli.workflows import rendered_files

REPO = Path(__file__).resolve().parents[2]


def test_step_commands_are_the_filedrop_cli() -> None:
    assert wf.step_command("freshness") == ["filedrop", "workflows", "step", "freshness"]
    assert wf.step_command("build", as_of_date="2022-09-05", ingestion_date="2022-09-06", selection="agg_shipments+",
                           full_refresh="true", scheduled_time="2022-09-06T06:00:00Z") == [
        "filedrop", "workflows", "step", "build", "--as-of", "2022-09-05", "--ingestion-date", "2022-09-06",
        "--scheduled-time", "2022-09-06T06:00:00Z", "--created-time", "",
        "--select", "agg_shipments+", "--full-refresh", "true"]
    assert wf.step_command("docs", as_of_date="", docs_dir="/d") == [
        "filedrop", "workflows", "step", "docs", "--as-of", "", "--ingestion-date", "", "--scheduled-time", "",
        "--created-time", "", "--out", "/d"]
    # the exit handler: the run's outcome, from Argo's variables
    record = wf.step_command(wf.EXIT_STEP, created_time=wf.CREATED_TIME)
    assert record[:4] == ["filedrop", "workflows", "step", "record"]
    assert record[record.index("--status") + 1] == "{{workflow.status}}"
    assert record[record.index("--failures") + 1] == "{{workflow.failures}}"
    assert record[record.index("--created-time") + 1] == "{{workflow.creationTimestamp}}"
    assert wf.step_command("publish-docs", docs_to="s3://b/docs", docs_server="http://d/-/reload", docs_dir="/d") == [
        "filedrop", "workflows", "step", "publish-docs", "--from", "/d", "--to", "s3://b/docs",
        "--notify", "http://d/-/reload"]
    # DESIGN §5's documented command
    assert wf.step_command("export", export_to="s3://b/x") == ["filedrop", "export", "--to", "s3://b/x"]
    with pytest.raises(ValueError, match="unknown workflow step"):
        wf.step_command("deploy")


def test_step_commands_exist_with_those_options() -> None:
    """Every option a step passes is one the command accepts (typer would refuse the pod's command line)."""
    runner = CliRunner()
    for step in (*wf.STEPS, wf.EXIT_STEP):
        argv = wf.step_command(step, export_to="s3://b/x", docs_to="s3://b/d")
        res = runner.invoke(app, [*argv[1:], "--help"])
        assert res.exit_code == 0, (step, res.output)
        for opt in (a for a in argv if a.startswith("--")):
            assert opt in res.output, (step, opt)


def test_template_dag_parameters_and_plumbing() -> None:
    cfg = wf.WorkflowConfig(namespace="data", env_secret="aws-keys", docs_server="http://docs/-/reload")
    tmpl = wf.manifests(cfg)["template"]
    spec = tmpl["spec"]
    assert tmpl["kind"] == "WorkflowTemplate" and tmpl["metadata"]["namespace"] == "data"
    assert spec["entrypoint"] == "transform" and spec["serviceAccountName"] == "filedrop-workflows"
    params = {p["name"]: p for p in spec["arguments"]["parameters"]}
    assert list(params) == ["as_of_date", "ingestion_date", "selection", "full_refresh"]
    assert params["full_refresh"]["value"] == "false" and params["full_refresh"]["enum"] == ["false", "true"]
    assert spec["synchronization"] == {"mutexes": [{"name": "filedrop-transform"}]}
    assert spec["activeDeadlineSeconds"] == wf.WORKFLOW_DEADLINE
    templates = {t["name"]: t for t in spec["templates"]}
    tasks = {t["name"]: t for t in templates["transform"]["dag"]["tasks"]}
    assert set(tasks) == set(wf.STEPS)
    assert {n: t.get("depends") for n, t in tasks.items()} == {
        "freshness": None, "build": "freshness", "docs": "build", "publish-docs": "docs", "export": "build"}
    assert tasks["publish-docs"]["arguments"]["artifacts"] == [
        {"name": "docs", "from": "{{tasks.docs.outputs.artifacts.docs}}"}]
    # what every step shares is said once, in templateDefaults (Argo merges it into each container)
    shared = spec["templateDefaults"]["container"]
    env = {e["name"]: e for e in shared["env"]}
    assert env["FILEDROP_WAREHOUSE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "filedrop-warehouse", "key": "url"}
    assert "value" not in env["FILEDROP_WAREHOUSE_URL"]  # never a secret in the manifest
    assert {"secretRef": {"name": "aws-keys"}} in shared["envFrom"]
    assert shared["securityContext"]["readOnlyRootFilesystem"] and shared["securityContext"]["capabilities"] == {
        "drop": ["ALL"]}
    assert shared["image"] == cfg.image and shared["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert set(spec["templateDefaults"]) == {"container"}  # nothing that would reach the DAG template
    for step in (*wf.STEPS, wf.EXIT_STEP):
        t = templates[step]
        c = t["container"]
        assert t["activeDeadlineSeconds"] == wf.STEP_DEADLINES[step]
        # retries stay per step: in templateDefaults they would also retry the whole DAG
        assert t["retryStrategy"]["limit"] == 3 and t["retryStrategy"]["backoff"]["factor"] == 2
        assert t["retryStrategy"]["expression"] == wf.retry_expression()
        assert set(c) == {"command"} and c["command"][0] == "filedrop"
        if step in ("build", "docs", wf.EXIT_STEP):  # one day per run: the run's times, not the step's clock
            assert c["command"][c["command"].index("--scheduled-time") + 1] == "{{workflow.scheduledTime}}"
            assert c["command"][c["command"].index("--created-time") + 1] == "{{workflow.creationTimestamp}}"
    # the exit handler records every run's outcome; logs are archived; metrics per finished run
    assert spec["onExit"] == wf.EXIT_STEP and wf.EXIT_STEP not in tasks
    assert spec["archiveLogs"] is True
    metrics = {m["name"]: m for m in spec["metrics"]["prometheus"]}
    assert set(metrics) == set(wf.METRICS)
    assert metrics["filedrop_transform_duration_seconds"]["gauge"] == {"realtime": False,
                                                                       "value": "{{workflow.duration}}"}
    assert metrics["filedrop_transform_runs_total"]["counter"] == {"value": "1"}
    assert all(m["labels"] == [{"key": "status", "value": "{{workflow.status}}"}] for m in metrics.values())
    build = templates["build"]["container"]["command"]
    assert build[build.index("--select") + 1] == "{{workflow.parameters.selection}}"
    assert templates["publish-docs"]["container"]["command"][-1] == "http://docs/-/reload"
    assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["seccompProfile"] == {
        "type": "RuntimeDefault"}


def test_cron_runs_the_template_daily_without_overlap() -> None:
    cron = wf.manifests(wf.WorkflowConfig(schedule="30 5 * * *", timezone="Africa/Lagos"))["cron"]
    assert cron["kind"] == "CronWorkflow" and cron["metadata"]["name"] == "filedrop-transform-daily"
    spec = cron["spec"]
    assert spec["schedules"] == ["30 5 * * *"] and spec["timezone"] == "Africa/Lagos"
    assert spec["concurrencyPolicy"] == "Forbid" and spec["startingDeadlineSeconds"] == 3600
    assert spec["workflowSpec"] == {"workflowTemplateRef": {"name": "filedrop-transform"}}


def test_retry_expression_retries_pod_errors_and_tempfail_only() -> None:
    expr = wf.retry_expression()
    assert expr == 'lastRetry.status == "Error" || lastRetry.exitCode in ["3", "75"]'


def test_escape_for_helm() -> None:
    assert helm_chart.escape_for_helm("x: '{{workflow.parameters.a}}' {{tasks.b.outputs}}") == (
        "x: '{{`{{workflow.parameters.a}}`}}' {{`{{tasks.b.outputs}}`}}")
    assert helm_chart.escape_for_helm("no expressions") == "no expressions"
    with pytest.raises(ValueError, match="backtick"):
        helm_chart.escape_for_helm("{{=`x`}}")


def test_substitute_values() -> None:
    text = ("metadata:\n  name: __HELM_NAME__\n  labels: __HELM_BLOCK_LABELS__\n"
            "spec:\n  n: __HELM_SUCCESSFUL_HISTORY__\n")
    out = helm_chart.substitute_values(text)
    assert out == ('metadata:\n  name: {{ include "filedrop.workflows.name" . | quote }}\n  labels:\n'
                   '    {{- include "filedrop.labels" (dict "context" . "component" "workflows") | nindent 4 }}\n'
                   "spec:\n  n: {{ .Values.argo.successfulJobsHistoryLimit | int }}\n")
    with pytest.raises(KeyError):
        helm_chart.substitute_values("x: __HELM_NOPE__\n")


def test_chart_templates_keep_argo_expressions_and_take_values() -> None:
    chart = helm_chart.render_chart()
    tmpl = chart[helm_chart.CHART_TEMPLATES["template"]]
    assert tmpl.splitlines()[1] == "{{- if .Values.argo.enabled }}" and tmpl.endswith("{{- end }}\n")
    assert "'{{`{{workflow.parameters.as_of_date}}`}}'" in tmpl
    assert "__HELM" not in tmpl and "filedrop-warehouse" not in tmpl  # every setting comes from values
    # outside the escapes, only Helm actions remain
    bare = tmpl.replace("{{`{{", "").replace("}}`}}", "")
    assert "{{workflow" not in bare and "{{tasks" not in bare


def test_committed_manifests_are_what_the_code_renders() -> None:
    """Hera is the single source: `filedrop workflows render` must have been run after every change."""
    stale = [str(p.relative_to(REPO)) for p, text in rendered_files(REPO).items()
             if not p.is_file() or p.read_text() != text]
    assert stale == [], f"run `filedrop workflows render`: {stale} drifted from filedrop/analytics/ (workflows, chart)"
    res = CliRunner().invoke(app, ["workflows", "render", "--check", "--root", str(REPO)])
    assert res.exit_code == 0, res.output


def test_render_check_reports_drift(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["workflows", "render", "--check", "--root", str(tmp_path)])
    assert res.exit_code == 1 and "differs: workflows/filedrop-transform.workflowtemplate.yaml" in res.output
    res = runner.invoke(app, ["workflows", "render", "--root", str(tmp_path)])
    assert res.exit_code == 0
    written = tmp_path / "workflows" / wf.PLAIN_FILES["template"]
    assert yaml.safe_load(written.read_text())["kind"] == "WorkflowTemplate"
    assert runner.invoke(app, ["workflows", "render", "--check", "--root", str(tmp_path)]).exit_code == 0


def test_config_from_mapping() -> None:
    cfg = wf.config_from_mapping({"image": "reg/filedrop:1.2", "schedule": "0 7 * * *", "namespace": "data"})
    assert cfg.image == "reg/filedrop:1.2" and cfg.cron_name == "filedrop-transform-daily"
    with pytest.raises(ValueError, match="unknown workflow setting"):
        wf.config_from_mapping({"imagee": "x"})


def test_steps_exit_75_when_the_warehouse_is_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit status 75 is what the workflow's retry expression retries."""
    monkeypatch.setenv("FILEDROP_HOME", str(tmp_path))
    nowhere = "postgresql://postgres@127.0.0.1:9/nowhere?connect_timeout=2"
    res = CliRunner().invoke(app, ["workflows", "step", "freshness", "--warehouse", nowhere])
    assert res.exit_code == 75, res.output
    res = CliRunner().invoke(app, ["workflows", "step", "build", "--as-of", "05/09/2022", "--warehouse", nowhere])
    assert res.exit_code == 2 and "--as-of must be a date" in res.output
    res = CliRunner().invoke(app, ["workflows", "step", "build", "--full-refresh", "maybe", "--warehouse", nowhere])
    assert res.exit_code == 2
    res = CliRunner().invoke(app, ["workflows", "step", "build", "--created-time", "2022-09-05 06:00",
                                   "--warehouse", nowhere])
    assert res.exit_code == 2 and "--created-time must say its UTC offset" in res.output
    # the exit handler retries when it cannot write the record
    res = CliRunner().invoke(app, ["workflows", "step", "record", "--workflow", "w-1", "--status", "Failed",
                                   "--warehouse", nowhere])
    assert res.exit_code == 75 and "cannot record the run" in res.output, res.output
    # a value it cannot read (the bad date that failed the run) is left out, never a reason to lose the record
    res = CliRunner().invoke(app, ["workflows", "step", "record", "--workflow", "w-1", "--status", "Failed",
                                   "--duration", "soon", "--as-of", "2026-02-30", "--warehouse", nowhere])
    assert res.exit_code == 75, res.output
    assert "warning: --duration left out of the record" in res.output
    assert "warning: --as-of left out of the record: --as-of must be a date" in res.output
    res = CliRunner().invoke(app, ["workflows", "step", "record", "--workflow", "", "--status", "Failed"])
    assert res.exit_code == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    res = CliRunner().invoke(app, ["workflows", "step", "publish-docs", "--from", str(empty), "--to", "s3://b/d"])
    assert res.exit_code == 1 and "no index.html" in res.output


class _FakeS3:
    """The two calls DocsSite makes, over a dict of key -> (body, etag)."""

    def __init__(self, objects: dict[str, tuple[bytes, str]]) -> None:
        self.objects, self.gets = objects, 0

    def get_paginator(self, _name: str) -> _FakeS3:
        return self

    def paginate(self, Bucket: str, Prefix: str) -> list[dict[str, object]]:  # noqa: N803 - boto3's names
        return [{"Contents": [{"Key": k, "Size": len(b), "ETag": f'"{e}"'} for k, (b, e) in sorted(self.objects.items())
                              if k.startswith(Prefix)]}]

    def get_object(self, Bucket: str, Key: str) -> dict[str, object]:  # noqa: N803
        import io

        self.gets += 1
        return {"Body": io.BytesIO(self.objects[Key][0])}


def test_docs_server_serves_the_prefix_and_reloads_on_request() -> None:
    import threading
    import urllib.error
    import urllib.request

    from filedrop.analytics.docs_site import DocsSite, make_server, split_uri

    assert split_uri("s3://b/docs/") == ("b", "docs/") and split_uri("s3://b") == ("b", "")
    s3 = _FakeS3({"docs/index.html": (b"<html>v1</html>", "e1"), "docs/catalog.json": (b"{}", "c1"),
                  "other/secret.txt": (b"no", "x")})
    site = DocsSite("s3://b/docs", client=s3)
    assert site.reload() == 2
    server = make_server(site, "127.0.0.1", 0, refresh=3600)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def get(path: str, method: str = "GET") -> tuple[int, str, str]:
        req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, "", exc.read().decode()
    try:
        assert get("/") == (200, "text/html; charset=utf-8", "<html>v1</html>")
        assert get("/catalog.json")[:2] == (200, "application/json")
        assert get("/../other/secret.txt")[0] == 404 and get("/other/secret.txt")[0] == 404
        assert get("/healthz")[2] == "ok\n"
        s3.objects["docs/index.html"] = (b"<html>v2</html>", "e2")
        assert get("/")[2] == "<html>v1</html>"  # until told (or the refresh interval passes)
        gets = s3.gets
        assert get("/-/reload", "POST")[:1] == (200,)
        assert s3.gets == gets + 1  # only the changed object was read again
        assert get("/")[2] == "<html>v2</html>"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def lagos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process in UTC+1 (what the steps' TZ does in their pods)."""
    import time

    monkeypatch.setenv("TZ", "Africa/Lagos")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_a_run_has_one_day_whenever_its_steps_start(lagos: None) -> None:
    """A run's day is its scheduled time's date (else its creation time's) in the workflow's timezone, so the
    steps of a run that crosses midnight build the same day."""
    from datetime import date

    from filedrop.analytics.dbt import TransformError, run_day

    # scheduled at 23:30 UTC = 00:30 the next day in Lagos; created (started late) after that
    assert run_day("2026-12-06T23:30:00Z", "2026-12-07T00:10:00Z") == date(2026, 12, 7)
    assert run_day("2026-12-06T22:30:00Z", "2026-12-06T23:59:00Z") == date(2026, 12, 6)
    # not scheduled: Argo leaves the placeholder, and the creation time decides
    assert run_day("{{workflow.scheduledTime}}", "2026-12-06T23:00:00Z") == date(2026, 12, 7)
    assert run_day("", "2026-12-06T10:00:00+00:00") == date(2026, 12, 6)
    assert run_day(None, None) is None and run_day("", "") is None
    with pytest.raises(TransformError, match="UTC offset"):
        run_day("2026-12-06T23:30:00", None)
    with pytest.raises(TransformError, match="--created-time must be a time"):
        run_day("", "yesterday")


def test_the_exit_handler_reads_argos_failures() -> None:
    """What Argo 3.7 gives the exit handler of a run whose build failed a dbt test (node shapes seen on the node;
    Argo fills podName for every node): the retry node, the DAG and the pod attempt; the record keeps the step and
    the attempt's message."""
    from filedrop.warehouse.runs import parse_failures

    message = ("main: Error (exit code 1): dbt build: FAILED in 7.9s (1 fail, 41 pass)\n"
               "fail: test not_null_stg_orders_customer_id: 1 failing row(s)")
    nodes = json.dumps([
        {"displayName": "build", "message": "retryStrategy.expression evaluated to false", "templateName": "build",
         "phase": "Failed", "podName": "filedrop-applied-5zrlv-build-2", "finishedAt": "2026-12-07T08:10:05Z"},
        {"displayName": "filedrop-applied-5zrlv", "message": "", "templateName": "transform", "phase": "Failed",
         "podName": "filedrop-applied-5zrlv", "finishedAt": "2026-12-07T08:10:05Z"},
        {"displayName": "build(0)", "message": message, "templateName": "build", "phase": "Failed",
         "podName": "filedrop-applied-5zrlv-build-1", "finishedAt": "2026-12-07T08:10:04Z"}])
    want = [{"step": "build", "phase": "Failed", "message": message}]
    assert parse_failures(nodes, "filedrop-applied-5zrlv") == want
    assert parse_failures(json.dumps(nodes), "filedrop-applied-5zrlv") == want  # Argo quotes it once more
    # retried: the last attempt's message
    retried = json.dumps([
        {"templateName": "export", "displayName": "export(0)", "podName": "p0", "phase": "Failed",
         "message": "exit code 75", "finishedAt": "2026-12-07T08:00:00Z"},
        {"templateName": "export", "displayName": "export", "podName": "p", "phase": "Failed",
         "message": "No more retries left", "finishedAt": "2026-12-07T08:05:01Z"},
        {"templateName": "export", "displayName": "export(1)", "podName": "p1", "phase": "Error",
         "message": "pod deleted", "finishedAt": "2026-12-07T08:05:00Z"}])
    assert parse_failures(retried, "w") == [{"step": "export", "phase": "Error", "message": "pod deleted"}]
    # no attempt failed (the run hit its deadline before a pod): the nodes that say something of their own
    assert parse_failures(json.dumps([
        {"templateName": "transform", "displayName": "w", "phase": "Failed", "podName": "w",
         "message": "Step exceeded its deadline"},
        {"templateName": "docs", "displayName": "docs", "phase": "Failed", "podName": "w-docs-1",
         "message": "child 'w-docs-2' failed"}]), "w") == [
        {"step": "transform", "phase": "Failed", "message": "Step exceeded its deadline"}]
    assert parse_failures(json.dumps([{"templateName": "docs", "displayName": "docs", "phase": "Error",
                                       "message": "pod creation refused: quota", "podName": "w-docs-1"}]), "w") == [
        {"step": "docs", "phase": "Error", "message": "pod creation refused: quota"}]
    assert parse_failures("null") == [] and parse_failures("") == [] and parse_failures(None) == []
    assert parse_failures("{{workflow.failures}}") == []
    # never lost to a format it did not expect
    assert parse_failures("pod deleted") == [{"step": "", "phase": "", "message": "pod deleted"}]
