"""Pure parts of the Spark engine: numbering plan, S3A settings, resource tiers, SparkApplication
manifests (validated against spark-operator's real CRD schema). No services needed."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from filedrop.objects import SourceObject
from filedrop.spark import application as manifests
from filedrop.spark import conf, sizing
from filedrop.spark.plan import BlockStats, NeedsOneTask, Numbering, block_base, make_plan, quoted_line_end

REPO = Path(__file__).resolve().parents[2]
THIRDPARTY = Path(os.environ.get("FILEDROP_THIRDPARTY", REPO.parent / "shared" / "thirdparty"))


# --- plan ------------------------------------------------------------------------------------------

def _stats(start: int, lines: list[bytes], quote: bytes = b'"') -> BlockStats:
    parity, even, first_odd = 0, 0, -1
    for i, line in enumerate(lines):
        parity = (parity + line.count(quote)) % 2
        even += parity == 0
        if parity == 1 and first_odd < 0:
            first_odd = i
    head_lines = lines if first_odd < 0 else lines[:first_odd + 1]
    return BlockStats(start, len(lines), even, first_odd, parity, b"".join(x + b"\n" for x in head_lines))


def _records(blocks: list[list[bytes]]) -> list[tuple[int, bytes]]:
    """What the writers would send: (row number, record) from the plan, to compare with a plain split."""
    plans = make_plan([_stats(i * 100, b) for i, b in enumerate(blocks)])
    out = []
    for plan, lines in zip(plans, blocks, strict=True):
        text = b"".join(x + b"\n" for x in lines[plan.skip:]) + plan.tail
        recs, cur, parity = [], b"", 0
        for line in text.split(b"\n")[:-1]:
            cur += line + b"\n"
            parity = (parity + line.count(b'"')) % 2
            if parity == 0:
                recs.append(cur)
                cur = b""
        assert len(recs) == plan.rows, (plan, recs)
        out += [(plan.first_row + i, r) for i, r in enumerate(recs)]
    return out


def test_plan_without_quotes_numbers_lines() -> None:
    assert _records([[b"a", b"b"], [b"c"], [], [b"d", b"e"]]) == [
        (1, b"a\n"), (2, b"b\n"), (3, b"c\n"), (4, b"d\n"), (5, b"e\n")]


def test_plan_carries_quoted_newlines_across_blocks() -> None:
    blocks = [[b'1,"x', b"y"], [b'z",1', b"2,a"], [b'3,"p'], [b"q"], [b'r"', b'4,"s""t"']]
    assert _records(blocks) == [(1, b'1,"x\ny\nz",1\n'), (2, b"2,a\n"), (3, b'3,"p\nq\nr"\n'), (4, b'4,"s""t"\n')]


def test_plan_gives_up_splitting_a_record_longer_than_the_limit() -> None:
    big = BlockStats(100, 5, 0, -1, 0, None)  # no closing quote, too long to carry
    with pytest.raises(NeedsOneTask):
        make_plan([_stats(0, [b'1,"open']), big, _stats(200, [b'close"'])])


def test_plan_leaves_an_unterminated_quote_to_copy() -> None:
    [p] = make_plan([_stats(0, [b"1,a", b'2,"never closed'])])
    assert (p.first_row, p.rows, p.tail) == (1, 2, b"")


# --- S3A settings ------------------------------------------------------------------------------------

def test_quoted_line_end_in_the_first_bytes() -> None:
    assert not quoted_line_end(b'id,name\n1,"a ""b"""\n2,c\n', '"', header=True)
    assert quoted_line_end(b'id,name\n1,"a\nb"\n', '"', header=True)
    assert not quoted_line_end(b'id,name\n1,"cut off', '"', header=True)  # the last line may be cut off
    assert quoted_line_end(b"id,name\n1,'a\nb'\n", "'", header=True)
    assert not quoted_line_end(b'id,"name\n1,a\n', '"', header=True)  # the header is read on its own
    assert quoted_line_end(b'1,"a\nb"\n', '"', header=False)


def test_one_pass_numbering_maps_block_numbers_to_record_numbers() -> None:
    """Blocks at bytes 0, 100 and 250 wrote 3, 0 and 4 records, numbered from their own bases."""
    n = Numbering.of([(250, 4), (0, 3), (100, 0)])
    assert n is not None
    got = [n.row(block_base(0) + i) for i in range(3)] + [n.row(block_base(250) + i) for i in range(4)]
    assert got == [1, 2, 3, 4, 5, 6, 7]
    assert n.sql() is not None and "width_bucket" in (n.sql() or "")
    assert Numbering.of([(0, 5)]) == Numbering((1,), (0,)) and Numbering((1,), (0,)).sql() is None


def test_one_pass_numbering_refuses_overlapping_blocks() -> None:
    assert Numbering.of([(0, 3), (1, 2)]) is None  # block 0 numbers 1..3, block 1 starts at 3
    assert Numbering.of([(0, 2), (1, 2)]) is not None


def test_s3a_for_a_compatible_server_with_static_keys() -> None:
    c = conf.s3a_conf({"AWS_ENDPOINT_URL": "http://127.0.0.1:5000", "AWS_ACCESS_KEY_ID": "k",
                       "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "eu-west-1"})
    assert c["fs.s3a.endpoint"] == "http://127.0.0.1:5000"
    assert c["fs.s3a.path.style.access"] == "true" and c["fs.s3a.connection.ssl.enabled"] == "false"
    assert c["fs.s3a.endpoint.region"] == "eu-west-1"
    assert c["fs.s3a.aws.credentials.provider"].split(",") == [conf.ENV_PROVIDER, conf.INSTANCE_PROVIDER]
    assert "k" not in c.values() and "s" not in c.values()  # keys stay in the environment


def test_s3a_in_eks_uses_web_identity_and_aws_endpoints() -> None:
    c = conf.s3a_conf({"AWS_ROLE_ARN": "arn:aws:iam::1:role/r", "AWS_WEB_IDENTITY_TOKEN_FILE": "/var/run/t",
                       "AWS_REGION": "us-west-2"})
    assert c["fs.s3a.aws.credentials.provider"].split(",") == [conf.WEB_IDENTITY_PROVIDER, conf.INSTANCE_PROVIDER]
    assert "fs.s3a.endpoint" not in c and "fs.s3a.path.style.access" not in c
    session = conf.session_conf({"AWS_ENDPOINT_URL_S3": "https://minio:9000"}, jars=["/j/a.jar", "/j/b.jar"])
    assert session["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert session["spark.driver.extraClassPath"] == "/j/a.jar:/j/b.jar"
    assert session["spark.task.maxFailures"] == "1"


def test_hadoop_uri() -> None:
    assert conf.hadoop_uri("s3://b/k/x.csv", True) == "s3a://b/k/x.csv"
    assert conf.hadoop_uri("/data/x.csv", False) == "file:///data/x.csv"


# --- tiers ---------------------------------------------------------------------------------------------

def test_default_tiers_by_size() -> None:
    GiB = sizing.GiB
    assert sizing.tier_for(0).name == "small" and sizing.tier_for(0).driver_only
    assert sizing.tier_for(GiB).name == "small"
    assert sizing.tier_for(GiB + 1).name == "medium"
    medium = sizing.tier_for(5 * GiB)
    assert (medium.executors, medium.executor_memory, medium.parallelism) == (2, "4g", 4)
    assert sizing.tier_for(64 * GiB).name == "large"
    assert sizing.tier_for(10 ** 15).name == "xlarge"
    with pytest.raises(ValueError):
        sizing.tier_for(-1)


def test_tiers_are_configurable_and_validated() -> None:
    text = """
- {name: tiny, max_bytes: 1000, executors: 0, driver_cores: 1, driver_memory: 1g}
- {name: big, max_bytes: null, executors: 3, driver_cores: 1, driver_memory: 2g, executor_cores: 2, executor_memory: 6g}
"""
    tiers = sizing.tiers_from_env({"FILEDROP_SPARK_TIERS": text})
    assert [sizing.tier_for(s, tiers).name for s in (0, 1000, 1001)] == ["tiny", "tiny", "big"]
    assert sizing.tiers_from_env({}) == sizing.DEFAULT_TIERS
    for bad, message in [
        ("[{name: a, max_bytes: 10, executors: 0, driver_cores: 1, driver_memory: 1g}]", "last tier"),
        ("[{name: a, max_bytes: null, executors: 0, driver_cores: 1, driver_memory: 1gb}]", "driver_memory"),
        ("[{name: a, max_bytes: 10, executors: 0, driver_cores: 1, driver_memory: 1g},"
         " {name: b, max_bytes: 5, executors: 0, driver_cores: 1, driver_memory: 1g},"
         " {name: c, max_bytes: null, executors: 1, driver_cores: 1, driver_memory: 1g}]", "increase"),
        ("[{name: a, max_bytes: null, executors: 0, cores: 1}]", "unexpected keyword"),
        ("{}", "list"),
    ]:
        with pytest.raises(sizing.TierError, match=message):
            sizing.parse_tiers(bad)


# --- SparkApplication ------------------------------------------------------------------------------------

def _crd_schema() -> dict[str, Any]:
    path = THIRDPARTY / "spark-operator" / "sparkoperator.k8s.io_sparkapplications.yaml"
    crd = yaml.safe_load(path.read_text())
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta2"]
    schema: dict[str, Any] = version["schema"]["openAPIV3Schema"]
    return schema


def _strict(schema: Any) -> Any:
    """The CRD schema with unknown fields refused, as the API server prunes (and we want no typos)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    return schema


FILEDROP = {"metadata": {"name": "fd-0123456789ab", "namespace": "loads",
                         "uid": "7c9e6679-7425-40de-944b-e07fc1f90ae7"}}
OBJ = SourceObject(bucket="d2b-internal-assessment-bucket", key="orders_data/orders.csv", etag="abc", size=3 << 30,
                   last_modified=datetime(2024, 1, 2, tzinfo=UTC), version_id="v1", sequencer="0A1B",
                   uri="s3://d2b-internal-assessment-bucket/orders_data/orders.csv", is_s3=True)
CONFIG = manifests.SparkJobConfig(image="registry.example/filedrop-spark:0.1.0", namespace="loads",
                                  s3_endpoint="http://minio:9000", aws_secret="aws-keys")


@pytest.mark.parametrize("size", [10 << 20, 3 << 30, 100 << 30])
def test_manifest_validates_against_the_crd_schema(size: int) -> None:
    tier = sizing.tier_for(size)
    app = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ, tier=tier, config=CONFIG)
    jsonschema.validate(app, _strict(_crd_schema()))
    assert (app["apiVersion"], app["kind"]) == ("sparkoperator.k8s.io/v1beta2", "SparkApplication")


def test_manifest_contents() -> None:
    tier = sizing.tier_for(3 << 30)
    app = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ, tier=tier, config=CONFIG,
                                            attempt=2)
    meta, spec = app["metadata"], app["spec"]
    assert meta["name"] == "fd-0123456789ab-load-2" and meta["namespace"] == "loads"
    assert meta["labels"]["filedrop.dev/route"] == "orders" and meta["labels"]["filedrop.dev/tier"] == "medium"
    assert meta["ownerReferences"] == [{"apiVersion": "filedrop.dev/v1alpha1", "kind": "FileDrop",
                                        "name": "fd-0123456789ab", "uid": FILEDROP["metadata"]["uid"],
                                        "controller": True, "blockOwnerDeletion": True}]
    assert spec["restartPolicy"] == {"type": "Never"} and spec["timeToLiveSeconds"] == 3600
    assert (spec["type"], spec["mainApplicationFile"], spec["sparkVersion"]) == ("Python", manifests.MAIN_FILE, "4.3.0")
    assert spec["image"] == CONFIG.image
    assert spec["arguments"][:3] == ["s3://d2b-internal-assessment-bucket/orders_data/orders.csv", "--route", "orders"]
    assert spec["arguments"][spec["arguments"].index("--etag") + 1] == "abc"
    assert spec["arguments"][spec["arguments"].index("--version-id") + 1] == "v1"
    assert (spec["driver"]["cores"], spec["driver"]["memory"]) == (1, "2g")
    assert (spec["executor"]["instances"], spec["executor"]["cores"], spec["executor"]["memory"]) == (2, 2, "4g")
    assert spec["hadoopConf"]["fs.s3a.endpoint"] == "http://minio:9000"
    assert spec["hadoopConf"]["fs.s3a.path.style.access"] == "true"
    assert spec["sparkConf"]["spark.task.maxFailures"] == "1"
    env = {e["name"]: e for e in _container(spec, "driver")["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "filedrop-warehouse", "key": "password",
                                                             "optional": True}  # the URL may carry it
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "aws-keys"
    assert all("value" not in e for n, e in env.items() if "PASSWORD" in n or "SECRET" in n or n == "AWS_ACCESS_KEY_ID")
    assert "FILEDROP_SPARK_MASTER" not in env
    assert spec["driver"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


def _container(spec: dict, role: str) -> dict:
    """The driver's or executor's container in its pod template: the one spark-submit builds the pod on."""
    [container] = spec[role]["template"]["spec"]["containers"]
    assert container["name"] == f"spark-kubernetes-{role}"
    return dict(container)


def test_pod_settings_reach_the_pods_without_the_spark_operator_webhook() -> None:
    # The SparkPodSpec's env/securityContext/volumeMounts are applied only by the spark-operator's mutating
    # webhook; without it the pods lacked the warehouse URL and failed restricted Pod Security. The pod
    # templates are what spark-submit builds the pods on.
    # as the operator configures it (routes travel as --route-json, no routes ConfigMap)
    config = manifests.SparkJobConfig(image="i", namespace="n", core_request="250m", routes_config_map=None)
    app = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ,
                                            tier=sizing.tier_for(3 << 30), config=config)
    spec = app["spec"]
    for role in ("driver", "executor"):
        assert not {"env", "podSecurityContext", "securityContext", "volumeMounts"} & set(spec[role]), role
        assert set(spec[role]["template"]) == {"spec"}  # the CRD keeps templates unchecked: check the shape
        pod = spec[role]["template"]["spec"]
        assert set(pod) == {"securityContext", "containers"}
        assert set(_container(spec, role)) == {"name", "env", "securityContext"}
        assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 185, "fsGroup": 185,
                                          "seccompProfile": {"type": "RuntimeDefault"}}
        container = _container(spec, role)
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        env = {e["name"]: e for e in container["env"]}
        assert env["FILEDROP_WAREHOUSE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "filedrop-warehouse",
                                                                              "key": "url"}
        assert spec[role]["coreRequest"] == "250m"
    assert "volumes" not in spec  # routes come as --route-json or in the template's volumes
    mounted = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ,
                                                tier=sizing.tier_for(3 << 30), config=CONFIG)["spec"]
    assert mounted["driver"]["template"]["spec"]["volumes"] == [{"name": "routes",
                                                                 "configMap": {"name": "filedrop-routes"}}]
    assert _container(mounted, "executor")["volumeMounts"] == [{"name": "routes", "mountPath": manifests.ROUTES_DIR,
                                                               "readOnly": True}]
    assert "coreRequest" not in mounted["driver"]
    jsonschema.validate(app, _strict(_crd_schema()))


def test_driver_only_tier_runs_spark_inside_the_driver() -> None:
    tier = sizing.tier_for(1 << 20)
    app = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ, tier=tier,
                                            config=manifests.SparkJobConfig(image="i", namespace="n"))
    env = {e["name"]: e.get("value") for e in _container(app["spec"], "driver")["env"]}
    assert env["FILEDROP_SPARK_MASTER"] == "local[2]"
    assert "AWS_ENDPOINT_URL" not in env and "AWS_SECRET_ACCESS_KEY" not in env  # IRSA in EKS
    assert "fs.s3a.endpoint" not in app["spec"]["hadoopConf"]
    jsonschema.validate(app, _strict(_crd_schema()))


def test_schema_check_catches_a_bad_manifest() -> None:
    app = manifests.build_spark_application(filedrop=FILEDROP, route="orders", obj=OBJ,
                                            tier=sizing.tier_for(0), config=CONFIG)
    app["spec"]["restartPolicy"] = {"type": "Sometimes"}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(app, _strict(_crd_schema()))
    app["spec"]["restartPolicy"] = {"type": "Never"}
    app["spec"]["driver"]["memroy"] = "1g"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(app, _strict(_crd_schema()))
