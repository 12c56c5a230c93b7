"""Bench clean-up deletes a run's objects and topic on the real MinIO and Kafka, and only
those."""

from __future__ import annotations

import uuid

import pytest

from bench.cleanup import drop_prefixes
from dlpipe.core.s3 import list_keys, s3_client

pytestmark = pytest.mark.integration


def test_drop_prefixes_deletes_the_run_s_objects_and_topic_and_nothing_else(cfg):
    from confluent_kafka.admin import AdminClient, NewTopic

    run = uuid.uuid4().hex[:8]
    client = s3_client(cfg)
    bucket = cfg.buckets.lake
    for key in (f"bench-cleanup-{run}/t/part-0.parquet", f"bench-cleanup-{run}/t/_delta_log/0.json",
                f"bench-kept-{run}/x"):
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    topics = [f"bench.cleanup.{run}", f"bench.kept.{run}"]
    for future in admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1)
                                       for t in topics]).values():
        future.result(timeout=60)

    assert drop_prefixes(cfg, [(bucket, f"bench-cleanup-{run}/")], [topics[0]]) == 2

    assert list_keys(client, bucket, f"bench-cleanup-{run}/") == []
    assert list_keys(client, bucket, f"bench-kept-{run}/") == [f"bench-kept-{run}/x"]
    names = admin.list_topics(timeout=30).topics
    assert topics[0] not in names and topics[1] in names
    drop_prefixes(cfg, [(bucket, f"bench-kept-{run}/")], [topics[1]])
