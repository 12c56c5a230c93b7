"""Export: a pinned version of the clean Delta table -> TFRecord shards + manifest on MinIO."""
