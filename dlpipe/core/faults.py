"""Named fault points: the fault tests fail a real process at an exact place, not after a sleep.

``DLPIPE_FAULT=<point>`` (or ``<point>@<n>``: the n-th time) makes the process SIGKILL itself
when it reaches ``fault_point("<point>")``: no cleanup, no flush, as a node failure would.
``<point>[@<n>]:raise`` raises ``InjectedFault`` there instead: the tests use it inside their
own Spark session, where a SIGKILL would end the test run, to leave the store exactly as a
crash at that point does (a JVM start saved per fault) while one SIGKILL round proves the
rest (a dead holder's lease, no cleanup). The ingest sink has a point after each of its three
commits (``after_write_quarantine``, ``after_write_clean``, ``after_write_accounting``).
Unset, a point is one environment lookup.
"""

from __future__ import annotations

import logging
import os
import signal
from collections import Counter

log = logging.getLogger(__name__)
ENV = "DLPIPE_FAULT"
_reached: Counter[str] = Counter()  # by the whole spec: a new spec counts from 0 again


class InjectedFault(RuntimeError):
    """Raised at a ``:raise`` fault point."""


def fault_point(name: str) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    point, _, nth = where.partition("@")
    if point != name:
        return
    _reached[spec] += 1
    if _reached[spec] != int(nth or 1):
        return
    if action == "raise":
        log.error(f"{ENV}={spec}: raising at fault point {name}")
        raise InjectedFault(f"{ENV}={spec}: fault point {name}")
    log.error(f"{ENV}={spec}: killing this process at fault point {name}")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.kill(os.getpid(), signal.SIGKILL)
