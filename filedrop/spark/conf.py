"""Spark and S3A settings for the Spark engine, computed from the environment. Pure: no I/O.

S3A (hadoop-aws 3.5, AWS SDK v2) is configured the way DESIGN §5 configures boto3:

* ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` → ``fs.s3a.endpoint`` with path-style access (what
  S3-compatible servers such as moto or MinIO need) and TLS following the URL's scheme;
* credentials: web identity (IRSA in EKS: ``AWS_ROLE_ARN`` + ``AWS_WEB_IDENTITY_TOKEN_FILE``) when present,
  else static keys from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (read by the SDK from the
  environment: keys are never copied into Spark configuration, where the UI and event logs would show
  them), else the instance profile.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlparse

_SDK = "software.amazon.awssdk.auth.credentials."
WEB_IDENTITY_PROVIDER = _SDK + "WebIdentityTokenFileCredentialsProvider"
ENV_PROVIDER = _SDK + "EnvironmentVariableCredentialsProvider"
INSTANCE_PROVIDER = "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider"


def credential_providers(env: Mapping[str, str]) -> list[str]:
    """The S3A credential provider chain for this environment, most specific first."""
    chain = []
    if env.get("AWS_WEB_IDENTITY_TOKEN_FILE") and env.get("AWS_ROLE_ARN"):
        chain.append(WEB_IDENTITY_PROVIDER)
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        chain.append(ENV_PROVIDER)
    chain.append(INSTANCE_PROVIDER)
    return chain


def s3a_conf(env: Mapping[str, str]) -> dict[str, str]:
    """Hadoop configuration keys (without the ``spark.hadoop.`` prefix) for ``s3a://``."""
    conf = {
        "fs.s3a.aws.credentials.provider": ",".join(credential_providers(env)),
        "fs.s3a.endpoint.region": env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
        # one object is read by many tasks: fail a read whose object changed under it (ETag check per GET)
        "fs.s3a.change.detection.mode": "server",
        "fs.s3a.change.detection.source": "etag",
    }
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["fs.s3a.endpoint"] = endpoint
        conf["fs.s3a.path.style.access"] = "true"
        conf["fs.s3a.connection.ssl.enabled"] = "true" if urlparse(endpoint).scheme == "https" else "false"
    return conf


def session_conf(env: Mapping[str, str], *, jars: list[str]) -> dict[str, str]:
    """Spark configuration of a session the engine creates itself (local runtime, tests)."""
    conf = {
        "spark.app.name": "filedrop",
        # The load protocol owns retries: a failed task fails the load, which leaves nothing visible
        # and is retried whole; a task retried after it committed its COPY would load rows twice.
        "spark.task.maxFailures": "1",
        "spark.speculation": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        "spark.sql.session.timeZone": "UTC",
    }
    if "FILEDROP_SPARK_MASTER" in env:
        conf["spark.master"] = env["FILEDROP_SPARK_MASTER"]
    if jars:
        # On the class path rather than spark.jars: spark.jars would copy them (the SDK bundle is ~650 MB)
        # into every executor's work directory; a local session's executors share the driver's JVM.
        conf["spark.driver.extraClassPath"] = ":".join(jars)
        conf["spark.executor.extraClassPath"] = ":".join(jars)
    conf.update({"spark.hadoop." + k: v for k, v in s3a_conf(env).items()})
    return conf


def hadoop_uri(uri: str, is_s3: bool) -> str:
    """What Hadoop opens: ``s3a://bucket/key`` for S3 objects, ``file:///abs/path`` for local files."""
    if is_s3:
        return "s3a://" + uri.split("://", 1)[1]
    if uri.startswith("file://"):
        return uri
    return "file://" + uri
