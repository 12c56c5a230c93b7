"""Errors that tell the user what is missing and the command that fixes it."""

from __future__ import annotations

import re


class DlpipeError(RuntimeError):
    """An error the CLI prints without a traceback: the message says cause and fix."""

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        self.fix = fix
        super().__init__(message if fix is None else f"{message}\n  fix: {fix}")


class MissingToolError(DlpipeError):
    """A binary, jar set or package that dlpipe needs is not installed."""


class ConfigError(DlpipeError):
    """A config key is missing or has a value of the wrong kind."""


class ServiceError(DlpipeError):
    """A local service did not start, is unhealthy, or its port is taken."""


STORE_DOWN_EXIT = 75  # EX_TEMPFAIL: the job may succeed later; a scheduler's retry is right

# What boto3 (in dlpipe's own code and Spark's Python workers) and S3A (Spark's JVM) say when
# the object store does not answer: botocore's message for each way a request gets no whole
# answer, a 503 that outlived its retries (MinIO says "server not initialized" while it
# starts), then S3A's. Spark wraps them in its own exceptions with the worker's traceback as
# text, so they are found in the messages, not by type.
_STORE_DOWN = re.compile(
    r'Could not connect to the endpoint URL: "?[^"\s]+"?'
    r'|(?:Read|Connect) timeout on endpoint URL: "?[^"\s]+"?'
    r'|Connection was closed before we received a valid response from endpoint URL: "?[^"\s]+"?'
    r'|An error occurred while reading from response stream: [^\n]{0,160}'
    r'|\d+ read, but total bytes expected is \d+'  # a body cut off between chunk reads
    r'|An HTTP Client failed to establish a connection: [^\n]{0,160}'
    r'|An error occurred \((?:503|ServiceUnavailable|SlowDown|XMinioServerNotInitialized)\) when'
    r' calling the \w+ operation \(reached max retries: \d+\)[^\n]{0,160}'
    r'|Connect to \S+ failed: Connection refused'
    r'|Unable to execute HTTP request: [^\n]{0,160}')


def store_unreachable(exc: BaseException) -> str | None:
    """The message for a job that failed because the object store did not answer, or None.

    A store outage is not a bug in the job: the user gets what failed and what to do, not a
    Spark stack trace. Every dlpipe writer publishes last (Delta commits, manifests, a
    checkpoint's latest.json), so re-running is safe."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _STORE_DOWN.search(str(current))
        if found:
            return (f"the object store did not answer: {found.group(0)}\n"
                    "  Nothing half-written was published (results are published last), so the"
                    " job can simply run again.\n"
                    "  fix: check the store (`dlpipe stack status` for the local stack), then run"
                    " the same command again")
        current = current.__cause__ or current.__context__
    return None
