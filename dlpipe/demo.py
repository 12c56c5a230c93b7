"""``dlpipe demo``: what a new user runs first. Later issues add the pipeline stages."""

from __future__ import annotations

import json
import time

from dlpipe.config import Config
from dlpipe.progress import say, step


def run(cfg: Config, *, cluster: bool = False) -> int:
    from dlpipe.install import install_all
    from dlpipe.session import get_spark
    from dlpipe.stack.stack import Stack
    from spark_jobs import smoke

    started = time.monotonic()
    install_all()
    stack = Stack.from_config(cfg).up(cluster=cluster)
    cfg = stack.cfg
    with step("starting Spark"):
        spark = get_spark(cfg, app_name="dlpipe-demo", master="cluster" if cluster else None)
    results = smoke.run(spark, cfg, smoke.STEPS)
    say(json.dumps(results, indent=2))
    say(f"demo finished in {time.monotonic() - started:.0f}s; the stack keeps running "
        f"(`dlpipe stack status`, `dlpipe stack down`).")
    return 0
