# Databricks notebook source
# MAGIC %md
# MAGIC # 03 · Distributed training on Spark
# MAGIC
# MAGIC `train_job.train(spark, cfg, workers=2, ...)`: spark-tensorflow-distributor's
# MAGIC `MirroredStrategyRunner` starts one Spark barrier task per TensorFlow worker
# MAGIC (MultiWorkerMirroredStrategy), each reading its own shards of the dataset from the object
# MAGIC store. Then the training curves, and the exported model version with its lineage.
# MAGIC
# MAGIC Barrier tasks need a SparkContext: on Spark Connect (or a Databricks shared cluster) `nb.run`
# MAGIC starts the same call in a local Spark application of its own; on a classic session (a
# MAGIC single-user cluster, `dlpipe notebook --classic`, plain Python) it runs on `spark` itself.

# COMMAND ----------

from dlpipe.cli.notebook import ensure_dataset, run_id_for, start
from spark_jobs.train import job as train_job

# epochs, batch_size, workers and min_accuracy set the training.* keys of cfg
nb = start(count=700, workers=2, epochs=4, batch_size=16, min_accuracy=0.5)
spark, cfg, p = nb.spark, nb.cfg, nb.params

# COMMAND ----------

manifest = ensure_dataset(nb, count=p["count"])
run_id = run_id_for(cfg, manifest)
print(f"training {cfg.training.model_name} on {manifest.uri} as run {run_id}")

# COMMAND ----------

result = nb.run(train_job.train, workers=p["workers"], run_id=run_id)
{k: result[k] for k in ("model_uri", "version", "promoted", "test_accuracy")}

# COMMAND ----------

# MAGIC %md
# MAGIC ## Training curves
# MAGIC One record per epoch, written by the chief worker next to the run's checkpoints.

# COMMAND ----------

import pandas as pd

from dlpipe.cli import report
from dlpipe.core.s3 import s3_client
from models.checkpoints import RunStore

epochs = RunStore(s3_client(cfg), cfg.buckets.checkpoints, run_id).metrics()
nb.show(report.training_curves(epochs))
pd.DataFrame(epochs)

# COMMAND ----------

# MAGIC %md
# MAGIC ## The exported version and its lineage
# MAGIC The version folder holds the SavedModel, its metrics and the manifest of the dataset it was
# MAGIC trained on, which names the clean table's Delta version.

# COMMAND ----------

from dlpipe.cli.notebook_views import model_version

exported = model_version(cfg, cfg.training.model_name, result["version"])
lineage = exported["manifest"]
print(f"{result['model_uri']}: promoted={exported['info']['promoted']}, "
      f"test accuracy {exported['metrics']['test']['accuracy']:.3f}")
print(f"  trained on {lineage.uri} = {lineage.source['table']} @ Delta version {lineage.delta_version} "
      f"({lineage.source['delta_timestamp']})")

# COMMAND ----------

accuracy = exported["metrics"]["test"]["accuracy"]
assert result["version"] >= 1 and exported["info"]["version"] == result["version"]
assert len(epochs) == p["epochs"], (len(epochs), p["epochs"])
assert lineage.delta_version == manifest.delta_version and lineage.export_id == manifest.export_id
assert accuracy > 0.3, f"test accuracy {accuracy:.3f} is not above 0.3 (chance is 0.1)"
assert nb.figures >= 1
print(f"train OK: {result['model_uri']}, {len(epochs)} epochs on {p['workers']} workers, "
      f"test accuracy {accuracy:.3f}")
