"""The Hera workflows (filedrop/analytics/workflows.py): the step command lines, the DAG, retries and deadlines,
the Helm escaping of the chart templates, and that the committed manifests are what the code renders."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from filedrop.analytics import workflows as wf
from filedrop.cli import app
from filedrop.cli.workflows import rendered_files

REPO = Path(__file__).resolve().parents[2]


def test_step_commands_are_the_filedrop_cli() -> None:
    assert wf.step_command("freshness") == ["filedrop", "workflows", "step", "freshness"]
    assert wf.step_command("build", as_of_date="2022-09-05", ingestion_date="2022-09-06", selection="agg_shipments+",
                           full_refresh="true") == [
        "filedrop", "workflows", "step", "build", "--as-of", "2022-09-05", "--ingestion-date", "2022-09-06",
        "--select", "agg_shipments+", "--full-refresh", "true"]
    assert wf.step_command("docs", as_of_date="", docs_dir="/d") == [
        "filedrop", "workflows", "step", "docs", "--as-of", "", "--ingestion-date", "", "--out", "/d"]
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
    for step in wf.STEPS:
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
    for step in wf.STEPS:
        t = templates[step]
        c = t["container"]
        assert t["activeDeadlineSeconds"] == wf.STEP_DEADLINES[step]
        assert t["retryStrategy"]["limit"] == 3 and t["retryStrategy"]["backoff"]["factor"] == 2
        assert t["retryStrategy"]["expression"] == wf.retry_expression()
        env = {e["name"]: e for e in c["env"]}
        assert env["FILEDROP_WAREHOUSE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "filedrop-warehouse",
                                                                              "key": "url"}
        assert "value" not in env["FILEDROP_WAREHOUSE_URL"]  # never a secret in the manifest
        assert {"secretRef": {"name": "aws-keys"}} in c["envFrom"]
        assert c["securityContext"]["readOnlyRootFilesystem"] and c["securityContext"]["capabilities"] == {
            "drop": ["ALL"]}
        assert c["command"][0] == "filedrop"
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
    assert wf.escape_for_helm("x: '{{workflow.parameters.a}}' {{tasks.b.outputs}}") == (
        "x: '{{`{{workflow.parameters.a}}`}}' {{`{{tasks.b.outputs}}`}}")
    assert wf.escape_for_helm("no expressions") == "no expressions"
    with pytest.raises(ValueError, match="backtick"):
        wf.escape_for_helm("{{=`x`}}")


def test_substitute_values() -> None:
    text = ("metadata:\n  name: __HELM_NAME__\n  labels: __HELM_BLOCK_LABELS__\n"
            "spec:\n  n: __HELM_SUCCESSFUL_HISTORY__\n")
    out = wf.substitute_values(text)
    assert out == ('metadata:\n  name: {{ include "filedrop.workflows.name" . | quote }}\n  labels:\n'
                   '    {{- include "filedrop.labels" (dict "context" . "component" "workflows") | nindent 4 }}\n'
                   "spec:\n  n: {{ .Values.argo.successfulJobsHistoryLimit | int }}\n")
    with pytest.raises(KeyError):
        wf.substitute_values("x: __HELM_NOPE__\n")


def test_chart_templates_keep_argo_expressions_and_take_values() -> None:
    chart = wf.render_chart()
    tmpl = chart[wf.CHART_TEMPLATES["template"]]
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
    assert stale == [], f"run `filedrop workflows render`: {stale} drifted from filedrop/analytics/workflows.py"
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
