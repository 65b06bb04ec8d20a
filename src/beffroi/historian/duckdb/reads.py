"""Reads of the DuckDB historian: raw ranges, bucket aggregates, latest values and counts.

Samples live in three places, newest write first: `hot` (as written), `recent` (compacted
runs of the days not sealed) and `blocks` (sealed days, with daily statistics); `rollup_1h`
holds hourly statistics of compacted hours until ROLLUP_DAYS after their day is sealed, and of
hours retention emptied. A read spans several statements, so it runs in one transaction: a
compaction committing meanwhile cannot show a sample twice or hide it.

Aggregates over whole hours combine the finest statistics that are right for each part of the
range: a sealed day's own statistics when nothing newer touches it, the rollup of a compacted
hour when no hot row does, statistics computed from samples elsewhere.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from beffroi.historian.base import COLUMNS
from beffroi.historian.duckdb import sealed as blocks
from beffroi.historian.duckdb import sql as q
from beffroi.historian.duckdb.sealed import Rows, registered

_EPOCH = datetime(1970, 1, 1)
_ALL_TIME = {"t0": datetime(1, 1, 1), "t1": datetime(9999, 1, 1)}
_IDS = "tag_id IN (SELECT unnest($ids))"
_SAMPLES = "SELECT tag_id, ts, value, quality, status FROM {}"
_BLOCK_STATS = (
    f"(SELECT tag_id, day::TIMESTAMP AS bucket, {q.STATS_COLUMNS} FROM blocks "
    f"WHERE {_IDS} AND day >= $t0::DATE AND day < $t1::DATE{{extra}})"
)
_HOUR = "time_bucket(INTERVAL '1 hour', ts)"


@contextmanager
def snapshot(cur: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """Run the reads of the block in one transaction, on one state of the file."""
    cur.execute("BEGIN TRANSACTION")
    try:
        yield
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    cur.execute("COMMIT")


@contextmanager
def _source(cur: duckdb.DuckDBPyConnection, sealed: Rows) -> Iterator[str]:
    """Yield the SQL of every sample in range: decoded `sealed` rows under unsealed ones."""
    if not len(sealed):
        yield q.raw_source(None)
        return
    with registered(cur, "_sealed", sealed.arrow()):
        yield q.raw_source("_sealed")


def _hot_hours(start: str) -> str:
    """SQL of the (tag, hour) pairs with hot rows from `$start` to `$t1`."""
    return f"SELECT DISTINCT tag_id, {_HOUR} FROM hot WHERE {_IDS} AND ts >= ${start} AND ts < $t1"


def _where_samples_are(
    cur: duckdb.DuckDBPyConnection, ids: list[int], t0: datetime, t1: datetime
) -> tuple[datetime, datetime, bool]:
    """Return where days are sealed before, where sealed days keep rollups from, and whether
    hot rows of the tags fall in [t0, t1): cheap checks that spare reads of big tables."""
    return cur.execute(
        f"SELECT {q.SEALED_BEFORE}, {q.ROLLUPS_FROM}, "
        f"EXISTS (SELECT 1 FROM hot WHERE {q.IN_RANGE})",
        {"ids": ids, "t0": t0, "t1": t1},
    ).fetchall()[0]


def _aligned(t0: datetime, t1: datetime, every: timedelta) -> bool:
    return (t0 - _EPOCH) % every == timedelta(0) and (t1 - _EPOCH) % every == timedelta(0)


class _Parts:
    """Sealed samples, compacted ones (all newer: the days not sealed) and hot ones."""

    def __init__(self, sealed: Rows):
        self.sealed = sealed
        self.recent: pd.DataFrame | None = None
        self.hot: pd.DataFrame | None = None

    def frame(self) -> pd.DataFrame:
        """Return every sample, the newest write at each tag and time, by tag then time."""
        sealed = self.sealed.frame()
        parts = [p for p in (sealed, self.recent, self.hot) if p is not None and len(p)]
        if not parts:
            return sealed
        if len(parts) == 1 and parts[0] is not self.hot:
            return parts[0]  # sealed days and compacted runs hold one sample per tag and time
        both = pd.concat([p.astype(sealed.dtypes) for p in parts], ignore_index=True)
        tag = both["tag_id"].to_numpy()
        if self.hot is None or not len(self.hot):
            # Compacted samples are all newer than sealed ones: nothing to replace.
            if (tag == tag[0]).all():
                return both
            return both.sort_values(["tag_id", "ts"], kind="stable", ignore_index=True)
        # A stable sort keeps the parts' order between samples at the same tag and time.
        both = both.sort_values(["tag_id", "ts"], kind="stable", ignore_index=True)
        return both.drop_duplicates(["tag_id", "ts"], keep="last", ignore_index=True)

    def arrow(self) -> pa.Table:
        """Return every sample as an Arrow table, NaN as null (straight from blocks if alone)."""
        if not any(p is not None and len(p) for p in (self.recent, self.hot)):
            return self.sealed.arrow()
        return pa.Table.from_pandas(self.frame(), preserve_index=False)


class Reads(ABC):
    """Raw, aggregate, latest-value and count reads of DuckDBHistorian."""

    _names: dict[int, str]  # set, as the methods below, by the class it is mixed into
    _local: threading.local

    @abstractmethod
    def _cur(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor."""

    @abstractmethod
    def _ids_of(self, tags: Sequence[str]) -> list[int]:
        """Return the ids of the known tags among `tags`."""

    @abstractmethod
    def _frame(self, df: pd.DataFrame, columns: list[str] = COLUMNS) -> pd.DataFrame:
        """Turn a (tag_id, ts, value, quality[, status]) result into the contract's columns."""

    def _last_decoded(self) -> blocks.LastDecoded:
        last = getattr(self._local, "decoded", None)
        if last is None:
            last = self._local.decoded = blocks.LastDecoded()
        return last

    def _raw(
        self, cur: duckdb.DuckDBPyConnection, ids: list[int], t0: datetime, t1: datetime
    ) -> pd.DataFrame:
        """Return numeric samples in [t0, t1) as (tag_id, ts, value, quality, status)."""
        return self._raw_parts(cur, ids, t0, t1).frame()

    def _raw_parts(
        self,
        cur: duckdb.DuckDBPyConnection,
        ids: list[int],
        t0: datetime,
        t1: datetime,
        hours: str = "",
    ) -> _Parts:
        """Return the sealed samples in [t0, t1) and the unsealed ones, which replace them.

        With `hours` (SQL of (tag_id, hour) pairs), only blocks of days at or after where
        rollups stop, and compacted rows, in those hours are read.
        """
        params = {"ids": ids, "t0": t0, "t1": t1}
        sealed_before, rollups_from, hot = _where_samples_are(cur, ids, t0, t1)
        days = ""
        if hours:
            days = (
                " AND (day < $rollups_from OR (tag_id, day) IN "
                f"(SELECT tag_id, b::DATE FROM ({hours}) h(tag_id, b)))"
            )
        last = self._last_decoded()
        parts = _Parts(blocks.read(cur, ids, t0, t1, last, days, rollups_from))
        if t1 > sealed_before:
            where = f" AND (tag_id, {_HOUR}) IN ({hours})" if hours else ""
            recent = f"{_SAMPLES.format('recent')} WHERE {q.IN_RANGE}{where}"
            parts.recent = cur.execute(recent + " ORDER BY tag_id, ts", params).df()
        if hot:
            sql = f"{_SAMPLES.format('hot')} WHERE {q.IN_RANGE} ORDER BY seq"
            parts.hot = cur.execute(sql, params).df()
        return parts

    def _aggregate(
        self,
        cur: duckdb.DuckDBPyConnection,
        ids: list[int],
        t0: datetime,
        t1: datetime,
        every: timedelta,
        agg: str,
    ) -> pd.DataFrame:
        """Return (tag_id, ts, value, quality) of `agg` per bucket of `every`."""
        step = every // timedelta(microseconds=1)
        params: dict[str, object] | None  # None for a statement on registered rows only
        params = {"ids": ids, "t0": t0, "t1": t1}
        area = agg in ("twa", "integral")
        with ExitStack() as stack:
            if step % q.HOUR_US == 0 and _aligned(t0, t1, every):
                if step % q.DAY_US == 0:
                    stats = self._day_stats(cur, stack, params, area)
                else:
                    stats = self._hour_stats(cur, stack, params, area)
                sql = q.FROM_STATS.format(step=step, stats=stats)
            else:
                rows = self._raw_parts(cur, ids, t0, t1).arrow()
                stack.enter_context(registered(cur, "_rows", rows))
                sql, params = q.bucket_stats(step, "_rows", area), None
            expr = q.AGG_FROM_STATS[agg]
            return cur.execute(
                f"SELECT tag_id, bucket AS ts, {expr} AS value, quality FROM ({sql})", params
            ).df()

    def _day_stats(
        self, cur: duckdb.DuckDBPyConnection, stack: ExitStack, params: dict, area: bool
    ) -> str:
        """Return SQL of daily statistics: sealed days' own, hourly ones for days with news.

        Adds `h0`, where hourly statistics start, to `params` when they are needed.
        """
        got = cur.execute(q.PENDING_DAYS, params).fetchnumpy()
        if not len(got["day"]):
            return _BLOCK_STATS.format(extra="")
        days = np.asarray(got["day"]).astype("datetime64[D]")
        pending = pa.table({"tag_id": pa.array(got["tag_id"], pa.int32()), "day": days})
        stack.enter_context(registered(cur, "_pending", pending))
        # Days with unsealed rows are the newest ones: hours from the first of them on.
        params["h0"] = days.min().astype("datetime64[us]").item()
        tags = np.unique(got["tag_id"]).tolist()
        hours = self._hour_stats(cur, stack, params, area, start="h0", tags=tags)
        others = _BLOCK_STATS.format(extra=" AND (tag_id, day) NOT IN (SELECT * FROM _pending)")
        return (
            f"({others} UNION ALL SELECT * FROM {hours} "
            "WHERE (tag_id, bucket::DATE) IN (SELECT * FROM _pending))"
        )

    def _hour_stats(
        self,
        cur: duckdb.DuckDBPyConnection,
        stack: ExitStack,
        params: dict,
        area: bool,
        start: str = "t0",
        tags: list[int] | None = None,
    ) -> str:
        """Return SQL of hourly statistics from `params[start]`: rollups where no hot row is
        newer, statistics of the samples elsewhere (days past rollups, hours with hot rows).

        `tags`, when given, are the only ones whose samples are read (the others' statistics
        are not wanted).
        """
        own = {"ids": params["ids"] if tags is None else tags, "t0": params[start]}
        own["t1"] = params["t1"]
        rollups = (
            f"(SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM rollup_1h "
            f"WHERE {_IDS} AND bucket >= ${start} AND bucket < $t1{{}})"
        )
        _, rollups_from, hot = _where_samples_are(cur, own["ids"], own["t0"], own["t1"])
        if not hot and own["t0"] >= rollups_from:
            return rollups.format("")
        kept = rollups.format(f" AND (tag_id, bucket) NOT IN ({_hot_hours(start)})")
        rows = self._raw_parts(cur, own["ids"], own["t0"], own["t1"], _hot_hours("t0")).arrow()
        stack.enter_context(registered(cur, "_rows", rows))
        source = (
            f"(SELECT * FROM _rows r WHERE (tag_id, {_HOUR}) NOT IN "
            f"(SELECT tag_id, bucket FROM {kept}))"
        )
        fresh = q.bucket_stats(q.HOUR_US, source, area)
        return f"({kept} UNION ALL SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM ({fresh}))"

    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the newest sample of each tag."""
        cur = self._cur()
        ids = self._ids_of(tags) if tags is not None else list(self._names)
        far = {"ids": ids, **_ALL_TIME}
        newest = "SELECT tag_id, max(ts) AS ts, arg_max(value, ts) AS value, "
        newest += "arg_max(quality, ts) AS quality FROM {} GROUP BY tag_id"
        with snapshot(cur):
            with _source(cur, blocks.newest(cur, ids)) as src:
                num = cur.execute(newest.format(src), far).df()
            text = cur.execute(
                newest.format(f"(SELECT * FROM text_samples WHERE {q.IN_RANGE})"), far
            ).df()
        frames = [p for p in (num, text) if not p.empty]
        if not frames:
            return self._frame(num)
        if len(frames) > 1:
            frames = [frames[0].astype({"value": object}), frames[1]]
        return self._frame(pd.concat(frames, ignore_index=True))

    def count(self) -> int:
        """Return the number of stored samples (a replaced value counts once)."""
        cur = self._cur()
        far = {"ids": list(self._names), **_ALL_TIME}
        live = "payload IS NOT NULL AND (tag_id, day) {} (SELECT * FROM _pending)"
        with snapshot(cur):
            pending = cur.sql(q.PENDING_DAYS, params=far).to_arrow_table()
            with registered(cur, "_pending", pending):
                n = cur.execute(
                    f"SELECT coalesce(sum(points), 0) FROM blocks WHERE {live.format('NOT IN')}"
                ).fetchall()[0][0]
                rows = cur.execute(
                    f"SELECT tag_id, payload FROM blocks WHERE {live.format('IN')} "
                    "ORDER BY tag_id, day"
                ).fetchall()
            # Days with unsealed rows: decoded, so a replaced sample counts once.
            mixed = blocks.decode([r[0] for r in rows], [r[1] for r in rows])
            with _source(cur, mixed) as src:
                n += cur.execute(f"SELECT count(*) FROM {src}", far).fetchall()[0][0]
            n += cur.execute("SELECT count(*) FROM text_samples").fetchall()[0][0]
        return int(n)
