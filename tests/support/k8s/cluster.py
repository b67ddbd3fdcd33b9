"""pytest fixtures for a real Kubernetes control plane (tools/k8s: :mod:`tools.k8s.controlplane`).

Fixtures (all but k8s_namespace are session-scoped):
  k8s_cluster          the running control plane: a Cluster (kubeconfig, server, env,
                       kubectl(), helm(), kube, install_crds(), install_thirdparty_crds())
  k8s_thirdparty_crds  installs the CRDs in $FILEDROP_THIRDPARTY (default ../shared/thirdparty
                       beside the repo): Argo Workflows, Kubeflow spark-operator, kopf peering
  k8s_namespace        a fresh namespace (with its default ServiceAccount) for one test

start_node_cluster(dir) starts a control plane with a real node (tools/k8s/node.py: containerd,
kubelet, kube-scheduler, kube-proxy, CoreDNS; one per machine); its Cluster.node imports OCI image
archives into the node's containerd (Cluster.import_image) for pods with imagePullPolicy Never;
tests/support/k8s/pods.py has the fixtures of tests on real pods.

The tools are built on first use by tools/k8s/build.sh (`make k8s-tools`), which takes
many minutes on a cold cache; afterwards the control plane starts in seconds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.k8s.kube import ApiError, Kube
from tools.k8s import controlplane
from tools.k8s.crds import yaml_files

REPO = Path(__file__).resolve().parents[3]


def thirdparty_dir() -> Path:
    return Path(os.environ.get("FILEDROP_THIRDPARTY") or REPO.parent / "shared" / "thirdparty")


def wait_for(check: Callable[[], Any], timeout: float = 60.0, what: str = "a condition",
             interval: float = 0.1, details: Callable[[], str] | None = None) -> Any:
    """Poll check() until it returns something truthy (which is returned), or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            extra = f"\n{details()}" if details else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)  # poll interval


class Cluster:
    def __init__(self, cp):
        self.cp = cp
        self.kubeconfig: Path = cp.kubeconfig
        self.server: str = cp.server
        self.bin_dir: Path = cp.bin_dir
        self.env: dict[str, str] = cp.env()
        self.kube = Kube(self.kubeconfig)
        self._installed: set[str] = set()
        self.node = cp.the_node  # a tools.k8s.node.Node, or None without a node

    def import_image(self, archive: Path) -> list[str]:
        """Import an OCI image archive (e.g. `make images`' filedrop.tar) into the node's containerd
        (`ctr -n k8s.io images import`); returns the image names. Pods use imagePullPolicy Never."""
        if self.node is None:
            raise RuntimeError("this cluster has no node (start it with start_node_cluster)")
        return self.node.import_image(Path(archive))

    def _run(self, tool: str, args: tuple, input: str | None, check: bool, timeout: float,
             env: dict | None) -> subprocess.CompletedProcess:
        cmd = [str(self.bin_dir / tool), *map(str, args)]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout,
                              env=self.env if env is None else env)
        if check and proc.returncode != 0:
            raise AssertionError(f"{tool} {' '.join(map(str, args))} exited {proc.returncode}\n"
                                 f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
        return proc

    def kubectl(self, *args, input: str | None = None, check: bool = True, timeout: float = 120,
                env: dict | None = None) -> subprocess.CompletedProcess:
        """Run kubectl against the cluster; with check=True a non-zero exit fails with its output."""
        return self._run("kubectl", args, input, check, timeout, env)

    def kubectl_json(self, *args, **kw) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json", **kw).stdout)

    def helm(self, *args, input: str | None = None, check: bool = True, timeout: float = 300,
             env: dict | None = None) -> subprocess.CompletedProcess:
        return self._run("helm", args, input, check, timeout, env)

    def log_tails(self, lines: int = 30) -> str:
        return self.cp.log_tails(lines)

    def wait_for(self, check: Callable[[], Any], timeout: float = 60.0, what: str = "a condition") -> Any:
        return wait_for(check, timeout, what, details=lambda: self.log_tails(15))

    def install_crds(self, files: Iterable[Path], timeout: float = 180) -> list[str]:
        """Server-side apply the CRDs in YAML files (or directories of them) and wait until
        they are Established; returns their names."""
        names = self.cp.install_crds(yaml_files(files), timeout)
        self._installed.update(names)
        return names

    def install_thirdparty_crds(self, directory: Path | None = None) -> list[str]:
        """Install the third-party CRDs (Argo Workflows, spark-operator, kopf peering)."""
        d = Path(directory or thirdparty_dir())
        if not yaml_files([d]):
            raise FileNotFoundError(f"no CRD YAML files under {d} (set FILEDROP_THIRDPARTY)")
        return self.install_crds([d])

    def create_namespace(self, name: str | None = None, labels: dict[str, str] | None = None) -> str:
        """Create a namespace and wait for its default ServiceAccount (Pods need it)."""
        name = name or f"t-{uuid.uuid4().hex[:8]}"
        self.kube.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                                "metadata": {"name": name, "labels": labels or {}}})

        def has_sa() -> bool:
            try:
                self.kube.get(f"/api/v1/namespaces/{name}/serviceaccounts/default")
                return True
            except ApiError as e:
                if e.status == 404:
                    return False
                raise
        self.wait_for(has_sa, 60, f"ServiceAccount {name}/default")
        return name

    def api_client(self):
        """A kubernetes (PyPI) ApiClient for this cluster, for code that uses that library."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def start_node_cluster(d: Path) -> Cluster:
    """Start a control plane with a node in d (fails the test, naming the holder, when another
    node runs on this machine). Stop it with cluster.cp.stop(), which returns the leftovers."""
    cp = controlplane.ControlPlane(d, bin_dir=controlplane.build_tools(), node=True)
    try:
        cp.start()
    except controlplane.ControlPlaneError as e:
        pytest.fail(f"the test control plane with a node did not start: {e}", pytrace=False)
    return Cluster(cp)


_current: dict[str, Any] = {}  # for the failure hooks in tests/k8s/conftest.py and tests/chart/conftest.py


def current_cluster() -> Cluster | None:
    return _current.get("cluster")


@contextmanager
def registered(cluster: Cluster) -> Iterator[Cluster]:
    """While inside, failure reports show ``cluster``'s logs (then the one registered before, if any)."""
    before = _current.get("cluster")
    _current["cluster"] = cluster
    try:
        yield cluster
    finally:
        _current.pop("cluster", None)
        if before is not None:
            _current["cluster"] = before


@pytest.fixture(scope="session")
def k8s_cluster(tmp_path_factory) -> Cluster:
    d = tmp_path_factory.mktemp("k8s")
    cp = controlplane.ControlPlane(d, bin_dir=controlplane.build_tools())
    try:
        cp.start()
    except controlplane.ControlPlaneError as e:
        pytest.fail(f"the test control plane did not start: {e}", pytrace=False)
    cluster = Cluster(cp)
    try:
        with registered(cluster):
            yield cluster
    finally:
        cp.stop()
        shutil.rmtree(d / "etcd-data", ignore_errors=True)  # ~100 MB; the logs stay


@pytest.fixture(scope="session")
def k8s_thirdparty_crds(k8s_cluster) -> list[str]:
    return k8s_cluster.install_thirdparty_crds()


@pytest.fixture
def k8s_namespace(k8s_cluster) -> str:
    name = k8s_cluster.create_namespace()
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
