"""``dlpipe demo``: what a new user runs first, on the local stack, end to end.

stack up -> produce the scikit-learn digits with bad records of every kind and some
duplicates -> ingest them into clean and quarantine Delta tables on MinIO -> export the
clean table's latest version as TFRecord shards with a manifest -> train the CNN on 2
workers (Spark barrier tasks) and export a versioned SavedModel -> serve it over the TF
Serving REST API and ask it about a few test images -> score the clean table in batch on
Spark -> a summary, and an HTML report written locally and to MinIO.

Running it again sends the same ids again, which ingest then counts as duplicates: nothing
is written twice, an already exported version is not exported again, nor is a model trained
twice on it (the run id names it), and rows already scored by the model are not scored again.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dlpipe.core.config import Config
from dlpipe.core.progress import step

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from dlpipe.cli.report import Sample

log = logging.getLogger(__name__)

SAMPLES = 16


@dataclass
class Timings:
    stages: list[tuple[str, int, float, str]] = field(default_factory=list)

    def add(self, stage: str, items: int, seconds: float, unit: str) -> None:
        self.stages.append((stage, items, seconds, unit))


def run(cfg: Config, *, cluster: bool = False, count: int = 1797) -> int:
    from dlpipe.core.session import get_spark
    from dlpipe.localstack.install import install_all
    from dlpipe.localstack.stack import Stack
    from dlpipe.produce.producer import plan_messages, produce
    from dlpipe.produce.records import BAD_KINDS
    from dlpipe.produce.sources import digits
    from spark_jobs.export import job as export_job
    from spark_jobs.ingest import job
    from spark_jobs.score import job as score_job
    from spark_jobs.train import job as train_job

    started = time.monotonic()
    timings = Timings()
    install_all()
    cfg = Stack.from_config(cfg).up(cluster=cluster).cfg
    produced_log = cfg.stack.state_dir / "demo-produced.jsonl"
    with step(f"producing {count} digits (5% bad records of {len(BAD_KINDS)} kinds, 2% duplicates)"):
        messages = plan_messages(
            digits(), count=count, prefix="digits", source="sklearn-digits", now=datetime.now(UTC),
            bad_fraction=0.05, bad_kinds=list(BAD_KINDS), duplicate_fraction=0.02,
            schema_version=1, watermark_delay_s=cfg.ingest.watermark_delay_s,
        )
        report = produce(cfg, messages, count=count, rate=0, log_path=produced_log)
    timings.add("produce to Kafka", report.sent, report.seconds, "records")
    with step("starting Spark"):
        spark = get_spark(cfg, app_name="dlpipe-demo", master="cluster" if cluster else None)
    with step("ingesting Kafka -> clean + quarantine Delta tables on MinIO") as s:
        batches = job.run(spark, cfg, once=True)
    totals, reasons = Counter(), Counter()
    for b in batches:
        totals.update({k: b[k] for k in ("rows_in", "clean", "quarantined", "duplicates")})
        reasons.update(b["reasons"])
    timings.add("ingest (Structured Streaming)", totals["rows_in"], s.elapsed(), "records")
    with step("exporting the clean table -> TFRecord shards + manifest on MinIO") as s:
        manifest = export_job.export(spark, cfg)
    exported = sum(manifest.counts[split]["records"] for split in manifest.counts)
    timings.add("export to TFRecord", exported, s.elapsed(), "records")
    with step(f"training {cfg.training.architecture} CNN on {cfg.training.workers} workers") as s:
        model = train_job.train(spark, cfg, workers=cfg.training.workers,
                                run_id=f"demo-{manifest.dataset}-v{manifest.delta_version}")
    epochs = _epochs(cfg, model["run_id"])
    trained = int(sum(e.get("images_per_s", 0) * e.get("train_seconds", 0) for e in epochs[-1:]))
    if epochs:
        timings.add("train (last epoch, all workers)", trained, epochs[-1]["train_seconds"], "images")

    name = cfg.training.model_name
    serving = _serving_version(cfg, name)
    samples: list[Sample] = []
    scored = None
    if serving is None:
        log.info(f"model {name} has no promoted version (test accuracy {model['test_accuracy']:.4f} is "
                 f"below training.min_test_accuracy {cfg.training.min_test_accuracy}): nothing to serve "
                 "or score")
    else:
        with step(f"serving {name} v{serving} over the TF Serving REST API; {SAMPLES} predictions") as s:
            samples, latencies = _ask_server(spark, cfg, name, manifest)
        timings.add("REST predictions (one image per request)", len(samples), sum(latencies), "requests")
        with step(f"batch scoring the clean table with {name} v{serving} on Spark") as s:
            scored = score_job.score(spark, cfg, model=name, version=serving)
        timings.add("batch scoring (rows not scored yet)", scored.scored, scored.seconds, "rows")

    summary = _summary(cfg, report.sent, totals, reasons, manifest, model, serving, scored)
    _print_summary(summary, timings)
    with step("writing the HTML report"):
        local, remote = _write_report(cfg, summary, timings, epochs, model, samples, reasons)
    log.info(f"\nreport: {local}\n        {remote}")
    log.info(f"demo finished in {time.monotonic() - started:.0f}s; the stack keeps running "
             "(`dlpipe stack status`, `dlpipe stack down`). Try the model yourself: `dlpipe serve`, then "
             f"POST {{\"instances\": [{{\"b64\": \"<PNG>\"}}]}} to "
             f"http://{cfg.serving.host}:{cfg.serving.port}/v1/models/{name}:predict")
    return 0


def _summary(cfg: Config, sent: int, totals: Counter, reasons: Counter, manifest: Any,
             model: dict[str, Any], serving: int | None, scored: Any) -> dict[str, str]:
    """The lines a person reads at the end of the demo, one per stage."""
    name = cfg.training.model_name
    return {
        "records produced": f"{sent:,}",
        "clean (written)": f"{totals['clean']:,}",
        "quarantined": f"{totals['quarantined']:,} "
                       f"({', '.join(f'{k} {v}' for k, v in sorted(reasons.items())) or 'none'})",
        "duplicates (not written)": f"{totals['duplicates']:,}",
        "dataset": f"{manifest.uri} (Delta version {manifest.delta_version}, "
                   + ", ".join(f"{k} {v['records']:,}" for k, v in manifest.counts.items()) + ")",
        "model": f"{model['model_uri']} (test accuracy {model['test_accuracy']:.4f}, "
                 f"{'promoted' if model['promoted'] else 'not promoted'})",
        "served version": "none" if serving is None else f"{name} v{serving}",
        "predictions table": f"{cfg.tables.predictions} "
                             + ("" if scored is None else f"({scored.total:,} rows for v{serving})"),
        **({"MLflow": f"{cfg.tracking_uri} (experiment {cfg.tracking.experiment!r}, registered "
                      f"model {name!r})"} if cfg.tracking_uri and cfg.stack.mlflow.enabled else {}),
        **({"Prometheus": f"http://{cfg.stack.host}:{cfg.stack.prometheus.port} (try "
                          "last_over_time(dlpipe_ingest_run_clean[1d]))"}
           if cfg.stack.prometheus.enabled else {}),
    }


def _print_summary(summary: dict[str, str], timings: Timings) -> None:
    log.info("")
    for key, value in summary.items():
        log.info(f"{key + ':':26s}{value}")
    log.info("\nthroughput by stage:")
    for stage, items, seconds, unit in timings.stages:
        log.info(f"  {stage:44s} {items:>7,} {unit:8s} in {seconds:6.1f}s  "
                 f"{items / seconds if seconds else 0:>9,.0f}/s")


def _epochs(cfg: Config, run_id: str) -> list[dict[str, Any]]:
    from dlpipe.core.s3 import s3_client
    from models.checkpoints import RunStore

    return RunStore(s3_client(cfg), cfg.buckets.checkpoints, run_id).metrics()


def _serving_version(cfg: Config, model: str) -> int | None:
    from dlpipe.core.s3 import s3_client
    from dlpipe.registry.release import serving_version

    return serving_version(s3_client(cfg), cfg.buckets.models, model)


def _test_images(spark: SparkSession, cfg: Config, manifest: Any) -> list[tuple[bytes, str]]:
    """A few images of the test split (never trained on), by the export's split rule."""
    from pyspark.sql import functions as F

    from spark_jobs.export.transforms import with_split

    rows = spark.read.format("delta").option("versionAsOf", manifest.delta_version).load(cfg.tables.clean)
    test = with_split(rows, manifest.split["fractions"], salt=manifest.split["salt"])
    picked = (test.where(F.col("split") == "test").orderBy("id").limit(SAMPLES)
              .select("image_png", "label").collect())
    return [(bytes(r["image_png"]), r["label"]) for r in picked]


def _ask_server(spark: SparkSession, cfg: Config, model: str, manifest: Any
                ) -> tuple[list[Sample], list[float]]:
    import urllib.request

    from dlpipe.cli.report import Sample
    from dlpipe.serving.launch import running_server

    images = _test_images(spark, cfg, manifest)
    samples, latencies = [], []
    with running_server(cfg, models=[model], log=cfg.stack.state_dir / "demo-serve.log") as server:
        for image, label in images:
            body = json.dumps({"instances": [{"b64": base64.b64encode(image).decode()}]}).encode()
            request = urllib.request.Request(f"{server.url}/v1/models/{model}:predict", data=body,
                                             headers={"Content-Type": "application/json"})
            t = time.perf_counter()
            with urllib.request.urlopen(request, timeout=30) as response:
                answer = json.loads(response.read())["predictions"][0]
            latencies.append(time.perf_counter() - t)
            samples.append(Sample(image, label, answer["class_name"], max(answer["probabilities"])))
            log.info(f"    POST {server.url}/v1/models/{model}:predict -> {answer['class_name']} "
                     f"({max(answer['probabilities']):.0%}); true label {label}; "
                     f"{latencies[-1] * 1000:.1f} ms")
    return samples, latencies


def _write_report(cfg: Config, summary: dict[str, str], timings: Timings, epochs: list[dict[str, Any]],
                  model: dict[str, Any], samples: list[Sample], reasons: Counter) -> tuple[Path, str]:
    from dlpipe.cli.report import ReportData, render
    from dlpipe.core.s3 import s3_client

    client = s3_client(cfg)
    bucket, name = cfg.buckets.models, cfg.training.model_name
    metrics = json.loads(client.get_object(Bucket=bucket, Key=f"{name}/{model['version']}/metrics.json")
                         ["Body"].read())
    html = render(ReportData(
        title=f"dlpipe demo, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC", summary=summary,
        stages=timings.stages, epochs=epochs, confusion=metrics["test"].get("confusion_matrix", []),
        classes=metrics.get("classes", []), quarantine=dict(reasons), samples=samples))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    local = cfg.stack.state_dir.parent / "reports" / f"demo-{stamp}.html"
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(html)
    for key in (f"demo/{stamp}/report.html", "demo/latest/report.html"):
        client.put_object(Bucket=cfg.buckets.reports, Key=key, Body=html.encode(),
                          ContentType="text/html; charset=utf-8")
    return local, f"s3://{cfg.buckets.reports}/demo/{stamp}/report.html"
