"""Pure DataFrame -> DataFrame steps of ingest: no paths, no session, no I/O.

Kafka rows go through ``parse`` (typed canonical columns per schema version, from config),
``classify`` (a reason code per row, first failing check wins, built-in expressions except
for image decoding), then ``mark_late`` and ``mark_duplicates`` with what the sink knows
about earlier batches, and end as ``clean_rows`` or ``quarantine_rows``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from dlpipe.contract.record import IMAGE_FIELDS, RECORD_FIELDS, Reason, rule_reason
from dlpipe.core.config import IngestConfig

# The end of an RFC 3339 date-time: its zone, "Z" or a numeric offset.
ZONE_SUFFIX = r"([Zz]|[+-][0-9]{2}:?[0-9]{2})$"
_KINDS = {
    "int": "{k} IN ('BIGINT', 'INT', 'SMALLINT', 'TINYINT')",
    "string": "{k} = 'STRING'",
    "object": "{k} LIKE 'OBJECT%'",
}


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _kind(path: str) -> str:
    return f"schema_of_variant(variant_get(_v, {_sql_str(path)}, 'variant'))"


def _by_version(ingest: IngestConfig, template: Callable[[str], str]) -> str:
    """CASE over schema versions of ``template(json_name)`` for one canonical field."""
    whens = " ".join(f"WHEN {int(ver)} THEN {template(ver)}" for ver in ingest.schema_versions)
    return f"CASE _sv {whens} END"


def _json_name(ingest: IngestConfig, version: str, field: str) -> str:
    return ingest.schema_versions[version].renamed.get(field, field)


def expected_signature(ingest: IngestConfig, version: str) -> str:
    """What ``schema_of_variant`` says of a well-formed record of ``version`` (keys sorted)."""
    spark_kind = {"int": "BIGINT", "string": "STRING"}
    image = ", ".join(f"{k}: {spark_kind[t]}" for k, t in sorted(IMAGE_FIELDS.items()))
    fields = {_json_name(ingest, version, f): (f"OBJECT<{image}>" if t == "object" else spark_kind[t])
              for f, t in RECORD_FIELDS.items()}
    fields.update({name: "STRING" for name in ingest.schema_versions[version].added})
    return "OBJECT<" + ", ".join(f"{k}: {v}" for k, v in sorted(fields.items())) + ">"


def parse(raw: DataFrame, ingest: IngestConfig) -> DataFrame:
    """Kafka rows -> the same rows plus the record's fields as typed canonical columns.

    A field is null unless present with its contract type, so later checks and the clean
    table never see a half-typed value. A record whose whole type signature matches its
    version's is well-formed in one string comparison; only the others are taken apart
    field by field (``_missing``, ``_extra``, ``_mistyped``) for the reason detail.
    """
    signatures = " ".join(f"WHEN {int(v)} THEN {_sql_str(expected_signature(ingest, v))}"
                          for v in ingest.schema_versions)
    df = raw.withColumn("_value_str", F.expr("CAST(value AS STRING)")).withColumn(
        "_v", F.expr("try_parse_json(_value_str)")
    ).withColumn("_sig", F.expr("schema_of_variant(_v)")).withColumn(
        "_is_object", F.expr("coalesce(_sig LIKE 'OBJECT%', false)")
    ).withColumn(
        "_sv", F.expr(
            "CASE WHEN _is_object AND schema_of_variant(variant_get(_v, '$.schema_version', 'variant'))"
            " = 'BIGINT' THEN try_variant_get(_v, '$.schema_version', 'int') END"
        )
    ).withColumn("_shape_ok", F.expr(f"coalesce(_sig = CASE _sv {signatures} END, false)"))
    missing, mistyped, values = [], [], {}
    fields = {**RECORD_FIELDS, **{f"image.{k}": t for k, t in IMAGE_FIELDS.items()}}
    for field, kind in fields.items():
        top, _, sub = field.partition(".")

        def path(ver: str, top: str = top, sub: str = sub) -> str:
            name = _json_name(ingest, ver, top)
            return f"$.{name}.{sub}" if sub else f"$.{name}"

        # The field's JSON type (BIGINT, STRING, OBJECT<...>, VOID), needed only off the
        # well-formed path: CASE and OR evaluate lazily, so well-formed rows never compute it.
        k = f"({_by_version(ingest, lambda v, path=path: _kind(path(v)))})"
        is_missing = f"({k} IS NULL OR {k} = 'VOID')"
        is_ok = f"(_shape_ok OR {_KINDS[kind].format(k=k)})"
        missing.append(f"CASE WHEN {is_missing} THEN '{field}' END")
        mistyped.append(f"CASE WHEN NOT {is_missing} AND NOT {is_ok} THEN '{field}' END")
        if kind != "object":
            target = "int" if kind == "int" else "string"
            getter = _by_version(
                ingest, lambda v, path=path, target=target:
                f"try_variant_get(_v, {_sql_str(path(v))}, '{target}')"
            )
            values[field] = f"CASE WHEN {is_ok} THEN {getter} END"
    empty = "CAST(array() AS ARRAY<STRING>)"
    bad_shape = "_is_object AND _sv IS NOT NULL AND NOT _shape_ok"
    # One projection for all of them (withColumns): each withColumn call analyses the whole
    # plan again, and with ~20 of them building the plan cost the driver about a second per
    # micro-batch.
    df = df.withColumns({
        "_missing": F.expr(
            f"CASE WHEN {bad_shape} THEN filter(array({', '.join(missing)}), x -> x IS NOT NULL)"
            f" ELSE {empty} END"),
        "_mistyped": F.expr(
            f"CASE WHEN {bad_shape} THEN filter(array({', '.join(mistyped)}), x -> x IS NOT NULL)"
            f" ELSE {empty} END"),
        "_extra": F.when(F.expr(bad_shape), _extra_fields(ingest)).otherwise(F.expr(empty)),
        # Top-level fields keep their clean-table names, so config rules read as written.
        **{field if "." not in field else "_" + field.replace(".", "_"): F.expr(expr)
           for field, expr in values.items()},
    })
    # RFC 3339 times carry a zone; Spark would read a zone-less one in the session's zone.
    # (Both read the input's event_time string: withColumns evaluates against its input.)
    return df.withColumns({
        "_attributes": _attributes(ingest),
        "_event_time_zoned": F.col("event_time").rlike(ZONE_SUFFIX),
        "event_time": F.expr("try_to_timestamp(event_time)"),
    })


def _extra_fields(ingest: IngestConfig) -> Column:
    def allowed(ver: str) -> str:
        spec = ingest.schema_versions[ver]
        names = [_json_name(ingest, ver, f) for f in RECORD_FIELDS] + list(spec.added)
        return "array(" + ", ".join(_sql_str(n) for n in names) + ")"

    image_names = "array(" + ", ".join(_sql_str(n) for n in IMAGE_FIELDS) + ")"
    image_path = _by_version(ingest, lambda v: _sql_str("$." + _json_name(ingest, v, "image")))
    return F.expr(
        "CASE WHEN _is_object AND _sv IS NOT NULL THEN array_union("
        f"array_except(json_object_keys(_value_str), {_by_version(ingest, allowed)}), "
        "transform(array_except(coalesce(json_object_keys(to_json("
        f"variant_get(_v, {image_path}, 'variant'))), array()), {image_names}), x -> 'image.' || x)"
        ") END"
    )


def _attributes(ingest: IngestConfig) -> Column:
    """Fields a schema version adds, kept as strings in the ``attributes`` map."""
    entries = []
    for ver, spec in ingest.schema_versions.items():
        for name in spec.added:
            entries.append(
                f"CASE WHEN _sv = {int(ver)} THEN named_struct('k', {_sql_str(name)}, "
                f"'v', try_variant_get(_v, {_sql_str('$.' + name)}, 'string')) END"
            )
    if not entries:
        return F.expr("CAST(map() AS MAP<STRING, STRING>)")
    arr = f"filter(array({', '.join(entries)}), x -> x IS NOT NULL AND x.v IS NOT NULL)"
    return F.expr(f"map_from_entries(transform({arr}, x -> struct(x.k, x.v)))")


def classify(df: DataFrame, ingest: IngestConfig, inspect_images: Callable[..., Column],
             now: datetime | None = None) -> DataFrame:
    """Add ``reason_code`` / ``reason_detail`` (null for a clean row) and the image result.

    ``now`` is the ingest clock that event times may not run ahead of (the batch's start in
    the sink; the current time when None).
    """
    versions = ", ".join(str(int(v)) for v in ingest.schema_versions)
    classes = "array(" + ", ".join(_sql_str(c) for c in ingest.classes) + ")"
    skew, age = ingest.max_clock_skew_s, ingest.max_event_age_days
    clock = "current_timestamp()" if now is None else \
        f"TIMESTAMP '{now.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S.%f')}+00:00'"
    ahead = f"{clock} + INTERVAL {int(ingest.max_future_skew_s)} SECONDS"
    checks: list[tuple[str, str, str]] = [
        (Reason.EMPTY_VALUE, "value IS NULL OR length(value) = 0", "'empty Kafka value'"),
        (Reason.NULL_KEY, "key IS NULL", "'Kafka key is null (must be the record id)'"),
        (Reason.NOT_JSON, "NOT _is_object",
         "CASE WHEN _v IS NULL THEN 'value is not JSON' ELSE 'value is JSON but not an object' END"),
        (Reason.UNKNOWN_SCHEMA_VERSION, f"_sv IS NULL OR _sv NOT IN ({versions})",
         "'schema_version ' || coalesce(CAST(variant_get(_v, '$.schema_version', 'string') AS STRING),"
         f" 'missing') || ' is not one of ({versions})'"),
        (Reason.MISSING_FIELD, "size(_missing) > 0", "'missing: ' || array_join(_missing, ', ')"),
        (Reason.EXTRA_FIELD, "size(_extra) > 0", "'not in the contract: ' || array_join(_extra, ', ')"),
        (Reason.TYPE_MISMATCH, "size(_mistyped) > 0", "'wrong JSON type: ' || array_join(_mistyped, ', ')"),
        (Reason.KEY_ID_MISMATCH, "CAST(key AS STRING) != id",
         "'key ' || CAST(key AS STRING) || ' != id ' || id"),
        (Reason.BAD_EVENT_TIME,
         f"event_time IS NULL OR NOT _event_time_zoned OR event_time > timestamp + INTERVAL {int(skew)}"
         f" SECONDS OR event_time < timestamp - INTERVAL {int(age)} DAYS",
         "'event_time ' || coalesce(variant_get(_v, '$.event_time', 'string'), '?') || CASE"
         " WHEN event_time IS NOT NULL AND NOT _event_time_zoned THEN ' has no time zone (RFC 3339"
         " needs Z or +hh:mm)' ELSE ' is unparseable or too far from the Kafka timestamp ' ||"
         " CAST(timestamp AS STRING) END"),
        (Reason.FUTURE_EVENT_TIME, f"event_time > {ahead}",
         f"'event_time ' || CAST(event_time AS STRING) || ' is more than "
         f"{int(ingest.max_future_skew_s)} s ahead of the ingest clock ' || CAST({clock} AS STRING)"),
        (Reason.UNKNOWN_LABEL, f"NOT array_contains({classes}, label)",
         "'label ' || label || ' is not in the class map'"),
    ]
    reason = F.coalesce(*[F.when(F.expr(cond), F.lit(str(code))) for code, cond, _ in checks])
    detail = F.coalesce(*[F.when(F.expr(cond), F.expr(text)) for _, cond, text in checks])
    df = df.withColumns({"_pre_reason": reason, "_pre_detail": detail})
    # Decode only what passed every cheap check: the UDF returns null for null input.
    df = df.withColumn("_img", inspect_images(
        F.when(F.col("_pre_reason").isNull(), F.col("_image_data")),
        F.col("_image_format"), F.col("_image_width"), F.col("_image_height"), F.col("_image_channels"),
    ))
    # Config filters: a row for which the expression is false or null fails the rule.
    failing = [(rule_reason(name), expr, ~F.coalesce(F.expr(expr), F.lit(False)))
               for name, expr in ingest.rules.filters.items()]
    rule_reason_col = F.coalesce(*[F.when(f, F.lit(code)) for code, _, f in failing], F.lit(None))
    rule_detail_col = F.coalesce(*[F.when(f, F.lit(f"fails rule: {e}")) for _, e, f in failing],
                                 F.lit(None))
    return df.withColumns({
        "reason_code": F.coalesce("_pre_reason", "_img.reason", rule_reason_col).cast("string"),
        "reason_detail": F.coalesce("_pre_detail", "_img.detail", rule_detail_col).cast("string"),
        "_any_id": F.coalesce(F.col("id"), F.expr("try_variant_get(_v, '$.id', 'string')")),
    }).select(*CLASSIFIED_COLUMNS)


# What the outputs need of a classified row; the parsing intermediates (the JSON text, its
# variant, the base64 image) are dropped so a cached batch holds each image once.
CLASSIFIED_COLUMNS = (
    "key", "value", "topic", "partition", "offset", "timestamp", "id", "_any_id", "event_time",
    "source", "label", "_sv", "_attributes", "_img", "reason_code", "reason_detail",
)


def mark_late(df: DataFrame, watermark: datetime | None) -> DataFrame:
    """Quarantine clean rows whose event time is before ``watermark`` as LATE_EVENT."""
    if watermark is None:
        return df
    late = F.col("_late")
    return (
        df.withColumn("_late", F.col("reason_code").isNull() & (F.col("event_time") < F.lit(watermark)))
        .withColumn("reason_code",
                    F.when(late, F.lit(str(Reason.LATE_EVENT))).otherwise(F.col("reason_code")))
        .withColumn("reason_detail", F.when(late, F.concat(
            F.lit("event_time "), F.col("event_time").cast("string"),
            F.lit(f" is before the watermark {watermark.isoformat()}"),
        )).otherwise(F.col("reason_detail")))
        .drop("_late")
    )


def clean_rows(df: DataFrame, ingest: IngestConfig, batch_id: int) -> DataFrame:
    """Rows without a reason, in the clean table's shape (plus config-derived columns)."""
    classes = "array(" + ", ".join(_sql_str(c) for c in ingest.classes) + ")"
    out = df.where(F.col("reason_code").isNull()).select(
        F.col("id"),
        F.col("event_time"),
        F.to_date("event_time").alias("event_date"),
        F.col("source"),
        F.col("label"),
        (F.expr(f"array_position({classes}, label)") - 1).cast("int").alias("label_index"),
        F.col("_img.png").alias("image_png"),
        F.lit(ingest.image.target_height).alias("height"),
        F.lit(ingest.image.target_width).alias("width"),
        F.lit(ingest.image.target_channels).alias("channels"),
        F.col("_img.orig_format").alias("orig_format"),
        F.col("_img.orig_height").alias("orig_height"),
        F.col("_img.orig_width").alias("orig_width"),
        F.col("_img.orig_channels").alias("orig_channels"),
        F.col("_sv").alias("schema_version"),
        F.col("_attributes").alias("attributes"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.lit(batch_id).cast("bigint").alias("batch_id"),
        F.current_timestamp().alias("ingest_time"),
    )
    for name, expr in ingest.rules.derived.items():
        out = out.withColumn(name, F.expr(expr))
    return out


def quarantine_rows(df: DataFrame, batch_id: int) -> DataFrame:
    return df.where(F.col("reason_code").isNotNull()).select(
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        F.col("key").cast("string").alias("key"),
        F.col("value").alias("raw_value"),
        "reason_code",
        "reason_detail",
        F.col("_any_id").alias("id"),
        F.col("_sv").alias("schema_version"),
        F.lit(batch_id).cast("bigint").alias("batch_id"),
        F.current_timestamp().alias("ingest_time"),
        F.current_date().alias("ingest_date"),
    )


@dataclass(frozen=True)
class BatchSummary:
    """What one pass over a classified batch says: rows per reason code (``None``: clean so
    far), and the newest event time and the oldest event date of its clean rows."""

    reasons: dict[str | None, int]
    newest: datetime | None
    oldest_date: date | None


def batch_summary(classified: DataFrame) -> BatchSummary:
    clean = F.col("reason_code").isNull()
    rows = classified.groupBy("reason_code").agg(
        F.count("*").alias("n"), F.max(F.when(clean, F.col("event_time"))).alias("newest"),
        F.min(F.when(clean, F.to_date("event_time"))).alias("oldest_date")).collect()
    bounds = next((r for r in rows if r["reason_code"] is None), None)
    return BatchSummary({r["reason_code"]: r["n"] for r in rows},
                        bounds["newest"] if bounds else None, bounds["oldest_date"] if bounds else None)


def within_horizon(clean_table: DataFrame, since: date | None) -> DataFrame:
    """The clean table's rows with ``event_date >= since`` (all when ``since`` is None).

    ``event_date`` is the partition column, so this prunes partitions: the ids de-duplication
    reads stay as many as the horizon holds, however long the table grows.
    """
    return clean_table if since is None else clean_table.where(F.col("event_date") >= F.lit(since))


def mark_duplicates(candidates: DataFrame, existing: DataFrame) -> DataFrame:
    """Add ``is_duplicate``: the id was written before, or appears earlier in this batch.

    ``existing`` holds (id, kafka_partition, kafka_offset) of the clean table. A row that is
    already there with its own Kafka coordinates was written by an earlier attempt of this
    very batch: it is neither a duplicate nor written again, so a replayed batch counts the
    same as the first attempt.
    """
    first = Window.partitionBy("id").orderBy("kafka_partition", "kafka_offset")
    e = existing.select(
        F.col("id").alias("_e_id"), F.col("kafka_partition").alias("_e_p"),
        F.col("kafka_offset").alias("_e_o"),
    )
    joined = candidates.withColumn("_rank", F.row_number().over(first)).join(
        e, F.col("id") == F.col("_e_id"), "left"
    )
    same_record = (F.col("_e_p") == F.col("kafka_partition")) & (F.col("_e_o") == F.col("kafka_offset"))
    return joined.withColumn(
        "is_duplicate",
        (F.col("_rank") > 1) | (F.col("_e_id").isNotNull() & ~F.coalesce(same_record, F.lit(False))),
    ).withColumn("already_written", F.coalesce(same_record, F.lit(False))).drop(
        "_rank", "_e_id", "_e_p", "_e_o"
    )
