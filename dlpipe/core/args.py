"""Command-line plumbing every job and command shares: ``--config``, ``--set``, logging, exit.

It lives in core, below the jobs, so a job run by ``spark-submit`` needs nothing from the
``dlpipe`` CLI (which sits above the jobs and imports them).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dlpipe.core import logs
from dlpipe.core.config import Config, load_config
from dlpipe.core.errors import STORE_DOWN_EXIT, DlpipeError, store_unreachable


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--set`` and ``--log-format``: the flags every command and job shares."""
    parser.add_argument(
        "--config", metavar="PATH",
        help="pipeline config (default: $DLPIPE_CONFIG or conf/pipeline.yaml)",
    )
    parser.add_argument(
        "--set", metavar="KEY=VALUE", action="append", default=[], dest="overrides",
        help="override one config key, e.g. --set spark.master=local[2] (repeatable)",
    )
    parser.add_argument(
        "--log-format", choices=logs.FORMATS, default=None,
        help="progress as plain lines (default) or JSON lines for log collectors "
        f"(also ${logs.FORMAT_ENV})",
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config the flags name; also sets up logging in the format they ask for."""
    logs.setup(getattr(args, "log_format", None))
    return load_config(args.config, overrides=args.overrides)


def run_main(main: Callable[[], int], *, prog: str) -> None:
    """``sys.exit(main())`` for a job run by spark-submit: a user mistake or a missing piece is
    printed as its cause and fix (exit 2), never as a traceback."""
    try:
        code = main()
    except (Exception, KeyboardInterrupt) as exc:
        if (handled := failure_code(exc, prog)) is None:
            raise  # a bug: its traceback is what a developer needs
        code = handled
    sys.exit(code)


def failure_code(exc: BaseException, prog: str) -> int | None:
    """Print what a user needs for a failure that is not a bug and return the exit code:
    2 for a user mistake or a missing piece, 75 for a store that did not answer, 130 for an
    interrupt. None for anything else (a bug, which keeps its traceback)."""
    if isinstance(exc, DlpipeError):
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    if (message := store_unreachable(exc)) is not None:
        print(f"{prog}: error: {message}", file=sys.stderr)
        return STORE_DOWN_EXIT
    return None
