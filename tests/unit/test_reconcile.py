"""The operator's state machine and manifests: plain data in, plain data out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from filedrop.cluster.jobs import JobSettings, build_loader_job, job_state, spark_state
from filedrop.cluster.reconcile import Facts, Limits, Outcome, backoff, step
from filedrop.cluster.resources import (
    filedrop_manifest,
    filedrop_name,
    route_from_object,
    route_manifest,
    source_object,
)
from filedrop.routes import load_routes, route_named

NOW = datetime(2026, 11, 26, 12, tzinfo=UTC)
LIMITS = Limits(global_loads=2, per_table=1, max_attempts=3, backoff_base_seconds=10)
REPO = Path(__file__).resolve().parents[2]


def facts(**kw: object) -> Facts:
    base = dict(phase="Pending", attempts=0, replay="", observed_replay="", route="orders", table="orders", now=NOW)
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


def test_names_are_deterministic_and_version_specific() -> None:
    a = filedrop_name("b", "k.csv", "etag1")
    assert a == filedrop_name("b", "k.csv", "etag1") and a.startswith("fd-") and len(a) == 15
    assert a != filedrop_name("b", "k.csv", "etag2")
    m = filedrop_manifest(bucket="b", key="in box/k.csv", etag="e", size=3, version_id="v1", sequencer="0A",
                          event_time=NOW, route="shipment-deliveries")
    assert m["metadata"]["name"] == filedrop_name("b", "in box/k.csv", "v1")
    assert m["spec"] == {"bucket": "b", "key": "in box/k.csv", "etag": "e", "size": 3, "source": "sqs",
                         "versionId": "v1", "sequencer": "0A", "eventTime": "2026-11-26T12:00:00Z"}
    obj = source_object(m["spec"])
    assert (obj.uri, obj.version_id, obj.last_modified) == ("s3://b/in box/k.csv", "v1", NOW)


def test_a_rollback_in_an_unversioned_bucket_gets_its_own_filedrop() -> None:
    # v1 (etag e1), v2, then v1's bytes again: a new event with a later sequencer must not map to the
    # first FileDrop (Loaded long ago), or the rollback would never load; a redelivered event does.
    first = filedrop_manifest(bucket="b", key="k.csv", etag="e1", size=3, sequencer="0A")
    again = filedrop_manifest(bucket="b", key="k.csv", etag="e1", size=3, sequencer="0C")
    redelivered = filedrop_manifest(bucket="b", key="k.csv", etag="e1", size=3, sequencer="0A")
    assert first["metadata"]["name"] != again["metadata"]["name"]
    assert first["metadata"]["name"] == redelivered["metadata"]["name"]
    # a backfill has no sequencer: LastModified tells the re-upload from the first upload
    t1, t2 = NOW, NOW.replace(year=NOW.year + 1)
    backfilled = [filedrop_manifest(bucket="b", key="k.csv", etag="e1", size=3, event_time=t, source="backfill")
                  for t in (t1, t2, t1)]
    assert backfilled[0]["metadata"]["name"] != backfilled[1]["metadata"]["name"]
    assert backfilled[0]["metadata"]["name"] == backfilled[2]["metadata"]["name"]
    # a bucket with versioning suspended reports VersionId "null": it names no version
    nulls = [filedrop_manifest(bucket="b", key="k.csv", etag=e, size=3, version_id="null", sequencer=q)
             for e, q in (("e1", "0A"), ("e2", "0B"))]
    assert nulls[0]["metadata"]["name"] != nulls[1]["metadata"]["name"] and "versionId" not in nulls[0]["spec"]


def test_route_manifest_round_trips() -> None:
    route = route_named(load_routes(), "orders")
    again = route_from_object(route_manifest(route, "ns"))
    assert again == route


def test_pending_goes_to_failed_skipped_or_queued() -> None:
    s = step(facts(route=None, route_error=None), LIMITS, "t")
    assert (s.status["phase"], s.event[1]) == ("Failed", "NoRoute")  # type: ignore[index]
    s = step(facts(decision="skipped_duplicate", decision_reason="same content already loaded"), LIMITS, "t")
    assert s.status["phase"] == "Skipped" and "skipped_duplicate" in s.status["message"]
    assert step(facts(), LIMITS, "t").status["phase"] == "Queued"


def test_queue_respects_limits_and_backoff_time() -> None:
    assert step(facts(phase="Queued"), LIMITS, "t").action == "create_job"
    full = step(facts(phase="Queued", running_total=2), LIMITS, "t")
    assert full.action == "wait" and "limit 2" in full.status["message"]
    table = step(facts(phase="Queued", running_total=1, running_for_table=1), LIMITS, "t")
    assert table.action == "wait" and "table orders" in table.status["message"]
    later = step(facts(phase="Queued", next_attempt_at=NOW + timedelta(seconds=5)), LIMITS, "t")
    assert later.action == "wait" and later.delay == 5


def test_loading_outcomes() -> None:
    assert step(facts(phase="Loading", attempts=1, job_state="running"), LIMITS, "t").action == "wait"
    ok = step(facts(phase="Loading", attempts=1, job_state="succeeded",
                    outcome=Outcome("loaded", "L1", 10, 9, 1, message="9 rows applied")), LIMITS, "t")
    assert (ok.status["phase"], ok.status["rowsLoaded"], ok.status["rowsRejected"]) == ("Loaded", 9, 1)
    dup = step(facts(phase="Loading", attempts=1, job_state="succeeded",
                     outcome=Outcome("skipped_duplicate", "L1", message="same content")), LIMITS, "t")
    assert dup.status["phase"] == "Skipped"
    # the loader was killed after its final transaction committed: the Job failed, history says loaded
    late_kill = step(facts(phase="Loading", attempts=1, job_state="failed", job_message="Error (exit code 137)",
                           outcome=Outcome("loaded", "L1", 10, 10, 0, message="10 rows applied")), LIMITS, "t")
    assert (late_kill.status["phase"], late_kill.status["rowsLoaded"]) == ("Loaded", 10)


def test_permanent_failure_stops_transient_retries_with_backoff_then_gives_up() -> None:
    bad = step(facts(phase="Loading", attempts=1, job_state="failed",
                     outcome=Outcome("failed", "L1", first_error="header does not match", retryable=False)),
               LIMITS, "t")
    assert bad.status["phase"] == "Failed" and bad.event == ("Warning", "LoadFailed", "header does not match")
    retry = step(facts(phase="Loading", attempts=1, job_state="failed",
                       outcome=Outcome("failed", "L1", first_error="S3 timeout", retryable=True)), LIMITS, "t")
    assert retry.status["phase"] == "Queued" and retry.status["loadId"] == "L1"
    assert retry.status["nextAttemptAt"] == "2026-11-26T12:00:10Z"
    crashed = step(facts(phase="Loading", attempts=2, job_state="failed", job_message="OOMKilled"), LIMITS, "t")
    assert crashed.status["phase"] == "Queued" and "OOMKilled" in crashed.status["message"]
    assert backoff(2, LIMITS) == 20 and backoff(10, LIMITS) == 600
    done = step(facts(phase="Loading", attempts=3, job_state="failed", job_message="OOMKilled"), LIMITS, "t")
    assert done.status["phase"] == "Failed" and done.status["message"].startswith("gave up after 3 attempts")


def test_replay_reopens_a_final_filedrop_once() -> None:
    assert step(facts(phase="Loaded"), LIMITS, "t").action == "none"
    s = step(facts(phase="Loaded", replay="r1"), LIMITS, "t")
    assert s.status["phase"] == "Pending" and s.status["observedReplay"] == "r1" and s.status["attempts"] == 0
    assert step(facts(phase="Loaded", replay="r1", observed_replay="r1"), LIMITS, "t").action == "none"


def test_loader_job_manifest() -> None:
    route = route_named(load_routes(), "orders")
    fd = {"metadata": {"name": "fd-0123456789ab", "namespace": "data", "uid": "u-1"},
          "spec": {"bucket": "b", "key": "orders_data/orders.csv", "etag": "e1", "size": 42, "sequencer": "0A"}}
    job = build_loader_job(fd, route, 2, JobSettings(image="img:1", env={"AWS_REGION": "eu-west-1"}), replay="r")
    assert job["metadata"]["name"] == "fd-0123456789ab-2"
    assert job["metadata"]["ownerReferences"] == [{"apiVersion": "filedrop.dev/v1alpha1", "kind": "FileDrop",
                                                  "name": "fd-0123456789ab", "uid": "u-1", "controller": True,
                                                  "blockOwnerDeletion": True}]
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    [c] = pod["containers"]
    assert c["command"][:5] == ["filedrop", "load", "s3://b/orders_data/orders.csv", "--route", "orders"]
    assert c["command"][c["command"].index("--etag") + 1] == "e1"
    assert c["command"][-4:] == ["--sequencer", "0A", "--replay", "r"]
    assert c["env"][0] == {"name": "FILEDROP_WAREHOUSE_URL",
                           "valueFrom": {"secretKeyRef": {"name": "filedrop-warehouse", "key": "url"}}}
    assert c["securityContext"]["allowPrivilegeEscalation"] is False and pod["securityContext"]["runAsNonRoot"]
    assert "password" not in yaml.safe_dump(job).lower()


def test_job_and_spark_states() -> None:
    assert job_state(None)[0] == "none"
    assert job_state({"status": {"active": 1}})[0] == "running"
    assert job_state({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})[0] == "succeeded"
    failed = {"type": "Failed", "status": "True", "message": "BackoffLimitExceeded"}
    assert job_state({"status": {"conditions": [failed]}}) == ("failed", "BackoffLimitExceeded")
    assert spark_state({"status": {"applicationState": {"state": "RUNNING"}}})[0] == "running"
    assert spark_state({"status": {"applicationState": {"state": "FAILED", "errorMessage": "boom"}}}) == (
        "failed", "boom")
    assert spark_state({"status": {"applicationState": {"state": "COMPLETED"}}})[0] == "succeeded"


def test_crds_agree_with_the_models() -> None:
    """The CRD enums are the pydantic Literals: a drift here would let the server accept what filedrop refuses."""
    from typing import get_args

    from filedrop.cluster.resources import PHASES
    from filedrop.routes import ColumnType, Engine, Mode

    route_crd = yaml.safe_load((REPO / "crds" / "fileroute.yaml").read_text())
    spec = route_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["mode"]["enum"] == list(get_args(Mode))
    assert spec["engine"]["enum"] == list(get_args(Engine))
    assert spec["columns"]["items"]["properties"]["type"]["enum"] == list(get_args(ColumnType))
    drop_crd = yaml.safe_load((REPO / "crds" / "filedrop.yaml").read_text())
    status = drop_crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == list(PHASES)
