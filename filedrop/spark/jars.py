"""The jars the Spark engine needs beside pyspark, pinned, and where they are cached.

Pure constants plus a small ``fetch`` command (``python -m filedrop.spark.jars fetch``, run by
``make spark-jars``) that resolves them from Maven Central with ``mvn dependency:copy`` into
``${XDG_CACHE_HOME:-~/.cache}/filedrop/spark-jars`` (never into the repository).

The versions must move together: hadoop-aws is the Hadoop of pyspark's bundled ``hadoop-client-*`` jars
(pyspark 4.3.0 ships Hadoop 3.5.0), the AWS SDK v2 bundle and the analytics accelerator are the versions
hadoop-aws 3.5.0 was built against (``hadoop-project-3.5.0.pom``). ``spark_images/Dockerfile`` repeats
them as build arguments and ``tests/spark/test_image.py`` checks that all of them agree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: The Spark version is the pinned pyspark (pyproject.toml ``spark`` extra).
SPARK_VERSION = "4.3.0"
HADOOP_VERSION = "3.5.0"
AWS_SDK_VERSION = "2.35.4"
ANALYTICS_ACCELERATOR_VERSION = "1.3.1"
#: Only the stock ``DataFrame.write.jdbc`` baseline of the benchmark uses JDBC; the engine writes with COPY.
POSTGRESQL_JDBC_VERSION = "42.7.14"


@dataclass(frozen=True)
class Jar:
    group: str
    artifact: str
    version: str

    @property
    def coordinate(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"

    @property
    def filename(self) -> str:
        return f"{self.artifact}-{self.version}.jar"


#: Needed to read ``s3a://`` (hadoop-aws and what it links against at run time).
S3A_JARS = (
    Jar("org.apache.hadoop", "hadoop-aws", HADOOP_VERSION),
    Jar("software.amazon.awssdk", "bundle", AWS_SDK_VERSION),
    Jar("software.amazon.s3.analyticsaccelerator", "analyticsaccelerator-s3", ANALYTICS_ACCELERATOR_VERSION),
)
JDBC_JARS = (Jar("org.postgresql", "postgresql", POSTGRESQL_JDBC_VERSION),)
ALL_JARS = S3A_JARS + JDBC_JARS


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "filedrop"


def jar_dir() -> Path:
    """``FILEDROP_SPARK_JARS_DIR``, else ``<cache>/filedrop/spark-jars``."""
    return Path(os.environ.get("FILEDROP_SPARK_JARS_DIR") or cache_dir() / "spark-jars")


def jar_paths(jars: tuple[Jar, ...] = ALL_JARS) -> list[Path]:
    return [jar_dir() / j.filename for j in jars]


def missing(jars: tuple[Jar, ...] = ALL_JARS) -> list[Jar]:
    return [j for j in jars if not (jar_dir() / j.filename).is_file()]


def fetch(jars: tuple[Jar, ...] = ALL_JARS) -> list[Path]:
    """Resolve the jars from Maven Central (checksums verified by Maven), atomically into :func:`jar_dir`."""
    todo = missing(jars)
    target = jar_dir()
    target.mkdir(parents=True, exist_ok=True)
    if todo and not shutil.which("mvn"):
        raise SystemExit("mvn not found: install Maven (Debian: apt-get install maven) to fetch the Spark jars")
    repo = cache_dir() / "m2"
    for jar in todo:
        with tempfile.TemporaryDirectory(dir=target) as tmp:
            cmd = ["mvn", "-B", "-q", f"-Dmaven.repo.local={repo}", "dependency:copy",
                   f"-Dartifact={jar.coordinate}", f"-DoutputDirectory={tmp}"]
            print(f"fetching {jar.coordinate}", file=sys.stderr)
            subprocess.run(cmd, check=True, cwd=tmp)
            os.replace(Path(tmp) / jar.filename, target / jar.filename)
        # The copy in the local Maven repository would double the disk use (the SDK bundle is ~650 MB).
        shutil.rmtree(repo / jar.group.replace(".", "/") / jar.artifact / jar.version, ignore_errors=True)
    return jar_paths(jars)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["fetch"]:
        for p in fetch():
            print(p)
        return 0
    if args == ["path"]:
        print(jar_dir())
        return 0
    if args == ["classpath"]:
        print(",".join(str(p) for p in jar_paths()))
        return 0
    print("usage: python -m filedrop.spark.jars fetch|path|classpath", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
