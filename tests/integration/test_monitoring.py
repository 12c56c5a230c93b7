"""Prometheus for the whole pipeline (issue 18), against the stack's real Prometheus: the alert
rules pass promtool and use only metrics dlpipe exports (taken from real /metrics scrapes);
a streaming ingest and `dlpipe serve` are found through file_sd and scraped; training's
pushed run figures answer PromQL."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.s3 import s3_client
from dlpipe.localstack.install import locate
from dlpipe.localstack.monitoring import rules_file
from dlpipe.localstack.provision import ensure_topics
from dlpipe.serving.launch import running_server
from spark_jobs.score import job as score_job
from tests.helpers import isolated, isolated_sets, read_delta_with_delta_rs, send, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")


def promql(cfg, query: str) -> list[dict]:
    url = f"http://{cfg.stack.host}:{cfg.stack.prometheus.port}/api/v1/query"
    body = httpx.get(url, params={"query": query}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def names_in(text: str) -> set[str]:
    """Metric families of a /metrics page (histogram and counter suffixes kept as written)."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line.startswith("dlpipe_")}


def queried_metrics() -> set[str]:
    """Every dlpipe metric the alert rules and the chart's Grafana dashboards query."""
    texts = [(ROOT / "conf/prometheus/alerts.yml").read_text()]
    for board in (ROOT / "helm/dlpipe/files/dashboards").glob("*.json"):
        texts += [t["expr"] for p in json.loads(board.read_text())["panels"] for t in p["targets"]]
    return {m for text in texts for m in re.findall(r"\bdlpipe_[a-z_]+", text)}


def test_alert_rules_pass_promtool_and_are_loaded(cfg):
    promtool = locate().prometheus_bin.with_name("promtool")
    checked = subprocess.run([str(promtool), "check", "rules", str(rules_file(cfg))],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    url = f"http://{cfg.stack.host}:{cfg.stack.prometheus.port}/api/v1/rules"
    groups = httpx.get(url, timeout=10).json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"]}
    assert {"DlpipeIngestStalled", "DlpipeQuarantineRateHigh", "DlpipeKafkaLagGrowing",
            "DlpipeServing5xxRate", "DlpipeModelLoadFailures", "DlpipeNoReleaseFor14Days"} <= alerts


def inverted(png: bytes) -> bytes:
    from PIL import Image, ImageOps

    out = io.BytesIO()
    ImageOps.invert(Image.open(io.BytesIO(png)).convert("L")).save(out, "PNG")
    return out.getvalue()


def samples_in_kafka(cfg) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": cfg.kafka_bootstrap_servers, "group.id": "probe"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(cfg.samples_topic, 0), timeout=10)[1]
    finally:
        consumer.close()


@pytest.fixture(scope="module")
def drift_runs(served_model, spark, tmp_path_factory):
    """`dlpipe serve` samples every example to its own topic; `dlpipe drift` runs once after 150
    real digits, and again after 150 more with inverted grey levels."""
    from spark_jobs.drift import job as drift_job

    run, lake, ckpt = uuid.uuid4().hex[:8], served_model.buckets.lake, served_model.buckets.checkpoints
    cfg = with_overrides(served_model, {
        "kafka.topics.samples.name": f"test.samples.{run}", "serving.sample_rate": 1.0,
        "tables.served_samples": f"s3a://{lake}/test/{run}/served_samples",
        "drift.checkpoint": f"s3a://{ckpt}/test/{run}/drift", "drift.min_samples": 100})
    ensure_topics(cfg)
    rows = read_delta_with_delta_rs(cfg, cfg.tables.clean).to_pyarrow_table(columns=["image_png"])
    images = random.Random(0).sample(rows.column("image_png").to_pylist(), 150)
    name = cfg.training.model_name
    reports = [drift_job.drift(spark, cfg)]  # nothing sampled yet: no verdict, no error
    with running_server(cfg, models=[name], log=tmp_path_factory.mktemp("drift") / "serve.log") as server:
        for batch, sent in ((images, 150), ([inverted(p) for p in images], 300)):
            for start in range(0, len(batch), 50):
                body = {"instances": [{"b64": base64.b64encode(p).decode()} for p in batch[start:start + 50]]}
                answer = httpx.post(f"{server.url}/v1/models/{name}:predict", json=body, timeout=60)
                assert answer.status_code == 200, answer.text
            wait_for(lambda n=sent: samples_in_kafka(cfg) == n, 60, f"{sent} samples in Kafka")
            reports.append(drift_job.drift(spark, cfg))
    return {"cfg": cfg, "empty": reports[0], "steady": reports[1], "shifted": reports[2]}


def test_drift_is_flagged_on_shifted_inputs_and_reported(cfg, drift_runs):
    empty, steady, shifted = drift_runs["empty"], drift_runs["steady"], drift_runs["shifted"]
    assert empty.samples == 0 and empty.psi == {} and "fewer than drift.min_samples" in empty.reason
    assert steady.samples == 150 and steady.flagged == [], steady
    assert shifted.samples == 300 and "image_mean" in shifted.flagged, shifted
    model = drift_runs["cfg"].training.model_name
    flagged = promql(cfg, f'last_over_time(dlpipe_drift_flagged{{model="{model}"}}[1h])')
    assert float(flagged[0]["value"][1]) == 1.0, flagged
    psi = promql(cfg, f'last_over_time(dlpipe_drift_psi{{model="{model}",feature="image_mean"}}[1h])')
    assert float(psi[0]["value"][1]) > cfg.drift.psi_threshold
    reports = s3_client(cfg).list_objects_v2(Bucket=cfg.buckets.reports, Prefix=f"drift/{model}/")
    assert reports["KeyCount"] == 3


@pytest.fixture(scope="module")
def exported_names(cfg, served_model, spark, test_env, tmp_path_factory, drift_runs) -> dict[str, set[str]]:
    """Scrape a streaming ingest and a `dlpipe serve` for real; check Prometheus finds both."""
    tmp = tmp_path_factory.mktemp("monitoring")
    stream = isolated(cfg, "metrics")
    sent = send(stream, tmp / "sent.jsonl", count=300, bad_fraction=0.1)
    bad = sum(s["expected"] == "quarantine" for s in sent)
    exe = str(Path(sys.executable).parent / "dlpipe")
    driver = subprocess.Popen([exe, "ingest", *isolated_sets(stream),
                               "--set=ingest.trigger_interval=2 seconds"], env=test_env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    query = stream.ingest.query_name
    try:
        targets = cfg.metrics_targets_dir
        announced = wait_for(lambda: [p for p in targets.glob("ingest-*.json")
                                      if query in p.read_text()], 180, "ingest's target file")
        address = json.loads(announced[0].read_text())[0]["targets"][0]
        found = wait_for(lambda: promql(cfg, f'sum(dlpipe_ingest_rows_total{{query="{query}"}}) >= 300'),
                         240, "Prometheus to scrape ingest's 300 rows")
        assert float(found[0]["value"][1]) == 300
        quarantined = promql(cfg, f'sum(dlpipe_ingest_rows_total{{query="{query}",outcome="quarantined"}})')
        assert float(quarantined[0]["value"][1]) == bad > 0, quarantined
        # The lag comes from Spark's progress report, which follows the batch's commit: wait.
        wait_for(lambda: promql(cfg, f'dlpipe_ingest_kafka_lag_records{{query="{query}"}} == 0'),
                 60, "a scrape with ingest's lag back at 0")
        ingest_page = httpx.get(f"http://{address}/metrics", timeout=10).text
    finally:
        os.killpg(driver.pid, signal.SIGTERM)
        driver.wait(120)
    assert not list(targets.glob(f"ingest-*-{driver.pid}.json")), "the target file outlives ingest"
    name = served_model.training.model_name
    predictions = f"s3a://{cfg.buckets.lake}/test/metrics-{uuid.uuid4().hex[:8]}/predictions"
    # dlpipe score's own code path (lease, score, push) in this session: one JVM start fewer.
    scoring = with_overrides(served_model, {"tables.predictions": predictions})
    report = score_job.run(spark, scoring, model=name)
    pushed = wait_for(lambda: promql(cfg, f'last_over_time(dlpipe_score_rows{{model="{name}"}}[1h])'), 30,
                      "the score run's pushed figures in Prometheus")
    assert float(pushed[0]["value"][1]) == report.scored > 0
    with running_server(served_model, models=[name], log=tmp / "serve.log") as server:
        httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": []}, timeout=30)
        wait_for(lambda: promql(cfg, f'dlpipe_serve_model_version{{model="{name}"}} == 1'), 60,
                 "Prometheus to scrape dlpipe serve")
        serve_page = httpx.get(f"{server.url}/metrics", timeout=10).text
    # uvicorn re-raises SIGTERM after its shutdown: the target file goes in the app's shutdown
    assert not list(targets.glob(f"serve-*-{server.process.pid}.json")), "a dead target stays"
    return {"ingest": names_in(ingest_page), "serve": names_in(serve_page)}


def test_every_metric_the_rules_and_dashboards_query_is_exported(cfg, exported_names):
    """Scraped (ingest, serve) or pushed (batch jobs: what Prometheus holds) for real."""
    url = f"http://{cfg.stack.host}:{cfg.stack.prometheus.port}/api/v1/label/__name__/values"
    held = {n for n in httpx.get(url, timeout=10).json()["data"] if n.startswith("dlpipe_")}
    exported = exported_names["ingest"] | exported_names["serve"] | held
    base = {SUFFIXES.sub("", n) for n in exported}
    missing = {m for m in queried_metrics() if m not in exported and SUFFIXES.sub("", m) not in base}
    assert not missing, f"rules or dashboards query metrics no dlpipe process exports: {missing}"


def test_training_pushes_its_run_figures(cfg, served_model, exported_names):
    name = served_model.training.model_name
    found = promql(cfg, f'last_over_time(dlpipe_train_test_accuracy{{model="{name}"}}[2h])')
    assert found and 0.0 <= float(found[0]["value"][1]) <= 1.0, found
    assert found[0]["metric"].get("job") == "dlpipe-train", found
    served = promql(cfg, f'last_over_time(dlpipe_train_served{{model="{name}"}}[2h])')
    assert float(served[0]["value"][1]) == 1.0
