"""The one image preprocessing step shared by training input, serving and batch scoring.

Training, the SavedModel's serving signature and Spark batch scoring all call
``decode_images`` on encoded PNG bytes, so a model never sees pixels prepared two ways.
TensorFlow is imported inside: this module is imported by drivers that never run TF.
"""

from __future__ import annotations

from typing import Any


def decode_images(encoded: Any, *, height: int, width: int, channels: int,
                  resize: bool = True) -> Any:
    """A batch of PNG/JPEG bytes ``[B]`` -> float32 pixels ``[B, height, width, channels]`` in [0, 1].

    With ``resize`` (serving, scoring) images of another size are resized bilinearly. The
    training input passes ``resize=False``: the export guarantees the size, and an image of
    another size is then an error rather than a silent resize.
    """
    return scale_pixels(decode_pixels(encoded, height=height, width=width, channels=channels,
                                      resize=resize))


def decode_pixels(encoded: Any, *, height: int, width: int, channels: int,
                  resize: bool = True) -> Any:
    """``decode_images`` before scaling: uint8 ``[B, height, width, channels]``, a quarter of the
    memory of float32, which is what the training input keeps when it holds a split in memory."""
    import tensorflow as tf

    def decode(one: Any) -> Any:
        image = tf.io.decode_image(one, channels=channels, expand_animations=False)
        if not resize:
            return tf.ensure_shape(image, [height, width, channels])
        same = tf.logical_and(tf.shape(image)[0] == height, tf.shape(image)[1] == width)
        image = tf.cond(same, lambda: image,
                        lambda: tf.cast(tf.round(tf.clip_by_value(
                            tf.image.resize(image, [height, width]), 0, 255)), tf.uint8))
        return tf.ensure_shape(image, [height, width, channels])

    return tf.map_fn(decode, encoded, fn_output_signature=tf.TensorSpec(
        [height, width, channels], tf.uint8))


def scale_pixels(pixels: Any) -> Any:
    """uint8 pixels -> float32 in [0, 1], the model's input."""
    import tensorflow as tf

    return tf.cast(pixels, tf.float32) / 255.0


def augment_images(images: Any, *, seed: int, max_shift: int = 2) -> Any:
    """Random shifts of up to ``max_shift`` pixels per image (zero padded): cheap, label-safe
    for digits and shapes, unlike flips."""
    import tensorflow as tf

    shape = tf.shape(images)
    padded = tf.pad(images, [[0, 0], [max_shift, max_shift], [max_shift, max_shift], [0, 0]])

    def crop(image: Any) -> Any:
        return tf.image.random_crop(image, [shape[1], shape[2], shape[3]], seed=seed)

    return tf.map_fn(crop, padded)
