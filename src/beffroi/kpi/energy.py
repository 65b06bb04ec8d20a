"""Energy per asset and hour, from kWh counters or from kW power; summed per scope."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from beffroi.core.model import Asset
from beffroi.kpi.cells import CellContext, hold_after_s
from beffroi.kpi.config import EnergySourceConfig
from beffroi.kpi.timeline import (
    Grid,
    Samples,
    Segments,
    counter_parts,
    covered,
    value_segments,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class AssetEnergy:
    """Energy of a chunk of assets per hour: kWh, Good seconds, filled cells, value path.

    The segments say when the energy is known: Good data, or a hole the counter spans.
    """

    assets: list[Asset]
    kwh: np.ndarray
    covered: np.ndarray
    filled: np.ndarray
    segments: Segments


def energy_of(
    s: Samples, src: EnergySourceConfig, hold: float, fill_max: float, grid: Grid
) -> tuple[np.ndarray, np.ndarray, int, Segments]:
    """Return kWh and filled flags per (tag, hour), counter resets, and the value path."""
    n = s.n_tags
    linear = src.interpolation == "linear"
    resets = 0
    if src.method == "counter":
        segs, resets = counter_parts(s, grid, hold, fill_max, src.rollover, linear)
        parts = segs.cut(grid.edges)
        kwh = parts.cells(parts.increase, n, grid.n)
    else:
        fill = src.fill == "linear"
        segs = value_segments(
            s, s.v, grid.horizon, linear=linear, hold_after=hold, fill=fill, fill_max=fill_max
        )
        parts = segs.cut(grid.edges)
        kwh = parts.cells(parts.integral / 3600.0, n, grid.n)
    filled = parts.cells(np.where(parts.flag, parts.duration, 0.0), n, grid.n) > 0
    return kwh, filled, resets, segs


def class_energy(ctx: CellContext, cls_id: str) -> Iterator[AssetEnergy]:
    """Yield the energy of a class's assets, chunk by chunk."""
    src = ctx.cfg.kpi.energy[cls_id]
    hold = hold_after_s(ctx.cfg, cls_id, src.signal, src.hold_after_s)
    fill_max = ctx.cfg.kpi.fill_max_h * 3600.0
    for assets in ctx.chunks(ctx.assets_of(cls_id)):
        s = ctx.read(assets, src.signal)
        kwh, filled, resets, segs = energy_of(s, src, hold, fill_max, ctx.grid)
        ctx.note_fill(segs.earliest_fill())
        if resets:
            log.info("%s.%s: %d counter resets in the range", cls_id, src.signal, resets)
        yield AssetEnergy(assets, kwh, covered(s, ctx.grid), filled, segs)


def compute(ctx: CellContext, on_chunk=None) -> None:
    """Fill `energy_kwh` cells for every configured class; hand each chunk to on_chunk."""
    for cls_id in ctx.cfg.kpi.energy:
        for chunk in class_energy(ctx, cls_id):
            scopes = ctx.scopes(chunk.assets, "energy")
            expected = ctx.expected(chunk.assets)
            ctx.sink.add("energy_kwh", scopes, chunk.kwh, chunk.covered, expected, chunk.filled)
            if on_chunk is not None:
                on_chunk(cls_id, chunk)
