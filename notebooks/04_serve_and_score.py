# Databricks notebook source
# MAGIC %md
# MAGIC # 04 · Serve and score
# MAGIC
# MAGIC Ask the served model about test images over the TensorFlow Serving REST and gRPC APIs
# MAGIC (`dlpipe serve`, started here as a child process), score the clean table in batch with
# MAGIC `predict_batch_udf`, then compare with the truth on the test split: a confusion matrix and
# MAGIC the mistakes the model was surest of.
# MAGIC
# MAGIC Runs alone too: with no promoted model it makes the dataset and trains one (1 worker).
# MAGIC Scoring writes with a Delta MERGE through Delta's Python API, which Spark Connect cannot
# MAGIC reach here, so on Connect `nb.run` scores in a local Spark application of its own.

# COMMAND ----------

from dlpipe.cli.notebook import ensure_model, start
from dlpipe.cli.notebook_views import model_version

nb = start(count=700, epochs=4, batch_size=16, min_accuracy=0.5, images=10)
spark, cfg, p = nb.spark, nb.cfg, nb.params
name = cfg.training.model_name
version = ensure_model(nb, count=p["count"])
manifest = model_version(cfg, name, version)["manifest"]
print(f"{name} v{version}, trained on {manifest.uri}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## REST and gRPC

# COMMAND ----------

import numpy as np
import pandas as pd

from dlpipe.cli.notebook_views import predict_grpc, predict_rest
from dlpipe.core.process import free_ports
from dlpipe.datasets.samples import sample_images
from dlpipe.datasets.shard_cache import ShardCache
from dlpipe.serving.launch import running_server

test = sample_images(manifest, ShardCache.from_config(cfg), split="test", per_class=1)
images = [(r["image"], label) for label, records in test.items() for r in records][: p["images"]]
log = cfg.stack.state_dir / "notebook-serve.log"
with running_server(cfg, models=[name], log=log, grpc_port=free_ports(1)[0]) as server:
    rest = predict_rest(server.url, name, [image for image, _ in images])
    grpc = predict_grpc(server.grpc, name, [image for image, _ in images])
answers = pd.DataFrame({
    "true": [label for _, label in images],
    "REST": [r["class_name"] for r in rest],
    "gRPC": [manifest.classes[i] for i in np.argmax(grpc["probabilities"], axis=1)],
    "confidence": [max(r["probabilities"]) for r in rest],
})
answers

# COMMAND ----------

# MAGIC %md
# MAGIC ## Batch scoring

# COMMAND ----------

from spark_jobs.score import job as score_job

scored = nb.run(score_job.score, model=name, version=version)
print(f"{scored.scored} rows scored now, {scored.total} in {scored.table} for {name} v{version}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## Against the truth: the test split

# COMMAND ----------

from dlpipe.cli import report
from dlpipe.cli.notebook_views import confusion, scored_test_split, worst_mistakes

predictions = scored_test_split(spark, cfg, manifest, model=name, version=version).cache()
matrix = confusion(predictions, manifest.classes)
nb.show(report.confusion_matrix(matrix, manifest.classes))
accuracy = np.trace(matrix) / max(np.sum(matrix), 1)

# COMMAND ----------

mistakes = worst_mistakes(predictions, n=16)
if mistakes:
    nb.show(report.sample_grid(mistakes))
pd.DataFrame([(m.label, m.predicted, round(m.confidence, 3)) for m in mistakes],
             columns=["true", "predicted", "confidence"])

# COMMAND ----------

clean_rows = spark.read.format("delta").load(cfg.tables.clean).count()
assert answers["REST"].tolist() == answers["gRPC"].tolist(), answers
assert grpc["version"] == version
assert scored.total == clean_rows, (scored.total, clean_rows)
assert np.sum(matrix) == manifest.counts["test"]["records"], (np.sum(matrix), manifest.counts["test"])
assert accuracy > 0.3, f"test accuracy {accuracy:.3f} is not above 0.3 (chance is 0.1)"
assert len(mistakes) == min(16, np.sum(matrix) - np.trace(matrix))
assert nb.figures >= 1
print(f"serve and score OK: REST = gRPC on {len(images)} images, {scored.total} rows scored, "
      f"test accuracy {accuracy:.3f}")
