"""What a notebook needs from dlpipe to run the same on Databricks, in Jupyter and as plain Python.

Each notebook in ``notebooks/`` starts with ``nb = start(count=500, ...)``, which gives

* parameters: a Databricks widget per default when ``dbutils`` exists, else
  ``$DLPIPE_NB_<NAME>``, else the default (cast to the default's type); ``epochs``,
  ``batch_size``, ``workers`` and ``min_accuracy`` also set their ``training.*`` key;
* credentials: ``dbutils.secrets`` (scope ``$DLPIPE_SECRET_SCOPE``, default ``dlpipe``, keys
  ``s3-access-key``/``s3-secret-key``) when present, else the environment variables the
  config names, else the local stack's generated file (``Config.s3_credentials``);
* ``spark``: the notebook's own global (Databricks, a Jupyter kernel from ``dlpipe notebook``)
  with s3a filled in, else a new one: Spark Connect when ``$SPARK_REMOTE`` (or ``spark.remote``
  in ``spark.conf``) names a server, else a local session with the local install's jars.

``nb.run(job, **kwargs)`` calls ``job(spark, cfg, **kwargs)``. On a Spark Connect session a
job that needs a SparkContext (ingest, multi-worker training, scoring: docs/notebooks.md) runs
instead on a job runner (``dlpipe.cli.notebook_jobs``): a local Spark application of the
notebook's own, or the one ``$DLPIPE_NB_JOB_SOCKET`` names; the job's output streams into the
notebook and its return value comes back.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

    from dlpipe.cli.notebook_jobs import JobRunner
    from dlpipe.datasets.manifest import Manifest

log = logging.getLogger(__name__)

PARAM_ENV_PREFIX = "DLPIPE_NB_"
SECRET_SCOPE_ENV = "DLPIPE_SECRET_SCOPE"
SECRET_KEYS = {"s3-access-key": "access_key_env", "s3-secret-key": "secret_key_env"}
# Parameters that set a config key when a notebook has them.
PARAM_KEYS = {"epochs": "training.epochs", "batch_size": "training.batch_size",
              "workers": "training.workers", "min_accuracy": "training.min_test_accuracy"}
# Jobs that need a SparkContext, by the function a notebook passes to ``run``.
NEEDS_SPARK_CONTEXT = {"spark_jobs.ingest.job.run", "spark_jobs.train.job.train",
                       "spark_jobs.score.job.score"}


def _main_global(name: str) -> Any:
    """A global of the notebook (``spark``, ``dbutils`` on Databricks), or None."""
    import __main__

    return getattr(__main__, name, None)


def _cast(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    return type(default)(raw) if default is not None else raw


def read_params(defaults: Mapping[str, Any], *, dbutils: Any = None,
                environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """One value per default: a widget's with ``dbutils``, else ``$DLPIPE_NB_<NAME>``, else it."""
    environ = os.environ if environ is None else environ
    out = {}
    for name, default in defaults.items():
        if dbutils is not None:
            dbutils.widgets.text(name, "" if default is None else str(default))
            raw = dbutils.widgets.get(name)
        else:
            raw = environ.get(PARAM_ENV_PREFIX + name.upper())
        try:
            out[name] = default if raw in (None, "") else _cast(raw, default)
        except ValueError:
            raise DlpipeError(f"notebook parameter {name} must be a {type(default).__name__}, got {raw!r}",
                              fix=f"set {PARAM_ENV_PREFIX}{name.upper()} or the {name} widget") from None
    return out


def secrets_to_env(cfg: Config, dbutils: Any) -> None:
    """The S3 key pair from a Databricks secret scope into the variables the config names."""
    scope = os.environ.get(SECRET_SCOPE_ENV, "dlpipe")
    for key, attr in SECRET_KEYS.items():
        var = getattr(cfg.s3, attr)
        if not os.environ.get(var):
            os.environ[var] = dbutils.secrets.get(scope=scope, key=key)


def session(cfg: Config | None = None, spark: SparkSession | None = None) -> SparkSession:
    """``spark`` (or the notebook's global) with s3a filled in, else a new session: Spark
    Connect if one is named (``$SPARK_REMOTE``), else local with the local install's jars."""
    from dlpipe.cli.main import provide_jars
    from dlpipe.core.config import load_config
    from dlpipe.core.session import get_spark

    cfg = cfg or load_config()
    spark = spark or _main_global("spark")
    if spark is None:
        provide_jars()
    return get_spark(cfg, spark=spark, app_name="dlpipe-notebook")


@dataclass
class Notebook:
    cfg: Config
    spark: SparkSession
    params: dict[str, Any]
    figures: int = 0
    runner: JobRunner | None = field(default=None, repr=False)

    @property
    def connect(self) -> bool:
        from dlpipe.core.session import is_connect

        return is_connect(self.spark)

    def run(self, job: Callable[..., Any], **kwargs: Any) -> Any:
        """``job(spark, cfg, **kwargs)``; on a job runner's local session (``notebook_jobs``)
        when this notebook is on Spark Connect and the job needs a SparkContext."""
        from dlpipe.cli.notebook_jobs import JobRunner

        name = f"{job.__module__}.{job.__qualname__}"
        if not self.connect or name not in NEEDS_SPARK_CONTEXT:
            return job(self.spark, self.cfg, **kwargs)
        log.info(f"{name}: needs a SparkContext, which Spark Connect has not; running it in the "
                 "notebook's local Spark application")
        if self.runner is None or not self.runner.alive():
            self.runner = JobRunner.attach()
        return self.runner.call(name, self.cfg, kwargs)

    def show(self, figure: Any) -> None:
        """Display a figure (matplotlib, or a PNG data URI from dlpipe.cli.report) and count it."""
        from dlpipe.cli.notebook_views import display_figure

        display_figure(figure)
        self.figures += 1


def start(**defaults: Any) -> Notebook:
    """Parameters, credentials, config and ``spark`` for a notebook (see the module docstring)."""
    from dlpipe.core import logs
    from dlpipe.core.config import load_config, with_overrides

    logs.setup()
    dbutils = _main_global("dbutils")
    params = read_params(defaults, dbutils=dbutils)
    cfg = load_config()
    cfg = with_overrides(cfg, {key: params[name] for name, key in PARAM_KEYS.items() if name in params})
    if dbutils is not None:
        secrets_to_env(cfg, dbutils)
    return Notebook(cfg=cfg, spark=session(cfg), params=params)


# -- inputs a notebook can make for itself, so that each one also runs alone -------------

def delta_history(spark: SparkSession, path: str) -> DataFrame | None:
    """``DESCRIBE HISTORY`` of a Delta table (SQL, so Spark Connect too), None if there is none."""
    from pyspark.errors import AnalysisException

    try:
        return spark.sql(f"DESCRIBE HISTORY delta.`{path.replace('`', '``')}`")
    except AnalysisException:
        return None


def produce_digits(cfg: Config, *, count: int, bad_fraction: float = 0.05,
                   duplicate_fraction: float = 0.02, start: int = 0) -> Any:
    """Send ``count`` scikit-learn digits (with bad records of every kind) to the raw topic."""
    from datetime import UTC, datetime

    from dlpipe.localstack.provision import ensure_topics
    from dlpipe.produce.producer import plan_messages, produce
    from dlpipe.produce.records import BAD_KINDS
    from dlpipe.produce.sources import digits

    ensure_topics(cfg)
    messages = plan_messages(digits(start=start), count=count, prefix="digits", source="sklearn-digits",
                             now=datetime.now(UTC), bad_fraction=bad_fraction, bad_kinds=list(BAD_KINDS),
                             duplicate_fraction=duplicate_fraction, schema_version=1,
                             watermark_delay_s=cfg.ingest.watermark_delay_s, seed=start)
    return produce(cfg, messages, count=count, rate=0, log_path=None)


def ensure_clean_table(nb: Notebook, *, count: int) -> None:
    """Produce and ingest ``count`` digits unless the clean table exists."""
    from spark_jobs.ingest import job as ingest_job

    if delta_history(nb.spark, nb.cfg.tables.clean) is None:
        produce_digits(nb.cfg, count=count)
        nb.run(ingest_job.run, once=True)


def ensure_dataset(nb: Notebook, *, count: int) -> Manifest:
    """The newest published export, made (ingest, export) when there is none."""
    from dlpipe.core.s3 import s3_client
    from dlpipe.datasets.manifest import DatasetNotFoundError, open_manifest
    from spark_jobs.export import job as export_job

    try:
        return open_manifest(s3_client(nb.cfg), nb.cfg.buckets.datasets, nb.cfg.export.dataset)
    except DatasetNotFoundError:
        ensure_clean_table(nb, count=count)
        return export_job.export(nb.spark, nb.cfg)


def run_id_for(cfg: Config, manifest: Manifest) -> str:
    """The training run of ``training.model_name`` on a dataset version with these settings:
    the same inputs name the same run, which then resumes or returns its result."""
    t = cfg.training
    return f"{t.model_name}-{manifest.dataset}-v{manifest.delta_version}-e{t.epochs}-b{t.batch_size}"


def ensure_model(nb: Notebook, *, count: int, workers: int = 1) -> int:
    """The serving (newest promoted) version of ``training.model_name``, trained if there is none."""
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.release import serving_version
    from spark_jobs.train import job as train_job

    name, bucket = nb.cfg.training.model_name, nb.cfg.buckets.models
    version = serving_version(s3_client(nb.cfg), bucket, name)
    if version is None:
        manifest = ensure_dataset(nb, count=count)
        nb.run(train_job.train, workers=workers, run_id=run_id_for(nb.cfg, manifest))
        version = serving_version(s3_client(nb.cfg), bucket, name)
    if version is None:
        raise DlpipeError(f"model {name} has no promoted version (test accuracy below "
                          f"training.min_test_accuracy {nb.cfg.training.min_test_accuracy})",
                          fix="train longer (epochs) or lower training.min_test_accuracy")
    return version

