"""Store and broker failures under a running pipeline (issue 17): the test stack's real Kafka
broker and MinIO server are SIGKILLed and restarted, or SIGSTOPped and continued, while real
`dlpipe produce` and `dlpipe ingest` processes work; every record the producer saw
acknowledged must land exactly once.

The faults come one after another in one flow: each driver is a JVM start and each check a
full read of the tables, and make test keeps the fault tests under ten minutes together."""

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

from dlpipe.core.errors import STORE_DOWN_EXIT
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
        self.streaming = False  # its query has started
        self._out = open(log, "w")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen([EXE, "ingest", *sets], env=test_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._out.write(line)
            self._out.flush()
            if "ingest: metrics on" in line:  # logged as the query starts
                self.streaming = True
            if '"event": "ingest_batch"' in line:
                self.rows_in += json.loads(line[line.index("{"):])["rows_in"]
                self.batches += 1

    def wait_streaming(self, timeout_s: float = 180) -> None:
        assert wait_until(lambda: self.streaming or self.proc.poll() is not None, timeout_s), \
            f"the query did not start within {timeout_s:.0f} s"
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

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
    """A continuous `dlpipe ingest`, then (once its query runs) `dlpipe produce` into it:
    faults then hit both while they work."""

    def __init__(self, cfg, test_env: dict[str, str], tmp_path: Path) -> None:
        self.cfg, self.env, self.count, self.sent_log = cfg, test_env, 0, tmp_path / "sent.jsonl"
        self.producer: subprocess.Popen | None = None
        self.driver = Driver(cfg, test_env, tmp_path / "ingest.log")
        self.caught_up, self.code, self.ingest_log = False, None, ""

    def produce(self, *, count: int, rate: float) -> None:
        self.driver.wait_streaming()
        self.count = count
        self.producer = produce(self.cfg, self.env, self.sent_log, count=count, rate=rate)

    def drain(self) -> None:
        """The producer ends with every record acknowledged; the driver ingests them all."""
        assert self.producer is not None
        out, _ = self.producer.communicate(timeout=300)
        assert self.producer.returncode == 0, out[-3000:]
        self.caught_up = self.driver.wait_rows(len(acknowledged(self.sent_log)))

    def finish(self) -> None:
        """Stop both; unless the driver caught up, catch up with `ingest --once` (what a
        restart policy does after a driver that gave up), which must succeed."""
        if self.producer is not None and self.producer.poll() is None:
            self.producer.kill()
        self.code = self.driver.stop()
        self.ingest_log = self.driver.log.read_text()
        if not self.caught_up:
            out = subprocess.run([EXE, "ingest", "--once", *self.driver.sets], env=self.env,
                                 capture_output=True, text=True, timeout=600)
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def assert_rode_it_out_exactly_once(self) -> None:
        """The issue's pass: the driver rode the faults out, or it stopped with an error that
        names the store (exit 75, EX_TEMPFAIL) and the re-run of ``finish`` completed."""
        if not (self.caught_up and self.code == 0):
            assert self.code == STORE_DOWN_EXIT, self.ingest_log[-3000:]
            assert "the object store did not answer" in self.ingest_log, self.ingest_log[-3000:]
        sent = acknowledged(self.sent_log)
        assert len(sent) == self.count
        assert_exactly_once(self.cfg, sent)


@contextmanager
def flow(cfg, test_env: dict[str, str], tmp_path: Path, *, count: int, rate: float) -> Iterator[Flow]:
    running = Flow(cfg, test_env, tmp_path)
    try:
        running.produce(count=count, rate=rate)
        yield running
    finally:
        running.finish()


def test_the_broker_then_the_store_killed_and_the_store_stalled_under_produce_and_ingest_lose_nothing(
        stack, cfg, test_env, tmp_path):
    """While `dlpipe produce` sends and a continuous `dlpipe ingest` streams: the Kafka broker
    SIGKILLed and restarted 3 s later (the idempotent producer re-sends what was not
    acknowledged, the query reconnects); after the next micro-batch MinIO SIGKILLed and
    restarted 3 s later (S3A retries); after the next, MinIO SIGSTOPped for 30 s and continued
    (the stalled calls resume, the lease's renewal retries within its 60 s). The driver rides
    it all out and catches up, or stops naming the store and a re-run completes; either way
    each acknowledged record lands exactly once and every Delta table still reads."""
    cfg = isolated(cfg, "faults")
    # Both services run again (restored) before the flow is finished.
    with flow(cfg, test_env, tmp_path, count=2000, rate=100) as run, \
            restored(stack, "kafka") as kafka, restored(stack, "minio") as minio:
        assert wait_until(lambda: len(acknowledged(run.sent_log)) >= 300, 60)
        kill_and_restart(kafka, stack, down_s=3)
        assert run.producer is not None and run.producer.poll() is None, \
            "the broker's restart must come while produce is still sending"
        run.driver.wait_batches(run.driver.batches + 1)
        kill_and_restart(minio, stack, down_s=3)
        run.driver.wait_batches(run.driver.batches + 1)
        stall(minio, STALL_S)
        run.drain()
    run.assert_rode_it_out_exactly_once()
