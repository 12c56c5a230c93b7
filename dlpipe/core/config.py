"""Typed pipeline config: ``conf/pipeline.yaml`` < running stack < environment < CLI flags.

The layers are merged and validated once into frozen pydantic models, so a typo or a wrong
type fails at start-up with the key's dotted name and the setting that fixes it. Secrets never
live in the config: it names the environment variables holding them. Plain pydantic, not
pydantic-settings: its sources fit none of our layers (aliases outside ``DLPIPE__``, map keys
with dots, YAML env values, an ``environ`` argument, ports in a movable ``stack.json``), and a
``BaseSettings`` re-reads ``os.environ`` whenever it is validated.
"""

from __future__ import annotations

import itertools
import json
import os
import reprlib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, ValidationInfo, field_validator

from dlpipe.core.errors import ConfigError
from dlpipe.core.layers import apply, cli_layer, expand, merge, parts, read_yaml

ENV_PREFIX = "DLPIPE__"
# Environment variables a deployment sets most often, with their config keys.
ENV_ALIASES: dict[str, str] = {
    "DLPIPE_S3_ENDPOINT": "s3.endpoint",
    "DLPIPE_KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "DLPIPE_SPARK_MASTER": "spark.master",
    "DLPIPE_STATE_DIR": "stack.state_dir",
    "DLPIPE_PIPELINE": "pipeline.name",
    "DLPIPE_PROFILE": "pipeline.profile",
}
RUNTIME_FILE = "stack.json"
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


class SparkClusterConfig(_Section):
    master_port: int
    master_ui_port: int
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"


class StackConfig(_Section):
    state_dir: Path
    kafka: KafkaServiceConfig
    minio: MinioServiceConfig
    spark_cluster: SparkClusterConfig
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


class BucketsConfig(_Section):
    lake: str
    datasets: str
    models: str
    checkpoints: str
    reports: str = "dlpipe-reports"

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
    watermark_delay_s: int = 3600
    max_event_age_days: int = 3650
    max_clock_skew_s: int = 300
    max_future_skew_s: int = 900          # ahead of the ingest clock: FUTURE_EVENT_TIME


class ReaderConfig(_Section):
    """How training reads shards from the object store into a local, bounded cache."""
    cache_dir: Path = Path("~/.cache/dlpipe/shards")
    cache_max_gb: float = 8.0
    download_threads: int = 8
    range_mb: int = 8
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
    seed: int = 0
    min_test_accuracy: float = 0.9        # bar for the lower confidence bound of test accuracy
    min_test_records: int = 50            # fewer test records: never promoted
    promotion_confidence: float = 0.95
    max_train_accuracy_gap: float = 0.05  # exported vs last-epoch train accuracy
    bn_recalibration_batches: int = 100   # BatchNorm statistics re-estimated before export
    use_gpu: bool = False


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
    batch_timeout_ms: float = 2.0
    load_retry_max_s: float = 300.0       # a failed load is retried, backing off up to this
    keep_versions: int = 2                # local copies kept per model
    auth_tokens_file: Path | None = None  # bearer tokens, one a line; None: no auth
    admin_port: int = 0                   # /metrics on this port instead; 0: on the API port


class ScoringConfig(_Section):
    """``dlpipe score``: batch inference over the clean table into ``tables.predictions``."""
    model: str | None = None              # None: training.model_name
    batch_size: int = 256
    tf_threads: int = 1                   # per Spark task; tasks already run in parallel


class SparkConfig(_Section):
    master: str = "local[*]"
    app_name: str = "dlpipe"
    conf: dict[str, str] = {}


class MaintainConfig(_Section):
    vacuum_retention_hours: int = 168
    keep_dataset_days: int = 30


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
    serving: ServingConfig = ServingConfig()
    scoring: ScoringConfig = ScoringConfig()
    maintain: MaintainConfig = MaintainConfig()
    source: Path = Path("conf/pipeline.yaml")

    @property
    def s3_endpoint(self) -> str:
        return self.s3.endpoint or f"http://{self.stack.host}:{self.stack.minio.port}"

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


def default_config_path() -> Path:
    """``$DLPIPE_CONFIG``, else ``./conf/pipeline.yaml``, else the one next to this package."""
    if env := os.environ.get("DLPIPE_CONFIG"):
        return Path(env)
    local = Path("conf/pipeline.yaml")
    return local if local.is_file() else Path(__file__).resolve().parents[2] / "conf" / "pipeline.yaml"


def load_config(path: str | Path | None = None, *, overrides: Iterable[str] | Mapping[str, Any] = (),
                environ: Mapping[str, str] | None = None) -> Config:
    """The validated config: ``overrides`` (``--set key.path=value`` strings, or dotted keys) >
    ``environ`` (default ``os.environ``) > the running stack's ports > the file."""
    path = Path(path) if path else default_config_path()
    raw = read_yaml(path, fix="pass --config PATH or set DLPIPE_CONFIG")
    layers = [_env_layer(os.environ if environ is None else environ), cli_layer(overrides)]
    for layer in layers:  # the profile and state_dir may come from env/CLI
        apply(raw, layer)
    if profile := (raw.get("pipeline") or {}).get("profile"):
        profiles = path.parent / "profiles"
        if not (chosen := profiles / f"{profile}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in profiles.glob("*.yaml"))) or f"none in {profiles}"
            raise ConfigError(f"unknown pipeline.profile {profile!r}: no {chosen}",
                              fix=f"choose one of: {known} (or add {chosen})")
        raw = merge(read_yaml(path, fix=""), read_yaml(chosen, fix=f"correct {chosen}"))
        for layer in layers:
            apply(raw, layer)
    if isinstance(stack := raw.setdefault("stack", {}), dict):
        state_dir = Path(str(stack.get("state_dir", ".dlpipe/stack"))).expanduser()
        state_dir = path.resolve().parent.parent / state_dir  # unchanged when absolute
        if (runtime := state_dir / RUNTIME_FILE).is_file():  # {"kafka": {"port": 9092}, ...}
            ports = read_yaml(runtime, fix=f"restart the stack (`dlpipe stack up`) or delete {runtime}")
            for layer in [{f"stack.{s}.{k}": v for s, d in ports.items() for k, v in d.items()}, *layers]:
                apply(raw, layer)
        raw["stack"]["state_dir"] = str(state_dir)
    name = str((raw.get("pipeline") or {}).get("name") or PipelineConfig().name)
    return _validate({**expand(raw, name), "source": str(path)}, path)


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted keys replaced (for tests and free-port stacks)."""
    return _validate(apply(cfg.model_dump(), overrides), cfg.source)


def _env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """Dotted keys from the aliases, then from ``DLPIPE__SECTION__KEY`` (which win). A list,
    mapping or section is parsed as YAML (so JSON too); any other value stays the string
    pydantic parses: ``local[2]`` and ``10 seconds`` stay strings, ``0700`` is 700."""
    names = [(name, key) for name, key in ENV_ALIASES.items() if environ.get(name)]
    names += [(name, name[len(ENV_PREFIX):].lower().replace("__", "."))
              for name in environ if name.startswith(ENV_PREFIX)]
    out: dict[str, Any] = {}
    for name, key in names:
        out[key] = environ[name]
        if _origin(_type_at(parts(key))) in (list, dict):
            try:
                out[key] = yaml.safe_load(environ[name])
            except yaml.YAMLError as exc:
                raise ConfigError(f"{name} is neither JSON nor YAML: {getattr(exc, 'problem', exc)}",
                                  fix=_setting(parts(key))) from None
    return out


# What a value of a type must be, and an example of one for the fix.
_KINDS: dict[Any, tuple[str, str]] = {
    bool: ("true or false", "true"), int: ("an integer", "8"), float: ("a number", "0.5"),
    str: ("a string", "text"), Path: ("a path", "/some/dir"), list: ("a list", "'[a, b]'"),
    dict: ("a mapping", "'{key: value}'"),
}


def _validate(raw: dict[str, Any], source: Path) -> Config:
    """``raw`` as a Config; pydantic's first error as ours: the key, what it must be, how to set it."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
    loc: tuple[str | int, ...] = err["loc"]
    key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    settable = [str(p) for p in itertools.takewhile(lambda p: isinstance(p, str), loc)]
    if err["type"] == "missing":
        raise ConfigError(f"missing config key {key}", fix=f"add it to {source} or set {_setting(settable)}")
    if err["type"] == "extra_forbidden":
        known = ", ".join(getattr(_type_at(loc[:-1]), "model_fields", ()))
        raise ConfigError(f"unknown config key {key} (known: {known})",
                          fix=f"correct or remove it in {source}, the environment or --set")
    kind = _KINDS.get(_origin(_type_at(loc)), (f"valid ({err['msg']})", ""))[0]
    raise ConfigError(f"{key} must be {kind}, got {reprlib.repr(err['input'])}", fix=_setting(settable))


def _setting(parts: list[str]) -> str:
    """How to set the key ``parts`` from the environment or the CLI, with an example value."""
    example = _KINDS.get(_origin(_type_at(parts)), ("", "..."))[1]
    env = ENV_PREFIX + "__".join(p.replace(".", "__").upper() for p in parts)
    return f"{env}={example} or --set {'.'.join(parts)}={example}"


def _type_at(parts: Sequence[str | int]) -> Any:
    """The type of the value at ``parts`` below ``Config`` (``X | None`` as X; None if no key)."""
    kind: Any = Config
    for part in parts:
        if hasattr(kind, "model_fields"):
            kind = getattr(kind.model_fields.get(str(part)), "annotation", None)
        elif _origin(kind) in (list, dict):
            kind = typing.get_args(kind)[-1]
        else:
            return None
        kind = typing.get_args(kind)[0] if type(None) in typing.get_args(kind) else kind
    return kind


def _origin(kind: Any) -> Any:  # list or dict for generics (dict for a section too), else the type
    return dict if hasattr(kind, "model_fields") else typing.get_origin(kind) or kind
