"""Availability per class and commune from fault states and CommLoss; MTTR and MTBF from alarms.

An asset is in service while every down condition of its class is false with Good data; down
while one is true; in CommLoss while one of its condition tags is; unknown otherwise (Bad data,
nothing received yet). Failures and repairs are the activations and clears, in the alarm
journal, of alarms on those condition tags.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from beffroi.kpi.cells import CellContext
from beffroi.kpi.config import availability_classes, down_signals
from beffroi.kpi.timeline import COMM_LOSS, GOOD, Grid, Samples, events_cells, split

log = logging.getLogger(__name__)

UP, DOWN, COMM, UNKNOWN = 0, 1, 2, 3


def merged_states(
    per_signal: list[Samples], inverted: list[bool], grid: Grid
) -> dict[int, np.ndarray]:
    """Return seconds per (asset, hour) in each state, from several condition tags per asset."""
    n_assets = per_signal[0].n_tags
    tag = np.concatenate([s.tag for s in per_signal])
    t = np.concatenate([s.t for s in per_signal])
    v = np.concatenate([s.v for s in per_signal])
    q = np.concatenate([s.q for s in per_signal])
    col = np.concatenate([np.full(len(s.t), c) for c, s in enumerate(per_signal)])
    order = np.lexsort((col, t, tag))
    tag, t, v, q, col = tag[order], t[order], v[order], q[order], col[order]
    n = len(t)
    idx = np.arange(n)
    first = np.ones(n, bool)
    first[1:] = tag[1:] != tag[:-1]
    start = np.maximum.accumulate(np.where(first, idx, 0)) if n else idx
    missing = np.zeros(n, bool)
    comm = np.zeros(n, bool)
    bad = np.zeros(n, bool)
    down = np.zeros(n, bool)
    for c, inv in enumerate(inverted):
        # The latest sample of condition c at each row of the merged timeline.
        last = np.maximum.accumulate(np.where(col == c, idx, -1)) if n else idx
        has = (last >= start) & (last >= 0)
        li = np.where(has, last, 0)
        vc, qc = v[li], q[li]
        good = has & (qc == GOOD) & np.isfinite(vc)
        missing |= ~has
        comm |= has & (qc == COMM_LOSS)
        bad |= has & ~good & (qc != COMM_LOSS)
        down |= good & ((vc > 0.5) != inv)
    state = np.where(comm, COMM, np.where(missing | bad, UNKNOWN, np.where(down, DOWN, UP)))
    has_next = np.zeros(n, bool)
    has_next[:-1] = tag[1:] == tag[:-1]
    e = np.empty(n)
    e[:-1] = t[1:]
    e[~has_next] = np.maximum(grid.horizon, t[~has_next])
    code = state.astype(float)
    parts = split(tag, t, e, code, code, np.zeros(n), grid.edges)
    dur = parts.duration
    return {
        s: parts.cells(np.where(parts.va == s, dur, 0.0), n_assets, grid.n)
        for s in (UP, DOWN, COMM)
    }


class AvailabilityCalc:
    """Fill up_s, known_s, failures, repairs and repair_s cells per class."""

    def __init__(self, ctx: CellContext):
        self.ctx = ctx
        availability = ctx.cfg.kpi.availability
        assert availability is not None, "computed only when [kpi.availability] is configured"
        self.cfg = availability
        self.events = self._journal()

    def _journal(self) -> pd.DataFrame:
        """Return activations and clears of the period (none when no journal is reachable)."""
        if self.ctx.events is None:
            return pd.DataFrame(columns=["ts", "event", "tag", "asset", "since"])
        try:
            df = self.ctx.events(self.ctx.start, self.ctx.end)
        except Exception:
            # MTTR and MTBF go missing; availability itself does not depend on the journal.
            log.warning("alarm journal unreadable: MTTR/MTBF left out", exc_info=True)
            return pd.DataFrame(columns=["ts", "event", "tag", "asset", "since"])
        df = df[df["event"].isin(["activate", "clear"])]
        # Once per slice, not per chunk of assets: the signal and epoch times of every event.
        return df.assign(
            signal=df["tag"].astype(str).str.rsplit("/", n=1).str[-1],
            t=_epoch_s(df["ts"]),
            since_t=_epoch_s(df["since"]),
        )

    def compute(self) -> None:
        """Fill the cells of every class in scope."""
        for cls_id in availability_classes(self.ctx.cfg):
            conds = down_signals(self.ctx.cfg, cls_id)
            for assets in self.ctx.chunks(self.ctx.assets_of(cls_id)):
                self._chunk(assets, conds)

    def _chunk(self, assets, conds: list[str]) -> None:
        ctx, grid = self.ctx, self.ctx.grid
        signals = [c.lstrip("!") for c in conds]
        per_signal = [ctx.read(assets, sig) for sig in signals]
        states = merged_states(per_signal, [c.startswith("!") for c in conds], grid)
        up, down, comm = states[UP], states[DOWN], states[COMM]
        good = up + down
        known = good + (comm if self.cfg.commloss == "down" else 0.0)
        expected = ctx.expected(assets)
        scopes = ctx.scopes(assets, "availability")
        ctx.sink.add("up_s", scopes, up, good, expected)
        ctx.sink.add("known_s", scopes, known, good, expected)
        failures, repairs, repair_s = self._alarms(assets, signals)
        ctx.sink.add("failures", scopes, failures, good, expected)
        ctx.sink.add("repairs", scopes, repairs, good, expected)
        ctx.sink.add("repair_s", scopes, repair_s, good, expected)

    def _alarms(self, assets, signals: list[str]) -> tuple[np.ndarray, ...]:
        grid, n = self.ctx.grid, len(assets)
        zero = np.zeros((n, grid.n))
        ev = self.events
        if ev.empty:
            return zero, zero.copy(), zero.copy()
        row = {a.id: i for i, a in enumerate(assets)}
        ev = ev[ev["asset"].isin(row) & ev["signal"].isin(signals)]
        if ev.empty:
            return zero, zero.copy(), zero.copy()
        k = ev["asset"].map(row).to_numpy(np.int64)
        t = ev["t"].to_numpy(float)
        act = (ev["event"] == "activate").to_numpy()
        failures = events_cells(k[act], t[act], grid, n)
        since = ev["since_t"].to_numpy(float)
        clear = ~act & np.isfinite(since)  # a repair's length needs its activation time
        repairs = events_cells(k[clear], t[clear], grid, n)
        dur = np.where(clear, t - np.where(clear, since, 0.0), 0.0)
        h = np.searchsorted(grid.edges, t, "right") - 1
        ok = clear & (h >= 0) & (h < grid.n) & (t < grid.horizon)
        flat = np.bincount(k[ok] * grid.n + h[ok], dur[ok], n * grid.n)
        return failures, repairs, flat.reshape(n, grid.n)


def _epoch_s(times: pd.Series) -> np.ndarray:
    """Return aware times as epoch seconds, NaN where there is none."""
    if times.empty:
        return np.empty(0)
    at = pd.to_datetime(times, utc=True)
    us = at.to_numpy("datetime64[us]").astype(np.int64)
    return np.where(at.isna().to_numpy(), np.nan, us / 1e6)
