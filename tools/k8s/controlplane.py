#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback, for tests and for people.

Starts etcd, kube-apiserver and kube-controller-manager (built by build.sh from
pinned Go modules) on free 127.0.0.1 ports, much as controller-runtime's envtest
does, but with the controller-manager too and with production-like settings:
RBAC authorization, service-account token signing, the PodSecurity admission
plugin, client-certificate authentication for an admin kubeconfig.

There is no scheduler and no kubelet: nothing runs Pods (see tests/k8s/runner.py).

    python tools/k8s/controlplane.py up   --dir DIR   # start in the background, wait for readiness
        [--crds PATH]... [--runner]                  # and install CRDs, start the local runner
    python tools/k8s/controlplane.py env  --dir DIR   # print `export KUBECONFIG=...` of a running one
    python tools/k8s/controlplane.py down --dir DIR   # stop it (processes named by DIR/*.pid)

Everything lives in DIR: certificates (pki/), etcd's data, one log file per
component, pid files, state.json and the admin kubeconfig (DIR/kubeconfig).
Only the standard library and the `openssl` command are used.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BUILD_SH = HERE / "build.sh"
RUNNER = REPO / "tests" / "k8s" / "runner.py"

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
CLUSTER_CIDR = "10.1.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


class ControlPlaneError(RuntimeError):
    pass


def build_tools(quiet: bool = False) -> Path:
    """Run build.sh (fast when already built) and return the bin directory.

    FILEDROP_K8S_BIN, when set, names a directory of ready binaries instead.
    """
    override = os.environ.get("FILEDROP_K8S_BIN")
    if override:
        return Path(override)
    proc = subprocess.run(
        ["bash", str(BUILD_SH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL if quiet else None,
        text=True,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SH} failed with exit code {proc.returncode}")
    return Path(lines[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------- PKI


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ControlPlaneError(f"openssl {' '.join(args)} failed:\n{proc.stderr}")


def _cert(pki: Path, name: str, subject: dict[str, str], ext: list[str], ca: bool = False,
          issuer: str = "ca") -> None:
    """Write pki/NAME.crt and pki/NAME.key (P-256), signed by pki/ISSUER unless self-signed (ca=True)."""
    dn = "\n".join(f"{k} = {v}" for k, v in subject.items())
    cnf = pki / f"{name}.cnf"
    cnf.write_text(
        "[req]\ndistinguished_name = dn\nprompt = no\n"
        f"[dn]\n{dn}\n[ext]\n" + "\n".join(ext) + "\n"
    )
    args = [
        "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "3650",
        "-config", cnf.name, "-extensions", "ext",
    ]
    if not ca:
        args += ["-CA", f"{issuer}.crt", "-CAkey", f"{issuer}.key"]
    _openssl(*args, cwd=pki)
    cnf.unlink()


def make_pki(pki: Path) -> None:
    if (pki / "done").exists():
        return
    pki.mkdir(parents=True, exist_ok=True)
    _cert(pki, "ca", {"CN": "filedrop-test-ca"},
          ["basicConstraints = critical,CA:TRUE",
           "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
           "subjectKeyIdentifier = hash"], ca=True)
    leaf = ["basicConstraints = critical,CA:FALSE", "keyUsage = critical,digitalSignature,keyEncipherment"]
    sans = ",".join(["DNS:localhost", "DNS:kubernetes", "DNS:kubernetes.default",
                     "DNS:kubernetes.default.svc", "DNS:kubernetes.default.svc.cluster.local",
                     "IP:127.0.0.1", f"IP:{SERVICE_IP}"])
    _cert(pki, "apiserver", {"CN": "kube-apiserver"},
          leaf + ["extendedKeyUsage = serverAuth", f"subjectAltName = {sans}"])
    client = leaf + ["extendedKeyUsage = clientAuth"]
    _cert(pki, "admin", {"O": "system:masters", "CN": "filedrop-admin"}, client)
    _cert(pki, "controller-manager", {"CN": "system:kube-controller-manager"}, client)
    # The aggregation layer's front proxy: its own CA and the client certificate the
    # API server presents to extension API servers (as kubeadm sets it up).
    _cert(pki, "front-proxy-ca", {"CN": "filedrop-test-front-proxy-ca"},
          ["basicConstraints = critical,CA:TRUE", "keyUsage = critical,keyCertSign,cRLSign,digitalSignature",
           "subjectKeyIdentifier = hash"], ca=True)
    _cert(pki, "front-proxy-client", {"CN": "front-proxy-client"}, client, issuer="front-proxy-ca")
    # The service-account token signing key pair.
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "sa.key", cwd=pki)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)
    (pki / "done").write_text("")


def kubeconfig_text(server: str, pki: Path, user: str) -> str:
    def b64(name: str) -> str:
        return base64.b64encode((pki / name).read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "filedrop-test", "cluster": {
            "server": server, "certificate-authority-data": b64("ca.crt")}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(f"{user}.crt"),
            "client-key-data": b64(f"{user}.key")}}],
        "contexts": [{"name": "filedrop-test", "context": {"cluster": "filedrop-test", "user": user}}],
        "current-context": "filedrop-test",
    }
    return json.dumps(config, indent=2) + "\n"  # JSON is YAML


# ------------------------------------------------------------------ processes


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None when it is gone or a zombie."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return None if fields[0] == "Z" else fields[19]


def write_pidfile(path: Path, pid: int) -> None:
    """Record pid with its start time, so a recycled pid is never mistaken for ours."""
    Path(path).write_text(f"{pid} {_start_time(pid)}\n")


def stop_pidfile(path: Path, timeout: float = 20.0) -> None:
    """SIGTERM the process a pid file names (if it is still that process), SIGKILL after timeout."""
    try:
        pid_s, started = Path(path).read_text().split()[:2]
        pid = int(pid_s)
    except (FileNotFoundError, ValueError):
        Path(path).unlink(missing_ok=True)
        return
    if _start_time(pid) == started:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _start_time(pid) == started and time.monotonic() < deadline:
            try:  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
            time.sleep(0.05)  # polling a process's exit
        if _start_time(pid) == started:
            os.kill(pid, signal.SIGKILL)
    Path(path).unlink(missing_ok=True)


def _die_with_parent() -> None:  # runs in the child between fork and exec
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


_DOC_SPLIT = re.compile(r"^---[ \t]*$", re.MULTILINE)
_CRD_KIND = re.compile(r"^kind:[ \t]*CustomResourceDefinition[ \t]*$", re.MULTILINE)
_NAME = re.compile(r"^metadata:[ \t]*\n(?:[ \t]+.*\n)*?[ \t]+name:[ \t]*['\"]?([^'\"\s]+)", re.MULTILINE)


def yaml_files(paths: Iterable[Path]) -> list[Path]:
    """*.yaml and *.yml files: the paths that are files, and those under the paths that are
    directories (recursively). Paths that do not exist are skipped."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
    return out


def crd_documents(files: Iterable[Path]) -> dict[str, str]:
    """The CustomResourceDefinition documents of YAML files by CRD name (other documents,
    like kopf's example objects, are left out). Text only: Argo's CRDs are megabytes."""
    docs: dict[str, str] = {}
    for f in files:
        for doc in _DOC_SPLIT.split(Path(f).read_text()):
            if _CRD_KIND.search(doc):
                m = _NAME.search(doc)
                if not m:
                    raise ControlPlaneError(f"{f}: a CustomResourceDefinition without metadata.name")
                docs[m.group(1)] = doc.strip("\n") + "\n"
    return docs


@dataclass
class ControlPlane:
    """A control plane living in `dir`.

    `start()` blocks until kube-apiserver's /readyz and kube-controller-manager's
    /healthz answer ok. With detach=True (the CLI's `up`) the processes outlive
    this Python process; otherwise they get SIGTERM if it dies.
    """

    dir: Path
    bin_dir: Path | None = None
    detach: bool = False
    start_timeout: float = 120.0
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.pki = self.dir / "pki"

    # paths and URLs
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.ports['apiserver']}"

    def log(self, component: str) -> Path:
        return self.dir / f"{component}.log"

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: KUBECONFIG, and the tools first on PATH."""
        env = dict(os.environ)
        env["KUBECONFIG"] = str(self.kubeconfig)
        if self.bin_dir:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        helm = self.dir / "helm"
        env.setdefault("HELM_CACHE_HOME", str(helm / "cache"))
        env.setdefault("HELM_CONFIG_HOME", str(helm / "config"))
        env.setdefault("HELM_DATA_HOME", str(helm / "data"))
        return env

    def log_tails(self, lines: int = 30) -> str:
        out = []
        for c in COMPONENTS:
            if self.log(c).exists():
                out.append(f"----- {self.log(c)} (last {lines} lines) -----\n{tail(self.log(c), lines)}")
        return "\n".join(out)

    # state
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def save_state(self) -> None:
        state = {"server": self.server, "ports": self.ports, "bin_dir": str(self.bin_dir),
                 "kubeconfig": str(self.kubeconfig)}
        self._state_file().write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, dir: Path) -> ControlPlane:
        cp = cls(Path(dir))
        state = json.loads(cp._state_file().read_text())
        cp.ports = state["ports"]
        cp.bin_dir = Path(state["bin_dir"]) if state.get("bin_dir") not in (None, "None") else None
        return cp

    # HTTP checks with the admin client certificate
    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def _get(self, url: str, ctx: ssl.SSLContext | None, accept: str | None = None) -> tuple[int, str]:
        req = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
                return r.status, r.read().decode(errors="replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode(errors="replace")
        except (OSError, ssl.SSLError) as e:
            return 0, str(e)

    def ready(self) -> bool:
        if "apiserver" not in self.ports:
            return False
        status, _ = self._get(f"{self.server}/readyz", self._ssl_context())
        return status == 200

    def install_crds(self, files: Iterable[Path], timeout: float = 180.0) -> list[str]:
        """Server-side apply the CRDs in YAML files (too big for client-side apply's
        annotation) and wait until they are Established. Returns their names."""
        docs = crd_documents(files)
        if not docs:
            return []
        kubectl, env = str(self.bin_dir / "kubectl"), self.env()
        ctx = self._ssl_context()

        def current(name: str, metadata_only: bool = False) -> dict:
            accept = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1" if metadata_only else None
            status, body = self._get(f"{self.server}/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}",
                                     ctx, accept)
            return json.loads(body) if status == 200 else {}

        # Applying an unchanged multi-megabyte CRD still costs the API server seconds: skip the
        # CRDs this directory's record says were applied from the same text and not changed since.
        record_file = self.dir / "crds-applied.json"
        record = json.loads(record_file.read_text()) if record_file.exists() else {}
        digest = {n: hashlib.sha256(d.encode()).hexdigest() for n, d in docs.items()}

        def unchanged(name: str) -> bool:
            md = current(name, metadata_only=True).get("metadata", {})
            return record.get(name) == [digest[name], md.get("uid"), md.get("generation")]
        todo = [n for n in docs if not unchanged(n)]

        def apply(name: str) -> None:
            proc = subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts",
                                   "--field-manager=filedrop", "-f", "-"],
                                  input=docs[name], capture_output=True, text=True, env=env, timeout=timeout)
            if proc.returncode != 0:
                raise ControlPlaneError(f"kubectl apply of CRD {name} failed:\n{proc.stderr}")
        # The API server, not kubectl, is the bottleneck: a few at once take half the time.
        with ThreadPoolExecutor(max_workers=3) as pool:
            list(pool.map(apply, sorted(todo, key=lambda n: -len(docs[n]))))

        def established(name: str) -> bool:
            # (kubectl wait gives up on a CRD whose status has no conditions yet.)
            crd = current(name)
            if not any(c["type"] == "Established" and c["status"] == "True"
                       for c in crd.get("status", {}).get("conditions") or []):
                return False
            record[name] = [digest[name], crd["metadata"]["uid"], crd["metadata"]["generation"]]
            return True
        deadline = time.monotonic() + timeout
        pending = sorted(todo)
        while pending:
            pending = [n for n in pending if not established(n)]
            if pending and time.monotonic() > deadline:
                raise ControlPlaneError(f"CRDs not Established after {timeout:.0f}s: {', '.join(pending)}")
            if pending:
                time.sleep(0.1)  # poll interval
        record_file.write_text(json.dumps(record, indent=1) + "\n")
        return sorted(docs)

    # start / stop
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log(name), "ab")
        log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True,
            preexec_fn=None if self.detach else _die_with_parent,
        )
        log.close()
        self.procs[name] = proc
        write_pidfile(self.dir / f"{name}.pid", proc.pid)

    def start_runner(self, timeout: float = 30.0) -> None:
        """Start the local runner (tests/k8s/runner.py) in the background, unless it runs."""
        pidfile = self.dir / "runner.pid"
        if pidfile.exists():
            pid, started = pidfile.read_text().split()[:2]
            if _start_time(int(pid)) == started:
                return
        log = self.dir / "runner.log"
        offset = log.stat().st_size if log.exists() else 0
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, str(RUNNER), f"--kubeconfig={self.kubeconfig}", f"--log-dir={self.dir / 'runner'}"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True)
        write_pidfile(pidfile, proc.pid)
        deadline = time.monotonic() + timeout
        while b"local runner watching" not in log.read_bytes()[offset:]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ControlPlaneError(f"the local runner did not start:\n{tail(log)}")
            time.sleep(0.05)  # poll interval

    def _wait(self, what: str, check, components: list[str]) -> None:
        """Poll check() until true, failing early when a component exits."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if check():
                return
            for c in components:
                rc = self.procs[c].poll()
                if rc is not None:
                    raise ControlPlaneError(f"{c} exited with code {rc} while waiting for {what}\n"
                                            + self.log_tails())
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {self.start_timeout:.0f}s waiting for {what}\n"
                                        + self.log_tails())
            time.sleep(0.1)  # poll interval

    def start(self) -> ControlPlane:
        if self.bin_dir is None:
            self.bin_dir = build_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki)
        for attempt in range(3):  # a free port can be taken before we bind it
            try:
                self._start_once()
                return self
            except ControlPlaneError as e:
                self.stop()
                if "address already in use" not in str(e) or attempt == 2:
                    raise
        return self

    def _start_once(self) -> None:
        t0 = time.monotonic()
        p = self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "controller-manager")}
        pki = self.pki
        etcd_url = f"http://127.0.0.1:{p['etcd']}"
        self._spawn("etcd", [
            "--name=filedrop-test",
            f"--data-dir={self.dir / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{p['etcd-peer']}",
            f"--initial-cluster=filedrop-test=http://127.0.0.1:{p['etcd-peer']}",
            "--unsafe-no-fsync",  # as envtest: a test cluster needs no durability
            "--max-request-bytes=10485760",  # Argo's full CRDs are a few MB each
            "--log-level=warn",
        ])
        self._wait("etcd /health", lambda: self._get(f"{etcd_url}/health", None)[0] == 200, ["etcd"])
        t_etcd = time.monotonic() - t0

        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={p['apiserver']}",
            f"--cert-dir={self.dir / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=true",  # for /readyz etc. (system:public-info-viewer), as in clusters
            "--enable-admission-plugins=PodSecurity",  # on by default; named to make it plain
            "--allow-privileged=true",  # so that PodSecurity, not this flag, refuses privileged Pods
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # The `kubernetes` Service cannot have a loopback endpoint; nothing in-cluster needs one.
            "--endpoint-reconciler-type=none",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--api-audiences=https://kubernetes.default.svc.cluster.local",
            "--profiling=false",
            "--v=1",
        ])
        self._write_kubeconfigs()
        self._wait("kube-apiserver /readyz", self.ready, ["etcd", "kube-apiserver"])
        t_api = time.monotonic() - t0

        self._spawn("kube-controller-manager", [
            f"--kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={self.dir / 'controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={p['controller-manager']}",
            f"--cert-dir={self.dir / 'controller-manager-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=true",  # each controller with its own RBAC role
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--cluster-signing-cert-file={pki / 'ca.crt'}",
            f"--cluster-signing-key-file={pki / 'ca.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--cluster-cidr={CLUSTER_CIDR}",
            "--profiling=false",
            "--v=1",
        ])
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE  # its serving certificate is self-signed on the fly
        kcm_url = f"https://127.0.0.1:{p['controller-manager']}/healthz"
        self._wait("kube-controller-manager /healthz", lambda: self._get(kcm_url, insecure)[0] == 200,
                   list(COMPONENTS))
        # Its controllers are running once the ServiceAccount controller has made default/default
        # (Pods cannot be created in a namespace before its default ServiceAccount exists).
        sa_url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        admin = self._ssl_context()
        self._wait("the default ServiceAccount", lambda: self._get(sa_url, admin)[0] == 200, list(COMPONENTS))
        self.timings = {"etcd": t_etcd, "kube-apiserver": t_api, "total": time.monotonic() - t0}
        self.save_state()

    def _write_kubeconfigs(self) -> None:
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki, "admin"))
        self.kubeconfig.chmod(0o600)
        kcm = self.dir / "controller-manager.kubeconfig"
        kcm.write_text(kubeconfig_text(self.server, self.pki, "controller-manager"))
        kcm.chmod(0o600)

    def stop(self) -> None:
        """Stop every process named by a DIR/*.pid file: others (a runner) first, etcd last."""
        order = {"kube-controller-manager": 1, "kube-apiserver": 2, "etcd": 3}
        for pidfile in sorted(self.dir.glob("*.pid"), key=lambda f: order.get(f.stem, 0)):
            proc = self.procs.pop(pidfile.stem, None)
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                pidfile.unlink(missing_ok=True)
            else:
                stop_pidfile(pidfile)


# ------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "env"])
    ap.add_argument("--dir", required=True, type=Path, help="state directory")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    ap.add_argument("--crds", action="append", type=Path, default=[], metavar="PATH",
                    help="up: also install the CRDs in this YAML file or directory (repeatable; "
                         "a path that does not exist is skipped)")
    ap.add_argument("--runner", action="store_true",
                    help="up: also run tests/k8s/runner.py in the background (runs Job Pods and "
                         "SparkApplications locally; log in DIR/runner.log)")
    args = ap.parse_args(argv)
    d = args.dir.resolve()

    if args.command == "up":
        cp = ControlPlane.load(d) if (d / "state.json").exists() else None
        if cp is None or not cp.ready():
            if cp is not None:
                cp.stop()  # leftovers of a dead one
            cp = ControlPlane(d, bin_dir=build_tools(), detach=True, start_timeout=args.timeout)
            try:
                cp.start()
            except ControlPlaneError as e:
                print(e, file=sys.stderr)
                return 1
            print(f"control plane ready in {cp.timings['total']:.1f}s at {cp.server} "
                  f"(logs in {d}; tools in {cp.bin_dir})", file=sys.stderr)
        try:
            if args.crds:
                t0 = time.monotonic()
                names = cp.install_crds(yaml_files(args.crds))
                print(f"{len(names)} CRDs installed in {time.monotonic() - t0:.1f}s", file=sys.stderr)
            if args.runner:
                cp.start_runner()
        except ControlPlaneError as e:
            print(e, file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={cp.kubeconfig}")
        return 0

    if args.command == "env":
        if not (d / "state.json").exists():
            print(f"no control plane in {d}", file=sys.stderr)
            return 1
        cp = ControlPlane.load(d)
        if not cp.ready():
            print(f"the control plane in {d} is not running", file=sys.stderr)
            return 1
        print(f"export KUBECONFIG={cp.kubeconfig}")
        if cp.bin_dir:
            print(f'export PATH="{cp.bin_dir}:$PATH"')
        return 0

    # down
    if d.exists():
        ControlPlane(d).stop()
        (d / "state.json").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
