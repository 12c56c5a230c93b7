"""Samples of served requests for ``dlpipe drift``, sent to Kafka off the request path.

Each predicted example is kept with probability ``serving.sample_rate``: its image (encoded
bytes as received; pixels inputs are encoded as PNG), the version that answered and the
prediction go to ``kafka.topics.samples`` as one JSON message. The producer only queues (it
never blocks a request): if Kafka is down or slow and its queue is full, samples are dropped
and counted (``dlpipe_serve_samples_total{outcome="dropped"}``), never the request.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import random
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from dlpipe.core.config import Config
    from dlpipe.serving.metrics import Metrics

log = logging.getLogger(__name__)


class Sampler:
    def __init__(self, cfg: Config, metrics: Metrics, *, draw=random.random) -> None:
        self.cfg, self.metrics, self.rate, self.draw = cfg, metrics, cfg.serving.sample_rate, draw
        self._producer: Any = None

    def offer(self, model: str, version: int, signature: str, inputs: dict[str, np.ndarray],
              outputs: dict[str, np.ndarray], batch_size: int) -> None:
        """Send each example of one answered request with probability ``rate``."""
        if self.rate <= 0:
            return
        picked = [i for i in range(batch_size) if self.draw() < self.rate]
        if not picked:
            return
        producer = self._producer_()
        for i in picked:
            image = _image(inputs, i)
            if image is None:
                continue
            record = {"model": model, "version": version, "signature": signature,
                      "served_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                      "class_index": _item(outputs.get("class_index"), i),
                      "class_name": _item(outputs.get("class_name"), i),
                      "probability": _top(outputs.get("probabilities"), i),
                      "image_b64": base64.b64encode(image).decode()}
            try:
                producer.produce(self.cfg.samples_topic, key=model.encode(),
                                 value=json.dumps(record).encode())
                outcome = "sent"
            except BufferError:  # the local queue is full: Kafka is not keeping up
                outcome = "dropped"
            self.metrics.samples.labels(model, outcome).inc()
        producer.poll(0)

    def _producer_(self) -> Any:
        if self._producer is None:
            from confluent_kafka import Producer

            self._producer = Producer({
                "bootstrap.servers": self.cfg.kafka_bootstrap_servers,
                "queue.buffering.max.messages": 10_000, "linger.ms": 200,
                "message.timeout.ms": 60_000, "error_cb": _kafka_error})
        return self._producer

    def close(self) -> None:
        if self._producer is not None:
            left = self._producer.flush(5)
            if left:
                log.warning("%d request samples not delivered to Kafka at shutdown", left)


def _kafka_error(err: Any) -> None:
    log.warning("request samples: Kafka: %s", err)


def _image(inputs: dict[str, np.ndarray], i: int) -> bytes | None:
    if "image_bytes" in inputs:
        value = inputs["image_bytes"].reshape(-1)[i]
        return value if isinstance(value, bytes) else None
    if "pixels" in inputs:
        from PIL import Image

        pixels = np.clip(np.asarray(inputs["pixels"][i], dtype=np.float32) * 255.0, 0, 255)
        pixels = pixels.astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
        return buffer.getvalue()
    return None


def _item(values: np.ndarray | None, i: int) -> Any:
    if values is None:
        return None
    value = np.asarray(values).reshape(-1)[i]
    return value.decode() if isinstance(value, bytes) else value.item()


def _top(values: np.ndarray | None, i: int) -> float | None:
    return None if values is None else float(np.max(np.asarray(values)[i]))
