"""The real node (tools/k8s/node.py): Ready, runs Jobs, `kubectl logs/exec`, cluster DNS and the
`kubernetes` Service from pods, pods' network confined to the bridge, one node per machine, a crashed
node cleaned by the next start, and a teardown that leaves the machine as it was.

The tests run in file order on one module-scoped node; the last ones tear it down.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.k8s.cluster import Cluster, registered, start_node_cluster, wait_for
from tools.k8s import controlplane
from tools.k8s import node as nodemod
from tools.k8s.base import start_time

pytestmark = pytest.mark.k8s

PROBE = nodemod.PROBE_IMAGE


def _sysctls_before() -> dict[str, str | None]:
    """The machine's sysctls before any node (a crashed node's record of them, if there is one)."""
    saved = nodemod.MACHINE_DIR / "saved.json"
    if saved.exists():
        return json.loads(saved.read_text())["sysctls"]
    return {n: (Path("/proc/sys") / n).read_text().strip() if (Path("/proc/sys") / n).exists() else None
            for n in nodemod.SYSCTLS}


SYSCTLS_BEFORE = _sysctls_before()  # at collection, before the module's node starts


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory):
    cluster = start_node_cluster(tmp_path_factory.mktemp("k8s-node"))
    with registered(cluster):  # failure reports show this cluster's logs
        try:
            yield cluster
        finally:
            cluster.cp.stop()


@pytest.fixture
def ns(node_cluster):
    name = node_cluster.create_namespace()
    yield name
    node_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def details(cluster) -> str:
    return cluster.log_tails(20)


def job(name: str, args: list[str]) -> dict:
    return {
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "probe", "image": PROBE, "imagePullPolicy": "Never", "args": args}],
        }}},
    }


def run_job(cluster, ns: str, args: list[str], timeout: float = 60) -> tuple[str, float]:
    """Apply a probe Job, wait for it to complete; its logs and apply→Complete seconds."""
    name = f"probe-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(job(name, args)))

    def complete():
        status = cluster.kubectl_json("get", "job", name, "-n", ns).get("status", {})
        if status.get("failed"):
            logs = cluster.kubectl("logs", "-n", ns, f"job/{name}", check=False)
            raise AssertionError(f"job {name} failed: {logs.stdout}{logs.stderr}")
        return any(c["type"] == "Complete" and c["status"] == "True" for c in status.get("conditions", []))
    wait_for(complete, timeout, f"job {name} to complete", interval=0.2, details=lambda: details(cluster))
    elapsed = time.monotonic() - t0
    return cluster.kubectl("logs", "-n", ns, f"job/{name}").stdout, elapsed


def running_pod(cluster, ns: str, name: str = "sleeper") -> dict:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [
               {"name": "probe", "image": PROBE, "imagePullPolicy": "Never", "args": ["sleep"]}]}}
    cluster.kubectl("apply", "-n", ns, "-f", "-", input=json.dumps(pod))
    return wait_for(lambda: (p := cluster.kubectl_json("get", "pod", name, "-n", ns))["status"].get("phase")
                    == "Running" and p, 60, f"pod {name} to run", interval=0.2, details=lambda: details(cluster))


def in_pod_netns(pid: int, *cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", *cmd], capture_output=True, text=True, timeout=10)


def host_addresses() -> list[str]:
    """The machine's own IPv4 addresses outside the bridge and loopback (never contacted: route lookups only)."""
    out = json.loads(subprocess.run(["ip", "-j", "-4", "addr"], capture_output=True, text=True, check=True).stdout)
    return [a["local"] for link in out if link["ifname"] not in ("lo", nodemod.BRIDGE)
            for a in link.get("addr_info", [])]


# ---------------------------------------------------------------------------------------- tests


def test_node_is_ready_on_the_bridge_address(node_cluster):
    n = node_cluster.kubectl_json("get", "node", nodemod.NODE_NAME)
    ready = {c["type"]: c["status"] for c in n["status"]["conditions"]}
    assert ready["Ready"] == "True", n["status"]["conditions"]
    assert {"type": "InternalIP", "address": nodemod.BRIDGE_IP} in n["status"]["addresses"]
    assert n["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.2.")
    assert node_cluster.server.startswith(f"https://{nodemod.BRIDGE_IP}:")
    # the `kubernetes` Service has an endpoint now: the API server on the bridge address
    slices = node_cluster.kubectl_json("get", "endpointslices", "-n", "default",
                                       "-l", "kubernetes.io/service-name=kubernetes")
    assert [e["addresses"] for e in slices["items"][0]["endpoints"]] == [[nodemod.BRIDGE_IP]]


def test_the_kubelet_keeps_the_imported_images_until_the_disk_is_really_full(node_cluster):
    # No registry is reachable: an image the kubelet deleted to free disk can never be pulled again, and
    # every pod after it fails (seen in CI: the machine reserves most free blocks, so the kubelet saw the
    # disk 91% used at rest and its image GC removed the filedrop images mid-run).
    config = json.loads(node_cluster.kubectl(
        "get", "--raw", f"/api/v1/nodes/{nodemod.NODE_NAME}/proxy/configz").stdout)["kubeletconfig"]
    assert config["imageGCHighThresholdPercent"] == 100  # image GC off
    for threshold in ("nodefs.available", "imagefs.available"):  # evict only when almost nothing is left
        assert not config["evictionHard"][threshold].endswith("%"), config["evictionHard"]


def test_a_job_completes_and_kubectl_logs_works(node_cluster, ns):
    logs, elapsed = run_job(node_cluster, ns, ["hello", "node"])
    assert "probe: hello from probe-" in logs and ": hello node" in logs
    print(f"probe Job apply -> Complete: {elapsed:.1f}s")
    assert elapsed < 30


def test_pods_reach_the_api_server_through_its_service_and_cluster_dns(node_cluster, ns):
    logs, _ = run_job(node_cluster, ns, ["resolve", "kubernetes.default.svc.cluster.local"])
    assert logs.split() == ["kubernetes.default.svc.cluster.local", controlplane.SERVICE_IP]
    logs, _ = run_job(node_cluster, ns, ["resolve", "kubernetes.default"])  # the search path
    assert logs.split()[1:] == [controlplane.SERVICE_IP]
    logs, _ = run_job(node_cluster, ns, ["connect", f"{controlplane.SERVICE_IP}:443"])
    assert logs.startswith(f"connected to {controlplane.SERVICE_IP}:443 from 10.1.0.")


def test_kubectl_exec_works(node_cluster, ns):
    running_pod(node_cluster, ns)
    out = node_cluster.kubectl("exec", "-n", ns, "sleeper", "--", "/probe", "exec", "works").stdout
    assert ": exec works" in out


def test_pod_network_has_no_way_off_the_machine(node_cluster, ns):
    pod = running_pod(node_cluster, ns, "netcheck")
    pids = node_cluster.node.pod_pids(pod["metadata"]["uid"])
    assert pids, "no processes in the pod's cgroup"
    routes = in_pod_netns(pids[0], "ip", "-4", "route")
    assert routes.returncode == 0, routes.stderr
    lines = sorted(line.split(" proto")[0].strip() for line in routes.stdout.splitlines())
    assert not any(line.startswith("default") for line in lines), routes.stdout
    assert lines == [f"{controlplane.SERVICE_CIDR} via {nodemod.BRIDGE_IP} dev eth0",
                     f"{nodemod.POD_SUBNET} dev eth0"], routes.stdout
    assert "default" not in in_pod_netns(pids[0], "ip", "-6", "route").stdout
    # Route lookups only (nothing is sent): the machine's other addresses and a documentation
    # address are unreachable from the pod; the bridge address is on-link.
    for target in [*host_addresses(), "198.51.100.7"]:
        lookup = in_pod_netns(pids[0], "ip", "route", "get", target)
        assert lookup.returncode != 0 and "unreachable" in lookup.stderr, (target, lookup.stdout, lookup.stderr)
    assert in_pod_netns(pids[0], "ip", "route", "get", nodemod.BRIDGE_IP).returncode == 0
    # the node never turned forwarding on, and the bridge's FORWARD guard is there anyway
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() == "0"
    guard = subprocess.run(["iptables", "-w", "5", "-t", "mangle", "-S", "FILEDROP-FORWARD"],
                           capture_output=True, text=True).stdout
    assert f"-i {nodemod.BRIDGE} ! -o {nodemod.BRIDGE} -j DROP" in guard


def test_a_second_node_on_the_machine_is_refused(node_cluster, tmp_path):
    second = controlplane.ControlPlane(tmp_path / "second", bin_dir=node_cluster.bin_dir, node=True)
    with pytest.raises(nodemod.NodeBusy) as e:
        second.start()
    assert str(node_cluster.cp.dir) in str(e.value)
    assert "down --dir" in str(e.value)
    assert not (tmp_path / "second" / "etcd.pid").exists()
    wait_for(lambda: node_cluster.kubectl_json("get", "node", nodemod.NODE_NAME)["status"]["conditions"], 10,
             "the first node to be untouched")


def node_memory(cluster) -> dict[str, float]:
    rss = dict(cluster.node.rss_mib())
    for c in controlplane.COMPONENTS:
        pid = int((cluster.cp.dir / f"{c}.pid").read_text().split()[0])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss[c] = int(line.split()[1]) / 1024
    return rss


def test_a_crashed_node_is_cleaned_by_the_next_start(node_cluster, tmp_path):
    # (no `ns` fixture: nothing may talk to this cluster's API server after its bridge is gone)
    running_pod(node_cluster, node_cluster.create_namespace(), "orphan")
    rss = node_memory(node_cluster)
    print("RSS MiB: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(rss.items())) + f"; total {sum(rss.values()):.0f}")
    # Crash: SIGKILL every process of the first cluster, leaving its pods, shims, mounts, cgroups,
    # iptables chains, bridge and sysctls behind, and let go of the lock as a dead process would.
    cp = node_cluster.cp
    for pidfile in [*cp.dir.glob("*.pid"), *(cp.dir / "node").glob("*.pid")]:
        pid, started = pidfile.read_text().split()[:2]
        if start_time(int(pid)) == started:
            os.kill(int(pid), signal.SIGKILL)
    for proc in [*cp.procs.values(), *cp.the_node.procs.values()]:
        proc.wait(timeout=10)
    cp.the_node.release()
    assert nodemod.leftovers(), "the crash left nothing behind?"

    second = start_node_cluster(tmp_path / "second")
    try:
        logs, _ = run_job(second, second.create_namespace(), ["after", "crash"])
        assert ": after crash" in logs
    finally:
        left = second.cp.stop()
    assert left == []


def test_down_leaves_the_machine_as_it_was(node_cluster):
    # (the previous test's second cluster is down; start one more node and tear it down with pods running)
    cp = controlplane.ControlPlane(node_cluster.cp.dir.parent / "third", bin_dir=node_cluster.bin_dir, node=True)
    cp.start()
    third = Cluster(cp)
    third_ns = third.create_namespace()
    running_pod(third, third_ns)
    assert Path(f"/sys/class/net/{nodemod.BRIDGE}").exists()
    t0 = time.monotonic()
    assert cp.stop() == []
    print(f"down with a running pod: {time.monotonic() - t0:.1f}s")
    assert not Path(f"/sys/class/net/{nodemod.BRIDGE}").exists()
    for tool in ("iptables-save", "ip6tables-save"):
        dump = subprocess.run([tool], capture_output=True, text=True, check=True).stdout
        assert "KUBE-" not in dump and "FILEDROP-" not in dump, dump
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods"))
    assert not [line for line in Path("/proc/self/mountinfo").read_text().splitlines()
                if str(cp.dir) in line or "/var/lib/kubelet" in line]
    for name, value in SYSCTLS_BEFORE.items():
        if value is not None:
            assert (Path("/proc/sys") / name).read_text().strip() == value, name
    assert not (nodemod.MACHINE_DIR / "saved.json").exists()
    assert not cp.kubeconfig.exists()  # it would name an address that is routed off the machine now
    # the image store (gigabytes) goes with the node; its logs stay for a failure report
    assert not (cp.dir / "node" / "containerd" / "root").exists()
    assert (cp.dir / "containerd.log").exists()
    assert nodemod.leftovers() == []
