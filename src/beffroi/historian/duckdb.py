"""Embedded historian on a DuckDB file: numeric and text samples keyed by a tag dictionary."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from beffroi.core.model import Sample
from beffroi.historian.base import AGGREGATES, COLUMNS, Agg, Historian
from beffroi.historian.downsample import downsample_frame

log = logging.getLogger(__name__)

SCHEMA = """
CREATE SEQUENCE IF NOT EXISTS tag_ids START 1;
CREATE TABLE IF NOT EXISTS tags (
    id INTEGER PRIMARY KEY DEFAULT nextval('tag_ids'),
    name VARCHAR NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS samples (
    tag_id INTEGER NOT NULL,
    ts TIMESTAMP NOT NULL,
    value DOUBLE,
    quality UTINYINT NOT NULL
);
CREATE TABLE IF NOT EXISTS text_samples (
    tag_id INTEGER NOT NULL,
    ts TIMESTAMP NOT NULL,
    value VARCHAR,
    quality UTINYINT NOT NULL
);
"""

_AGG_SQL = {
    "mean": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "first": "arg_min(value, ts)",
    "last": "arg_max(value, ts)",
    "count": "count(value)::DOUBLE",
    "sum": "sum(value)",
}


def _naive_utc(ts: datetime) -> datetime:
    """Return a naive UTC datetime, the storage form (TIMESTAMP without zone)."""
    if ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


class DuckDBHistorian(Historian):
    """Store samples in one DuckDB file; safe to use from the writer and HMI threads."""

    name = "duckdb"

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = duckdb.connect(str(self.path), read_only=read_only)
        if not read_only:
            self._con.execute(SCHEMA)
        self._local = threading.local()
        self._ids_lock = threading.Lock()
        self._ids: dict[str, int] = dict(self._con.execute("SELECT name, id FROM tags").fetchall())
        self._names: dict[int, str] = {v: k for k, v in self._ids.items()}

    def _cur(self) -> duckdb.DuckDBPyConnection:
        """Return this thread's cursor: DuckDB connections are not shared across threads."""
        cur = getattr(self._local, "cur", None)
        if cur is None:
            cur = self._local.cur = self._con.cursor()
        return cur

    def _tag_ids(self, names: set[str]) -> dict[str, int]:
        """Return ids for tag names, creating the missing ones."""
        missing = names.difference(self._ids)
        if missing:
            with self._ids_lock:
                missing = sorted(missing.difference(self._ids))
                if missing:
                    rows = (
                        self._cur()
                        .execute(
                            "INSERT INTO tags (name) SELECT unnest(?) RETURNING name, id", [missing]
                        )
                        .fetchall()
                    )
                    for name, tid in rows:
                        self._ids[name] = tid
                        self._names[tid] = name
        return self._ids

    def write(self, batch: Sequence[Sample]) -> int:
        """Append a batch in one transaction: numbers and booleans as DOUBLE, text apart."""
        if not batch:
            return 0
        ids = self._tag_ids({s.tag for s in batch})
        num_id, num_ts, num_v, num_q = [], [], [], []
        txt_id, txt_ts, txt_v, txt_q = [], [], [], []
        for s in batch:
            v = s.value
            if isinstance(v, str):
                txt_id.append(ids[s.tag])
                txt_ts.append(_naive_utc(s.ts))
                txt_v.append(v)
                txt_q.append(int(s.quality))
            else:
                num_id.append(ids[s.tag])
                num_ts.append(_naive_utc(s.ts))
                num_v.append(float("nan") if v is None else float(v))
                num_q.append(int(s.quality))
        cur = self._cur()
        cur.execute("BEGIN")
        try:
            if num_id:
                numbers = pa.table(
                    {
                        "tag_id": pa.array(num_id, pa.int32()),
                        "ts": pa.array(num_ts, pa.timestamp("us")),
                        "value": pa.array(num_v, pa.float64()),
                        "quality": pa.array(num_q, pa.uint8()),
                    }
                )
                cur.register("_numbers", numbers)
                cur.execute("INSERT INTO samples SELECT * FROM _numbers")
                cur.unregister("_numbers")
            if txt_id:
                texts = pa.table(
                    {
                        "tag_id": pa.array(txt_id, pa.int32()),
                        "ts": pa.array(txt_ts, pa.timestamp("us")),
                        "value": pa.array(txt_v, pa.string()),
                        "quality": pa.array(txt_q, pa.uint8()),
                    }
                )
                cur.register("_texts", texts)
                cur.execute("INSERT INTO text_samples SELECT * FROM _texts")
                cur.unregister("_texts")
            cur.execute("COMMIT")
        except Exception:
            cur.execute("ROLLBACK")
            raise
        return len(batch)

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
        ids = self._ids_of(tags)
        if agg is not None and agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {agg!r}; expected one of {', '.join(AGGREGATES)}")
        if (every is None) != (agg is None):
            raise ValueError("`every` and `agg` go together")
        params = [ids, _naive_utc(start), _naive_utc(end)]
        where = "tag_id IN (SELECT unnest(?)) AND ts >= ? AND ts < ?"
        cur = self._cur()
        if every is not None:
            step = f"{int(every.total_seconds() * 1_000_000)} microseconds"
            sql = (
                f"SELECT tag_id, time_bucket(INTERVAL '{step}', ts, TIMESTAMP '2000-01-03') AS ts, "
                f"{_AGG_SQL[agg]} AS value, max(quality) AS quality FROM samples "
                f"WHERE {where} GROUP BY ALL"
            )
            return self._frame(cur.execute(sql, params).df())
        num = cur.execute(
            f"SELECT tag_id, ts, value, quality FROM samples WHERE {where} ORDER BY tag_id, ts",
            params,
        ).df()
        txt = cur.execute(
            f"SELECT tag_id, ts, value, quality FROM text_samples WHERE {where} "
            "ORDER BY tag_id, ts",
            params,
        ).df()
        if max_points is not None and not num.empty:
            num = downsample_frame(num, max_points)
        if not txt.empty:
            num = pd.concat([num.astype({"value": object}), txt], ignore_index=True)
        return self._frame(num)

    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the newest sample of each tag."""
        cur = self._cur()
        where, params = "", []
        if tags is not None:
            where, params = "WHERE tag_id IN (SELECT unnest(?))", [self._ids_of(tags)]
        parts = []
        for table in ("samples", "text_samples"):
            parts.append(
                cur.execute(
                    f"SELECT tag_id, max(ts) AS ts, arg_max(value, ts) AS value, "
                    f"arg_max(quality, ts) AS quality FROM {table} {where} GROUP BY tag_id",
                    params,
                ).df()
            )
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
        """Return the number of stored samples, numeric and text."""
        cur = self._cur()
        n = cur.execute("SELECT count(*) FROM samples").fetchone()[0]
        return n + cur.execute("SELECT count(*) FROM text_samples").fetchone()[0]

    def close(self) -> None:
        """Checkpoint and close the file."""
        try:
            self._con.execute("CHECKPOINT")
        except duckdb.Error:
            log.debug("checkpoint skipped", exc_info=True)
        self._con.close()


_EMPTY = {
    "ts": "datetime64[us, UTC]",
    "tag": "object",
    "value": "float64",
    "quality": "int64",
}
