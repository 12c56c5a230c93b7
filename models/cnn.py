"""CNN architectures, chosen by name in ``training.architecture``.

``small`` suits tiny grey images (the 8x8 digits); ``resnet`` is a compact residual network
for 32-64 px colour images. Both take float pixels in [0, 1] (from
``models.preprocess.decode_images``) and return logits. tf-keras (``TF_USE_LEGACY_KERAS=1``)
because Keras 3 cannot run under spark-tensorflow-distributor (keras-team/keras#20585).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ARCHITECTURES = ("small", "resnet")


def build_model(architecture: str, *, input_shape: tuple[int, int, int], num_classes: int) -> Any:
    builders: dict[str, Callable[..., Any]] = {"small": _small, "resnet": _resnet}
    if architecture not in builders:
        from dlpipe.core.errors import ConfigError

        raise ConfigError(f"training.architecture must be one of {', '.join(ARCHITECTURES)}, "
                          f"got {architecture!r}")
    return builders[architecture](input_shape, num_classes)


def _keras() -> Any:
    import tensorflow as tf

    return tf.keras


def _small(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    layers = _keras().layers
    inputs = layers.Input(shape=input_shape, name="pixels")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inputs)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x) if min(input_shape[:2]) > 16 else layers.Flatten()(x)
    x = layers.Dropout(0.25)(x)
    x = layers.Dense(128, activation="relu")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return _keras().Model(inputs, outputs, name="small_cnn")


def _resnet(input_shape: tuple[int, int, int], num_classes: int) -> Any:
    layers = _keras().layers

    def block(x: Any, filters: int, stride: int) -> Any:
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.BatchNormalization()(y)
        y = layers.ReLU()(y)
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
            shortcut = layers.BatchNormalization()(shortcut)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    inputs = layers.Input(shape=input_shape, name="pixels")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return _keras().Model(inputs, outputs, name="resnet_small")
