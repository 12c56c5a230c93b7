"""dlpipe: Kafka -> Spark Structured Streaming -> Delta on MinIO -> TFRecord -> TensorFlow.

Importing the package selects tf-keras for TensorFlow (``TF_USE_LEGACY_KERAS=1``), in this
process and in every process it starts (Spark's JVM and Python workers, TensorFlow worker
children), because Keras 3 fails under MultiWorkerMirroredStrategy with
spark-tensorflow-distributor (README, "Versions"). This is the one place a Python runtime
sets it (containers set it in the image); TensorFlow is only ever imported after dlpipe.
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
