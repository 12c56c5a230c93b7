"""``dlpipe``: one command in front of the stack and every job.

Each subcommand parses its own flags and hands over to a ``main``-style function, so the
jobs stay runnable with ``spark-submit`` on their own; this module only wires them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dlpipe.core import logs
from dlpipe.core.args import add_config_args, config_from_args, failure_code

# -- commands --------------------------------------------------------------------------

def cmd_install(args: argparse.Namespace) -> int:
    from dlpipe.localstack.install import install_all

    installed = install_all()
    print(f"kafka libs:  {installed.kafka_libs}")
    print(f"minio:       {installed.minio_bin}")
    print(f"prometheus:  {installed.prometheus_bin}")
    print(f"spark jars:  {installed.spark_jars}")
    return 0


def cmd_jars(args: argparse.Namespace) -> int:
    from dlpipe.localstack.install import require_installed

    print(",".join(str(p) for p in require_installed(spark_only=True).spark_jar_paths()))
    return 0


def cmd_stack(args: argparse.Namespace) -> int:
    from dlpipe.localstack.stack import Stack

    cfg = config_from_args(args)
    stack = Stack.from_config(cfg)
    if args.action == "up":
        if args.install:
            from dlpipe.localstack.install import install_all

            install_all()
        stack = stack.up(cluster=args.cluster, use_free_ports=args.free_ports)
        if args.connect:
            start_connect(stack, free_port=args.free_ports)
    elif args.action == "down":
        stopped = [name for name in ["spark-connect"] if stop_connect(stack)] + stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        return 0
    elif args.action == "env":
        import shlex

        from dlpipe.localstack.identities import identity_env

        for name, value in identity_env(cfg, args.component).items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    from dlpipe.localstack.services import spark_connect_service

    status = {**stack.status(), "spark-connect": spark_connect_service(stack.cfg, stack.installed).status()}
    if getattr(args, "json", False):
        print(json.dumps({
            "services": status, "s3_endpoint": stack.cfg.s3_endpoint,
            "kafka_bootstrap_servers": stack.cfg.kafka_bootstrap_servers,
            "mlflow": stack.cfg.tracking_uri if stack.cfg.stack.mlflow.enabled else None,
            "state_dir": str(stack.cfg.stack.state_dir),
        }, indent=2))
    else:
        for name, state in status.items():
            print(f"{name:16s} {state}")
        if stack.cfg.stack.mlflow.enabled:
            print(f"{'mlflow ui':16s} http://{stack.cfg.stack.host}:{stack.cfg.stack.mlflow.port}")
        print(f"{'state dir':16s} {stack.cfg.stack.state_dir}")
    core = ("kafka", "minio")
    return 0 if all(status[n] == "healthy" for n in core) else 1


def start_connect(stack: Any, *, free_port: bool = False) -> str:
    """Start the stack's Spark Connect server unless it runs; returns its ``sc://`` URL."""
    from dlpipe.core.process import free_ports
    from dlpipe.core.progress import step
    from dlpipe.localstack.services import connect_url, spark_connect_service

    service = spark_connect_service(stack.cfg, stack.installed)
    if free_port and service.pid() is None:
        service = spark_connect_service(stack.cfg, stack.installed,
                                        port=free_ports(1, stack.cfg.stack.host)[0])
    with step("starting spark-connect") as s:
        started = service.start(stack.cfg.stack.startup_timeout_s * 2)  # a JVM with ~700 MB of jars
        s.detail(("started, pid " if started else "already running, pid ") + str(service.pid()))
    url = connect_url(stack.cfg)
    print(f"    Spark Connect {url}  (SPARK_REMOTE={url} dlpipe export; see docs/notebooks.md)")
    return url


def stop_connect(stack: Any) -> bool:
    from dlpipe.localstack.services import connect_home, spark_connect_service

    stopped = spark_connect_service(stack.cfg, stack.installed).stop(stack.cfg.stack.stop_timeout_s)
    (connect_home(stack.cfg) / "port").unlink(missing_ok=True)
    return stopped


def provide_jars() -> None:
    """Hand the local install's connector jars to the jobs this process starts, unless the
    caller already named some (``$DLPIPE_SPARK_JARS``) or none are installed (the jobs then
    say what is missing)."""
    import os

    from dlpipe.core.session import JARS_ENV
    from dlpipe.localstack.install import locate, missing

    installed = locate()
    if JARS_ENV not in os.environ and not missing(installed, spark_only=True):
        os.environ[JARS_ENV] = os.pathsep.join(str(p) for p in installed.spark_jar_paths())


def cmd_smoke(args: argparse.Namespace) -> int:
    from spark_jobs.smoke import job as smoke

    return smoke.main([*_passthrough(args), f"--steps={args.steps}"])


def _job_main(module: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return importlib.import_module(module).main(argv)

    return run


# Jobs parse their own flags (they also run under spark-submit): `dlpipe JOB ARGS...` hands
# ARGS to the job's own parser, so `dlpipe ingest --help` is the job's help.
JOBS: dict[str, tuple[str, str]] = {
    "produce": ("dlpipe.produce.producer",
                "publish labelled images (digits, synthetic, a folder) to the raw topic"),
    "ingest": ("spark_jobs.ingest.job",
               "Kafka -> clean and quarantine Delta tables on MinIO (Structured Streaming)"),
    "export": ("spark_jobs.export.job",
               "a pinned Delta version -> TFRecord shards + manifest on MinIO"),
    "train": ("spark_jobs.train.job",
              "multi-worker CNN training on Spark barrier tasks; checkpoints, resume, versioned export"),
    "retrain": ("spark_jobs.retrain.job",
                "export the clean table's latest version, then train on it (the scheduled job)"),
    "serve": ("dlpipe.serving.server",
              "serve the newest promoted models over the TF Serving REST and gRPC APIs (hot reload)"),
    "maintain": ("spark_jobs.maintain.job", "compact (OPTIMIZE) and VACUUM every Delta table dlpipe writes"),
    "score": ("spark_jobs.score.job",
              "batch inference over the clean table into the predictions Delta table"),
    "models": ("dlpipe.cli.models_cmd",
               "list model versions, promote or roll back the served one, or copy it for TF Serving"),
    "drift": ("spark_jobs.drift.job",
              "land sampled requests, compare live inputs and predictions with the training data"),
    "tensorboard": ("dlpipe.cli.tensorboard_cmd",
                    "TensorBoard on a training run's event files from MinIO"),
    "k8s": ("dlpipe.cli.k8s_cmd",
            "start, stop or check a one-node Kubernetes built from source (scripts/install_k8s.sh)"),
}


# Jobs that need a SparkContext (barrier tasks, Delta's Python API, a foreachBatch sink that
# keeps state in the driver): under $SPARK_REMOTE they start their own session instead.
NEEDS_SPARK_CONTEXT = {"ingest": "its foreachBatch sink keeps per-batch state in this driver",
                       "train": "barrier tasks (MirroredStrategyRunner) need a SparkContext",
                       "retrain": "barrier tasks (MirroredStrategyRunner) need a SparkContext",
                       "score": "the predictions MERGE uses Delta's Python API",
                       "smoke": "it trains on barrier tasks"}


def _own_session_for(command: str) -> None:
    import os

    if command in NEEDS_SPARK_CONTEXT and os.environ.pop("SPARK_REMOTE", None):
        print(f"dlpipe {command}: runs on its own Spark session, not Spark Connect "
              f"({NEEDS_SPARK_CONTEXT[command]})", file=sys.stderr)


def cmd_demo(args: argparse.Namespace) -> int:
    from dlpipe.cli import demo

    return demo.run(config_from_args(args), cluster=args.cluster, count=args.count)


def cmd_notebook(args: argparse.Namespace) -> int:
    from dlpipe.cli import jupyter

    return jupyter.run(config_from_args(args), args)


def _passthrough(args: argparse.Namespace) -> list[str]:
    out = [f"--config={args.config}"] if args.config else []
    return out + [f"--set={o}" for o in args.overrides]


# -- parser ----------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dlpipe",
        description="Kafka -> Spark -> Delta on MinIO -> TFRecord -> distributed TensorFlow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help: str,
                config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if config:
            add_config_args(p)
        p.set_defaults(func=func)
        return p

    command("install", cmd_install,
            "download Kafka and the Spark connector jars, build MinIO (idempotent)", config=False)
    command("jars", cmd_jars,
            "print the Spark connector jars as a comma-separated list for spark-submit --jars",
            config=False)

    stack = command("stack", cmd_stack, "start, stop or check the local Kafka + MinIO stack")
    stack_sub = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = stack_sub.add_parser(
        "up", help="start Kafka and MinIO (and a Spark cluster), create buckets and topics",
        description="Start what is not running; reuse what is healthy.",
    )
    up.add_argument("--cluster", action="store_true",
                    help="also start a Spark standalone master and workers on loopback")
    up.add_argument("--free-ports", action="store_true",
                    help="pick free ports instead of the configured ones (kept in the state dir)")
    up.add_argument("--install", action="store_true", help="run `dlpipe install` first")
    up.add_argument("--connect", action="store_true",
                    help="also start a Spark Connect server (sc://127.0.0.1:15002, or a free port) with "
                    "the jars, Delta and s3a: one warm JVM for notebooks and SPARK_REMOTE=... dlpipe")
    down_help = "stop every service of the state dir (TERM, then KILL)"
    down = stack_sub.add_parser("down", help=down_help, description=down_help)
    status_help = "health of each service; exit 1 unless Kafka and MinIO are healthy"
    status = stack_sub.add_parser("status", help=status_help, description=status_help)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    env_help = ("print `export DLPIPE_S3_ACCESS_KEY=... DLPIPE_S3_SECRET_KEY=...` of a component's "
                "own MinIO identity (least privilege; `eval` it before running that component)")
    env = stack_sub.add_parser("env", help=env_help, description=env_help)
    from dlpipe.localstack.identities import COMPONENTS

    env.add_argument("component", choices=COMPONENTS)
    for p in (up, down, status, env):
        add_config_args(p)

    smoke = command(
        "smoke", cmd_smoke,
        "check the stack end to end: Delta on s3a, Kafka through Spark, 2-worker TF training",
    )
    smoke.add_argument("--steps", default="delta,kafka,train",
                       help="comma-separated subset of delta,kafka,train (default: all)")

    for name, (_, text) in JOBS.items():
        sub.add_parser(name, help=text, description=text, add_help=False)

    demo = command("demo", cmd_demo, "set up the local stack and run the pipeline end to end")
    demo.add_argument("--cluster", action="store_true",
                      help="run Spark jobs on the loopback standalone cluster instead of local[*]")
    demo.add_argument("--count", type=int, default=1797,
                      help="digits to produce (default: all 1,797 of scikit-learn's digits)")
    notebook = command("notebook", cmd_notebook,
                       "JupyterLab on the local stack with the notebooks/ (Databricks format) and a "
                       "kernel that has `spark` ready (Spark Connect); docs/notebooks.md")
    from dlpipe.cli.jupyter import add_arguments

    add_arguments(notebook)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else None
    logs.setup()
    if command in JOBS or command in ("smoke", "demo"):
        provide_jars()
        _own_session_for(command)
    if command in JOBS:
        func, rest = _job_main(JOBS[command][0]), argv[1:]
    else:
        args = build_parser().parse_args(argv)
        command, func, rest = args.command, args.func, args
    try:
        return func(rest)
    except (Exception, KeyboardInterrupt) as exc:
        if (code := failure_code(exc, f"dlpipe {command}")) is None:
            raise  # a bug: its traceback is what a developer needs
        return code


if __name__ == "__main__":
    sys.exit(main())
