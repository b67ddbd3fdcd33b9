"""filedrop's production topology on one machine, on top of the control plane and its node (DESIGN §7).

`make cluster` runs `python -m tools.k8s.controlplane up --node` and then this module's `up`, which adds: the
filedrop image (`make images`) imported into the node, moto's S3/SQS server and an embedded warehouse on the
node's bridge address (standing in for AWS and RDS), a bucket whose ObjectCreated events go to an SQS queue,
the Kubeflow spark-operator installed by its own chart (tools/k8s/sparkop.py) for namespace `filedrop`, Argo
Workflows (tools/k8s/argo.py: controller, server with its UI, artifacts in the bucket `filedrop-analytics`) and
the chart helm-installed into namespace `filedrop` (restricted Pod Security): the operator and bridge pods, the
d2b FileRoutes, loader Job pods per file, for files above the Spark threshold (or routes with `engine: spark`) a
SparkApplication with driver and executor pods from the Spark image, and the dbt workflows (the
`filedrop-transform` WorkflowTemplate, its daily CronWorkflow). Then

    make cluster-put FILE=/tmp/d2b/orders.csv (filedrop sample --out /tmp/d2b)      # drop a file into the bucket
    kubectl get pods,filedrops -n filedrop                    # watch it load
    make cluster-transform DATE=2022-09-05                    # run the dbt workflow now (Argo)

`down` stops what `up` started (the control plane itself: `python -m tools.k8s.controlplane down`).
Run from the repository root.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from tools.k8s.base import free_port, start_time, stop_pidfile, tail, write_pidfile
from tools.k8s.controlplane import ControlPlane
from tools.k8s.node import BRIDGE_IP, POD_SUBNET

REPO = Path(__file__).resolve().parents[2]

BUCKET = "d2b-internal-assessment-bucket"
#: the dbt docs site, the exports and Argo's artifacts
ANALYTICS_BUCKET = "filedrop-analytics"
QUEUE = "filedrop-events"
IMAGE_TAG = "dev"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def _alive(pidfile: Path) -> bool:
    try:
        pid, started = pidfile.read_text().split()[:2]
    except (FileNotFoundError, ValueError):
        return False
    return start_time(int(pid)) == started


def _spawn(d: Path, name: str, argv: list[str], env: dict[str, str]) -> None:
    if _alive(d / f"{name}.pid"):
        return
    with open(d / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=REPO, start_new_session=True)
    write_pidfile(d / f"{name}.pid", proc.pid)


def _wait(check, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}" + (f"\n{tail(log)}" if log else ""))
        time.sleep(0.1)  # poll interval


def _moto(d: Path, host: str = "127.0.0.1") -> str:
    state = d / "moto.port"
    if _alive(d / "moto.pid") and state.exists():
        return f"http://{host}:{state.read_text().strip()}"
    port = free_port(host)
    _spawn(d, "moto", [sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)], dict(os.environ))
    state.write_text(str(port))
    endpoint = f"http://{host}:{port}"

    def up() -> bool:
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                return True
        except OSError:
            return False
    _wait(up, 60, "moto", d / "moto.log")
    return endpoint


def _kubectl(cp: ControlPlane, *args: str, input: str | None = None, check: bool = True) -> str:
    res = subprocess.run([str(cp.bin_dir / "kubectl"), *args], input=input, capture_output=True, text=True,
                         env=cp.env())
    if check and res.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args)}: {res.stderr}")
    return res.stdout


def _helm(cp: ControlPlane, *args: str) -> None:
    res = subprocess.run([str(cp.bin_dir / "helm"), *args], capture_output=True, text=True, env=cp.env())
    if res.returncode != 0:
        raise SystemExit(f"helm {args[0]}: {res.stderr}")


def _bucket_to_queue() -> str:
    """The bucket whose ObjectCreated events go to the queue (moto); the queue's URL."""
    import boto3

    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    queue = str(sqs.create_queue(QueueName=QUEUE)["QueueUrl"])
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    return queue


def admit_pods(url: str, hba: Path, password: str) -> None:
    """Let the pod network into a PostgreSQL whose admin ``url`` trusts loopback: role ``filedrop`` (a
    superuser, with ``password``, set afresh when it exists) and a pg_hba.conf line for POD_SUBNET (scram)."""
    import psycopg
    from psycopg import sql

    line = f"host all filedrop {POD_SUBNET} scram-sha-256"
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = 'filedrop'").fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(sql.SQL(verb + " ROLE filedrop LOGIN SUPERUSER PASSWORD {}").format(sql.Literal(password)))
        if line not in hba.read_text():
            hba.write_text(hba.read_text() + line + "\n")
            conn.execute("SELECT pg_reload_conf()")


def _pod_warehouse(d: Path) -> tuple[str, str]:
    """An embedded PostgreSQL of the cluster's own (d/warehouse), listening on loopback and on the node's
    bridge address; pods log in as role ``filedrop`` with a password made afresh at every ``up`` (it lives
    only in the Secret). Returns (the host's URL, the pods' URL)."""
    import secrets

    from filedrop.warehouse import EmbeddedPostgres

    server = EmbeddedPostgres(d / "warehouse", also_listen=(BRIDGE_IP,))
    url = server.start()
    password = secrets.token_urlsafe(24)
    admit_pods(url, server.pgdata / "pg_hba.conf", password)
    port = url.rsplit(":", 1)[1].split("/", 1)[0]
    return url, f"postgresql://filedrop:{password}@{BRIDGE_IP}:{port}/postgres"


def up_pods(cp: ControlPlane, d: Path, ns: str) -> int:
    """The chart installed on the node as a user would (helm upgrade --install), with the filedrop image
    built from operator/Dockerfile (`make images`); moto and the warehouse on the bridge address."""
    from tools.images.build import archives
    from tools.images.recipes import IMAGES
    from tools.k8s import argo, sparkop
    from tools.k8s.node import Node, build_node_tools

    # the filedrop image, the Spark job image, the spark-operator's controller image and Argo's
    node = Node(d, bin_dir=build_node_tools(quiet=True))
    for archive in archives(["filedrop", "spark", "spark-operator", "argo"], IMAGE_TAG).values():
        node.import_image(archive)
    endpoint = _moto(d, BRIDGE_IP)
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=endpoint)
    host_url, pod_url = _pod_warehouse(d)

    if ns not in _kubectl(cp, "get", "namespaces", "-o", "name"):
        _kubectl(cp, "create", "namespace", ns)
    _kubectl(cp, "label", "namespace", ns, "--overwrite",
             *[f"pod-security.kubernetes.io/{m}=restricted" for m in ("enforce", "warn", "audit")])
    for name, literals in (("filedrop-warehouse", {"url": pod_url}),
                           ("filedrop-aws", {k: AWS_ENV[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")})):
        _kubectl(cp, "delete", "secret", name, "-n", ns, "--ignore-not-found")
        _kubectl(cp, "create", "secret", "generic", name, "-n", ns,
                 *[f"--from-literal={k}={v}" for k, v in literals.items()])
    queue = _bucket_to_queue()
    # the spark-operator (its own chart, from its Go module) runs the SparkApplications of namespace ns
    sparkop.install(lambda *args: _helm(cp, *args), d / "spark-operator-values.yaml", job_namespaces=[ns])
    # Argo Workflows in namespace ns, its artifacts (the docs step's output) in the analytics bucket
    import boto3

    boto3.client("s3").create_bucket(Bucket=ANALYTICS_BUCKET)
    argo.install(lambda *args, **kw: _kubectl(cp, *args, **kw), ns, argo.controller_config())
    values = {
        "image": {"repository": "filedrop", "tag": IMAGE_TAG, "pullPolicy": "Never"},
        # files from the Spark threshold up (or of routes with engine: spark) load through SparkApplications:
        # a driver and two executor pods whatever the size, a fraction of a core each, so that they fit on
        # this one small node
        "spark": {"image": IMAGES["spark"].ref(IMAGE_TAG), "coreRequest": "250m",
                  "tiers": [{"name": "node", "max_bytes": None, "executors": 2, "driver_cores": 1,
                             "driver_memory": "1g", "executor_cores": 1, "executor_memory": "1g"}]},
        "aws": {"region": AWS_ENV["AWS_DEFAULT_REGION"], "endpointUrl": endpoint, "existingSecret": "filedrop-aws"},
        "bridge": {"enabled": True, "queueUrl": queue, "waitSeconds": 5},
        "operator": {"verbose": True},
        # the dbt workflows; the embedded warehouse has no if_common: the local target builds it
        "argo": {"enabled": True, "exportTo": f"s3://{ANALYTICS_BUCKET}/exports", "dbtTarget": "local",
                 "artifactRepository": argo.chart_repository_values(ANALYTICS_BUCKET, endpoint, "filedrop-aws")},
        "docs": {"s3Uri": f"s3://{ANALYTICS_BUCKET}/docs"},
    }
    (d / "values.yaml").write_text(yaml.safe_dump(values))
    try:
        _helm(cp, "upgrade", "--install", "filedrop", str(REPO / "helm" / "filedrop"), "-n", ns,
              "-f", str(d / "values.yaml"), "--wait", "--timeout", "5m")
    except SystemExit as failed:
        raise SystemExit(f"{failed}\n{_kubectl(cp, 'get', 'pods', '-n', ns, check=False)}") from None
    (d / "stack.env").write_text(f"AWS_ENDPOINT_URL={endpoint}\nFILEDROP_WAREHOUSE_URL={host_url}\n")
    print(f"filedrop installed by helm in namespace {ns}, on real pods: bucket s3://{BUCKET} (moto at {endpoint}) "
          f"-> SQS -> bridge pod -> operator pod -> loader Job pods -> {host_url}", file=sys.stderr)
    print("  drop a file:  make cluster-put FILE=/tmp/d2b/orders.csv (filedrop sample --out /tmp/d2b)", file=sys.stderr)
    print(f"  watch:        kubectl get pods,filedrops -n {ns}", file=sys.stderr)
    print(f"  logs:         kubectl logs -n {ns} deployment/filedrop-operator", file=sys.stderr)
    print(f"  Spark:        kubectl get sparkapplications,pods -n {ns}   (files over "
          "operator.sparkThresholdBytes, or a FileRoute with engine: spark)", file=sys.stderr)
    print(f"  dbt:          make cluster-transform DATE=2022-09-05; kubectl get workflows -n {ns}", file=sys.stderr)
    print(f"  Argo UI:      {argo.server_url(lambda *a: json.loads(_kubectl(cp, *a, '-o', 'json')), ns)}  "
          f"(docs and exports: s3://{ANALYTICS_BUCKET})", file=sys.stderr)
    return 0


def up(d: Path, ns: str) -> int:
    cp = ControlPlane.load(d)
    if not cp.ready():
        raise SystemExit(f"no running control plane in {d}: run `make cluster`")
    if not cp.node:
        raise SystemExit(f"the control plane in {d} has no node, so no pod would ever run: "
                         "run `make cluster-down` and `make cluster` (it starts one)")
    return up_pods(cp, d, ns)


def put(d: Path, path: Path, key: str | None) -> int:
    import boto3

    env = dict(line.split("=", 1) for line in (d / "stack.env").read_text().splitlines() if "=" in line)
    os.environ.update(AWS_ENV, AWS_ENDPOINT_URL=env["AWS_ENDPOINT_URL"])
    key = key or f"orders_data/{path.name}"
    boto3.client("s3").upload_file(str(path), BUCKET, key)
    print(f"uploaded s3://{BUCKET}/{key}", file=sys.stderr)
    return 0


def transform(d: Path, ns: str, day: str | None) -> int:
    """A run of the chart's ``filedrop-transform`` WorkflowTemplate (``kubectl create`` of a Workflow), for
    ``day`` (as_of_date and ingestion_date; empty: today)."""
    from tools.k8s import argo

    cp = ControlPlane.load(d)
    run = argo.workflow_run("filedrop-transform", {"as_of_date": day or "", "ingestion_date": day or ""}, ns)
    name = _kubectl(cp, "create", "-f", "-", "-o", "jsonpath={.metadata.name}", input=json.dumps(run))
    print(f"submitted workflow {ns}/{name}: kubectl get workflow -n {ns} {name} -w", file=sys.stderr)
    return 0


def down(d: Path) -> int:
    for name in ("bridge", "operator", "moto"):
        stop_pidfile(d / f"{name}.pid")
    if (d / "warehouse").exists():
        from filedrop.warehouse import EmbeddedPostgres

        EmbeddedPostgres(d / "warehouse").stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["up", "put", "transform", "down"])
    ap.add_argument("file", nargs="?", type=Path, help="put: the file to upload")
    home = Path(os.environ.get("FILEDROP_HOME", Path.home() / ".local/share/filedrop"))
    ap.add_argument("--dir", type=Path, default=home / "cluster", help="the control plane's state directory")
    ap.add_argument("--namespace", default="filedrop")
    ap.add_argument("--key", help="put: the object key (default orders_data/<file name>)")
    ap.add_argument("--date", help="transform: the run's as_of_date and ingestion_date (default today)")
    args = ap.parse_args(argv)
    d = args.dir.resolve()
    if args.command == "up":
        return up(d, args.namespace)
    if args.command == "put":
        if not args.file:
            ap.error("put needs a file")
        return put(d, args.file, args.key)
    if args.command == "transform":
        return transform(d, args.namespace, args.date)
    return down(d)


if __name__ == "__main__":
    sys.exit(main())
