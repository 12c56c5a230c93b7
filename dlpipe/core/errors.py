"""Errors that tell the user what is missing and the command that fixes it."""

from __future__ import annotations


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
