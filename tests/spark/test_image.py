"""Every place that names a version agrees: the Spark image's Dockerfile, pyproject.toml, the installed pyspark
and its Hadoop, the jars (``make images`` builds the image itself, tools/images)."""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import pyspark

from filedrop.spark import jars

REPO = Path(__file__).resolve().parents[2]


def _dockerfile_args() -> dict[str, str]:
    text = (REPO / "spark_images" / "Dockerfile").read_text()
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", text, re.M))


def test_dockerfile_versions_agree_with_pyproject_pyspark_and_jars() -> None:
    args = _dockerfile_args()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    [pin] = [d for d in pyproject["project"]["optional-dependencies"]["spark"] if d.startswith("pyspark")]
    assert pin.endswith("==" + args["SPARK_VERSION"]), pin
    assert importlib.metadata.version("pyspark") == args["SPARK_VERSION"] == jars.SPARK_VERSION
    bundled = {m.group(1) for p in (Path(pyspark.__file__).parent / "jars").glob("hadoop-client-*.jar")
               if (m := re.search(r"hadoop-client-(?:api|runtime)-([\d.]+)\.jar$", p.name))}
    assert bundled == {args["HADOOP_VERSION"]} == {jars.HADOOP_VERSION}
    assert args["AWS_SDK_VERSION"] == jars.AWS_SDK_VERSION
    assert args["ANALYTICS_ACCELERATOR_VERSION"] == jars.ANALYTICS_ACCELERATOR_VERSION


def test_the_jars_the_tests_use_are_the_pinned_ones() -> None:
    found = sorted(p.name for p in jars.jar_dir().glob("*.jar"))
    for jar in jars.ALL_JARS:
        assert jar.filename in found, f"{jar.filename} not in {jars.jar_dir()} (make spark-jars)"
    assert "hadoop-aws-" + _dockerfile_args()["HADOOP_VERSION"] + ".jar" in found


def test_image_runs_the_job_as_non_root() -> None:
    text = (REPO / "spark_images" / "Dockerfile").read_text()
    assert re.search(r"^USER 185$", text, re.M) and text.rstrip().splitlines()[-2:] != ["USER root"]
    # the base is a build argument whose default is the official image of the pinned Spark
    assert re.search(r"^ARG SPARK_IMAGE=apache/spark:\$\{SPARK_VERSION\}-", text, re.M)
    assert "FROM ${SPARK_IMAGE}" in text
    assert "/opt/filedrop/job.py" in text
