"""The operator's controller and followers without servers: an in-memory API server and load history.

What is checked is what a user sees: a FileDrop's phase, status and events, the Jobs created (or not),
retries, the FileRoute's status, and that a waiting FileDrop costs no API request.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from filedrop.cluster import follow as follow_module
from filedrop.cluster.controller import Controller, Result
from filedrop.cluster.follow import Wakeups, follow
from filedrop.cluster.history import RouteFigures
from filedrop.cluster.reconcile import Limits, Outcome
from filedrop.cluster.resources import REPLAY_ANNOTATION, filedrop_manifest
from filedrop.cluster.settings import OperatorConfig
from filedrop.cluster.view import FileDropError, FileDropView
from filedrop.config import Settings
from filedrop.protocol import LoadedVersion
from filedrop.routes import FileRoute, parse_routes_yaml
from filedrop.spark.application import SparkJobConfig

NS = "data"
ROUTES = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: items}
spec:
  match: {pattern: '^items.*\\.csv$'}
  table: items
  columns: [{name: id, type: integer}]
---
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: orders}
spec:
  match: {pattern: '^orders.*\\.csv$'}
  table: orders
  columns: [{name: id, type: integer}]
""")


class FakeKube:
    """An in-memory API server: the surface of :class:`filedrop.cluster.kube.Kube` the controller uses."""

    def __init__(self, routes: list[FileRoute]) -> None:
        self.filedrops: dict[str, dict[str, Any]] = {}  # by name (one namespace)
        self.route_list = list(routes)
        self.route_status: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.apps: dict[str, dict[str, Any]] = {}
        self.requests: list[str] = []
        self._rv = itertools.count(100)

    def add(self, key: str, size: int = 10, **status: Any) -> str:
        body = filedrop_manifest(bucket="b", key=key, etag=f"e-{key}", size=size, sequencer="0A", route="x")
        body["metadata"].update(namespace=NS, uid=f"uid-{key}", resourceVersion=str(next(self._rv)))
        if status:
            body["status"] = status
        self.filedrops[body["metadata"]["name"]] = body
        return str(body["metadata"]["name"])

    def body(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.filedrops[name])

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.filedrops[name].get("status") or {})

    def annotate(self, name: str, key: str, value: str) -> None:
        md = self.filedrops[name]["metadata"]
        md.setdefault("annotations", {})[key] = value
        md["resourceVersion"] = str(next(self._rv))

    def finish_job(self, name: str, ok: bool = True, message: str = "") -> None:
        kind = "Complete" if ok else "Failed"
        self.jobs[name]["status"] = {"conditions": [{"type": kind, "status": "True", "message": message}]}

    # --- the Kube surface ---
    def list_filedrops(self, namespace: str | None = None) -> list[dict[str, Any]]:
        self.requests.append("list filedrops")
        return [copy.deepcopy(b) for b in self.filedrops.values()]

    def patch_filedrop_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(f"patch {name}")
        body = self.filedrops[name]
        merged = {**(body.get("status") or {}), **status}
        body["status"] = {k: v for k, v in merged.items() if v is not None}
        body["metadata"]["resourceVersion"] = str(next(self._rv))
        return copy.deepcopy(body)

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]:
        self.requests.append("list fileroutes")
        return list(self.route_list), []

    def patch_route_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.requests.append(f"patch route {name}")
        self.route_status[name] = {**self.route_status.get(name, {}), **status}

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.requests.append(f"get job {name}")
        return copy.deepcopy(self.jobs.get(name))

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool:
        self.requests.append("create job")
        if body["metadata"]["name"] in self.jobs:
            return False  # 409
        self.jobs[body["metadata"]["name"]] = copy.deepcopy(body)
        return True

    def get_spark_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.apps.get(name))

    def create_spark_application(self, namespace: str, body: dict[str, Any]) -> bool:
        if body["metadata"]["name"] in self.apps:
            return False
        self.apps[body["metadata"]["name"]] = copy.deepcopy(body)
        return True


@dataclass
class FakeHistory:
    """The load history in memory: what loaders recorded, per FileDrop and per object."""

    outcomes: dict[str, Outcome] = field(default_factory=dict)
    versions: dict[tuple[str, str], list[LoadedVersion]] = field(default_factory=dict)
    figures: RouteFigures = field(default_factory=RouteFigures)
    prepared: bool = False
    down: bool = False

    def prepare(self) -> None:
        self.prepared = True

    def loaded_versions(self, bucket: str, key: str) -> list[LoadedVersion]:
        if self.down:
            raise ConnectionError("cannot connect to the warehouse")
        return list(self.versions.get((bucket, key), []))

    def latest_outcome(self, filedrop: str) -> Outcome | None:
        return self.outcomes.get(filedrop)

    def route_figures(self, route: str) -> RouteFigures:
        return self.figures


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(ROUTES)


@pytest.fixture
def history() -> FakeHistory:
    return FakeHistory()


def make_controller(kube: FakeKube, history: FakeHistory, **limits: Any) -> Controller:
    cfg = OperatorConfig(warehouse_url="postgresql://unused", settings=Settings(spark_threshold_bytes=1000),
                         limits=Limits(**{"global_loads": 4, "per_table": 1, "max_attempts": 3,
                                          "backoff_base_seconds": 10, **limits}))
    return Controller(cfg, kube, history)


def settle(ctl: Controller, kube: FakeKube, name: str) -> list[Result]:
    """Take the FileDrop's steps until it waits (what its follower does between two wake-ups)."""
    results = []
    for _ in range(10):
        result = ctl.reconcile(FileDropView.parse(kube.body(name)))
        results.append(result)
        if result.delay != 0:
            return results
    raise AssertionError(f"{name} never came to rest: {results}")


def events(results: list[Result]) -> list[tuple[str, str, str]]:
    return [r.event for r in results if r.event]


def test_a_new_filedrop_is_queued_then_loaded_by_one_job(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("items_1.csv")
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["attempts"], st["route"], st["table"], st["engine"]) == ("Loading", 1, "items", "items",
                                                                                   "direct")
    assert list(kube.jobs) == [f"{name}-1"] == [st["job"]]
    job = kube.jobs[st["job"]]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-items_1.csv"
    assert "s3://b/items_1.csv" in job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert events(results) == [("Normal", "Loading", f"started job {name}-1 (attempt 1)")]
    [loading] = st["conditions"]
    assert (loading["type"], loading["status"], loading["reason"]) == ("Ready", "False", "Loading")
    assert loading["message"] == "loading (attempt 1)" and loading["lastTransitionTime"]

    kube.finish_job(st["job"])
    history.outcomes[name] = Outcome("loaded", "L1", rows_parsed=3, rows_loaded=3, rows_rejected=0,
                                     message="3 rows applied")
    history.figures = RouteFigures(files_loaded=1, rows_loaded=3, last_loaded_key="items_1.csv")
    done = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["rowsLoaded"], st["loadId"], st["message"]) == ("Loaded", 3, "L1", "3 rows applied")
    [ready] = st["conditions"]  # the one Ready condition, kept in every phase
    assert (ready["type"], ready["status"], ready["reason"], ready["message"]) == ("Ready", "True", "Loaded",
                                                                                   "3 rows applied")
    assert events(done) == [("Normal", "Loaded", "3 rows applied")] and done[-1].terminal and done[-1].released
    assert kube.route_status["items"] == {"filesPending": 0, "filesLoaded": 1, "filesFailed": 0, "rowsLoaded": 3,
                                          "lastLoadedKey": "items_1.csv", "lastError": ""}
    assert len(ctl.slots) == 0 and len(kube.jobs) == 1


def test_a_key_no_route_matches_fails_without_a_job(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("README.txt")
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert st["phase"] == "Failed" and "no FileRoute in namespace data matches s3://b/README.txt" in st["message"]
    assert events(results)[0][:2] == ("Warning", "NoRoute") and results[-1].terminal
    assert kube.jobs == {}


def test_a_version_older_than_the_one_loaded_is_skipped(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("items_1.csv")  # its event's sequencer is 0A
    history.versions[("b", "items_1.csv")] = [LoadedVersion("L0", "e-newer", None, "0B", None)]
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert st["phase"] == "Skipped" and st["message"].startswith("skipped_superseded")
    assert events(results)[0][:2] == ("Normal", "Skipped") and kube.jobs == {}


def test_limits_queue_a_filedrop_which_then_costs_no_api_request(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history, global_loads=1)
    first, second = kube.add("items_1.csv"), kube.add("orders_1.csv")
    settle(ctl, kube, first)
    waiting = settle(ctl, kube, second)
    st = kube.status(second)
    assert st["phase"] == "Queued" and st["message"] == "waiting: 1 loads running (limit 1)"
    assert waiting[-1].delay is None  # until something changes: no polling
    assert list(kube.jobs) == [f"{first}-1"]
    before = len(kube.requests)
    for _ in range(5):  # woken for nothing (another FileDrop's slot, say): it looks, and asks nobody
        assert ctl.reconcile(FileDropView.parse(kube.body(second))).delay is None
    assert kube.requests[before:] == []
    kube.finish_job(f"{first}-1")
    history.outcomes[first] = Outcome("loaded", "L1", 1, 1, 0)
    assert settle(ctl, kube, first)[-1].released
    settle(ctl, kube, second)
    assert kube.status(second)["phase"] == "Loading" and f"{second}-1" in kube.jobs


def test_one_load_per_table_at_a_time(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    first, second = kube.add("items_1.csv"), kube.add("items_2.csv")
    settle(ctl, kube, first)
    settle(ctl, kube, second)
    assert kube.status(second)["message"] == "waiting: 1 load(s) of table items running (limit 1)"
    assert list(kube.jobs) == [f"{first}-1"]


def test_a_transient_failure_is_retried_after_a_backoff_then_given_up(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history, backoff_base_seconds=0, max_attempts=2)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.finish_job(f"{name}-1", ok=False, message="OOMKilled")
    history.outcomes[name] = Outcome("failed", "L1", first_error="S3 timeout", retryable=True)
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert events(results)[0] == ("Warning", "Retrying", "attempt 1 failed (S3 timeout); retry in 0s")
    assert (st["phase"], st["attempts"], st["job"]) == ("Loading", 2, f"{name}-2")  # the backoff was 0s
    assert sorted(kube.jobs) == [f"{name}-1", f"{name}-2"]
    kube.finish_job(f"{name}-2", ok=False, message="OOMKilled")
    history.outcomes[name] = Outcome("failed", "L2", first_error="S3 timeout", retryable=True)
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert st["phase"] == "Failed" and st["message"] == "gave up after 2 attempts: S3 timeout"
    assert events(results) == [("Warning", "LoadFailed", "gave up after 2 attempts: S3 timeout")]
    assert len(kube.jobs) == 2 and len(ctl.slots) == 0


def test_a_retry_waits_for_its_backoff(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history, backoff_base_seconds=30)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.jobs.pop(f"{name}-1")  # the Job vanished before it ran: a transient failure
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert st["phase"] == "Queued" and "retrying in 30s" in st["message"] and st["nextAttemptAt"]
    assert 0 < (results[-1].delay or 0) <= 30 and list(kube.jobs) == []
    before = len(kube.requests)
    later = ctl.reconcile(FileDropView.parse(kube.body(name)))
    assert 0 < (later.delay or 0) <= 30 and kube.requests[before:] == []  # waiting out a backoff asks nobody


def test_a_permanent_failure_is_not_retried(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.finish_job(f"{name}-1", ok=False)
    history.outcomes[name] = Outcome("failed", "L1", first_error="header does not match FileRoute items")
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["attempts"], st["firstError"]) == ("Failed", 1, "header does not match FileRoute items")
    assert events(results) == [("Warning", "LoadFailed", "header does not match FileRoute items")]
    assert list(kube.jobs) == [f"{name}-1"]


def test_the_loader_killed_after_its_commit_still_counts_as_loaded(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.finish_job(f"{name}-1", ok=False, message="Error (exit code 137)")
    history.outcomes[name] = Outcome("loaded", "L1", 5, 5, 0)
    settle(ctl, kube, name)
    assert kube.status(name)["phase"] == "Loaded" and len(kube.jobs) == 1


def test_a_replay_annotation_loads_a_final_filedrop_once_more(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history, backoff_base_seconds=0)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.finish_job(f"{name}-1")
    history.outcomes[name] = Outcome("loaded", "L1", 1, 1, 0)
    settle(ctl, kube, name)
    assert settle(ctl, kube, name)[-1].terminal  # final: nothing to do, nothing asked
    kube.annotate(name, REPLAY_ANNOTATION, "r1")
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["observedReplay"]) == ("Loading", "r1")
    assert events(results)[0] == ("Normal", "Replay", "reloading (replay 'r1')")
    # attempts count from 1 again, and the first load's Job holds attempt 1's name: it is found finished at
    # once (no watch event would come) and the replay loads in a Job of its own
    command = kube.jobs[st["job"]]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[command.index("--replay") + 1] == "r1"
    kube.finish_job(st["job"])
    history.outcomes[name] = Outcome("loaded", "L2", 1, 1, 0)  # the replayed load
    settle(ctl, kube, name)
    assert (kube.status(name)["phase"], kube.status(name)["loadId"]) == ("Loaded", "L2")
    assert settle(ctl, kube, name)[-1].terminal  # and final again


def test_a_restarted_operator_counts_the_loads_still_running(kube: FakeKube, history: FakeHistory) -> None:
    running = kube.add("items_1.csv", phase="Loading", table="items", route="items", attempts=1, job="j")
    kube.add("bad", phase="NoSuchPhase")  # one the operator cannot read is skipped, not fatal
    ctl = make_controller(kube, history)
    ctl.start()
    assert history.prepared and len(ctl.slots) == 1
    name = kube.add("items_2.csv")
    settle(ctl, kube, name)
    assert kube.status(name)["phase"] == "Queued" and list(kube.jobs) == []
    assert running


def test_large_files_go_to_spark_when_an_image_is_configured(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    ctl.cfg = replace(ctl.cfg, spark=SparkJobConfig(image="spark:1", namespace=NS))
    big, small = kube.add("items_big.csv", size=5000), kube.add("orders_small.csv", size=5)
    settle(ctl, kube, big)
    settle(ctl, kube, small)
    assert kube.status(big)["engine"] == "spark" and list(kube.apps) == [kube.status(big)["job"]]
    assert kube.status(small)["engine"] == "direct" and list(kube.jobs) == [kube.status(small)["job"]]
    kube.apps[kube.status(big)["job"]]["status"] = {"applicationState": {"state": "COMPLETED"}}
    history.outcomes[big] = Outcome("loaded", "L9", 100, 100, 0)
    settle(ctl, kube, big)
    assert kube.status(big)["phase"] == "Loaded"


def test_a_deleted_filedrop_frees_its_slot(kube: FakeKube, history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    assert ctl.forget(f"{NS}/{name}") and len(ctl.slots) == 0 and not ctl.forget(f"{NS}/{name}")


def test_a_filedrop_body_the_operator_cannot_use_is_named_in_the_error() -> None:
    good = filedrop_manifest(bucket="b", key="k.csv", etag="e", size=3, namespace=NS)
    fd = FileDropView.parse(good)
    assert (fd.key, fd.spec.size, fd.status.phase, fd.final) == (f"{NS}/{good['metadata']['name']}", 3, "Pending",
                                                                 False)
    for change, message in [
            (lambda b: b["spec"].pop("etag"), "spec.etag is required"),
            (lambda b: b["spec"].update(size="big"), "spec.size must be"),
            (lambda b: b["spec"].update(size=-1), "spec.size must be a whole number >= 0"),
            (lambda b: b.update(status={"phase": "Done"}), "status.phase must be one of Pending"),
            (lambda b: b.update(status={"nextAttemptAt": "soon"}), "status.nextAttemptAt is not a timestamp"),
            (lambda b: b.update(status=[]), "status must be an object")]:
        body = copy.deepcopy(good)
        change(body)
        with pytest.raises(FileDropError, match=message) as err:
            FileDropView.parse(body)
        assert f"FileDrop {NS}/{good['metadata']['name']}" in str(err.value)


# --- followers: when the operator looks again ---------------------------------------------------------------


Run = Callable[[Callable[[], Awaitable[None]]], None]


class Stop:
    def __init__(self) -> None:
        self.event = asyncio.Event()

    def __bool__(self) -> bool:
        return self.event.is_set()

    def wait(self) -> Awaitable[object]:
        return self.event.wait()


async def _until(check: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)  # poll interval


@dataclass
class Followers:
    ctl: Controller
    kube: FakeKube
    wakeups: Wakeups = field(default_factory=Wakeups)
    stop: Stop = field(default_factory=Stop)
    posted: list[tuple[str, tuple[str, str, str]]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self, name: str, recheck: float = 3600) -> None:
        async def execute(call: Callable[[], Result]) -> Result:
            return call()

        self.tasks.append(asyncio.ensure_future(follow(
            f"{NS}/{name}", lambda: self.kube.body(name), self.ctl, self.wakeups, self.stop, execute,
            lambda event: self.posted.append((name, event)), recheck)))

    async def close(self) -> None:
        self.stop.event.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 5)


@pytest.fixture
def run() -> Iterator[Run]:
    yield lambda test: asyncio.run(asyncio.wait_for(test(), 30))


def test_a_follower_sees_its_job_end_as_soon_as_it_is_woken(kube: FakeKube, history: FakeHistory,
                                                           run: Run) -> None:
    name = kube.add("items_1.csv")

    async def scenario() -> None:
        f = Followers(make_controller(kube, history), kube)
        f.start(name)  # re-checks only hourly: anything faster is a wake-up
        await _until(lambda: kube.status(name).get("phase") == "Loading", "Loading")
        kube.finish_job(f"{name}-1")
        history.outcomes[name] = Outcome("loaded", "L1", 1, 1, 0)
        f.wakeups.wake(f"{NS}/{name}")  # what the Job's watch event does
        await _until(lambda: kube.status(name).get("phase") == "Loaded", "Loaded")
        await f.close()
        assert [e[1] for _, e in f.posted] == ["Loading", "Loaded"]

    run(scenario)


def test_a_freed_slot_wakes_the_filedrops_queued_behind_it(kube: FakeKube, history: FakeHistory,
                                                          run: Run) -> None:
    first, second = kube.add("items_1.csv"), kube.add("items_2.csv")

    async def scenario() -> None:
        f = Followers(make_controller(kube, history), kube)
        f.start(first)
        await _until(lambda: kube.status(first).get("phase") == "Loading", "the first Loading")
        f.start(second)
        await _until(lambda: "waiting" in (kube.status(second).get("message") or ""), "the second waiting")
        kube.finish_job(f"{first}-1")
        history.outcomes[first] = Outcome("loaded", "L1", 1, 1, 0)
        f.wakeups.wake(f"{NS}/{first}")
        await _until(lambda: kube.status(second).get("phase") == "Loading", "the second Loading")
        await f.close()
        assert kube.status(first)["phase"] == "Loaded" and f"{second}-1" in kube.jobs

    run(scenario)


def test_a_failing_step_is_tried_again(kube: FakeKube, history: FakeHistory, monkeypatch: pytest.MonkeyPatch,
                                       run: Run) -> None:
    monkeypatch.setattr(follow_module, "error_backoff", lambda failures: 0.01)
    name = kube.add("items_1.csv")
    history.down = True

    async def scenario() -> None:
        f = Followers(make_controller(kube, history), kube)
        f.start(name)
        await _until(lambda: "list fileroutes" in kube.requests, "a first try")
        history.down = False  # the warehouse is back
        await _until(lambda: kube.status(name).get("phase") == "Loading", "Loading")
        await f.close()

    run(scenario)


def test_settings_name_the_variable_that_is_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://x/y")
    monkeypatch.setenv("FILEDROP_MAX_LOADS", "7")
    monkeypatch.setenv("FILEDROP_BACKOFF_SECONDS", "2.5")
    cfg = OperatorConfig.from_env()
    assert (cfg.limits.global_loads, cfg.limits.backoff_base_seconds, cfg.recheck_seconds) == (7, 2.5, 60.0)
    monkeypatch.setenv("FILEDROP_SPARK_IMAGE", "filedrop-spark:1")
    monkeypatch.setenv("FILEDROP_SPARK_CORE_REQUEST", "250m")
    spark = OperatorConfig.from_env().spark
    assert spark is not None and spark.core_request == "250m"
    for name, value, message in [("FILEDROP_MAX_LOADS", "four", "FILEDROP_MAX_LOADS must be an integer, got 'four'"),
                                 ("FILEDROP_MAX_LOADS", "0", "FILEDROP_MAX_LOADS must be at least 1, got 0"),
                                 ("FILEDROP_BACKOFF_SECONDS", "soon", "FILEDROP_BACKOFF_SECONDS must be a number"),
                                 ("FILEDROP_METRICS_PORT", "-1", "FILEDROP_METRICS_PORT must be at least 0"),
                                 ("FILEDROP_SPARK_CORE_REQUEST", "half",
                                  "FILEDROP_SPARK_CORE_REQUEST must be a CPU quantity like 250m or 0.5, got 'half'")]:
        with monkeypatch.context() as m:
            m.setenv("FILEDROP_SPARK_IMAGE", "filedrop-spark:1")
            m.setenv(name, value)
            with pytest.raises(ValueError, match=message):
                OperatorConfig.from_env()
    monkeypatch.delenv("FILEDROP_WAREHOUSE_URL")
    with pytest.raises(RuntimeError, match="FILEDROP_WAREHOUSE_URL is not set"):
        OperatorConfig.from_env()


def test_a_replay_asked_for_as_the_filedrop_becomes_final_is_acted_on(kube: FakeKube, history: FakeHistory,
                                                                      run: Run) -> None:
    """A follower that made its FileDrop final sleeps, costing no request, until kopf stops it; a replay
    that wakes it before then is taken up by it (kopf starts no second follower while the first exists)."""
    name = kube.add("items_1.csv")

    async def scenario() -> None:
        f = Followers(make_controller(kube, history, backoff_base_seconds=0), kube)
        f.start(name)
        await _until(lambda: kube.status(name).get("phase") == "Loading", "Loading")
        kube.finish_job(f"{name}-1")
        history.outcomes[name] = Outcome("loaded", "L1", 1, 1, 0)
        f.wakeups.wake(f"{NS}/{name}")
        await _until(lambda: kube.status(name).get("phase") == "Loaded", "Loaded")
        requests = len(kube.requests)
        await asyncio.sleep(0.05)  # a window in which nothing may happen: an absence cannot be polled for
        assert f"{NS}/{name}" in f.wakeups and len(kube.requests) == requests  # asleep, no request
        kube.annotate(name, REPLAY_ANNOTATION, "r1")
        f.wakeups.wake(f"{NS}/{name}")  # what the annotation's watch event does
        await _until(lambda: kube.status(name).get("observedReplay") == "r1", "the replay taken up")
        await f.close()

    run(scenario)
