"""``dlpipe models``: what is in the model store, which version is served, and a copy of it
TF Serving can read.

    dlpipe models list [--model NAME] [--json]
    dlpipe models promote VERSION [--model NAME] [--reason TEXT] [--force]
    dlpipe models rollback [--model NAME] [--reason TEXT]
    dlpipe models history [--model NAME]
    dlpipe models sync --dest /models [--model NAME ...] [--keep 2] [--watch --interval 30]

``promote`` and ``rollback`` move the release pointer (``dlpipe.registry.release``) with an
audit line; ``dlpipe serve`` and ``models sync --watch`` follow at their next poll.

``sync`` is the storage initializer for ``tensorflow_model_server``, which no longer reads
``s3://``: as an init container it copies the promoted version once; with ``--watch`` as a
sidecar it keeps ``<dest>/<model>/`` on the newest promoted version, which TF Serving
then loads by itself (it polls its base path).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlpipe.core.args import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlpipe models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="versions of each model: promoted, accuracy, dataset")
    listing.add_argument("--model", action="append", dest="models", metavar="NAME",
                         help="default: serving.models")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    promote = sub.add_parser("promote", help="serve VERSION (an audited release)")
    promote.add_argument("version", type=int, metavar="VERSION")
    promote.add_argument("--force", action="store_true",
                         help="serve it even though training did not promote it")
    rollback = sub.add_parser("rollback", help="serve the version served before the current one")
    history = sub.add_parser("history", help="the audit log of served-version changes")
    for p in (promote, rollback, history):
        p.add_argument("--model", dest="models", action="append", metavar="NAME",
                       help="default: training.model_name")
    for p in (promote, rollback):
        p.add_argument("--reason", default="", help="recorded in the audit line")
    sync = sub.add_parser("sync", help="copy the served version(s) to a local folder")
    sync.add_argument("--dest", required=True, type=Path,
                      help="base folder; each model goes to DEST/<model>/<version>/")
    sync.add_argument("--model", action="append", dest="models", metavar="NAME",
                      help="default: serving.models")
    sync.add_argument("--keep", type=int, default=2,
                      help="local versions kept per model, newest first (default 2)")
    sync.add_argument("--watch", action="store_true", help="keep syncing (sidecar mode)")
    sync.add_argument("--interval", type=float, default=30.0,
                      help="seconds between checks with --watch (default 30)")
    for p in (listing, promote, rollback, history, sync):
        add_config_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.sync import sync_models

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    models = args.models or cfg.serving.models
    client, bucket = s3_client(cfg), cfg.buckets.models
    if args.action == "list":
        return _list(client, bucket, models, as_json=args.json)
    if args.action in ("promote", "rollback", "history"):
        return _release(args, cfg, client, (args.models or [cfg.training.model_name]))
    while True:
        try:
            results = sync_models(client, bucket, models, args.dest, keep=args.keep)
        except Exception as exc:
            if not args.watch:
                raise
            # A sidecar outlives store outages: TF Serving keeps serving what it has.
            print(f"sync failed, retrying in {args.interval:.0f}s: {exc}", file=sys.stderr, flush=True)
            results = []
        for result in results:
            if result.version is None:
                print(f"{result.model}: no promoted version yet", file=sys.stderr)
            elif result.downloaded or result.removed:
                print(f"{result.model}: version {result.version} in {args.dest / result.model}"
                      + (f" (removed {list(result.removed)})" if result.removed else ""),
                      file=sys.stderr, flush=True)
        if not args.watch:
            return 0
        time.sleep(args.interval)


def _list(client: Any, bucket: str, models: Sequence[str], *, as_json: bool) -> int:
    from dlpipe.registry.release import served_version
    from dlpipe.registry.store import complete_versions

    infos = {m: complete_versions(client, bucket, m) for m in models}
    served = {m: served_version(client, bucket, m) for m in models}
    if as_json:
        print(json.dumps({m: {"served": None if served[m] is None else served[m].version,
                              "versions": v} for m, v in infos.items()}, indent=1))
        return 0
    for model, versions in infos.items():
        live = served[model].version if served[model] is not None else None
        print(f"{model}: {len(versions)} version(s) in s3://{bucket}/{model}/, serving "
              f"{live if live is not None else 'none'}")
        for i in versions:
            mark = "*" if i["version"] == live else " "
            print(f" {mark}{i['version']:>4}  {'promoted' if i.get('promoted') else 'not promoted':<12}"
                  f"  test accuracy {i.get('test_accuracy', float('nan')):.4f}"
                  f"  dataset {i.get('dataset', '?')}  {i.get('created_at', '')}")
    return 0


def _release(args: argparse.Namespace, cfg: Any, client: Any, models: Sequence[str]) -> int:
    from dlpipe.core.errors import DlpipeError
    from dlpipe.registry import release
    from dlpipe.registry.tracking import follow_release

    bucket = cfg.buckets.models
    if args.action != "history" and len(models) != 1:
        raise DlpipeError(f"{args.action} changes one model at a time", fix="give one --model")
    for model in models:
        if args.action == "history":
            for line in release.audit_log(client, bucket, model):
                print(f"{line['at']}  {model}  {line['action']:<8} {line.get('previous')} -> "
                      f"{line['version']}  by {line['by']}  {line['reason']}")
            continue
        if args.action == "promote":
            record = release.promote(client, bucket, model, args.version, force=args.force,
                                     reason=args.reason or "by hand")
        else:
            record = release.rollback(client, bucket, model, reason=args.reason or "by hand")
        follow_release(cfg, client, model, record["version"])
        if record.get("unchanged"):
            print(f"{model}: version {record['version']} is already served")
        else:
            print(f"{model}: serving version {record['version']} (was {record['previous']}); "
                  f"{args.action} recorded by {record['by']} at {record['at']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
