"""Re-estimate BatchNormalization's moving statistics before a model is exported.

During training, BatchNormalization normalises with each batch's own statistics and keeps
exponential moving averages (momentum 0.99) for inference. A short run (a few hundred
steps, typical for a small dataset or a quick retrain) ends with moving averages that still
remember the random initial weights, so the exported model in inference mode can be far
worse than the training accuracy said (seen on real photos: 1.00 in training mode, 0.77 in
inference mode). Here the trained weights stay as they are and the moving statistics are
replaced by the plain average of the batch statistics over a pass of the train split, with
the final weights: what the moving averages would converge to with enough steps.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def batchnorm_layers(model: Any) -> list[Any]:
    import tensorflow as tf

    found: list[Any] = []
    for layer in model.submodules if hasattr(model, "submodules") else model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            found.append(layer)
    return found


def recalibrate(model: Any, batches: Iterable[Any], *, max_batches: int) -> int:
    """Set every BatchNormalization layer's moving mean and variance to the average of the
    batch statistics over up to ``max_batches`` batches of images; returns the batches used.

    With momentum ``(k-1)/k`` on the k-th batch, each moving average becomes the running mean
    of the batch statistics. Only the moving statistics change: no gradient step is taken.
    """
    layers = batchnorm_layers(model)
    if not layers or max_batches <= 0:
        return 0
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.moving_mean.assign(layer.moving_mean * 0.0)
        layer.moving_variance.assign(layer.moving_variance * 0.0 + 1.0)
    used = 0
    try:
        for images in batches:
            used += 1
            for layer in layers:
                layer.momentum = (used - 1) / used
            model(images, training=True)
            if used >= max_batches:
                break
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return used
