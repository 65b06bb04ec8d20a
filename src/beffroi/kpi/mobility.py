"""Mobility: bus priority requests (and grants) at traffic lights, bus delay, car parks."""

from __future__ import annotations

import numpy as np

from beffroi.kpi.cells import CellContext, hold_after_s
from beffroi.kpi.timeline import counter_parts, covered, level_parts


def compute(ctx: CellContext) -> None:
    """Fill the mobility cells: requests, grants, delay and car-park occupancy."""
    mc = ctx.cfg.kpi.mobility
    if mc is None:
        return
    fill_max = ctx.cfg.kpi.fill_max_h * 3600.0
    n_h = ctx.grid.n
    counters = [("bus_requests", mc.requests)] + (
        [("bus_granted", mc.granted)] if mc.granted else []
    )
    for assets in ctx.chunks(ctx.assets_of(mc.traffic_class)):
        scopes, expected = ctx.scopes(assets, "mobility"), ctx.expected(assets)
        for component, signal in counters:
            s = ctx.read(assets, signal)
            hold = hold_after_s(ctx.cfg, mc.traffic_class, signal)
            segs, _ = counter_parts(s, ctx.grid, hold, fill_max)
            ctx.note_fill(segs.earliest_fill())
            parts = segs.cut(ctx.grid.edges)
            value = parts.cells(parts.increase, len(assets), n_h)
            filled = parts.cells(np.where(parts.flag, parts.duration, 0.0), len(assets), n_h) > 0
            ctx.sink.add(component, scopes, value, covered(s, ctx.grid), expected, filled)
    for assets in ctx.chunks(ctx.assets_of(mc.bus_class)):
        s = ctx.read(assets, mc.delay)
        parts = level_parts(s, ctx.grid, hold_after_s(ctx.cfg, mc.bus_class, mc.delay))
        n = len(assets)
        cov, expected = covered(s, ctx.grid), ctx.expected(assets)
        scopes = ctx.scopes(assets, "mobility")
        ctx.sink.add("bus_delay_int", scopes, parts.cells(parts.integral, n, n_h), cov, expected)
        ctx.sink.add("bus_delay_time", scopes, parts.cells(parts.duration, n, n_h), cov, expected)
    for assets in ctx.chunks(ctx.assets_of(mc.car_park_class)):
        s = ctx.read(assets, mc.occupancy)
        hold = hold_after_s(ctx.cfg, mc.car_park_class, mc.occupancy)
        parts = level_parts(s, ctx.grid, hold)
        n = len(assets)
        cov, expected = covered(s, ctx.grid), ctx.expected(assets)
        scopes = ctx.scopes(assets, "mobility")
        full = parts.time_within(mc.full_pct, np.inf)
        ctx.sink.add("car_park_occ_int", scopes, parts.cells(parts.integral, n, n_h), cov, expected)
        ctx.sink.add("car_park_time", scopes, parts.cells(parts.duration, n, n_h), cov, expected)
        ctx.sink.add("car_park_full_s", scopes, parts.cells(full, n, n_h), cov, expected)
