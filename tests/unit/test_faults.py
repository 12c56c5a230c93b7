"""The fault points of dlpipe.core.faults kill the process where they are named, and only there."""

from __future__ import annotations

import signal
import subprocess
import sys

SCRIPT = """
from dlpipe.core.faults import fault_point
for i in range(3):
    fault_point("other")
    print("reached", i, flush=True)
    fault_point("here")
"""


def run(fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **({"DLPIPE_FAULT": fault} if fault else {})}
    return subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=60)


def test_a_fault_point_kills_the_process_the_nth_time_it_is_reached():
    assert run(None).stdout.split() == ["reached", "0", "reached", "1", "reached", "2"]
    first = run("here")
    assert first.returncode == -signal.SIGKILL and first.stdout.split() == ["reached", "0"]
    second = run("here@2")
    assert second.returncode == -signal.SIGKILL
    assert second.stdout.split() == ["reached", "0", "reached", "1"]
    assert run("elsewhere").returncode == 0


def test_a_raise_fault_point_raises_instead_and_a_new_spec_counts_again(monkeypatch):
    import pytest

    from dlpipe.core.faults import InjectedFault, fault_point

    monkeypatch.setenv("DLPIPE_FAULT", "here@2:raise")
    fault_point("here")
    with pytest.raises(InjectedFault, match="fault point here"):
        fault_point("here")
    fault_point("here")  # only the 2nd time
    monkeypatch.setenv("DLPIPE_FAULT", "here:raise")
    with pytest.raises(InjectedFault):
        fault_point("here")
