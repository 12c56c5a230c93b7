"""Ingest raw image records from Kafka into clean and quarantine Delta tables, exactly once.

Run with spark-submit (connector jars from ``dlpipe jars``)::

    spark-submit --master local[2] --jars "$(dlpipe jars)" spark_jobs/ingest/job.py \
        --config conf/pipeline.yaml --once

or as ``dlpipe ingest [--once]``. ``--once`` catches up with the topic and stops
(availableNow); without it the query runs every ``ingest.trigger_interval`` until
interrupted (Ctrl-C or SIGTERM stop it after the running micro-batch).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from dlpipe.core.args import add_config_args, config_from_args, run_main
from dlpipe.core.config import Config

if TYPE_CHECKING:
    from pyspark.sql import SparkSession
    from pyspark.sql.streaming import StreamingQuery

log = logging.getLogger(__name__)


def start_query(spark: SparkSession, cfg: Config, *, once: bool,
                skip_lost: bool = False) -> tuple[StreamingQuery, Any]:
    """The streaming query; ``skip_lost`` only for a catch-up past gaps already recorded
    (spark_jobs.ingest.data_loss): any other gap fails the query."""
    from dlpipe.core.kafka import require_topic
    from spark_jobs.ingest.sink import IngestSink

    ingest = cfg.ingest
    topic = cfg.kafka.topics["raw"].name
    require_topic(cfg, topic)
    reader = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", cfg.kafka_bootstrap_servers)
              .option("subscribe", topic)
              .option("startingOffsets", ingest.starting_offsets)
              .option("maxOffsetsPerTrigger", str(ingest.max_offsets_per_trigger))
              .option("failOnDataLoss", str(not skip_lost).lower()))
    if ingest.min_partitions:  # more Spark tasks than Kafka partitions: offset ranges split
        reader = reader.option("minPartitions", str(ingest.min_partitions))
    source = reader.load()
    sink = IngestSink(cfg, owner=spark)
    writer = (source.writeStream.queryName(ingest.query_name).foreachBatch(sink)
              .option("checkpointLocation", ingest.checkpoint))
    writer = writer.trigger(availableNow=True) if once else writer.trigger(
        processingTime=ingest.trigger_interval)
    return writer.start(), sink


def summary(batches: list[dict[str, Any]], seconds: float) -> str:
    """The end-of-run table: rows by outcome and quarantine reason."""
    totals = Counter()
    reasons: Counter[str] = Counter()
    for b in batches:
        for k in ("rows_in", "clean", "quarantined", "duplicates"):
            totals[k] += b[k]
        reasons.update(b["reasons"])
    rate = totals["rows_in"] / seconds if seconds else 0.0
    lines = [
        f"ingest: {len(batches)} micro-batch(es) in {seconds:.1f}s ({rate:,.0f} records/s)",
        f"  {'records in':28s} {totals['rows_in']:>9,}",
        f"  {'clean (written)':28s} {totals['clean']:>9,}",
        f"  {'duplicates (not written)':28s} {totals['duplicates']:>9,}",
        f"  {'quarantined':28s} {totals['quarantined']:>9,}",
    ]
    lines += [f"    {code:26s} {n:>9,}" for code, n in sorted(reasons.items())]
    balanced = totals["rows_in"] == totals["clean"] + totals["duplicates"] + totals["quarantined"]
    lines.append(f"  {'in = clean + dup + quarantine':28s} {'yes' if balanced else 'NO'}")
    return "\n".join(lines)


class CheckpointGuard:
    """The checkpoint's lease (dlpipe.core.lease) and the queries to stop if it is lost."""

    def __init__(self, cfg: Config) -> None:
        from dlpipe.core.lease import path_lease

        self.running: list[StreamingQuery] = []
        self.lost: list[Exception] = []
        self._lease = path_lease(cfg, cfg.ingest.checkpoint, owner=f"ingest {cfg.ingest.query_name}",
                                 ttl_s=cfg.s3.lease_ttl_s, on_lost=self._stop_writing)

    def _stop_writing(self, exc: Exception) -> None:
        self.lost.append(exc)
        for query in self.running:
            query.stop()

    def __enter__(self) -> CheckpointGuard:
        self._lease.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lease.__exit__(*exc)
        if self.lost and exc[0] is None:
            raise self.lost[0]


def run(spark: SparkSession, cfg: Config, *, once: bool, guard: CheckpointGuard | None = None,
        accept_data_loss: bool = False) -> list[dict[str, Any]]:
    """Run the query while holding the checkpoint's lease (one driver per checkpoint)."""
    with contextlib.nullcontext(guard) if guard is not None else CheckpointGuard(cfg) as held:
        return _run_query(spark, cfg, once=once, running=held.running,
                          accept_data_loss=accept_data_loss)


def _run_query(spark: SparkSession, cfg: Config, *, once: bool, running: list[StreamingQuery],
               accept_data_loss: bool) -> list[dict[str, Any]]:
    from spark_jobs.ingest.data_loss import check_data_loss
    from spark_jobs.ingest.table_check import check_clean_table

    # SIGTERM/SIGINT are caught for the whole run, not per query: a signal during the catch-up
    # past recorded gaps must also keep the continuous query after it from starting.
    with stop_signals() as stopping:
        check_clean_table(spark, cfg.ingest, cfg.tables.clean)
        lost = check_data_loss(spark, cfg, accept=accept_data_loss)
        with ingest_metrics(spark, cfg) as metrics:
            if lost and not once:  # the gaps are skipped by a catch-up only; later ones fail the query
                batches = _await(spark, cfg, once=True, running=running, metrics=metrics,
                                 stopping=stopping, skip_lost=True)
                if stopping:
                    return batches
                return batches + _await(spark, cfg, once=False, running=running, metrics=metrics,
                                        stopping=stopping)
            return _await(spark, cfg, once=once, running=running, metrics=metrics,
                          stopping=stopping, skip_lost=bool(lost))


@contextlib.contextmanager
def stop_signals() -> Iterator[list[int]]:
    """SIGTERM and SIGINT only append to the list yielded: the main thread is inside a py4j
    call (awaitTermination), and a py4j call from a signal handler on that thread breaks its
    connection (the driver then died with a Py4JError instead of finishing the running
    micro-batch). The previous handlers come back on exit."""
    stopping: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: stopping.append(signum))
    try:
        yield stopping
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def ingest_metrics(spark: SparkSession, cfg: Config) -> Iterator[Any]:
    """Ingest's /metrics while the query runs, announced to Prometheus (dlpipe.core.telemetry)."""
    if not cfg.monitoring.enabled:
        yield None
        return
    from dlpipe.core.telemetry import announced, serve_metrics, stop_metrics
    from spark_jobs.ingest.metrics import IngestMetrics, make_listener

    metrics = IngestMetrics(cfg.ingest.query_name)
    server, port = serve_metrics(metrics.registry, host=cfg.monitoring.host,
                                 port=cfg.monitoring.ingest_port)
    listener = make_listener(metrics)
    spark.streams.addListener(listener)
    log.info(f"ingest: metrics on http://{cfg.monitoring.host}:{port}/metrics")
    try:
        with announced(cfg, "ingest", port, host=cfg.monitoring.host,
                       labels={"query": cfg.ingest.query_name}):
            yield metrics
    finally:
        spark.streams.removeListener(listener)
        stop_metrics(server)


def _await(spark: SparkSession, cfg: Config, *, once: bool, running: list[StreamingQuery],
           metrics: Any, stopping: list[int], skip_lost: bool = False) -> list[dict[str, Any]]:
    started = time.monotonic()
    query, sink = start_query(spark, cfg, once=once, skip_lost=skip_lost)
    if metrics is not None:
        sink.on_batch = metrics.on_batch
    running.append(query)
    while not query.awaitTermination(1.0):
        if stopping:
            log.info(f"ingest: signal {stopping[0]}, stopping after the current micro-batch")
            query.stop()
            break
    if query.exception() is not None:
        raise RuntimeError(f"ingest query failed: {query.exception()}")
    seconds = time.monotonic() - started
    print(summary(sink.batches, seconds))
    if once:  # a run that ends may end between two scrapes: its totals are pushed as well
        from dlpipe.core.telemetry import push_run_figures

        push_run_figures(cfg, "ingest_run", {
            **{k: sum(b[k] for b in sink.batches) for k in ("rows_in", "clean", "quarantined",
                                                             "duplicates")},
            "batches": len(sink.batches), "seconds": seconds,
            "last_success_timestamp_seconds": time.time()}, labels={"query": cfg.ingest.query_name})
    return sink.batches


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dlpipe ingest", description=__doc__.split("\n\n")[0])
    add_config_args(parser)
    parser.add_argument("--once", action="store_true",
                        help="process what is in the topic now, then stop (availableNow)")
    parser.add_argument("--accept-data-loss", action="store_true",
                        help="records the checkpoint has not read but Kafka no longer holds: record "
                        "them as DATA_LOSS in the accounting table and go on (once; "
                        "ingest.on_data_loss=record always does)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, spark: SparkSession | None = None) -> int:
    from dlpipe.core.session import get_spark

    args = parse_args(argv)
    cfg = config_from_args(args)
    # The lease first: a second driver on this checkpoint fails in a second, before a session.
    with CheckpointGuard(cfg) as guard:
        session = get_spark(cfg, app_name="dlpipe-ingest", spark=spark)
        run(session, cfg, once=args.once, guard=guard, accept_data_loss=args.accept_data_loss)
    return 0


if __name__ == "__main__":
    run_main(main, prog="ingest")
