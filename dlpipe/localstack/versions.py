"""Every pinned version of what dlpipe runs, in one place.

Python packages are pinned in ``setup.cfg`` and ``requirements.lock``; this module pins what
is not a Python package: the Spark connector jars, the Kafka broker and the MinIO server.
The values were chosen because they run together on pyspark 4.2.0 (Hadoop 3.5.0, Scala
2.13); see ``docs/versions.md`` for why each one is what it is.
"""

from __future__ import annotations

SCALA_BINARY = "2.13"
SPARK_VERSION = "4.2.0"
# pyspark 4.2.0 bundles hadoop-client-api/runtime 3.5.0, and hadoop-aws must match it exactly.
HADOOP_VERSION = "3.5.0"
# delta-spark (pip) 4.4.1's own jar is not on Maven Central; 4.4.0 is the newest build for
# Spark 4.2 there, and the Python API is a thin py4j layer that is the same across the patch.
DELTA_VERSION = "4.4.0"

# Maven coordinates a Spark user would put in spark.jars.packages.
SPARK_PACKAGES: tuple[str, ...] = (
    f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}",
    f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}",
    f"io.delta:delta-spark_4.2_{SCALA_BINARY}:{DELTA_VERSION}",
)

# Transitive versions that must differ from what the packages above declare, because the
# declared one is not published on Maven Central. Each was checked to load and work on
# Spark 4.2.0 by the integration tests (tests/integration/test_stack_smoke.py).
SPARK_PACKAGE_OVERRIDES: dict[str, str] = {
    # spark-sql-kafka 4.2.0 asks for spark-token-provider-kafka 4.2.0, which Central lacks;
    # 4.0.0 is the newest published one and only serves Kafka delegation tokens.
    f"org.apache.spark:spark-token-provider-kafka-0-10_{SCALA_BINARY}": "4.0.0",
}

# Artifacts the packages above pull in that pyspark already ships (or that only matter for
# features we do not use); leaving them out keeps one copy of each class on the classpath.
SPARK_PACKAGE_EXCLUDES: tuple[str, ...] = (
    "org.apache.spark:spark-core_2.13",
    "org.apache.spark:spark-sql_2.13",
    "org.apache.spark:spark-catalyst_2.13",
    "org.apache.spark:spark-hive_2.13",
    "org.apache.hadoop:hadoop-client-api",
    "org.apache.hadoop:hadoop-client-runtime",
    "org.apache.hadoop:hadoop-common",
    "org.slf4j:slf4j-api",
    "com.google.code.findbugs:jsr305",
)

KAFKA_VERSION = "4.3.1"
LOG4J_VERSION = "2.25.2"
SLF4J_VERSION = "2.0.17"

# MinIO publishes no semver tags, so the module proxy knows its commits as pseudo-versions;
# this is the newest commit on master when dlpipe pinned it.
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"

# Prometheus 3's Go module versions are v0.<3xx>.<patch> (v0.316.0 is Prometheus 3.16.0); built
# with `go install` because its release binaries are not reachable from here.
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_VERSION = "v0.316.0"
