from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from dlpipe.core.config import CREDENTIALS_FILE, RUNTIME_FILE, load_config, with_overrides
from dlpipe.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
YAML = ROOT / "conf" / "pipeline.yaml"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A copy of the shipped config in a throwaway project root."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pipeline.yaml").write_text(YAML.read_text())
    return tmp_path / "conf" / "pipeline.yaml"


def test_shipped_config_loads_with_local_defaults(project: Path) -> None:
    cfg = load_config(project, environ={})
    assert cfg.stack.state_dir == project.parent.parent / ".dlpipe" / "stack"
    assert cfg.s3_endpoint == "http://127.0.0.1:9000"
    assert cfg.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert cfg.spark_master == "local[*]"
    assert cfg.kafka.topics["raw"].partitions == 4


def test_precedence_file_then_running_stack_then_env_then_cli(project: Path) -> None:
    state = project.parent.parent / ".dlpipe" / "stack"
    state.mkdir(parents=True)
    (state / RUNTIME_FILE).write_text(json.dumps({"kafka": {"port": 1111}, "minio": {"port": 2222}}))
    cfg = load_config(project, environ={})
    assert (cfg.stack.kafka.port, cfg.stack.minio.port) == (1111, 2222)
    assert cfg.s3_endpoint == "http://127.0.0.1:2222"

    env = {"DLPIPE_S3_ENDPOINT": "http://minio.svc:9000", "DLPIPE__STACK__KAFKA__PORT": "3333"}
    cfg = load_config(project, environ=env)
    assert cfg.s3_endpoint == "http://minio.svc:9000"
    assert cfg.stack.kafka.port == 3333

    cfg = load_config(project, environ=env, overrides=["stack.kafka.port=4444", "spark.master=cluster"])
    assert cfg.stack.kafka.port == 4444
    assert cfg.spark_master == f"spark://127.0.0.1:{cfg.stack.spark_cluster.master_port}"


def test_spark_conf_keys_keep_their_dots(project: Path) -> None:
    env = {"DLPIPE__SPARK__CONF__SPARK__SQL__ADAPTIVE__ENABLED": "false"}
    cfg = load_config(project, environ=env, overrides=["spark.conf.spark.executor.memory=3g"])
    assert cfg.spark.conf["spark.executor.memory"] == "3g"
    assert cfg.spark.conf["spark.sql.adaptive.enabled"] == "false"
    assert cfg.spark.conf["spark.sql.shuffle.partitions"] == "8"


def test_state_dir_from_env_finds_that_stacks_ports(project: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / RUNTIME_FILE).write_text(json.dumps({"minio": {"port": 5555}}))
    cfg = load_config(project, environ={"DLPIPE_STATE_DIR": str(other)})
    assert cfg.stack.state_dir == other
    assert cfg.stack.minio.port == 5555


@pytest.mark.parametrize(("override", "message"), [
    ("stack.kafka.port=not-a-port", "stack.kafka.port must be an integer, got 'not-a-port'"),
    ("s3.bogus=1", "unknown config key s3.bogus"),
    ("s3.path_style=maybe", "s3.path_style must be true or false"),
    ("kafka.topics.raw.partitions=[1]", "kafka.topics.raw.partitions must be an integer"),
])
def test_bad_values_name_the_key(project: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(project, environ={}, overrides=[override])


def test_missing_required_key_is_named(project: Path) -> None:
    line = "  quarantine: s3a://dlpipe-lake/{pipeline}/quarantine\n"
    project.write_text(project.read_text().replace(line, ""))
    with pytest.raises(ConfigError, match=r"missing config key tables\.quarantine"):
        load_config(project, environ={})


def test_set_flag_needs_key_and_value(project: Path) -> None:
    with pytest.raises(ConfigError, match=r"--set takes key\.path=value"):
        load_config(project, environ={}, overrides=["spark.master"])


def test_credentials_come_from_env_first_then_the_local_stack_file(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = load_config(project, environ={})
    monkeypatch.delenv(cfg.s3.access_key_env, raising=False)
    monkeypatch.delenv(cfg.s3.secret_key_env, raising=False)
    with pytest.raises(ConfigError) as err:
        cfg.s3_credentials()
    assert "DLPIPE_S3_ACCESS_KEY" in str(err.value) and "dlpipe stack up" in str(err.value)

    cfg.stack.state_dir.mkdir(parents=True)
    (cfg.stack.state_dir / CREDENTIALS_FILE).write_text(json.dumps({"access_key": "f", "secret_key": "s"}))
    assert cfg.s3_credentials() == ("f", "s")
    monkeypatch.setenv(cfg.s3.access_key_env, "env-key")
    monkeypatch.setenv(cfg.s3.secret_key_env, "env-secret")
    assert cfg.s3_credentials() == ("env-key", "env-secret")


def test_with_overrides_returns_a_validated_copy(project: Path) -> None:
    cfg = load_config(project, environ={})
    moved = with_overrides(cfg, {"stack.minio.port": 9100})
    assert moved.s3_endpoint == "http://127.0.0.1:9100"
    assert cfg.s3_endpoint == "http://127.0.0.1:9000"
    with pytest.raises(ConfigError, match=r"stack\.minio\.port"):
        with_overrides(cfg, {"stack.minio.port": "x"})


@pytest.mark.parametrize("value", ["[a, b]", '["a","b"]', '  ["a", "b"]'])
def test_env_list_as_yaml_or_json(project: Path, value: str) -> None:
    cfg = load_config(project, environ={"DLPIPE__INGEST__CLASSES": value})
    assert cfg.ingest.classes == ["a", "b"]


def test_env_map_as_yaml_replaces_the_file_s(project: Path) -> None:
    cfg = load_config(project, environ={"DLPIPE__INGEST__RULES__FILTERS": '{a: "x > 1"}'})
    assert cfg.ingest.rules.filters == {"a": "x > 1"}
    cfg = load_config(project, environ={"DLPIPE__EXPORT__SPLIT": '{"train": 1}'})
    assert cfg.export.split == {"train": 1.0}


def test_env_scalars_are_parsed_by_their_field_not_as_yaml(project: Path) -> None:
    cfg = load_config(project, environ={
        "DLPIPE__SPARK__MASTER": "local[2]", "DLPIPE__INGEST__TRIGGER_INTERVAL": "10 seconds",
        "DLPIPE__INGEST__QUERY_NAME": "on", "DLPIPE__SPARK__APP_NAME": "[x]",
        "DLPIPE__TRAINING__EPOCHS": "0700", "DLPIPE__TRAINING__LEARNING_RATE": "1e3",
        "DLPIPE__TRAINING__AUGMENT": "yes", "DLPIPE__SCORING__MODEL": "null",
    })
    assert (cfg.spark.master, cfg.ingest.trigger_interval) == ("local[2]", "10 seconds")
    assert (cfg.ingest.query_name, cfg.spark.app_name, cfg.scoring.model) == ("on", "[x]", "null")
    assert (cfg.training.epochs, cfg.training.learning_rate, cfg.training.augment) == (700, 1000.0, True)


@pytest.mark.parametrize(("env", "message", "fix"), [
    ({"DLPIPE__INGEST__CLASSES": "a"}, "ingest.classes must be a list, got 'a'",
     "fix: DLPIPE__INGEST__CLASSES='[a, b]' or --set ingest.classes='[a, b]'"),
    ({"DLPIPE__INGEST__CLASSES": "[a, b"}, "DLPIPE__INGEST__CLASSES is neither JSON nor YAML",
     "fix: DLPIPE__INGEST__CLASSES='[a, b]'"),
    ({"DLPIPE__INGEST__IMAGE__TARGET_HEIGHT": "x"}, "ingest.image.target_height must be an integer, got 'x'",
     "fix: DLPIPE__INGEST__IMAGE__TARGET_HEIGHT=8 or --set ingest.image.target_height=8"),
    ({"DLPIPE__INGEST__RULES__FILTERS": "[a]"}, "ingest.rules.filters must be a mapping, got ['a']",
     "--set ingest.rules.filters='{key: value}'"),
    ({"DLPIPE__INGEST__FOO": "1"}, "unknown config key ingest.foo (known: query_name, checkpoint,",
     "fix: correct or remove it in"),
])
def test_wrong_env_values_name_the_key_and_the_fix(project: Path, env: dict, message: str, fix: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(project, environ=env)
    assert message in str(err.value) and fix in str(err.value)
    assert err.value.fix is not None and "pydantic" not in str(err.value)


@pytest.mark.parametrize(("override", "message"), [
    ("stack.kafka.port=true", "stack.kafka.port must be an integer, got True"),
    ("ingest.classes=[a, [b]]", "ingest.classes[1] must be a string, got ['b']"),
    ("kafka.topics.raw.bogus=1", "unknown config key kafka.topics.raw.bogus (known: name, partitions)"),
    ("spark.conf.spark.x=[1]", "spark.conf.spark.x must be a string"),
    ("stack=3", "stack must be a mapping, got 3"),
])
def test_more_bad_values_name_the_key(project: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(project, environ={}, overrides=[override])
    assert message in str(err.value) and err.value.fix


def test_numbers_are_fine_for_strings(project: Path) -> None:
    cfg = load_config(project, environ={}, overrides=["spark.conf.spark.x=8", "ingest.classes=[0, 1]"])
    assert (cfg.spark.conf["spark.x"], cfg.ingest.classes) == ("8", ["0", "1"])


def test_loaded_config_pickles_round_trip(project: Path) -> None:
    cfg = load_config(project, environ={"DLPIPE__INGEST__CLASSES": "[a, b]"})
    copy = pickle.loads(pickle.dumps(cfg))
    assert copy == cfg and copy.ingest.classes == ["a", "b"]
    assert isinstance(copy.stack.state_dir, Path) and copy.s3_endpoint == cfg.s3_endpoint
    assert copy.buckets.names() == cfg.buckets.names()


def test_with_overrides_keeps_configs_immutable(project: Path) -> None:
    cfg = load_config(project, environ={})
    moved = with_overrides(cfg, {"spark.conf.spark.sql.x": "1", "ingest.classes": ["a"]})
    assert moved.spark.conf["spark.sql.x"] == "1" and "spark.sql.x" not in cfg.spark.conf
    assert cfg.ingest.classes[0] == "0"
    for obj, name in [(cfg, "spark"), (moved.ingest.image, "target_height"), (moved.spark, "master")]:
        with pytest.raises(ValueError, match="frozen"):
            setattr(obj, name, None)
    assert isinstance(moved.serving.model_dir, Path)
    with pytest.raises(ConfigError, match=r"unknown config key ingest\.foo"):
        with_overrides(cfg, {"ingest.foo": 1})


def test_one_pipeline_name_derives_every_name(project: Path) -> None:
    cfg = load_config(project, environ={"DLPIPE_PIPELINE": "photos"})
    assert cfg.pipeline.name == "photos"
    assert cfg.kafka.topics["raw"].name == "dlpipe.photos.raw"
    assert (cfg.tables.clean, cfg.tables.quarantine) == ("s3a://dlpipe-lake/photos/clean",
                                                         "s3a://dlpipe-lake/photos/quarantine")
    assert cfg.ingest.checkpoint == "s3a://dlpipe-checkpoints/photos/ingest"
    assert (cfg.ingest.query_name, cfg.export.dataset) == ("ingest-photos", "photos")
    assert (cfg.training.model_name, cfg.serving.models) == ("photos-cnn", ["photos-cnn"])
    own = load_config(project, environ={}, overrides=["pipeline.name=b", "export.dataset=mine"])
    assert own.export.dataset == "mine" and own.tables.clean == "s3a://dlpipe-lake/b/clean"
    default = load_config(project, environ={})
    assert default.ingest.checkpoint != cfg.ingest.checkpoint, "two pipelines never share a checkpoint"


def test_a_profile_layers_between_the_file_and_the_environment(project: Path) -> None:
    profiles = project.parent / "profiles"
    profiles.mkdir()
    (profiles / "photos.yaml").write_text(
        "ingest: {classes: [cat, dog], image: {target_height: 64, target_width: 64, target_channels: 3}}\n"
        "training: {architecture: resnet, epochs: 15}\n")
    cfg = load_config(project, environ={"DLPIPE_PROFILE": "photos", "DLPIPE__TRAINING__EPOCHS": "3"})
    assert cfg.ingest.classes == ["cat", "dog"] and cfg.ingest.image.target_channels == 3
    assert cfg.ingest.image.max_pixels == 16_777_216, "the profile merges, it does not replace"
    assert (cfg.training.architecture, cfg.training.epochs) == ("resnet", 3)
    with pytest.raises(ConfigError, match=r"unknown pipeline\.profile 'nope'") as err:
        load_config(project, environ={}, overrides=["pipeline.profile=nope"])
    assert "choose one of: photos" in str(err.value)


def test_the_shipped_profiles_load() -> None:
    for profile in ("digits", "photos"):
        cfg = load_config(YAML, environ={"DLPIPE_PROFILE": profile})
        assert cfg.pipeline.profile == profile
    assert load_config(YAML, environ={"DLPIPE_PROFILE": "photos"}).training.architecture == "resnet"
