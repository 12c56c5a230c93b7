"""Create the buckets and topics the config names; safe to run again."""

from __future__ import annotations

from dlpipe.core.config import Config
from dlpipe.core.errors import ServiceError


def ensure_buckets(cfg: Config) -> list[str]:
    """Create missing buckets; returns the ones it created."""
    from botocore.exceptions import ClientError

    from dlpipe.core.s3 import s3_client

    client = s3_client(cfg)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    created = []
    for name in cfg.buckets.names():
        if name in existing:
            continue
        try:
            client.create_bucket(Bucket=name)
        except ClientError as exc:
            code = exc.response["Error"]["Code"]
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise
        created.append(name)
    return created


def ensure_topics(cfg: Config) -> list[str]:
    """Create missing topics with their configured partitions; returns the ones created.

    A topic with fewer partitions than configured (made under an older default) is grown to
    the count: ingest's parallelism follows it, and growing is safe for dlpipe (duplicates are
    found by id, not by partition; the streaming query reads new partitions from their start).
    Kafka cannot shrink a topic, so one with more is left as it is."""
    from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    existing = admin.list_topics(timeout=10).topics
    short = [NewPartitions(t.name, t.partitions) for t in cfg.kafka.topics.values()
             if t.name in existing and len(existing[t.name].partitions) < t.partitions]
    for name, fut in (admin.create_partitions(short).items() if short else ()):
        try:
            fut.result(timeout=30)
        except Exception as exc:
            raise ServiceError(f"could not grow Kafka topic {name} to its configured partitions: "
                               f"{exc}") from exc
    wanted = [t for t in cfg.kafka.topics.values() if t.name not in existing]
    if not wanted:
        return []
    futures = admin.create_topics(
        [NewTopic(t.name, num_partitions=t.partitions, replication_factor=1) for t in wanted]
    )
    for name, fut in futures.items():
        try:
            fut.result(timeout=30)
        except Exception as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise ServiceError(f"could not create Kafka topic {name}: {exc}") from exc
    return [t.name for t in wanted]
