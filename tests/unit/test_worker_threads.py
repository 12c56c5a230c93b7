"""Per-worker training settings: TensorFlow threads (the host's usable cores, shared by the
run's workers on that host, cgroup CPU quotas honoured) and steps per execution."""

from __future__ import annotations

import json
import os

import pytest

from dlpipe.core.cpus import available_cpus, quota_cpus, share_of
from models.train import steps_per_execution, worker_threads, workers_on_this_host


def test_cgroup_v2_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert quota_cpus(tmp_path) == 1.5
    assert available_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 2)


def test_cgroup_v2_without_a_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert quota_cpus(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))


def test_cgroup_v1_quota(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cpus(tmp_path) == 0.5
    assert available_cpus(tmp_path) == 1


def test_cgroup_v1_unlimited_and_no_cgroup(tmp_path):
    assert quota_cpus(tmp_path) is None
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert quota_cpus(tmp_path) is None


@pytest.mark.parametrize(("cpus", "sharers", "share"),
                         [(2, 2, 1), (8, 2, 4), (1, 4, 1), (6, 4, 1), (4, 0, 4)])
def test_share_of(cpus, sharers, share):
    assert share_of(cpus, sharers) == share


def tf_config(monkeypatch, workers: list[str], index: int) -> None:
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": workers},
                                                "task": {"type": "worker", "index": index}}))


def test_workers_on_this_host(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert workers_on_this_host() == 1
    tf_config(monkeypatch, ["10.0.0.1:2222", "10.0.0.1:2223", "10.0.0.2:2222"], 1)
    assert workers_on_this_host() == 2
    tf_config(monkeypatch, ["10.0.0.1:2222", "10.0.0.1:2223", "10.0.0.2:2222"], 2)
    assert workers_on_this_host() == 1


def test_worker_threads_split_the_host_unless_configured(monkeypatch):
    tf_config(monkeypatch, ["127.0.0.1:1", "127.0.0.1:2"], 0)
    assert worker_threads(0) == max(1, available_cpus() // 2)
    assert worker_threads(3) == 3


@pytest.mark.parametrize(("configured", "every", "effective"),
                         [(4, 0, 4), (4, 10, 2), (4, 8, 4), (3, 10, 1), (1, 5, 1)])
def test_step_checkpoints_still_fall_on_a_call_end(configured, every, effective):
    assert steps_per_execution(configured, every) == effective
