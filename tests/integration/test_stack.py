"""`dlpipe stack`: real Kafka and MinIO processes, driven through the CLI."""

from __future__ import annotations

import json
import os
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
    assert out.stderr.count("already running") == len(pids) == 4  # Kafka, MinIO, MLflow, Prometheus
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


def test_a_service_that_cannot_start_leaves_no_half_started_stack(cfg, tmp_path: Path) -> None:
    """Kafka and MinIO start on free ports, Prometheus finds its port taken: the ones this
    `up` started are stopped again, not left running where nobody will look them up."""
    import socket

    from dlpipe.core.process import free_ports

    kafka, controller, minio, console, mlflow = free_ports(5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        half = Stack.from_config(with_overrides(cfg, {
            "stack.state_dir": str(tmp_path), "stack.kafka.port": kafka,
            "stack.kafka.controller_port": controller, "stack.minio.port": minio,
            "stack.minio.console_port": console, "stack.mlflow.port": mlflow,
            "stack.prometheus.port": taken.getsockname()[1]}))
        with pytest.raises(ServiceError, match="is already in use"):
            half.up()
    assert {s.name: s.pid() for s in half.core_services()} == {
        "kafka": None, "minio": None, "mlflow": None, "prometheus": None}


def test_kafka_and_minio_data_folders_are_private(cfg) -> None:
    for folder in (cfg.stack.state_dir / "kafka" / "data", cfg.stack.state_dir / "minio" / "data"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        p = todo.pop()
        found.add(p)
        todo.extend(children.get(p, []))
    return found


def _listening(pids: set[int]) -> list[tuple[int, str, int]]:
    """(pid, address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    import socket

    inodes: dict[str, tuple[str, int]] = {}
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            hex_addr, hex_port = fields[1].split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            inodes[fields[9]] = (socket.inet_ntop(family, raw), int(hex_port, 16))
    found = []
    for pid in pids:
        try:
            links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        except OSError:
            continue
        found += [(pid, *inodes[link[8:-1]]) for link in links
                  if link.startswith("socket:[") and link[8:-1] in inodes]
    return found


def test_every_socket_of_the_stack_and_a_local_driver_listens_on_loopback_only(stack, spark) -> None:
    pids = set().union(*(_descendants(s.pid()) for s in stack.core_services()))
    pids |= _descendants(os.getpid())  # this process's Spark driver JVM and Python workers
    sockets = _listening(pids)
    assert any(port == stack.cfg.stack.kafka.port for _, _, port in sockets), sockets
    open_to_all = [s for s in sockets if s[1] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not open_to_all, f"listening beyond loopback (pid, address, port): {open_to_all}"
