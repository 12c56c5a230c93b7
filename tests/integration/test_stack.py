"""`dlpipe stack`: real Kafka and MinIO processes, driven through the CLI."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dlpipe.core.config import CREDENTIALS_FILE, with_overrides
from dlpipe.core.errors import ServiceError
from dlpipe.localstack.stack import Stack

pytestmark = pytest.mark.integration


def dlpipe(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "dlpipe"  # the venv's console script, activated or not
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=180)


def test_status_reports_kafka_and_minio_healthy(cfg, test_env) -> None:
    out = dlpipe("stack", "status", "--json", env=test_env)
    assert out.returncode == 0, out.stderr
    status = json.loads(out.stdout)
    assert status["services"]["kafka"] == "healthy"
    assert status["services"]["minio"] == "healthy"
    assert status["s3_endpoint"] == cfg.s3_endpoint
    assert status["kafka_bootstrap_servers"] == cfg.kafka_bootstrap_servers


def test_buckets_and_topics_from_config_exist(cfg) -> None:
    from confluent_kafka.admin import AdminClient

    from dlpipe.core.s3 import s3_client

    buckets = {b["Name"] for b in s3_client(cfg).list_buckets()["Buckets"]}
    assert set(cfg.buckets.names()) <= buckets
    topics = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers}).list_topics(timeout=10).topics
    for topic in cfg.kafka.topics.values():
        assert len(topics[topic.name].partitions) == topic.partitions


def test_up_again_reuses_the_running_services(stack, test_env) -> None:
    pids = {s.name: s.pid() for s in stack.core_services()}
    out = dlpipe("stack", "up", env=test_env)
    assert out.returncode == 0, out.stderr
    assert out.stderr.count("already running") == 2
    assert {s.name: s.pid() for s in stack.core_services()} == pids


def test_minio_runs_with_generated_credentials_only(cfg, monkeypatch) -> None:
    from botocore.exceptions import ClientError

    from dlpipe.core.s3 import s3_client

    creds = cfg.stack.state_dir / CREDENTIALS_FILE
    assert creds.exists(), f"the test stack should use generated credentials in {creds}"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    monkeypatch.setenv(cfg.s3.access_key_env, "minioadmin")
    monkeypatch.setenv(cfg.s3.secret_key_env, "minioadmin")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        s3_client(cfg).list_buckets()


def test_second_stack_on_taken_ports_names_the_port(cfg, tmp_path: Path) -> None:
    clash = Stack.from_config(with_overrides(cfg, {"stack.state_dir": str(tmp_path)}))
    with pytest.raises(ServiceError) as err:
        clash.up()
    assert f"port 127.0.0.1:{cfg.stack.kafka.port} is already in use" in str(err.value)
    assert "--free-ports" in str(err.value)
