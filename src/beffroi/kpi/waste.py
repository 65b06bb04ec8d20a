"""Waste: collections, and those made below the full threshold (rounds that were not needed)."""

from __future__ import annotations

from beffroi.kpi.cells import CellContext
from beffroi.kpi.timeline import covered, drops, events_cells


def compute(ctx: CellContext) -> None:
    """Fill waste_collections and waste_early cells from falls of the fill level."""
    wc = ctx.cfg.kpi.waste
    if wc is None:
        return
    for assets in ctx.chunks(ctx.assets_of(wc.asset_class)):
        s = ctx.read(assets, wc.signal)
        tag, t, before = drops(s, wc.drop_pct)
        n = len(assets)
        cov, expected = covered(s, ctx.grid), ctx.expected(assets)
        scopes = ctx.scopes(assets, "waste")
        early = before < wc.full_pct
        ctx.sink.add("waste_collections", scopes, events_cells(tag, t, ctx.grid, n), cov, expected)
        ctx.sink.add(
            "waste_early", scopes, events_cells(tag[early], t[early], ctx.grid, n), cov, expected
        )
