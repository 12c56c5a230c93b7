#!/usr/bin/env bash
# The image's entrypoint. Spark on Kubernetes starts driver and executor pods with the first
# argument `driver` or `executor` and describes the rest in SPARK_* environment variables;
# this turns them into the command Spark 4.2's Kubernetes backend (the one pyspark 4.2.0
# ships) expects: tests/deploy/test_entrypoint.py checks every variable and executor flag
# used here against pyspark's spark-kubernetes jar. Anything else runs as given
# (`dlpipe serve ...`). tini is PID 1: it reaps Spark's and Python's children and forwards
# signals. DLPIPE_ENTRYPOINT_DRY_RUN=1 prints the command instead of running it.
set -euo pipefail

spark_classpath() {
  local cp="${SPARK_CONF_DIR:-$SPARK_HOME/conf}"
  if [[ -n "${HADOOP_CONF_DIR:-}" ]]; then cp="$HADOOP_CONF_DIR:$cp"; fi
  cp="$cp${SPARK_CLASSPATH:+:$SPARK_CLASSPATH}:$SPARK_HOME/jars/*"
  cp="$cp${SPARK_EXTRA_CLASSPATH:+:$SPARK_EXTRA_CLASSPATH}${SPARK_DIST_CLASSPATH:+:$SPARK_DIST_CLASSPATH}"
  printf '%s' "$cp"
}

# SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ...: one JVM option each, in their numeric order.
executor_java_opts() {
  local name
  for name in $(compgen -e | grep -E '^SPARK_JAVA_OPT_[0-9]+$' | sort -t_ -k4 -n); do
    printf '%s\0' "${!name}"
  done
}

case "${1:-}" in
  driver)
    shift
    command=("$SPARK_HOME/bin/spark-submit"
             --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS:?set by Spark}"
             --deploy-mode client "$@")
    ;;
  executor)
    shift
    mapfile -d '' java_opts < <(executor_java_opts)
    command=("${JAVA_HOME:?}/bin/java" "${java_opts[@]}"
             "-Xms${SPARK_EXECUTOR_MEMORY:?set by Spark}" "-Xmx${SPARK_EXECUTOR_MEMORY}"
             -cp "$(spark_classpath)"
             org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend
             --driver-url "${SPARK_DRIVER_URL:?set by Spark}"
             --executor-id "${SPARK_EXECUTOR_ID:?set by Spark}"
             --cores "${SPARK_EXECUTOR_CORES:?set by Spark}"
             --app-id "${SPARK_APPLICATION_ID:?set by Spark}"
             --hostname "${SPARK_EXECUTOR_POD_IP:?set by Spark}"
             --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID:-0}"
             --podName "${SPARK_EXECUTOR_POD_NAME:?set by Spark}")
    ;;
  *)
    command=("$@")
    ;;
esac

if [[ -n "${DLPIPE_ENTRYPOINT_DRY_RUN:-}" ]]; then
  printf '%s\n' "${command[@]}"
  exit 0
fi
exec /usr/bin/tini -s -- "${command[@]}"
