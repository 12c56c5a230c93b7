# Databricks notebook source
# MAGIC %md
# MAGIC # 02 · A training dataset from a pinned Delta version
# MAGIC
# MAGIC Export one version of the clean table as TFRecord shards with a manifest (the export runs on
# MAGIC `spark`, Spark Connect included), read the manifest back, look at a few images of each class
# MAGIC straight from the shards, and at the class balance of each split.
# MAGIC
# MAGIC Runs alone too: with no clean table yet it produces and ingests `count` digits first.

# COMMAND ----------

from dlpipe.cli.notebook import delta_history, ensure_clean_table, start
from dlpipe.cli.notebook_views import class_balance, class_grid
from spark_jobs.export import job as export_job

nb = start(count=700, version=-1, per_class=8)
spark, cfg, p = nb.spark, nb.cfg, nb.params

# COMMAND ----------

# MAGIC %md
# MAGIC ## Export a pinned version
# MAGIC `version = -1` pins the table's newest version now; an already published version is reused.

# COMMAND ----------

from pyspark.sql import functions as F

ensure_clean_table(nb, count=p["count"])
latest = delta_history(spark, cfg.tables.clean).agg(F.max("version")).first()[0]
version = latest if p["version"] < 0 else p["version"]
manifest = export_job.export(spark, cfg, version=version)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The manifest: lineage, counts, shards

# COMMAND ----------

import json

from dlpipe.core.s3 import s3_client
from dlpipe.datasets.manifest import open_manifest

published = open_manifest(s3_client(cfg), cfg.buckets.datasets, manifest.dataset, version)
print(published.uri)
print(json.dumps({"source": published.source, "split": published.split, "image": published.image,
                  "counts": {s: c["records"] for s, c in published.counts.items()}}, indent=1))
[(s.path, s.records, s.bytes, s.crc32c) for s in published.shards]

# COMMAND ----------

# MAGIC %md
# MAGIC ## Images per class, read from the shards
# MAGIC Whole shards through the verified shard cache (as training reads them), records decoded
# MAGIC without TensorFlow.

# COMMAND ----------

from dlpipe.datasets.samples import sample_images
from dlpipe.datasets.shard_cache import ShardCache

samples = sample_images(published, ShardCache.from_config(cfg), split="train", per_class=p["per_class"])
nb.show(class_grid(samples))

# COMMAND ----------

# MAGIC %md
# MAGIC ## Class balance per split

# COMMAND ----------

import pandas as pd

nb.show(class_balance(published))
balance = pd.DataFrame({s: c["by_class"] for s, c in published.counts.items()}).fillna(0).astype(int)
balance

# COMMAND ----------

rows = spark.read.format("delta").option("versionAsOf", version).load(cfg.tables.clean).count()
exported = sum(c["records"] for c in published.counts.values())
assert published.delta_version == version and published.source["table"] == cfg.tables.clean
assert exported == rows == published.source["rows"], (exported, rows)
assert all(published.counts[s]["records"] > 0 for s in ("train", "validation", "test")), published.counts
assert sorted(samples) == sorted(published.classes), sorted(samples)
assert balance.to_numpy().sum() == exported
assert nb.figures >= 2
print(f"dataset OK: {published.uri}, {exported} records from Delta version {version}")
