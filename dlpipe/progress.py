"""Progress lines for long work (downloads, builds, service start-up) on stderr.

Plain lines rather than a redrawn bar, so the output reads the same in a terminal, a CI log
and a notebook cell.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Step:
    label: str
    started: float = field(default_factory=time.monotonic)

    def detail(self, message: str) -> None:
        say(f"    {message}  [{self.elapsed():.0f}s]")

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextmanager
def step(label: str) -> Iterator[Step]:
    """Announce ``label``, then say how long it took or that it failed."""
    current = Step(label)
    say(f"==> {label} ...")
    try:
        yield current
    except BaseException:
        say(f"<== {label}: failed after {current.elapsed():.1f}s")
        raise
    say(f"<== {label}: done in {current.elapsed():.1f}s")
