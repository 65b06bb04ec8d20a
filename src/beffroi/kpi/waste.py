"""Waste: collections, and those made below the full threshold (rounds that were not needed)."""

from __future__ import annotations

from beffroi.kpi.cells import CellContext, full_hours
from beffroi.kpi.timeline import covered, drops, events_cells


def compute(ctx: CellContext) -> None:
    """Fill waste_collections and waste_early cells from falls of the fill level."""
    wc = ctx.cfg.kpi.waste
    if wc is None:
        return
    for assets in ctx.chunks(ctx.assets_of(wc.asset_class)):
        s = ctx.read([a.tag(wc.signal) for a in assets])
        tag, t, before = drops(s, wc.drop_pct)
        n, n_h = len(assets), ctx.grid.n
        cov, expected = covered(s, ctx.grid), full_hours(n, n_h)
        scopes = ctx.scopes(assets, "waste")
        early = before < wc.full_pct
        ctx.sink.add("waste_collections", scopes, events_cells(tag, t, ctx.grid, n), cov, expected)
        ctx.sink.add(
            "waste_early", scopes, events_cells(tag[early], t[early], ctx.grid, n), cov, expected
        )
