"""Named fault points: the fault tests kill a real process at an exact place, not after a sleep.

``DLPIPE_FAULT=<point>`` (or ``<point>@<n>``: the n-th time) makes the process SIGKILL itself
when it reaches ``fault_point("<point>")``: no cleanup, no flush, as a node failure would. The
ingest sink has one after each of its three commits (``after_write_quarantine``,
``after_write_clean``, ``after_write_accounting``). Unset, a point is one environment lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)
ENV = "DLPIPE_FAULT"
_reached: Counter[str] = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    point, _, nth = spec.partition("@")
    if point != name:
        return
    _reached[name] += 1
    if _reached[name] == int(nth or 1):
        log.error(f"{ENV}={spec}: killing this process at fault point {name}")
        for handler in logging.getLogger().handlers:
            handler.flush()
        os.kill(os.getpid(), signal.SIGKILL)
