"""The simulated history of a demo, marked: a banner in the shell, a shaded band on charts.

A demo's first start writes days of simulated past (simulator/history.py) and leaves a marker
file saying which interval it covers; operators must never take those values for measured ones.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import html

from beffroi.core.site import Site
from beffroi.i18n import _, fmt_date
from beffroi.simulator.history import marker_path, simulated_until

log = logging.getLogger(__name__)

SHADE = "rgba(123, 135, 148, 0.12)"  # a grey veil: seen, yet the data stays readable
BAND = "simulated-history"  # the shape's and label's name, for tests and later redraws
PENDING_S = 15 * 60.0  # the month's KPIs take about a minute; a stopped gateway never ends them


@dataclass(frozen=True, slots=True)
class SimulatedHistory:
    """The simulated interval, and whether its KPIs are still being computed."""

    start: datetime
    end: datetime
    kpis_pending: bool


def simulated_history(site: Site) -> SimulatedHistory | None:
    """Return the demo's simulated history as its marker file says, None when there is none."""
    interval = simulated_until(site)
    if interval is None:
        return None
    try:
        path = marker_path(site)
        marker = json.loads(path.read_text())
        # Written again once the month's KPIs are computed; a marker of an older version,
        # without the flag, had its KPIs computed if it counted any. A gateway stopped before
        # the end never says so: past PENDING_S, the page shows what there is.
        pending = not marker.get("kpis_done", int(marker.get("kpi_values", 0)) > 0)
        pending = pending and time.time() - path.stat().st_mtime < PENDING_S
    except (OSError, ValueError, TypeError, AttributeError):
        pending = False
    return SimulatedHistory(interval[0], interval[1], pending)


def history_banner(site: Site) -> html.Div:
    """Say discreetly that the history shown before a date is simulated (nothing otherwise)."""
    history = simulated_history(site)
    if history is None:
        return html.Div(id="shell-history", hidden=True)
    tz = ZoneInfo(site.metropolis.timezone)
    text = _("Simulated data: demonstration history from %(start)s to %(end)s") % {
        "start": fmt_date(history.start, tz),
        "end": fmt_date(history.end, tz),
    }
    return html.Div(
        text,
        id="shell-history",
        className="shell-history",
        role="note",
        style={
            "background": "#f3f4f6",
            "color": "#52606d",
            "fontSize": "12px",
            "padding": "2px 12px",
            "borderBottom": "1px solid #e4e7eb",
        },
    )


def wall_clock(t: datetime, tz: str) -> str:
    """Return an aware time as the naive wall-clock time of tz the charts' x axes show."""
    return t.astimezone(ZoneInfo(tz)).replace(tzinfo=None).isoformat(timespec="seconds")


def simulated_band(
    history: SimulatedHistory, tz: str, window: tuple[datetime, datetime] | None = None
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Return a plotly shape shading the simulated interval within window, and its label."""
    start, end = history.start, history.end
    if window is not None:
        start, end = max(start, window[0]), min(end, window[1])
    if start >= end:
        return None  # the window shows only measured values
    x0, x1 = wall_clock(start, tz), wall_clock(end, tz)
    shape = {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": x0,
        "x1": x1,
        "y0": 0,
        "y1": 1,
        "fillcolor": SHADE,
        "line": {"width": 0},
        "layer": "below",
        "name": BAND,
    }
    note = {
        "text": _("simulated history"),
        "xref": "x",
        "yref": "paper",
        "x": x0,
        "y": 1,
        "xanchor": "left",
        "yanchor": "bottom",
        "showarrow": False,
        "font": {"size": 11, "color": "#7b8794"},
        "name": BAND,
    }
    return shape, note


def shade_simulated(
    fig: dict[str, Any], site: Site, tz: str, window: tuple[datetime, datetime] | None = None
) -> None:
    """Shade a chart's simulated period in place (a plotly figure as a dict)."""
    history = simulated_history(site)
    band = simulated_band(history, tz, window) if history is not None else None
    if band is None:
        return
    layout = fig.setdefault("layout", {})
    layout["shapes"] = [*layout.get("shapes", []), band[0]]
    layout["annotations"] = [*layout.get("annotations", []), band[1]]
