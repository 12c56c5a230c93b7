"""A tiny Keras model trained under MultiWorkerMirroredStrategy, to prove distribution works.

``train_tiny`` is what ``MirroredStrategyRunner`` runs inside each Spark barrier task: it
imports TensorFlow itself, because the workers are fresh Python processes and the driver
must not pay for a TF import it does not use.
"""

from __future__ import annotations

import os


def train_tiny(*, epochs: int = 3, steps_per_epoch: int = 10, seed: int = 0) -> dict[str, object]:
    """Train a 2-layer net on a separable toy problem; returns what the chief saw."""
    import json

    import numpy as np
    import tensorflow as tf

    keras = tf.keras  # tf-keras, because TF_USE_LEGACY_KERAS=1 (see README "Versions")
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 4)).astype("float32")
    y = (x.sum(axis=1) > 0).astype("int64")
    data = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(512, seed=seed).batch(32).repeat()
    with strategy.scope():
        model = keras.Sequential([
            keras.layers.Input(shape=(4,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(2),
        ])
        model.compile(
            optimizer=keras.optimizers.Adam(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
    history = model.fit(data, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0)
    tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    return {
        "workers": len(tf_config.get("cluster", {}).get("worker", [])) or 1,
        "replicas_in_sync": int(strategy.num_replicas_in_sync),
        "keras_module": type(model).__module__.split(".")[0],
        "final_accuracy": float(history.history["accuracy"][-1]),
        "final_loss": float(history.history["loss"][-1]),
    }
