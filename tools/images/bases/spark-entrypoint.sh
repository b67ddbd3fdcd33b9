#!/bin/bash
# /opt/entrypoint.sh of the local Spark base image (tools/images), written for this repository to honour
# the contract of the official apache/spark image's entry point, which Spark on Kubernetes relies on:
#
#   entrypoint.sh driver ARGS...     spark-submit in client mode inside the driver pod, bound to
#                                    $SPARK_DRIVER_BIND_ADDRESS (set by Spark's Kubernetes backend)
#   entrypoint.sh executor           the KubernetesExecutorBackend JVM, configured by the SPARK_EXECUTOR_*,
#                                    SPARK_DRIVER_URL, SPARK_APPLICATION_ID ... variables the driver sets
#   entrypoint.sh ANYTHING ELSE      run as given
#
# Spark processes run under tini (signals, zombie reaping); a uid without a passwd entry (OpenShift-style
# random uids) gets one through libnss_wrapper, because the JVM and Hadoop look the user name up.
set -eo pipefail

spark_home=${SPARK_HOME:-/opt/spark}

ensure_passwd_entry() {
  local uid gid lib
  uid=$(id -u)
  getent passwd "$uid" >/dev/null 2>&1 && return 0
  gid=$(id -g)
  for lib in /usr/lib/*/libnss_wrapper.so /usr/lib/libnss_wrapper.so; do
    [ -s "$lib" ] || continue
    NSS_WRAPPER_PASSWD=$(mktemp)
    NSS_WRAPPER_GROUP=$(mktemp)
    echo "spark:x:$uid:$gid:${SPARK_USER_NAME:-anonymous uid}:$spark_home:/bin/false" >"$NSS_WRAPPER_PASSWD"
    echo "spark:x:$gid:" >"$NSS_WRAPPER_GROUP"
    export LD_PRELOAD=$lib NSS_WRAPPER_PASSWD NSS_WRAPPER_GROUP
    return 0
  done
}

# As root (no USER given), the Spark process itself runs as the spark user.
as_spark() {
  if [ "$(id -u)" = 0 ]; then
    exec gosu spark /usr/bin/tini -s -- "$@"
  fi
  exec /usr/bin/tini -s -- "$@"
}

if [ -z "$JAVA_HOME" ]; then
  JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")
fi

# The classpath: configuration directories first, then Spark's jars, extra entries, the working directory.
classpath="$spark_home/jars/*"
[ -n "$SPARK_CLASSPATH" ] && classpath="$SPARK_CLASSPATH:$classpath"
[ -n "$SPARK_EXTRA_CLASSPATH" ] && classpath="$classpath:$SPARK_EXTRA_CLASSPATH"
if [ -n "$HADOOP_HOME" ] && [ -z "$SPARK_DIST_CLASSPATH" ]; then
  SPARK_DIST_CLASSPATH=$("$HADOOP_HOME/bin/hadoop" classpath)
  export SPARK_DIST_CLASSPATH
fi
[ -n "${HADOOP_CONF_DIR+x}" ] && classpath="$HADOOP_CONF_DIR:$classpath"
classpath="${SPARK_CONF_DIR:-$spark_home/conf}:$classpath"
classpath="$classpath:$PWD"

# The driver passes the executor's JVM options as SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... in order.
java_opts=()
for name in $(compgen -v SPARK_JAVA_OPT_ | sort -t_ -k4 -n); do
  java_opts+=("${!name}")
done

case "$1" in
  driver)
    shift
    ensure_passwd_entry
    as_spark "$spark_home/bin/spark-submit" \
      --conf "spark.driver.bindAddress=$SPARK_DRIVER_BIND_ADDRESS" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=$SPARK_DRIVER_BIND_ADDRESS" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    ensure_passwd_entry
    as_spark "$JAVA_HOME/bin/java" "${java_opts[@]}" \
      -Xms"$SPARK_EXECUTOR_MEMORY" -Xmx"$SPARK_EXECUTOR_MEMORY" \
      -cp "$classpath${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "$SPARK_DRIVER_URL" \
      --executor-id "$SPARK_EXECUTOR_ID" \
      --cores "$SPARK_EXECUTOR_CORES" \
      --app-id "$SPARK_APPLICATION_ID" \
      --hostname "$SPARK_EXECUTOR_POD_IP" \
      --resourceProfileId "$SPARK_RESOURCE_PROFILE_ID" \
      --podName "$SPARK_EXECUTOR_POD_NAME"
    ;;
  *)
    exec "$@"
    ;;
esac
