"""The scale benchmark's arithmetic: which batches are "the first and last tenth", and the
peaks of the memory sampler (a real child process, sampled while it holds memory)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from bench.bench_scale import _span, _window
from bench.rss import RssSampler

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _batches(sizes: list[int]) -> list[dict]:
    return [{"rows_in": n, "seconds": 2.0, "started_at": T0 + timedelta(seconds=3 * i)}
            for i, n in enumerate(sizes)]


def test_the_first_and_last_tenth_are_the_batches_that_hold_those_records():
    batches = _batches([40, 40, 40, 40, 40])
    assert [b["rows_in"] for b in _window(batches, True, 50)] == [40, 40]
    assert _window(batches, False, 40) == batches[-1:]
    assert _window(batches, False, 200) == batches


def test_a_span_runs_from_the_first_batch_start_to_the_last_batch_end():
    start, end = _span(_batches([10, 10, 10]))
    assert end - start == 3 * 2 + 2.0


def test_the_sampler_sees_a_python_child_and_the_peak_window_excludes_later_samples():
    with RssSampler(interval=0.05) as rss:
        hold = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * (len(b) // 4096); time.sleep(1.5)"
        child = subprocess.Popen([sys.executable, "-c", hold])
        before = time.monotonic()
        child.wait()
        time.sleep(0.2)
    assert rss.peak()[1] > 150 * 2**20, rss.peak()
    assert rss.peak(until=before - 1)[1] == 0  # nothing sampled before the child existed


def test_per_batch_time_leaves_out_batch_zero_and_a_short_last_batch():
    from bench.bench_scale import full_batches

    batches = _batches([1000, 1000, 1000, 990, 40])
    assert full_batches(batches, 1000) == batches[1:4]
