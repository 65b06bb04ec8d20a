"""Pure functions turning historian DataFrames into plotly figures (Europe/Paris display time)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio

from beffroi.core.model import Quality
from beffroi.i18n import N_, _

DISPLAY_TZ = "Europe/Paris"
# Quality names as operators read them, translated where a figure is drawn.
QUALITY_NAMES: dict[int, str] = {
    int(Quality.GOOD): N_("Good"),
    int(Quality.UNCERTAIN): N_("Uncertain"),
    int(Quality.BAD): N_("Bad"),
    int(Quality.COMM_LOSS): N_("Communication lost"),
}


def quality_name(quality: int) -> str:
    """Return a quality's name in the current locale."""
    name = QUALITY_NAMES.get(int(quality))
    return _(name) if name is not None else str(quality)


def empty_figure(message: str) -> go.Figure:
    """Return a blank figure carrying a centred message."""
    fig = go.Figure()
    fig.update_layout(
        template="plotly_white",
        xaxis={"visible": False},
        yaxis={"visible": False},
        margin={"l": 40, "r": 20, "t": 30, "b": 40},
        annotations=[
            {
                "text": message,
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 16, "color": "#6b7280"},
            }
        ],
    )
    return fig


def to_display_time(ts: pd.Series, tz: str = DISPLAY_TZ) -> pd.Series:
    """Convert aware UTC timestamps to naive wall-clock times of tz, for axis display."""
    ts = pd.to_datetime(ts, utc=True)
    return ts.dt.tz_convert(tz).dt.tz_localize(None)


def trend_series(df: pd.DataFrame, tag: str, tz: str = DISPLAY_TZ) -> pd.DataFrame:
    """Return x (display time), y (NaN where CommLoss) and quality code for one tag."""
    if df.empty:
        return pd.DataFrame(
            {"x": pd.Series(dtype="datetime64[ns]"), "y": [], "quality": pd.Series(dtype=int)}
        )
    part = df[df["tag"] == tag].sort_values("ts")
    y = pd.to_numeric(part["value"], errors="coerce").astype(float).to_numpy(copy=True)
    quality = part["quality"].astype(int).to_numpy()
    # A NaN at a CommLoss sample breaks the line: no value was known there.
    y[quality == int(Quality.COMM_LOSS)] = np.nan
    return pd.DataFrame(
        {
            "x": to_display_time(part["ts"], tz).to_numpy(),
            "y": y,
            "quality": quality,
        }
    )


# Each y axis a trend may use, in order: its layout key and its placement.
_AXES: tuple[tuple[str, dict[str, str | float]], ...] = (
    ("yaxis", {}),
    ("yaxis2", {"overlaying": "y", "side": "right"}),
    ("yaxis3", {"overlaying": "y", "side": "left", "anchor": "free", "position": 0.0}),
    ("yaxis4", {"overlaying": "y", "side": "right", "anchor": "free", "position": 1.0}),
)


def _domain(n_axes: int) -> list[float]:
    """Leave room on the sides for the third and fourth axes."""
    return [0.07 if n_axes >= 3 else 0.0, 0.93 if n_axes >= 4 else 1.0]


def trend_figure(
    df: pd.DataFrame,
    tags: Sequence[str] | None = None,
    units: Mapping[str, str] | None = None,
    step_tags: Collection[str] = (),
    tz: str = DISPLAY_TZ,
    x_range: tuple[datetime, datetime] | None = None,
    held: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    """Build a trend with one line per tag, broken where the quality is CommLoss.

    `held` maps tags to the time up to which their newest value still holds (nothing changed
    since it was reported): drawn dotted, so that a held value is never taken for a sample.
    The figure is a plain dict (what plotly.js reads): building it through plotly's validated
    objects cost more than the historian query for a 30-day, 4-tag trend.
    """
    if tags is None:
        tags = [] if df.empty else list(dict.fromkeys(df["tag"]))
    if not tags:
        return empty_figure(_("Pick a tag to plot")).to_plotly_json()
    units = units or {}
    data: list[dict[str, Any]] = []
    # One y axis per unit (kW, %, °C…), up to four: left, right, then offset left and right.
    axis_of: dict[str, int] = {}
    for tag in tags:
        axis_of.setdefault(units.get(tag, ""), min(len(axis_of) + 1, len(_AXES)))
    for i, tag in enumerate(tags):
        s = trend_series(df, tag, tz)
        unit = units.get(tag, "")
        yaxis = "y" if axis_of[unit] == 1 else f"y{axis_of[unit]}"
        colour = _COLOURS[i % len(_COLOURS)]
        trace = {
            "type": "scatter",
            "x": _iso_ms(s["x"]),
            "y": s["y"].to_numpy(),
            "name": f"{tag} ({unit})" if unit else tag,
            "legendgroup": tag,
            "yaxis": yaxis,
            "mode": "lines+markers" if len(s) < 60 else "lines",
            "line": {
                "shape": "hv" if tag in step_tags else "linear",
                "width": 1.6,
                "color": colour,
            },
            "marker": {"size": 4, "color": colour},
            "connectgaps": False,
        }
        codes = s["quality"]
        if len(codes) and (codes == int(Quality.GOOD)).all():
            # All Good (the usual case): the label once in the template, not once per point.
            trace["hovertemplate"] = _HOVER.format(quality=quality_name(Quality.GOOD), tag=tag)
        else:
            names = {int(q): quality_name(q) for q in codes.unique()}
            trace["text"] = codes.map(names).to_numpy()
            trace["hovertemplate"] = _HOVER.format(quality="%{text}", tag=tag)
        data.append(trace)
        if held and tag in held and len(s) and not np.isnan(s["y"].iloc[-1]):
            data.append(_held_trace(s, tag, yaxis, colour, held[tag], tz))
        # Values of doubtful quality stay visible, marked: red crosses for Bad, amber for
        # Uncertain (CommLoss has no value: it is the gap in the line).
        for code, colour in ((Quality.BAD, "#d7263d"), (Quality.UNCERTAIN, "#f08a24")):
            marked = s[codes == int(code)]
            if not marked.empty:
                label = quality_name(code)
                data.append(
                    {
                        "type": "scatter",
                        "x": _iso_ms(marked["x"]),
                        "y": marked["y"].to_numpy(),
                        "mode": "markers",
                        "yaxis": yaxis,
                        "name": f"{tag} · {label}",
                        "legendgroup": tag,
                        "showlegend": False,
                        "marker": {"symbol": "x", "size": 9, "color": colour},
                        "hovertemplate": _HOVER.format(quality=label, tag=tag),
                    }
                )
    layout: dict[str, Any] = {
        "template": _TEMPLATE,
        "margin": {"l": 50, "r": 20, "t": 30, "b": 40},
        "showlegend": True,
        "legend": {"orientation": "h", "y": -0.2},
        "hovermode": "x unified",
        "xaxis": {
            "title": {"text": _("time (%(tz)s)") % {"tz": tz}},
            "domain": _domain(len(axis_of)),
        },
        **{
            _AXES[i - 1][0]: {**_AXES[i - 1][1], "title": {"text": unit or _("value")}}
            for unit, i in axis_of.items()
        },
    }
    if x_range is not None:
        lo, hi = to_display_time(pd.Series(list(x_range)), tz)
        layout["xaxis"]["range"] = [lo.isoformat(), hi.isoformat()]
    if df.empty:
        layout["annotations"] = [
            {
                "text": _("No stored values in this range"),
                "xref": "paper",
                "yref": "paper",
                "x": 0.5,
                "y": 0.5,
                "showarrow": False,
                "font": {"size": 14, "color": "#6b7280"},
            }
        ]
    return {"data": data, "layout": layout}


def _held_trace(
    s: pd.DataFrame, tag: str, yaxis: str, colour: str, until: datetime, tz: str
) -> dict[str, Any]:
    """Draw the newest value of a tag held, dotted, from its report up to `until`."""
    until_x = to_display_time(pd.Series([until]), tz)
    x = pd.concat([s["x"].iloc[-1:], until_x], ignore_index=True)
    y = s["y"].iloc[-1]
    return {
        "type": "scatter",
        "x": _iso_ms(x),
        "y": [y, y],
        "mode": "lines",
        "yaxis": yaxis,
        "name": f"{tag} · {_('held')}",
        "legendgroup": tag,
        "showlegend": False,
        "line": {"color": colour, "width": 1.6, "dash": "dot"},
        "hovertemplate": _HOVER.format(quality=_("held since its last report"), tag=tag),
    }


def _iso_ms(x: pd.Series) -> np.ndarray:
    """Format wall-clock times to the millisecond: plotly reads no finer, and it is shorter."""
    return np.datetime_as_string(x.to_numpy(dtype="datetime64[ns]"), unit="ms")


_HOVER = "%{{x|%d/%m %H:%M:%S}}<br>%{{y}}<br>{quality}<extra>{tag}</extra>"
# plotly_white's layout, resolved once (plotly.js does not know templates by name).
_TEMPLATE = {"layout": pio.templates["plotly_white"].layout.to_plotly_json()}
# Colours set per tag, so that a tag's held value and marks share its line's colour.
_COLOURS = list(pio.templates["plotly_white"].layout.colorway)
