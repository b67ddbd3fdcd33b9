"""A local stand-in for the kubelet and the spark-operator, for tests.

The test control plane has no kubelet and no spark-operator, so nothing would
ever run. LocalRunner watches the cluster and runs, as local subprocesses:

* Pods controlled by a Job (created by the real Job controller): each container's
  `command` + `args` with its `env`/`envFrom` resolved (ConfigMaps, Secrets,
  fieldRefs, $(VAR) expansion). It writes the Pod's status the way the kubelet
  does (phase Running, then Succeeded/Failed with containerStatuses[].state.
  terminated.exitCode), so the Job controller marks the Job Complete or Failed.
* SparkApplications (sparkoperator.k8s.io/v1beta2, type Python): runs
  `python <mainApplicationFile without local:// or file://> <arguments...>` with
  the driver's env, sparkConf/hadoopConf and deps passed through
  PYSPARK_SUBMIT_ARGS as spark-submit would get them, and writes status the way
  spark-operator does: applicationState.state SUBMITTED -> RUNNING ->
  COMPLETED or FAILED (with errorMessage), submission and termination times,
  driverInfo.

Each workload runs with KUBECONFIG pointing at a token for its service account
(TokenRequest), so it meets RBAC as it would in a cluster; pass
service_account_identity=False to give it the runner's own kubeconfig instead.
Output goes to a log file per run (LocalRunner.output()).

As a program (for `make cluster`, from the repository root):
python -m tests.support.k8s.runner --kubeconfig K --log-dir D
"""

from __future__ import annotations

import argparse
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
OUTPUT_TAIL = 2000  # characters of output kept in errorMessage / terminated.message


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def job_owned(pod: dict) -> bool:
    """The default choice of Pods to run: those the Job controller made."""
    return any(r.get("kind") == "Job" and r.get("controller")
               for r in pod["metadata"].get("ownerReferences", []))


@dataclass
class Run:
    kind: str  # "Pod" or "SparkApplication"
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
                 pod_filter: Callable[[dict], bool] = job_owned,
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
        self.pod_filter = pod_filter
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
        for name, path, handler in (("pods", "/api/v1/pods", self._on_pod),
                                    ("sparkapplications", f"{SPARK_PATH}/sparkapplications", self._on_spark)):
            t = threading.Thread(target=self._watch_loop, args=(path, handler), name=f"runner-{name}",
                                 daemon=True)
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

    def output(self, namespace: str, name: str, kind: str | None = None) -> str:
        """The combined stdout/stderr of the latest run of namespace/name."""
        with self._lock:
            runs = [r for r in self.runs.values()
                    if r.namespace == namespace and r.name == name and (kind is None or r.kind == kind)]
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

    def _claim(self, kind: str, obj: dict) -> Run | None:
        md = obj["metadata"]
        with self._lock:
            if md["uid"] in self.runs:
                return None
            log = self.log_dir / f"{kind.lower()}-{md['namespace']}-{md['name']}-{md['uid'][:8]}.log"
            run = self.runs[md["uid"]] = Run(kind, md["namespace"], md["name"], md["uid"], log)
            return run

    def _spawn(self, target, *args) -> None:
        threading.Thread(target=target, args=args, daemon=True).start()

    # --------------------------------------------------------------------- Pods
    def _on_pod(self, event_type: str, pod: dict) -> None:
        md = pod["metadata"]
        if event_type == "DELETED" or md.get("deletionTimestamp"):
            with self._lock:
                run = self.runs.get(md["uid"])
            if run is not None:
                self._kill(run)
            return
        if pod.get("status", {}).get("phase", "Pending") != "Pending" or pod["spec"].get("nodeName"):
            return
        if not self.pod_filter(pod):
            return
        run = self._claim("Pod", pod)
        if run is not None:
            self._spawn(self._run_pod, run, pod)

    def _run_pod(self, run: Run, pod: dict) -> None:
        ns, name = run.namespace, run.name
        status_path = f"/api/v1/namespaces/{ns}/pods/{name}/status"
        started = now()
        try:
            kubeconfig = self._identity(ns, pod["spec"].get("serviceAccountName") or "default", run)
            plans = [(c, self._container_env(pod, c, kubeconfig)) for c in pod["spec"]["containers"]]
            inits = [(c, self._container_env(pod, c, kubeconfig)) for c in pod["spec"].get("initContainers", [])]
        except Exception as e:  # a missing ConfigMap, say: the kubelet would not start it either
            msg = f"local runner: cannot start: {e}"
            with open(run.log, "a") as f:
                f.write(msg + "\n")
            self._finish_pod(status_path, pod, started, {c["name"]: (128, msg) for c in pod["spec"]["containers"]})
            run.done.set()
            return
        try:
            self.kube.merge_patch(status_path, {"status": {
                "phase": "Running", "startTime": started, "hostIP": "127.0.0.1", "podIP": "127.0.0.1",
                "podIPs": [{"ip": "127.0.0.1"}], "hostIPs": [{"ip": "127.0.0.1"}],
                "conditions": self._conditions("True", started),
                "containerStatuses": [self._cstatus(c, {"running": {"startedAt": started}}) for c, _ in plans],
            }})
        except ApiError as e:
            if e.status == 404:  # deleted before it started
                run.done.set()
                return
            raise
        results: dict[str, tuple[int, str]] = {}
        for c, env in inits:
            rc, tail = self._exec(run, c["name"], self._argv(c, env), env, c.get("workingDir"))
            if rc != 0:
                results = {c2["name"]: (rc, f"init container {c['name']} failed: {tail}") for c2, _ in plans}
                break
        if not results:
            threads = []
            for c, env in plans:
                def one(c=c, env=env):
                    results[c["name"]] = self._exec(run, c["name"], self._argv(c, env), env, c.get("workingDir"))
                t = threading.Thread(target=one, daemon=True)
                t.start()
                threads.append(t)
            for t in threads:
                t.join()
        run.exit_code = max((rc for rc, _ in results.values()), default=0)
        if not self._stop.is_set():
            self._finish_pod(status_path, pod, started, results)
        run.done.set()

    def _finish_pod(self, status_path: str, pod: dict, started: str, results: dict[str, tuple[int, str]]) -> None:
        finished = now()
        ok = all(rc == 0 for rc, _ in results.values())
        statuses = []
        for c in pod["spec"]["containers"]:
            rc, tail = results.get(c["name"], (137, "not run"))
            term = {"exitCode": rc, "reason": "Completed" if rc == 0 else "Error",
                    "startedAt": started, "finishedAt": finished, "containerID": f"local://{pod['metadata']['uid']}"}
            if rc != 0 and tail:
                term["message"] = tail
            statuses.append(self._cstatus(c, {"terminated": term}, ready=False))
        try:
            self.kube.merge_patch(status_path, {"status": {
                "phase": "Succeeded" if ok else "Failed",
                "conditions": self._conditions("False", finished, reason="PodCompleted"),
                "containerStatuses": statuses,
            }})
        except ApiError as e:
            if e.status != 404:
                raise

    @staticmethod
    def _conditions(ready: str, when: str, reason: str | None = None) -> list[dict]:
        conds = [{"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": when},
                 {"type": "Initialized", "status": "True", "lastTransitionTime": when},
                 {"type": "Ready", "status": ready, "lastTransitionTime": when},
                 {"type": "ContainersReady", "status": ready, "lastTransitionTime": when}]
        if reason:
            for c in conds[2:]:
                c["reason"] = reason
        return conds

    @staticmethod
    def _cstatus(c: dict, state: dict, ready: bool = True) -> dict:
        return {"name": c["name"], "image": c.get("image", ""), "imageID": "", "restartCount": 0,
                "ready": ready and "running" in state, "started": "running" in state, "state": state}

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
        run = self._claim("SparkApplication", app)
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
            rc, tail = self._exec(run, "driver", argv, env, None)
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
        """The environment of a container (or of a SparkApplication's driver) of `owner`."""
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
            elif "fieldRef" in vf:
                own[e["name"]] = field_ref(owner, vf["fieldRef"]["fieldPath"])
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

    @staticmethod
    def _argv(c: dict, env: dict[str, str]) -> list[str]:
        argv = [expand(a, env) for a in (c.get("command") or []) + (c.get("args") or [])]
        if not c.get("command"):
            raise RuntimeError(f"container {c['name']} has no command: the local runner cannot "
                               "know its image's entrypoint")
        return argv

    def _exec(self, run: Run, label: str, argv: list[str], env: dict[str, str],
              working_dir: str | None) -> tuple[int, str]:
        """Run argv to completion; return (exit code, tail of its output)."""
        cwd = working_dir if working_dir and Path(working_dir).is_dir() else self.cwd
        with open(run.log, "ab") as log:
            log.write(f"===== {now()} {label}: {shlex.join(argv)}\n".encode())
            log.flush()
            start_at = log.tell()
            try:
                proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
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
    """Kubernetes' $(VAR) expansion in env values, command and args ($$ escapes $)."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))
    return _VAR.sub(sub, s)


def field_ref(obj: dict, path: str) -> str:
    md = obj["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        return (md.get(m.group(1)) or {}).get(m.group(2), "")
    simple = {"metadata.name": md.get("name"), "metadata.namespace": md.get("namespace"),
              "metadata.uid": md.get("uid"), "spec.nodeName": "localhost",
              "spec.serviceAccountName": obj.get("spec", {}).get("serviceAccountName", "default"),
              "status.podIP": "127.0.0.1", "status.hostIP": "127.0.0.1"}
    if path not in simple:
        raise RuntimeError(f"fieldRef {path} is not supported by the local runner")
    return simple[path] or ""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run Job Pods and SparkApplications of a cluster locally.")
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), required="KUBECONFIG" not in os.environ)
    ap.add_argument("--log-dir", required=True, type=Path)
    ap.add_argument("--pid-file", type=Path, help="write '<pid> <start time>' here (`controlplane down` stops it)")
    ap.add_argument("--namespace", action="append", dest="namespaces", help="only these namespaces (repeatable)")
    ap.add_argument("--admin-identity", action="store_true",
                    help="run workloads with the runner's kubeconfig, not their service accounts' tokens")
    args = ap.parse_args(argv)
    if args.pid_file:
        started = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
        args.pid_file.write_text(f"{os.getpid()} {started}\n")
    runner = LocalRunner(args.kubeconfig, args.log_dir, namespaces=args.namespaces,
                         service_account_identity=not args.admin_identity)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    runner.start()
    print(f"local runner watching {runner.kube.server}; logs in {args.log_dir}", file=sys.stderr, flush=True)
    done.wait()
    runner.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
