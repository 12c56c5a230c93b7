"""Kafka checks a job makes before it starts, so a missing broker or topic fails at once."""

from __future__ import annotations

from dlpipe.core.config import Config
from dlpipe.core.errors import ServiceError


def require_topic(cfg: Config, name: str) -> None:
    """Fail at once, naming the fix, instead of after Kafka's 60 s metadata timeout."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    try:
        topics = admin.list_topics(timeout=10).topics
    except Exception as exc:
        raise ServiceError(
            f"Kafka at {cfg.kafka_bootstrap_servers} did not answer: {exc}",
            fix="dlpipe stack up  (or set DLPIPE_KAFKA_BOOTSTRAP_SERVERS)",
        ) from exc
    if name not in topics:
        raise ServiceError(
            f"Kafka topic {name!r} does not exist at {cfg.kafka_bootstrap_servers}",
            fix="dlpipe stack up  (creates the topics named in conf/pipeline.yaml)",
        )
