"""The model as a batch function for Spark's ``predict_batch_udf``: loaded once per worker.

``predict_batch_udf`` calls ``make_predict_fn()`` in each Python worker, once per UDF; the
factory keeps loaded versions in this module, so a worker copies a version from the model store
(atomically, into the local model folder shared by every worker on the machine) and loads it
once, for every task and every later scoring run it serves. The function
runs the SavedModel's bytes signature, which decodes with ``models.preprocess.decode_images``:
the same preprocessing as training and serving.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from dlpipe.contract.signatures import BYTES_SIGNATURE
from dlpipe.core.config import Config
from dlpipe.core.errors import DlpipeError

# Loaded models of this process, by (store, model, version): a version never changes once
# published, so a Python worker that scores the same version again (a notebook re-running
# the job, the next micro-batch) reuses it. Bounded: the oldest is dropped beyond two.
_LOADED: dict[tuple[str, str, str, int], Callable[[np.ndarray], dict[str, np.ndarray]]] = {}
_KEEP = 2


def load_predict_fn(cfg: Config, *, model: str, version: int, threads: int = 0
                    ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """A function from encoded images ``[B]`` to probabilities, class index and class name."""
    from pathlib import Path

    import tensorflow as tf

    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.sync import download_version

    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already started in this process: keep its threads
            pass
    path = download_version(s3_client(cfg), cfg.buckets.models, model, version,
                            Path(cfg.serving.model_dir).expanduser())
    signatures = tf.saved_model.load(str(path)).signatures
    if BYTES_SIGNATURE not in signatures:
        raise DlpipeError(
            f"model {model} v{version} has no {BYTES_SIGNATURE!r} signature (it has "
            f"{', '.join(sorted(signatures)) or 'none'}): batch scoring needs a model that "
            "`dlpipe train` exported", fix="promote a version that dlpipe trained (dlpipe models list)")
    signature = signatures[BYTES_SIGNATURE]

    def predict(images: np.ndarray) -> dict[str, np.ndarray]:
        out = signature(image_bytes=tf.constant(list(images), tf.string))
        return {"probabilities": out["probabilities"].numpy(),
                "class_index": out["class_index"].numpy(),
                "class_name": np.array([c.decode() for c in out["class_name"].numpy()], dtype=object)}

    predict.signature = signature  # keeps the loaded model alive with the function
    return predict


def make_predict_fn(cfg: Config, *, model: str, version: int, threads: int) -> Callable[[], Any]:
    """What ``predict_batch_udf`` takes: a picklable factory, run on the workers.

    A ``partial`` of the module-level ``cached_predict_fn``, not a closure: Spark pickles a
    closure by value with a fresh copy of the globals it names, so a closure's ``_LOADED``
    would be an empty dict in every task and each task would load the model again (about a
    second each). A module-level function is pickled by name and finds this module's cache.
    """
    return partial(cached_predict_fn, cfg, model=model, version=version, threads=threads)


def cached_predict_fn(cfg: Config, *, model: str, version: int, threads: int
                      ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """This process's loaded version, loading it on first use (at most ``_KEEP`` kept)."""
    key = (cfg.s3_endpoint, cfg.buckets.models, model, version)
    if key not in _LOADED:
        while len(_LOADED) >= _KEEP:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = load_predict_fn(cfg, model=model, version=version, threads=threads)
    return _LOADED[key]
