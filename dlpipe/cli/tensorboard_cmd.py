"""``dlpipe tensorboard --run ID``: TensorBoard on a training run's event files from MinIO.

    dlpipe tensorboard --run digits-cnn-20261123-0215-ab12cd [--port 6006] [--refresh 30]

Training's chief mirrors its TensorBoard files to ``s3://<checkpoints>/train/<run>/tensorboard/``
(``models.checkpoints.RunStore``). TensorBoard reads only local folders without
tensorflow-io, so this copies them under the cache and keeps copying new and grown files
every ``--refresh`` seconds while TensorBoard runs (a run still training shows its newest
epochs). Without ``--run`` it lists the runs that have event files.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from dlpipe.core.args import add_config_args, config_from_args
from dlpipe.core.errors import DlpipeError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlpipe tensorboard", description=__doc__.split("\n")[0])
    parser.add_argument("--run", help="training run id (without it: list runs with event files)")
    parser.add_argument("--port", type=int, default=6006, help="TensorBoard's port (default 6006)")
    parser.add_argument("--host", default="127.0.0.1", help="TensorBoard's address")
    parser.add_argument("--refresh", type=float, default=30.0,
                        help="seconds between copies of new event files (default 30; 0: once)")
    parser.add_argument("--dest", type=Path, default=Path("~/.cache/dlpipe/tensorboard"),
                        help="local copies go to DEST/<run>/")
    add_config_args(parser)
    return parser


def sync_events(client, bucket: str, prefix: str, dest: Path, seen: dict[str, int]) -> int:
    """Copy objects under ``prefix`` that are new or changed in size; returns how many."""
    copied = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if seen.get(obj["Key"]) == obj["Size"]:
                continue
            target = dest / obj["Key"][len(prefix):]
            target.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(bucket, obj["Key"], str(target))
            seen[obj["Key"]] = obj["Size"]
            copied += 1
    return copied


def main(argv: Sequence[str] | None = None) -> int:
    from dlpipe.core.s3 import child_names, s3_client
    from models.checkpoints import RunStore

    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    client, bucket = s3_client(cfg), cfg.buckets.checkpoints
    if not args.run:
        root = RunStore.ROOT
        runs = [r for r in child_names(client, bucket, f"{root}/")
                if client.list_objects_v2(Bucket=bucket, Prefix=f"{root}/{r}/tensorboard/",
                                          MaxKeys=1).get("KeyCount")]
        print("\n".join(runs) if runs else f"no training run has event files in s3://{bucket}/{root}/")
        return 0
    store = RunStore(client, bucket, args.run)
    prefix, dest = f"{store.prefix}/tensorboard/", args.dest.expanduser() / args.run
    seen: dict[str, int] = {}
    if not sync_events(client, bucket, prefix, dest, seen):
        raise DlpipeError(f"run {args.run!r} has no TensorBoard files in s3://{bucket}/{prefix}",
                          fix="dlpipe tensorboard (no --run) lists the runs that have them")
    stop = threading.Event()

    def follow() -> None:
        while not stop.wait(args.refresh):
            try:
                sync_events(client, bucket, prefix, dest, seen)
            except Exception as exc:  # the store may come and go; TensorBoard keeps what it has
                print(f"tensorboard: copy failed, retrying: {exc}", file=sys.stderr)

    if args.refresh > 0:
        threading.Thread(target=follow, daemon=True).start()
    print(f"TensorBoard for run {args.run} on http://{args.host}:{args.port} (files in {dest})",
          file=sys.stderr, flush=True)
    try:
        return subprocess.call([str(Path(sys.executable).parent / "tensorboard"), "--logdir",
                                str(dest), "--host", args.host, "--port", str(args.port)])
    finally:
        stop.set()


if __name__ == "__main__":
    raise SystemExit(main())
