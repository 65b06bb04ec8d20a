"""Reads of the DuckDB historian: raw ranges, bucket aggregates, latest values and counts.

Samples live in three places, newest write first: `hot` (as written), `recent` (compacted
runs of the days not sealed) and `blocks` (sealed days). Raw reads decode the blocks a range
touches and, when unsealed rows fall in the range too, let SQL put the newest write first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timedelta

import duckdb
import pandas as pd

from beffroi.historian import duckdb_blocks as blocks
from beffroi.historian import duckdb_sql as q
from beffroi.historian.duckdb_blocks import Rows, registered

_EPOCH = datetime(1970, 1, 1)
_ALL_TIME = {"t0": datetime(1, 1, 1), "t1": datetime(9999, 1, 1)}
_BLOCK_STATS = (
    f"(SELECT tag_id, day::TIMESTAMP AS bucket, {q.STATS_COLUMNS} FROM blocks "
    "WHERE tag_id IN (SELECT unnest($ids)) AND day >= $t0::DATE AND day < $t1::DATE{extra})"
)


@contextmanager
def _source(cur: duckdb.DuckDBPyConnection, sealed: Rows) -> Iterator[str]:
    """Yield the SQL of every sample in range: decoded `sealed` rows under unsealed ones."""
    if not len(sealed):
        yield q.raw_source(None)
        return
    with registered(cur, "_sealed", sealed.arrow()):
        yield q.raw_source("_sealed")


def _newest_last(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Merge sample frames sorted by tag and time, a later part replacing an earlier one."""
    present = [p for p in parts if not p.empty]
    if not present:
        return parts[0]
    if len(present) == 1 and present[0] is not parts[-1]:
        return present[0]  # sealed days and compacted runs hold one sample per tag and time
    both = pd.concat([p.astype(parts[0].dtypes) for p in present], ignore_index=True)
    # A stable sort keeps the parts' order between samples at the same tag and time.
    both = both.sort_values(["tag_id", "ts"], kind="stable", ignore_index=True)
    return both.drop_duplicates(["tag_id", "ts"], keep="last", ignore_index=True)


class Reads:
    """Raw, aggregate, latest-value and count reads of DuckDBHistorian."""

    _names: dict[int, str]  # the class it is mixed into provides _cur, _frame and _ids_of

    def _raw(self, cur, ids: list[int], t0: datetime, t1: datetime) -> pd.DataFrame:
        """Return numeric samples in [t0, t1) as (tag_id, ts, value, quality, status)."""
        params = {"ids": ids, "t0": t0, "t1": t1}
        columns = f"SELECT tag_id, ts, value, quality, status FROM {{}} WHERE {q.IN_RANGE}"
        parts = [
            blocks.read(cur, ids, t0, t1).frame(),
            cur.execute(columns.format("recent") + " ORDER BY tag_id, ts", params).df(),
            cur.execute(columns.format("hot") + " ORDER BY seq", params).df(),
        ]
        return _newest_last(parts)

    def _aggregate(self, cur, ids, t0: datetime, t1: datetime, every: timedelta, agg: str):
        """Return (tag_id, ts, value, quality) of `agg` per bucket of `every`."""
        step = every // timedelta(microseconds=1)
        params = {"ids": ids, "t0": t0, "t1": t1}
        aligned = (t0 - _EPOCH) % every == timedelta(0) and (t1 - _EPOCH) % every == timedelta(0)
        with ExitStack() as stack:
            if aligned and step % q.DAY_US == 0:
                # Whole days: the sealed days' statistics answer, not their samples.
                stats = self._day_stats(cur, stack, params)
                sql = q.FROM_STATS.format(step=step, stats=stats)
            elif aligned and step % q.HOUR_US == 0 and self._retired_hours(cur, params):
                stats = self._hour_stats(cur, stack, params)
                sql = q.FROM_STATS.format(step=step, stats=stats)
            else:
                src = stack.enter_context(_source(cur, blocks.read(cur, ids, t0, t1)))
                sql = q.BUCKET_STATS.format(step=step, source=src)
            expr = q.AGG_FROM_STATS[agg]
            return cur.execute(
                f"SELECT tag_id, bucket AS ts, {expr} AS value, quality FROM ({sql})", params
            ).df()

    def _day_stats(self, cur, stack: ExitStack, params: dict) -> str:
        """Return SQL of daily statistics: stored ones, or from samples for days with news."""
        pending = cur.sql(q.PENDING_DAYS, params=params).to_arrow_table()
        if not pending.num_rows:
            return _BLOCK_STATS.format(extra="")
        stack.enter_context(registered(cur, "_pending", pending))
        fresh = self._fresh_stats(cur, sorted(set(pending["tag_id"].to_pylist())), params, q.DAY_US)
        stack.enter_context(registered(cur, "_fresh", fresh))
        others = _BLOCK_STATS.format(extra=" AND (tag_id, day) NOT IN (SELECT * FROM _pending)")
        return (
            f"({others} UNION ALL SELECT * FROM _fresh "
            "WHERE (tag_id, bucket::DATE) IN (SELECT * FROM _pending))"
        )

    def _retired_hours(self, cur, params: dict) -> bool:
        """Tell whether retention left hourly statistics in range in place of samples."""
        return cur.execute(
            "SELECT EXISTS (SELECT 1 FROM rollup_1h WHERE tag_id IN (SELECT unnest($ids)) "
            "AND bucket >= $t0 AND bucket < $t1)",
            params,
        ).fetchall()[0][0]

    def _hour_stats(self, cur, stack: ExitStack, params: dict) -> str:
        """Return SQL of hourly statistics: retired hours' stored ones, the others' from samples."""
        fresh = self._fresh_stats(cur, params["ids"], params, q.HOUR_US)
        stack.enter_context(registered(cur, "_fresh", fresh))
        return (
            f"(SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM rollup_1h "
            "WHERE tag_id IN (SELECT unnest($ids)) AND bucket >= $t0 AND bucket < $t1 "
            "UNION ALL SELECT * FROM _fresh f WHERE NOT EXISTS (SELECT 1 FROM rollup_1h r "
            "WHERE r.tag_id = f.tag_id AND r.bucket = f.bucket))"
        )

    def _fresh_stats(self, cur, ids: list[int], params: dict, step: int):
        """Return bucket statistics of tags computed from their samples, as an Arrow table."""
        own = {**params, "ids": ids}
        with _source(cur, blocks.read(cur, ids, params["t0"], params["t1"])) as src:
            sql = f"SELECT tag_id, bucket, {q.STATS_COLUMNS} FROM ({q.BUCKET_STATS})"
            return cur.sql(sql.format(step=step, source=src), params=own).to_arrow_table()

    def latest(self, tags=None) -> pd.DataFrame:
        """Return the newest sample of each tag."""
        cur = self._cur()
        ids = self._ids_of(tags) if tags is not None else list(self._names)
        far = {"ids": ids, **_ALL_TIME}
        newest = "SELECT tag_id, max(ts) AS ts, arg_max(value, ts) AS value, "
        newest += "arg_max(quality, ts) AS quality FROM {} GROUP BY tag_id"
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
        pending = cur.sql(q.PENDING_DAYS, params=far).to_arrow_table()
        live = "payload IS NOT NULL AND (tag_id, day) {} (SELECT * FROM _pending)"
        with registered(cur, "_pending", pending):
            n = cur.execute(
                f"SELECT coalesce(sum(points), 0) FROM blocks WHERE {live.format('NOT IN')}"
            ).fetchall()[0][0]
            rows = cur.execute(
                f"SELECT tag_id, payload FROM blocks WHERE {live.format('IN')} ORDER BY tag_id, day"
            ).fetchall()
        # Days with unsealed rows: decoded, so a replaced sample counts once.
        mixed = blocks.decode([r[0] for r in rows], [r[1] for r in rows])
        with _source(cur, mixed) as src:
            n += cur.execute(f"SELECT count(*) FROM {src}", far).fetchall()[0][0]
        return int(n + cur.execute("SELECT count(*) FROM text_samples").fetchall()[0][0])
