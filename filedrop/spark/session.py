"""The SparkSession the engine runs on: the one ``spark-submit`` made (cluster), or a local one.

Adapter layer. A local session (``filedrop load --engine spark``, tests) is ``local[*]`` with the jars
of :mod:`filedrop.spark.jars` from the cache (``make spark-jars``) and the S3A settings of
:mod:`filedrop.spark.conf`. In the cluster, the image has the jars on Spark's classpath and the
SparkApplication carries the configuration.
"""

from __future__ import annotations

import logging
import os
import sys

from pyspark.sql import SparkSession

from filedrop.spark import conf, jars

log = logging.getLogger(__name__)


def get_session() -> SparkSession:
    """The active session, else a new one; S3A settings are (re)applied from the environment."""
    spark = SparkSession.getActiveSession()
    if spark is None:
        submitted = "PYSPARK_GATEWAY_PORT" in os.environ  # started by spark-submit
        found = [str(p) for p in jars.jar_paths() if p.is_file()]
        if not submitted and len(found) < len(jars.ALL_JARS):
            log.warning("Spark jars missing in %s (run `make spark-jars`): s3a:// cannot be read", jars.jar_dir())
        # pyspark takes the workers' interpreter from this variable when the context starts (not from
        # spark.pyspark.python, which only spark-submit reads); default: the interpreter running us.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder
        settings = conf.session_conf(os.environ, jars=[] if submitted else found)
        if not submitted and "spark.master" not in settings:
            settings["spark.master"] = "local[*]"
        for key, value in settings.items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    for key, value in conf.s3a_conf(os.environ).items():
        hadoop.set(key, value)
    return spark
