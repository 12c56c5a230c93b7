"""The config's sections: frozen pydantic models, one per top-level key of
``conf/pipeline.yaml``, and the derived endpoints (S3, Kafka, MLflow, Prometheus) that
default to the local stack's. Loading and layering live in ``dlpipe.core.config``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from dlpipe.core.errors import ConfigError

CREDENTIALS_FILE = "minio-credentials.json"


class _Section(BaseModel):
    """Immutable, picklable, no unknown keys; numbers are fine where a string is wanted."""
    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    @field_validator("*", mode="before")  # a classmethod
    def _no_bool_as_number(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, bool) and cls.model_fields[info.field_name].annotation in (int, float):
            raise ValueError("a number, not true/false")
        return value


class KafkaServiceConfig(_Section):
    port: int
    controller_port: int
    heap: str = "512m"


class MinioServiceConfig(_Section):
    port: int
    console_port: int


class PrometheusServiceConfig(_Section):
    port: int = 9090
    enabled: bool = True                  # false: `dlpipe stack up` starts no Prometheus
    scrape_interval_s: float = 5.0


class MlflowServiceConfig(_Section):
    port: int = 5000
    enabled: bool = True                  # false: `dlpipe stack up` starts no MLflow server


class SparkClusterConfig(_Section):
    master_port: int
    master_ui_port: int
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"


class K8sServiceConfig(_Section):
    """The loopback Kubernetes control plane's ports (``dlpipe k8s up``)."""
    api_port: int = 16443
    etcd_port: int = 12379
    etcd_peer_port: int = 12380
    controller_manager_port: int = 10257
    scheduler_port: int = 10259
    node_ip: str = "10.98.0.1"            # a second address on lo (kubelet refuses 127.x)
    pod_cidr: str = "10.88.0.0/24"
    kubelet_port: int = 10250
    kubelet_healthz_port: int = 10248
    kube_proxy_healthz_port: int = 10256
    kube_proxy_metrics_port: int = 10249
    dns_ready_port: int = 18181           # CoreDNS's /ready (it answers DNS on node_ip:53)
    # containerd's image content and snapshots (and which images were loaded into them); unset:
    # <state_dir>/k8s/node/containerd. Nodes of several state dirs (one at a time) may share one,
    # so an image of several GB is loaded once, not once per clone.
    image_store: Path | None = None


class StackConfig(_Section):
    state_dir: Path
    kafka: KafkaServiceConfig
    minio: MinioServiceConfig
    spark_cluster: SparkClusterConfig
    mlflow: MlflowServiceConfig = MlflowServiceConfig()
    prometheus: PrometheusServiceConfig = PrometheusServiceConfig()
    k8s: K8sServiceConfig = K8sServiceConfig()
    host: str = "127.0.0.1"
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0


class S3Config(_Section):
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool = True
    access_key_env: str = "DLPIPE_S3_ACCESS_KEY"
    secret_key_env: str = "DLPIPE_S3_SECRET_KEY"
    # One writer per ingest checkpoint, dataset version and predictions table (dlpipe.core.lease)
    lease_ttl_s: float = 60.0
    # boto3 attempts per call (standard mode: jittered backoff doubling to 20 s), enough to
    # ride out a store restart of several seconds
    max_attempts: int = Field(default=8, ge=1)


class BucketsConfig(_Section):
    lake: str
    datasets: str
    models: str
    checkpoints: str
    reports: str = "dlpipe-reports"
    mlflow: str = "dlpipe-mlflow"         # the local MLflow server's artifacts

    def names(self) -> list[str]:
        return [getattr(self, name) for name in type(self).model_fields]


class TopicConfig(_Section):
    name: str
    partitions: int = 1


class KafkaConfig(_Section):
    topics: dict[str, TopicConfig]
    bootstrap_servers: str | None = None


class TablesConfig(_Section):
    clean: str
    quarantine: str
    ingest_batches: str
    predictions: str = "s3a://dlpipe-lake/tables/predictions"
    served_samples: str = "s3a://dlpipe-lake/tables/served_samples"  # sampled requests (drift)


class ImageConfig(_Section):
    target_height: int
    target_width: int
    target_channels: int
    formats: list[str] = ["PNG", "JPEG"]
    max_pixels: int = 16_777_216
    max_bytes: int = 8_388_608


class SchemaVersionConfig(_Section):
    renamed: dict[str, str] = {}
    added: list[str] = []


class RulesConfig(_Section):
    filters: dict[str, str] = {}
    derived: dict[str, str] = {}


class IngestConfig(_Section):
    query_name: str
    checkpoint: str
    classes: list[str]
    image: ImageConfig
    schema_versions: dict[str, SchemaVersionConfig]
    rules: RulesConfig = RulesConfig()
    trigger_interval: str = "10 seconds"
    max_offsets_per_trigger: int = 5000
    min_partitions: int | None = None     # Spark tasks per batch; None: one per Kafka partition
    dedupe_horizon_days: int | None = 7   # None: against the whole clean table
    starting_offsets: str = "earliest"
    # Records past the checkpoint that Kafka's retention deleted: fail (name the gap and the
    # fix) or record them as DATA_LOSS rows in the accounting table and go on.
    on_data_loss: Literal["fail", "record"] = "fail"
    watermark_delay_s: int = 3600
    max_event_age_days: int = 3650
    max_clock_skew_s: int = 300
    max_future_skew_s: int = 900          # ahead of the ingest clock: FUTURE_EVENT_TIME


class ReaderConfig(_Section):
    """How training reads shards from the object store into a local, bounded cache."""
    cache_dir: Path = Path("~/.cache/dlpipe/shards")
    cache_max_gb: float = 8.0
    download_threads: int = 8
    range_mb: int = 16
    prefetch_shards: int = 2


class ExportConfig(_Section):
    dataset: str
    split: dict[str, float]
    split_salt: str = "dlpipe-split-v1"
    shard_target_mb: float = 100.0
    reader: ReaderConfig = ReaderConfig()


class TrainingConfig(_Section):
    workers: int = 2
    model_name: str = "digits-cnn"
    architecture: str = "small"
    epochs: int = 12
    batch_size: int = 64
    learning_rate: float = 0.002
    checkpoint_every_steps: int = 0
    augment: bool = False
    shuffle_buffer: int = 10_000
    memory_cache_mb: int = Field(1024, ge=0)  # decoded split kept in memory when it fits
    steps_per_execution: int = Field(4, ge=1)  # steps per compiled call
    threads: int = Field(0, ge=0)  # TensorFlow threads per worker; 0: host cores / workers on it
    seed: int = 0
    min_test_accuracy: float = 0.9        # bar for the lower confidence bound of test accuracy
    min_test_records: int = 50            # fewer test records: never promoted
    promotion_confidence: float = 0.95
    max_train_accuracy_gap: float = 0.05  # exported vs last-epoch train accuracy
    champion_margin: float = 0.0          # challenger test accuracy >= champion's + this
    bn_recalibration_batches: int = 100   # BatchNorm statistics re-estimated before export
    use_gpu: bool = False


class TrackingConfig(_Section):
    """MLflow tracking and registry: optional, never in the way of training or serving."""
    enabled: bool = True
    uri: str | None = None                # None: the local stack's MLflow server; "databricks"
    experiment: str = "dlpipe"
    timeout_s: float = 10.0               # per request; a slow or absent server only warns


class MonitoringConfig(_Section):
    """Prometheus metrics: long-running processes (ingest, serve) are scraped, batch jobs
    (export, train, score) push their run figures over OTLP when they end."""
    enabled: bool = True
    host: str = "127.0.0.1"               # where ingest's /metrics listens (0.0.0.0 in a pod)
    ingest_port: int = 0                  # ingest's /metrics; 0: a free port, announced below
    targets_dir: Path | None = None       # file_sd folder; None: the local stack's
    otlp_endpoint: str | None = None      # None: the local stack's Prometheus; "": no push
    timeout_s: float = 5.0


class ServingConfig(_Section):
    """``dlpipe serve``: which models, where, and the limits that protect the server."""
    models: list[str] = ["digits-cnn"]
    host: str = "127.0.0.1"
    port: int = 8501
    grpc_port: int = 8500                 # 0: no gRPC endpoint
    poll_interval_s: float = 10.0
    model_dir: Path = Path("~/.cache/dlpipe/models")
    max_body_bytes: int = 4_194_304
    max_instances: int = 256              # per request
    max_image_bytes: int = 1_048_576
    max_image_pixels: int = 4_194_304
    max_request_pixels: int = 16_777_216  # all images of one request, from their headers
    max_tensor_elements: int = 4_194_304  # per gRPC tensor, from its declared shape
    max_tensor_bytes: int = 16_777_216
    max_concurrent_requests: int = 64     # per protocol; more get 429 / RESOURCE_EXHAUSTED
    max_queued_examples: int = 1024       # per batcher; more get 503 / UNAVAILABLE
    request_timeout_s: float = 10.0       # deadline; unanswered by then: 503 / UNAVAILABLE
    batch_max_size: int = 64              # server-side batching across requests
    batch_timeout_ms: float = 0.2         # a batch's wait to fill under load (docs/serving.md)
    load_retry_max_s: float = 300.0       # a failed load is retried, backing off up to this
    keep_versions: int = 2                # local copies kept per model
    sample_rate: float = 0.0              # share of predicted examples sent to the samples topic
    auth_tokens_file: Path | None = None  # bearer tokens, one a line; None: no auth
    admin_port: int = 0                   # /metrics on this port instead; 0: on the API port
    tls_cert_file: Path | None = None     # PEM certificate (chain): HTTPS and gRPC over TLS
    tls_key_file: Path | None = None      # its PEM private key; both or neither


class DriftConfig(_Section):
    """``dlpipe drift``: live inputs and predictions against the served version's training data."""
    window_hours: float = 24.0            # live samples of the last this many hours
    min_samples: int = 100                # fewer: no verdict
    psi_threshold: float = 0.2            # population stability index above this: drift
    bins: int = 10                        # quantile bins of the training data, per statistic
    training_sample: int = 5000           # training rows whose statistics are the reference
    checkpoint: str = "s3a://dlpipe-checkpoints/drift/served-samples"


class ScoringConfig(_Section):
    """``dlpipe score``: batch inference over the clean table into ``tables.predictions``."""
    model: str | None = None              # None: training.model_name
    batch_size: int = Field(default=256, ge=1)
    tf_threads: int = 1                   # per Spark task; tasks already run in parallel
    # Rows per Arrow batch Spark hands a Python worker: bounds the worker's memory (a batch of
    # large photos is rows x image bytes) and how long the first predict call waits.
    arrow_batch_rows: int = Field(default=2048, ge=1)


class SparkConfig(_Section):
    master: str = "local[*]"
    app_name: str = "dlpipe"
    conf: dict[str, str] = {}


class MaintainConfig(_Section):
    vacuum_retention_hours: int = 168
    keep_dataset_days: int = 30
    vacuum_mode: Literal["lite", "full"] = "lite"  # lite: from the Delta log, falls back to full
    target_file_mb: int = Field(default=128, ge=1)  # OPTIMIZE's largest output file


class PipelineConfig(_Section):
    """One pipeline's name (``{pipeline}`` in topic, table, checkpoint, dataset and model names)
    and the dataset profile (``conf/profiles/<profile>.yaml``: image size, model, training)."""
    name: str = "digits"
    profile: str | None = None


class Config(_Section):
    pipeline: PipelineConfig = PipelineConfig()
    stack: StackConfig
    s3: S3Config
    buckets: BucketsConfig
    kafka: KafkaConfig
    tables: TablesConfig
    spark: SparkConfig
    ingest: IngestConfig
    export: ExportConfig
    training: TrainingConfig = TrainingConfig()
    tracking: TrackingConfig = TrackingConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    serving: ServingConfig = ServingConfig()
    scoring: ScoringConfig = ScoringConfig()
    drift: DriftConfig = DriftConfig()
    maintain: MaintainConfig = MaintainConfig()
    source: Path = Path("conf/pipeline.yaml")

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint or f"http://{self.stack.host}:{self.stack.minio.port}"

    @property
    def tracking_uri(self) -> str | None:
        """Where MLflow runs go: ``tracking.uri``, else the local stack's server; None: off."""
        if not self.tracking.enabled:
            return None
        return self.tracking.uri or f"http://{self.stack.host}:{self.stack.mlflow.port}"

    @property
    def metrics_targets_dir(self) -> Path | None:
        """Where scraped processes announce themselves (Prometheus file_sd); None: nowhere."""
        if not self.monitoring.enabled:
            return None
        return self.monitoring.targets_dir or self.stack.state_dir / "prometheus" / "targets"

    @property
    def otlp_metrics_endpoint(self) -> str | None:
        """Where batch jobs push their run figures; None: they do not."""
        if not self.monitoring.enabled or self.monitoring.otlp_endpoint == "":
            return None
        return self.monitoring.otlp_endpoint or (
            f"http://{self.stack.host}:{self.stack.prometheus.port}/api/v1/otlp/v1/metrics")

    @property
    def samples_topic(self) -> str:
        """Where ``dlpipe serve`` sends sampled requests (``kafka.topics.samples``)."""
        topic = self.kafka.topics.get("samples")
        return topic.name if topic else f"dlpipe.{self.pipeline.name}.served-samples"

    @property
    def kafka_bootstrap_servers(self) -> str:
        return self.kafka.bootstrap_servers or f"{self.stack.host}:{self.stack.kafka.port}"

    @property
    def spark_master(self) -> str:
        if self.spark.master == "cluster":
            return f"spark://{self.stack.host}:{self.stack.spark_cluster.master_port}"
        return self.spark.master

    def s3_credentials(self) -> tuple[str, str]:
        """The S3 key pair from the environment, else from the local stack's generated file."""
        key, secret = os.environ.get(self.s3.access_key_env), os.environ.get(self.s3.secret_key_env)
        if key and secret:
            return key, secret
        if (creds := self.stack.state_dir / CREDENTIALS_FILE).is_file():
            data = json.loads(creds.read_text())
            return data["access_key"], data["secret_key"]
        raise ConfigError(f"no S3 credentials: set {self.s3.access_key_env} and {self.s3.secret_key_env}",
                          fix=f"export them, or run `dlpipe stack up` to create the local MinIO's ({creds})")
