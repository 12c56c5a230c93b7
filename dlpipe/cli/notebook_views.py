"""What the notebooks look at: figures, a served model's answers, and the model's mistakes.

Charts the HTML report already draws (training curves, confusion matrix, quarantine reasons,
predictions with their images) come from ``dlpipe.cli.report`` as PNG data URIs; this module
adds the dataset views and shows either kind inline in Jupyter and Databricks.
"""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dlpipe.cli.report import Sample
    from dlpipe.core.config import Config
    from dlpipe.datasets.manifest import Manifest


def display_figure(figure: Any) -> None:
    """Show a matplotlib figure or a PNG data URI in a notebook (nothing outside one)."""
    try:
        from IPython import get_ipython
        from IPython.display import Image, display
    except ImportError:  # plain Python without IPython
        get_ipython = None
    shell = get_ipython() if get_ipython else None
    if isinstance(figure, str):
        if shell is not None:
            display(Image(data=base64.b64decode(figure.split(",", 1)[1])))
        return
    import matplotlib.pyplot as plt

    if shell is not None:
        display(figure)
    plt.close(figure)


def class_grid(samples: Mapping[str, Sequence[Mapping[str, Any]]]) -> Any:
    """One row per class of decoded records (``dlpipe.datasets.samples``), images left to right."""
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    cols = max(len(v) for v in samples.values())
    fig, axes = plt.subplots(len(samples), cols, figsize=(0.9 * cols, 0.95 * len(samples)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for row, (name, records) in zip(axes, samples.items(), strict=True):
        row[0].set_title(name, loc="left", fontsize=8)
        for ax, record in zip(row, records, strict=False):
            image = np.asarray(Image.open(io.BytesIO(record["image"])))
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None, interpolation="nearest")
    return fig


def class_balance(manifest: Manifest) -> Any:
    """Records per class in each split of a dataset (the manifest's counts), as grouped bars."""
    import matplotlib.pyplot as plt
    import numpy as np

    splits = list(manifest.counts)
    x = np.arange(len(manifest.classes))
    width = 0.8 / len(splits)
    fig, ax = plt.subplots(figsize=(7, 2.6))
    for i, split in enumerate(splits):
        by_class = manifest.counts[split]["by_class"]
        ax.bar(x + i * width, [by_class.get(c, 0) for c in manifest.classes], width,
               label=f"{split} ({manifest.counts[split]['records']})")
    ax.set_xticks(x + width * (len(splits) - 1) / 2, manifest.classes)
    ax.set_ylabel("records")
    ax.set_title(f"{manifest.dataset} v{manifest.delta_version}: records per class and split")
    ax.legend(fontsize=8)
    return fig


# -- a served model, over both APIs ------------------------------------------------------

def predict_rest(url: str, model: str, images: Sequence[bytes]) -> list[dict[str, Any]]:
    """TF Serving REST ``:predict`` in the row format: one prediction per encoded image."""
    body = json.dumps({"instances": [{"b64": base64.b64encode(i).decode()} for i in images]}).encode()
    request = urllib.request.Request(f"{url}/v1/models/{model}:predict", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())["predictions"]


def predict_grpc(address: str, model: str, images: Sequence[bytes]) -> dict[str, Any]:
    """TF Serving gRPC ``PredictionService/Predict`` on the bytes input: outputs as arrays,
    and the version that answered."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto(list(images)))
    with grpc.insecure_channel(address) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    outputs = {name: tf.make_ndarray(tensor) for name, tensor in response.outputs.items()}
    return {"version": response.model_spec.version.value, **outputs}


# -- batch predictions against the truth ---------------------------------------------------

def scored_test_split(spark: SparkSession, cfg: Config, manifest: Manifest, *, model: str,
                      version: int) -> Any:
    """The predictions of ``model`` v``version`` for the test split of ``manifest``'s Delta
    version (by the export's split rule), with the true label and the image."""
    from pyspark.sql import functions as F

    from spark_jobs.export.transforms import with_split

    rows = spark.read.format("delta").option("versionAsOf", manifest.delta_version).load(cfg.tables.clean)
    test = (with_split(rows, manifest.split["fractions"], salt=manifest.split["salt"])
            .where(F.col("split") == "test"))
    predictions = (spark.read.format("delta").load(cfg.tables.predictions)
                   .where((F.col("model_name") == model) & (F.col("model_version") == version)))
    return (test.select("id", "label", "image_png")
            .join(predictions.select("id", "predicted_class", "probabilities"), "id")
            .withColumn("confidence", F.array_max("probabilities")))


def confusion(predictions: Any, classes: Sequence[str]) -> list[list[int]]:
    """Rows = true class, columns = predicted class, from ``scored_test_split``."""
    index = {c: i for i, c in enumerate(classes)}
    matrix = [[0] * len(classes) for _ in classes]
    for r in predictions.groupBy("label", "predicted_class").count().collect():
        matrix[index[r["label"]]][index[r["predicted_class"]]] += r["count"]
    return matrix


def worst_mistakes(predictions: Any, *, n: int = 16) -> list[Sample]:
    """The ``n`` wrong predictions the model was surest of, with their images."""
    from pyspark.sql import functions as F

    from dlpipe.cli.report import Sample

    wrong = (predictions.where(F.col("label") != F.col("predicted_class"))
             .orderBy(F.col("confidence").desc(), "id").limit(n).collect())
    return [Sample(bytes(r["image_png"]), r["label"], r["predicted_class"], float(r["confidence"]))
            for r in wrong]


def model_version(cfg: Config, model: str, version: int) -> dict[str, Any]:
    """A model version's record (``dlpipe-model.json``), its ``metrics.json`` and the manifest
    of the dataset it was trained on: its lineage back to a Delta version."""
    from dlpipe.core.s3 import s3_client
    from dlpipe.datasets.manifest import Manifest
    from dlpipe.registry.store import read_info

    client, bucket = s3_client(cfg), cfg.buckets.models

    def get(name: str) -> str:
        return client.get_object(Bucket=bucket, Key=f"{model}/{version}/{name}")["Body"].read().decode()

    where = f"s3://{bucket}/{model}/{version}/dataset-manifest.json"
    return {"info": read_info(client, bucket, model, version), "metrics": json.loads(get("metrics.json")),
            "manifest": Manifest.from_json(get("dataset-manifest.json"), where=where)}
