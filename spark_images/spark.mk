# Jars the Spark engine needs beside pyspark (hadoop-aws, its AWS SDK v2 bundle, the analytics accelerator,
# and the PostgreSQL JDBC driver for the write.jdbc benchmark baseline), resolved from Maven Central with
# `mvn dependency:copy` into ${XDG_CACHE_HOME:-~/.cache}/filedrop/spark-jars (never into the repository).
# Versions live in filedrop/spark/jars.py. Included by the top Makefile, which defines PY and `venv`.
SPARK_JARS_DIR ?= $(or $(FILEDROP_SPARK_JARS_DIR),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/filedrop/spark-jars)

.PHONY: spark-jars spark-jars-clean

spark-jars: venv
	@command -v java >/dev/null || { echo "installing a Java runtime for Spark"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null; }
	@command -v mvn >/dev/null || { echo "installing Maven to fetch the Spark jars"; apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; }
	@FILEDROP_SPARK_JARS_DIR="$(SPARK_JARS_DIR)" $(PY) -m filedrop.spark.jars fetch >/dev/null

spark-jars-clean:
	rm -rf "$(SPARK_JARS_DIR)"
