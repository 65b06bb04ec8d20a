"""Embedded historian on a DuckDB file: hot ingest, sorted compacted runs, hourly rollups."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from functools import partial
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from beffroi.core.config import Config
from beffroi.core.model import Sample, naive_utc
from beffroi.core.register import Register
from beffroi.core.scheduler import Scheduler
from beffroi.historian import duckdb_sql as q
from beffroi.historian.base import AGGREGATES, COLUMNS, Agg, Historian
from beffroi.historian.downsample import downsample_frame

log = logging.getLogger(__name__)

_EMPTY = {"ts": "datetime64[us, UTC]", "tag": "object", "value": "float64", "quality": "int64"}
_HOUR = timedelta(hours=1)


_naive_utc = naive_utc


class DuckDBHistorian(Historian):
    """Store samples in one DuckDB file; safe to use from the writer and HMI threads.

    Samples land in `hot` as they come. `compact()` moves them into `samples` as a run sorted
    by (tag, time), replacing stored values with the same tag and time, and recomputes the
    hourly rollups of the hours it touched. Queries read both tables, so nothing waits for
    compaction to be visible.
    """

    name = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path), read_only=read_only)
        if not read_only:
            self._con.execute(q.SCHEMA)
        self._local = threading.local()
        # One writer at a time: ingest, compaction and retention serialise on this lock.
        self._write_lock = threading.Lock()
        self._ids: dict[str, int] = dict(self._con.execute("SELECT name, id FROM tags").fetchall())
        self._names: dict[int, str] = {v: k for k, v in self._ids.items()}
        self._seq = self._con.execute("SELECT coalesce(max(seq), 0) FROM hot").fetchone()[0]
        self._watermark = self._meta("watermark")

    @classmethod
    def from_config(cls, cfg: Config, register: Register | None = None) -> DuckDBHistorian:
        """Open the file named by `[historian] path`."""
        return cls(cfg.resolve(cfg.historian.path))

    def schedule(self, scheduler: Scheduler, cfg: Config) -> None:
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
        row = self._con.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
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
            cur.execute("BEGIN")
            try:
                if num:
                    seq0 = self._seq + 1
                    self._seq += len(num)
                    table = pa.table(
                        {
                            "tag_id": pa.array([ids[s.tag] for s in num], pa.int32()),
                            "ts": pa.array([_naive_utc(s.ts) for s in num], pa.timestamp("us")),
                            # NaN (no value: Bad, CommLoss) is stored as NULL, so aggregates
                            # cover the values there are while the bucket's quality says why.
                            "value": pa.array(
                                [np.nan if s.value is None else float(s.value) for s in num],
                                pa.float64(),
                                from_pandas=True,
                            ),
                            "quality": pa.array([int(s.quality) for s in num], pa.uint8()),
                            "seq": pa.array(np.arange(seq0, seq0 + len(num)), pa.int64()),
                        }
                    )
                    cur.register("_numbers", table)
                    cur.execute("INSERT INTO hot SELECT * FROM _numbers")
                    cur.unregister("_numbers")
                if txt:
                    last = {(ids[s.tag], _naive_utc(s.ts)): s for s in txt}
                    rows = [(k[0], k[1], s.value, int(s.quality)) for k, s in last.items()]
                    cur.executemany("INSERT OR REPLACE INTO text_samples VALUES (?, ?, ?, ?)", rows)
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
        return len(batch)

    def write_columns(
        self,
        names: Sequence[str],
        tag_index: np.ndarray,
        ts_us: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray | None = None,
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
            seq0 = self._seq + 1
            self._seq += n
            table = pa.table(
                {
                    "tag_id": pa.array(id_of[np.asarray(tag_index)], pa.int32()),
                    "ts": pa.array(np.asarray(ts_us, dtype="datetime64[us]"), pa.timestamp("us")),
                    "value": pa.array(
                        np.asarray(values, dtype=np.float64), pa.float64(), from_pandas=True
                    ),
                    "quality": pa.array(
                        np.zeros(n, np.uint8) if quality is None else np.asarray(quality, np.uint8),
                        pa.uint8(),
                    ),
                    "seq": pa.array(np.arange(seq0, seq0 + n, dtype=np.int64), pa.int64()),
                }
            )
            cur = self._cur()
            cur.register("_columns", table)
            try:
                cur.execute("INSERT INTO hot SELECT * FROM _columns")
            finally:
                cur.unregister("_columns")
        return n

    def compact(self) -> int:
        """Move hot samples into a sorted run and refresh the rollups of the hours touched."""
        with self._write_lock:
            cur = self._cur()
            upto = self._seq
            if cur.execute("SELECT count(*) FROM hot WHERE seq <= ?", [upto]).fetchone()[0] == 0:
                return 0
            cur.execute("BEGIN")
            try:
                cur.execute(q.STAGE, [upto])
                if self._watermark is not None:
                    cur.execute(q.DELETE_REPLACED, [self._watermark])
                cur.execute("INSERT INTO samples SELECT * FROM stage")
                cur.execute(q.AFFECTED_HOURS)
                cur.execute(q.RECOMPUTE_ROLLUP)
                cur.execute("DELETE FROM hot WHERE seq <= ?", [upto])
                n, newest = cur.execute("SELECT count(*), max(ts) FROM stage").fetchone()
                if self._watermark is None or newest > self._watermark:
                    self._watermark = newest
                    cur.execute(
                        "INSERT OR REPLACE INTO meta VALUES ('watermark', ?)",
                        [newest.isoformat()],
                    )
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise
            cur.execute("DROP TABLE IF EXISTS stage; DROP TABLE IF EXISTS affected")
        log.debug("compacted %d samples", n)
        return n

    def apply_retention(
        self,
        rules: Mapping[str, float],
        default_days: float | None = None,
        now: datetime | None = None,
    ) -> int:
        """Delete raw samples past each tag's horizon (first matching rule, else the default).

        Hourly rollups are kept, so daily figures outlive the raw data they came from.
        """
        now = now or datetime.now(UTC)
        by_days: dict[float, list[int]] = {}
        for name, tid in self._ids.items():
            days = next((d for p, d in rules.items() if _matches(name, p)), default_days)
            if days is not None:
                by_days.setdefault(days, []).append(tid)
        deleted = 0
        with self._write_lock:
            cur = self._cur()
            for days, ids in by_days.items():
                cutoff = _naive_utc(now - timedelta(days=days))
                for table in ("samples", "hot", "text_samples"):
                    deleted += cur.execute(
                        f"DELETE FROM {table} WHERE tag_id IN (SELECT unnest(?)) AND ts < ?",
                        [ids, cutoff],
                    ).fetchone()[0]
        if deleted:
            log.info("retention removed %d raw samples", deleted)
        return deleted

    # -- reads -------------------------------------------------------------------------------

    def _ids_of(self, tags: Sequence[str]) -> list[int]:
        return [self._ids[t] for t in tags if t in self._ids]

    def _frame(self, df: pd.DataFrame) -> pd.DataFrame:
        """Turn a (tag_id, ts, value, quality) result into the contract's columns."""
        if df.empty:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in _EMPTY.items()})
        df["tag"] = df["tag_id"].map(self._names)
        df["ts"] = pd.to_datetime(df["ts"]).dt.tz_localize(UTC)
        df["quality"] = df["quality"].astype("int64")
        return df[COLUMNS].sort_values(["tag", "ts"], kind="stable").reset_index(drop=True)

    def _raw_source(self) -> str:
        """SQL of every numeric sample visible now, last write winning for a tag and time.

        Compacted runs hold no duplicates, so only the few hot rows need sorting out: the
        newest hot write per tag and time, and the run rows it replaces left out.
        """
        in_range = "tag_id IN (SELECT unnest($ids)) AND ts >= $t0 AND ts < $t1"
        newest_hot = (
            f"SELECT tag_id, ts, value, quality FROM hot WHERE {in_range} "
            "QUALIFY row_number() OVER (PARTITION BY tag_id, ts ORDER BY seq DESC) = 1"
        )
        return (
            f"(WITH h AS ({newest_hot}) "
            f"SELECT tag_id, ts, value, quality FROM samples s WHERE {in_range} "
            "AND NOT EXISTS (SELECT 1 FROM h WHERE h.tag_id = s.tag_id AND h.ts = s.ts) "
            "UNION ALL SELECT * FROM h)"
        )

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
        if agg is not None and agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {agg!r}; expected one of {', '.join(AGGREGATES)}")
        if (every is None) != (agg is None):
            raise ValueError("`every` and `agg` go together")
        ids = self._ids_of(tags)
        params = {"ids": ids, "t0": _naive_utc(start), "t1": _naive_utc(end)}
        cur = self._cur()
        if every is not None:
            return self._frame(self._aggregate(cur, ids, start, end, every, agg, params))
        num = cur.execute(f"SELECT * FROM {self._raw_source()} ORDER BY tag_id, ts", params).df()
        txt = cur.execute(
            "SELECT tag_id, ts, value, quality FROM text_samples WHERE tag_id IN "
            "(SELECT unnest($ids)) AND ts >= $t0 AND ts < $t1 ORDER BY tag_id, ts",
            params,
        ).df()
        if max_points is not None and not num.empty:
            num = downsample_frame(num, max_points)
        if not txt.empty:
            num = pd.concat([num.astype({"value": object}), txt], ignore_index=True)
        return self._frame(num)

    def _aggregate(self, cur, ids, start, end, every, agg, params) -> pd.DataFrame:
        step = int(every.total_seconds() * 1_000_000)
        if step <= 0:
            raise ValueError("`every` must be positive")
        expr = q.AGG_FROM_STATS[agg]
        if step % q.HOUR_US == 0 and self._rollups_cover(start, end, every):
            # Whole hours, aligned: hourly rollups give the same answer from ~60 times fewer rows,
            # and still answer after raw retention has removed the samples.
            stats = q.FROM_ROLLUP.format(step=step)
            sql = f"SELECT tag_id, bucket AS ts, {expr} AS value, quality FROM ({stats})"
            return cur.execute(sql, [ids, params["t0"], params["t1"]]).df()
        stats = q.BUCKET_STATS.format(step=step, source=self._raw_source())
        sql = f"SELECT tag_id, bucket AS ts, {expr} AS value, quality FROM ({stats})"
        return cur.execute(sql, params).df()

    def _rollups_cover(self, start: datetime, end: datetime, every: timedelta) -> bool:
        """Tell whether [start, end) is aligned on `every` and entirely compacted."""
        t0, t1 = _naive_utc(start), _naive_utc(end)
        epoch = datetime(1970, 1, 1)
        aligned = (t0 - epoch) % every == timedelta(0) and (t1 - epoch) % every == timedelta(0)
        wm = self._watermark
        return aligned and wm is not None and t1 <= wm.replace(minute=0, second=0, microsecond=0)

    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the newest sample of each tag."""
        cur = self._cur()
        ids = self._ids_of(tags) if tags is not None else list(self._names)
        far = {"ids": ids, "t0": datetime(1, 1, 1), "t1": datetime(9999, 1, 1)}
        parts = [
            cur.execute(
                f"SELECT tag_id, max(ts) AS ts, arg_max(value, ts) AS value, "
                f"arg_max(quality, ts) AS quality FROM {src} GROUP BY tag_id",
                far,
            ).df()
            for src in (
                self._raw_source(),
                "(SELECT * FROM text_samples WHERE tag_id IN (SELECT unnest($ids)) "
                "AND ts >= $t0 AND ts < $t1)",
            )
        ]
        frames = [p for p in parts if not p.empty]
        if not frames:
            return self._frame(parts[0])
        if len(frames) > 1:
            frames = [frames[0].astype({"value": object}), frames[1]]
        return self._frame(pd.concat(frames, ignore_index=True))

    def tags(self) -> list[str]:
        """Return every known tag name, sorted."""
        return sorted(self._ids)

    def count(self) -> int:
        """Return the number of stored samples (a replaced value counts once)."""
        cur = self._cur()
        far = {"ids": list(self._names), "t0": datetime(1, 1, 1), "t1": datetime(9999, 1, 1)}
        n = cur.execute(f"SELECT count(*) FROM {self._raw_source()}", far).fetchone()[0]
        return n + cur.execute("SELECT count(*) FROM text_samples").fetchone()[0]

    def close(self) -> None:
        """Compact what is pending, checkpoint and close the file."""
        if not self.read_only:
            try:
                self.compact()
                self._con.execute("CHECKPOINT")
            except duckdb.Error:
                log.warning("final compaction skipped", exc_info=True)
        self._con.close()


def _matches(tag: str, pattern: str) -> bool:
    """Match a tag against a retention pattern: `*/BUS-*/lat` style, `*` within one level."""
    parts, pats = tag.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatchcase(p, s) for p, s in zip(parts, pats, strict=True)
    )
