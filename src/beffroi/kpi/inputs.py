"""Read KPI inputs from the historian as columns, with the value in force before the range.

Equipment reports by exception, so a state set days ago still holds today. The historian
contract has no "value before t"; the last value comes from `last` aggregates over hourly, then
daily buckets (fast from rollups), and holes (CommLoss) crossing the range's edges are read
wider, only for the tags in them, so they can be filled between the Good values around them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from beffroi.core.seams import Historian
from beffroi.kpi.periods import HOUR, floor_hour
from beffroi.kpi.timeline import COMM_LOSS, GOOD, Samples

log = logging.getLogger(__name__)

DAY = timedelta(days=1)


def _epoch(ts: datetime) -> float:
    return ts.timestamp()


# Samples as columns: tag index, epoch seconds, value, quality.
Columns = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _columns(df: pd.DataFrame, index: dict[str, int]) -> Columns:
    """Turn a contract frame into (tag index, epoch s, value, quality) arrays."""
    if df.empty:
        return np.empty(0, np.int64), np.empty(0), np.empty(0), np.empty(0, np.int8)
    codes, uniques = pd.factorize(df["tag"], sort=False)
    lookup = np.array([index.get(u, -1) for u in uniques], np.int64)
    tag = lookup[codes]
    t = df["ts"].dt.as_unit("us").astype("int64").to_numpy() / 1e6
    v = pd.to_numeric(df["value"], errors="coerce").to_numpy(float)
    q = df["quality"].to_numpy(np.int8)
    ok = tag >= 0
    return tag[ok], t[ok], v[ok], q[ok]


class Reader:
    """Read samples of tags around a range, in chunks of tags, with values carried in."""

    def __init__(
        self,
        historian: Historian,
        *,
        now: datetime,
        carry_days: int = 31,
        fill_max_s: float = 72 * 3600.0,
        chunk: int = 2000,
        prefetch: Sequence[str] = (),
    ):
        self.historian = historian
        self.now = now
        self.carry_days = carry_days
        self.fill_max = timedelta(seconds=fill_max_s)
        self.chunk = chunk
        # Tags whose carried values are found together, at the first read that needs some:
        # a few large aggregate queries instead of one per signal and chunk of assets.
        self.prefetch = list(prefetch)
        self._prefetched = set(self.prefetch)
        self._carried: dict[datetime, dict[str, tuple[float, float]]] = {}

    def read(
        self, tags: Sequence[str], start: datetime, end: datetime, margin: timedelta
    ) -> Samples:
        """Return samples of tags for [start, end) and what frames it, sorted by tag then time."""
        index = {t: i for i, t in enumerate(tags)}
        cols: list[Columns] = []
        for i in range(0, len(tags), self.chunk):
            parts = self._read_chunk(list(tags[i : i + self.chunk]), index, start, end, margin)
            tag_, t_, v_, q_ = (np.concatenate(c) for c in zip(*parts, strict=True))
            cols.append((tag_, t_, v_, q_))
        if not cols:
            return Samples(*_columns(pd.DataFrame(), index), len(tags))
        tag, t, v, q = (np.concatenate(c) for c in zip(*cols, strict=True))
        same = tag[1:] == tag[:-1]
        if not np.all((tag[1:] > tag[:-1]) | (same & (t[1:] >= t[:-1]))):
            order = np.lexsort((t, tag))  # stable: raw samples stay before added ones
            tag, t, v, q = tag[order], t[order], v[order], q[order]
            same = tag[1:] == tag[:-1]
        # The same time twice (a carried value meeting a raw one): keep the first, raw one.
        keep = np.ones(len(t), bool)
        keep[1:] = ~(same & (t[1:] == t[:-1]))
        return Samples(tag[keep], t[keep], v[keep], q[keep], len(tags))

    def _query(self, tags: list[str], t0: datetime, t1: datetime, index) -> tuple[np.ndarray, ...]:
        if not tags or t0 >= t1:
            return _columns(pd.DataFrame(), index)
        return _columns(self.historian.query(tags, t0, t1), index)

    def _read_chunk(self, tags, index, start, end, margin) -> list[tuple[np.ndarray, ...]]:
        a = floor_hour(start - margin)
        b = min(end + margin, self.now)
        main = self._query(tags, a, b, index)
        out = [main]
        tag, t, v, q = main
        s0 = _epoch(start)
        good = (q == GOOD) & np.isfinite(v)
        # Which tags have a value in force at `start`, and is it Good?
        before = t < s0
        last_before: dict[int, bool] = {}
        for k, g in zip(tag[before].tolist(), good[before].tolist(), strict=True):
            last_before[k] = g  # sorted by time within a tag: the last one wins
        need_carry = [n for n in tags if index[n] not in last_before]
        carried = self._carry(need_carry, a, index)
        for k, g in zip(carried[0].tolist(), (carried[3] == GOOD).tolist(), strict=True):
            last_before[k] = g
        # Holes open at `start`: read further back for the Good value before them.
        in_hole = [n for n in tags if last_before.get(index[n]) is False]
        if in_hole:
            wide = self._query(in_hole, start - self.fill_max, a, index)
            # Real samples replace a carried one, which only stands for its bucket's last value.
            carried_ok = ~np.isin(carried[0], np.unique(wide[0]))
            carried = tuple(c[carried_ok] for c in carried)
            out.append(wide)
        out.append(carried)
        # Holes still open at the end of the window: read on for the Good value after them.
        if b < self.now and len(t):
            last = np.ones(len(tag), bool)
            last[:-1] = tag[1:] != tag[:-1]
            name_of = {index[n]: n for n in tags}
            open_end = [
                name_of[k]
                for k, g in zip(tag[last].tolist(), good[last].tolist(), strict=True)
                if not g
            ]
            if open_end:
                out.append(self._query(open_end, b, min(end + self.fill_max, self.now), index))
        return out

    def _carry(self, tags: list[str], before: datetime, index) -> tuple[np.ndarray, ...]:
        """Return each tag's last value before `before` (an hour boundary) as a synthetic sample.

        The sample is placed at the start of the bucket it was found in: it is older than the
        read margin, so whatever follows it is a held value, not a line.
        """
        empty = _columns(pd.DataFrame(), index)
        if not tags:
            return empty
        if self._prefetched.issuperset(tags):
            if before not in self._carried:
                every_tag: dict[str, tuple[float, float]] = {}
                for i in range(0, len(self.prefetch), 4 * self.chunk):
                    every_tag.update(
                        self._last_before(self.prefetch[i : i + 4 * self.chunk], before)
                    )
                self._carried[before] = every_tag
            known = self._carried[before]
            found = {n: known[n] for n in tags if n in known}
        else:
            found = self._last_before(tags, before)
        if not found:
            return empty
        names = list(found)
        tag = np.array([index[n] for n in names], np.int64)
        t = np.array([found[n][0] for n in names])
        v = np.array([found[n][1] for n in names])
        # A CommLoss or Bad sample is stored without a value: NaN says the last one was not Good.
        q = np.where(np.isfinite(v), GOOD, COMM_LOSS).astype(np.int8)
        log.debug("carried %d values in from before %s", len(names), before.isoformat())
        return tag, t, v, q

    def _last_before(self, tags: list[str], before: datetime) -> dict[str, tuple[float, float]]:
        """Return (bucket start, last value) of tags before `before`, for those with one."""
        day0 = before.replace(hour=0)
        found: dict[str, tuple[float, float]] = {}
        ranges = [(day0, before, HOUR), (day0 - self.carry_days * DAY, day0, DAY)]
        for t0, t1, every in ranges:
            missing = [n for n in tags if n not in found]
            if not missing or t0 >= t1:
                continue
            df = self.historian.query(missing, t0, t1, every=every, agg="last")
            if df.empty:
                continue
            newest = df.sort_values("ts").groupby("tag", sort=False).tail(1)
            for name, ts, value in zip(newest["tag"], newest["ts"], newest["value"], strict=True):
                found[name] = (ts.timestamp(), float(value))
        return found


def epoch_grid(start: datetime, end: datetime) -> np.ndarray:
    """Return hour boundaries from start to end (both on UTC hours) as epoch seconds."""
    n = int((end - start) / HOUR)
    return _epoch(start) + np.arange(n + 1) * 3600.0
