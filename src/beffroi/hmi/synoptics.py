"""Mimic diagrams per asset class, as pure functions: (asset, live values, now) → Figure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import plotly.graph_objects as go

from beffroi.core.model import Asset, Quality, Sample, Value

INK, GOOD, BAD, STALE, LIT, OFF = "#1d2733", "#2a9d55", "#d7263d", "#9aa5b1", "#f6c945", "#5b6773"


@dataclass(frozen=True, slots=True)
class Reading:
    """A live value as a mimic shows it: text, and whether it can be trusted now."""

    value: Value | None  # None when the signal is not in the register or has no value yet
    text: str
    fresh: bool

    @property
    def colour(self) -> str:
        """Return the ink of the value: grey when stale or not Good."""
        return INK if self.fresh else STALE


def read(asset: Asset, signal: str, snapshot: Mapping[str, Sample], now: datetime) -> Reading:
    """Return a signal's value, greyed and labelled when its quality is not Good.

    Values are reported by exception, so an old unchanged value is still current while its
    collector is connected; a lost link turns it CommLoss, which shows here.
    """
    spec = next((t for t in asset.tags if t.signal == signal), None)
    s = snapshot.get(asset.tag(signal))
    if spec is None or s is None:
        return Reading(None, "—", False)
    fresh = s.quality is Quality.GOOD
    v = s.value
    if isinstance(v, bool):
        text = "on" if v else "off"
    elif isinstance(v, float) and not math.isfinite(v):
        text = "—"  # no value known (CommLoss, Bad): stored as NaN
    elif isinstance(v, float) and not spec.unit and v.is_integer():
        text = f"{v:.0f}"  # a count (lamp failures, requests): no decimals
    elif isinstance(v, float):
        text = f"{v:.1f} {spec.unit}".strip()
    else:
        text = str(v)
    if not fresh:
        text += f" ({s.quality.label})"
    return Reading(v, text, fresh)


def _base(title: str, width: float = 10, height: float = 6) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": title, "x": 0.02},
        xaxis={"visible": False, "range": [0, width], "fixedrange": True},
        yaxis={"visible": False, "range": [0, height], "scaleanchor": "x", "fixedrange": True},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="white",
        height=420,
        showlegend=False,
    )
    return fig


def _label(
    fig: go.Figure, x: float, y: float, text: str, colour: str = INK, size: int = 14, name: str = ""
) -> None:
    fig.add_annotation(
        x=x, y=y, text=text, showarrow=False, font={"size": size, "color": colour}, name=name
    )


def cabinet(asset: Asset, snap: Mapping[str, Sample], now: datetime) -> go.Figure:
    """Street-lighting cabinet: three feeders of lamps, dimming level, power, failures."""
    lit, dim = read(asset, "lit", snap, now), read(asset, "dimming_pct", snap, now)
    power, fails = read(asset, "power_kw", snap, now), read(asset, "lamp_failures", snap, now)
    fault = read(asset, "fault", snap, now)
    fig = _base(f"Cabinet {asset.id}")
    fig.add_shape(
        type="rect",
        x0=0.5,
        y0=1.5,
        x1=2.5,
        y1=4.5,
        line={"color": BAD if fault.value else INK, "width": 3},
    )
    _label(fig, 1.5, 3.7, "cabinet", size=12)
    _label(fig, 1.5, 3.0, power.text, power.colour, 16, "power")
    _label(fig, 1.5, 2.3, f"dimming {dim.text}", dim.colour, 12, "dimming")
    on = bool(lit.value) and lit.fresh and not fault.value
    failures = int(fails.value) if isinstance(fails.value, float) and fails.fresh else 0
    dimming = dim.value if isinstance(dim.value, float) else 0.0  # dimming_pct is a float tag
    for k, y in enumerate((4.2, 3.0, 1.8)):
        fig.add_shape(type="line", x0=2.5, y0=y, x1=9.5, y1=y, line={"color": INK, "width": 2})
        _label(fig, 3.0, y + 0.3, f"F{k + 1}", size=11)
        for j in range(6):
            broken = (k * 6 + j) < failures
            colour = BAD if broken else (LIT if on else OFF)
            opacity = max(0.25, dimming / 100) if on and not broken else 1.0
            x = 3.8 + j * 1.0
            fig.add_shape(
                type="circle",
                x0=x - 0.22,
                y0=y - 0.22,
                x1=x + 0.22,
                y1=y + 0.22,
                fillcolor=colour,
                opacity=opacity,
                line={"color": INK, "width": 1},
            )
    _label(fig, 6.0, 0.8, f"lit: {lit.text} · lamp failures: {fails.text}", INK, 12, "state")
    if fault.value:
        _label(fig, 6.0, 5.5, "FAULT", BAD, 18, "fault")
    return fig


def intersection(asset: Asset, snap: Mapping[str, Sample], now: datetime) -> go.Figure:
    """Traffic-light intersection: roads, signal heads, plan, bus priority asked and granted."""
    plan, bus = read(asset, "plan", snap, now), read(asset, "bus_priority_requests", snap, now)
    granted = read(asset, "bus_priority_granted", snap, now)
    fault = read(asset, "fault", snap, now)
    fig = _base(f"Intersection {asset.id}")
    for x0, y0, x1, y1 in ((0, 2.3, 10, 3.7), (4.3, 0, 5.7, 6)):
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, fillcolor="#d9dee4", line_width=0)
    flashing = plan.value == 9.0
    for x, y, green in ((3.8, 4.1, True), (6.2, 1.9, True), (3.8, 1.9, False), (6.2, 4.1, False)):
        colour = (
            STALE
            if not plan.fresh or fault.value
            else (LIT if flashing else (GOOD if green else BAD))
        )
        fig.add_shape(
            type="circle",
            x0=x - 0.25,
            y0=y - 0.25,
            x1=x + 0.25,
            y1=y + 0.25,
            fillcolor=colour,
            line={"color": INK},
        )
    label = "flashing amber" if flashing else plan.text
    _label(fig, 8.0, 5.3, f"plan {label}", plan.colour, 14, "plan")
    fresh = bus.fresh and granted.fresh
    _label(fig, 7.5, 0.7, _priority_text(bus, granted), bus.colour if fresh else STALE, 12, "bus")
    if fault.value:
        _label(fig, 2.0, 5.3, "FAULT", BAD, 18, "fault")
    return fig


def _priority_text(asked: Reading, granted: Reading) -> str:
    """Describe the bus priority counters: requests, grants and the share granted."""
    # Not both Good numbers: each as read, with its quality, and no share computed from it.
    a, g = asked.value, granted.value
    if not (asked.fresh and granted.fresh) or not (
        isinstance(a, float) and math.isfinite(a) and isinstance(g, float) and math.isfinite(g)
    ):
        return f"bus priority requests: {asked.text} · granted: {granted.text}"
    text = f"bus priority: {a:.0f} requests, {g:.0f} granted"
    if a > 0:
        text += f" ({100 * g / a:.0f} %)"
    return text


def reservoir(asset: Asset, snap: Mapping[str, Sample], now: datetime) -> go.Figure:
    """Water reservoir: tank level, pump state, delivery flow."""
    level, pump = read(asset, "level_pct", snap, now), read(asset, "pump_on", snap, now)
    flow, fault = read(asset, "flow_m3h", snap, now), read(asset, "fault", snap, now)
    fig = _base(f"Reservoir {asset.id}")
    fig.add_shape(type="rect", x0=3, y0=0.8, x1=7, y1=5.2, line={"color": INK, "width": 3})
    pct = max(0.0, min(100.0, level.value)) if isinstance(level.value, float) else 0.0
    fig.add_shape(
        type="rect",
        x0=3.05,
        y0=0.85,
        x1=6.95,
        y1=0.85 + 4.3 * pct / 100,
        fillcolor="#4a90d9" if level.fresh else STALE,
        line_width=0,
        opacity=0.8,
    )
    _label(fig, 5, 3.0, level.text, level.colour, 18, "level")
    running = bool(pump.value) and pump.fresh
    fig.add_shape(
        type="circle",
        x0=0.8,
        y0=0.8,
        x1=2.0,
        y1=2.0,
        fillcolor=GOOD if running else OFF,
        line={"color": INK},
    )
    fig.add_shape(type="line", x0=2.0, y0=1.4, x1=3.0, y1=1.4, line={"color": INK, "width": 3})
    _label(fig, 1.4, 2.4, f"pump {pump.text}", pump.colour, 12, "pump")
    _label(fig, 8.5, 1.4, f"flow {flow.text}", flow.colour, 12, "flow")
    if fault.value:
        _label(fig, 5, 5.6, "FAULT", BAD, 18, "fault")
    return fig


def generic(asset: Asset, snap: Mapping[str, Sample], now: datetime) -> go.Figure:
    """Any other class: its signals as a labelled list."""
    fig = _base(f"{asset.asset_class.replace('_', ' ').capitalize()} {asset.id}")
    for k, spec in enumerate(asset.tags):
        r = read(asset, spec.signal, snap, now)
        _label(fig, 5, 5.3 - k * 0.8, f"{spec.signal}: {r.text}", r.colour, 14, spec.signal)
    return fig


MIMICS = {
    "streetlight_cabinet": cabinet,
    "traffic_controller": intersection,
    "reservoir": reservoir,
}


def synoptic(asset: Asset, snap: Mapping[str, Sample], now: datetime) -> go.Figure:
    """Return the mimic of an asset's class (a generic list for classes without one)."""
    return MIMICS.get(asset.asset_class, generic)(asset, snap, now)
