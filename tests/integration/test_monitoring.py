"""Prometheus for the whole pipeline (issue 18), against the stack's real Prometheus: the alert
rules pass promtool and use only metrics dlpipe exports (taken from real /metrics scrapes);
a streaming ingest and `dlpipe serve` are found through file_sd and scraped; training's
pushed run figures answer PromQL."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from dlpipe.localstack.install import locate
from dlpipe.localstack.monitoring import rules_file
from dlpipe.serving.launch import running_server
from tests.helpers import isolated, isolated_sets, send

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SUFFIXES = re.compile(r"_(total|bucket|sum|count|created)$")


def promql(cfg, query: str) -> list[dict]:
    url = f"http://{cfg.stack.host}:{cfg.stack.prometheus.port}/api/v1/query"
    body = httpx.get(url, params={"query": query}, timeout=10).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(condition, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def names_in(text: str) -> set[str]:
    """Metric families of a /metrics page (histogram and counter suffixes kept as written)."""
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line.startswith("dlpipe_")}


def rule_metrics() -> set[str]:
    return set(re.findall(r"\bdlpipe_[a-z_]+", (ROOT / "conf/prometheus/alerts.yml").read_text()))


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


@pytest.fixture(scope="module")
def exported_names(cfg, served_model, test_env, tmp_path_factory) -> dict[str, set[str]]:
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
        assert promql(cfg, f'dlpipe_ingest_kafka_lag_records{{query="{query}"}} == 0')
        ingest_page = httpx.get(f"http://{address}/metrics", timeout=10).text
    finally:
        os.killpg(driver.pid, signal.SIGTERM)
        driver.wait(120)
    assert not list(targets.glob(f"ingest-*-{driver.pid}.json")), "the target file outlives ingest"
    name = served_model.training.model_name
    with running_server(served_model, models=[name], log=tmp / "serve.log") as server:
        httpx.post(f"{server.url}/v1/models/{name}:predict", json={"instances": []}, timeout=30)
        wait_for(lambda: promql(cfg, f'dlpipe_serve_model_version{{model="{name}"}} == 1'), 60,
                 "Prometheus to scrape dlpipe serve")
        serve_page = httpx.get(f"{server.url}/metrics", timeout=10).text
    return {"ingest": names_in(ingest_page), "serve": names_in(serve_page)}


def test_every_metric_the_rules_query_is_exported(cfg, exported_names):
    """Scraped (ingest, serve) or pushed (batch jobs: what Prometheus holds) for real."""
    url = f"http://{cfg.stack.host}:{cfg.stack.prometheus.port}/api/v1/label/__name__/values"
    held = {n for n in httpx.get(url, timeout=10).json()["data"] if n.startswith("dlpipe_")}
    exported = exported_names["ingest"] | exported_names["serve"] | held
    base = {SUFFIXES.sub("", n) for n in exported}
    missing = {m for m in rule_metrics() if m not in exported and SUFFIXES.sub("", m) not in base}
    assert not missing, f"rules query metrics no dlpipe process exports: {missing}"


def test_training_pushes_its_run_figures(cfg, served_model, exported_names):
    name = served_model.training.model_name
    found = promql(cfg, f'last_over_time(dlpipe_train_test_accuracy{{model="{name}"}}[2h])')
    assert found and 0.0 <= float(found[0]["value"][1]) <= 1.0, found
    assert found[0]["metric"].get("job") == "dlpipe-train", found
    served = promql(cfg, f'last_over_time(dlpipe_train_served{{model="{name}"}}[2h])')
    assert float(served[0]["value"][1]) == 1.0
