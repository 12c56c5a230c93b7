# Databricks notebook source
# MAGIC %md
# MAGIC # 05 · End to end
# MAGIC
# MAGIC Kafka → ingest → clean Delta table → pinned TFRecord export → distributed training →
# MAGIC served model (REST and gRPC) → batch predictions, in one notebook, every step the
# MAGIC package's own function. Each step is idempotent: run again, it sends the same digits (ingest
# MAGIC counts them as duplicates and adds no Delta version), reuses the published export and the
# MAGIC finished training run, and scores no row twice.

# COMMAND ----------

import time

from dlpipe.cli.notebook import produce_digits, run_id_for, start

nb = start(count=700, workers=2, epochs=4, batch_size=16, min_accuracy=0.5)
spark, cfg, p = nb.spark, nb.cfg, nb.params
timings = {}
started = time.monotonic()

# COMMAND ----------

# MAGIC %md
# MAGIC ## 1 · Produce and ingest

# COMMAND ----------

from spark_jobs.ingest import job as ingest_job

sent = produce_digits(cfg, count=p["count"])
batches = nb.run(ingest_job.run, once=True)
ingested = {k: sum(b[k] for b in batches) for k in ("rows_in", "clean", "quarantined", "duplicates")}
timings["produce + ingest"] = time.monotonic() - started
ingested

# COMMAND ----------

# MAGIC %md
# MAGIC ## 2 · Export the clean table's newest version

# COMMAND ----------

from spark_jobs.export import job as export_job

manifest = export_job.export(spark, cfg)
timings["export"] = time.monotonic() - started - sum(timings.values())
{split: c["records"] for split, c in manifest.counts.items()}

# COMMAND ----------

# MAGIC %md
# MAGIC ## 3 · Train on Spark barrier tasks

# COMMAND ----------

from dlpipe.cli import report
from dlpipe.core.s3 import s3_client
from models.checkpoints import RunStore
from spark_jobs.train import job as train_job

run_id = run_id_for(cfg, manifest)
model = nb.run(train_job.train, workers=p["workers"], run_id=run_id)
timings["train"] = time.monotonic() - started - sum(timings.values())
nb.show(report.training_curves(RunStore(s3_client(cfg), cfg.buckets.checkpoints, run_id).metrics()))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 4 · Serve: the same answer over REST and gRPC

# COMMAND ----------

from dlpipe.cli.notebook_views import predict_grpc, predict_rest
from dlpipe.core.process import free_ports
from dlpipe.datasets.samples import sample_images
from dlpipe.datasets.shard_cache import ShardCache
from dlpipe.serving.launch import running_server

name, version = cfg.training.model_name, model["version"]
test = sample_images(manifest, ShardCache.from_config(cfg), split="test", per_class=1)
labels, images = zip(*[(label, rs[0]["image"]) for label, rs in test.items()], strict=True)
with running_server(cfg, models=[name], log=cfg.stack.state_dir / "notebook-serve.log",
                    grpc_port=free_ports(1)[0]) as server:
    rest = [r["class_name"] for r in predict_rest(server.url, name, images)]
    by_grpc = predict_grpc(server.grpc, name, images)
timings["serve"] = time.monotonic() - started - sum(timings.values())
list(zip(labels, rest, strict=True))

# COMMAND ----------

# MAGIC %md
# MAGIC ## 5 · Batch scoring, and the test split against the truth

# COMMAND ----------

import numpy as np

from dlpipe.cli.notebook_views import confusion, scored_test_split
from spark_jobs.score import job as score_job

scored = nb.run(score_job.score, model=name, version=version)
matrix = confusion(scored_test_split(spark, cfg, manifest, model=name, version=version), manifest.classes)
nb.show(report.confusion_matrix(matrix, manifest.classes))
timings["score"] = time.monotonic() - started - sum(timings.values())

# COMMAND ----------

import pandas as pd

summary = {
    "records sent": sent.sent, **{f"ingest: {k}": v for k, v in ingested.items()},
    "dataset": f"{manifest.uri} (Delta v{manifest.delta_version})",
    "model": f"{model['model_uri']} (test accuracy {model['test_accuracy']:.3f})",
    "predictions": f"{scored.total} rows in {scored.table}",
}
display_rows = [*summary.items(), *((f"{k} (s)", round(v, 1)) for k, v in timings.items())]
pd.DataFrame(display_rows, columns=["", "value"])

# COMMAND ----------

clean_rows = spark.read.format("delta").option("versionAsOf", manifest.delta_version).load(cfg.tables.clean)
assert ingested["rows_in"] == sent.sent == p["count"], (ingested, sent.sent)
assert ingested["rows_in"] == ingested["clean"] + ingested["quarantined"] + ingested["duplicates"]
assert sum(c["records"] for c in manifest.counts.values()) == clean_rows.count()
assert model["promoted"] and model["test_accuracy"] > 0.3, model
assert rest == [manifest.classes[i] for i in np.argmax(by_grpc["probabilities"], axis=1)]
assert scored.total >= clean_rows.count() and np.sum(matrix) == manifest.counts["test"]["records"]
assert nb.figures >= 2
print(f"end to end OK in {time.monotonic() - started:.0f}s "
      f"({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}): {summary}")
