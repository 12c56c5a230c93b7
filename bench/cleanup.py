"""What benchmarks leave in the bench stack: its objects and topics, dropped after a run.

The bench stack (``.dlpipe/bench-stack``) belongs to the benchmarks alone, and each run writes
tables, shards, checkpoints and models of its own (a full ``make bench`` about 2 GB, plus its
Kafka topics); kept, three runs fill several GB of disk that nothing reads again.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BENCH_TOPICS = "bench."  # every benchmark names its topics bench.<what>.<run>


def _admin(cfg: Any) -> Any:
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})


def drop_prefixes(cfg: Any, prefixes: list[tuple[str, str]], topics: list[str], *,
                  admin: Any = None) -> int:
    """Deletes the objects under each (bucket, prefix) and the named topics; returns objects
    deleted."""
    from dlpipe.core.s3 import delete_keys, list_keys, s3_client

    client = s3_client(cfg)
    deleted = sum(delete_keys(client, bucket, list_keys(client, bucket, prefix))
                  for bucket, prefix in prefixes)
    if topics:
        admin = admin or _admin(cfg)  # held until the futures resolve: a dropped client cancels them
        for future in admin.delete_topics(topics).values():
            future.result(timeout=60)
    return deleted


def drop_everything(cfg: Any) -> None:
    """Empties every bucket of the bench stack and deletes its benchmarks' topics."""
    admin = _admin(cfg)
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(BENCH_TOPICS)]
    deleted = drop_prefixes(cfg, [(bucket, "") for bucket in cfg.buckets.names()], topics,
                            admin=admin)
    log.info(f"dropped the benchmarks' data: {deleted:,} objects, {len(topics)} topics "
             "(python -m bench --keep-data keeps them)")


def reclaim_disk(state_dir: Path) -> int:
    """Frees what the stopped stack had only marked deleted; returns bytes freed.

    MinIO moves a deleted object to its trash and Kafka renames a deleted topic's folders to
    ``*-delete``; both remove them in the background, a minute or more later, and the run has
    stopped them by then. With the services stopped these folders are theirs to lose."""
    leftovers = [*(state_dir / "minio" / "data" / ".minio.sys" / "tmp" / ".trash").glob("*"),
                 *(state_dir / "kafka" / "data").glob("*-delete")]
    freed = sum(f.stat().st_size for d in leftovers for f in d.rglob("*") if f.is_file())
    for path in leftovers:
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    return freed
