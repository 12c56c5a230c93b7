"""The local stack: real Kafka, MinIO and Spark standalone processes on 127.0.0.1."""
