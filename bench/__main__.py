"""``make bench`` / ``python -m bench``: run every bench/bench_*.py and write the reports.

Each figure's median over several runs: ``python -m bench.medians bench/results/results-*.json``.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys
import tempfile
from pathlib import Path

from bench.cleanup import drop_everything, reclaim_disk
from bench.harness import Context, Result, write_reports
from dlpipe.cli.main import provide_jars
from dlpipe.core import logs
from dlpipe.core.config import load_config
from dlpipe.core.progress import step
from dlpipe.localstack.stack import Stack, running_stack

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
# Run only when named: bench_scale pushes 1M records through the whole pipeline (~30 min).
ON_REQUEST = ("bench_scale",)


def discover(*, every: bool = False) -> list[str]:
    names = sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_"))
    return names if every else [n for n in names if n not in ON_REQUEST]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {discover()}; "
                        f"{', '.join(ON_REQUEST)} only when named)")
    parser.add_argument("--quick", action="store_true", help="smaller inputs, fewer repeats")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="report folder")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep what the benchmarks wrote to the bench stack (tables, shards, "
                        "models, topics); by default a run that succeeds drops all of it, earlier "
                        "runs' included")
    args = parser.parse_args(argv)
    logs.setup()  # each benchmark's start and end, and the stack's, as the CLI shows them
    names = args.names or discover()
    unknown = set(names) - set(discover(every=True))
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    # The benchmarks' sessions need the connector jars, as the CLI's jobs do (get_spark reads
    # them from $DLPIPE_SPARK_JARS, which the CLI fills the same way).
    provide_jars()
    cfg = load_config(overrides={"stack.state_dir": str(HERE.parent / ".dlpipe" / "bench-stack")})
    results: list[Result] = []
    with running_stack(cfg) as stack, tempfile.TemporaryDirectory() as tmp:
        ctx = Context(cfg=stack.cfg, work_dir=Path(tmp), quick=args.quick)
        for name in names:
            with step(f"benchmark {name}"):
                results.extend(importlib.import_module(f"bench.{name}").run(ctx))
        # After a run that worked (a failed run's data stays to look at; the next run drops it).
        if not args.keep_data:
            with step("dropping the benchmarks' data from the bench stack"):
                drop_everything(stack.cfg)
    # A stack that was running before keeps running and reclaims on its own.
    if not args.keep_data and not Stack.from_config(cfg).healthy():
        freed = reclaim_disk(cfg.stack.state_dir)
        log.info(f"freed {freed / 2**20:,.0f} MB the stopped bench stack had only marked deleted")
    json_path, md_path = write_reports(results, args.out)
    print(md_path.read_text())
    log.info(f"results: {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
