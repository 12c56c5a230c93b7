from __future__ import annotations

from pathlib import Path

import pytest

from dlpipe.core.errors import MissingToolError
from dlpipe.localstack.install import _drop_jars_pyspark_ships, locate, missing, require_installed


def test_an_empty_tools_home_lists_every_missing_piece(tmp_path: Path) -> None:
    lacking = missing(locate(tmp_path))
    assert [item.split(" (")[0] for item in lacking] == [
        "Kafka 4.3.1 broker jars", "MinIO server", "Prometheus v0.316.0", "Prometheus v0.316.0",
        "Spark connector jars"]
    with pytest.raises(MissingToolError, match=r"(?s)not installed: Kafka.*fix: dlpipe install"):
        require_installed(locate(tmp_path))


def test_jars_that_pyspark_ships_are_dropped(tmp_path: Path) -> None:
    for name in ("scala-library-2.13.17.jar", "hadoop-aws-3.5.0.jar", "zstd-jni-1.5.7-3.jar"):
        (tmp_path / name).write_bytes(b"")
    _drop_jars_pyspark_ships(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hadoop-aws-3.5.0.jar"]
