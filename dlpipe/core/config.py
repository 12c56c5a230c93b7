"""Typed pipeline config: ``conf/pipeline.yaml`` < profile < learned < running stack < environment < CLI.

The layers are merged and validated once into frozen pydantic models, so a typo or a wrong
type fails at start-up with the key's dotted name and the setting that fixes it. Secrets never
live in the config: it names the environment variables holding them. Plain pydantic, not
pydantic-settings: its sources fit none of our layers (aliases outside ``DLPIPE__``, map keys
with dots, YAML env values, an ``environ`` argument, ports in a movable ``stack.json``), and a
``BaseSettings`` re-reads ``os.environ`` whenever it is validated.
"""

from __future__ import annotations

import copy
import itertools
import os
import reprlib
import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dlpipe.core.errors import ConfigError
from dlpipe.core.layers import apply, cli_layer, expand, merge, parts, read_yaml
from dlpipe.core.sections import (  # noqa: F401 (re-exported: the config's public names)
    CREDENTIALS_FILE,
    Config,
    IngestConfig,
    PipelineConfig,
    ServingConfig,
)

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
    user = [_env_layer(os.environ if environ is None else environ), cli_layer(overrides)]
    # The file layers are gathered first and the user's applied once, last. Which profile,
    # pipeline name and state dir apply is read from a preview with the user's layers on.
    if profile := (_preview(raw, user).get("pipeline") or {}).get("profile"):
        profiles = path.parent / "profiles"
        if not (chosen := profiles / f"{profile}.yaml").is_file():
            known = ", ".join(sorted(p.stem for p in profiles.glob("*.yaml"))) or f"none in {profiles}"
            raise ConfigError(f"unknown pipeline.profile {profile!r}: no {chosen}",
                              fix=f"choose one of: {known} (or add {chosen})")
        merge(raw, read_yaml(chosen, fix=f"correct {chosen}"))
    preview = _preview(raw, user)
    name = str((preview.get("pipeline") or {}).get("name") or PipelineConfig().name)
    state_dir = None
    if isinstance(stack := preview.get("stack", {}), dict):
        state_dir = Path(str(stack.get("state_dir", ".dlpipe/stack"))).expanduser()
        state_dir = path.resolve().parent.parent / state_dir  # unchanged when absolute
        if (learned := learned_file(state_dir, name)).is_file():  # {"ingest": {"classes": [...]}}
            merge(raw, read_yaml(learned, fix=f"correct or delete {learned}"))
        if (runtime := state_dir / RUNTIME_FILE).is_file():  # {"kafka": {"port": 9092}, ...}
            ports = read_yaml(runtime, fix=f"restart the stack (`dlpipe stack up`) or delete {runtime}")
            apply(raw, {f"stack.{s}.{k}": v for s, d in ports.items() for k, v in d.items()})
    for layer in user:
        apply(raw, layer)
    if state_dir is not None:
        raw.setdefault("stack", {})["state_dir"] = str(state_dir)
    return _validate({**expand(raw, name), "source": str(path)}, path)


def _preview(raw: dict[str, Any], layers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    preview = copy.deepcopy(raw)
    for layer in layers:
        apply(preview, layer)
    return preview


def learned_file(state_dir: Path, pipeline: str) -> Path:
    """Settings a command learned for one pipeline (``dlpipe produce --source folder`` writes
    the folder's classes there), read by every later command of that pipeline on this stack:
    above the profile, below the environment and ``--set``."""
    return Path(state_dir) / "pipelines" / f"{pipeline}.yaml"


def set_by_user(key: str, overrides: Iterable[str] | Mapping[str, Any] = (),
                environ: Mapping[str, str] | None = None) -> bool:
    """Whether the environment or ``--set`` sets the dotted ``key`` (a learned value must not
    override what the user said)."""
    return key in _env_layer(os.environ if environ is None else environ) or key in cli_layer(overrides)


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
