"""The SavedModel that training exports: two serving signatures around one model.

``serving_default`` (also ``serving_bytes``) takes encoded image bytes, PNG or JPEG, and runs
``models.preprocess.decode_images``, the function training used; ``serving_pixels`` takes
float pixels in [0, 1]. Both return probabilities, the class index and the class name, so
TF Serving's REST API answers with names, not just numbers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dlpipe.contract.signatures import BYTES_SIGNATURE, DEFAULT_SIGNATURE, PIXELS_SIGNATURE


def save_serving_model(model: Any, path: Path, *, height: int, width: int, channels: int,
                       classes: list[str]) -> Path:
    import tensorflow as tf

    from models.preprocess import decode_images

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.class_names = tf.constant(classes)

        def _predict(self, pixels: Any) -> dict[str, Any]:
            probabilities = tf.nn.softmax(self.model(pixels, training=False), axis=-1)
            index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            return {"probabilities": probabilities, "class_index": index,
                    "class_name": tf.gather(self.class_names, index)}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve_bytes(self, image_bytes: Any) -> dict[str, Any]:
            return self._predict(decode_images(image_bytes, height=height, width=width,
                                               channels=channels))

        @tf.function(input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32,
                                                    name="pixels")])
        def serve_pixels(self, pixels: Any) -> dict[str, Any]:
            return self._predict(pixels)

    module = Serving()
    tf.saved_model.save(module, str(path), signatures={
        DEFAULT_SIGNATURE: module.serve_bytes, BYTES_SIGNATURE: module.serve_bytes,
        PIXELS_SIGNATURE: module.serve_pixels,
    })
    return path
