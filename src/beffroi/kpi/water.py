"""Water: reservoir level compliance, the share of time the level stays within its band."""

from __future__ import annotations

from beffroi.kpi.cells import CellContext, hold_after_s
from beffroi.kpi.timeline import covered, level_parts


def compute(ctx: CellContext) -> None:
    """Fill reservoir_in_band_s and reservoir_time cells."""
    wc = ctx.cfg.kpi.water
    if wc is None:
        return
    hold = hold_after_s(ctx.cfg, wc.asset_class, wc.signal)
    for assets in ctx.chunks(ctx.assets_of(wc.asset_class)):
        s = ctx.read(assets, wc.signal)
        parts = level_parts(s, ctx.grid, hold)
        n, n_h = len(assets), ctx.grid.n
        cov, expected = covered(s, ctx.grid), ctx.expected(assets)
        scopes = ctx.scopes(assets, "water")
        band = parts.cells(parts.time_within(wc.low, wc.high), n, n_h)
        ctx.sink.add("reservoir_in_band_s", scopes, band, cov, expected)
        ctx.sink.add("reservoir_time", scopes, parts.cells(parts.duration, n, n_h), cov, expected)
