"""pytest fixtures for tests on real pods: a control plane with a node (tools/k8s/node.py), the filedrop
image built by `make images` (tools/images) imported into its containerd, and the services that stand in
for AWS and RDS outside the cluster, on the host at the node's bridge address (the one address outside the
pod network that pods reach).

Fixtures (module scope: one node per machine, so each test module starts its own and stops it before the
next module's starts):
  node_cluster   the control plane with a node, every CRD (filedrop's, the chart's kopf peering,
                 Argo's and spark-operator's), and the filedrop image (LOADER_IMAGE)
  host_pg        PostgreSQL 15 on the host, also listening on the bridge (pods log in as role filedrop)
  host_moto      moto's S3/SQS server on the bridge address
  spark_operator the Kubeflow spark-operator installed by its chart (tools/k8s/sparkop.py) on the node, for
                 SparkApplications in every namespace; the Spark job image imported (SPARK_IMAGE)
  argo_image     the Argo Workflows image (tools/k8s/argo.py installs it into a namespace) imported
and per test:
  pod_aws        boto3 in the test pointed at host_moto (as the `aws` fixture does for loopback moto)
  pod_warehouse  a fresh database on host_pg: (the admin URL for the test, the URL pods and the operator use)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import point_aws_at
from tests.support.k8s.cluster import Cluster, registered, start_node_cluster, thirdparty_dir
from tests.support.k8s.topology import Stack
from tests.support.servers import DebianPostgres, start_moto
from tools.images.build import archives
from tools.images.recipes import IMAGES
from tools.k8s import argo, sparkop
from tools.k8s.node import BRIDGE_IP

REPO = Path(__file__).resolve().parents[3]
TAG = "dev"
#: the image the loader Jobs run (tag dev is not latest: kubelet uses the imported copy, never pulls)
LOADER_IMAGE = IMAGES["filedrop"].ref(TAG)
#: the SparkApplications' image (spark_images/Dockerfile)
SPARK_IMAGE = IMAGES["spark"].ref(TAG)


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    [image] = archives(["filedrop"], TAG).values()
    cluster = start_node_cluster(tmp_path_factory.mktemp("k8s-pods"))
    try:
        with registered(cluster):  # failure reports show this cluster's logs
            cluster.install_crds([thirdparty_dir(), REPO / "crds"])
            cluster.import_image(image)
            yield cluster
    finally:
        leftovers = cluster.cp.stop()
        assert not leftovers, f"the node left the machine changed: {leftovers}"


@pytest.fixture(scope="module")
def spark_operator(node_cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The spark-operator's controller as the chart deploys it, running SparkApplications of every namespace
    with driver and executor pods from the Spark image; returns that image's ref."""
    for archive in archives(["spark", "spark-operator"], TAG).values():
        node_cluster.import_image(archive)
    sparkop.install(lambda *args: node_cluster.helm(*args, timeout=400),
                    tmp_path_factory.mktemp("spark-operator") / "values.yaml", job_namespaces=[""])
    return SPARK_IMAGE


@pytest.fixture(scope="module")
def argo_image(node_cluster: Cluster) -> str:
    """The image with Argo's controller, executor and server (tools/k8s/argo-workflows), on the node."""
    for archive in archives(["argo"], TAG).values():
        node_cluster.import_image(archive)
    return argo.image()


@pytest.fixture(scope="module")
def host_pg(node_cluster: Cluster) -> Iterator[DebianPostgres]:
    """PostgreSQL on the host, reachable by pods at the bridge address (RDS stand-in). Needs the node:
    the bridge address exists only while it runs."""
    server = DebianPostgres(pod_address=BRIDGE_IP).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def host_moto(node_cluster: Cluster) -> Iterator[str]:
    endpoint, stop = start_moto(BRIDGE_IP)
    try:
        yield endpoint
    finally:
        stop()


@pytest.fixture
def pod_aws(host_moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    return point_aws_at(host_moto, monkeypatch)


def fresh_database(server: DebianPostgres) -> tuple[str, str]:
    """A new database on ``server``: (its admin URL on loopback, its URL for pods at the bridge address)."""
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server.url.rsplit('/', 1)[0]}/{name}", f"{server.pod_url.rsplit('/', 1)[0]}/{name}"


@pytest.fixture
def pod_warehouse(host_pg: DebianPostgres) -> Iterator[tuple[str, str]]:
    admin, pods = fresh_database(host_pg)
    try:
        yield admin, pods
    finally:
        with psycopg.connect(host_pg.url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{admin.rsplit("/", 1)[1]}" WITH (FORCE)')


@contextlib.contextmanager
def stack_in_new_namespace(cluster: Cluster, warehouse: str, endpoint: str, tmp: Path,
                           labels: dict[str, str] | None = None, cls: type[Stack] = Stack) -> Iterator[Stack]:
    """filedrop in a fresh namespace of the node's cluster (``cls``: Stack or a subclass), loader Jobs from the
    filedrop image; afterwards its operator and bridge are stopped and the namespace deleted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBECONFIG")}
    ns = cluster.create_namespace(labels=labels)
    stack = cls(cluster, ns, warehouse, endpoint, tmp, env, loader_image=LOADER_IMAGE)
    try:
        yield stack
    finally:
        for name in list(stack.procs):
            stack.stop(name)
        cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def kill_container(cluster: Cluster, pod: dict[str, Any]) -> None:
    """SIGKILL the pod's first container through containerd (`ctr tasks kill`), as a crash or the OOM killer
    would: no signal to the pod first, no chance to clean up."""
    container = pod["status"]["containerStatuses"][0]["containerID"].split("://", 1)[1]
    assert cluster.node is not None, "the cluster has no node"
    cluster.node.ctr("tasks", "kill", "--signal", "SIGKILL", container)
