"""Mimic diagrams per asset class, as pure functions: (asset, live values, now) → Figure.

Every mimic is drawn from the class's signal list: a drawing places the signals an operator
looks for where they expect them, and lists below it any signal it does not draw, so a class
with a new signal (or a class without a drawing) still shows every value with its quality.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from html import escape
from typing import Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo

import plotly.graph_objects as go
from dash import dcc, html
from dash.development.base_component import Component

from beffroi.core.model import Asset, Quality, Sample, TagSpec, Value
from beffroi.core.privacy import POSITION_SIGNALS, PositionPolicy
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.hmi.state import is_mobile
from beffroi.i18n import MISSING, N_, _, fmt_datetime, fmt_number, fmt_percent

INK, GOOD, BAD, STALE, LIT, OFF = "#1d2733", "#2a9d55", "#d7263d", "#9aa5b1", "#f6c945", "#5b6773"
WARN, WATER, ROAD, AMBER = "#e9a100", "#4a90d9", "#d9dee4", "#ffb000"

QualityKey = Literal["good", "uncertain", "bad", "commloss", "stale"]
# OPC UA-style quality as operators read it: a word and a sign, never colour alone.
QUALITY_LABELS: dict[str, str] = {
    "good": N_("good"),
    "uncertain": N_("uncertain"),
    "bad": N_("bad"),
    "commloss": N_("comm. loss"),
    "stale": N_("stale"),
}
QUALITY_SIGNS: dict[str, str] = {
    "good": "✓",
    "uncertain": "?",
    "bad": "✗",
    "commloss": "⊘",
    "stale": "…",
}
_FROM_QUALITY: dict[Quality, QualityKey] = {
    Quality.GOOD: "good",
    Quality.UNCERTAIN: "uncertain",
    Quality.BAD: "bad",
    Quality.COMM_LOSS: "commloss",
}

# What each known signal is called on screen; an unknown signal shows its own name.
SIGNAL_LABELS: dict[str, str] = {
    "lit": N_("lit"),
    "dimming_pct": N_("dimming"),
    "power_kw": N_("power"),
    "energy_kwh": N_("energy"),
    "lamp_failures": N_("lamp failures"),
    "fault": N_("fault"),
    "plan": N_("plan"),
    "bus_priority_requests": N_("bus priority requests"),
    "bus_priority_granted": N_("bus priority granted"),
    "lat": N_("latitude"),
    "lon": N_("longitude"),
    "speed_kmh": N_("speed"),
    "delay_s": N_("delay"),
    "state": N_("state"),
    "raised": N_("bollard"),
    "presence": N_("vehicle presence"),
    "message": N_("message"),
    "online": N_("link"),
    "capacity": N_("capacity"),
    "free_spaces": N_("free spaces"),
    "occupancy_pct": N_("occupancy"),
    "level_pct": N_("level"),
    "pump_on": N_("pump"),
    "flow_m3h": N_("flow"),
    "fill_pct": N_("fill level"),
    "temperature_c": N_("temperature"),
    "setpoint_c": N_("setpoint"),
}
# A yes/no signal in the words of its equipment.
BOOL_TEXTS: dict[str, tuple[str, str]] = {
    "lit": (N_("lamps on"), N_("lamps off")),
    "fault": (N_("FAULT"), N_("no fault")),
    "raised": (N_("raised"), N_("lowered")),
    "presence": (N_("vehicle present"), N_("no vehicle")),
    "online": (N_("online"), N_("offline")),
    "pump_on": (N_("running"), N_("stopped")),
}
YES_NO = (N_("yes"), N_("no"))
# The state codes of vehicles (municipal fleet); an unknown code shows as sent.
STATE_TEXTS: dict[str, str] = {
    "depot": N_("at the depot"),
    "driving": N_("driving"),
    "working": N_("working"),
    "patrol": N_("on patrol"),
    "stopped": N_("stopped"),
    "collecting": N_("collecting"),
    "sweeping": N_("sweeping"),
    "on_site": N_("on site"),
}
UNIT_TEXTS: dict[str, str] = {"spaces": N_("spaces")}
# Decimals by unit: positions to about a metre, counters and percentages whole.
_DECIMALS: dict[str, int] = {
    "°": 5,
    "%": 0,
    "km/h": 0,
    "s": 0,
    "spaces": 0,
    "kWh": 0,
    "": 0,
}
CLASS_TITLES: dict[str, str] = {
    "streetlight_cabinet": N_("Street-lighting cabinet %(id)s"),
    "traffic_controller": N_("Intersection %(id)s"),
    "bus": N_("Bus %(id)s"),
    "bollard": N_("Retractable bollard %(id)s"),
    "info_panel": N_("Information panel %(id)s"),
    "car_park": N_("Car park %(id)s"),
    "reservoir": N_("Reservoir %(id)s"),
    "waste_container": N_("Waste container %(id)s"),
    "building": N_("Public building %(id)s"),
    "camera": N_("Camera %(id)s"),
    "police_vehicle": N_("Municipal police vehicle %(id)s"),
    "maintenance_van": N_("Maintenance van %(id)s"),
    "street_sweeper": N_("Street sweeper %(id)s"),
    "waste_truck": N_("Waste collection truck %(id)s"),
}
FLEET_CLASSES = ("police_vehicle", "maintenance_van", "street_sweeper", "waste_truck")


def signal_label(signal: str) -> str:
    """Return a signal's name as shown (its own name when the mimic does not know it)."""
    known = SIGNAL_LABELS.get(signal)
    return _(known) if known is not None else signal


def quality_label(quality: str) -> str:
    """Return a quality's word in the current language."""
    return _(QUALITY_LABELS[quality])


def class_title(asset: Asset) -> str:
    """Return the mimic's title: the class in words, and the asset's id."""
    known = CLASS_TITLES.get(asset.asset_class)
    if known is not None:
        return _(known) % {"id": asset.id}
    return f"{asset.asset_class.replace('_', ' ').capitalize()} {asset.id}"


@dataclass(frozen=True, slots=True)
class Reading:
    """A live value as a mimic shows it: its text, and how far it can be trusted now."""

    signal: str
    value: Value | None  # None when the signal is not in the register or has no value yet
    text: str  # the value in words, with its unit, without its quality
    quality: QualityKey
    ts: datetime | None = None
    status: int = 0  # the sample's full OPC UA StatusCode
    spec: TagSpec | None = field(default=None, compare=False)

    @property
    def fresh(self) -> bool:
        """Tell whether the value is Good and current."""
        return self.quality == "good"

    @property
    def colour(self) -> str:
        """Return the ink of the value: grey when it is not Good."""
        return INK if self.fresh else STALE

    @property
    def label(self) -> str:
        """Return the quality in words."""
        return quality_label(self.quality)

    @property
    def shown(self) -> str:
        """Return the value as drawn: its text, and its quality when it is not Good."""
        return self.text if self.fresh else f"{self.text} ({self.label})"

    @property
    def alone(self) -> str:
        """Return the value as drawn on its own: named when no value is known ("fault: —")."""
        if self.text != MISSING:
            return self.shown
        return _("%(signal)s: %(value)s") % {
            "signal": signal_label(self.signal),
            "value": self.shown,
        }

    @property
    def number(self) -> float | None:
        """Return the value as a finite number, or None."""
        v = self.value
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            return None
        return float(v)

    @property
    def on(self) -> bool:
        """Tell whether a yes/no value says yes (no value says no)."""
        v = self.value
        if isinstance(v, bool):
            return v
        return self.number is not None and self.number != 0


def value_text(spec: TagSpec, value: Value) -> str:
    """Format a value in words for its signal: yes/no words, local numbers, units, codes."""
    if spec.kind == "bool" or isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return MISSING  # a CommLoss sample carries NaN, not a yes/no
        yes, no = BOOL_TEXTS.get(spec.signal, YES_NO)
        return _(yes) if _truthy(value) else _(no)
    if isinstance(value, int | float):
        v = float(value)
        if not math.isfinite(v):
            return MISSING
        if spec.unit == "%":
            return fmt_percent(v, 0 if v.is_integer() else 1)
        decimals = _DECIMALS.get(spec.unit, 1)
        if spec.unit == "" and not v.is_integer():
            decimals = 1
        unit = _(UNIT_TEXTS[spec.unit]) if spec.unit in UNIT_TEXTS else spec.unit
        text = fmt_number(v, decimals)
        if unit == "°":
            return text + unit  # a coordinate: the degree sign stays with its number
        return f"{text}\u00a0{unit}" if unit else text
    if spec.signal == "state" and value in STATE_TEXTS:
        return _(STATE_TEXTS[value])
    return str(value)


def _truthy(value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return math.isfinite(value) and value != 0
    return value.strip().lower() in ("true", "1", "on", "yes")


def read(
    asset: Asset,
    signal: str,
    snapshot: Mapping[str, Sample],
    now: datetime,
    stale_factor: float | None = None,
) -> Reading:
    """Return a signal's value with its quality.

    Values are reported by exception, so an old unchanged value is still current while its
    collector is connected; a lost link turns it CommLoss, which shows here. A value is stale
    when nothing was ever received, when its asset is removed at source (its values are
    leftovers), or, with `stale_factor`, when it is older than that many of its intervals.
    """
    spec = next((t for t in asset.tags if t.signal == signal), None)
    s = snapshot.get(asset.tag(signal))
    if spec is None or s is None:
        return Reading(signal, None, MISSING, "stale", spec=spec)
    quality = _FROM_QUALITY[s.quality]
    age = (now - s.ts).total_seconds()
    if quality == "good" and (
        asset.state == "removed"
        or (stale_factor is not None and age > stale_factor * spec.interval_s)
    ):
        quality = "stale"
    v = s.value
    if spec.kind == "bool" and isinstance(v, float) and math.isfinite(v):
        v = v != 0  # a register read as a number: a yes/no all the same
    return Reading(signal, v, value_text(spec, v), quality, s.ts, s.status, spec)


class Reader:
    """Read an asset's signals for one drawing, remembering which ones it drew."""

    def __init__(
        self,
        asset: Asset,
        snapshot: Mapping[str, Sample],
        now: datetime,
        stale_factor: float | None = None,
        coarse_m: float | None = None,
    ) -> None:
        self.asset, self.snapshot, self.now, self.stale_factor = asset, snapshot, now, stale_factor
        self.coarse_m = coarse_m  # positions were snapped to a grid of that size (privacy)
        self.used: set[str] = set()

    def __call__(self, signal: str) -> Reading:
        """Return one signal's reading, and note it as drawn."""
        self.used.add(signal)
        return read(self.asset, signal, self.snapshot, self.now, self.stale_factor)

    def readings(self) -> list[Reading]:
        """Return every signal of the asset, in its class's order."""
        return [
            read(self.asset, t.signal, self.snapshot, self.now, self.stale_factor)
            for t in self.asset.tags
        ]


def _base(title: str, width: float = 10, height: float = 6) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(
        title={"text": escape(title), "x": 0.02},
        xaxis={"visible": False, "range": [0, width], "fixedrange": True},
        yaxis={"visible": False, "range": [0, height], "scaleanchor": "x", "fixedrange": True},
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        plot_bgcolor="white",
        height=420,
        showlegend=False,
    )
    return fig


def _label(
    fig: go.Figure,
    x: float,
    y: float,
    text: str,
    colour: str = INK,
    size: int = 14,
    name: str = "",
    font: str | None = None,
) -> None:
    # Values come from equipment: escaped, so that Plotly's few tags in them stay text.
    fig.add_annotation(
        x=x,
        y=y,
        text=escape(text),
        showarrow=False,
        font={"size": size, "color": colour, **({"family": font} if font else {})},
        name=name,
    )


def _said(r: Reading, template: str) -> str:
    """Put a reading in a sentence ("power %(value)s"), its quality after it when not Good."""
    return _(template) % {"value": r.text} + ("" if r.fresh else f" ({r.label})")


def _fault(fig: go.Figure, rd: Reader, x: float, y: float) -> Reading:
    """Draw the fault state: large and red when the equipment reports one."""
    fault = rd("fault")
    if fault.on:
        _label(fig, x, y, fault.alone, BAD, 18, "fault")
    elif fault.spec is not None:
        _label(fig, x, y, fault.alone, fault.colour, 12, "fault")
    return fault


def _box(
    fig: go.Figure, x0: float, y0: float, x1: float, y1: float, line: str = INK, **kw: object
) -> None:
    width = kw.pop("width", 2)
    fig.add_shape(
        type="rect", x0=x0, y0=y0, x1=x1, y1=y1, line={"color": line, "width": width}, **kw
    )


def _dot(fig: go.Figure, x: float, y: float, r: float, fill: str, **kw: object) -> None:
    line = {"color": INK, "width": 1}
    fig.add_shape(
        type="circle", x0=x - r, y0=y - r, x1=x + r, y1=y + r, fillcolor=fill, line=line, **kw
    )


def _gauge_colour(pct: float, warn: float, alarm: float) -> str:
    return BAD if pct >= alarm else (WARN if pct >= warn else GOOD)


def cabinet(asset: Asset, rd: Reader) -> go.Figure:
    """Street-lighting cabinet: three feeders of lamps, dimming level, power, energy, failures."""
    lit, dim = rd("lit"), rd("dimming_pct")
    power, fails, energy = rd("power_kw"), rd("lamp_failures"), rd("energy_kwh")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 6.0, 5.5)
    _box(fig, 0.5, 1.5, 2.5, 4.5, BAD if fault.on else INK, width=3)
    _label(fig, 1.5, 3.7, _("cabinet"), size=12)
    _label(fig, 1.5, 3.0, power.alone, power.colour, 16, "power_kw")
    _label(fig, 1.5, 2.3, _said(dim, N_("dimming %(value)s")), dim.colour, 12, "dimming_pct")
    on = lit.on and lit.fresh and not fault.on
    failures = int(fails.number or 0) if fails.fresh else 0
    dimming = dim.number if dim.number is not None else 0.0
    for k, y in enumerate((4.2, 3.0, 1.8)):
        fig.add_shape(type="line", x0=2.5, y0=y, x1=9.5, y1=y, line={"color": INK, "width": 2})
        _label(fig, 3.0, y + 0.3, f"F{k + 1}", size=11)
        for j in range(6):
            broken = (k * 6 + j) < failures
            colour = BAD if broken else (LIT if on else OFF)
            opacity = max(0.25, dimming / 100) if on and not broken else 1.0
            _dot(fig, 3.8 + j * 1.0, y, 0.22, colour, opacity=opacity)
    _label(fig, 4.0, 0.8, lit.alone, lit.colour, 12, "lit")
    _label(
        fig,
        7.2,
        0.8,
        _said(fails, N_("lamp failures: %(value)s")),
        fails.colour,
        12,
        "lamp_failures",
    )
    _label(fig, 1.5, 0.8, _said(energy, N_("energy %(value)s")), energy.colour, 11, "energy_kwh")
    return fig


def intersection(asset: Asset, rd: Reader) -> go.Figure:
    """Traffic-light intersection: roads, signal heads, plan, bus priority asked and granted."""
    plan, bus, granted = rd("plan"), rd("bus_priority_requests"), rd("bus_priority_granted")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 2.0, 5.3)
    for x0, y0, x1, y1 in ((0, 2.3, 10, 3.7), (4.3, 0, 5.7, 6)):
        fig.add_shape(type="rect", x0=x0, y0=y0, x1=x1, y1=y1, fillcolor=ROAD, line_width=0)
    flashing = plan.number == 9.0
    for x, y, green in ((3.8, 4.1, True), (6.2, 1.9, True), (3.8, 1.9, False), (6.2, 4.1, False)):
        colour = (
            STALE if not plan.fresh or fault.on else (LIT if flashing else (GOOD if green else BAD))
        )
        _dot(fig, x, y, 0.25, colour)
    flash = f"{plan.text} — {_('flashing amber')}"
    shown = plan if not flashing else Reading("plan", 9.0, flash, plan.quality)
    _label(fig, 8.0, 5.3, _said(shown, N_("plan %(value)s")), plan.colour, 14, "plan")
    fresh = bus.fresh and granted.fresh
    _label(fig, 7.5, 0.7, priority_text(bus, granted), INK if fresh else STALE, 12, "bus_priority")
    return fig


def priority_text(asked: Reading, granted: Reading) -> str:
    """Describe the bus priority counters: requests, grants and the share granted."""
    a, g = asked.number, granted.number
    # Not both Good numbers: each as read, with its quality, and no share computed from it.
    if not (asked.fresh and granted.fresh) or a is None or g is None:
        return _("bus priority requests: %(asked)s · granted: %(granted)s") % {
            "asked": asked.shown,
            "granted": granted.shown,
        }
    text = _("bus priority: %(asked)s requests, %(granted)s granted") % {
        "asked": fmt_number(a),
        "granted": fmt_number(g),
    }
    if a > 0:
        text += f" ({fmt_percent(100 * g / a)})"
    return text


def reservoir(asset: Asset, rd: Reader) -> go.Figure:
    """Water reservoir: tank level, pump state, delivery flow."""
    level, pump, flow = rd("level_pct"), rd("pump_on"), rd("flow_m3h")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 5, 5.6)
    _box(fig, 3, 0.8, 7, 5.2, BAD if fault.on else INK, width=3)
    pct = max(0.0, min(100.0, level.number)) if level.number is not None else 0.0
    fig.add_shape(
        type="rect",
        x0=3.05,
        y0=0.85,
        x1=6.95,
        y1=0.85 + 4.3 * pct / 100,
        fillcolor=WATER if level.fresh else STALE,
        line_width=0,
        opacity=0.8,
        name="water",
    )
    _label(fig, 5, 3.0, level.alone, level.colour, 18, "level_pct")
    _dot(fig, 1.4, 1.4, 0.6, GOOD if pump.on and pump.fresh else OFF)
    fig.add_shape(type="line", x0=2.0, y0=1.4, x1=3.0, y1=1.4, line={"color": INK, "width": 3})
    _label(fig, 1.4, 2.4, _said(pump, N_("pump %(value)s")), pump.colour, 12, "pump_on")
    _label(fig, 8.5, 1.4, _said(flow, N_("flow %(value)s")), flow.colour, 12, "flow_m3h")
    return fig


_VEHICLE_COLOURS = {
    "bus": "#2f7de1",
    "police_vehicle": "#1f3a93",
    "maintenance_van": "#f08a24",
    "street_sweeper": "#2a9d55",
    "waste_truck": "#5d8a3a",
}
SPEED_SCALE_KMH = 90.0


def vehicle(asset: Asset, rd: Reader) -> go.Figure:
    """Vehicle (bus or municipal fleet): speed gauge, delay or state, position."""
    speed, lat, lon = rd("speed_kmh"), rd("lat"), rd("lon")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 3.5, 5.4)
    body = _VEHICLE_COLOURS.get(asset.asset_class, "#4b5d73")
    _box(fig, 0.6, 2.0, 6.2, 3.8, BAD if fault.on else INK, fillcolor=body, width=3)
    for x in (1.2, 2.3, 3.4, 4.5):
        _box(fig, x, 3.0, x + 0.8, 3.6, INK, fillcolor="#dfe9f5", width=1)
    for x in (1.7, 5.1):
        _dot(fig, x, 2.0, 0.4, INK)
    # Speed: a half-dial from 0 to SPEED_SCALE_KMH, its needle where the Good speed stands.
    cx, cy, r = 8.2, 2.6, 1.4
    arc = " ".join(
        f"{'M' if k == 0 else 'L'} {cx - r * math.cos(math.pi * k / 24):.3f} "
        f"{cy + r * math.sin(math.pi * k / 24):.3f}"
        for k in range(25)
    )
    fig.add_shape(type="path", path=arc, line={"color": INK, "width": 3})
    if speed.number is not None and speed.fresh:
        share = max(0.0, min(1.0, speed.number / SPEED_SCALE_KMH))
        a = math.pi * (1 - share)
        fig.add_shape(
            type="line",
            x0=cx,
            y0=cy,
            x1=cx + 0.9 * r * math.cos(a),
            y1=cy + 0.9 * r * math.sin(a),
            line={"color": BAD, "width": 3},
            name="needle",
        )
    _label(fig, cx, cy - 0.5, speed.alone, speed.colour, 16, "speed_kmh")
    if any(t.signal == "delay_s" for t in asset.tags):
        delay = rd("delay_s")
        _label(fig, 3.4, 1.0, delay_text(delay), delay.colour, 14, "delay_s")
    if any(t.signal == "state" for t in asset.tags):
        state = rd("state")
        _label(fig, 3.4, 1.0, state.alone, state.colour, 16, "state")
    where = {"lat": lat.shown, "lon": lon.shown}
    if rd.coarse_m is not None:
        where["m"] = fmt_number(rd.coarse_m)
        position = _("approximate position (%(m)s m grid) %(lat)s, %(lon)s") % where
    else:
        position = _("position %(lat)s, %(lon)s") % where
    _label(fig, 5.0, 0.3, position, INK if lat.fresh and lon.fresh else STALE, 11, "position")
    return fig


def delay_text(delay: Reading) -> str:
    """Say a bus's delay against its timetable: late, early or on time."""
    d = delay.number
    if d is None:
        return _said(delay, N_("delay %(value)s"))
    if abs(d) < 60:
        words = _("on time (%(value)s)")
    elif d > 0:
        words = _("%(minutes)s min late (%(value)s)")
    else:
        words = _("%(minutes)s min early (%(value)s)")
    text = words % {"value": delay.text, "minutes": fmt_number(abs(d) / 60, 1)}
    return text if delay.fresh else f"{text} ({delay.label})"


def bollard(asset: Asset, rd: Reader) -> go.Figure:
    """Retractable bollard: the post raised or flush with the road, a vehicle over it or not."""
    raised, presence = rd("raised"), rd("presence")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 5, 5.5)
    fig.add_shape(type="rect", x0=0, y0=1.0, x1=10, y1=2.0, fillcolor=ROAD, line_width=0)
    post = BAD if fault.on else ("#c0392b" if raised.fresh else STALE)
    top = 4.2 if raised.on else 2.15
    _box(fig, 4.6, 2.0, 5.4, top, INK, fillcolor=post, name="post")
    if raised.on:
        for y in (2.6, 3.4):  # reflective bands
            _box(fig, 4.6, y, 5.4, y + 0.3, INK, fillcolor="white", width=1)
    if presence.on:
        _box(fig, 1.0, 2.0, 3.8, 3.1, INK, fillcolor="#6c7a89", name="vehicle")
        for x in (1.6, 3.2):
            _dot(fig, x, 2.0, 0.3, INK)
    _label(fig, 5, 4.7, raised.alone, raised.colour, 16, "raised")
    _label(fig, 2.4, 0.5, presence.alone, presence.colour, 13, "presence")
    return fig


PANEL_COLUMNS = 24


def info_panel(asset: Asset, rd: Reader) -> go.Figure:
    """Information panel: the message as the panel displays it, and whether it is online."""
    message, online = rd("message"), rd("online")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 8.2, 0.6)
    fig.add_shape(type="line", x0=5, y0=0.3, x1=5, y1=2.0, line={"color": INK, "width": 4})
    lit = online.on and online.fresh and not fault.on
    _box(fig, 0.8, 2.0, 9.2, 5.3, BAD if fault.on else INK, fillcolor="#111" if lit else "#3b4048")
    words = message.value if isinstance(message.value, str) else ""
    lines = textwrap.wrap(words, PANEL_COLUMNS)[:4] or [""]
    ink = AMBER if lit and message.fresh else STALE
    for k, line in enumerate(lines):
        _label(fig, 5, 4.6 - k * 0.65, line, ink, 18, f"message-{k}", "DejaVu Sans Mono, monospace")
    if not message.fresh:
        _label(fig, 5, 2.3, _said(message, N_("message %(value)s")), STALE, 11, "message")
    elif not words:
        _label(fig, 5, 2.3, _("blank panel"), STALE, 11, "message")
    _label(fig, 2.0, 0.6, online.alone, online.colour if online.on else BAD, 13, "online")
    return fig


def car_park(asset: Asset, rd: Reader) -> go.Figure:
    """Car park: occupancy gauge, free spaces out of the capacity."""
    occ, free, cap = rd("occupancy_pct"), rd("free_spaces"), rd("capacity")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 8.0, 5.4)
    _box(fig, 0.5, 4.3, 1.7, 5.5, INK, fillcolor="#2f7de1")
    _label(fig, 1.1, 4.9, "P", "white", 26)
    pct = occ.number
    if pct is None and free.number is not None and cap.number:
        pct = 100 * (1 - free.number / cap.number)
    fresh = occ.fresh if occ.number is not None else free.fresh and cap.fresh
    share = max(0.0, min(100.0, pct or 0.0))
    _box(fig, 1.0, 2.4, 9.0, 3.6, BAD if fault.on else INK, width=3)
    fig.add_shape(
        type="rect",
        x0=1.05,
        y0=2.45,
        x1=1.05 + 7.9 * share / 100,
        y1=3.55,
        fillcolor=_gauge_colour(share, 85, 95) if fresh else STALE,
        line_width=0,
        name="occupancy",
    )
    _label(fig, 5, 3.0, _said(occ, N_("occupied %(value)s")), occ.colour, 16, "occupancy_pct")
    _label(fig, 3.0, 1.6, _said(free, N_("free %(value)s")), free.colour, 16, "free_spaces")
    _label(fig, 7.0, 1.6, _said(cap, N_("capacity %(value)s")), cap.colour, 12, "capacity")
    return fig


def waste_container(asset: Asset, rd: Reader) -> go.Figure:
    """Waste container: how full it is, to plan its collection."""
    fill = rd("fill_pct")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 8.2, 5.4)
    _box(fig, 3.5, 0.8, 6.5, 4.5, BAD if fault.on else INK, width=3)
    _box(fig, 3.3, 4.5, 6.7, 4.9, INK, fillcolor="#5d8a3a")
    pct = max(0.0, min(100.0, fill.number)) if fill.number is not None else 0.0
    fig.add_shape(
        type="rect",
        x0=3.55,
        y0=0.85,
        x1=6.45,
        y1=0.85 + 3.6 * pct / 100,
        fillcolor=_gauge_colour(pct, 70, 90) if fill.fresh else STALE,
        line_width=0,
        opacity=0.8,
        name="fill",
    )
    _label(fig, 5, 2.6, fill.alone, fill.colour, 18, "fill_pct")
    _label(fig, 8.2, 2.6, _("fill level"), INK, 12)
    return fig


def building(asset: Asset, rd: Reader) -> go.Figure:
    """Public building: room temperature against its setpoint, and power drawn."""
    temp, setpoint, power = rd("temperature_c"), rd("setpoint_c"), rd("power_kw")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 8.3, 5.5)
    edge = BAD if fault.on else INK
    _box(fig, 1.0, 0.6, 6.0, 3.8, edge, width=3)
    fig.add_shape(
        type="path", path="M 0.6 3.8 L 3.5 5.6 L 6.4 3.8 Z", line={"color": edge, "width": 3}
    )
    _label(fig, 3.5, 2.9, temp.alone, temp.colour, 20, "temperature_c")
    _label(
        fig, 3.5, 2.0, _said(setpoint, N_("setpoint %(value)s")), setpoint.colour, 13, "setpoint_c"
    )
    t, sp = temp.number, setpoint.number
    if t is not None and sp is not None and temp.fresh and setpoint.fresh:
        gap = t - sp
        colour = INK if abs(gap) < 1 else (BAD if gap > 0 else WATER)
        text = _("%(gap)s °C from the setpoint") % {
            "gap": ("+" if gap > 0 else "") + fmt_number(gap, 1)
        }
        _label(fig, 3.5, 1.3, text, colour, 12, "deviation")
    _label(fig, 8.3, 2.0, _said(power, N_("power %(value)s")), power.colour, 14, "power_kw")
    return fig


def camera(asset: Asset, rd: Reader) -> go.Figure:
    """Video-protection camera: online or not, and its fault."""
    online = rd("online")
    fig = _base(class_title(asset))
    fault = _fault(fig, rd, 5, 0.6)
    edge = BAD if fault.on else INK
    fig.add_shape(type="line", x0=2.0, y0=5.0, x1=2.0, y1=3.6, line={"color": INK, "width": 4})
    _box(fig, 2.0, 2.6, 6.6, 3.9, edge, fillcolor="#e6e9ee", width=3)
    fig.add_shape(
        type="path", path="M 6.6 2.8 L 7.8 2.5 L 7.8 4.0 L 6.6 3.7 Z", line={"color": edge}
    )
    up = online.on and online.fresh
    _dot(fig, 2.6, 3.5, 0.18, GOOD if up else (BAD if online.fresh else STALE))
    _label(
        fig, 4.3, 1.7, online.alone, online.colour if up or not online.fresh else BAD, 16, "online"
    )
    return fig


def generic(asset: Asset, rd: Reader) -> go.Figure:
    """Any other class: no drawing, its signals listed below the title."""
    return _base(class_title(asset), height=1)


Mimic = Callable[[Asset, Reader], go.Figure]
MIMICS: dict[str, Mimic] = {
    "streetlight_cabinet": cabinet,
    "traffic_controller": intersection,
    "bus": vehicle,
    "bollard": bollard,
    "info_panel": info_panel,
    "car_park": car_park,
    "reservoir": reservoir,
    "waste_container": waste_container,
    "building": building,
    "camera": camera,
    **dict.fromkeys(FLEET_CLASSES, vehicle),
}
ROW = 0.55  # height of one listed signal, in drawing units


def mimic_for(asset: Asset) -> Mimic:
    """Return the drawing of an asset's class: a vehicle for any with a position, else a list."""
    found = MIMICS.get(asset.asset_class)
    if found is not None:
        return found
    return vehicle if is_mobile(asset) else generic


def synoptic(
    asset: Asset,
    snap: Mapping[str, Sample],
    now: datetime,
    stale_factor: float | None = None,
    coarse_m: float | None = None,
) -> go.Figure:
    """Return the mimic of an asset, listing under the drawing every signal it does not draw.

    `coarse_m` says that the snapshot's positions were snapped to a grid of that size.
    """
    rd = Reader(asset, snap, now, stale_factor, coarse_m)
    fig = mimic_for(asset)(asset, rd)
    rest = [r for r in rd.readings() if r.signal not in rd.used]
    if rest:
        # The drawing grows downwards, one line per signal it has no place for.
        top = fig.layout.yaxis.range[0]
        for k, r in enumerate(rest):
            text = _("%(signal)s: %(value)s") % {"signal": signal_label(r.signal), "value": r.shown}
            _label(fig, 5, top - (k + 0.6) * ROW, text, r.colour, 14, r.signal)
        bottom = top - len(rest) * ROW - 0.2
        fig.update_layout(
            yaxis={"range": [bottom, fig.layout.yaxis.range[1]]},
            height=int(fig.layout.height + 40 * len(rest)) if rd.used else 120 + 34 * len(rest),
        )
    return fig


def private_positions(
    asset: Asset, snap: Mapping[str, Sample], policy: PositionPolicy, role: str | None
) -> tuple[dict[str, Sample], float | None]:
    """Return the snapshot as a role may see it: a staff vehicle's position on the coarse grid.

    The second item is the grid's size when positions were snapped, else None.
    """
    out = dict(snap)
    if policy.exact_for(role, asset.asset_class):
        return out, None
    for signal in POSITION_SIGNALS:
        s = out.get(asset.tag(signal))
        if s is not None:
            out[s.tag] = replace(s, value=policy.shown_value(signal, s.value))
    return out, policy.coarse_m


def age_text(now: datetime, ts: datetime | None) -> str:
    """Say how old a value is, in the current language's numbers."""
    if ts is None:
        return "—"
    s = max((now - ts).total_seconds(), 0.0)
    if s < 90:
        return _("%(n)s s") % {"n": fmt_number(s)}
    if s < 90 * 60:
        return _("%(n)s min") % {"n": fmt_number(s / 60)}
    if s < 48 * 3600:
        return _("%(n)s h") % {"n": fmt_number(s / 3600, 1)}
    return _("%(n)s d") % {"n": fmt_number(s / 86400, 1)}


def quality_badge(r: Reading) -> html.Span:
    """Show a value's quality as a sign and a word (with its OPC UA status code when set)."""
    title = f"StatusCode 0x{r.status:08X}" if r.status else None
    return html.Span(
        f"{QUALITY_SIGNS[r.quality]} {r.label}",
        className=f"synoptic-q synoptic-q-{r.quality}",
        title=title,
    )


def signal_rows(
    asset: Asset, readings: list[Reading], now: datetime, control_on: bool, may: bool
) -> html.Table:
    """Tabulate every signal of the asset: value, quality, age, and the command path if writable."""
    rows = []
    for r in readings:
        writable = r.spec is not None and r.spec.writable
        command: Component | str = ""
        if writable and control_on and may:
            command = dcc.Link(_("Send a setpoint →"), href=f"/control?asset={quote(asset.id)}")
        elif writable:
            command = _("setpoint")
        rows.append(
            html.Tr(
                id=f"synoptic-row-{r.signal}",
                className=f"synoptic-row-{r.quality}",
                children=[
                    html.Td(signal_label(r.signal)),
                    html.Td(r.text, className="num synoptic-value"),
                    html.Td(quality_badge(r)),
                    html.Td(
                        age_text(now, r.ts),
                        className="num",
                        title=fmt_datetime(r.ts, ZoneInfo(DISPLAY_TZ), seconds=True)
                        if r.ts
                        else None,
                    ),
                    html.Td(command),
                ],
            )
        )
    head = [_("signal"), _("value"), _("quality"), _("age"), _("command")]
    return html.Table(
        [html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)],
        className="synoptic-table",
    )


def head_view(
    asset: Asset, readings: list[Reading], control_on: bool, may: bool, commune: str = ""
) -> list[Component]:
    """Say the asset's fault and link state in words, with links to the map, trends and control."""
    says: list[Component] = []
    fault = next((r for r in readings if r.signal == "fault"), None)
    if fault is not None and fault.on:
        says.append(html.Span(_("Fault reported by the equipment"), className="synoptic-fault"))
    lost = [r for r in readings if r.quality == "commloss"]
    if lost:
        says.append(
            html.Span(
                _("Link lost: %(n)s of %(total)s values unknown")
                % {"n": fmt_number(len(lost)), "total": fmt_number(len(readings))},
                className="synoptic-lost",
            )
        )
    links: list[Component] = []
    if is_mobile(asset):
        links.append(dcc.Link(_("Show on the map →"), href=f"/?asset={quote(asset.id)}"))
    if asset.tags:
        tag = quote(asset.tags[0].name, safe="/")
        links.append(dcc.Link(_("Trends →"), href=f"/trends?tag={tag}"))
    if control_on and may and any(t.writable for t in asset.tags):
        links.append(dcc.Link(_("Commands →"), href=f"/control?asset={quote(asset.id)}"))
    return [
        html.Span(commune or asset.commune, className="synoptic-commune"),
        *says,
        html.Span(links, className="synoptic-links"),
    ]
