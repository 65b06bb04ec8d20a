"""Sealed days of the DuckDB historian: compacted runs encoded into blocks, read and retired.

A sealed day of one tag is one row of `blocks`: its samples encoded by `block_codec.py` (about a
byte a sample) and the day's statistics, computed by the same SQL as every bucket aggregate,
so daily answers from them equal answers from the raw samples.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from beffroi.historian import block_codec as codec
from beffroi.historian.duckdb import sql as q

log = logging.getLogger(__name__)

_CHUNK_ROWS = 2_000_000  # samples decoded or encoded at a time: bounds memory, not speed
_EPOCH_DAY = np.datetime64("1970-01-01", "D")


class Rows:
    """Samples of many tags as columns, sorted by tag then time."""

    def __init__(self, tag_id: np.ndarray, s: codec.Samples):
        self.tag_id, self.s = tag_id, s

    def __len__(self) -> int:
        return len(self.tag_id)

    def take(self, keep: np.ndarray) -> Rows:
        """Return the rows where `keep` is true (or at the given indices)."""
        return Rows(self.tag_id[keep], codec.Samples(*(a[keep] for a in self.s)))

    def frame(self) -> pd.DataFrame:
        """Return the rows as a DataFrame with naive UTC times."""
        return pd.DataFrame(
            {
                "tag_id": self.tag_id,
                "ts": self.s.ts.view("datetime64[us]"),
                "value": self.s.value,
                "quality": self.s.quality,
                "status": self.s.status,
            }
        )

    def arrow(self) -> pa.Table:
        """Return the rows as the (tag_id, ts, value, quality, status) table of the SQL."""
        return pa.table(
            {
                "tag_id": pa.array(self.tag_id, pa.int32()),
                "ts": pa.array(self.s.ts.view("datetime64[us]"), pa.timestamp("us")),
                # NaN is stored as NULL: aggregates count the values there are.
                "value": pa.array(self.s.value, pa.float64(), from_pandas=True),
                "quality": pa.array(self.s.quality, pa.uint8()),
                "status": pa.array(self.s.status, pa.uint32()),
            }
        )


def _concat(parts: list[Rows]) -> Rows:
    if not parts:
        empty = codec.Samples(
            np.empty(0, np.int64), np.empty(0), np.empty(0, np.uint8), np.empty(0, np.uint32)
        )
        return Rows(np.empty(0, np.int32), empty)
    return Rows(
        np.concatenate([p.tag_id for p in parts]),
        codec.Samples(*(np.concatenate([p.s[i] for p in parts]) for i in range(4))),
    )


@contextmanager
def registered(cur: duckdb.DuckDBPyConnection, name: str, table: pa.Table) -> Iterator[str]:
    """Make an Arrow table visible to this cursor's SQL as `name` for the block's duration."""
    # DuckDB refuses to (un)register while a result of this cursor is unfinished.
    cur.complete()
    cur.register(name, table)
    try:
        yield name
    finally:
        cur.complete()
        cur.unregister(name)


def decode(tag_ids: list[int], payloads: list[bytes]) -> Rows:
    """Return the samples of blocks, in the order given."""
    if not payloads:
        return _concat([])
    s, counts = codec.decode_many(payloads)
    return Rows(np.repeat(np.asarray(tag_ids, np.int32), counts), s)


class LastDecoded:
    """The blocks one thread decoded last, reused when it reads the very same ones again.

    The KPI checks ask for a range's hourly counts, then its sums: the same blocks twice. The
    match is on the payloads read in the current transaction, so it cannot return stale samples.
    """

    LIMIT = 3_000_000  # samples kept at most (about 75 MB)

    def __init__(self) -> None:
        self.key: tuple[list[int], list[bytes]] | None = None
        self.rows: Rows | None = None

    def decode(self, tag_ids: list[int], payloads: list[bytes]) -> Rows:
        """Return the samples of blocks, decoding them unless they are the last ones."""
        # key and rows are set together, and cleared together.
        if self.rows is not None and self.key == (tag_ids, payloads):
            return self.rows
        self.key = self.rows = None  # not held while the next ones are decoded
        rows = decode(tag_ids, payloads)
        keep = len(rows) <= self.LIMIT
        self.key, self.rows = ((tag_ids, payloads), rows) if keep else (None, None)
        return rows


def read(
    cur: duckdb.DuckDBPyConnection,
    ids: list[int],
    t0: datetime,
    t1: datetime,
    last: LastDecoded | None = None,
    days: str = "",
    rollups_from: datetime | None = None,
) -> Rows:
    """Return the sealed samples of tags in [t0, t1), sorted by tag then time.

    `days` narrows the blocks read with more SQL, which may use `$t0`, `$t1` and
    `$rollups_from` (given).
    """
    if not ids or t0 >= t1:
        return _concat([])
    params = {"ids": ids, "d0": t0, "d1": t1 - timedelta(microseconds=1)}
    if days:
        params.update(t0=t0, t1=t1, rollups_from=rollups_from)
    rows = cur.execute(
        "SELECT tag_id, payload FROM blocks WHERE tag_id IN (SELECT unnest($ids)) "
        f"AND day >= $d0::DATE AND day <= $d1::DATE AND payload IS NOT NULL{days} "
        "ORDER BY tag_id, day",
        params,
    ).fetchall()
    if not rows:
        return _concat([])
    tag_ids, payloads = [r[0] for r in rows], [r[1] for r in rows]
    out = last.decode(tag_ids, payloads) if last is not None else decode(tag_ids, payloads)
    ts = out.s.ts
    lo, hi = _us(t0), _us(t1)
    inside = (ts >= lo) & (ts < hi)
    return out if inside.all() else out.take(inside)


def newest(cur: duckdb.DuckDBPyConnection, ids: list[int]) -> Rows:
    """Return the last sealed sample of each tag."""
    rows = cur.execute(
        "SELECT tag_id, payload FROM blocks WHERE tag_id IN (SELECT unnest(?)) "
        "AND payload IS NOT NULL "
        "QUALIFY row_number() OVER (PARTITION BY tag_id ORDER BY day DESC) = 1 ORDER BY tag_id",
        [ids],
    ).fetchall()
    if not rows:
        return _concat([])
    out = decode([r[0] for r in rows], [r[1] for r in rows])
    last = np.flatnonzero(np.append(out.tag_id[1:] != out.tag_id[:-1], True))
    return out.take(last)


def seal(cur: duckdb.DuckDBPyConnection, horizon: datetime) -> int:
    """Encode the compacted samples older than `horizon` into day blocks; return how many.

    Samples for a day already sealed (late data, replays) are merged into its block, a new
    sample replacing a stored one at the same time, and the day's rollups are made again if it
    keeps them. A day whose raw samples retention removed stays removed.
    """
    per_tag = cur.execute(
        "SELECT tag_id, count(*) FROM recent WHERE ts < ? GROUP BY tag_id ORDER BY tag_id",
        [horizon],
    ).fetchall()
    sealed = 0
    for lo, hi in _chunks(per_tag):
        new = _fetch_recent(cur, lo, hi, horizon)
        old = cur.execute(
            "SELECT tag_id, day, payload FROM blocks WHERE tag_id BETWEEN ? AND ? AND "
            "(tag_id, day) IN (SELECT DISTINCT tag_id, ts::DATE FROM recent "
            "WHERE tag_id BETWEEN ? AND ? AND ts < ?)",
            [lo, hi, lo, hi, horizon],
        ).fetchall()
        merged = None
        if old:
            new, merged = _merge(cur, new, old)
        _insert(cur, new, merged)
        sealed += len(new)
    if per_tag:
        cur.execute("DELETE FROM recent WHERE ts < ?", [horizon])
    cur.execute(
        f"INSERT OR REPLACE INTO meta SELECT 'sealed_before', "
        f"greatest({q.SEALED_BEFORE}, ?::TIMESTAMP)::VARCHAR",
        [horizon],
    )
    return sealed


def prune_rollups(cur: duckdb.DuckDBPyConnection, before: datetime) -> None:
    """Drop the rollups of sealed days before `before`: their samples answer for them now."""
    # Only where samples answer instead: hours whose samples retention removed keep theirs.
    cur.execute(
        f"DELETE FROM rollup_1h WHERE bucket >= {q.ROLLUPS_FROM} AND bucket < $before "
        "AND (tag_id, bucket::DATE) IN (SELECT tag_id, day FROM blocks WHERE payload IS NOT NULL "
        f"AND day >= {q.ROLLUPS_FROM}::DATE AND day < $before::DATE)",
        {"before": before},
    )
    cur.execute(
        f"INSERT OR REPLACE INTO meta SELECT 'rollups_from', "
        f"greatest({q.ROLLUPS_FROM}, ?::TIMESTAMP)::VARCHAR",
        [before],
    )


def remove_before(cur: duckdb.DuckDBPyConnection, ids: list[int], cut: datetime) -> int:
    """Remove tags' raw samples before `cut` (a UTC midnight), keeping their statistics."""
    seal(cur, cut)
    deleted = retire(cur, ids, cut)
    for table in ("recent", "hot", "text_samples"):  # what was written since it was sealed
        deleted += cur.execute(
            f"DELETE FROM {table} WHERE tag_id IN (SELECT unnest(?)) AND ts < ?", [ids, cut]
        ).fetchall()[0][0]
    return deleted


def retire(cur: duckdb.DuckDBPyConnection, ids: list[int], before: datetime) -> int:
    """Remove the raw samples of tags' days before `before`; keep hourly and daily statistics."""
    where = "tag_id IN (SELECT unnest(?)) AND day < ?::DATE AND payload IS NOT NULL"
    per_tag = cur.execute(
        f"SELECT tag_id, sum(points) FROM blocks WHERE {where} GROUP BY tag_id ORDER BY tag_id",
        [ids, before],
    ).fetchall()
    hourly = q.bucket_stats(q.HOUR_US, "_retired")
    for lo, hi in _chunks(per_tag):
        span = [ids, before, lo, hi]
        rows = cur.execute(
            f"SELECT tag_id, payload FROM blocks WHERE {where} AND tag_id BETWEEN ? AND ? "
            "ORDER BY tag_id, day",
            span,
        ).fetchall()
        samples = decode([r[0] for r in rows], [r[1] for r in rows])
        with registered(cur, "_retired", samples.arrow()):
            # Hours still keeping rollups have them already: made again from the same samples.
            cur.execute(
                "DELETE FROM rollup_1h WHERE (tag_id, bucket) IN "
                "(SELECT DISTINCT tag_id, time_bucket(INTERVAL '1 hour', ts) FROM _retired)"
            )
            cur.execute(
                f"INSERT INTO rollup_1h SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM ({hourly})"
            )
        # Rewritten rather than updated: whole deleted row groups are freed at checkpoint.
        cur.execute(
            f"INSERT INTO blocks SELECT tag_id, day, points, {q.STATS_COLUMNS}, NULL FROM blocks "
            f"WHERE {where} AND tag_id BETWEEN ? AND ?",
            span,
        )
        cur.execute(f"DELETE FROM blocks WHERE {where} AND tag_id BETWEEN ? AND ?", span)
    return int(sum(n for _, n in per_tag))


def _chunks(per_tag: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Split tags (id, rows), sorted by id, into id ranges of about _CHUNK_ROWS rows."""
    start, rows = None, 0
    for tid, n in per_tag:
        if start is None:
            start = tid
        rows += n
        if rows >= _CHUNK_ROWS:
            yield start, tid
            start, rows = None, 0
    if start is not None:
        yield start, per_tag[-1][0]


def _fetch_recent(cur: duckdb.DuckDBPyConnection, lo: int, hi: int, horizon: datetime) -> Rows:
    got = cur.execute(
        "SELECT tag_id, epoch_us(ts) AS ts, value, quality, status FROM recent "
        "WHERE tag_id BETWEEN ? AND ? AND ts < ? ORDER BY tag_id, ts",
        [lo, hi, horizon],
    ).fetchnumpy()
    ts, value = got["ts"], got["value"]
    # Numbers come as arrays (masked where NULL): only ENUM columns come as Categorical.
    assert isinstance(ts, np.ndarray) and isinstance(value, np.ndarray)
    s = codec.Samples(
        ts.astype(np.int64),
        np.ma.filled(value.astype(np.float64), np.nan),
        np.asarray(got["quality"], np.uint8),
        np.asarray(got["status"], np.uint32),
    )
    return Rows(np.asarray(got["tag_id"], np.int32), s)


def _merge(
    cur: duckdb.DuckDBPyConnection, new: Rows, old: list[tuple[int, date, bytes | None]]
) -> tuple[Rows, pa.Table]:
    """Merge new samples into the blocks of their days; drop those for retired days.

    Return the samples to seal and the (tag_id, day) of the blocks they replace.
    """
    retired = {(t, d) for t, d, p in old if p is None}
    if retired:
        day = (new.s.ts // q.DAY_US).astype("datetime64[D]").tolist()
        pairs = zip(new.tag_id.tolist(), day, strict=True)
        keep = np.array([(t, d) not in retired for t, d in pairs], bool)
        new = new.take(keep)
    live = [(t, d, p) for t, d, p in old if p is not None]
    keys = pa.table(
        {
            "tag_id": pa.array([t for t, _, _ in live], pa.int32()),
            "day": pa.array([d for _, d, _ in live], pa.date32()),
        }
    )
    if live:
        stored = decode([t for t, _, _ in live], [p for _, _, p in live])
        both = _concat([stored, new])
        newer = np.concatenate([np.zeros(len(stored), bool), np.ones(len(new), bool)])
        order = np.lexsort((newer, both.s.ts, both.tag_id))
        both = both.take(order)
        # Sorted with the new sample last, the last of each (tag, time) wins.
        same_next = (both.tag_id[1:] == both.tag_id[:-1]) & (both.s.ts[1:] == both.s.ts[:-1])
        new = both.take(~np.append(same_next, False))
        with registered(cur, "_merged", keys):
            cur.execute("DELETE FROM blocks WHERE (tag_id, day) IN (SELECT * FROM _merged)")
    return new, keys


def _insert(cur: duckdb.DuckDBPyConnection, rows: Rows, merged: pa.Table | None = None) -> None:
    """Encode rows (sorted by tag, time) into one block per tag and day, with its statistics.

    The `merged` days (tag_id, day) that keep rollups get theirs made again from their samples.
    """
    if not len(rows):
        return
    day = rows.s.ts // q.DAY_US
    cut = np.flatnonzero((rows.tag_id[1:] != rows.tag_id[:-1]) | (day[1:] != day[:-1])) + 1
    first = np.concatenate(([0], cut))
    counts = np.diff(np.append(first, len(rows)))
    payloads = codec.encode_many(rows.s, counts)
    meta = pa.table(
        {
            "tag_id": pa.array(rows.tag_id[first], pa.int32()),
            "day": pa.array(_EPOCH_DAY + day[first], pa.date32()),
            "points": pa.array(counts, pa.int32()),
            "payload": pa.array(payloads, pa.binary()),
        }
    )
    daily = q.bucket_stats(q.DAY_US, "_sealing")
    with registered(cur, "_sealing", rows.arrow()), registered(cur, "_payloads", meta):
        cur.execute(
            f"INSERT INTO blocks SELECT p.tag_id, p.day, p.points, {_prefixed('s')}, p.payload "
            f"FROM _payloads p JOIN ({daily}) s ON s.tag_id = p.tag_id "
            "AND s.bucket = p.day::TIMESTAMP ORDER BY p.day, p.tag_id"
        )
        if merged is not None and merged.num_rows:
            _remake_rollups(cur, merged)


def _remake_rollups(cur: duckdb.DuckDBPyConnection, days: pa.Table) -> None:
    """Make again from `_sealing` the rollups of (tag_id, day)s that keep rollups."""
    redo = f"(tag_id, {{}}::DATE) IN (SELECT * FROM _remade WHERE day >= {q.ROLLUPS_FROM})"
    hourly = q.bucket_stats(q.HOUR_US, f"(SELECT * FROM _sealing WHERE {redo.format('ts')})")
    with registered(cur, "_remade", days):
        cur.execute(f"DELETE FROM rollup_1h WHERE {redo.format('bucket')}")
        cur.execute(
            f"INSERT INTO rollup_1h SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM ({hourly})"
        )


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in q.STATS_COLUMNS.split(","))


def _us(t: datetime) -> int:
    return int(np.datetime64(t, "us").astype(np.int64))
