"""Typed pipeline config: ``conf/pipeline.yaml`` < running stack < environment < CLI flags.

The YAML is loaded once into frozen dataclasses and validated, so a typo or a wrong type
fails at start-up with the key's dotted name instead of deep inside a Spark job. Secrets
never live in the config: it names the environment variables that hold them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dlpipe.core.errors import ConfigError

ENV_PREFIX = "DLPIPE__"
# Environment variables a deployment sets most often, with their config keys.
ENV_ALIASES: dict[str, str] = {
    "DLPIPE_S3_ENDPOINT": "s3.endpoint",
    "DLPIPE_KAFKA_BOOTSTRAP_SERVERS": "kafka.bootstrap_servers",
    "DLPIPE_SPARK_MASTER": "spark.master",
    "DLPIPE_STATE_DIR": "stack.state_dir",
}
# Mappings whose keys contain dots themselves: `--set spark.conf.spark.sql.x=1` sets key
# "spark.sql.x" of spark.conf.
FREEFORM_MAPPINGS = ("spark.conf", "ingest.rules.filters", "ingest.rules.derived")
RUNTIME_FILE = "stack.json"
CREDENTIALS_FILE = "minio-credentials.json"


@dataclass(frozen=True)
class KafkaServiceConfig:
    port: int
    controller_port: int
    heap: str = "512m"


@dataclass(frozen=True)
class MinioServiceConfig:
    port: int
    console_port: int


@dataclass(frozen=True)
class SparkClusterConfig:
    master_port: int
    master_ui_port: int
    workers: int = 2
    worker_cores: int = 1
    worker_memory: str = "2g"


@dataclass(frozen=True)
class StackConfig:
    state_dir: Path
    kafka: KafkaServiceConfig
    minio: MinioServiceConfig
    spark_cluster: SparkClusterConfig
    host: str = "127.0.0.1"
    startup_timeout_s: float = 60.0
    stop_timeout_s: float = 20.0


@dataclass(frozen=True)
class S3Config:
    endpoint: str | None = None
    region: str = "us-east-1"
    path_style: bool = True
    access_key_env: str = "DLPIPE_S3_ACCESS_KEY"
    secret_key_env: str = "DLPIPE_S3_SECRET_KEY"


@dataclass(frozen=True)
class BucketsConfig:
    lake: str
    datasets: str
    models: str
    checkpoints: str
    reports: str = "dlpipe-reports"

    def names(self) -> list[str]:
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int = 1


@dataclass(frozen=True)
class KafkaConfig:
    topics: dict[str, TopicConfig]
    bootstrap_servers: str | None = None


@dataclass(frozen=True)
class TablesConfig:
    clean: str
    quarantine: str
    ingest_batches: str
    predictions: str = "s3a://dlpipe-lake/tables/predictions"


@dataclass(frozen=True)
class ImageConfig:
    target_height: int
    target_width: int
    target_channels: int
    formats: list[str] = field(default_factory=lambda: ["PNG", "JPEG"])
    max_pixels: int = 16_777_216
    max_bytes: int = 8_388_608


@dataclass(frozen=True)
class SchemaVersionConfig:
    renamed: dict[str, str] = field(default_factory=dict)
    added: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class RulesConfig:
    filters: dict[str, str] = field(default_factory=dict)
    derived: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestConfig:
    query_name: str
    checkpoint: str
    classes: list[str]
    image: ImageConfig
    schema_versions: dict[str, SchemaVersionConfig]
    rules: RulesConfig = field(default_factory=RulesConfig)
    trigger_interval: str = "10 seconds"
    max_offsets_per_trigger: int = 5000
    starting_offsets: str = "earliest"
    watermark_delay_s: int = 3600
    max_event_age_days: int = 3650
    max_clock_skew_s: int = 300


@dataclass(frozen=True)
class ReaderConfig:
    """How training reads shards from the object store into a local, bounded cache."""

    cache_dir: Path = Path("~/.cache/dlpipe/shards")
    cache_max_gb: float = 8.0
    download_threads: int = 8
    range_mb: int = 8
    prefetch_shards: int = 2


@dataclass(frozen=True)
class ExportConfig:
    dataset: str
    split: dict[str, float]
    split_salt: str = "dlpipe-split-v1"
    shard_target_mb: float = 100.0
    reader: ReaderConfig = field(default_factory=ReaderConfig)


@dataclass(frozen=True)
class TrainingConfig:
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
    min_test_accuracy: float = 0.95
    use_gpu: bool = False


@dataclass(frozen=True)
class ServingConfig:
    """``dlpipe serve``: which models, where, and the limits that protect the server."""

    models: list[str] = field(default_factory=lambda: ["digits-cnn"])
    host: str = "127.0.0.1"
    port: int = 8501
    grpc_port: int = 8500                 # 0: no gRPC endpoint
    poll_interval_s: float = 10.0
    model_dir: Path = Path("~/.cache/dlpipe/models")
    max_body_bytes: int = 4_194_304
    max_instances: int = 256              # per request
    max_image_bytes: int = 1_048_576
    max_image_pixels: int = 4_194_304
    batch_max_size: int = 64              # server-side batching across requests
    batch_timeout_ms: float = 2.0


@dataclass(frozen=True)
class ScoringConfig:
    """``dlpipe score``: batch inference over the clean table into ``tables.predictions``."""

    model: str | None = None              # None: training.model_name
    batch_size: int = 256
    tf_threads: int = 1                   # per Spark task; tasks already run in parallel


@dataclass(frozen=True)
class SparkConfig:
    master: str = "local[*]"
    app_name: str = "dlpipe"
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    stack: StackConfig
    s3: S3Config
    buckets: BucketsConfig
    kafka: KafkaConfig
    tables: TablesConfig
    spark: SparkConfig
    ingest: IngestConfig
    export: ExportConfig
    training: TrainingConfig = field(default_factory=TrainingConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    source: Path = Path("conf/pipeline.yaml")

    # -- endpoints of the local stack unless the config names others --------------------
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
        key = os.environ.get(self.s3.access_key_env)
        secret = os.environ.get(self.s3.secret_key_env)
        if key and secret:
            return key, secret
        creds = self.stack.state_dir / CREDENTIALS_FILE
        if creds.is_file():
            data = json.loads(creds.read_text())
            return data["access_key"], data["secret_key"]
        raise ConfigError(
            f"no S3 credentials: set {self.s3.access_key_env} and {self.s3.secret_key_env}",
            fix=f"export them, or run `dlpipe stack up` to create the local MinIO's ({creds})",
        )


# -- loading ------------------------------------------------------------------------------

def default_config_path() -> Path:
    """``$DLPIPE_CONFIG``, else ``./conf/pipeline.yaml``, else the one next to this package."""
    if env := os.environ.get("DLPIPE_CONFIG"):
        return Path(env)
    local = Path("conf/pipeline.yaml")
    if local.is_file():
        return local
    return Path(__file__).resolve().parents[2] / "conf" / "pipeline.yaml"


def load_config(
    path: str | Path | None = None,
    *,
    overrides: Iterable[str] | Mapping[str, Any] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate the config.

    ``overrides`` are ``key.path=value`` strings (the CLI's ``--set``) or a mapping of dotted
    keys to values; they win over the environment, which wins over the running stack's
    ports, which win over the file.
    """
    path = Path(path) if path else default_config_path()
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", fix="pass --config PATH or set DLPIPE_CONFIG")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    environ = os.environ if environ is None else environ
    layered = [_env_overrides(environ), _cli_overrides(overrides)]
    for layer in layered:  # state_dir may come from env/CLI; runtime ports live there
        _apply(raw, layer)
    root = path.resolve().parent.parent
    state_dir = _resolve_dir(raw.get("stack", {}).get("state_dir", ".dlpipe/stack"), root)
    runtime = state_dir / RUNTIME_FILE
    if runtime.is_file():
        _apply(raw, {f"stack.{k}": v for k, v in _flatten(json.loads(runtime.read_text())).items()})
        for layer in layered:
            _apply(raw, layer)
    raw.setdefault("stack", {})["state_dir"] = str(state_dir)
    cfg = _build(Config, {**raw, "source": str(path)}, "")
    return cfg


def with_overrides(cfg: Config, overrides: Mapping[str, Any]) -> Config:
    """A copy of ``cfg`` with dotted keys replaced (for tests and free-port stacks)."""
    raw = _to_raw(cfg)
    _apply(raw, dict(overrides))
    return _build(Config, raw, "")


def _resolve_dir(value: str, root: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (root / p)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in ENV_ALIASES.items():
        if environ.get(name):
            out[key] = environ[name]
    for name, value in environ.items():
        if name.startswith(ENV_PREFIX):
            out[name[len(ENV_PREFIX):].lower().replace("__", ".")] = value
    return out


def _cli_overrides(overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        return dict(overrides)
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes key.path=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value) if value else value
    return out


def _apply(raw: dict[str, Any], flat: Mapping[str, Any]) -> None:
    for dotted, value in flat.items():
        node = raw
        *parents, leaf = dotted.split(".")
        for mapping in FREEFORM_MAPPINGS:
            if dotted.startswith(mapping + "."):
                parents, leaf = mapping.split("."), dotted[len(mapping) + 1:]
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node[leaf] = value


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        if isinstance(v, Mapping):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _to_raw(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_raw(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: _to_raw(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_raw(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _build(tp: Any, value: Any, key: str) -> Any:
    """Turn YAML data into ``tp``, naming the dotted key of the first thing that is wrong."""
    name = key or "<config>"
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        known = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ConfigError(f"unknown config key {_join(key, unknown[0])} (known: {', '.join(known)})")
        kwargs = {}
        for fname, f in known.items():
            if fname in value:
                kwargs[fname] = _build(hints[fname], value[fname], _join(key, fname))
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing config key {_join(key, fname)}")
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _build(inner, value, key)
    if origin is list:
        (itype,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{name} must be a list, got {type(value).__name__}")
        return [_build(itype, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, vtype = typing.get_args(tp)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a mapping, got {type(value).__name__}")
        return {str(k): _build(vtype, v, _join(key, str(k))) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in {"true", "false", "1", "0", "yes", "no"}:
            return value.lower() in {"true", "1", "yes"}
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{name} must be a number, got {value!r}")
        try:
            return tp(value)
        except (TypeError, ValueError):
            kind = "an integer" if tp is int else "a number"
            raise ConfigError(f"{name} must be {kind}, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name} must be a string, got {value!r}")
    if tp is Path:
        return Path(str(value))
    raise ConfigError(f"{name}: unsupported config type {tp}")


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name
