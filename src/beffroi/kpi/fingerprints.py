"""What the KPIs are computed from: the input tags, and a fingerprint of each hour's inputs.

A closed hour whose fingerprint (sample count, sum of values, tag-hours holding a NaN, alarm
events) differs from the one recorded when it was computed received late data: a store-and-
forward replay, a spool drained after an outage, an import. Counts and sums come from the
historian's hourly aggregates, which the DuckDB back end answers from its rollups.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from beffroi.core.model import Asset
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.kpi.cells import hold_after_s
from beffroi.kpi.config import KpiSite, availability_classes, down_signals
from beffroi.kpi.periods import HOUR, hours
from beffroi.kpi.store import aware, naive

log = logging.getLogger(__name__)

FP_COLUMNS = ["hour", "fp_n", "fp_sum", "fp_nan", "fp_events"]


def input_signals(cfg: KpiSite) -> list[tuple[str, str, float | None]]:
    """Return (class, signal, hold_after override) of every KPI input."""
    kc, out = cfg.kpi, []
    for cls_id, src in kc.energy.items():
        out.append((cls_id, src.signal, src.hold_after_s))
    for cls_id in availability_classes(cfg):
        out += [(cls_id, c.lstrip("!"), None) for c in down_signals(cfg, cls_id)]
    if kc.mobility is not None:
        m = kc.mobility
        out += [(m.traffic_class, m.requests, None), (m.bus_class, m.delay, None)]
        out += [(m.car_park_class, m.occupancy, None)]
        if m.granted:
            out.append((m.traffic_class, m.granted, None))
    for sec in (kc.water, kc.waste):
        if sec is not None:
            out.append((sec.asset_class, sec.signal, None))
    return out


def input_tags(cfg: KpiSite, register: Register, retired: Iterable[Asset] = ()) -> list[str]:
    """Return every tag the KPIs read, sorted (with those of assets retired while running)."""
    wanted: dict[str, set[str]] = {}
    for cls_id, signal, _ in input_signals(cfg):
        wanted.setdefault(cls_id, set()).add(signal)
    assets = [*register.assets.values(), *retired]
    return sorted({a.tag(s) for a in assets for s in wanted.get(a.asset_class, ())})


def read_margin(cfg: KpiSite) -> timedelta:
    """Return how far around a range samples are read: past the longest interpolated silence."""
    holds = [hold_after_s(cfg, c, s, o) for c, s, o in input_signals(cfg)]
    return timedelta(seconds=max([3600.0] + [1.5 * h for h in holds]))


class Fingerprints:
    """Compute and compare per-hour fingerprints of the KPI inputs."""

    def __init__(
        self,
        historian: Historian,
        tags: list[str],
        events: Callable[[datetime, datetime], pd.DataFrame] | None,
        chunk: int = 2000,
    ):
        # Aggregates are small (tags × hours): few big queries beat many small ones.
        self.historian, self.tags, self.events, self.chunk = historian, tags, events, 4 * chunk

    def of(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the fingerprint of each hour of [start, end) (hours naive UTC)."""
        hs = hours(start, end)
        index = pd.DatetimeIndex([naive(h) for h in hs])
        n = pd.Series(0.0, index=index)
        total = pd.Series(0.0, index=index)
        nan = pd.Series(0, index=index)
        for i in range(0, len(self.tags), self.chunk):
            tags = self.tags[i : i + self.chunk]
            for agg in ("count", "sum"):
                df = self.historian.query(tags, start, end, every=HOUR, agg=agg)
                if df.empty:
                    continue
                ts = df["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
                v = df["value"].astype(float)
                if agg == "count":
                    n = n.add(v.groupby(ts.to_numpy()).sum(), fill_value=0)
                else:
                    finite = v.abs() < np.inf  # NaN and infinities are not
                    total = total.add(v[finite].groupby(ts[finite].to_numpy()).sum(), fill_value=0)
                    nan = nan.add((~finite).groupby(ts.to_numpy()).sum(), fill_value=0)
        events = pd.Series(0, index=index)
        if self.events is not None:
            try:
                ev = self.events(start, end)
                ev = ev[ev["event"].isin(["activate", "clear"])]
                if not ev.empty:
                    ts = ev["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("h")
                    events = events.add(ts.value_counts(), fill_value=0)
            except Exception:
                log.warning("alarm journal unreadable for fingerprints", exc_info=True)
        frame = pd.DataFrame(
            {"fp_n": n, "fp_sum": total, "fp_nan": nan, "fp_events": events}
        ).reindex(index, fill_value=0)
        frame = frame.rename_axis("hour").reset_index()
        return frame.astype({"fp_nan": "int64", "fp_events": "int64"})[FP_COLUMNS]

    def changed(self, states: pd.DataFrame, start: datetime, end: datetime) -> list[datetime]:
        """Return the hours of `states` (recorded fingerprints) whose inputs changed since.

        Whole UTC days of closed hours are compared first by sample count, one aggregate row
        per tag and day: a replay adds samples. The hours of a day that differs, and of days
        not wholly closed (today, yesterday), are compared one by one on every fingerprint.
        """
        if states.empty:
            return []
        hours = pd.DatetimeIndex(states["hour"]).as_unit("us")
        st = states.set_index(hours)
        day = hours.floor("D")
        full = st.groupby(day).size() == 24
        full_days = list(full.index[full.to_numpy()])
        suspects = st[~day.isin(full_days)]
        if full_days:
            moved = self._days_moved(st[day.isin(full_days)], full_days)
            suspects = pd.concat([suspects, st[day.isin(moved)]])
        if suspects.empty:
            return []
        out: list[datetime] = []
        for _, group in suspects.groupby(pd.DatetimeIndex(suspects.index).floor("D")):
            t0 = aware(group.index.min())
            now = self.of(t0, aware(group.index.max()) + HOUR).set_index("hour")
            now = now.reindex(group.index)
            same = (
                (now["fp_n"] == group["fp_n"])
                & (now["fp_nan"] == group["fp_nan"])
                & (now["fp_events"] == group["fp_events"])
                & (
                    (now["fp_sum"] - group["fp_sum"]).abs()
                    <= 1e-9 * np.maximum(1, group["fp_sum"].abs())
                )
            )
            out += [aware(h) for h in group.index[~same.to_numpy()]]
        return sorted(out)

    def _days_moved(self, st: pd.DataFrame, days: list) -> list:
        """Return the UTC days whose sample count or alarm events differ from the record."""
        t0, t1 = aware(min(days)), aware(max(days)) + timedelta(days=1)
        n = pd.Series(0.0, index=pd.DatetimeIndex(days).as_unit("us"))
        for i in range(0, len(self.tags), self.chunk):
            df = self.historian.query(self.tags[i : i + self.chunk], t0, t1, timedelta(days=1),
                                      "count")  # fmt: skip
            if not df.empty:
                ts = df["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.as_unit("us")
                n = n.add(df["value"].astype(float).groupby(ts.to_numpy()).sum(), fill_value=0)
        recorded = st.groupby(pd.DatetimeIndex(st.index).floor("D"))[["fp_n", "fp_events"]].sum()
        events = pd.Series(0, index=n.index)
        if self.events is not None:
            try:
                ev = self.events(t0, t1)
                ev = ev[ev["event"].isin(["activate", "clear"])]
                ts = ev["ts"].dt.tz_convert("UTC").dt.tz_localize(None).dt.floor("D")
                events = events.add(ts.dt.as_unit("us").value_counts(), fill_value=0)
            except Exception:
                log.warning("alarm journal unreadable for fingerprints", exc_info=True)
        n, events = (
            n.reindex(recorded.index, fill_value=0),
            events.reindex(recorded.index, fill_value=0),
        )
        moved = (n != recorded["fp_n"]) | (events != recorded["fp_events"])
        return list(recorded.index[moved.to_numpy()])
