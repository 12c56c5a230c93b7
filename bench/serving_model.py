"""A SavedModel published to the bench stack's model store, for the serving and scoring benches.

Throughput does not depend on the weights, so the model is built, not trained: the same
architecture and serving signatures as training exports, published as a promoted version.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from dlpipe.core.config import Config


def publish_untrained(cfg: Config, name: str, *, architecture: str, height: int, width: int,
                      channels: int, classes: list[str]) -> int:
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.store import publish_model
    from models.cnn import build_model
    from models.serving import save_serving_model

    model = build_model(architecture, input_shape=(height, width, channels), num_classes=len(classes))
    image = {"format": "PNG", "height": height, "width": width, "channels": channels}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_serving_model(model, Path(tmp) / "model", height=height, width=width,
                                  channels=channels, classes=classes)
        return publish_model(s3_client(cfg), cfg.buckets.models, name, path, extras={},
                             info={"promoted": True, "classes": classes, "image": image,
                                   "test_accuracy": 0.0, "run_id": "bench"})
