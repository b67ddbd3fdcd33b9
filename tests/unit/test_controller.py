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


def test_route_status_after_a_final_filedrop_counts_from_the_watch_without_listing(kube: FakeKube,
                                                                                  history: FakeHistory) -> None:
    ctl = make_controller(kube, history)
    ctl.in_flight = lambda namespace, route: 7 if (namespace, route) == (NS, "items") else 0
    name = kube.add("items_1.csv")
    settle(ctl, kube, name)
    kube.finish_job(kube.status(name)["job"])
    history.outcomes[name] = Outcome("loaded", "L1", 1, 1, 0)
    settle(ctl, kube, name)
    assert kube.status(name)["phase"] == "Loaded" and kube.route_status["items"]["filesPending"] == 7
    assert "list filedrops" not in kube.requests


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


def test_the_loader_jobs_get_the_operators_attach_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    # the chart sets them on the operator (operator.attachMinBytes, attachMaxTables); the loads run in the Jobs
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://x/y")
    monkeypatch.setenv("FILEDROP_ATTACH_MIN_BYTES", "1048576")
    monkeypatch.setenv("FILEDROP_ATTACH_MAX_TABLES", "7")
    env = OperatorConfig.from_env().job.env
    assert (env["FILEDROP_ATTACH_MIN_BYTES"], env["FILEDROP_ATTACH_MAX_TABLES"]) == ("1048576", "7")
    monkeypatch.setenv("FILEDROP_ATTACH_MIN_BYTES", "big")
    with pytest.raises(ValueError, match="FILEDROP_ATTACH_MIN_BYTES must be an integer, got 'big'"):
        OperatorConfig.from_env()


class FakeInline:
    """The surface of :class:`filedrop.cluster.inline.InlineLoads` the controller uses, in memory."""

    def __init__(self, max_running: int = 2, max_bytes: int = 100) -> None:
        self.max_running, self.max_bytes = max_running, max_bytes
        self.loads: dict[tuple[str, str], tuple[str, str]] = {}  # (FileDrop key, name) -> (state, message)
        self.started: list[tuple[str, str, str]] = []  # (FileDrop key, name, object key)
        self.cancelled: list[str] = []

    def fits(self, size: int) -> bool:
        return 0 < size <= self.max_bytes

    def running(self) -> int:
        return sum(1 for state, _ in self.loads.values() if state == "running")

    def start(self, key: str, name: str, route: FileRoute, obj: Any, replay: str) -> str:
        if (key, name) in self.loads:
            return "exists"
        if self.running() >= self.max_running:
            return "full"
        self.loads[key, name] = ("running", "")
        self.started.append((key, name, obj.key))
        return "started"

    def state(self, key: str, name: str) -> tuple[str, str]:
        return self.loads.get((key, name), ("none", "the operator that ran this load stopped before it ended"))

    def end(self, name: str, state: str, message: str = "") -> None:
        [key] = [k for k, n in self.loads if n == name]
        self.loads[key, name] = (state, message)

    def forget(self, key: str, name: str | None) -> None:
        if (key, name) in self.loads and self.loads[key, name][0] != "running":
            del self.loads[key, name]

    def cancel(self, key: str) -> None:
        self.cancelled.append(key)
        for k in [k for k in self.loads if k[0] == key]:
            del self.loads[k]


def inline_controller(kube: FakeKube, history: FakeHistory, inline: FakeInline) -> Controller:
    ctl = make_controller(kube, history, global_loads=8, per_table=8)
    ctl.inline = inline  # type: ignore[assignment]
    return ctl


def test_a_small_file_is_loaded_by_the_operator_without_a_job(kube: FakeKube, history: FakeHistory) -> None:
    inline = FakeInline()
    ctl = inline_controller(kube, history, inline)
    name = kube.add("items_1.csv", size=100)
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["engine"], st["job"], st["attempts"]) == ("Loading", "inline", f"{name}-1", 1)
    assert kube.jobs == {} and inline.started == [(f"{NS}/{name}", f"{name}-1", "items_1.csv")]
    assert events(results) == [("Normal", "Loading", f"loading in the operator as {name}-1 (attempt 1)")]
    assert settle(ctl, kube, name)[-1].delay is None  # still running: it waits to be woken
    inline.end(f"{name}-1", "succeeded")
    history.outcomes[name] = Outcome("loaded", "L1", 3, 3, 0, message="3 rows applied")
    done = settle(ctl, kube, name)
    assert kube.status(name)["phase"] == "Loaded" and done[-1].released and len(ctl.slots) == 0
    assert inline.loads == {}  # forgotten once its FileDrop moved on


def test_larger_files_unknown_sizes_and_files_past_the_inline_places_get_jobs(kube: FakeKube,
                                                                             history: FakeHistory) -> None:
    inline = FakeInline(max_running=1)
    ctl = inline_controller(kube, history, inline)
    big, unknown = kube.add("items_big.csv", size=101), kube.add("items_unknown.csv", size=0)
    first, second = kube.add("orders_1.csv", size=10), kube.add("orders_2.csv", size=10)
    for name in (big, unknown, first, second):
        settle(ctl, kube, name)
    assert [kube.status(n)["engine"] for n in (big, unknown, first, second)] == ["direct", "direct", "inline",
                                                                                  "direct"]
    assert sorted(kube.jobs) == sorted([f"{big}-1", f"{unknown}-1", f"{second}-1"])


def test_a_step_tried_again_never_starts_a_second_load(kube: FakeKube, history: FakeHistory,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The status is written before the inline load starts: a failed write starts nothing, and the Job an
    earlier try created (its operator stopped before writing the status) is not joined by an inline load."""
    inline = FakeInline(max_running=1)
    ctl = inline_controller(kube, history, inline)
    name = kube.add("items_1.csv", size=10)
    real_patch = kube.patch_filedrop_status
    calls = iter([ConnectionError("the API server is restarting")])

    def flaky(namespace: str, fd: str, status: dict[str, Any]) -> dict[str, Any]:
        if status.get("engine") == "inline":
            failure = next(calls, None)
            if failure is not None:
                raise failure
        return real_patch(namespace, fd, status)
    monkeypatch.setattr(kube, "patch_filedrop_status", flaky)
    ctl.reconcile(FileDropView.parse(kube.body(name)))  # Pending -> Queued
    with pytest.raises(ConnectionError):
        ctl.reconcile(FileDropView.parse(kube.body(name)))
    assert inline.started == [] and kube.jobs == {}
    settle(ctl, kube, name)
    assert len(inline.started) == 1 and kube.jobs == {} and kube.status(name)["engine"] == "inline"

    other = kube.add("orders_1.csv", size=10)
    ctl.reconcile(FileDropView.parse(kube.body(other)))  # Pending -> Queued
    kube.jobs[f"{other}-1"] = {"metadata": {"name": f"{other}-1"}, "status": {}}  # an earlier try's Job
    inline.max_running = 5
    settle(ctl, kube, other)
    assert kube.status(other)["engine"] == "direct" and len(inline.started) == 1


def test_a_declined_inline_load_becomes_a_job_in_the_same_attempt(kube: FakeKube, history: FakeHistory) -> None:
    inline = FakeInline()
    ctl = inline_controller(kube, history, inline)
    name = kube.add("items_1.csv", size=10)
    settle(ctl, kube, name)
    inline.end(f"{name}-1", "declined", "the operator cannot read s3://b/items_1.csv: no credentials")
    results = settle(ctl, kube, name)
    st = kube.status(name)
    assert (st["phase"], st["engine"], st["job"], st["attempts"]) == ("Loading", "direct", f"{name}-1", 1)
    assert list(kube.jobs) == [f"{name}-1"] and inline.loads == {}
    assert "no credentials" in st["message"] and "no credentials" in events(results)[0][2]
    kube.finish_job(f"{name}-1")
    history.outcomes[name] = Outcome("loaded", "L1", 1, 1, 0)
    settle(ctl, kube, name)
    assert kube.status(name)["phase"] == "Loaded"


def test_a_crd_without_engine_inline_sends_small_files_to_jobs(kube: FakeKube, history: FakeHistory,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    class Invalid(Exception):
        status = 422
    inline = FakeInline()
    ctl = inline_controller(kube, history, inline)
    real_patch = kube.patch_filedrop_status

    def old_crd(namespace: str, fd: str, status: dict[str, Any]) -> dict[str, Any]:
        if status.get("engine") == "inline":
            raise Invalid("status.engine: Unsupported value: \"inline\"")
        return real_patch(namespace, fd, status)
    monkeypatch.setattr(kube, "patch_filedrop_status", old_crd)
    name = kube.add("items_1.csv", size=10)
    settle(ctl, kube, name)
    assert kube.status(name)["engine"] == "direct" and list(kube.jobs) == [f"{name}-1"] and ctl.inline is None


def test_an_inline_load_lost_with_a_restarted_operator_is_decided_from_history(kube: FakeKube,
                                                                               history: FakeHistory) -> None:
    committed = kube.add("items_1.csv", size=10, phase="Loading", table="items", route="items", attempts=1,
                         engine="inline", job="x-1")
    lost = kube.add("orders_1.csv", size=10, phase="Loading", table="orders", route="orders", attempts=1,
                    engine="inline", job="y-1")
    history.outcomes[committed] = Outcome("loaded", "L1", 2, 2, 0)
    ctl = inline_controller(kube, history, FakeInline())
    ctl.start()
    settle(ctl, kube, committed)
    settle(ctl, kube, lost)
    assert kube.status(committed)["phase"] == "Loaded"
    st = kube.status(lost)
    assert st["phase"] == "Queued" and "the operator that ran this load stopped before it ended" in st["message"]


def test_a_deleted_filedrop_stops_its_inline_load(kube: FakeKube, history: FakeHistory) -> None:
    inline = FakeInline()
    ctl = inline_controller(kube, history, inline)
    name = kube.add("items_1.csv", size=10)
    settle(ctl, kube, name)
    assert ctl.forget(f"{NS}/{name}") and inline.cancelled == [f"{NS}/{name}"] and inline.loads == {}


def test_inline_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEDROP_WAREHOUSE_URL", "postgresql://x/y")
    cfg = OperatorConfig.from_env()
    assert (cfg.inline_max_bytes, cfg.inline_loads) == (8 * 1024 * 1024, 4)  # on unless turned off
    monkeypatch.setenv("FILEDROP_INLINE_MAX_BYTES", "0")
    monkeypatch.setenv("FILEDROP_INLINE_LOADS", "2")
    cfg = OperatorConfig.from_env()
    assert (cfg.inline_max_bytes, cfg.inline_loads) == (0, 2)
    monkeypatch.setenv("FILEDROP_INLINE_LOADS", "0")
    with pytest.raises(ValueError, match="FILEDROP_INLINE_LOADS must be at least 1, got 0"):
        OperatorConfig.from_env()
