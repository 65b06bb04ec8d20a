"""Embedded historian on a DuckDB file: hot ingest, compacted runs, days sealed into blocks."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from beffroi.core.model import Sample, naive_utc
from beffroi.core.register import Register
from beffroi.core.scheduler import Scheduler
from beffroi.core.seams import Agg
from beffroi.historian import retention
from beffroi.historian.base import COLUMNS, RAW_COLUMNS, HistorianBackend, empty_result
from beffroi.historian.config import HistorianSite
from beffroi.historian.downsample import downsample_frame
from beffroi.historian.duckdb import sealed as blocks
from beffroi.historian.duckdb import sql as q
from beffroi.historian.duckdb.layout import LayoutError, open_layout
from beffroi.historian.duckdb.reads import Reads, snapshot

log = logging.getLogger(__name__)

__all__ = ["ROLLUP_DAYS", "SEAL_AFTER", "DuckDBHistorian", "LayoutError"]

# A UTC day is sealed once the newest data is this far past its end: samples of buffering
# collectors arriving late land in compacted runs rather than in a block to rewrite.
SEAL_AFTER = timedelta(hours=1)
# Sealed days keep their hourly rollups this long: the KPI jobs check today and yesterday (local
# days, which start up to two hours before UTC ones in Europe) hour by hour, all day long.
ROLLUP_DAYS = timedelta(days=2)

_naive_utc = naive_utc


class DuckDBHistorian(Reads, HistorianBackend):
    """Store samples in one DuckDB file; safe to use from the writer and HMI threads.

    Samples land in `hot` as they come. `compact()` moves them into `recent` as a run sorted
    by (tag, time), replacing stored values with the same tag and time, then seals the UTC days
    the data has moved past (SEAL_AFTER) into `blocks`: one row per tag and day, its samples
    encoded by `block_codec.py` beside the day's statistics. Queries read all three, newest write
    first, so nothing waits for compaction to be visible.
    """

    name = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path), read_only=read_only)
        # Appends go to the log until the checkpoint that follows each compaction: written to the
        # file as they come, the hot rows (deleted by the next compaction) and the runs (before
        # compression) would leave that much free space behind in it.
        self._con.execute("SET enable_optimistic_write = false")
        try:
            open_layout(self._con, self.path, read_only)
        except BaseException:
            self._con.close()
            raise
        self._local = threading.local()
        # One writer at a time: ingest, compaction and retention serialise on this lock.
        self._write_lock = threading.Lock()
        self._ids: dict[str, int] = dict(self._con.execute("SELECT name, id FROM tags").fetchall())
        self._names: dict[int, str] = {v: k for k, v in self._ids.items()}
        self._seq = self._con.execute("SELECT coalesce(max(seq), 0) FROM hot").fetchall()[0][0]
        # Tags with text values: the others' reads skip the text table.
        text = self._con.execute("SELECT DISTINCT tag_id FROM text_samples").fetchall()
        self._text_ids: set[int] = {r[0] for r in text}
        self._watermark = self._meta("watermark")

    @classmethod
    def from_config(cls, cfg: HistorianSite, register: Register | None = None) -> DuckDBHistorian:
        """Open the file named by `[historian] path`."""
        return cls(cfg.resolve(cfg.historian.path))

    def schedule(self, scheduler: Scheduler, cfg: HistorianSite) -> None:
        """Register compaction and retention as scheduled jobs."""
        scheduler.every(cfg.historian.compact_interval_s, self.compact, "historian-compact")
        retention = cfg.historian.retention
        if retention.rules or retention.raw_days is not None:
            # At night, when the city's load is lowest.
            job = partial(self.apply_retention, retention.rules, retention.raw_days)
            scheduler.cron(job, "historian-retention", hour=3, minute=17)

    # -- plumbing ----------------------------------------------------------------------------

    def _cur(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor: DuckDB connections are not shared across threads."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def _meta(self, key: str) -> datetime | None:
        row = next(
            iter(self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchall()), None
        )
        return datetime.fromisoformat(row[0]) if row else None

    def _tag_ids(self, names: set[str]) -> dict[str, int]:
        """Return ids for tag names, creating the missing ones."""
        missing = sorted(names.difference(self._ids))
        if missing:
            rows = (
                self._cur()
                .execute("INSERT INTO tags (name) SELECT unnest(?) RETURNING name, id", [missing])
                .fetchall()
            )
            for name, tid in rows:
                self._ids[name] = tid
                self._names[tid] = name
        return self._ids

    def _transaction(self, cur: duckdb.DuckDBPyConnection, work: Callable[[], None]) -> None:
        cur.execute("BEGIN")
        try:
            work()
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    # -- writes ------------------------------------------------------------------------------

    def write(self, batch: Sequence[Sample]) -> int:
        """Append a batch in one transaction: numbers and booleans as DOUBLE, text apart."""
        if not batch:
            return 0
        with self._write_lock:
            ids = self._tag_ids({s.tag for s in batch})
            num = [s for s in batch if not isinstance(s.value, str)]
            txt = [s for s in batch if isinstance(s.value, str)]
            cur = self._cur()

            def work() -> None:
                if num:
                    self._append(
                        cur,
                        np.array([ids[s.tag] for s in num], np.int32),
                        pa.array([_naive_utc(s.ts) for s in num], pa.timestamp("us")),
                        # NaN (no value: Bad, CommLoss) is stored as NULL, so aggregates
                        # cover the values there are while the bucket's quality says why.
                        np.array([np.nan if s.value is None else float(s.value) for s in num]),
                        np.array([int(s.quality) for s in num], np.uint8),
                        np.array([s.status for s in num], np.uint32),
                    )
                if txt:
                    self._text_ids.update(ids[s.tag] for s in txt)
                    last = {(ids[s.tag], _naive_utc(s.ts)): s for s in txt}
                    # One Arrow table, not executemany: about 10 ms per row that way.
                    table = pa.table(
                        {
                            "tag_id": pa.array([k[0] for k in last], pa.int32()),
                            "ts": pa.array([k[1] for k in last], pa.timestamp("us")),
                            "value": pa.array([s.value for s in last.values()], pa.string()),
                            "quality": pa.array(
                                [int(s.quality) for s in last.values()], pa.uint8()
                            ),
                            "status": pa.array([s.status for s in last.values()], pa.uint32()),
                        }
                    )
                    with blocks.registered(cur, "_incoming_text", table):
                        cur.execute(
                            "INSERT OR REPLACE INTO text_samples"
                            " (tag_id, ts, value, quality, status)"
                            " SELECT tag_id, ts, value, quality, status FROM _incoming_text"
                        )

            self._transaction(cur, work)
        return len(batch)

    def write_columns(
        self,
        names: Sequence[str],
        tag_index: np.ndarray,
        ts_us: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray | None = None,
        status: np.ndarray | None = None,
    ) -> int:
        """Append numeric samples given as columns: `names[tag_index[i]]` at `ts_us[i]` (UTC µs).

        The bulk path for imports and replays: no per-sample Python objects.
        """
        n = len(ts_us)
        if n == 0:
            return 0
        with self._write_lock:
            ids = self._tag_ids(set(names))
            id_of = np.array([ids[t] for t in names], dtype=np.int32)
            self._append(
                self._cur(),
                id_of[np.asarray(tag_index)],
                pa.array(np.asarray(ts_us, dtype="datetime64[us]"), pa.timestamp("us")),
                np.asarray(values, np.float64),
                np.zeros(n, np.uint8) if quality is None else np.asarray(quality, np.uint8),
                np.zeros(n, np.uint32) if status is None else np.asarray(status, np.uint32),
            )
        return n

    def _append(
        self,
        cur: duckdb.DuckDBPyConnection,
        tag_id: np.ndarray,
        ts: pa.Array,
        value: np.ndarray,
        quality: np.ndarray,
        status: np.ndarray,
    ) -> None:
        """Insert columns into `hot`, numbering them after the last write."""
        seq0 = self._seq + 1
        self._seq += len(tag_id)
        table = pa.table(
            {
                "tag_id": pa.array(tag_id, pa.int32()),
                "ts": ts,
                "value": pa.array(value, pa.float64(), from_pandas=True),
                "quality": pa.array(quality, pa.uint8()),
                "status": pa.array(status, pa.uint32()),
                "seq": pa.array(np.arange(seq0, seq0 + len(tag_id), dtype=np.int64)),
            }
        )
        with blocks.registered(cur, "_incoming", table):
            cur.execute(
                "INSERT INTO hot (tag_id, ts, value, quality, status, seq) "
                "SELECT tag_id, ts, value, quality, status, seq FROM _incoming"
            )

    def compact(self) -> int:
        """Move hot samples into sorted runs and seal the days the data has moved past.

        One transaction: late samples of sealed days go into their blocks before any read can
        see them among the compacted runs.
        """
        with self._write_lock:
            cur = self._cur()
            upto = self._seq
            n = cur.execute("SELECT count(*) FROM hot WHERE seq <= ?", [upto]).fetchall()[0][0]
            watermark, sealed = self._watermark, 0

            def work() -> None:
                nonlocal watermark, sealed
                if n:
                    watermark = self._compact(cur, upto)
                horizon = seal_horizon(watermark)
                if horizon is not None:
                    before = cur.execute(f"SELECT {q.SEALED_BEFORE}").fetchall()[0][0]
                    sealed = blocks.seal(cur, max(horizon, before))
                    blocks.prune_rollups(cur, horizon - ROLLUP_DAYS)

            self._transaction(cur, work)
            self._watermark = watermark
            if n:
                cur.execute("DROP TABLE IF EXISTS stage; DROP TABLE IF EXISTS affected")
            if n or sealed:
                self._checkpoint(cur)
        log.debug("compacted %d samples, sealed %d", n, sealed)
        return n

    def _checkpoint(self, cur: duckdb.DuckDBPyConnection) -> None:
        """Write changes into the file now, so that the blocks emptied get reused.

        Bulk inserts go straight to the file and DuckDB checkpoints by WAL size, so without
        this the file grows by every emptied `hot` and `recent` row group until it does. DuckDB
        skips a checkpoint while any cursor has an unfinished result, which is why reads here
        fetch every row (`fetchall`, never `fetchone`).
        """
        try:
            cur.execute("CHECKPOINT")
        except duckdb.Error:
            log.debug("checkpoint postponed", exc_info=True)

    def _compact(self, cur: duckdb.DuckDBPyConnection, upto: int) -> datetime:
        """Move hot rows up to `upto` into a run and refresh their hours' rollups.

        Return the new watermark, the newest time compacted.
        """
        cur.execute(q.STAGE, [upto])
        if self._watermark is not None:
            cur.execute(q.DELETE_REPLACED, [self._watermark])
        cur.execute(
            "INSERT INTO recent (tag_id, ts, value, quality, status) "
            "SELECT tag_id, ts, value, quality, status FROM stage"
        )
        newest = cur.execute("SELECT max(ts) FROM stage").fetchall()[0][0]
        watermark = newest if self._watermark is None else max(newest, self._watermark)
        cur.execute("INSERT OR REPLACE INTO meta VALUES ('watermark', ?)", [watermark.isoformat()])
        cur.execute(q.AFFECTED_HOURS)
        cur.execute(q.RECOMPUTE_ROLLUP)
        cur.execute("DELETE FROM hot WHERE seq <= ?", [upto])
        return watermark

    def apply_retention(
        self,
        rules: Mapping[str, float],
        default_days: float | None = None,
        now: datetime | None = None,
    ) -> int:
        """Delete raw samples of the UTC days past each tag's horizon (first matching rule).

        Whole days go, once entirely past the horizon. Their hourly and daily statistics stay,
        so aggregates over whole hours outlive the raw data they came from.
        """
        now = now or datetime.now(UTC)
        by_days = retention.ids_by_days(self._ids, rules, default_days)
        self.compact()
        deleted = 0
        with self._write_lock:
            cur = self._cur()
            for days, ids in by_days.items():
                cut = retention.first_day_kept(now, days)

                def work(ids: list[int] = ids, cut: datetime = cut) -> None:
                    nonlocal deleted
                    deleted += blocks.remove_before(cur, ids, cut)

                self._transaction(cur, work)
        if deleted:
            log.info("retention removed %d raw samples", deleted)
        return deleted

    # -- reads -------------------------------------------------------------------------------

    def _ids_of(self, tags: Sequence[str]) -> list[int]:
        return [self._ids[t] for t in tags if t in self._ids]

    def _frame(self, df: pd.DataFrame, columns: list[str] = COLUMNS) -> pd.DataFrame:
        """Turn a (tag_id, ts, value, quality[, status]) result into the contract's columns."""
        if df.empty:
            return empty_result(columns)
        df["tag"] = df["tag_id"].map(self._names)
        df["ts"] = pd.to_datetime(df["ts"]).dt.tz_localize(UTC)
        df["quality"] = df["quality"].astype("int64")
        if "status" in columns:
            df["status"] = df["status"].astype("int64")
        return df[columns].sort_values(["tag", "ts"], kind="stable").reset_index(drop=True)

    def query(
        self,
        tags: Sequence[str],
        start: datetime,
        end: datetime,
        every: timedelta | None = None,
        agg: Agg | None = None,
        max_points: int | None = None,
    ) -> pd.DataFrame:
        """Return raw, aggregated (`every` + `agg`) or downsampled (`max_points`) values."""
        self.check_query(every, agg, max_points)
        ids = self._ids_of(tags)
        t0, t1 = _naive_utc(start), _naive_utc(end)
        cur = self._cur()
        text_ids = self._text_ids.intersection(ids)
        with snapshot(cur):
            if every is not None:
                assert agg is not None  # check_query: `every` and `agg` go together
                return self._frame(self._aggregate(cur, ids, t0, t1, every, agg))
            num = self._raw(cur, ids, t0, t1)
            txt = None
            if text_ids:
                txt = cur.execute(
                    "SELECT tag_id, ts, value, quality, status FROM text_samples WHERE tag_id IN "
                    "(SELECT unnest(?)) AND ts >= ? AND ts < ? ORDER BY tag_id, ts",
                    [sorted(text_ids), t0, t1],
                ).df()
        if max_points is not None and not num.empty:
            num = downsample_frame(num, max_points)
        if txt is not None and not txt.empty:
            num = pd.concat([num.astype({"value": object}), txt], ignore_index=True)
        return self._frame(num, RAW_COLUMNS)

    def tags(self) -> list[str]:
        """Return every known tag name, sorted."""
        return sorted(self._ids)

    def close(self) -> None:
        """Compact what is pending, checkpoint and close the file."""
        if not self.read_only:
            try:
                self.compact()
                self._con.execute("CHECKPOINT")
            except duckdb.Error:
                log.warning("final compaction skipped", exc_info=True)
        self._con.close()


def seal_horizon(watermark: datetime | None) -> datetime | None:
    """Return the UTC midnight before which days are sealed (None before any data).

    The clock bounds it, so one sample stamped in the future does not seal today.
    """
    if watermark is None:
        return None
    edge = min(watermark, _naive_utc(datetime.now(UTC))) - SEAL_AFTER
    return edge.replace(hour=0, minute=0, second=0, microsecond=0)
