"""Which served examples go to the samples topic, in what form, and what a full queue does.
The producer here is a stub recording calls: the real Kafka path is test_monitoring's."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
from PIL import Image

from dlpipe.core.sections import ServingConfig
from dlpipe.serving.metrics import Metrics
from dlpipe.serving.sampling import Sampler


class Producer:
    def __init__(self, room: int = 100) -> None:
        self.sent, self.room = [], room

    def produce(self, topic, key, value):
        if len(self.sent) >= self.room:
            raise BufferError("Local: Queue full")
        self.sent.append((topic, key, json.loads(value)))

    def poll(self, timeout):
        return 0


def sampler(rate: float, draws: list[float], room: int = 100) -> tuple[Sampler, Producer]:
    cfg = SimpleNamespace(serving=ServingConfig(sample_rate=rate), samples_topic="samples")
    s = Sampler(cfg, Metrics(), draw=iter(draws).__next__)
    s._producer = Producer(room)
    return s, s._producer


OUTPUTS = {"class_index": np.array([1, 0, 1]), "class_name": np.array([b"b", b"a", b"b"]),
           "probabilities": np.array([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])}


def test_examples_are_kept_at_the_rate_with_image_version_and_prediction():
    s, producer = sampler(0.5, [0.1, 0.7, 0.3])
    images = np.array([b"\x89PNG-a", b"\x89PNG-b", b"\x89PNG-c"], dtype=object)
    s.offer("m", 4, "serving_default", {"image_bytes": images}, OUTPUTS, 3)
    sent = [record for _, _, record in producer.sent]
    assert [base64.b64decode(r["image_b64"]) for r in sent] == [b"\x89PNG-a", b"\x89PNG-c"]
    assert [(r["model"], r["version"], r["class_name"], r["class_index"]) for r in sent] == [
        ("m", 4, "b", 1), ("m", 4, "b", 1)]
    assert sent[0]["probability"] == 0.8 and producer.sent[0][0] == "samples"


def test_pixels_are_sent_as_png_and_a_full_queue_drops_samples_not_requests():
    s, producer = sampler(1.0, [0.0] * 3, room=2)
    pixels = np.full((3, 4, 4, 1), 0.5, dtype=np.float32)
    s.offer("m", 4, "serving_pixels", {"pixels": pixels}, OUTPUTS, 3)
    image = Image.open(io.BytesIO(base64.b64decode(producer.sent[0][2]["image_b64"])))
    assert image.size == (4, 4) and np.asarray(image).mean() == 127
    counts = {s.labels["outcome"]: s.value for m in s.metrics.registry.collect()
              for s in m.samples if m.name == "dlpipe_serve_samples" and s.name.endswith("_total")}
    assert counts == {"sent": 2, "dropped": 1}


def test_a_rate_of_zero_never_touches_kafka():
    s = Sampler(SimpleNamespace(serving=ServingConfig(), samples_topic="x"), Metrics())
    s.offer("m", 1, "serving_default", {"image_bytes": np.array([b"x"], dtype=object)}, OUTPUTS, 1)
    assert s._producer is None
