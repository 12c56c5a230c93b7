"""Ingest end to end: real Kafka -> Spark Structured Streaming -> Delta on MinIO, read by delta-rs."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dlpipe.core.process import wait_until
from dlpipe.produce.producer import produce
from dlpipe.produce.records import BAD_KINDS
from dlpipe.produce.sources import digits
from spark_jobs.ingest import job
from tests.helpers import assert_exactly_once, isolated, isolated_sets, read_delta_with_delta_rs, send

pytestmark = pytest.mark.integration


def delta_rows(cfg, path: str, columns: list[str]) -> list[dict]:
    return read_delta_with_delta_rs(cfg, path).to_pyarrow_table(columns=columns).to_pylist()


def test_10k_digits_with_5pct_bad_end_exactly_where_the_producer_log_says(spark, cfg, tmp_path):
    cfg = isolated(cfg, "e2e")
    sent = send(cfg, tmp_path / "sent.jsonl", count=10_000, bad_fraction=0.05, duplicate_fraction=0.01)
    kinds = Counter(s["kind"] for s in sent)
    assert set(BAD_KINDS) <= set(kinds), "every bad kind was produced"

    batches = job.run(spark, cfg, once=True)
    assert len(batches) >= 2, "10k records at 5,000 per trigger take several micro-batches"

    clean = delta_rows(cfg, cfg.tables.clean, ["id", "label", "kafka_partition", "kafka_offset"])
    quarantine = delta_rows(cfg, cfg.tables.quarantine, ["id", "reason_code", "kafka_offset",
                                                         "kafka_partition", "reason_detail"])
    want_clean = {s["id"] for s in sent if s["expected"] == "clean"}
    assert sorted(r["id"] for r in clean) == sorted(want_clean), "each valid id exactly once"
    by_coords = {(q["kafka_partition"], q["kafka_offset"]): q for q in quarantine}
    want_q = {(s["partition"], s["offset"]): s for s in sent if s["expected"] == "quarantine"}
    assert by_coords.keys() == want_q.keys()
    wrong = {k: (by_coords[k]["reason_code"], s["reason"]) for k, s in want_q.items()
             if by_coords[k]["reason_code"] != s["reason"]}
    assert not wrong, f"wrong reasons (got, want): {list(wrong.values())[:10]}"
    assert all(q["reason_detail"] for q in quarantine)

    accounting = delta_rows(cfg, cfg.tables.ingest_batches, ["rows_in", "clean", "quarantined", "duplicates"])
    totals = {k: sum(r[k] for r in accounting) for k in ("rows_in", "clean", "quarantined", "duplicates")}
    assert totals == {"rows_in": 10_000, "clean": len(want_clean), "quarantined": len(want_q),
                      "duplicates": kinds["duplicate"]}

    from dlpipe.contract.record import TABLES, table_json_schema

    for name in TABLES:
        written = read_delta_with_delta_rs(cfg, getattr(cfg.tables, name)).schema().to_arrow().names
        assert sorted(written) == sorted(table_json_schema(name)["properties"]), name

    # A second --once finds nothing new and writes nothing.
    versions = {p: read_delta_with_delta_rs(cfg, p).version()
                for p in (cfg.tables.clean, cfg.tables.quarantine, cfg.tables.ingest_batches)}
    assert job.run(spark, cfg, once=True) == []
    assert versions == {p: read_delta_with_delta_rs(cfg, p).version() for p in versions}


def test_v2_records_map_by_config_and_resending_ids_counts_duplicates(spark, cfg, tmp_path):
    cfg = isolated(cfg, "v2")
    from dlpipe.produce.records import Message, encode, record, to_v2

    now = datetime.now(UTC)
    samples = digits()
    recs = [to_v2(record(id=f"v2-{i}", label=s.label, image=s.image, source="Scanner", event_time=now),
                  capture_device=f"cam-{i}") for i, s in zip(range(5), samples, strict=False)]
    msgs = [(r["id"], Message(r["id"].encode(), encode(r), "valid", None)) for r in recs]
    produce(cfg, iter(msgs + msgs[:2]), count=7, rate=0, log_path=None)
    batches = job.run(spark, cfg, once=True)
    assert sum(b["duplicates"] for b in batches) == 2
    rows = delta_rows(cfg, cfg.tables.clean, ["id", "label", "source", "schema_version", "attributes"])
    assert sorted((r["id"], r["schema_version"], dict(r["attributes"])["capture_device"], r["source"])
                  for r in rows) == [(f"v2-{i}", 2, f"cam-{i}", "scanner") for i in range(5)]
    assert [r["label"] for r in sorted(rows, key=lambda r: r["id"])] == [r["class_name"] for r in recs]

    # The same ids sent again: all duplicates, counted, and the clean table gets no new version
    # (an export would otherwise publish an identical "new" dataset).
    version = read_delta_with_delta_rs(cfg, cfg.tables.clean).version()
    produce(cfg, iter(msgs), count=5, rate=0, log_path=None)
    again = job.run(spark, cfg, once=True)
    assert [b["duplicates"] for b in again] == [5] and [b["clean"] for b in again] == [0]
    assert read_delta_with_delta_rs(cfg, cfg.tables.clean).version() == version


def test_sigkill_during_continuous_ingest_loses_and_duplicates_nothing(spark, cfg, test_env, tmp_path):
    """Kill -9 the driver mid-stream; every produced id ends up exactly once. (The exact
    places, after each of a batch's commits, are the fault-point test's below; broker and
    store failures under a continuous driver are test_store_faults.py's.)"""
    cfg = isolated(cfg, "kill")
    sets = [*isolated_sets(cfg), "--set=ingest.trigger_interval=2 seconds",
            "--set=ingest.max_offsets_per_trigger=300"]
    exe = str(Path(sys.executable).parent / "dlpipe")
    log = tmp_path / "sent.jsonl"
    total = 1500  # one kill: each driver is a JVM start (~30 s of make test)
    send(cfg, log, count=total, bad_fraction=0.02, duplicate_fraction=0.02)
    marker = f"kill-{uuid.uuid4().hex}"
    driver = subprocess.Popen([exe, "ingest", *sets], env={**test_env, "DLPIPE_TEST_RUN": marker},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
    deadline = time.monotonic() + 240
    assert driver.stdout is not None
    for line in driver.stdout:  # kill it once it has committed a micro-batch
        if '"event": "ingest_batch"' in line:
            break
        assert time.monotonic() < deadline, "no micro-batch within 240 s"
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait(30)
    # No process of that driver (JVM, PySpark daemon and workers) outlives it.
    assert wait_until(lambda: not processes_with(marker), 20), processes_with(marker)
    # A final catch-up run (in this process's session: one JVM start fewer); then the tables
    # must hold each id exactly once.
    assert job.run(spark, cfg, once=True), "the final run finds what the killed driver left"
    sent = [json.loads(x) for x in log.read_text().splitlines()]
    assert len(sent) == total
    assert_exactly_once(cfg, sent)


def processes_with(marker: str) -> list[str]:
    """pid and command of every live process whose environment carries ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and marker.encode() in (entry / "environ").read_bytes()
                    and (entry / "stat").read_text().rsplit(") ", 1)[1][0] != "Z"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()[:120]!r}")
        except OSError:
            continue
    return found


def test_dedupe_is_exact_inside_the_horizon_across_batches_and_documented_beyond(spark, cfg):
    """docs/data-contract.md, "De-duplication horizon": a re-sent record is a duplicate in a
    later batch; the same id with an event time beyond the horizon is written again."""
    from datetime import timedelta

    from dlpipe.core.config import with_overrides
    from dlpipe.produce.records import Message, encode, record

    cfg = with_overrides(isolated(cfg, "horizon"), {"ingest.dedupe_horizon_days": 7})
    now, samples = datetime.now(UTC), digits()

    def send_at(ids: list[str], when: datetime) -> None:
        recs = [record(id=i, label=s.label, image=s.image, source="s", event_time=when)
                for i, s in zip(ids, samples, strict=False)]
        produce(cfg, iter((r["id"], Message(r["id"].encode(), encode(r), "valid", None)) for r in recs),
                count=len(recs), rate=0, log_path=None)

    send_at(["h-0", "h-1", "h-2"], now - timedelta(days=10))
    assert [b["clean"] for b in job.run(spark, cfg, once=True)] == [3]
    send_at(["h-1"], now - timedelta(days=10))  # re-sent: a later batch, inside the horizon
    assert [(b["clean"], b["duplicates"]) for b in job.run(spark, cfg, once=True)] == [(0, 1)]
    send_at(["h-0"], now)  # the same id 10 days later: beyond the 7-day horizon
    assert [(b["clean"], b["duplicates"]) for b in job.run(spark, cfg, once=True)] == [(1, 0)]
    ids = sorted(r["id"] for r in delta_rows(cfg, cfg.tables.clean, ["id"]))
    assert ids == ["h-0", "h-0", "h-1", "h-2"]


def test_a_record_stamped_ahead_does_not_make_later_records_late(spark, cfg):
    """Issue 17, poisoned watermark. A producer sets the Kafka timestamp too; the broker
    refuses one more than an hour ahead (Kafka 4's log.message.timestamp.after.max.ms), so
    the record is stamped 50 min ahead and its event time 4 min later: inside
    max_clock_skew_s of its Kafka timestamp, so BAD_EVENT_TIME let it through, and it moved
    the watermark past every honest record that followed (LATE_EVENT). Now it is
    FUTURE_EVENT_TIME and the honest records after it are clean."""
    from datetime import timedelta

    from confluent_kafka import Producer

    from dlpipe.produce.records import Message, encode, record

    cfg = isolated(cfg, "poison")
    now, samples = datetime.now(UTC), list(itertools.islice(digits(), 4))
    stamped = now + timedelta(minutes=50)
    poison = record(id="p-poison", label=samples[0].label, image=samples[0].image, source="s",
                    event_time=stamped + timedelta(minutes=4))
    errors: list[object] = []
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    producer.produce(cfg.kafka.topics["raw"].name, key=b"p-poison", value=encode(poison),
                     timestamp=int(stamped.timestamp() * 1000),
                     on_delivery=lambda err, msg: errors.append(err) if err else None)
    assert producer.flush(30) == 0 and not errors, errors
    first = job.run(spark, cfg, once=True)
    assert sum((Counter(b["reasons"]) for b in first), Counter()) == {"FUTURE_EVENT_TIME": 1}, first
    assert sum(b["clean"] for b in first) == 0

    honest = [record(id=f"p-{i}", label=s.label, image=s.image, source="s", event_time=now)
              for i, s in enumerate(samples[1:])]
    produce(cfg, iter((r["id"], Message(r["id"].encode(), encode(r), "valid", None)) for r in honest),
            count=len(honest), rate=0, log_path=None)
    second = job.run(spark, cfg, once=True)
    assert sum(b["clean"] for b in second) == 3 and not any(b["reasons"] for b in second), second
    quarantined = delta_rows(cfg, cfg.tables.quarantine, ["id", "reason_code"])
    assert quarantined == [{"id": "p-poison", "reason_code": "FUTURE_EVENT_TIME"}]


def test_a_config_the_clean_table_cannot_take_is_refused_before_the_query(spark, cfg, tmp_path):
    """Issue 17: a new derived column crash-looped the query (every append failed); a new
    image size was appended silently. Both are refused at start, naming the fix."""
    from dlpipe.core.config import with_overrides
    from dlpipe.core.errors import ConfigError

    cfg = isolated(cfg, "schema")
    send(cfg, tmp_path / "sent.jsonl", count=20)
    assert sum(b["clean"] for b in job.run(spark, cfg, once=True)) == 20
    derived = {**cfg.ingest.rules.derived, "camera": "'cam-1'"}
    for change, says in [({"ingest.rules.derived": derived}, "adds column(s) camera"),
                         ({"ingest.image.target_height": 16, "ingest.image.target_width": 16},
                          "holds 8x8x1 images and ingest.image.target_* is now 16x16x1")]:
        with pytest.raises(ConfigError, match=re.escape(says)) as refused:
            job.run(spark, with_overrides(cfg, change), once=True)
        assert "fix: write to a new table" in str(refused.value)
    assert not spark.streams.active


def test_a_crash_after_each_commit_of_a_batch_loses_and_duplicates_nothing(spark, cfg, test_env,
                                                                          tmp_path, monkeypatch):
    """Issue 17: a micro-batch fails right after its quarantine, its clean and its accounting
    commit (dlpipe.core.faults), one round each, and the next run must complete with rows_in =
    clean + quarantined + duplicates and every id exactly once. The middle round is a real
    SIGKILL of a `dlpipe ingest` process (no cleanup, its lease left to expire or be taken
    over); the other two raise at the point in this process's session, which leaves the store
    as a crash there does and saves a driver JVM start each in make test."""
    from dlpipe.core.faults import InjectedFault

    cfg = isolated(cfg, "crash")
    sets = isolated_sets(cfg)
    exe = str(Path(sys.executable).parent / "dlpipe")
    log = tmp_path / "sent.jsonl"
    for round_, point in enumerate(["after_write_quarantine", "after_write_clean",
                                    "after_write_accounting"]):
        send(cfg, log, count=150, start=round_ * 150, bad_fraction=0.05, duplicate_fraction=0.05)
        if point != "after_write_clean":
            monkeypatch.setenv("DLPIPE_FAULT", f"{point}:raise")
            with pytest.raises(Exception, match=re.escape(  # pyspark's StreamingQueryException
                    f"{InjectedFault.__name__}: DLPIPE_FAULT={point}:raise: fault point {point}")):
                job.run(spark, cfg, once=True)
            monkeypatch.delenv("DLPIPE_FAULT")
            assert not spark.streams.active
            continue
        driver = subprocess.Popen([exe, "ingest", "--once", *sets],
                                  env={**test_env, "DLPIPE_FAULT": point}, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, start_new_session=True)
        out = driver.communicate(timeout=300)[0]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)  # the JVM and Python workers it left
        assert driver.returncode == -signal.SIGKILL, out[-3000:]
        assert f"killing this process at fault point {point}" in out, out[-3000:]
    assert job.run(spark, cfg, once=True), "the final run finds what the failed ones left"
    assert_exactly_once(cfg, [json.loads(x) for x in log.read_text().splitlines()])


def test_records_aged_out_of_kafka_are_refused_then_recorded_once_and_the_rest_ingested_once(
        spark, cfg, tmp_path):
    """Issue 17, offsets aged out: records past the checkpoint are deleted from Kafka (the
    broker's DeleteRecords moves each partition's log start, as retention does) while ingest
    is down. failOnDataLoss was hard-coded: every start failed. Now the default refuses before
    the query, naming the gap and the fix; --accept-data-loss records one DATA_LOSS row per
    partition, ingests what Kafka still holds exactly once, and a re-run records nothing twice."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from spark_jobs.ingest.data_loss import DATA_LOSS, DataLossError, earliest_offsets

    cfg = isolated(cfg, "aged")
    topic = cfg.kafka.topics["raw"].name
    first = send(cfg, tmp_path / "first.jsonl", count=40)
    assert sum(b["clean"] for b in job.run(spark, cfg, once=True)) == 40
    later = send(cfg, tmp_path / "later.jsonl", count=60, start=40)
    ends = {p: max(s["offset"] for s in first if s["partition"] == p) + 1  # the checkpoint's next
            for p in {s["partition"] for s in first}}
    assert all(Counter(s["partition"] for s in later)[p] > 10 for p in ends)
    cut = {p: ends[p] + 10 for p in ends}  # ten records of each partition age out
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, p, o) for p, o in cut.items()]).values():
        future.result(30)
    assert earliest_offsets(cfg, topic) == cut

    with pytest.raises(DataLossError) as refused:
        job.run(spark, cfg, once=True)
    for p in cut:
        assert f"{topic}/{p} offsets {ends[p]}-{ends[p] + 9} (10 records)" in str(refused.value)
    assert "fix: record the loss" in str(refused.value) and "--accept-data-loss" in str(refused.value)
    assert not spark.streams.active

    batches = job.run(spark, cfg, once=True, accept_data_loss=True)
    lost = {s["id"] for s in later if s["offset"] < cut[s["partition"]]}
    assert len(lost) == 10 * len(cut)
    assert sum(b["clean"] for b in batches) == 60 - len(lost)
    clean = [r["id"] for r in delta_rows(cfg, cfg.tables.clean, ["id"])]
    assert sorted(clean) == sorted({s["id"] for s in first + later} - lost)  # each once
    assert job.run(spark, cfg, once=True, accept_data_loss=True) == []  # nothing new, no new gap
    rows = [r for r in delta_rows(cfg, cfg.tables.ingest_batches, ["reasons", "rows_in"])
            if DATA_LOSS in dict(r["reasons"])]
    assert sorted((dict(r["reasons"])[f"{DATA_LOSS}_PARTITION"], dict(r["reasons"])[DATA_LOSS],
                   dict(r["reasons"])[f"{DATA_LOSS}_FIRST_OFFSET"], r["rows_in"]) for r in rows) == \
        sorted((p, 10, ends[p], 0) for p in cut)


def age_out(cfg, topic: str, sent: list[dict], count: int) -> tuple[dict[int, int], set[str]]:
    """Delete the first ``count`` records of each partition after the checkpoint's position
    (the broker's DeleteRecords, as retention does): the checkpoint's next offsets and the ids
    that aged out."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    from spark_jobs.ingest.data_loss import earliest_offsets

    partitions = earliest_offsets(cfg, topic)
    assert all(Counter(s["partition"] for s in sent)[p] > count for p in partitions)
    ends = {p: min(s["offset"] for s in sent if s["partition"] == p) for p in partitions}
    cut = {p: o + count for p, o in ends.items()}
    admin = AdminClient({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    for future in admin.delete_records([TopicPartition(topic, p, o) for p, o in cut.items()]).values():
        future.result(30)
    return ends, {s["id"] for s in sent if s["offset"] < cut[s["partition"]]}


def test_a_continuous_start_past_aged_out_records_stops_on_sigterm_in_its_catch_up_and_streams_after(
        spark, cfg, tmp_path):
    """Issue 17, the continuous branch of data loss: a start that finds gaps runs a catch-up
    that skips them (failOnDataLoss off), then the continuous query (on). A SIGTERM during the
    catch-up stopped only the catch-up, and the continuous query started anyway: the signal
    was caught per query. Now it ends the run. The next start records no second loss row,
    catches up, streams what arrives after, and every surviving id lands once."""
    from pyspark.sql.streaming import StreamingQueryListener

    from spark_jobs.ingest.data_loss import DATA_LOSS

    cfg = isolated(cfg, "agedcont")
    topic = cfg.kafka.topics["raw"].name
    first = send(cfg, tmp_path / "first.jsonl", count=30)
    assert sum(b["clean"] for b in job.run(spark, cfg, once=True)) == 30
    later = send(cfg, tmp_path / "later.jsonl", count=40, start=30)
    ends, lost = age_out(cfg, topic, later, count=5)
    assert len(lost) == 5 * len(ends)

    started: list[str] = []

    class Watch(StreamingQueryListener):
        """Counts the queries started; in the first run, sends SIGTERM as the catch-up starts."""
        term_on_start = True

        def onQueryStarted(self, event):
            started.append(str(event.id))
            if self.term_on_start and len(started) == 1:
                os.kill(os.getpid(), signal.SIGTERM)

        def onQueryProgress(self, event):
            pass

        def onQueryIdle(self, event):
            pass

        def onQueryTerminated(self, event):
            pass

    first_run_over = threading.Event()

    def stop_a_second_query() -> None:  # the bug: end the continuous query it started
        wait_until(lambda: len(started) >= 2 or first_run_over.is_set(), 120, 0.5)
        if not first_run_over.is_set():
            for query in spark.streams.active:
                query.stop()

    watch = Watch()
    spark.streams.addListener(watch)
    try:
        guard = threading.Thread(target=stop_a_second_query, daemon=True)
        guard.start()
        job.run(spark, cfg, once=False, accept_data_loss=True)
        first_run_over.set()
        guard.join()
        assert len(started) == 1, "a SIGTERM in the catch-up must not start the continuous query"
        assert not spark.streams.active

        watch.term_on_start = False
        started.clear()
        fresh: list[dict] = []

        def stream_then_stop() -> None:
            try:  # the catch-up, then the continuous query
                if wait_until(lambda: len(started) >= 2, 120, 0.5):
                    fresh.extend(send(cfg, tmp_path / "fresh.jsonl", count=20, start=70))
                    want = {s["id"] for s in first + later + fresh} - lost
                    wait_until(lambda: {r["id"] for r in delta_rows(cfg, cfg.tables.clean, ["id"])}
                               >= want, 120, 2)
            finally:  # whatever happened, the run ends and the asserts below say what is wrong
                os.kill(os.getpid(), signal.SIGTERM)

        streamer = threading.Thread(target=stream_then_stop, daemon=True)
        streamer.start()
        job.run(spark, cfg, once=False, accept_data_loss=True)
        streamer.join(5)
    finally:
        spark.streams.removeListener(watch)
    assert len(started) == 2 and len(fresh) == 20
    clean = [r["id"] for r in delta_rows(cfg, cfg.tables.clean, ["id"])]
    assert sorted(clean) == sorted({s["id"] for s in first + later + fresh} - lost)  # each once
    rows = [dict(r["reasons"]) for r in delta_rows(cfg, cfg.tables.ingest_batches, ["reasons"])
            if DATA_LOSS in dict(r["reasons"])]
    assert sorted((r[f"{DATA_LOSS}_PARTITION"], r[DATA_LOSS], r[f"{DATA_LOSS}_FIRST_OFFSET"])
                  for r in rows) == sorted((p, 5, o) for p, o in ends.items())
