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
    except DlpipeError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        code = 130
    except Exception as exc:
        if (message := store_unreachable(exc)) is None:
            raise  # a bug: its traceback is what a developer needs
        print(f"{prog}: error: {message}", file=sys.stderr)
        code = STORE_DOWN_EXIT
    sys.exit(code)
