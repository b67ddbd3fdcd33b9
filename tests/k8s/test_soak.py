"""Fault injection on the real components (issue 9): exactly once per object version, under faults.

FILEDROP_SOAK_FILES files (default 200: CI's short run; `make soak` runs more) of three routes
(append, replace_source, upsert), of mixed sizes, some with bad rows, go through
S3 (moto) -> SQS -> `filedrop bridge` -> FileDrop -> `filedrop operator` -> loader Job pods on a real node
(tests/support/k8s/pods.py; moto and PostgreSQL on the host at the node's bridge address) -> PostgreSQL,
while the test injects, during the flow:

- duplicate deliveries of events, and versions of a key announced newest first;
- SQS redelivery: a rogue consumer receives messages and never deletes them, so they come back
  after their visibility timeout;
- loader containers SIGKILLed at random moments (classified by what their PostgreSQL session, found by
  the pod's IP, was doing), and some killed for certain inside their final transaction;
- the operator and the bridge SIGKILLed and restarted mid-stream; PostgreSQL restarted mid-load;
- objects deleted (Failed: "no longer exists"), or overwritten (Skipped: superseded), between their
  event and their load;
- a slow S3: the loaders read through a throttling proxy.

At the end, after the cleanup the next load run does: staging equals the contents computed from the
source files and the mode rules (no row lost, none twice), every FileDrop is in a final phase with
the expected outcome, history agrees with staging, and no load table, running history row or
running loader is left. The figures are printed and written to FILEDROP_SOAK_REPORT (JSON) if set.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from filedrop.config import Settings
from filedrop.routes import parse_routes_yaml
from filedrop.warehouse import prepare_meta
from filedrop.warehouse.client import object_lock as object_lock_key
from tests.conftest import DB
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import stack_in_new_namespace
from tests.support.k8s.topology import Stack, s3_event
from tests.support.servers import DebianPostgres
from tests.support.slowproxy import SlowProxy
from tools.k8s.node import BRIDGE_IP

REPO = Path(__file__).resolve().parents[2]
FILES = int(os.environ.get("FILEDROP_SOAK_FILES", "200"))
SEED = int(os.environ.get("FILEDROP_SOAK_SEED", "1126"))
pytestmark = [pytest.mark.k8s, pytest.mark.soak, pytest.mark.timeout(900 + 6 * FILES)]

TABLES = {"append": "soak_append", "replace_source": "soak_replace", "upsert": "soak_upsert"}
PREFIX = {"append": "app", "replace_source": "rep", "upsert": "ups"}
ROUTES = parse_routes_yaml("---\n".join(f"""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {{name: {table.replace('_', '-')}}}
spec:
  match: {{pattern: '^{PREFIX[mode]}_.*\\.csv$'}}
  table: {table}
  columns:
    - {{name: id, type: bigint, nullable: false}}
    - {{name: grp, type: text}}
    - {{name: amount, type: integer}}
  mode: {mode}
  {'primaryKey: [id]' if mode == 'upsert' else ''}
  onError: continue
  maxBadRowsPercent: 50
""" for mode, table in TABLES.items()))

FINAL = {"Loaded", "Skipped", "Failed"}


@dataclass
class Version:
    key: str
    mode: str
    rows: dict[int, tuple[str, int]]  # the good rows: id -> (grp, amount)
    bad: int  # rows PostgreSQL must quarantine
    body: bytes = b""
    etag: str = ""
    expect: str = "Loaded"  # Loaded | Failed (deleted) | Superseded (Skipped: a newer version won)


@dataclass
class Figures:
    files: int = 0
    versions: int = 0
    rows: int = 0
    bad_rows: int = 0
    bytes: int = 0
    duplicate_events: int = 0
    reordered_keys: int = 0
    deleted: int = 0
    overwritten: int = 0
    stolen_messages: int = 0
    kills: Counter[str] = field(default_factory=Counter)
    operator_restarts: int = 0
    bridge_restarts: int = 0
    postgres_restarts: int = 0
    postgres_restart_during_copy: bool = False
    attempts: int = 0
    seconds: float = 0.0


def _body(rows: dict[int, tuple[str, int]], bad: list[int], rng: random.Random) -> bytes:
    lines = [f"{i},{g},{a}" for i, (g, a) in rows.items()]
    for n in bad:  # a value that does not type, or a row with a column missing
        lines.insert(rng.randrange(len(lines) + 1), f"{n},bad,not-a-number" if n % 2 else f"{n},short")
    return ("id,grp,amount\n" + "\n".join(lines) + "\n").encode()


class Corpus:
    """The files, their versions, and what staging must hold at the end."""

    def __init__(self, n: int, seed: int) -> None:
        self.rng = random.Random(seed)
        self.next_id = 1
        self.auto: list[list[Version]] = []  # announced by S3's own notifications (prefix auto/)
        for i in range(n):
            mode = self.rng.choices(list(TABLES), weights=[3, 1, 1])[0]
            size = 150_000 if i % 40 == 7 else self.rng.choice([1, 20, 200, 2_000, 20_000])
            first = self.version(f"auto/{PREFIX[mode]}_{i:04d}.csv", mode, size)
            versions = [first]
            if mode != "append" and self.rng.random() < 0.3:  # re-dropped soon after: a second version
                versions.append(self.successor(first))
            self.auto.append(versions)

    def version(self, key: str, mode: str, size: int) -> Version:
        ids = range(self.next_id, self.next_id + size)
        self.next_id += size + 10
        rows = {i: (self.rng.choice("abcdefgh"), self.rng.randrange(-10**6, 10**6)) for i in ids}
        bad = [self.next_id - 5 - k for k in range(self.rng.choice([0, 0, 0, 1, 3]))] if size >= 20 else []
        return Version(key, mode, rows, len(bad), _body(rows, bad, self.rng))

    def successor(self, v: Version) -> Version:
        """The next version of a key: upsert files re-send every id (changed) plus new ones."""
        rows = {i: (g, a + 1) for i, (g, a) in v.rows.items()} if v.mode == "upsert" else {}
        for i in range(self.next_id, self.next_id + 5):
            rows[i] = ("z", i)
        self.next_id += 15
        return Version(v.key, v.mode, rows, 0, _body(rows, [], self.rng))


def expected_staging(versions: list[list[Version]]) -> dict[str, list[tuple[Any, ...]]]:
    """(id, grp, amount, key) per table by the mode rules, from the versions that must be loaded."""
    out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in TABLES.values()}
    for chain in versions:
        loaded = [v for v in chain if v.expect == "Loaded"]
        if not loaded:
            continue
        last = loaded[-1]  # replace_source keeps the newest; upsert successors cover the older ids
        picks = loaded if last.mode == "append" else [last]
        for v in picks:
            out[TABLES[v.mode]] += [(i, g, a, v.key) for i, (g, a) in v.rows.items()]
    return {t: sorted(rows) for t, rows in out.items()}


@dataclass(frozen=True)
class Loader:
    """A running loader pod: its IP (what PostgreSQL sees as the client address), uid and container start."""
    name: str
    ip: str
    uid: str
    started: dt.datetime


@dataclass(frozen=True)
class Session:
    """A loader's PostgreSQL backend as pg_stat_activity shows it."""
    ip: str
    started: dt.datetime  # backend_start: a session older than a pod is an earlier pod's (IPs are reused)
    query: str
    active: bool
    in_xact: bool
    waiting: bool


class Chaos:
    """Kills loader containers and classifies what their PostgreSQL sessions were doing at that moment."""

    def __init__(self, cluster: Cluster, ns: str, url: str, figures: Figures, rng: random.Random) -> None:
        self.cluster, self.ns, self.url, self.figures, self.rng = cluster, ns, url, figures, rng
        self.errors: list[str] = []  # what went wrong in the chaos thread itself (a test failure at the end)

    def loaders(self) -> list[Loader]:
        """The loader pods whose container is running (from the API server, not kubectl: cheap enough
        to call five times a second)."""
        pods = self.cluster.kube.get(f"/api/v1/namespaces/{self.ns}/pods?labelSelector=filedrop.dev%2Ffiledrop")
        out = []
        for p in pods["items"]:
            running = [(c.get("state") or {}).get("running") for c in p["status"].get("containerStatuses") or []]
            if p["status"].get("podIP") and running and running[0]:
                started = dt.datetime.fromisoformat(running[0]["startedAt"].replace("Z", "+00:00"))
                out.append(Loader(p["metadata"]["name"], p["status"]["podIP"], p["metadata"]["uid"], started))
        return out

    def kill(self, loader: Loader) -> bool:
        """SIGKILL the loader container's processes on the node (not the pod's sandbox): the pod fails as
        if its container were OOM-killed."""
        assert self.cluster.node is not None
        pids = self.cluster.node.container_pids(loader.uid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return bool(pids)

    def sessions(self) -> list[Session]:
        """The loaders' backends (those with a client address: pods; the host's come from the bridge address,
        which no pod has)."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=3) as c:
                rows = c.execute(
                    "SELECT host(client_addr), backend_start, coalesce(query, ''), state = 'active', "
                    "xact_start IS NOT NULL, wait_event_type IS NOT DISTINCT FROM 'Lock' FROM pg_stat_activity "
                    "WHERE application_name = 'filedrop' AND client_addr IS NOT NULL").fetchall()
        except psycopg.OperationalError:
            return []
        return [Session(*row) for row in rows]

    @staticmethod
    def phase(s: Session) -> str:
        q = s.query.lstrip().upper()
        if s.active and q.startswith("COPY"):
            return "during COPY"
        if s.in_xact and (s.waiting or "ADVISORY_XACT_LOCK" in q or q.startswith(("INSERT INTO \"STAGING\"",
                                                                                  "DELETE FROM \"STAGING\"",
                                                                                  "UPDATE"))):
            return "in the final transaction"
        return "before COPY"

    @staticmethod
    def owns(loader: Loader, s: Session) -> bool:
        # startedAt has whole seconds: a backend the container opened starts within its first second or later
        return s.ip == loader.ip and s.started >= loader.started

    def phase_of(self, loader: Loader, sessions: list[Session]) -> str:
        """The furthest phase of the loader's sessions (it may hold more than one)."""
        order = ["before COPY", "during COPY", "in the final transaction"]
        return max((self.phase(s) for s in sessions if self.owns(loader, s)), key=order.index,
                   default="before COPY")

    def tick(self, budget: int, p_random: float) -> None:
        """Kill a loader caught in its COPY (up to half the budget), else now and then a random one
        (most of a small load's life is pod and process start-up, so random picks rarely hit a COPY)."""
        if sum(self.figures.kills.values()) >= budget:
            return
        loaders = self.loaders()
        if not loaders:
            return
        sessions = self.sessions()
        phases = {lo: self.phase_of(lo, sessions) for lo in loaders}
        copying = [lo for lo in loaders if phases[lo] == "during COPY"]
        if copying and self.figures.kills["during COPY"] < budget // 2:
            victim = self.rng.choice(copying)
        elif self.rng.random() < p_random:
            victim = self.rng.choice(loaders)
        else:
            return
        if self.kill(victim):
            self.figures.kills[phases[victim]] += 1

    def run(self, calm: threading.Event, budget: int, p_random: float) -> None:
        """tick() five times a second until calm; what goes wrong is kept for the test to fail on."""
        while not calm.wait(0.2):  # poll interval
            try:
                self.tick(budget, p_random)
            except Exception as exc:  # keep injecting; the test fails on these at the end
                self.errors.append(repr(exc))

    def kill_in_final_transaction(self, db_url: str, bucket: str, key: str, put: Any, deadline: float) -> bool:
        """Hold the key's final-transaction lock, let the loader park inside that transaction, kill it."""
        with psycopg.connect(db_url, autocommit=True) as c:
            k = c.execute("SELECT hashtextextended(%s, 0)", (object_lock_key(bucket, key),)).fetchone()[0]  # type: ignore[index]
            c.execute("SELECT pg_advisory_lock(%s)", (k,))
            put()
            hi, lo = (k >> 32) & 0xFFFFFFFF, k & 0xFFFFFFFF
            while time.monotonic() < deadline:
                row = c.execute("SELECT host(a.client_addr), a.backend_start FROM pg_locks l "
                                "JOIN pg_stat_activity a ON a.pid = l.pid "
                                "WHERE l.locktype = 'advisory' AND NOT l.granted AND l.classid::bigint = %s "
                                "AND l.objid::bigint = %s AND l.objsubid = 1", (hi, lo)).fetchone()
                waiter = Session(row[0], row[1], "", True, True, True) if row else None
                victims = [p for p in self.loaders() if waiter and self.owns(p, waiter)]
                if victims and self.kill(victims[0]):
                    self.figures.kills["in the final transaction (forced)"] += 1
                    c.execute("SELECT pg_advisory_unlock(%s)", (k,))
                    return True
                time.sleep(0.1)  # poll interval
            c.execute("SELECT pg_advisory_unlock(%s)", (k,))
        return False


@pytest.fixture
def soak_pg(node_cluster: Cluster) -> Iterator[DebianPostgres]:
    """The soak's own PostgreSQL (it gets restarted mid-load), reachable by the loader pods."""
    server = DebianPostgres(pod_address=BRIDGE_IP).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def soak_stack(node_cluster: Cluster, soak_pg: DebianPostgres, pod_aws: str, tmp_path: Path) -> Iterator[Stack]:
    with stack_in_new_namespace(node_cluster, soak_pg.pod_url, pod_aws, tmp_path) as s:
        yield s


def test_exactly_once_under_faults(soak_stack: Stack, soak_pg: DebianPostgres, node_cluster: Cluster,
                                   tmp_path: Path) -> None:
    stack, db = soak_stack, DB(soak_pg.url)
    started = time.monotonic()
    figures = Figures()
    corpus = Corpus(FILES, SEED)
    rng = random.Random(SEED + 1)
    chaos = Chaos(node_cluster, stack.ns, soak_pg.url, figures, rng)
    stack.setup(ROUTES, notify_prefix="auto/")  # manual/ keys: the test sends (or withholds) their events
    proxy = SlowProxy(stack.endpoint, bytes_per_second=2 << 20, latency=0.05, host=BRIDGE_IP).start()
    operator_env = dict(FILEDROP_MAX_LOADS="4", FILEDROP_MAX_LOADS_PER_TABLE="2", FILEDROP_MAX_ATTEMPTS="25",
                        AWS_ENDPOINT_URL=proxy.url)  # loaders read S3 through the slow proxy
    stack.start_operator(**operator_env)
    stack.start_bridge()

    manual: list[list[Version]] = []

    def put(v: Version) -> None:
        v.etag = stack.put(v.key, v.body)["ETag"].strip('"')
        figures.bytes += len(v.body)

    def announce(v: Version, sequencer: str | None = None) -> None:
        stack.send(s3_event(stack.bucket, v.key, v.etag, len(v.body), sequencer or ""))

    # --- the scripted faults on manual/ keys -------------------------------------------------------
    def reordered(i: int) -> None:
        mode = "upsert" if i % 2 else "replace_source"
        v1 = corpus.version(f"manual/{PREFIX[mode]}_reorder_{i}.csv", mode, 50)
        v2 = corpus.successor(v1)
        put(v1)
        put(v2)  # unversioned bucket: v1's bytes are gone
        v1.expect = "Superseded"
        announce(v2, f"{i:04X}0002")
        announce(v2, f"{i:04X}0002")  # and delivered twice
        announce(v1, f"{i:04X}0001")  # the older event arrives last
        figures.reordered_keys += 1
        figures.duplicate_events += 1
        manual.append([v1, v2])

    def deleted(i: int) -> None:
        v = corpus.version(f"manual/{PREFIX['append']}_deleted_{i}.csv", "append", 20)
        put(v)
        stack.s3.delete_object(Bucket=stack.bucket, Key=v.key)
        v.expect = "Failed"
        announce(v)
        figures.deleted += 1
        manual.append([v])

    def overwritten(i: int) -> None:
        v1 = corpus.version(f"manual/{PREFIX['append']}_overwritten_{i}.csv", "append", 20)
        v2 = corpus.version(v1.key, "append", 20)
        put(v1)
        put(v2)
        v1.expect = "Superseded"  # its bytes were replaced before anything read them
        announce(v1)
        announce(v2)
        figures.overwritten += 1
        manual.append([v1, v2])

    forced: list[tuple[str, bool]] = []

    def killed_in_final_transaction(i: int) -> threading.Thread:
        """In the background: the file waits its turn in the operator's queue like any other."""
        v = corpus.version(f"manual/{PREFIX['append']}_finalkill_{i}.csv", "append", 2_000)
        manual.append([v])

        def go() -> None:
            put(v)
            announce(v)

        def run() -> None:
            forced.append((v.key, chaos.kill_in_final_transaction(soak_pg.url, stack.bucket, v.key, go,
                                                                   time.monotonic() + 600 + 2 * FILES)))
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    stealing = threading.Event()

    def rogue_consumer() -> None:
        """Receives messages and never deletes them: SQS hands them out again after the timeout."""
        while not stealing.is_set():
            got = stack.sqs.receive_message(QueueUrl=stack.queue, MaxNumberOfMessages=2, VisibilityTimeout=3,
                                            WaitTimeSeconds=1).get("Messages", [])
            figures.stolen_messages += len(got)
            stealing.wait(rng.uniform(1, 4))  # now and then, not all the time

    thief = threading.Thread(target=rogue_consumer, daemon=True)
    thief.start()

    calm = threading.Event()

    chaos_thread = threading.Thread(target=chaos.run, args=(calm, max(8, FILES // 10), 0.03), daemon=True)
    chaos_thread.start()

    # --- the flow: uploads paced over the run, with the big faults at fixed points -----------------
    forcing = [killed_in_final_transaction(0)]
    milestones = {FILES // 4: "operator", FILES // 2: "bridge", (3 * FILES) // 4: "postgres"}
    for n, versions in enumerate(corpus.auto):
        for v in versions:
            put(v)
        if rng.random() < 0.1:
            announce(versions[-1])  # a duplicate of S3's own notification
            figures.duplicate_events += 1
        if n % 25 == 3:
            reordered(n)
        if n % 50 == 11:
            deleted(n)
            overwritten(n)
        if n == FILES // 3:
            forcing.append(killed_in_final_transaction(1))
        what = milestones.get(n)
        if what == "operator":
            stack.stop("operator", signal.SIGKILL)
            stack.start_operator(**operator_env)
            figures.operator_restarts += 1
        elif what == "bridge":
            stack.stop("bridge", signal.SIGKILL)  # its received, undeleted messages come back later
            stack.start_bridge()
            figures.bridge_restarts += 1
        elif what == "postgres":
            for t in forcing:  # their lock-holding sessions would not survive the restart
                t.join()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not db_copying(soak_pg.url):
                time.sleep(0.2)  # poll interval
            figures.postgres_restart_during_copy = db_copying(soak_pg.url)
            soak_pg.restart()
            figures.postgres_restarts += 1
        time.sleep(0.1)  # upload pace: files keep arriving while loads run (and get killed)
    for t in forcing:
        t.join()
    assert len(forced) == 2 and all(ok for _, ok in forced), f"no loader reached its final transaction: {forced}"

    versions = corpus.auto + manual
    announced = {(v.key, v.etag) for chain in versions for v in chain}
    figures.files = len({v.key for chain in versions for v in chain})
    figures.versions = len(announced)

    deadline = time.monotonic() + 600 + 4 * FILES
    while True:  # not stack.wait: listing hundreds of FileDrops ten times a second would starve the loads
        phases = stack.phases_by_name()
        if len(phases) >= len(announced) and all(p in FINAL for p in phases.values()):
            break
        assert time.monotonic() < deadline, (
            f"{len(announced)} versions announced; FileDrops: {Counter(phases.values())}\n{stack.logs()}")
        for name, proc in stack.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{stack.logs()}"
        time.sleep(2)  # poll interval
    stealing.set()
    calm.set()
    chaos_thread.join(30)
    figures.seconds = time.monotonic() - started

    # --- what the next run does first: clean up after loaders that died -------------------------
    prepare_meta(soak_pg.url, Settings(warehouse_url=soak_pg.url))

    # every announced version has exactly one FileDrop, with the expected outcome
    fds = stack.filedrops()
    by_version = {(fd["spec"]["key"], fd["spec"]["etag"]): fd for fd in fds}
    assert set(by_version) == announced and len(fds) == len(announced)
    _settle_auto_chains(corpus, by_version)
    wrong = []
    for chain in versions:
        for v in chain:
            st = by_version[(v.key, v.etag)]["status"]
            ok = {
                "Loaded": st["phase"] == "Loaded",
                "Failed": st["phase"] == "Failed" and "no longer exists" in (st.get("firstError") or ""),
                # a newer version was loaded first, or overwrote this one before it was read
                "Superseded": st["phase"] == "Skipped" and "skipped_superseded" in st.get("message", ""),
            }[v.expect]
            if not ok:
                wrong.append((v.key, v.expect, st.get("phase"), st.get("message")))
    assert not wrong, wrong[:10]
    figures.attempts = sum(int((fd.get("status") or {}).get("attempts") or 0) for fd in fds)

    # staging holds exactly the expected rows: none lost, none twice
    expected = expected_staging(versions)
    for table, rows in expected.items():
        got = db.rows(f'SELECT id, grp, amount, "_source_key" FROM staging.{table} ORDER BY 1, 4')
        assert len(got) == len(rows), f"{table}: {len(got)} rows, expected {len(rows)}"
        assert got == rows, f"{table}: contents differ"
        figures.rows += len(rows)

    # history agrees with staging and with the files
    history = db.history()
    assert not [h for h in history if h["status"] == "running"]
    loaded = Counter((h["key"], h["etag"]) for h in history if h["status"] == "loaded")
    assert all(n == 1 for n in loaded.values()), [k for k, n in loaded.items() if n > 1]
    by_load = {h["load_id"]: h for h in history if h["status"] == "loaded"}
    for chain in versions:
        for v in chain:
            rows = [h for h in by_load.values() if (h["key"], h["etag"]) == (v.key, v.etag)]
            if rows:
                assert (rows[0]["rows_loaded"], rows[0]["rows_rejected"] or 0) == (len(v.rows), v.bad), v.key
                figures.bad_rows += v.bad
    for table in ("soak_append", "soak_replace"):
        for load_id, n in db.rows(f'SELECT "_load_id", count(*) FROM staging.{table} GROUP BY 1'):
            assert by_load[load_id]["rows_loaded"] == n
    rejected = db.one("SELECT count(*) FROM filedrop.rejected_rows r JOIN filedrop.ingest_history h "
                      "USING (load_id) WHERE h.status = 'loaded'")
    assert rejected == figures.bad_rows

    # nothing left behind: load tables, running loaders, active Jobs
    assert db.leftover_tables() == []
    assert chaos.loaders() == []
    jobs = json.loads(stack.kubectl("get", "jobs", "-n", stack.ns, "-o", "json").stdout)["items"]
    assert not [j["metadata"]["name"] for j in jobs if (j.get("status") or {}).get("active")]
    assert not chaos.errors, chaos.errors[:5]
    # besides the two forced kills in the final transaction, the chaos thread killed loaders of its own
    assert sum(n for k, n in figures.kills.items() if "forced" not in k) > 0, figures.kills
    assert figures.postgres_restarts == 1 and figures.stolen_messages > 0
    assert proxy.connections > 0

    report = {**figures.__dict__, "kills": dict(figures.kills), "jobs": len(jobs),
              "phases": dict(Counter(fd["status"]["phase"] for fd in fds)),
              "history": dict(Counter(h["status"] for h in history)), "seed": SEED}
    print("\nsoak figures:", json.dumps(report, indent=1))
    if os.environ.get("FILEDROP_SOAK_REPORT"):
        Path(os.environ["FILEDROP_SOAK_REPORT"]).write_text(json.dumps(report, indent=1) + "\n")
    proxy.stop()


def db_copying(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=3) as c:
            return bool(c.execute("SELECT count(*) FROM pg_stat_progress_copy").fetchone()[0])  # type: ignore[index]
    except psycopg.OperationalError:
        return False


def _settle_auto_chains(corpus: Corpus, by_version: dict[tuple[str, str], Any]) -> None:
    """An auto version overwritten milliseconds later may have been read in time (Loaded), or not
    (Skipped as superseded): either is right, as long as staging ends up with the newest version,
    which is always loaded."""
    for chain in corpus.auto:
        for v in chain[:-1]:
            v.expect = "Loaded" if by_version[(v.key, v.etag)]["status"]["phase"] == "Loaded" else "Superseded"
