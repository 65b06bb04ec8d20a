"""SQL of the DuckDB historian: schema, compaction, rollups and aggregate queries."""

from __future__ import annotations

HOUR_US = 3_600_000_000

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS tag_ids START 1;
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY DEFAULT nextval('tag_ids'),
    name VARCHAR NOT NULL UNIQUE
);
-- Ingest: appended as it arrives, in any order; `seq` orders writes so the last one wins.
CREATE TABLE IF NOT EXISTS hot (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE,
    quality UTINYINT NOT NULL, seq BIGINT NOT NULL
);
-- Compacted runs, each sorted by (tag_id, ts): one tag's range reads few row groups.
CREATE TABLE IF NOT EXISTS samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE, quality UTINYINT NOT NULL
);
CREATE TABLE IF NOT EXISTS text_samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value VARCHAR, quality UTINYINT NOT NULL,
    PRIMARY KEY (tag_id, ts)
);
-- Hourly statistics; they outlive raw retention. `area` is the trapezoid integral in
-- value·µs between the hour's own samples.
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
SELECT tag_id, ts, arg_max(value, seq) AS value, arg_max(quality, seq) AS quality
FROM hot WHERE seq <= ? GROUP BY tag_id, ts ORDER BY tag_id, ts
"""

# Late or replayed samples replace what a previous run holds for the same tag and time.
DELETE_REPLACED = """
DELETE FROM samples WHERE (tag_id, ts) IN (
    SELECT tag_id, ts FROM stage WHERE ts <= ?::TIMESTAMP
)
"""

AFFECTED_HOURS = """
CREATE OR REPLACE TEMP TABLE affected AS
SELECT DISTINCT tag_id, time_bucket(INTERVAL '1 hour', ts) AS bucket FROM stage
"""

# Per-bucket statistics over samples, with the trapezoid area between the bucket's samples.
BUCKET_STATS = """
WITH s AS (
    SELECT tag_id, ts, value, quality,
        make_timestamp((epoch_us(ts) // {step}) * {step}) AS bucket
    FROM {source}
), w AS (
    -- Rows without a value (Bad, CommLoss) are skipped: the trapezoid joins the values around.
    SELECT *, lead(value IGNORE NULLS) OVER (PARTITION BY tag_id, bucket ORDER BY ts) AS nv,
        lead(CASE WHEN value IS NOT NULL THEN ts END IGNORE NULLS)
            OVER (PARTITION BY tag_id, bucket ORDER BY ts) AS nts
    FROM s
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

RECOMPUTE_ROLLUP = """
DELETE FROM rollup_1h WHERE (tag_id, bucket) IN (SELECT tag_id, bucket FROM affected);
INSERT INTO rollup_1h
""" + BUCKET_STATS.format(
    step=HOUR_US,
    source="(SELECT s.* FROM samples s SEMI JOIN affected a ON s.tag_id = a.tag_id "
    "AND s.ts >= a.bucket AND s.ts < a.bucket + INTERVAL '1 hour')",
)

# Coarser buckets from hourly rows: the pieces between consecutive hours are added back so the
# result equals the same aggregate over raw samples.
FROM_ROLLUP = """
WITH h AS (
    SELECT *, make_timestamp((epoch_us(bucket) // {step}) * {step}) AS big
    FROM rollup_1h
    WHERE tag_id IN (SELECT unnest(?)) AND bucket >= ? AND bucket < ?
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
