"""A real node beside the control plane: containerd, kubelet, kube-proxy, kube-scheduler, CoreDNS.

Used by `python -m tools.k8s.controlplane up --node` and by the tests' `k8s_node` fixture. The
tools are built by `build.sh node` (kubelet, kube-proxy, kube-scheduler, containerd and its runc
shim, ctr, coredns, the pause and probe images); runc, the CNI plugins (/usr/lib/cni), iptables and
conntrack are Debian packages (`make node-deps`).

Network (every packet stays on this machine): the bridge BRIDGE holds BRIDGE_IP, the gateway
address of POD_SUBNET; the API server, CoreDNS and the kubelet listen there. Pods get an address
in POD_SUBNET from the CNI bridge plugin with isGateway false and ipMasq false: no default route,
their only route beyond the bridge is the Service range via BRIDGE_IP. Nothing enables
ip_forward; the mangle table's FORWARD chain drops anything crossing between the bridge and
another interface all the same.

The node is machine-wide (port 10250, the bridge, cgroups, iptables): one at a time per machine,
guarded by a flock on MACHINE_DIR/lock that the starting process and the kubelet hold; a second
start fails naming the holder. MACHINE_DIR/saved.json keeps what the machine was like before the
first start (sysctls, which well-known paths existed) until a teardown has restored it: every
start first cleans what a crashed node left behind.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.k8s.base import (
    ControlPlaneError,
    die_with_parent,
    free_port,
    start_time,
    stop_pidfile,
    stop_process,
    tail,
    write_pidfile,
)

HERE = Path(__file__).resolve().parent
BUILD_SH = HERE / "build.sh"

BRIDGE = "filedrop0"
POD_SUBNET = "10.1.0.0/24"
BRIDGE_IP = "10.1.0.1"
NODE_NAME = "filedrop-node"
KUBELET_PORT = 10250
CLUSTER_DOMAIN = "cluster.local"
PAUSE_IMAGE = "docker.io/library/filedrop-pause:1"
PROBE_IMAGE = "docker.io/library/filedrop-probe:1"
K8S_NAMESPACE = "k8s.io"  # containerd's namespace for the CRI's images and containers
CNI_BIN_DIR = "/usr/lib/cni"
CNI_NETWORK = "filedrop"
RUNC = "/usr/sbin/runc"

MACHINE_DIR = Path("/run/filedrop-node")
#: sysctls the kubelet, kube-proxy or the CNI plugins may change; restored by teardown
SYSCTLS = (
    "vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding", "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
    "net/netfilter/nf_conntrack_tcp_timeout_close_wait",
)
#: machine paths the node's components create whatever their configuration (the kubelet's device
#: plugins and container log links, containerd's shim sockets, libcni's cache); removed by teardown
#: when they did not exist before
MACHINE_PATHS = ("/var/lib/kubelet", "/var/log/containers", "/var/log/pods", "/run/containerd", "/var/lib/cni")
CGROUP_ROOT = Path("/sys/fs/cgroup")
IPTABLES_TABLES = ("filter", "nat", "mangle", "raw")
OUR_CHAIN_PREFIXES = ("KUBE-", "FILEDROP-")
NODE_COMPONENTS = ("containerd", "kubelet", "kube-scheduler", "kube-proxy", "coredns")


class NodeBusy(ControlPlaneError):
    """Another node runs on this machine."""


def build_node_tools(quiet: bool = False) -> Path:
    """Run `build.sh node` (fast when built) and return its bin directory; FILEDROP_K8S_NODE_BIN overrides."""
    override = os.environ.get("FILEDROP_K8S_NODE_BIN")
    if override:
        return Path(override)
    proc = subprocess.run(["bash", str(BUILD_SH), "node"], stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL if quiet else None, text=True,
                          env={**os.environ, "PYTHON": os.environ.get("PYTHON", sys.executable)})
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise ControlPlaneError(f"{BUILD_SH} node failed with exit code {proc.returncode}")
    return Path(lines[-1])


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise ControlPlaneError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def _json(data: object) -> str:
    return json.dumps(data, indent=2) + "\n"  # JSON is YAML


# ------------------------------------------------------------------ machine-wide state


def _read_sysctl(name: str) -> str | None:
    try:
        return (Path("/proc/sys") / name).read_text().strip()
    except OSError:
        return None


def _processes() -> dict[int, tuple[str, str]]:
    """pid -> (exe path, command line) of every process we can see."""
    out = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            exe = os.readlink(p / "exe")
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(p.name)] = (exe, cmd)
    return out


def _node_binary(exe: str) -> str | None:
    """The component name when exe is one of build.sh node's binaries (any version)."""
    path = Path(exe.removesuffix(" (deleted)"))
    if path.parent.name == "bin" and path.parent.parent.name.startswith("k8s-node-"):
        return path.name
    return None


def lock_holders() -> list[str]:
    """'pid command' of the processes holding MACHINE_DIR/lock open."""
    lock = str(MACHINE_DIR / "lock")
    out = []
    for pid, (_, cmd) in _processes().items():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == lock:
                    out.append(f"{pid} {cmd[:120]}")
                    break
            except OSError:
                continue
    return out


def _cgroup_dirs() -> list[Path]:
    """Every kubepods cgroup directory, deepest first, in every mounted hierarchy."""
    out: list[Path] = []
    if not CGROUP_ROOT.is_dir():
        return out
    for hierarchy in CGROUP_ROOT.iterdir():
        top = hierarchy / "kubepods"
        if top.is_dir():
            for root, _dirs, _files in os.walk(top, topdown=False):
                out.append(Path(root))
    return out


def _is_pause(pid: int) -> bool:
    """Whether pid runs a pod sandbox's pause binary (False once it has exited)."""
    try:
        return os.readlink(f"/proc/{pid}/exe").endswith("/pause")
    except OSError:
        return False


def _pod_pids() -> set[int]:
    pids: set[int] = set()
    for d in _cgroup_dirs():
        try:
            pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        except (OSError, ValueError):
            continue
    pids.discard(os.getpid())
    return pids


def _kill_and_wait(pids: set[int], sig: int, timeout: float) -> set[int]:
    """Send sig to pids; wait until they are gone; the ones left."""
    started = {p: start_time(p) for p in pids}
    for p in pids:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    while True:
        left = {p for p in pids if started[p] is not None and start_time(p) == started[p]}
        for p in left:
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)  # polling processes' exit


def _mountpoints_under(prefixes: list[str]) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mp = line.split()[4].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n")
        if any(mp == p or mp.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(mp)
    return sorted(set(out), key=lambda m: m.count("/"), reverse=True)


def _iptables_cleanup() -> None:
    """Delete the chains named KUBE-* and FILEDROP-* (kube-proxy's, the kubelet's, ours), IPv4 and IPv6,
    and the rules of other chains that jump to them."""
    for tool in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            proc = _run(tool, "-w", "5", "-t", table, "-S", check=False)
            if proc.returncode != 0:
                continue
            ours = [line.split()[1] for line in proc.stdout.splitlines()
                    if line.startswith("-N ") and line.split()[1].startswith(OUR_CHAIN_PREFIXES)]
            for line in proc.stdout.splitlines():
                words = line.split()
                if words[:1] == ["-A"] and not words[1].startswith(OUR_CHAIN_PREFIXES) and any(
                        w in ours for w in words[2:]):
                    _run(tool, "-w", "5", "-t", table, "-D", *words[1:], check=False)
            for chain in ours:
                _run(tool, "-w", "5", "-t", table, "-F", chain, check=False)
            for chain in ours:
                _run(tool, "-w", "5", "-t", table, "-X", chain, check=False)


def _our_chains() -> list[str]:
    found = []
    for tool in ("iptables", "ip6tables"):
        for table in IPTABLES_TABLES:
            proc = _run(tool, "-w", "5", "-t", table, "-S", check=False)
            found += [f"{tool} -t {table} {line.split()[1]}" for line in proc.stdout.splitlines()
                      if line.startswith("-N ") and line.split()[1].startswith(OUR_CHAIN_PREFIXES)]
    return found


def leftovers() -> list[str]:
    """What a node leaves on the machine, as a list of descriptions; empty once torn down."""
    found = []
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += _our_chains()
    found += [f"cgroup {d}" for d in _cgroup_dirs()]
    found += [f"process {pid} {cmd[:80]}" for pid, (exe, cmd) in _processes().items() if _node_binary(exe)]
    saved = _load_saved()
    if saved:
        for name, value in saved["sysctls"].items():
            if value is not None and _read_sysctl(name) != value:
                found.append(f"sysctl {name}={_read_sysctl(name)} (was {value})")
        found += [f"path {p}" for p in MACHINE_PATHS if not saved["paths"].get(p) and Path(p).exists()]
    return found


def _load_saved() -> dict | None:
    try:
        return json.loads((MACHINE_DIR / "saved.json").read_text())
    except (OSError, ValueError):
        return None


def save_machine_state() -> None:
    """Remember the sysctls and which MACHINE_PATHS exist, unless a crashed node's record is there."""
    MACHINE_DIR.mkdir(parents=True, exist_ok=True)
    if _load_saved() is not None:
        return
    state = {"sysctls": {n: _read_sysctl(n) for n in SYSCTLS},
             "paths": {p: Path(p).exists() for p in MACHINE_PATHS}}
    tmp = MACHINE_DIR / "saved.json.partial"
    tmp.write_text(_json(state))
    tmp.replace(MACHINE_DIR / "saved.json")


def clean_machine(dirs: list[Path], bin_dir: Path | None = None) -> list[str]:
    """Undo everything a node (running or crashed) did to the machine, whatever its cluster directory.

    dirs: cluster directories whose mounts are to be unmounted (the node's state lives there).
    Returns what could not be cleaned (empty when the machine is as it was).
    """
    # 0. the control planes of these directories (a crashed node's): nothing may talk to the
    #    bridge address once the bridge is gone, the packets would take the default route
    for d in dirs:
        for pidfile in [*Path(d).glob("node/*.pid"), *Path(d).glob("*.pid")]:
            stop_pidfile(pidfile)
    procs = _processes()
    # 1. the kubelet first (it would restart pods), then the other node daemons but containerd
    for names in (("kubelet",), ("kube-proxy", "kube-scheduler", "coredns")):
        _kill_and_wait({p for p, (exe, _) in procs.items() if _node_binary(exe) in names}, signal.SIGTERM, 10)
    # 2. the pods' processes, then containerd and its shims
    for _ in range(3):  # a shim may still be starting a container
        pids = _pod_pids()
        if not pids:
            break
        _kill_and_wait(pids, signal.SIGKILL, 10)
    procs = _processes()
    _kill_and_wait({p for p, (exe, _) in procs.items() if _node_binary(exe) == "containerd"}, signal.SIGTERM, 10)
    _kill_and_wait({p for p, (exe, _) in _processes().items() if _node_binary(exe)}, signal.SIGKILL, 10)
    # 3. mounts: containers' rootfs and shm, pod volumes, network namespaces, the kubelet's root bind mount
    prefixes = [str(Path(d).resolve()) for d in dirs] + list(MACHINE_PATHS) + ["/run/netns/cni-"]
    for mp in _mountpoints_under(prefixes) + [m for m in _mountpoints_under(["/run/netns"]) if "/cni-" in m]:
        if _run("umount", mp, check=False).returncode != 0:
            _run("umount", "-l", mp, check=False)
    # 4. iptables: kube-proxy's own cleanup, then every KUBE-*/FILEDROP-* chain left (the kubelet's)
    if bin_dir and (bin_dir / "kube-proxy").exists():
        _run(str(bin_dir / "kube-proxy"), "--cleanup", "--v=0", check=False)
    _iptables_cleanup()
    # 5. cgroups, depth first
    for d in _cgroup_dirs():
        try:
            d.rmdir()
        except OSError:
            pass
    # 6. the bridge (with it go its addresses, routes and per-interface sysctls)
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        _run("ip", "link", "del", BRIDGE, check=False)
    # 7. sysctls and machine paths as they were
    saved = _load_saved()
    if saved:
        for name, value in saved["sysctls"].items():
            if value is not None and _read_sysctl(name) != value:
                try:
                    (Path("/proc/sys") / name).write_text(value + "\n")
                except OSError:
                    pass
        for path in MACHINE_PATHS:
            if not saved["paths"].get(path) and Path(path).exists():
                _run("rm", "-rf", "--one-file-system", path, check=False)
    for sock in MACHINE_DIR.glob("containerd.sock*"):
        sock.unlink(missing_ok=True)
    left = leftovers()
    if not left:
        (MACHINE_DIR / "saved.json").unlink(missing_ok=True)
    return left


# ------------------------------------------------------------------ the node


@dataclass
class Node:
    """The node of the control plane in `dir` (its state in dir/node, logs in dir/<component>.log)."""

    dir: Path
    bin_dir: Path | None = None
    detach: bool = False
    timeout: float = 120.0
    dns: bool = True
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)
    _lock_fd: int | None = None

    def __post_init__(self) -> None:
        self.dir = Path(self.dir).resolve()
        self.state = self.dir / "node"
        self.pki = self.dir / "pki"

    # paths
    @property
    def containerd_socket(self) -> Path:
        # machine-wide like the node, and short: a unix socket's path has at most 104 bytes
        return MACHINE_DIR / "containerd.sock"

    def log(self, component: str) -> Path:
        return self.dir / f"{component}.log"

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"----- {self.log(c)} (last {lines} lines) -----\n{tail(self.log(c), lines)}"
                         for c in NODE_COMPONENTS if self.log(c).exists())

    # the machine lock
    def acquire(self) -> None:
        """Take the machine's node lock, or raise NodeBusy naming who holds it."""
        if self._lock_fd is not None:
            return
        MACHINE_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(MACHINE_DIR / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                owner = json.loads((MACHINE_DIR / "owner.json").read_text())
            except (OSError, ValueError):
                owner = {}
            holders = "\n  ".join(lock_holders()) or "(unknown)"
            raise NodeBusy(
                f"a filedrop node already runs on this machine (one per machine: port {KUBELET_PORT}, "
                f"bridge {BRIDGE}, cgroups and iptables are machine-wide).\n"
                f"Its cluster directory: {owner.get('dir', '?')} (started {owner.get('started', '?')} "
                f"by pid {owner.get('pid', '?')}: {owner.get('command', '?')})\n"
                f"Processes holding {MACHINE_DIR / 'lock'}:\n  {holders}\n"
                f"Stop it with: python -m tools.k8s.controlplane down --dir {owner.get('dir', 'DIR')}"
            ) from None
        self._lock_fd = fd
        cmdline = Path("/proc/self/cmdline").read_bytes().decode(errors="replace").replace("\0", " ")
        owner = {"dir": str(self.dir), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                 "command": cmdline.strip()[:200]}
        (MACHINE_DIR / "owner.json").write_text(_json(owner))

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # before the control plane starts
    def prepare(self) -> None:
        """Lock the machine, clean a crashed node's leftovers, make the bridge and the FORWARD guard."""
        if self.bin_dir is None:
            self.bin_dir = build_node_tools()
        self.acquire()
        try:
            previous = []
            try:
                previous.append(Path(json.loads((MACHINE_DIR / "owner.json").read_text())["dir"]))
            except (OSError, ValueError, KeyError):
                pass
            left = clean_machine([*previous, self.dir], self.bin_dir)
            if left:
                raise ControlPlaneError("could not clean a previous node's leftovers:\n  " + "\n  ".join(left))
            save_machine_state()
            self.state.mkdir(parents=True, exist_ok=True)
            _run("ip", "link", "add", BRIDGE, "type", "bridge")
            _run("ip", "addr", "add", f"{BRIDGE_IP}/{POD_SUBNET.split('/')[1]}", "dev", BRIDGE)
            _run("ip", "link", "set", BRIDGE, "up")
            # Whatever enables forwarding later, nothing crosses between the bridge and another
            # interface (mangle's FORWARD runs before filter's, where kube-proxy inserts its ACCEPTs).
            for tool in ("iptables", "ip6tables"):
                _run(tool, "-w", "5", "-t", "mangle", "-N", "FILEDROP-FORWARD")
                _run(tool, "-w", "5", "-t", "mangle", "-A", "FILEDROP-FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE,
                     "-j", "DROP")
                _run(tool, "-w", "5", "-t", "mangle", "-A", "FILEDROP-FORWARD", "-o", BRIDGE, "!", "-i", BRIDGE,
                     "-j", "DROP")
                _run(tool, "-w", "5", "-t", "mangle", "-I", "FORWARD", "1", "-j", "FILEDROP-FORWARD")
        except BaseException:
            self.release()
            raise

    # after the control plane is up
    def start(self, cp) -> None:
        """Start containerd, the kubelet, kube-scheduler, kube-proxy and CoreDNS; wait for the Node to be Ready."""
        from tools.k8s.pki import kubeconfig_text

        t0 = time.monotonic()
        self.server = cp.server
        for user in ("kubelet", "kube-scheduler", "kube-proxy", "coredns"):
            f = self.state / f"{user}.kubeconfig"
            f.write_text(kubeconfig_text(cp.server, self.pki, user))
            f.chmod(0o600)
        self._start_containerd()
        for image in ("pause", "probe"):
            self.import_image(self.bin_dir / "images" / f"{image}.tar")
        t_ctd = time.monotonic() - t0
        self._start_kubelet()
        self._wait("the Node to be Ready", lambda: self._node_ready(cp), ["containerd", "kubelet"])
        t_ready = time.monotonic() - t0
        self._start_scheduler(cp)
        self._start_proxy()
        if self.dns:
            self._start_coredns(cp)
        self.timings = {"containerd": t_ctd, "node-ready": t_ready, "total": time.monotonic() - t0}
        (self.state / "state.json").write_text(_json({"ports": self.ports, "bin_dir": str(self.bin_dir),
                                                      "timings": self.timings}))

    def _spawn(self, name: str, args: list[str], pass_lock: bool = False) -> None:
        log = open(self.log(name), "ab")
        log.write(f"\n===== {time.strftime('%Y-%m-%dT%H:%M:%S')} {name} {' '.join(args)}\n".encode())
        log.flush()
        fds = (self._lock_fd,) if pass_lock and self._lock_fd is not None else ()
        proc = subprocess.Popen(
            [str(self.bin_dir / name), *args],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.state,
            start_new_session=True, pass_fds=fds,
            preexec_fn=None if self.detach else die_with_parent,
            env={**os.environ, "PATH": f"{self.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"},
        )
        log.close()
        self.procs[name] = proc
        write_pidfile(self.state / f"{name}.pid", proc.pid)

    def _wait(self, what: str, check, components: list[str]) -> None:
        deadline = time.monotonic() + self.timeout
        while not check():
            for c in components:
                rc = self.procs[c].poll()
                if rc is not None:
                    raise ControlPlaneError(f"{c} exited with code {rc} while waiting for {what}\n"
                                            + self.log_tails())
            if time.monotonic() > deadline:
                raise ControlPlaneError(f"timed out after {self.timeout:.0f}s waiting for {what}\n"
                                        + self.log_tails())
            time.sleep(0.1)  # poll interval

    def ctr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return _run(str(self.bin_dir / "ctr"), "--address", str(self.containerd_socket), "-n", K8S_NAMESPACE,
                    *args, timeout=timeout)

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI image archive (`ctr images import`) for the kubelet's pods; the image names."""
        before = set(self.ctr("images", "ls", "-q").stdout.split())
        self.ctr("images", "import", str(archive), timeout=600)
        after = set(self.ctr("images", "ls", "-q").stdout.split())
        names = sorted(n for n in after - before if not n.startswith("sha256:"))  # (the CRI's id refs)
        return names or sorted(n for n in after if not n.startswith("sha256:"))

    def _start_containerd(self) -> None:
        c = self.state / "containerd"
        (c / "certs.d" / "_default").mkdir(parents=True, exist_ok=True)
        # No registry is reachable: any pull goes to a closed loopback port, never off the machine.
        (c / "certs.d" / "_default" / "hosts.toml").write_text('server = "https://127.0.0.1:9"\n')
        net = self.state / "cni" / "net.d"
        net.mkdir(parents=True, exist_ok=True)
        from tools.k8s.controlplane import SERVICE_CIDR

        (net / "10-filedrop.conflist").write_text(_json({
            "cniVersion": "1.0.0", "name": CNI_NETWORK,
            "plugins": [{
                "type": "bridge", "bridge": BRIDGE, "isGateway": False, "isDefaultGateway": False,
                "ipMasq": False, "hairpinMode": True,
                "ipam": {"type": "host-local", "dataDir": str(self.state / "cni" / "ipam"),
                         "ranges": [[{"subnet": POD_SUBNET, "rangeStart": "10.1.0.10", "gateway": BRIDGE_IP}]],
                         # the pods' only route off their subnet: the Services, via the node
                         "routes": [{"dst": SERVICE_CIDR, "gw": BRIDGE_IP}]},
            }],
        }))
        (c / "config.toml").write_text(f"""\
version = 3
root = '{c / "root"}'
state = '{c / "state"}'
imports = []
disabled_plugins = ['io.containerd.nri.v1.nri', 'io.containerd.tracing.processor.v1.otlp',
                    'io.containerd.internal.v1.tracing']

[grpc]
  address = '{self.containerd_socket}'

[ttrpc]
  address = '{self.containerd_socket}.ttrpc'

[plugins]
  [plugins.'io.containerd.internal.v1.opt']
    path = '{c / "opt"}'
  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{PAUSE_IMAGE}'
    [plugins.'io.containerd.cri.v1.images'.registry]
      config_path = '{c / "certs.d"}'
  [plugins.'io.containerd.cri.v1.runtime']
    enable_selinux = false
    # runc cannot lower oom_score_adj here (no CAP_SYS_RESOURCE): without this every sandbox fails
    restrict_oom_score_adj = true
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = '{RUNC}'
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['{CNI_BIN_DIR}']
      conf_dir = '{net}'
      max_conf_num = 1
      use_internal_loopback = true
""")
        self._spawn("containerd", ["--config", str(c / "config.toml")])

        def up() -> bool:
            if not self.containerd_socket.exists():
                return False
            return _run(str(self.bin_dir / "ctr"), "--address", str(self.containerd_socket), "version",
                        check=False).returncode == 0
        self._wait("containerd", up, ["containerd"])

    def _start_kubelet(self) -> None:
        pki = self.pki
        kubelet_dir = self.state / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": BRIDGE_IP, "port": KUBELET_PORT, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "tlsCertFile": str(pki / "kubelet-serving.crt"), "tlsPrivateKeyFile": str(pki / "kubelet-serving.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            # the host has cgroup v1 (cgroup2 only at /sys/fs/cgroup/unified) and no systemd
            "failCgroupV1": False, "cgroupDriver": "cgroupfs",
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "failSwapOn": False,
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [BRIDGE_IP] if self.dns else [],
            "resolvConf": "",  # pods never get the machine's resolvers
            "podLogsDir": str(self.state / "pod-logs"),
            # No registry is reachable: an image the kubelet deletes can never be pulled again. Image GC is
            # off (100), and the disk counts as full only when almost nothing is left: the machine may
            # reserve most of its free blocks, so a percentage of capacity can be crossed at rest.
            "evictionHard": {"memory.available": "64Mi", "nodefs.available": "256Mi", "nodefs.inodesFree": "1%",
                             "imagefs.available": "256Mi"},
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 90,
            "serializeImagePulls": False,
            "shutdownGracePeriod": "0s",
            "containerLogMaxSize": "10Mi",
            "rotateCertificates": False, "serverTLSBootstrap": False,
        }
        (self.state / "kubelet.yaml").write_text(_json(config))
        self._spawn("kubelet", [
            f"--config={self.state / 'kubelet.yaml'}",
            f"--kubeconfig={self.state / 'kubelet.kubeconfig'}",
            f"--root-dir={kubelet_dir}",
            f"--cert-dir={self.state / 'kubelet-certs'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={BRIDGE_IP}",
            "--v=1",
        ], pass_lock=True)  # the lock stays held while the kubelet runs, also when detached

    def _node_ready(self, cp) -> bool:
        status, body = cp.http_get(f"{cp.server}/api/v1/nodes/{NODE_NAME}", cp.admin_context())
        if status != 200:
            return False
        conds = json.loads(body).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    def _start_scheduler(self, cp) -> None:
        self.ports["kube-scheduler"] = port = free_port()
        kc = str(self.state / "kube-scheduler.kubeconfig")
        self._spawn("kube-scheduler", [
            f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
            "--bind-address=127.0.0.1", f"--secure-port={port}", "--leader-elect=false",
            f"--cert-dir={self.state / 'kube-scheduler-certs'}", "--profiling=false", "--v=1",
        ])

    def _start_proxy(self) -> None:
        self.ports["kube-proxy-healthz"] = healthz = free_port()
        self.ports["kube-proxy-metrics"] = metrics = free_port()
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(self.state / "kube-proxy.kubeconfig")},
            "mode": "iptables", "clusterCIDR": POD_SUBNET, "hostnameOverride": NODE_NAME,
            "healthzBindAddress": f"127.0.0.1:{healthz}", "metricsBindAddress": f"127.0.0.1:{metrics}",
            "nodePortAddresses": [f"{BRIDGE_IP}/32"],  # never on the machine's other interfaces
            # leave the machine's conntrack settings alone; no route_localnet
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False, "masqueradeAll": False},
        }
        (self.state / "kube-proxy.yaml").write_text(_json(config))
        self._spawn("kube-proxy", [f"--config={self.state / 'kube-proxy.yaml'}", "--v=1"])

    def _start_coredns(self, cp) -> None:
        # Its client certificate's user may read what the kubernetes plugin watches.
        rbac = {"apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "filedrop:coredns"},
             "rules": [{"apiGroups": [""], "resources": ["services", "pods", "namespaces", "endpoints"],
                        "verbs": ["list", "watch"]},
                       {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                        "verbs": ["list", "watch"]}]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
             "metadata": {"name": "filedrop:coredns"},
             "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "filedrop:coredns"},
             "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "filedrop:coredns"}]},
        ]}
        proc = subprocess.run([str(cp.bin_dir / "kubectl"), "apply", "--server-side", "-f", "-"],
                              input=json.dumps(rbac), capture_output=True, text=True, env=cp.env(), timeout=60)
        if proc.returncode != 0:
            raise ControlPlaneError(f"kubectl apply (CoreDNS's RBAC) failed: {proc.stderr}")
        self.ports["coredns-health"] = health = free_port()
        self.ports["coredns-ready"] = ready = free_port()
        (self.state / "Corefile").write_text(f"""\
{CLUSTER_DOMAIN}:53 in-addr.arpa:53 ip6.arpa:53 {{
    bind {BRIDGE_IP}
    errors
    health 127.0.0.1:{health}
    ready 127.0.0.1:{ready}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        kubeconfig {self.state / 'coredns.kubeconfig'} filedrop-test
        pods insecure
    }}
    cache 5
}}
""")
        self._spawn("coredns", ["-conf", str(self.state / "Corefile")])
        self._wait("CoreDNS /ready", lambda: cp.http_get(f"http://127.0.0.1:{ready}/ready", None)[0] == 200,
                   ["coredns"])

    # stop
    def stop(self) -> list[str]:
        """Stop the node's processes, then clean the machine (unless another node runs now, having
        taken over after ours died); what is left over (empty when the machine is as it was)."""
        self.stop_processes()
        return self.clean()

    def clean(self) -> list[str]:
        """Clean the machine after stop_processes() and the control plane's stop (nothing may still
        talk to the bridge address when the bridge goes: it would be routed off the machine)."""
        try:
            self.acquire()  # free once our kubelet is gone, unless another node runs now
        except NodeBusy:
            return []  # the machine is another node's: leave it alone
        bin_dir = self.bin_dir
        if bin_dir is None:
            try:
                bin_dir = Path(json.loads((self.state / "state.json").read_text())["bin_dir"])
            except (OSError, ValueError, KeyError):
                bin_dir = None
        try:
            left = clean_machine([self.dir], bin_dir)
            (MACHINE_DIR / "owner.json").unlink(missing_ok=True)
        finally:
            self.release()
        if not left:
            self._drop_image_store()
        return left

    def _drop_image_store(self) -> None:
        """Remove containerd's content and snapshots (gigabytes of imported images: every node imports
        them afresh) once nothing is mounted below them; the logs stay for a failure report."""
        c = self.state / "containerd"
        if _mountpoints_under([str(c.resolve())]):
            return
        for sub in ("root", "state"):
            _run("rm", "-rf", "--one-file-system", str(c / sub), check=False)

    def stop_processes(self) -> None:
        """Stop the node's processes (SIGTERM by pid file; the pods are killed before containerd)."""
        order = {"kubelet": 0, "kube-proxy": 1, "kube-scheduler": 1, "coredns": 1, "containerd": 3}
        for pidfile in sorted(self.state.glob("*.pid"), key=lambda f: order.get(f.stem, 2)):
            if pidfile.stem == "containerd":
                for _ in range(3):  # the pods before containerd
                    pids = _pod_pids()
                    if not pids:
                        break
                    _kill_and_wait(pids, signal.SIGKILL, 10)
            stop_process(pidfile, self.procs.pop(pidfile.stem, None))

    # for tests
    def pod_pids(self, pod_uid: str) -> list[int]:
        """The pids of a pod's processes (its sandbox's pause first), from its cgroup (cgroupfs driver)."""
        pids: list[int] = []
        for qos in ("", "burstable", "besteffort"):
            base = CGROUP_ROOT / "pids" / "kubepods" / qos / f"pod{pod_uid}"
            if base.is_dir():
                for root, _dirs, _files in os.walk(base):
                    try:
                        pids += [int(x) for x in (Path(root) / "cgroup.procs").read_text().split()]
                    except OSError:
                        continue
        return sorted(pids, key=lambda p: (not _is_pause(p), p))

    def container_pids(self, pod_uid: str) -> list[int]:
        """The pids of a pod's containers' processes: its pids without the sandbox's pause."""
        return [p for p in self.pod_pids(pod_uid) if not _is_pause(p)]

    def rss_mib(self) -> dict[str, float]:
        """Resident memory of each node component (MiB), from /proc."""
        out = {}
        for pidfile in self.state.glob("*.pid"):
            try:
                pid = int(pidfile.read_text().split()[0])
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        out[pidfile.stem] = int(line.split()[1]) / 1024
            except (OSError, ValueError):
                continue
        return out
