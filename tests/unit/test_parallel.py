"""dlpipe.core.parallel: the ingest sink's commits run at once and none outlives a failure."""

from __future__ import annotations

import threading
import time

import pytest

from dlpipe.core.parallel import run_together


def test_tasks_run_at_the_same_time_and_each_is_timed_and_followed_by_its_hook():
    # Each task waits for all the others: one after another, this would hang (the barrier
    # times out and raises).
    barrier = threading.Barrier(3, timeout=5)
    hooks: list[str] = []
    seconds = run_together({name: barrier.wait for name in ("quarantine", "clean", "accounting")},
                           after=hooks.append)
    assert sorted(seconds) == ["accounting", "clean", "quarantine"]
    assert all(s >= 0 for s in seconds.values())
    assert sorted(hooks) == ["accounting", "clean", "quarantine"]


def test_a_failure_is_raised_only_once_every_other_task_has_ended_and_skips_its_own_hook():
    ended: list[str] = []
    hooks: list[str] = []

    def fails() -> None:
        raise ValueError("the store did not answer")

    def slow() -> None:
        time.sleep(0.3)
        ended.append("slow")

    with pytest.raises(ValueError, match="the store did not answer"):
        run_together({"fails": fails, "slow": slow}, after=hooks.append)
    assert ended == ["slow"]  # not left running behind the caller
    assert hooks == ["slow"]


def test_a_hook_that_raises_fails_the_call_like_the_task_would():
    # The fault tests' ``:raise`` points (dlpipe.core.faults) run as the hook.
    def hook(name: str) -> None:
        if name == "clean":
            raise RuntimeError(f"fault point after_{name}")

    with pytest.raises(RuntimeError, match="fault point after_clean"):
        run_together({"clean": lambda: None, "accounting": lambda: None}, after=hook)


def test_nothing_to_run_is_nothing():
    assert run_together({}) == {}
