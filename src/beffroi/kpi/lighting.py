"""Public-lighting savings: measured cabinet energy against the pre-renovation baseline.

Baseline of a cabinet = its pre-renovation installed kW × the time the sun is below the
configured depression (civil twilight: 6°) at its place, dusk to dawn (astral), counted only
while the cabinet's energy is known (Good data, or a hole its counter spans): measured and
baseline then cover the same time, and a cabinet that reported nothing weighs nothing.
Cabinets in the same 0.01° cell (~1 km) share their twilight times, seconds apart at most.
"""

from __future__ import annotations

import functools
import math
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
from astral import Observer
from astral.sun import dawn, dusk, elevation

from beffroi.core.model import Asset
from beffroi.kpi.cells import CellContext
from beffroi.kpi.config import lighting_baseline
from beffroi.kpi.energy import AssetEnergy
from beffroi.kpi.timeline import Segments, split


@functools.lru_cache(maxsize=1 << 16)  # (cell, day): the same for every run and chunk
def twilight(lat: float, lon: float, day: date, tz: ZoneInfo, depression: float) -> tuple:
    """Return (dawn, dusk) epoch seconds of a local day; polar days and nights included."""
    obs = Observer(lat, lon)
    try:
        return (
            dawn(obs, day, depression=depression, tzinfo=tz).timestamp(),
            dusk(obs, day, depression=depression, tzinfo=tz).timestamp(),
        )
    except ValueError:  # the sun never crosses the depression that day
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
        dark = elevation(obs, noon) < -depression
        return (math.inf, math.inf) if dark else (-math.inf, math.inf)


def nights(
    places: list[tuple[float, float]], t0: float, t1: float, tz: ZoneInfo, depression: float
) -> np.ndarray:
    """Return the nights (dusk, next dawn) around [t0, t1), epoch seconds, per place."""
    d0 = datetime.fromtimestamp(t0, tz).date() - timedelta(days=1)
    days = [d0]
    while days[-1] <= datetime.fromtimestamp(t1, tz).date():
        days.append(days[-1] + timedelta(days=1))
    cells: dict[tuple[float, float], np.ndarray] = {}
    out = np.zeros((len(places), len(days) - 1, 2))
    for i, (lat, lon) in enumerate(places):
        key = (round(lat, 2), round(lon, 2))
        row = cells.get(key)
        if row is None:
            tw = np.array([twilight(key[0], key[1], d, tz, depression) for d in days])
            # Night d runs from dusk of day d to dawn of day d + 1.
            row = cells[key] = np.stack([tw[:-1, 1], tw[1:, 0]], axis=1)
        out[i] = row
    return out


def night_known(segs: Segments, night: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Return the seconds per (asset, hour) that are both night and covered by a segment."""
    n_assets, n_hours = night.shape[0], len(edges) - 1
    out = np.zeros((n_assets, n_hours))
    for j in range(night.shape[1]):
        a = np.maximum(segs.start, night[segs.tag, j, 0])
        b = np.minimum(segs.end, night[segs.tag, j, 1])
        z = np.zeros(len(a))
        parts = split(segs.tag, a, b, z, z, z, edges)
        out += parts.cells(parts.duration, n_assets, n_hours)
    return out


class LightingCalc:
    """Fill lighting_kwh and lighting_baseline_kwh cells from the lighting class's energy."""

    def __init__(self, ctx: CellContext):
        self.ctx = ctx
        self.lc = ctx.cfg.kpi.lighting
        # Cabinets retired while running count up to then: their baseline too.
        self.kw, _problems = lighting_baseline(ctx.cfg, ctx.register, ctx.retired_assets())
        self.tz = ZoneInfo(ctx.cfg.metropolis.timezone)

    def on_chunk(self, cls_id: str, chunk: AssetEnergy) -> None:
        """Take a chunk of energy of the lighting class (called by energy.compute)."""
        if self.lc is None or cls_id != self.lc.asset_class:
            return
        rows = [i for i, a in enumerate(chunk.assets) if a.id in self.kw]
        if not rows:
            return
        assets: list[Asset] = [chunk.assets[i] for i in rows]
        edges = self.ctx.grid.edges
        places = [(a.lat, a.lon) for a in chunk.assets]
        night = nights(places, edges[0], edges[-1], self.tz, self.lc.depression_deg)
        known = night_known(chunk.segments, night, edges)[rows]
        kw = np.array([self.kw[a.id] for a in assets])
        baseline = known * kw[:, None] / 3600.0
        scopes = self.ctx.scopes(assets, "lighting")
        expected = self.ctx.expected(assets)
        sink = self.ctx.sink
        filled = chunk.filled[rows]
        sink.add("lighting_kwh", scopes, chunk.kwh[rows], chunk.covered[rows], expected, filled)
        sink.add("lighting_baseline_kwh", scopes, baseline, chunk.covered[rows], expected, filled)
