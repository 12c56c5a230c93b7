"""Distributed training end to end: 2 TensorFlow workers in Spark barrier tasks, fed from the
exported digits on MinIO; checkpoints, resume after SIGKILL, versioned SavedModel export."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from dlpipe.core.config import with_overrides
from dlpipe.core.errors import DlpipeError
from dlpipe.core.process import wait_until
from dlpipe.core.s3 import s3_client
from dlpipe.localstack.install import locate
from dlpipe.registry.release import serving_version
from dlpipe.registry.store import complete_versions, read_info
from models.checkpoints import CheckpointError, RunStore
from spark_jobs.train import job as train_job

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
EPOCHS = 8


@pytest.fixture(scope="module")
def train_cfg(ingested, exported):
    return with_overrides(ingested, {"training.epochs": EPOCHS, "training.min_test_accuracy": 0.85,
                                     "training.model_name": f"test-cnn-{uuid.uuid4().hex[:6]}"})


@pytest.fixture(scope="module")
def trained(spark, train_cfg):
    """An uninterrupted 2-worker run."""
    return train_job.train(spark, train_cfg, workers=2, run_id=f"full-{uuid.uuid4().hex[:6]}")


def test_two_workers_reach_95_percent_and_export_version_1_with_lineage(trained, train_cfg, exported):
    assert trained["version"] == 1 and trained["promoted"] and trained["served"]
    assert trained["champion"]["reason"] == "no version is served yet"
    assert trained["metrics"]["test"]["accuracy"] >= 0.95, trained["metrics"]
    promotion, check = trained["promotion"], trained["export_check"]
    assert promotion["records"] == exported.counts["test"]["records"] >= 50
    assert 0.85 <= promotion["lower_bound"] < promotion["accuracy"], promotion
    assert check["ok"] and check["exported_accuracy"] == trained["metrics"]["train"]["accuracy"]
    client, bucket = s3_client(train_cfg), train_cfg.buckets.models
    name = train_cfg.training.model_name
    keys = {o["Key"].split("/", 2)[2] for o in client.list_objects_v2(
        Bucket=bucket, Prefix=f"{name}/1/")["Contents"]}
    assert {"saved_model.pb", "metrics.json", "dataset-manifest.json", "training-config.json",
            "dlpipe-model.json"} <= keys
    assert any(k.startswith("variables/") for k in keys)
    body = client.get_object(Bucket=bucket, Key=f"{name}/1/dataset-manifest.json")["Body"].read()
    lineage = json.loads(body)
    assert lineage["source"]["delta_version"] == exported.delta_version
    assert lineage["export_id"] == exported.export_id
    metrics = json.loads(client.get_object(Bucket=bucket, Key=f"{name}/1/metrics.json")["Body"].read())
    confusion = np.array(metrics["test"]["confusion_matrix"])
    assert confusion.sum() == exported.counts["test"]["records"]
    assert confusion.trace() / confusion.sum() == pytest.approx(metrics["test"]["accuracy"])
    store = RunStore(client, train_cfg.buckets.checkpoints, trained["run_id"])
    assert [r["epoch"] for r in store.metrics()] == list(range(EPOCHS))
    assert store.latest()["epoch"] == EPOCHS - 1
    tensorboard = client.list_objects_v2(Bucket=train_cfg.buckets.checkpoints,
                                         Prefix=f"{store.prefix}/tensorboard/")
    assert any("tfevents" in o["Key"] for o in tensorboard.get("Contents", []))


def test_export_loads_with_both_signatures_that_agree(trained, train_cfg, exported, tmp_path):
    import tensorflow as tf

    client = s3_client(train_cfg)
    local = tmp_path / "model"
    prefix = f"{train_cfg.training.model_name}/{trained['version']}/"
    for obj in client.list_objects_v2(Bucket=train_cfg.buckets.models, Prefix=prefix)["Contents"]:
        target = local / obj["Key"][len(prefix):]
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_file(train_cfg.buckets.models, obj["Key"], str(target))
    cli = Path(sys.executable).parent / "saved_model_cli"
    shown = subprocess.run([str(cli), "show", "--dir", str(local), "--all"], capture_output=True,
                           text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in ("serving_default", "serving_bytes", "serving_pixels"):
        assert f"signature_def['{signature}']" in shown.stdout

    loaded = tf.saved_model.load(str(local))
    shard = exported.shards_of("test")[0]
    spec = {"image": tf.io.FixedLenFeature([], tf.string), "label": tf.io.FixedLenFeature([], tf.int64)}
    path = tmp_path / "test.tfrecord"
    client.download_file(exported.bucket, exported.key(shard), str(path))
    batch = tf.io.parse_example(next(iter(tf.data.TFRecordDataset(str(path)).batch(50))), spec)
    by_bytes = loaded.signatures["serving_bytes"](image_bytes=batch["image"])
    pixels = tf.concat([tf.cast(tf.io.decode_png(b, channels=1), tf.float32)[None] / 255.0
                        for b in batch["image"]], axis=0)
    by_pixels = loaded.signatures["serving_pixels"](pixels=pixels)
    np.testing.assert_allclose(by_bytes["probabilities"].numpy(), by_pixels["probabilities"].numpy(),
                               rtol=1e-5, atol=1e-6)
    assert (by_bytes["class_index"].numpy() == batch["label"].numpy()).mean() > 0.9
    names = [n.decode() for n in by_bytes["class_name"].numpy()]
    assert names == [exported.classes[i] for i in by_bytes["class_index"].numpy()]


def test_a_worse_model_passes_the_bar_but_not_the_champion_and_is_not_served(spark, trained, train_cfg):
    """Issue 18: one epoch at a tiny learning rate clears a bar of 0 but not the champion (the
    served version 1, run through its exported signature on the same test records)."""
    from spark_jobs.export import job as export_job

    worse = with_overrides(train_cfg, {"training.min_test_accuracy": 0.0, "training.epochs": 1,
                                       "training.learning_rate": 1e-7,
                                       "training.max_train_accuracy_gap": 1.0})
    # Another dataset (the same table version exported under another name), so the champion's
    # own test split is a second comparison.
    other = export_job.export(spark, worse, dataset=f"digits-other-{uuid.uuid4().hex[:6]}")
    second = train_job.train(spark, worse, workers=1, run_id=f"worse-{uuid.uuid4().hex[:6]}",
                             dataset=other.dataset)
    assert second["version"] == trained["version"] + 1
    assert second["promotion"]["promoted"] and not second["promoted"] and not second["served"]
    champion = second["champion"]
    assert not champion["ok"] and champion["champion_version"] == trained["version"], champion
    records = champion["records"]
    assert records == trained["promotion"]["records"]
    assert champion["champion_accuracy"] == pytest.approx(trained["metrics"]["test"]["accuracy"],
                                                          abs=2 / records)
    theirs = champion["on_champion_split"]  # the champion's dataset: its test split again
    assert theirs["champion"] == pytest.approx(champion["champion_accuracy"], abs=2 / records)
    assert theirs["challenger"] < theirs["champion"] and theirs["records"] == records
    assert "below champion version 1" in train_job.describe_decision(second)
    client, bucket, name = s3_client(train_cfg), train_cfg.buckets.models, train_cfg.training.model_name
    assert [i["version"] for i in complete_versions(client, bucket, name)] == [1, 2]
    assert serving_version(client, bucket, name) == trained["version"]
    assert read_info(client, bucket, name, 2)["promoted"] is False
    again = train_job.train(spark, worse, workers=1, run_id=second["run_id"])
    assert again["version"] == second["version"], "a finished run id is not trained again"


def test_a_killed_run_resumes_after_its_last_checkpoint_with_the_same_total_steps(
        spark, trained, train_cfg, test_env, stack):
    """A run SIGKILLed after epoch 1 resumes after its last checkpoint (issue 17: its TensorFlow
    children die with their workers). The resumed run then has MinIO SIGKILLed and restarted,
    and stalled 30 s, during an epoch: it rides that out or fails naming the store, and a
    re-run resumes again; every epoch is recorded once and the total steps are the same."""
    from dlpipe.core.errors import store_unreachable
    from tests.store_outage import minio_outage_when

    run_id = f"resume-{uuid.uuid4().hex[:6]}"
    store = RunStore(s3_client(train_cfg), train_cfg.buckets.checkpoints, run_id)
    flags = [f"--set=export.dataset={train_cfg.export.dataset}",
             f"--set=training.model_name={train_cfg.training.model_name}", f"--epochs={EPOCHS}",
             "--workers=2", f"--run-id={run_id}", "--set=spark.master=local[2]"]
    marker = f"train-{run_id}"
    proc = subprocess.Popen([sys.executable, "-m", "dlpipe.cli.main", "train", *flags],
                            env={**test_env, "DLPIPE_TEST_RUN": marker},
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        latest = store.latest()
        if latest is not None and latest["epoch"] >= 1:
            break
        time.sleep(0.2)
    # Issue 17: Spark kills a failed task's Python worker alone, not its process group; the
    # TensorFlow child that worker spawned must die with it, not train on as an orphan.
    children = tf_children(marker)
    assert len(children) == 2, f"two TensorFlow workers expected: {children}"
    for _, parent in children:
        os.kill(parent, signal.SIGKILL)
    alive = lambda: [pid for pid, _ in children if pid_alive(pid)]  # noqa: E731
    assert wait_until(lambda: not alive(), 15), f"TensorFlow children outlived their worker: {alive()}"
    os.killpg(proc.pid, signal.SIGKILL)
    output = proc.communicate()[0].decode(errors="replace")
    killed_at = store.latest()
    assert killed_at is not None and killed_at["epoch"] < EPOCHS - 1, output[-3000:]
    assert store.done() is None

    k, failure = killed_at["epoch"], None
    with minio_outage_when(stack, lambda: (store.latest() or {}).get("epoch", -1) > k,
                           busy=lambda: store.done() is None) as outage:
        try:
            result = train_job.train(spark, train_cfg, workers=2, run_id=run_id)
        except Exception as exc:  # a clear failure is allowed: the re-run must resume
            result, failure = None, exc
    assert outage.get("stalled") and outage.get("busy_at_kill"), outage
    if result is None:
        assert store_unreachable(failure) is not None, f"not named as the store: {causes(failure)}"
        result = train_job.train(spark, train_cfg, workers=2, run_id=run_id)
    records = store.metrics()
    epochs = [r["epoch"] for r in records]
    assert epochs == list(range(EPOCHS)), "every epoch recorded once"
    resumed = [r for r in records if r["resumed_from_epoch"] == k]
    assert resumed and resumed[0]["epoch"] == k + 1, "training continued at epoch k+1"
    assert failure is not None or result["resumed_from_epoch"] == k
    assert result["total_steps"] == trained["total_steps"] == records[-1]["step"]
    assert result["version"] > trained["version"]


def causes(failure: BaseException) -> str:
    """The exception lines inside a failure's text (a Spark error carries the worker's Python
    traceback in its Java stack trace): what a failed assert must show to be diagnosed."""
    lines = [line.strip() for line in str(failure).splitlines()
             if re.match(r"(?:Caused by: |: )?[\w.$]+: ", line.strip())]
    return "\n".join(dict.fromkeys(lines))[-4000:] or repr(failure)


def tf_children(marker: str) -> list[tuple[int, int]]:
    """(pid, parent pid) of each training child (multiprocessing spawn) carrying ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes()
                    and b"spawn_main" in (entry / "cmdline").read_bytes()):
                parent = int((entry / "stat").read_text().rsplit(") ", 1)[1].split()[1])
                found.append((int(entry.name), parent))
        except OSError:
            continue
    return found


def pid_alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_a_run_keeps_the_dataset_it_started_on_or_refuses(trained, train_cfg, exported):
    """Issue 17: pinned in the run's checkpoint folder at its first start."""
    client = s3_client(train_cfg)
    store = RunStore(client, train_cfg.buckets.checkpoints, trained["run_id"])
    pinned = store.pinned_dataset()
    assert (pinned["version"], pinned["export_id"]) == (exported.delta_version, exported.export_id)
    again = train_job.pinned_manifest(client, train_cfg, store, dataset=None, version=None)
    assert again.export_id == exported.export_id
    with pytest.raises(DlpipeError, match=r"cannot resume on .* version 999\n  fix: drop --dataset"):
        train_job.pinned_manifest(client, train_cfg, store, dataset=None, version=999)
    overwritten = RunStore(client, train_cfg.buckets.checkpoints, f"pin-{uuid.uuid4().hex[:6]}")
    overwritten.pin_dataset({**pinned, "export_id": "an-earlier-export"})
    with pytest.raises(DlpipeError, match=r"was exported again \(--overwrite\)"):
        train_job.pinned_manifest(client, train_cfg, overwritten, dataset=None, version=None)
    with pytest.raises(CheckpointError, match="started twice at once"):
        overwritten.pin_dataset(pinned)
    ids = {train_job.default_run_id("m") for _ in range(50)}
    assert len(ids) == 50, "default run ids started in the same second must differ"


def test_a_corrupt_latest_checkpoint_is_an_error_not_a_fresh_start(spark, trained, train_cfg):
    client, bucket = s3_client(train_cfg), train_cfg.buckets.checkpoints
    source = RunStore(client, bucket, trained["run_id"]).latest()
    run_id = f"corrupt-{uuid.uuid4().hex[:6]}"
    target = RunStore(client, bucket, run_id)
    for name in source["files"]:
        body = client.get_object(Bucket=bucket, Key=f"{source['folder']}/{name}")["Body"].read()
        if ".data-" in name:
            body = body[:-10]
        client.put_object(Bucket=bucket, Key=f"{target.prefix}/ckpt-1/{name}", Body=body)
    client.put_object(Bucket=bucket, Key=f"{target.prefix}/latest.json", Body=json.dumps(
        {**source, "folder": f"{target.prefix}/ckpt-1"}).encode())
    with pytest.raises(CheckpointError, match=r"checkpoint s3://.*/ckpt-1 is corrupt: ckpt-\d+\.data-"):
        train_job.train(spark, train_cfg, workers=1, run_id=run_id)
    assert target.done() is None and target.metrics() == []


def test_two_workers_on_the_standalone_cluster_train_and_export(cluster, train_cfg, test_env):
    master = f"spark://{cluster.stack.host}:{cluster.stack.spark_cluster.master_port}"
    jars = ",".join(str(p) for p in locate().spark_jar_paths())
    run_id = f"cluster-{uuid.uuid4().hex[:6]}"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", master, "--jars", jars,
         "--conf", "spark.executor.memory=1500m", "--conf", "spark.cores.max=2",
         str(ROOT / "spark_jobs" / "train" / "job.py"), "--workers", "2", "--epochs", "2",
         f"--run-id={run_id}", f"--set=export.dataset={train_cfg.export.dataset}",
         f"--set=training.model_name={train_cfg.training.model_name}"],
        capture_output=True, text=True, env={**test_env, "PYSPARK_PYTHON": sys.executable},
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    # spark-submit's PythonRunner sends the driver's stderr to its own stdout
    progress = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("train: ")]
    assert any(line.startswith("train: epoch 2/2") for line in progress), progress
    done = RunStore(s3_client(train_cfg), train_cfg.buckets.checkpoints, run_id).done()
    assert done is not None and done["version"] >= 1
    assert train_cfg.s3_credentials()[1] not in out.stdout + out.stderr


def test_tensorboard_shows_a_runs_event_files_from_minio(trained, train_cfg, test_env, tmp_path):
    """Issue 18: `dlpipe tensorboard --run ID` copies the run's event files and serves them."""
    import httpx

    from dlpipe.core.process import free_ports

    (port,) = free_ports(1)
    exe = str(Path(sys.executable).parent / "dlpipe")
    listed = subprocess.run([exe, "tensorboard"], env=test_env, capture_output=True, text=True,
                            timeout=120)
    assert trained["run_id"] in listed.stdout.split(), listed.stdout + listed.stderr
    board = subprocess.Popen([exe, "tensorboard", "--run", trained["run_id"], "--port", str(port),
                              "--refresh", "0", "--dest", str(tmp_path)], env=test_env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        deadline, tags = time.monotonic() + 120, {}
        while time.monotonic() < deadline and not tags:
            assert board.poll() is None, board.stderr.read()
            try:
                tags = httpx.get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                time.sleep(1)
        assert any("accuracy" in t for run in tags.values() for t in run), tags
    finally:
        os.killpg(board.pid, signal.SIGTERM)
        board.wait(30)
    missing = subprocess.run([exe, "tensorboard", "--run", "no-such-run"], env=test_env,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "has no TensorBoard files" in missing.stderr
