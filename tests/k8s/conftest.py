import pytest

from tests.support.k8s.cluster import (  # noqa: F401  (fixtures)
    current_cluster,
    k8s_cluster,
    k8s_namespace,
    k8s_thirdparty_crds,
    local_runner,
)
from tests.support.k8s.pods import host_moto, host_pg, node_cluster, pod_aws, pod_warehouse  # noqa: F401  (fixtures)


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "k8s: needs the real Kubernetes control plane (tools/k8s; built once by `make k8s-tools`)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not report.failed or "k8s_cluster" not in getattr(item, "fixturenames", ()):
        return
    cluster = current_cluster()
    if cluster is None:
        return
    report.sections.append(("k8s control plane logs", cluster.log_tails(25)))
    runner = cluster.runner
    if runner is not None:
        lines = [f"{r.kind} {r.namespace}/{r.name}: exit {r.exit_code} argv {r.argv}\n"
                 f"{r.log.read_text(errors='replace')[-3000:] if r.log.exists() else ''}"
                 for r in list(runner.runs.values())[-5:]]
        if runner.errors:
            lines.append("runner errors:\n" + "\n".join(runner.errors[-20:]))
        report.sections.append(("local runner", "\n".join(lines) or "(nothing run)"))
