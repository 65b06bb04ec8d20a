"""SQL of the DuckDB historian: schema and its versions, compaction and bucket statistics."""

from __future__ import annotations

HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
SCHEMA_VERSION = 2

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS tag_ids START 1;
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY DEFAULT nextval('tag_ids'),
    name VARCHAR NOT NULL UNIQUE
);
-- Ingest: appended as it arrives, in any order; `seq` orders writes so the last one wins.
-- `status` is the OPC UA status code, 0 for plain Good (a constant column costs nothing).
CREATE TABLE IF NOT EXISTS hot (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE,
    quality UTINYINT NOT NULL, status UINTEGER NOT NULL, seq BIGINT NOT NULL
);
-- Compacted runs of the days not sealed yet, each sorted by (tag_id, ts).
CREATE TABLE IF NOT EXISTS recent (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE,
    quality UTINYINT NOT NULL, status UINTEGER NOT NULL
);
-- Sealed days: one row per tag and UTC day, the samples encoded in `payload` (block_codec.py) and
-- the day's statistics beside them. Retention empties `payload` and keeps the statistics.
CREATE TABLE IF NOT EXISTS blocks (
    tag_id INTEGER NOT NULL, day DATE NOT NULL, points INTEGER NOT NULL,
    n BIGINT, vmin DOUBLE, vmax DOUBLE, vsum DOUBLE, first_ts TIMESTAMP, first_v DOUBLE,
    last_ts TIMESTAMP, last_v DOUBLE, area DOUBLE, quality UTINYINT,
    -- Compressed already: DuckDB's dictionary and FSST passes would only slow reads down.
    payload BLOB USING COMPRESSION 'uncompressed'
);
CREATE TABLE IF NOT EXISTS text_samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value VARCHAR, quality UTINYINT NOT NULL,
    status UINTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tag_id, ts)
);
-- Hourly statistics of every compacted hour until a while after its day is sealed, and of the
-- hours whose samples retention removed. `area` is the trapezoid integral in value·µs between
-- the hour's own samples.
CREATE TABLE IF NOT EXISTS rollup_1h (
    tag_id INTEGER NOT NULL, bucket TIMESTAMP NOT NULL, n BIGINT, vmin DOUBLE, vmax DOUBLE,
    vsum DOUBLE, first_ts TIMESTAMP, first_v DOUBLE, last_ts TIMESTAMP, last_v DOUBLE,
    area DOUBLE, quality UTINYINT
);
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""

# Deduplicate the hot rows (last write wins) into a temp table, sorted for the compacted run.
STAGE = """
CREATE OR REPLACE TEMP TABLE stage AS
SELECT tag_id, ts, arg_max(value, seq) AS value, arg_max(quality, seq) AS quality,
    arg_max(status, seq) AS status
FROM hot WHERE seq <= ? GROUP BY tag_id, ts ORDER BY tag_id, ts
"""

# Late or replayed samples replace what a previous run holds for the same tag and time.
DELETE_REPLACED = """
DELETE FROM recent WHERE (tag_id, ts) IN (
    SELECT tag_id, ts FROM stage WHERE ts <= ?::TIMESTAMP
)
"""

# The numeric samples not sealed yet, newest write winning: hot rows over compacted runs.
IN_RANGE = "tag_id IN (SELECT unnest($ids)) AND ts >= $t0 AND ts < $t1"
UNSEALED = f"""
WITH h AS (
    SELECT tag_id, ts, value, quality, status FROM hot WHERE {IN_RANGE}
    QUALIFY row_number() OVER (PARTITION BY tag_id, ts ORDER BY seq DESC) = 1
)
SELECT tag_id, ts, value, quality, status FROM recent s WHERE {IN_RANGE}
    AND NOT EXISTS (SELECT 1 FROM h WHERE h.tag_id = s.tag_id AND h.ts = s.ts)
UNION ALL SELECT * FROM h
"""


def raw_source(blocks: str | None) -> str:
    """SQL of every numeric sample in range: unsealed rows over the decoded `blocks` relation."""
    if blocks is None:
        return f"({UNSEALED})"
    return (
        f"(WITH u AS ({UNSEALED}) SELECT * FROM u UNION ALL SELECT * FROM {blocks} b "
        "WHERE NOT EXISTS (SELECT 1 FROM u WHERE u.tag_id = b.tag_id AND u.ts = b.ts))"
    )


# Days before this are sealed (or retired); compacted rows are all from it on.
SEALED_BEFORE = (
    "(SELECT coalesce(max(value::TIMESTAMP), TIMESTAMP '0001-01-01') FROM meta "
    "WHERE key = 'sealed_before')"
)
# Sealed days from this on keep their hourly rollups; older ones answer from their samples.
ROLLUPS_FROM = (
    "(SELECT coalesce(max(value::TIMESTAMP), TIMESTAMP '0001-01-01') FROM meta "
    "WHERE key = 'rollups_from')"
)

# The (tag, day) pairs with unsealed rows in range, whose stored day statistics are missing or
# stale. Compacted hours all have a rollup: 1/12 of the rows to scan, or fewer.
PENDING_DAYS = f"""
SELECT DISTINCT tag_id, bucket::DATE AS day FROM rollup_1h WHERE tag_id IN (SELECT unnest($ids))
    AND bucket >= greatest($t0, {SEALED_BEFORE}) AND bucket < $t1
UNION SELECT DISTINCT tag_id, ts::DATE FROM hot WHERE {IN_RANGE}
"""

STATS_COLUMNS = "n, vmin, vmax, vsum, first_ts, first_v, last_ts, last_v, area, quality"

# Per-bucket statistics over samples, with the trapezoid area between the bucket's samples.
_BUCKET_STATS = """
WITH s AS (
    SELECT tag_id, ts, value, quality,
        make_timestamp((epoch_us(ts) // {step}) * {step}) AS bucket
    FROM {source}
), w AS (
    -- Rows without a value (Bad, CommLoss) are skipped: the trapezoid joins the values around.
    SELECT *, {next_value} AS nv, {next_time} AS nts FROM s
)
SELECT tag_id, bucket, count(value) AS n, min(value) AS vmin, max(value) AS vmax,
    sum(value) AS vsum,
    min(ts) FILTER (WHERE value IS NOT NULL) AS first_ts,
    arg_min(value, ts) FILTER (WHERE value IS NOT NULL) AS first_v,
    max(ts) FILTER (WHERE value IS NOT NULL) AS last_ts,
    arg_max(value, ts) FILTER (WHERE value IS NOT NULL) AS last_v,
    coalesce(sum((value + nv) / 2 * (epoch_us(nts) - epoch_us(ts))), 0) AS area,
    max(quality) AS quality
FROM w GROUP BY tag_id, bucket
"""
_NEXT = "lead({} IGNORE NULLS) OVER (PARTITION BY tag_id, bucket ORDER BY ts)"


def bucket_stats(step: int, source: str, area: bool = True) -> str:
    """SQL of per-bucket statistics over a relation of samples.

    Without `area` (no twa or integral asked) the window that finds each sample's successor is
    left out and `area` is 0: it is most of the query's work.
    """
    if not area:
        return _BUCKET_STATS.format(
            step=step, source=source, next_value="NULL::DOUBLE", next_time="NULL::TIMESTAMP"
        )
    return _BUCKET_STATS.format(
        step=step,
        source=source,
        next_value=_NEXT.format("value"),
        next_time=_NEXT.format("CASE WHEN value IS NOT NULL THEN ts END"),
    )


# The hours a compaction touched in days not sealed, whose rollups it recomputes (late samples
# of sealed days get theirs when merged into their blocks).
AFFECTED_HOURS = f"""
CREATE OR REPLACE TEMP TABLE affected AS
SELECT DISTINCT tag_id, time_bucket(INTERVAL '1 hour', ts) AS bucket FROM stage
WHERE ts >= {SEALED_BEFORE}
"""

RECOMPUTE_ROLLUP = (
    "DELETE FROM rollup_1h WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM affected); "
    f"INSERT INTO rollup_1h SELECT tag_id, bucket, {STATS_COLUMNS} FROM ("
    + bucket_stats(
        HOUR_US,
        "(SELECT s.* FROM recent s SEMI JOIN affected a ON s.tag_id = a.tag_id "
        "AND s.ts >= a.bucket AND s.ts < a.bucket + INTERVAL '1 hour')",
    )
    + ")"
)

# Coarser buckets from finer statistics (days or hours): the pieces between consecutive
# buckets are added back, so the result equals the same aggregate over raw samples.
FROM_STATS = """
WITH h AS (
    SELECT *, make_timestamp((epoch_us(bucket) // {step}) * {step}) AS big FROM {stats}
), r AS (
    SELECT *, lead(first_v IGNORE NULLS) OVER (PARTITION BY tag_id, big ORDER BY bucket) AS nfv,
        lead(first_ts IGNORE NULLS) OVER (PARTITION BY tag_id, big ORDER BY bucket) AS nfts
    FROM h
)
SELECT tag_id, big AS bucket, sum(n) AS n, min(vmin) AS vmin, max(vmax) AS vmax,
    sum(vsum) AS vsum, min(first_ts) AS first_ts,
    arg_min(first_v, first_ts) FILTER (WHERE first_v IS NOT NULL) AS first_v,
    max(last_ts) AS last_ts, arg_max(last_v, last_ts) FILTER (WHERE last_v IS NOT NULL) AS last_v,
    sum(area) + coalesce(sum((last_v + nfv) / 2 * (epoch_us(nfts) - epoch_us(last_ts))), 0)
        AS area,
    max(quality) AS quality
FROM r GROUP BY tag_id, big
"""

# What each aggregate is, from a row of bucket statistics.
AGG_FROM_STATS = {
    "mean": "vsum / n",
    "min": "vmin",
    "max": "vmax",
    "first": "first_v",
    "last": "last_v",
    "count": "n::DOUBLE",
    "sum": "vsum",
    "twa": "CASE WHEN last_ts > first_ts "
    "THEN area / (epoch_us(last_ts) - epoch_us(first_ts)) ELSE first_v END",
    "integral": f"area / {HOUR_US}",
}
