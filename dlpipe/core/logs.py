"""Logging for every dlpipe entry point: one logger per module, configured once at the top.

Library code only calls ``logging.getLogger(__name__)``; whoever starts the process (the
``dlpipe`` CLI, a job's ``main`` under ``spark-submit``, a notebook) calls :func:`setup`. A
person reads the same plain progress lines the CLI always printed; a cluster's log collector
gets one JSON object per line (``--log-format json`` or ``DLPIPE_LOG_FORMAT=json``), which is
what Kubernetes log pipelines index without a parser.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

FORMAT_ENV = "DLPIPE_LOG_FORMAT"
FORMATS = ("text", "json")
# The packages whose loggers dlpipe configures; everything else (py4j, TensorFlow) keeps its own.
# "__main__" is a job's own module when spark-submit runs it as a script.
PACKAGES = ("dlpipe", "spark_jobs", "models", "bench", "__main__")


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, message (and the exception, if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is now (pytest and notebooks swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def setup(fmt: str | None = None, *, level: int = logging.INFO) -> None:
    """Send dlpipe's loggers to stderr as plain lines or JSON lines; safe to call again."""
    fmt = (fmt or os.environ.get(FORMAT_ENV) or "text").lower()
    if fmt not in FORMATS:
        fmt = "text"
    handler = _Stderr()
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(message)s"))
    for name in PACKAGES:
        logger = logging.getLogger(name)
        for old in [h for h in logger.handlers if isinstance(h, _Stderr)]:
            logger.removeHandler(old)
        logger.addHandler(handler)
        logger.setLevel(level)
        logger.propagate = False
