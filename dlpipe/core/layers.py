"""The config's layers as plain data: read a YAML file, merge layers, set dotted keys, and
derive names from ``pipeline.name``.

Kept apart from the typed models in ``dlpipe.core.config`` so the merge rules read on their own:
later layers win key by key; a free-form mapping's keys keep their dots; ``{pipeline}`` in any
string (outside the free-form mappings) becomes the pipeline's name once all layers are in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from dlpipe.core.errors import ConfigError

# Mappings whose keys have dots: `--set spark.conf.spark.sql.x=1` sets spark.conf["spark.sql.x"].
FREEFORM_MAPPINGS = ("spark.conf", "ingest.rules.filters", "ingest.rules.derived")
PLACEHOLDER = "{pipeline}"


def read_yaml(path: Path, fix: str) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", fix=fix)
    try:
        data = yaml.safe_load(path.read_text()) or {}  # JSON is YAML too
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}", fix=fix) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping", fix=fix)
    return data


def cli_layer(overrides: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(overrides, Mapping):
        return dict(overrides)
    items = [(item, *item.partition("=")) for item in overrides]
    if bad := [item for item, key, sep, _ in items if not sep or not key]:
        raise ConfigError(f"--set takes key.path=value, got {bad[0]!r}", fix="--set key.path=<YAML>")
    return {key.strip(): yaml.safe_load(value) if value else value for _, key, _, value in items}


def parts(dotted: str) -> list[str]:
    """``a.b.c`` -> ``[a, b, c]``, except that a free-form mapping's key keeps its dots."""
    for mapping in FREEFORM_MAPPINGS:
        if dotted.startswith(mapping + "."):
            return [*mapping.split("."), dotted[len(mapping) + 1:]]
    return dotted.split(".")


def apply(raw: dict[str, Any], flat: Mapping[str, Any]) -> dict[str, Any]:
    for dotted, value in flat.items():
        *parents, leaf = parts(dotted)
        node = raw
        for part in parents:
            node = node[part] if node.get(part) is not None else node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted}: {part} is not a section", fix=f"set {part} itself")
        node[leaf] = value
    return raw


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` merged into ``base`` key by key (mappings recursively; anything else replaced)."""
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def expand(raw: Any, name: str, where: str = "") -> Any:
    """Every ``{pipeline}`` in a string replaced by ``name``, free-form mappings left alone."""
    if isinstance(raw, str):
        return raw.replace(PLACEHOLDER, name)
    if isinstance(raw, list):
        return [expand(v, name, where) for v in raw]
    if isinstance(raw, dict) and where not in FREEFORM_MAPPINGS:
        return {k: expand(v, name, f"{where}.{k}".lstrip(".")) for k, v in raw.items()}
    return raw
