"""``dlpipe produce``: publish labelled images to the raw topic, with chosen bad records.

The producer is idempotent (``enable.idempotence``, ``acks=all``), so a retried send is
never written twice by Kafka; record ids are ``<prefix>-<index>``, so running it again with
the same ``--start`` re-sends the same ids (duplicates the ingest must count). Every sent
message is logged as a JSON line with the outcome ingest must give it: the tests' ground
truth.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config, PipelineConfig, learned_file, set_by_user, with_overrides
from dlpipe.core.errors import ConfigError
from dlpipe.produce.records import BAD_KINDS, Message, bad_message, encode, record, to_v2
from dlpipe.produce.sources import Sample, digits, image_folder, synthetic

log = logging.getLogger(__name__)


@dataclass
class ProduceReport:
    sent: int = 0
    by_kind: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    log: Path | None = None


def plan_messages(
    samples: Iterator[Sample], *, count: int, prefix: str, source: str, now: datetime,
    bad_fraction: float, bad_kinds: Sequence[str], duplicate_fraction: float,
    schema_version: int, watermark_delay_s: int, seed: int = 0,
) -> Iterator[tuple[str, Message]]:
    """(id, message) for each of ``count`` sends: valid, a bad kind (round robin), or a duplicate.

    Pure and deterministic for a seed: the same arguments give the same messages.
    """
    rng = random.Random(seed)
    valid_sent: list[tuple[str, Message]] = []
    kinds = list(bad_kinds)
    n_bad = 0
    for _ in range(count):
        draw = rng.random()
        if valid_sent and draw < duplicate_fraction:
            rid, original = valid_sent[rng.randrange(len(valid_sent))]
            yield rid, Message(original.key, original.value, "duplicate", None)
            continue
        sample = next(samples)
        rid = f"{prefix}-{sample.index:07d}"
        rec = record(id=rid, label=sample.label, image=sample.image, source=source, event_time=now)
        if schema_version == 2:
            rec = to_v2(rec)
        if kinds and draw < duplicate_fraction + bad_fraction:
            kind = kinds[n_bad % len(kinds)]
            n_bad += 1
            yield rid, bad_message(kind, rec, now=now, watermark_delay_s=watermark_delay_s)
            continue
        msg = Message(rid.encode(), encode(rec), "valid", None)
        valid_sent.append((rid, msg))
        yield rid, msg


def produce(cfg: Config, messages: Iterator[tuple[str, Message]], *, count: int, rate: float,
            log_path: Path | None) -> ProduceReport:
    from confluent_kafka import Producer
    from tqdm import tqdm

    from dlpipe.core.kafka import require_topic

    topic = cfg.kafka.topics["raw"].name
    require_topic(cfg, topic)
    producer = Producer({
        "bootstrap.servers": cfg.kafka_bootstrap_servers,
        "enable.idempotence": True, "acks": "all", "linger.ms": 20,
        "compression.type": "lz4", "message.max.bytes": 10_000_000,
    })
    report = ProduceReport(log=log_path)
    failures: list[str] = []
    sent_log = open(log_path, "a") if log_path else None  # noqa: SIM115 - closed in finally
    started = time.monotonic()

    def delivered(rid: str, msg: Message):
        def callback(err: Any, kmsg: Any) -> None:
            if err is not None:
                failures.append(f"{rid}: {err}")
                return
            if sent_log:
                sent_log.write(json.dumps({
                    "id": rid, "kind": msg.kind,
                    "expected": "quarantine" if msg.expected_reason else
                    ("duplicate" if msg.kind == "duplicate" else "clean"),
                    "reason": msg.expected_reason, "partition": kmsg.partition(),
                    "offset": kmsg.offset(),
                }) + "\n")
        return callback

    try:
        with tqdm(total=count, unit="rec", file=sys.stderr, mininterval=1, desc="produce") as bar:
            for i, (rid, msg) in enumerate(messages):
                if rate > 0:
                    ahead = i / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                while True:
                    try:
                        producer.produce(topic, key=msg.key, value=msg.value,
                                         on_delivery=delivered(rid, msg))
                        break
                    except BufferError:
                        producer.poll(0.5)
                producer.poll(0)
                report.sent += 1
                report.by_kind[msg.kind] += 1
                bar.update(1)
            remaining = producer.flush(60)
    finally:
        if sent_log:
            sent_log.close()
    report.seconds = time.monotonic() - started
    if remaining or failures:
        raise RuntimeError(f"{remaining} message(s) undelivered, {len(failures)} failed: {failures[:5]}")
    return report


def folder_classes(root: Path) -> list[str]:
    """An ImageFolder's labels: its sub-folder names, sorted (hidden ones skipped)."""
    if not root.is_dir():
        raise ConfigError(f"--folder {root} is not a folder", fix="pass the root of an ImageFolder tree")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def learn_folder_classes(cfg: Config, root: Path, *, user_set: bool) -> Config:
    """The config with ``ingest.classes`` covering the folder's classes: the folder's own,
    learned for a named pipeline the first time when neither the environment nor ``--set``
    names them (a profile's classes are an example, not the user's word).

    Ingest quarantines a label outside ``ingest.classes`` and export numbers the labels by
    their place in it, so the classes are saved once for the pipeline (every later command of
    it reads them) and never changed under data that already has them: a folder with a new
    class is refused before a single record is sent.
    """
    found, classes = folder_classes(root), list(cfg.ingest.classes)
    missing = [c for c in found if c not in classes]
    listed, name = ", ".join(found), cfg.pipeline.name
    learned = learned_file(cfg.stack.state_dir, name)
    problem = f"{root} has classes {listed}, but ingest.classes is {classes}: " \
              f"{', '.join(missing)} would all be quarantined as UNKNOWN_LABEL"
    if not missing and (user_set or learned.is_file() or name == PipelineConfig().name):
        return cfg
    if user_set:
        raise ConfigError(problem, fix=f"--set ingest.classes='[{listed}]' on produce, ingest and export "
                          "(or leave ingest.classes unset to learn the folder's)")
    if name == PipelineConfig().name:
        raise ConfigError(f"{problem}; the default pipeline {name!r} keeps the demo's classes",
                          fix="name a pipeline for these images: DLPIPE_PIPELINE=photos "
                          "DLPIPE_PROFILE=photos (README, \"Your own images\")")
    if learned.is_file():
        raise ConfigError(f"{problem}; pipeline {name!r} already learned its classes in {learned} "
                          "and a new class would renumber the labels of its data",
                          fix="use a new pipeline name, or delete that file and the pipeline's tables")
    learned.parent.mkdir(parents=True, exist_ok=True)
    learned.write_text(f"# Learned by dlpipe produce --source folder --folder {root}\n"
                       + yaml.safe_dump({"ingest": {"classes": found}}, default_flow_style=None))
    log.info(f"pipeline {name!r}: classes {listed} from {root}, saved in {learned} "
             "(every command of this pipeline uses them)")
    return with_overrides(cfg, {"ingest.classes": found})


def source_samples(args: argparse.Namespace) -> tuple[Iterator[Sample], str]:
    if args.source == "digits":
        return digits(start=args.start), "sklearn-digits"
    if args.source == "synthetic":
        return synthetic(size=args.size, seed=args.seed, start=args.start), f"synthetic-{args.size}"
    if args.folder is None:
        raise ConfigError("--source folder needs --folder PATH",
                          fix="dlpipe produce --source folder --folder PHOTOS")
    return image_folder(args.folder, start=args.start), f"folder-{args.folder.name}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="dlpipe produce", description=__doc__.split("\n\n")[0])
    add_config_args(p)
    p.add_argument("--source", choices=["digits", "synthetic", "folder"], default="digits")
    p.add_argument("--folder", type=Path, help="root of an ImageFolder tree (--source folder)")
    p.add_argument("--count", type=int, default=1797, help="messages to send (default 1797)")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: as fast as possible)")
    p.add_argument("--bad-fraction", type=float, default=0.0,
                   help="fraction of messages that are bad, spread round-robin over --bad-kinds")
    p.add_argument("--bad-kinds", default=",".join(BAD_KINDS),
                   help=f"comma-separated subset of: {', '.join(BAD_KINDS)}")
    p.add_argument("--duplicate-fraction", type=float, default=0.0,
                   help="fraction of messages that re-send an earlier valid record")
    p.add_argument("--schema-version", type=int, choices=[1, 2], default=1)
    p.add_argument("--size", type=int, default=32, help="image size of --source synthetic")
    p.add_argument("--start", type=int, default=0, help="first sample index (ids continue from it)")
    p.add_argument("--prefix", help="id prefix (default: the source name)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log", type=Path, help="append one JSON line per delivered message here")
    args = p.parse_args(argv)
    kinds = [k for k in args.bad_kinds.split(",") if k]
    unknown = sorted(set(kinds) - set(BAD_KINDS))
    if unknown:
        p.error(f"unknown bad kind(s): {', '.join(unknown)}")
    if not 0 <= args.bad_fraction + args.duplicate_fraction <= 1:
        p.error("--bad-fraction + --duplicate-fraction must be between 0 and 1")
    args.bad_kinds = kinds
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from_args(args)
    if args.source == "folder" and args.folder is not None:
        cfg = learn_folder_classes(cfg, args.folder, user_set=set_by_user("ingest.classes", args.overrides))
    samples, source = source_samples(args)
    messages = plan_messages(
        samples, count=args.count, prefix=args.prefix or args.source, source=source,
        now=datetime.now(UTC), bad_fraction=args.bad_fraction, bad_kinds=args.bad_kinds,
        duplicate_fraction=args.duplicate_fraction, schema_version=args.schema_version,
        watermark_delay_s=cfg.ingest.watermark_delay_s, seed=args.seed,
    )
    report = produce(cfg, messages, count=args.count, rate=args.rate, log_path=args.log)
    log.info(f"produced {report.sent:,} messages in {report.seconds:.1f}s "
             f"({report.sent / max(report.seconds, 1e-9):,.0f}/s): {dict(report.by_kind)}")
    return 0


if __name__ == "__main__":
    run_main(main, prog="produce")
