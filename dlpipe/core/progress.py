"""Progress for long work (downloads, builds, service start-up, job phases), as log lines.

Plain lines rather than a redrawn bar, so the output reads the same in a terminal, a CI log
and a notebook cell; ``dlpipe.core.logs`` decides whether they are text or JSON.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


@dataclass
class Step:
    label: str
    started: float = field(default_factory=time.monotonic)

    def detail(self, message: str) -> None:
        log.info(f"    {message}  [{self.elapsed():.0f}s]")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def step(label: str) -> Iterator[Step]:
    """Announce ``label``, then say how long it took or that it failed."""
    current = Step(label)
    log.info(f"==> {label} ...")
    try:
        yield current
    except BaseException:
        log.info(f"<== {label}: failed after {current.elapsed():.1f}s")
        raise
    log.info(f"<== {label}: done in {current.elapsed():.1f}s")


def run_streaming(
    cmd: Sequence[str], *, on_line: Callable[[str], None], failure: str,
    env: Mapping[str, str] | None = None, tail_lines: int = 40,
) -> None:
    """Run ``cmd``, hand each output line to ``on_line`` (for progress), and on a non-zero
    exit raise ``failure`` followed by the last lines of output, which say why."""
    proc = subprocess.Popen(list(cmd), env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    for raw in proc.stdout:
        line = raw.rstrip()
        tail = [*tail[-(tail_lines - 1):], line]
        on_line(line)
    if proc.wait() != 0:
        raise RuntimeError(f"{failure}:\n" + "\n".join(tail))
