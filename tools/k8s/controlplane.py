"""A real Kubernetes control plane on loopback, for tests and for people.

Starts etcd, kube-apiserver and kube-controller-manager (built by build.sh from
pinned Go modules) on free 127.0.0.1 ports, much as controller-runtime's envtest
does, but with the controller-manager too and with production-like settings:
RBAC authorization, service-account token signing, the PodSecurity admission
plugin, client-certificate authentication for an admin kubeconfig.

Without --node there is no scheduler and no kubelet: Pods are admitted but nothing runs them.
With --node a real node runs beside it (tools/k8s/node.py: containerd, kubelet, kube-scheduler,
kube-proxy, CoreDNS; one per machine) and the API server listens on the node's bridge address
instead of loopback.
From the repository root:

    python -m tools.k8s.controlplane up   --dir DIR   # start in the background, wait for readiness
        [--node] [--crds PATH]...                    # with a node; install CRDs
    python -m tools.k8s.controlplane env  --dir DIR   # print `export KUBECONFIG=...` of a running one
    python -m tools.k8s.controlplane down --dir DIR   # stop it (processes named by DIR/*.pid), and its
                                                     # node (DIR/node/*.pid), leaving the machine as it was

Everything lives in DIR: certificates (pki/), etcd's data, one log file per
component, pid files, state.json and the admin kubeconfig (DIR/kubeconfig).
Only the standard library and the `openssl` command are used: the certificates
are tools/k8s/pki.py, the CRDs tools/k8s/crds.py, pid files and ports tools/k8s/base.py.
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tools.k8s.base import ControlPlaneError, die_with_parent, free_port, stop_process, tail, write_pidfile
from tools.k8s.crds import install_crds, yaml_files
from tools.k8s.node import BRIDGE_IP, NODE_NAME, Node, NodeBusy, build_node_tools
from tools.k8s.pki import kubeconfig_text, make_node_pki, make_pki

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
CLUSTER_CIDR = "10.1.0.0/16"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


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
    #: also run a node (tools/k8s/node.py); the API server then listens on the node's bridge address
    node: bool = False
    node_bin_dir: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.pki = self.dir / "pki"
        self.the_node: Node | None = None

    @property
    def address(self) -> str:
        """Where the API server listens: loopback, or the node's bridge address (pods reach it there)."""
        return BRIDGE_IP if self.node else "127.0.0.1"

    # paths and URLs
    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{self.ports['apiserver']}"

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
        if self.the_node is not None:
            out.append(self.the_node.log_tails(lines))
        return "\n".join(out)

    # state
    def _state_file(self) -> Path:
        return self.dir / "state.json"

    def save_state(self) -> None:
        state = {"server": self.server, "ports": self.ports, "bin_dir": str(self.bin_dir),
                 "kubeconfig": str(self.kubeconfig), "node": self.node}
        self._state_file().write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, dir: Path) -> ControlPlane:
        cp = cls(Path(dir))
        state = json.loads(cp._state_file().read_text())
        cp.ports = state["ports"]
        cp.node = bool(state.get("node"))
        cp.bin_dir = Path(state["bin_dir"]) if state.get("bin_dir") not in (None, "None") else None
        return cp

    # HTTP checks with the admin client certificate
    def admin_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def http_get(self, url: str, ctx: ssl.SSLContext | None, accept: str | None = None) -> tuple[int, str]:
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
        status, _ = self.http_get(f"{self.server}/readyz", self.admin_context())
        return status == 200

    def install_crds(self, files: Iterable[Path], timeout: float = 180.0) -> list[str]:
        """Server-side apply the CRDs in YAML files and wait until they are Established; their names."""
        return install_crds(self, files, timeout)

    # start / stop
    def _spawn(self, name: str, args: list[str]) -> None:
        log = open(self.log(name), "ab")
        log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {' '.join(args)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir,
            start_new_session=True,
            preexec_fn=None if self.detach else die_with_parent,
        )
        log.close()
        self.procs[name] = proc
        write_pidfile(self.dir / f"{name}.pid", proc.pid)

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
        """Start it (and the node, with node=True); NodeBusy when another node runs on this machine."""
        if self.bin_dir is None:
            self.bin_dir = build_tools()
        self.dir.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki, SERVICE_IP)
        if self.node:
            make_node_pki(self.pki, SERVICE_IP, NODE_NAME, BRIDGE_IP)
            self.the_node = Node(self.dir, bin_dir=self.node_bin_dir or build_node_tools(), detach=self.detach,
                                 timeout=self.start_timeout)
            self.the_node.prepare()  # the machine lock first: NodeBusy leaves everything as it is
        for attempt in range(3):  # a free port can be taken before we bind it
            try:
                self._start_once()
                if self.the_node is not None:
                    self.the_node.start(self)
                    self.timings["node"] = self.the_node.timings["total"]
                    self.save_state()
                return self
            except ControlPlaneError as e:
                self.stop(keep_node_lock=attempt < 2 and "address already in use" in str(e))
                if "address already in use" not in str(e) or attempt == 2:
                    raise
        return self

    def _start_once(self) -> None:
        t0 = time.monotonic()
        p = self.ports = {n: free_port() for n in ("etcd", "etcd-peer", "apiserver", "controller-manager")}
        if self.node:
            p["apiserver"] = free_port(self.address)
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
        self._wait("etcd /health", lambda: self.http_get(f"{etcd_url}/health", None)[0] == 200, ["etcd"])
        t_etcd = time.monotonic() - t0

        self._spawn("kube-apiserver", [
            f"--etcd-servers={etcd_url}",
            f"--bind-address={self.address}", f"--advertise-address={self.address}",
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
            "--anonymous-auth=true",  # for /readyz etc. (system:public-info-viewer), as in clusters
            "--allow-privileged=true",  # so that PodSecurity, not this flag, refuses privileged Pods
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            *(self._node_apiserver_args() if self.node else [
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=PodSecurity",  # on by default; named to make it plain
                # The `kubernetes` Service cannot have a loopback endpoint; nothing in-cluster needs one.
                "--endpoint-reconciler-type=none",
            ]),
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
        self._wait("kube-controller-manager /healthz", lambda: self.http_get(kcm_url, insecure)[0] == 200,
                   list(COMPONENTS))
        # Its controllers are running once the ServiceAccount controller has made default/default
        # (Pods cannot be created in a namespace before its default ServiceAccount exists).
        sa_url = f"{self.server}/api/v1/namespaces/default/serviceaccounts/default"
        admin = self.admin_context()
        self._wait("the default ServiceAccount", lambda: self.http_get(sa_url, admin)[0] == 200, list(COMPONENTS))
        self.timings = {"etcd": t_etcd, "kube-apiserver": t_api, "total": time.monotonic() - t0}
        self.save_state()

    def _node_apiserver_args(self) -> list[str]:
        pki = self.pki
        return [
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=PodSecurity,NodeRestriction",
            # for logs/exec/port-forward: the kubelet's address, not its name (which the machine's
            # resolver would be asked for), its CA-signed serving certificate, our client certificate
            "--kubelet-preferred-address-types=InternalIP",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        ]

    def _write_kubeconfigs(self) -> None:
        self.kubeconfig.write_text(kubeconfig_text(self.server, self.pki, "admin"))
        self.kubeconfig.chmod(0o600)
        kcm = self.dir / "controller-manager.kubeconfig"
        kcm.write_text(kubeconfig_text(self.server, self.pki, "controller-manager"))
        kcm.chmod(0o600)

    def stop(self, keep_node_lock: bool = False) -> list[str]:
        """Stop the node (if any: it leaves the machine as it was), then every process named by a
        DIR/*.pid file: others (tools/k8s/stack.py's, say) first, etcd last. Returns the node's
        leftovers (empty when clean)."""
        node = None
        if (self.dir / "node").is_dir():
            node = self.the_node or Node(self.dir)
            node.stop_processes()
        order = {"kube-controller-manager": 1, "kube-apiserver": 2, "etcd": 3}
        for pidfile in sorted(self.dir.glob("*.pid"), key=lambda f: order.get(f.stem, 0)):
            stop_process(pidfile, self.procs.pop(pidfile.stem, None))
        left: list[str] = []
        if node is not None and not keep_node_lock:
            left = node.clean()  # the bridge goes now that nothing talks to its address
            # A kubeconfig naming the bridge address would send a client's packets off the machine
            # (by the default route) once the bridge is gone.
            for kc in [self.kubeconfig, *self.dir.glob("*.kubeconfig"), *self.dir.glob("node/*.kubeconfig")]:
                kc.unlink(missing_ok=True)
        return left


# ------------------------------------------------------------------------ CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "down", "env"])
    ap.add_argument("--dir", required=True, type=Path, help="state directory")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for readiness")
    ap.add_argument("--crds", action="append", type=Path, default=[], metavar="PATH",
                    help="up: also install the CRDs in this YAML file or directory (repeatable; "
                         "a path that does not exist is skipped)")
    ap.add_argument("--node", action="store_true",
                    help="up: also run a node (containerd, kubelet, kube-scheduler, kube-proxy, CoreDNS; "
                         "one per machine)")
    args = ap.parse_args(argv)
    d = args.dir.resolve()

    if args.command == "up":
        cp = ControlPlane.load(d) if (d / "state.json").exists() else None
        if cp is None or not cp.ready() or cp.node != args.node:
            if cp is not None:
                cp.stop()  # leftovers of a dead one, or one with(out) a node
            cp = ControlPlane(d, bin_dir=build_tools(), detach=True, start_timeout=args.timeout, node=args.node)
            try:
                cp.start()
            except NodeBusy as e:
                print(e, file=sys.stderr)
                return 1
            except ControlPlaneError as e:
                print(e, file=sys.stderr)
                return 1
            node = f"; node {NODE_NAME} Ready in {cp.timings['node']:.1f}s" if args.node else ""
            print(f"control plane ready in {cp.timings['total']:.1f}s at {cp.server}{node} "
                  f"(logs in {d}; tools in {cp.bin_dir})", file=sys.stderr)
        try:
            if args.crds:
                t0 = time.monotonic()
                names = cp.install_crds(yaml_files(args.crds))
                print(f"{len(names)} CRDs installed in {time.monotonic() - t0:.1f}s", file=sys.stderr)
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
        left = ControlPlane(d).stop()
        (d / "state.json").unlink(missing_ok=True)
        if left:
            print("the node left on the machine:\n  " + "\n  ".join(left), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
