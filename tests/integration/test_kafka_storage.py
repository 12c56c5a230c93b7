"""Kafka's real StorageTool formats a new broker's storage with every id the stack draws."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dlpipe.core.config import load_config
from dlpipe.core.errors import ServiceError
from dlpipe.localstack.install import locate
from dlpipe.localstack.services import format_kafka_storage, java, kafka_properties, new_cluster_id

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
# Ids at the edges of URL-safe base64: a leading "-" (what broke `make demo` 1 time in 64),
# a leading "_", and both inside.
EDGE_IDS = ["-6P6FNhiRZiF8zd7FF7_aA", "_6P6FNhiRZiF8zd7-F7_aA"]


def _format(tmp_path: Path, cluster_id: str, *, data_is_a_file: bool = False) -> str:
    cfg = load_config(ROOT / "conf" / "pipeline.yaml")
    home = tmp_path / uuid.uuid4().hex
    home.mkdir()
    if data_is_a_file:
        (home / "data").write_text("not a directory")
    props = home / "server.properties"
    props.write_text(kafka_properties(cfg, home / "data"))
    jvm = [java(), "-Xmx256m", "-cp", f"{locate().kafka_libs}/*"]
    format_kafka_storage(jvm, props, home / "data", cluster_id)
    meta = (home / "data" / "meta.properties").read_text()
    return next(line.split("=", 1)[1] for line in meta.splitlines() if line.startswith("cluster.id="))


@pytest.mark.parametrize("cluster_id", [*EDGE_IDS, new_cluster_id()])
def test_storage_formats_with_the_id_it_was_given(tmp_path: Path, cluster_id: str) -> None:
    assert _format(tmp_path, cluster_id) == cluster_id


def test_a_failed_format_names_kafka_the_cause_and_the_fix(tmp_path: Path) -> None:
    cluster_id = new_cluster_id()
    with pytest.raises(ServiceError) as err:
        _format(tmp_path, cluster_id, data_is_a_file=True)
    message = str(err.value)
    assert message.startswith("kafka: formatting its storage in ")
    assert cluster_id in message and "(exit 1)" in message and "fix: remove " in message
