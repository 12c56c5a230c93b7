"""``dlpipe models``: what is in the model store, and a copy of it TF Serving can read.

    dlpipe models list [--model NAME] [--json]
    dlpipe models sync --dest /models [--model NAME ...] [--keep 2] [--watch --interval 30]

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

from dlpipe.core.args import add_config_args, config_from_args


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlpipe models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = sub.add_parser("list", help="versions of each model: promoted, accuracy, dataset")
    listing.add_argument("--model", action="append", dest="models", metavar="NAME",
                         help="default: serving.models")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    sync = sub.add_parser("sync", help="copy the newest promoted version(s) to a local folder")
    sync.add_argument("--dest", required=True, type=Path,
                      help="base folder; each model goes to DEST/<model>/<version>/")
    sync.add_argument("--model", action="append", dest="models", metavar="NAME",
                      help="default: serving.models")
    sync.add_argument("--keep", type=int, default=2,
                      help="local versions kept per model, newest first (default 2)")
    sync.add_argument("--watch", action="store_true", help="keep syncing (sidecar mode)")
    sync.add_argument("--interval", type=float, default=30.0,
                      help="seconds between checks with --watch (default 30)")
    for p in (listing, sync):
        add_config_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.store import complete_versions
    from dlpipe.registry.sync import sync_models

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    models = args.models or cfg.serving.models
    client, bucket = s3_client(cfg), cfg.buckets.models
    if args.action == "list":
        infos = {m: complete_versions(client, bucket, m) for m in models}
        if args.json:
            print(json.dumps(infos, indent=1))
            return 0
        for model, versions in infos.items():
            print(f"{model}: {len(versions)} version(s) in s3://{bucket}/{model}/")
            for i in versions:
                print(f"  {i['version']:>4}  {'promoted' if i.get('promoted') else 'not promoted':<12}"
                      f"  test accuracy {i.get('test_accuracy', float('nan')):.4f}"
                      f"  dataset {i.get('dataset', '?')}  {i.get('created_at', '')}")
        return 0
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


if __name__ == "__main__":
    raise SystemExit(main())
