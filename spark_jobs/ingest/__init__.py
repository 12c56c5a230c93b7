"""Streaming ingest: Kafka raw topic -> clean and quarantine Delta tables on s3a."""
