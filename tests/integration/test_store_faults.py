"""Store and broker failures under a running pipeline (issue 17): the test stack's real Kafka
broker and MinIO server are SIGKILLed and restarted, or SIGSTOPped and continued, while real
`dlpipe produce` and `dlpipe ingest` processes work; every record the producer saw
acknowledged must land exactly once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from dlpipe.core.process import wait_until
from tests.helpers import assert_exactly_once, isolated, isolated_sets
from tests.store_outage import STALL_S, kill_and_restart, restored, stall

pytestmark = pytest.mark.integration
EXE = str(Path(sys.executable).parent / "dlpipe")


class Driver:
    """A continuous `dlpipe ingest` subprocess whose committed micro-batches are counted."""

    def __init__(self, cfg, test_env: dict[str, str], log: Path) -> None:
        sets = [*isolated_sets(cfg), "--set=ingest.trigger_interval=2 seconds",
                "--set=ingest.max_offsets_per_trigger=400"]
        self.sets, self.batches, self.rows_in, self.log = sets, 0, 0, log
        self._out = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([EXE, "ingest", *sets], env=test_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.write(line)
            self._out.flush()
            if '"event": "ingest_batch"' in line:
                self.rows_in += json.loads(line[line.index("{"):])["rows_in"]
                self.batches += 1

    def wait_batches(self, n: int, timeout_s: float = 180) -> None:
        assert wait_until(lambda: self.batches >= n or self.proc.poll() is not None, timeout_s), \
            f"fewer than {n} micro-batches within {timeout_s:.0f} s"

    def wait_rows(self, n: int, timeout_s: float = 180) -> bool:
        """Whether it ingested ``n`` records (False when it ended first)."""
        wait_until(lambda: self.rows_in >= n or self.proc.poll() is not None, timeout_s)
        return self.rows_in >= n

    def stop(self) -> int:
        """SIGTERM (stop after the running micro-batch); its exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(180)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(30)
            self._out.close()


def produce(cfg, test_env: dict[str, str], log: Path, *, count: int, rate: float) -> subprocess.Popen:
    return subprocess.Popen([EXE, "produce", "--count", str(count), "--rate", str(rate), "--log", str(log),
                             "--bad-fraction", "0.02", "--duplicate-fraction", "0.02",
                             f"--set=kafka.topics.raw.name={cfg.kafka.topics['raw'].name}"],
                            env=test_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def acknowledged(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


class Flow:
    """`dlpipe produce` of ``count`` records at ``rate`` into a continuous `dlpipe ingest`."""

    def __init__(self, cfg, test_env: dict[str, str], tmp_path: Path, *, count: int, rate: float) -> None:
        self.cfg, self.env, self.count, self.sent_log = cfg, test_env, count, tmp_path / "sent.jsonl"
        self.producer = produce(cfg, test_env, self.sent_log, count=count, rate=rate)
        self.driver = Driver(cfg, test_env, tmp_path / "ingest.log")
        self.caught_up, self.code, self.ingest_log = False, None, ""

    def drain(self) -> None:
        """The producer ends with every record acknowledged; the driver ingests them all."""
        out, _ = self.producer.communicate(timeout=300)
        assert self.producer.returncode == 0, out[-3000:]
        self.caught_up = self.driver.wait_rows(len(acknowledged(self.sent_log)))

    def finish(self) -> None:
        """Stop both; unless the driver caught up, catch up with `ingest --once` (what a
        restart policy does after a driver that gave up), which must succeed."""
        if self.producer.poll() is None:
            self.producer.kill()
        self.code = self.driver.stop()
        self.ingest_log = self.driver.log.read_text()
        if not self.caught_up:
            out = subprocess.run([EXE, "ingest", "--once", *self.driver.sets], env=self.env,
                                 capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def assert_rode_it_out_exactly_once(self) -> None:
        assert self.caught_up and self.code == 0, self.ingest_log[-3000:]
        sent = acknowledged(self.sent_log)
        assert len(sent) == self.count
        assert_exactly_once(self.cfg, sent)


@contextmanager
def flow(cfg, test_env: dict[str, str], tmp_path: Path, *, count: int, rate: float) -> Iterator[Flow]:
    running = Flow(cfg, test_env, tmp_path, count=count, rate=rate)
    try:
        yield running
    finally:
        running.finish()


def test_the_kafka_broker_killed_during_produce_and_ingest_loses_and_duplicates_nothing(
        stack, cfg, test_env, tmp_path):
    """Broker SIGKILLed mid-stream and restarted 3 s later: the idempotent producer re-sends
    what was not acknowledged, the streaming query reconnects, each acknowledged record once."""
    cfg = isolated(cfg, "broker")
    # The broker runs again (restored) before the flow is finished.
    with flow(cfg, test_env, tmp_path, count=1200, rate=150) as run, restored(stack, "kafka") as kafka:
        run.driver.wait_batches(1)
        assert wait_until(lambda: len(acknowledged(run.sent_log)) >= 300, 60)
        kill_and_restart(kafka, stack, down_s=3)
        run.drain()
    run.assert_rode_it_out_exactly_once()


def test_minio_killed_then_stalled_during_continuous_ingest_loses_and_duplicates_nothing(
        stack, cfg, test_env, tmp_path):
    """MinIO SIGKILLed and restarted 3 s later, then SIGSTOPped for 30 s and continued, under
    a continuous ingest: S3A retries the kill, the stalled calls resume, the lease's renewal
    retries within its 60 s; the driver goes on and catches up, every record lands exactly
    once and each Delta table still reads."""
    cfg = isolated(cfg, "store")
    with flow(cfg, test_env, tmp_path, count=1500, rate=100) as run, restored(stack, "minio") as minio:
        run.driver.wait_batches(1)
        kill_and_restart(minio, stack, down_s=3)
        run.driver.wait_batches(run.driver.batches + 1)
        stall(minio, STALL_S)
        run.drain()
    run.assert_rode_it_out_exactly_once()
