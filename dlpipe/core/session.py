"""The one SparkSession factory every dlpipe job uses.

It composes with whoever else configures Spark: settings already given by ``spark-submit
--conf`` or an existing session (a notebook) win over ours, and an existing session is
reused and only has its S3 settings filled in. The conf itself is a pure function
(``spark_conf``) so it can be read and tested without starting a JVM.

The connector jars are a parameter (or ``$DLPIPE_SPARK_JARS``), never looked up here: under
``spark-submit --jars`` or on a cluster with the jars installed there is nothing to add, and
the local stack's installer (which the ``dlpipe`` CLI and the tests use) sits above the jobs.

A Spark Connect session (``remote="sc://host:15002"``, the ``spark.remote`` key of
``spark.conf``, or ``$SPARK_REMOTE``) is a client of a server that owns the JVM, the jars and
the static conf: only the s3a settings it lacks are filled in, as session conf. It has no
``sparkContext``; see ``docs/notebooks.md`` for the steps that need one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dlpipe.core.config import Config
from dlpipe.core.errors import MissingToolError
from dlpipe.core.process import scoped_environ

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

# Spark's default regex misses fs.s3a.secret.key's sibling fs.s3a.access.key; ours covers
# every s3a credential key, so neither shows in the UI, the event log or `spark.conf` dumps.
REDACTION_REGEX = r"(?i)secret|password|token|access[._-]?key|credential|session[._-]?key"

_LOOPBACK_PREFIXES = ("local", "spark://127.", "spark://localhost")
# Where the dlpipe CLI puts the local stack's connector jars for the jobs it starts.
JARS_ENV = "DLPIPE_SPARK_JARS"
# The spark.conf key (as pyspark's builder names it) that asks for a Spark Connect session.
REMOTE_KEY = "spark.remote"


def jars_from_env(environ: Mapping[str, str] | None = None) -> list[str]:
    """The jar paths in ``$DLPIPE_SPARK_JARS`` (separated by ``os.pathsep`` or commas)."""
    value = (os.environ if environ is None else environ).get(JARS_ENV, "")
    return [p for p in value.replace(",", os.pathsep).split(os.pathsep) if p]


# S3A takes its keys from the JVM's environment: a JVM dlpipe starts gets them from ``s3_env``
# (only for the launch), the local stack's Spark workers and Connect server from their start,
# and Kubernetes pods from the Secret. They are never in SparkConf, which any executor that
# registers with the driver can fetch, nor in the UI, event logs or a properties file.
ENV_PROVIDER = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
CONF_PROVIDER = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
KEY_ENV, SECRET_ENV = "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"


def s3_env(cfg: Config) -> dict[str, str]:
    """The environment S3A's ``EnvironmentVariableCredentialsProvider`` reads its keys from."""
    key, secret = cfg.s3_credentials()
    return {KEY_ENV: key, SECRET_ENV: secret}


def hadoop_s3a_conf(cfg: Config, *, keys: bool = False) -> dict[str, str]:
    """Hadoop settings that point s3a at the configured S3 service (MinIO by default). The
    keys are in it only with ``keys=True``: for a session dlpipe did not start and cannot
    give an environment (a notebook's, a Connect server's session conf)."""
    endpoint = cfg.s3_endpoint
    conf = {
        "fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "fs.s3a.endpoint": endpoint,
        "fs.s3a.endpoint.region": cfg.s3.region,
        "fs.s3a.path.style.access": str(cfg.s3.path_style).lower(),
        "fs.s3a.connection.ssl.enabled": str(endpoint.startswith("https")).lower(),
        "fs.s3a.aws.credentials.provider": ENV_PROVIDER,
        # Plain file output is committed by the S3A magic committer (no rename on S3).
        "fs.s3a.committer.name": "magic",
        "fs.s3a.committer.magic.enabled": "true",
        "mapreduce.outputcommitter.factory.scheme.s3a":
            "org.apache.hadoop.fs.s3a.commit.S3ACommitterFactory",
        "fs.s3a.connection.maximum": "64",
        "fs.s3a.threads.max": "32",
        "fs.s3a.fast.upload.buffer": "bytebuffer",
    }
    if keys:
        key, secret = cfg.s3_credentials()
        conf.update({"fs.s3a.aws.credentials.provider": CONF_PROVIDER,
                     "fs.s3a.access.key": key, "fs.s3a.secret.key": secret})
    return conf


def spark_conf(
    cfg: Config,
    *,
    jars: Sequence[str | Path] = (),
    app_name: str | None = None,
    master: str | None = None,
    extra: Mapping[str, str] | None = None,
    keys: bool = False,
) -> dict[str, str]:
    """Everything dlpipe sets on a new session, as plain strings (the S3 keys only with
    ``keys=True``; see ``s3_env``)."""
    master = master or cfg.spark_master
    conf = {
        "spark.master": master,
        "spark.app.name": app_name or cfg.spark.app_name,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.redaction.regex": REDACTION_REGEX,
        "spark.sql.redaction.string.regex": REDACTION_REGEX,
        # Executors' Python must match the driver's (see README).
        "spark.pyspark.python": sys.executable,
        **{f"spark.hadoop.{k}": v for k, v in hadoop_s3a_conf(cfg, keys=keys).items()},
    }
    jars = [str(p) for p in jars]
    if jars and master.startswith("local"):
        # The executor lives in the driver's JVM: put the jars on its classpath. spark.jars
        # would copy all ~680 MB into a temp dir per session (seconds of start-up, and left
        # on disk whenever a JVM is killed).
        conf["spark.driver.extraClassPath"] = os.pathsep.join(jars)
    elif jars:
        conf["spark.jars"] = ",".join(jars)
    if master.startswith(_LOOPBACK_PREFIXES):
        # The local stack listens on loopback only; keep the driver there too.
        conf["spark.driver.host"] = cfg.stack.host
        conf["spark.driver.bindAddress"] = cfg.stack.host
    conf.update(cfg.spark.conf)
    conf.update(extra or {})
    return conf


def get_spark(
    cfg: Config,
    *,
    app_name: str | None = None,
    master: str | None = None,
    extra_conf: Mapping[str, str] | None = None,
    spark: SparkSession | None = None,
    jars: Sequence[str | Path] | None = None,
    remote: str | None = None,
) -> SparkSession:
    """The session for a dlpipe job: ``spark`` or the active one if any, else a new one.

    A new session takes dlpipe's conf for every key the launcher (``spark-submit --conf``,
    ``PYSPARK_SUBMIT_ARGS``) did not already set. ``jars`` (default: ``$DLPIPE_SPARK_JARS``)
    are the connector jars to add; none are needed when the launcher already passed them.
    ``remote`` (default: ``spark.conf`` key ``spark.remote``, else ``$SPARK_REMOTE``) attaches
    to a Spark Connect server instead of starting a JVM here.
    """
    from pyspark.sql import SparkSession

    existing = spark or SparkSession.getActiveSession()
    if existing is not None:
        _fill_s3a(existing, cfg)
        return existing
    remote = remote or remote_url(cfg)
    if remote:
        session = SparkSession.builder.remote(remote).getOrCreate()
        _fill_s3a(session, cfg)
        return session
    # A driver started from Python picks its workers' interpreter from PYSPARK_PYTHON (the
    # conf key only reaches spark-submit's launcher).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    if (master or cfg.spark_master).startswith(_LOOPBACK_PREFIXES):
        # Spark's web UI binds every interface unless SPARK_LOCAL_IP names one.
        os.environ.setdefault("SPARK_LOCAL_IP", cfg.stack.host)
    given = _launcher_conf()
    # A JVM started here inherits the keys (S3A reads them from its environment); a JVM that
    # spark-submit started has its environment already: without the keys there, they go in
    # the conf as before, with a warning that names the fix.
    launched = "PYSPARK_GATEWAY_PORT" not in os.environ
    keys = not launched and not _jvm_has_s3_env()
    if keys:
        log.warning(f"S3 keys: {KEY_ENV}/{SECRET_ENV} are not in this driver's environment, so "
                    "they go in the Spark conf (redacted in the UI, but readable by anything that "
                    f"registers with the driver). fix: export {KEY_ENV} and {SECRET_ENV} for "
                    "spark-submit and its executors (the Helm chart does)")
    wanted = spark_conf(cfg, jars=jars_from_env() if jars is None else jars, app_name=app_name,
                        master=master, extra=extra_conf, keys=keys)
    wanted.pop(REMOTE_KEY, None)
    builder = SparkSession.builder
    for key, value in wanted.items():
        if key == "spark.jars" and given.get(key):
            value = f"{given[key]},{value}"
        elif key in given:
            continue
        builder = builder.config(key, value)
    # The keys are in os.environ only while the JVM is launched (it copies the environment).
    with scoped_environ(s3_env(cfg) if launched else {}):
        session = builder.getOrCreate()
    _check_connectors(session)
    return session


@contextlib.contextmanager
def session_conf(spark: SparkSession, key: str, value: str) -> Iterator[None]:
    """``key`` set to ``value`` for the block, then back to what it was (or unset): a job's
    own setting without changing the caller's session (a notebook's, a streaming driver's)."""
    previous = spark.conf.get(key, None)
    spark.conf.set(key, value)
    try:
        yield
    finally:
        if previous is None:
            spark.conf.unset(key)
        else:
            spark.conf.set(key, previous)


def _jvm_has_s3_env() -> bool:
    from pyspark import SparkContext

    SparkContext._ensure_initialized()
    system = SparkContext._jvm.java.lang.System  # type: ignore[union-attr]
    return bool(system.getenv(KEY_ENV)) and bool(system.getenv(SECRET_ENV))


def _launcher_conf() -> dict[str, str]:
    """What ``spark-submit`` passed to this driver; empty when plain Python runs it."""
    if "PYSPARK_GATEWAY_PORT" not in os.environ:
        return {}
    from pyspark import SparkConf, SparkContext

    SparkContext._ensure_initialized()
    return dict(SparkConf().getAll())


def remote_url(cfg: Config, environ: Mapping[str, str] | None = None) -> str | None:
    """The Spark Connect URL asked for (``spark.conf`` key ``spark.remote``, else
    ``$SPARK_REMOTE``), or None for a session with its own JVM."""
    environ = os.environ if environ is None else environ
    return cfg.spark.conf.get(REMOTE_KEY) or environ.get("SPARK_REMOTE") or None


def is_connect(spark: SparkSession) -> bool:
    """True for a Spark Connect session (no ``sparkContext``, no JVM in this process)."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _fill_s3a(spark: SparkSession, cfg: Config) -> None:
    """Point an existing session's s3a at our S3 service unless it already has an endpoint."""
    if is_connect(spark):
        _fill_s3a_connect(spark, cfg)
        return
    hconf = spark.sparkContext._jsc.hadoopConfiguration()
    if hconf.get("fs.s3a.endpoint"):
        return
    for key, value in hadoop_s3a_conf(cfg, keys=True).items():
        hconf.set(key, value)
    _check_connectors(spark)


def _fill_s3a_connect(spark: SparkSession, cfg: Config) -> None:
    """A Connect session has no Hadoop conf of its own to reach: its SQL conf is merged into
    the Hadoop conf of every read and write it makes, so the s3a keys go there. The classpath
    is the server's; what it lacks shows on the first read."""
    if spark.conf.get("spark.hadoop.fs.s3a.endpoint", None) or spark.conf.get("fs.s3a.endpoint", None):
        return
    for key, value in hadoop_s3a_conf(cfg, keys=True).items():
        spark.conf.set(key, value)
    extensions = spark.conf.get("spark.sql.extensions", None) or ""
    if "DeltaSparkSessionExtension" not in extensions:
        raise MissingToolError(
            "the Spark Connect server has no Delta extension (spark.sql.extensions)",
            fix="start it with `dlpipe stack up --connect`, or add io.delta.sql.DeltaSparkSessionExtension "
            "and the jars from `dlpipe jars` to its conf",
        )


def _check_connectors(spark: SparkSession) -> None:
    jvm = spark.sparkContext._jvm
    loader = jvm.Thread.currentThread().getContextClassLoader()
    for cls, what in [
        ("org.apache.hadoop.fs.s3a.S3AFileSystem", "hadoop-aws"),
        ("io.delta.sql.DeltaSparkSessionExtension", "delta-spark"),
    ]:
        try:
            jvm.java.lang.Class.forName(cls, False, loader)
        except Exception as exc:
            raise MissingToolError(
                f"{what} is not on this Spark session's classpath ({cls} not found)",
                fix="start Spark through dlpipe, or pass the jars: "
                "spark-submit --jars \"$(dlpipe jars)\" ...",
            ) from exc
