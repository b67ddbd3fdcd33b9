import pytest

from tests.support.k8s.cluster import (  # noqa: F401  (fixtures)
    current_cluster,
    k8s_cluster,
    k8s_namespace,
    k8s_thirdparty_crds,
)
from tests.support.k8s.pods import argo_image, host_moto, host_pg, node_cluster, pod_aws, pod_warehouse, spark_operator  # noqa: F401  (fixtures)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "k8s: needs the real Kubernetes control plane (tools/k8s; built once by `make k8s-tools`)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or not {"k8s_cluster", "node_cluster"} & set(getattr(item, "fixturenames", ())):
        return
    cluster = current_cluster()
    if cluster is None:
        return
    report.sections.append(("k8s control plane logs", cluster.log_tails(25)))
