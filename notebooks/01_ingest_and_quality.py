# Databricks notebook source
# MAGIC %md
# MAGIC # 01 · Ingest and data quality
# MAGIC
# MAGIC Send labelled digits to Kafka (with bad records of every kind and some duplicates), ingest
# MAGIC them once with the Structured Streaming job, then look at what landed: the clean table, the
# MAGIC quarantine table and its reasons, and the clean table's Delta history with time travel.
# MAGIC
# MAGIC The ingest job keeps per-batch state in its driver, so on a Spark Connect session it runs as
# MAGIC a local Spark application of its own (`nb.run`); everything else here runs on `spark`.

# COMMAND ----------

from collections import Counter

from dlpipe.cli import report
from dlpipe.cli.notebook import delta_history, produce_digits, start
from spark_jobs.ingest import job as ingest_job

nb = start(count=700, bad_fraction=0.05, duplicate_fraction=0.02)
spark, cfg, p = nb.spark, nb.cfg, nb.params
print(f"topic {cfg.kafka.topics['raw'].name} -> {cfg.tables.clean} + {cfg.tables.quarantine}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Produce, then ingest once

# COMMAND ----------

sent = produce_digits(cfg, count=p["count"], bad_fraction=p["bad_fraction"],
                      duplicate_fraction=p["duplicate_fraction"])
print(f"sent {sent.sent} records: {dict(sent.by_kind)}")

batches = nb.run(ingest_job.run, once=True)
totals, reasons_now = Counter(), Counter()
for b in batches:
    totals.update({k: b[k] for k in ("rows_in", "clean", "quarantined", "duplicates")})
    reasons_now.update(b["reasons"])
print(f"{len(batches)} micro-batch(es): {dict(totals)}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Clean and quarantine tables

# COMMAND ----------

from pyspark.sql import functions as F

clean = spark.read.format("delta").load(cfg.tables.clean)
quarantine = spark.read.format("delta").load(cfg.tables.quarantine)
per_label = clean.groupBy("label").count().orderBy("label").toPandas()
per_label.set_index("label").T

# COMMAND ----------

reasons = {r["reason_code"]: r["count"] for r in quarantine.groupBy("reason_code").count().collect()}
nb.show(report.quarantine_bars(reasons))
(quarantine.select("reason_code", "reason_detail", "kafka_partition", "kafka_offset")
 .orderBy("kafka_offset").limit(10).toPandas())

# COMMAND ----------

# MAGIC %md
# MAGIC ## Delta history and time travel
# MAGIC Every ingest micro-batch with new rows is one Delta version; `versionAsOf` reads any of them.

# COMMAND ----------

history = delta_history(spark, cfg.tables.clean)
versions = history.select("version", "timestamp", "operation",
                          F.col("operationMetrics")["numOutputRows"].alias("rows_added")).orderBy("version")
versions_pd = versions.toPandas()
oldest, latest = int(versions_pd.version.min()), int(versions_pd.version.max())
first = spark.read.format("delta").option("versionAsOf", oldest).load(cfg.tables.clean)
rows_now, rows_first = clean.count(), first.count()
print(f"version {oldest}: {rows_first} rows; version {latest} (now): {rows_now} rows")
versions_pd

# COMMAND ----------

assert totals["rows_in"] == totals["clean"] + totals["duplicates"] + totals["quarantined"], totals
assert totals["rows_in"] >= p["count"], (totals, p["count"])
assert totals["quarantined"] > 0 and sum(reasons.values()) >= totals["quarantined"], (totals, reasons)
assert rows_now >= totals["clean"] > 0 and rows_first <= rows_now
assert per_label["count"].sum() == rows_now
assert nb.figures >= 1
print(f"ingest OK: {dict(totals)}; quarantine reasons {dict(sorted(reasons.items()))}; "
      f"{len(versions_pd)} Delta version(s)")
