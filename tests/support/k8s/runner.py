"""A local stand-in for the spark-operator, for tests, until issue 16 runs the real one on the node.

Job pods run on the test node's real kubelet (tests/support/k8s/pods.py), but no spark-operator runs
there yet, so a SparkApplication would stay without status forever. LocalRunner stays for that one
role: it watches SparkApplications (sparkoperator.k8s.io/v1beta2, type Python) and runs each as a local
subprocess, `python <mainApplicationFile without local:// or file://> <arguments...>`, with the
driver's env (values with $(VAR) expansion, ConfigMap and Secret references, envFrom, envVars),
sparkConf/hadoopConf and deps passed through PYSPARK_SUBMIT_ARGS as spark-submit would get them.
It writes status the way spark-operator does: applicationState.state SUBMITTED -> RUNNING ->
COMPLETED or FAILED (with errorMessage), submission and termination times, driverInfo.
It runs nothing else: every Pod is left to the kubelet. Used by test_operator_e2e.py (`spark_runner`,
the Spark loader end to end) and test_controlplane.py (its own test).

Each application runs with KUBECONFIG pointing at a token for its driver's service account
(TokenRequest), so it meets RBAC as it would in a cluster; pass service_account_identity=False to
give it the runner's own kubeconfig instead. Output goes to a log file per run (LocalRunner.output()).
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.k8s.kube import ApiError, Kube, token_kubeconfig

SPARK_PATH = "/apis/sparkoperator.k8s.io/v1beta2"
OUTPUT_TAIL = 2000  # characters of output kept in errorMessage


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Run:
    """One SparkApplication's run (by its uid)."""

    namespace: str
    name: str
    uid: str
    log: Path
    argv: list[str] = field(default_factory=list)
    exit_code: int | None = None
    procs: list[subprocess.Popen] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)


class LocalRunner:
    def __init__(self, kubeconfig: str | os.PathLike, log_dir: str | os.PathLike, *,
                 env: dict[str, str] | None = None, python: str = sys.executable,
                 cwd: str | os.PathLike | None = None,
                 namespaces: list[str] | None = None,
                 path_map: dict[str, str] | None = None,
                 service_account_identity: bool = True,
                 spark_master: str = "local[2]"):
        self.kubeconfig = Path(kubeconfig)
        self.kube = Kube(kubeconfig)
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        base = dict(os.environ if env is None else env)
        # Console scripts of this interpreter's environment (e.g. `filedrop`) come first.
        base["PATH"] = os.pathsep.join([str(Path(python).parent), base.get("PATH", "")])
        base["KUBECONFIG"] = str(self.kubeconfig)
        self.base_env = base
        self.python = python
        self.cwd = str(cwd or os.getcwd())
        self.namespaces = namespaces
        self.path_map = path_map or {}
        self.service_account_identity = service_account_identity
        self.spark_master = spark_master
        self.runs: dict[str, Run] = {}  # by uid
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.errors: list[str] = []  # the runner's own problems, for test diagnostics

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> LocalRunner:
        t = threading.Thread(target=self._watch_loop, args=(f"{SPARK_PATH}/sparkapplications", self._on_spark),
                             name="runner-sparkapplications", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self._lock:
            runs = list(self.runs.values())
        for run in runs:
            self._kill(run)
        for t in self._threads:
            t.join(timeout)

    def __enter__(self) -> LocalRunner:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def output(self, namespace: str, name: str) -> str:
        """The combined stdout/stderr of the latest run of SparkApplication namespace/name."""
        with self._lock:
            runs = [r for r in self.runs.values() if r.namespace == namespace and r.name == name]
        if not runs:
            return ""
        return runs[-1].log.read_text(errors="replace") if runs[-1].log.exists() else ""

    # ------------------------------------------------------------------ watching
    def _watch_loop(self, path: str, handler: Callable[[str, dict], None]) -> None:
        rv = None
        while not self._stop.is_set():
            try:
                if rv is None:
                    lst = self.kube.get(path)
                    rv = lst["metadata"]["resourceVersion"]
                    for item in lst.get("items", []):
                        self._handle(handler, "ADDED", item)
                for ev in self.kube.watch(path, rv, timeout_seconds=300, stop=self._stop):
                    if self._stop.is_set():
                        return
                    obj = ev["object"]
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if ev["type"] != "BOOKMARK":
                        self._handle(handler, ev["type"], obj)
            except ApiError as e:
                if e.status == 410:  # resourceVersion too old: list again
                    rv = None
                    continue
                if e.status != 404:  # 404: CRD not installed (yet)
                    self._error(f"watch {path}: {e}")
                rv = None
                self._stop.wait(1.0)  # retry interval
            except OSError as e:
                if not self._stop.is_set():
                    self._error(f"watch {path}: {e!r}")
                rv = None
                self._stop.wait(1.0)  # retry interval

    def _handle(self, handler, event_type: str, obj: dict) -> None:
        ns = obj.get("metadata", {}).get("namespace")
        if self.namespaces is not None and ns not in self.namespaces:
            return
        try:
            handler(event_type, obj)
        except Exception as e:  # keep watching whatever one object does
            self._error(f"{event_type} {obj.get('kind')} {ns}/{obj['metadata'].get('name')}: {e!r}")

    def _error(self, msg: str) -> None:
        self.errors.append(msg)
        print(f"local runner: {msg}", file=sys.stderr)

    def _claim(self, obj: dict) -> Run | None:
        md = obj["metadata"]
        with self._lock:
            if md["uid"] in self.runs:
                return None
            log = self.log_dir / f"sparkapplication-{md['namespace']}-{md['name']}-{md['uid'][:8]}.log"
            run = self.runs[md["uid"]] = Run(md["namespace"], md["name"], md["uid"], log)
            return run

    def _spawn(self, target, *args) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    # ---------------------------------------------------------- SparkApplications
    def _on_spark(self, event_type: str, app: dict) -> None:
        md = app["metadata"]
        if event_type == "DELETED" or md.get("deletionTimestamp"):
            with self._lock:
                run = self.runs.get(md["uid"])
            if run is not None:
                self._kill(run)
            return
        state = app.get("status", {}).get("applicationState", {}).get("state", "")
        if state not in ("", "NEW") or app["spec"].get("suspend"):
            return
        run = self._claim(app)
        if run is not None:
            self._spawn(self._run_spark, run, app)

    def _run_spark(self, run: Run, app: dict) -> None:
        ns, name, spec = run.namespace, run.name, app["spec"]
        path = f"{SPARK_PATH}/namespaces/{ns}/sparkapplications/{name}/status"
        submission_id = str(uuid.uuid4())
        driver = spec.get("driver", {})
        driver_info = {"podName": f"{name}-driver"}

        def status(**st) -> None:
            st.setdefault("driverInfo", driver_info)
            self.kube.merge_patch(path, {"status": st})

        try:
            status(applicationState={"state": "SUBMITTED", "errorMessage": ""}, submissionID=submission_id,
                   sparkApplicationId=f"spark-{uuid.uuid4().hex}", submissionAttempts=1,
                   lastSubmissionAttemptTime=now(), terminationTime=None)
            try:
                if spec.get("type") != "Python":
                    raise RuntimeError(f"local runner runs only type Python applications, not {spec.get('type')}")
                kubeconfig = self._identity(ns, driver.get("serviceAccount") or "default", run)
                env = self._container_env(app, driver, kubeconfig)
                env.update({k: str(v) for k, v in (driver.get("envVars") or {}).items()})
                env.update(self._spark_env(app, env))
                main = self._local_path(spec["mainApplicationFile"])
                argv = [self.python, main, *[str(a) for a in spec.get("arguments") or []]]
            except Exception as e:
                status(applicationState={"state": "FAILED", "errorMessage": f"failed to submit: {e}"},
                       terminationTime=now())
                run.exit_code = -1
                return
            status(applicationState={"state": "RUNNING", "errorMessage": ""}, executionAttempts=1)
            rc, tail = self._exec(run, "driver", argv, env)
            run.exit_code = rc
            if self._stop.is_set():
                return
            if rc == 0:
                status(applicationState={"state": "COMPLETED", "errorMessage": ""}, terminationTime=now())
            else:
                msg = f"driver container failed with ExitCode: {rc}, Reason: Error\n{tail}"
                status(applicationState={"state": "FAILED", "errorMessage": msg}, terminationTime=now())
        except ApiError as e:
            if e.status != 404:  # 404: deleted meanwhile
                self._error(f"SparkApplication {ns}/{name}: {e}")
        finally:
            run.done.set()

    def _local_path(self, path: str) -> str:
        for prefix in ("local://", "file://"):
            if path.startswith(prefix):
                path = path[len(prefix):]
        for remote, local in self.path_map.items():
            if path.startswith(remote):
                return local + path[len(remote):]
        return path

    def _spark_env(self, app: dict, env: dict[str, str]) -> dict[str, str]:
        """What spark-submit would have been told, for a pyspark program to pick up."""
        spec = app["spec"]
        conf = {"spark.app.name": app["metadata"]["name"]}
        conf.update({k: str(v) for k, v in (spec.get("sparkConf") or {}).items()})
        conf.update({f"spark.hadoop.{k}": str(v) for k, v in (spec.get("hadoopConf") or {}).items()})
        args = ["--master", self.spark_master]
        for k, v in conf.items():
            args += ["--conf", f"{k}={v}"]
        deps = spec.get("deps") or {}
        if deps.get("jars"):
            args += ["--jars", ",".join(self._local_path(j) for j in deps["jars"])]
        if deps.get("packages"):
            args += ["--packages", ",".join(deps["packages"])]
        if deps.get("repositories"):
            args += ["--repositories", ",".join(deps["repositories"])]
        out = {"PYSPARK_SUBMIT_ARGS": " ".join(shlex.quote(a) for a in args + ["pyspark-shell"])}
        py_files = [self._local_path(p) for p in deps.get("pyFiles") or []]
        if py_files:
            out["PYTHONPATH"] = os.pathsep.join(py_files + [p for p in [env.get("PYTHONPATH")] if p])
        return out

    # ------------------------------------------------------------ running things
    def _identity(self, ns: str, service_account: str, run: Run) -> str:
        """A kubeconfig for the workload: its service account's token, or the runner's own."""
        if not self.service_account_identity:
            return str(self.kubeconfig)
        tr = self.kube.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{service_account}/token",
                              {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                               "spec": {"expirationSeconds": 3600}})
        path = self.log_dir / f"kubeconfig-{ns}-{run.uid[:8]}"
        path.write_text(token_kubeconfig(self.kube.server, self.kube._ca_data, tr["status"]["token"], ns))
        path.chmod(0o600)
        return str(path)

    def _container_env(self, owner: dict, c: dict, kubeconfig: str) -> dict[str, str]:
        """The environment of `owner`'s container spec `c` (a SparkApplication's driver): env and envFrom."""
        ns = owner["metadata"]["namespace"]
        env = dict(self.base_env)
        env["KUBECONFIG"] = kubeconfig
        for src in c.get("envFrom") or []:
            prefix = src.get("prefix", "")
            for key, ref in (("configMapRef", "configmaps"), ("secretRef", "secrets")):
                if key in src:
                    data = self._data(ns, ref, src[key]["name"], src[key].get("optional", False))
                    env.update({prefix + k: v for k, v in data.items()})
        own: dict[str, str] = {}
        for e in c.get("env") or []:
            if "valueFrom" not in e:
                own[e["name"]] = expand(e.get("value", ""), {**env, **own})
                continue
            vf = e["valueFrom"]
            if "configMapKeyRef" in vf or "secretKeyRef" in vf:
                key, ref = ("configMapKeyRef", "configmaps") if "configMapKeyRef" in vf else ("secretKeyRef", "secrets")
                sel = vf[key]
                data = self._data(ns, ref, sel["name"], sel.get("optional", False))
                if sel["key"] in data:
                    own[e["name"]] = data[sel["key"]]
                elif not sel.get("optional", False):
                    raise RuntimeError(f"key {sel['key']} not found in {ref[:-1]} {ns}/{sel['name']}")
            else:  # fieldRef, resourceFieldRef: nothing of filedrop's needs them
                raise RuntimeError(f"env {e['name']}: only configMapKeyRef and secretKeyRef are supported "
                                   "by the local runner")
        env.update(own)
        return env

    def _data(self, ns: str, ref: str, name: str, optional: bool) -> dict[str, str]:
        try:
            obj = self.kube.get(f"/api/v1/namespaces/{ns}/{ref}/{name}")
        except ApiError as e:
            if e.status == 404 and optional:
                return {}
            raise
        if ref == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}
        return dict(obj.get("data") or {})

    def _exec(self, run: Run, label: str, argv: list[str], env: dict[str, str]) -> tuple[int, str]:
        """Run argv (in self.cwd) to completion; return (exit code, tail of its output)."""
        with open(run.log, "ab") as log:
            log.write(f"===== {now()} {label}: {shlex.join(argv)}\n".encode())
            log.flush()
            start_at = log.tell()
            try:
                proc = subprocess.Popen(argv, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:  # no such executable, say: as a container runtime, exit 127/126
                log.write(f"local runner: {e}\n".encode())
                return (127 if isinstance(e, FileNotFoundError) else 126), str(e)
            with self._lock:
                run.argv = argv
                run.procs.append(proc)
            if self._stop.is_set():
                self._kill(run)
            rc = proc.wait()
        text = run.log.read_bytes()[start_at:].decode("utf-8", "replace")
        rc = 128 - rc if rc < 0 else rc  # killed by signal N: exit code 128+N, as in a container
        return rc, text[-OUTPUT_TAIL:].strip()

    def _kill(self, run: Run) -> None:
        for proc in list(run.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass


_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in env values ($$ escapes $)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)

