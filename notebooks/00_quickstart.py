# Databricks notebook source
# MAGIC %md
# MAGIC # 00 · Quickstart: Spark, MinIO and TensorFlow
# MAGIC
# MAGIC Write a file to the object store with Spark and read it back, train a logistic regression
# MAGIC on it with TensorFlow, then save the model to the object store and load it again.
# MAGIC
# MAGIC Runs on Databricks (import the repo, see `docs/notebooks.md`), in JupyterLab (`make notebook`)
# MAGIC and as plain Python (`python notebooks/00_quickstart.py`). Parameters are widgets on
# MAGIC Databricks, else `DLPIPE_NB_<NAME>` environment variables, else the defaults below.

# COMMAND ----------

from dlpipe.cli.notebook import start

nb = start(rows=1797, lr_epochs=40)
spark, cfg, p = nb.spark, nb.cfg, nb.params
print(f"Spark {spark.version} ({'Spark Connect' if nb.connect else 'own session'}); "
      f"object store {cfg.s3_endpoint}; parameters {p}")

# COMMAND ----------

# MAGIC %md
# MAGIC ## A file on the object store
# MAGIC scikit-learn's 8x8 digits as 64 pixel columns and a label, written as Parquet on `s3a://`.

# COMMAND ----------

import pandas as pd
from sklearn.datasets import load_digits

digits = load_digits()
frame = pd.DataFrame(digits.data, columns=[f"px{i}" for i in range(64)]).assign(label=digits.target)
path = f"s3a://{cfg.buckets.lake}/notebooks/quickstart/digits.parquet"
spark.createDataFrame(frame.head(p["rows"])).write.mode("overwrite").parquet(path)

back = spark.read.parquet(path).toPandas()
print(f"{len(back)} rows written to and read back from {path}")
back.head()

# COMMAND ----------

# MAGIC %md
# MAGIC ## Logistic regression with TensorFlow
# MAGIC One dense softmax layer on the scaled pixels; 300 rows held out.

# COMMAND ----------

import numpy as np
import tensorflow as tf

x = back.drop(columns="label").to_numpy("float32") / 16.0
y = back["label"].to_numpy()
order = np.random.default_rng(0).permutation(len(x))
test, train = order[:300], order[300:]

tf.keras.utils.set_random_seed(0)
model = tf.keras.Sequential([tf.keras.layers.Input((64,)), tf.keras.layers.Dense(10, activation="softmax")])
model.compile(optimizer=tf.keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
              metrics=["accuracy"])
history = model.fit(x[train], y[train], epochs=p["lr_epochs"], batch_size=64, verbose=0)
loss, accuracy = model.evaluate(x[test], y[test], verbose=0)
print(f"held-out accuracy {accuracy:.3f} (loss {loss:.3f})")

# COMMAND ----------

import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(5, 2.5))
ax.plot(history.history["loss"], label="loss")
ax.plot(history.history["accuracy"], label="accuracy")
ax.set_xlabel("epoch")
ax.legend()
nb.show(fig)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Save the model to the object store and load it back

# COMMAND ----------

import tempfile
from pathlib import Path

from dlpipe.core.s3 import s3_client

client = s3_client(cfg)
key = "notebooks/quickstart/logreg.keras"
with tempfile.TemporaryDirectory() as tmp:
    model.save(Path(tmp, "logreg.keras"))
    client.upload_file(str(Path(tmp, "logreg.keras")), cfg.buckets.lake, key)
    client.download_file(cfg.buckets.lake, key, str(Path(tmp, "copy.keras")))
    reloaded = tf.keras.models.load_model(Path(tmp, "copy.keras"))
print(f"saved to and loaded from s3://{cfg.buckets.lake}/{key}")

# COMMAND ----------

same = np.allclose(reloaded.predict(x[test], verbose=0), model.predict(x[test], verbose=0), atol=1e-6)
assert len(back) == p["rows"], (len(back), p["rows"])
assert accuracy > 0.85, f"held-out accuracy {accuracy:.3f} is not above 0.85"
assert same, "the model loaded from the object store predicts differently"
assert nb.figures >= 1
print(f"quickstart OK: {len(back)} rows, accuracy {accuracy:.3f}, model round trip through the object store")
