"""Trends: server-side downsampling, zoom that fetches detail, and CSV of what is shown."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.browser import artifact
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener, login_page

PW = "correct horse battery"
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_config, small_register):
    """An HMI over a historian holding 8 days of one-minute power values of one cabinet.

    And two signal plans reported by exception, last changed 90 minutes ago: one still held
    (its controller connected), one whose controller has since lost its link.
    """
    folder = tmp_path_factory.mktemp("trends")
    tag = next(t for t in small_register.tags if t.endswith("/power_kw"))
    hist = DuckDBHistorian(folder / "h.duckdb")
    now = utcnow().replace(second=0, microsecond=0)
    n = 8 * 24 * 60
    ts_us = np.int64(now.timestamp() * 1e6) - np.arange(n)[::-1].astype(np.int64) * 60_000_000
    values = 5 + np.sin(np.arange(n) / 300)
    hist.write_columns([tag], np.zeros(n, np.int32), ts_us, values)
    held, lost = [t for t in small_register.tags if t.endswith("/plan")][:2]
    changes = [now - timedelta(hours=3), now - timedelta(minutes=90)]
    live = LiveValues()
    for plan in (held, lost):
        hist.write([Sample(plan, t, v) for t, v in zip(changes, (2.0, 3.0), strict=True)])
    live.update([Sample(held, changes[1], 3.0)])
    live.update([Sample(lost, now - timedelta(minutes=5), None, Quality.COMM_LOSS)])
    hist.compact()
    users = UserStore(folder / "u.duckdb")
    users.add("sup", PW, "supervisor", ["*"])
    app = create_app(demo_config, small_register, live, hist, users=users)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=2)
    server.start()
    yield server, tag, now
    server.stop()
    users.close()
    hist.close()


def _call(opener, url: str, output: str, outputs: list, inputs: list, state=(), changed=()) -> dict:
    first = f"{inputs[0]['id']}.{inputs[0]['property']}"
    body = {
        "output": output,
        "outputs": outputs,
        "inputs": inputs,
        "changedPropIds": list(changed) or [first],
        "state": list(state),
    }
    req = urllib.request.Request(
        url + "_dash-update-component",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with opener.open(req, timeout=30) as resp:
        if resp.status == 204:
            return None  # nothing to update
        return json.loads(resp.read())["response"]


def _graph(opener, url, tag, range_key, zoom=None, changed=()) -> list[dict] | None:
    """Ask for the trend as the browser does; `zoom` is the window the user zoomed to."""
    r = _call(
        opener,
        url,
        "..trends-graph.figure...trends-status.children..",
        [
            {"id": "trends-graph", "property": "figure"},
            {"id": "trends-status", "property": "children"},
        ],
        [
            {"id": "trends-tags", "property": "value", "value": [tag]},
            {"id": "trends-range", "property": "value", "value": range_key},
            {"id": "trends-interval", "property": "n_intervals", "value": 0},
            {"id": "trends-zoom", "property": "data", "value": zoom},
        ],
        changed=changed or (["trends-zoom.data"] if zoom else ["trends-range.value"]),
    )
    return None if r is None else r["trends-graph"]["figure"]["data"]


def _axis(t) -> str:
    """Write a UTC time as the chart's axis does: wall-clock time in Paris."""
    return t.astimezone(PARIS).replace(tzinfo=None).isoformat(sep=" ")


def test_seven_days_are_downsampled_and_a_zoom_brings_every_point(served) -> None:
    """The browser never gets more than 2,000 points a tag; zooming re-queries for detail."""
    server, tag, now = served
    op = logged_in_opener(server.url, "sup", PW)
    week = _graph(op, server.url, tag, "7d")
    # 10,080 stored minutes downsampled, and the sample before the window, where the line starts.
    assert 1000 < len(week[0]["x"]) <= 2000 + 1
    zoom = {"lo": _axis(now - timedelta(hours=30)), "hi": _axis(now - timedelta(hours=28))}
    detail = _graph(op, server.url, tag, "7d", zoom=zoom)
    assert len(detail[0]["x"]) == 1 + 120  # every stored minute of the two hours
    assert detail[0]["x"][0] < zoom["lo"].replace(" ", "T") <= detail[0]["x"][1]
    # While zoomed, the live refresh has nothing new to draw: nothing is sent.
    assert (
        _graph(op, server.url, tag, "7d", zoom=zoom, changed=["trends-interval.n_intervals"])
        is None
    )
    # Out of the zoom (autorange, or a new range): the whole week again, downsampled.
    week_again = _graph(op, server.url, tag, "7d", zoom=None)
    assert len(week_again[0]["x"]) == len(week[0]["x"])
    # A hand-built window that is not two ordered times changes nothing.
    for bad in (
        {"lo": "yesterday", "hi": "today"},
        {"lo": zoom["hi"], "hi": zoom["lo"]},
        {"lo": 1},
    ):
        assert _graph(op, server.url, tag, "7d", zoom=bad) is None


def test_zoom_windows_across_clock_changes(served) -> None:
    """Wall-clock windows over a missing or a doubled hour cover all of it, in UTC."""
    from beffroi.hmi.pages.trends import zoom_window

    utc = ZoneInfo("UTC")
    spring = zoom_window({"lo": "2026-03-29 02:30:00", "hi": "2026-03-29 03:10:00"})
    assert spring == (
        datetime(2026, 3, 29, 1, 0, tzinfo=utc),
        datetime(2026, 3, 29, 1, 10, tzinfo=utc),
    )
    autumn = zoom_window({"lo": "2026-10-25 02:10:00", "hi": "2026-10-25 02:50:00"})
    assert autumn == (
        datetime(2026, 10, 25, 0, 10, tzinfo=utc),
        datetime(2026, 10, 25, 1, 50, tzinfo=utc),
    )


def test_values_reported_by_exception_hold_until_they_change(served, small_register) -> None:
    """A plan last changed 90 minutes ago is drawn over the last hour, dotted; not if lost."""
    server, _, now = served
    op = logged_in_opener(server.url, "sup", PW)
    held, lost = [t for t in small_register.tags if t.endswith("/plan")][:2]
    traces = _graph(op, server.url, held, "1h")
    line, hold = traces
    # The line starts from the last change before the window: nothing was stored inside it.
    assert line["x"] == [_axis(now - timedelta(minutes=90)).replace(" ", "T") + ".000"]
    assert list(line["y"]) == [3.0]
    assert hold["name"] == f"{held} · maintenue" and hold["line"]["dash"] == "dot"
    assert line["line"]["shape"] == "hv"  # a setpoint holds until changed: a step
    assert list(hold["y"]) == [3.0, 3.0] and hold["x"][1] > _axis(now).replace(" ", "T")
    # Its controller's link is lost: the value is not vouched for now, so it is not held.
    traces = _graph(op, server.url, lost, "1h")
    assert len(traces) == 1 and list(traces[0]["y"]) == [3.0]


def test_csv_download_is_what_the_chart_shows(served) -> None:
    """The CSV has French headers, local times with their offset, the unit and the quality."""
    server, tag, _ = served
    op = logged_in_opener(server.url, "sup", PW)
    r = _call(
        op,
        server.url,
        "trends-download.data",
        {"id": "trends-download", "property": "data"},
        [{"id": "trends-download-button", "property": "n_clicks", "value": 1}],
        [
            {"id": "trends-tags", "property": "value", "value": [tag]},
            {"id": "trends-range", "property": "value", "value": "1h"},
            {"id": "trends-zoom", "property": "data", "value": None},
        ],
    )
    data = r["trends-download"]["data"]
    content = data["content"]
    text = base64.b64decode(content).decode() if data.get("base64") else content
    df = pd.read_csv(io.StringIO(text))
    assert list(df.columns) == ["horodatage", "variable", "valeur", "unité", "qualité"]
    assert len(df) in (59, 60, 61) and set(df["unité"]) == {"kW"}
    assert set(df["qualité"]) == {"Bonne"} and df["valeur"].dtype == float
    assert df.horodatage.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00$").all()


TRACE_POINTS = (
    "(() => { const gd = document.querySelector('#trends-graph .js-plotly-plot');"
    " return gd && gd.data && gd.data.length === 1 ? gd.data[0].x.length : -1; })()"
)


def test_range_and_zoom_in_the_browser(served, browser) -> None:
    """A range click draws even when a resize relayouts meanwhile; a zoom draws every point."""
    server, tag, now = served
    page = login_page(browser, server.url, "sup", PW)
    try:
        page.goto(server.url + f"trends?tag={tag}&range=15m")
        page.wait_for_function(f"{TRACE_POINTS} > 0", timeout=30_000)
        # Live follow off: only the user's own actions may bring a new figure.
        page.locator("#trends-follow input[type=checkbox]").uncheck()
        page.locator("label", has=page.locator("input[name=trends-range][value='7d']")).click()
        page.set_viewport_size({"width": 1100, "height": 800})  # the chart relayouts (autosize)
        page.wait_for_function(f"{TRACE_POINTS} > 1000", timeout=30_000)
        assert page.evaluate(TRACE_POINTS) <= 2000 + 1  # and the sample before the window

        lo, hi = _axis(now - timedelta(hours=30)), _axis(now - timedelta(hours=28))
        page.evaluate(
            "([lo, hi]) => Plotly.relayout("
            "document.querySelector('#trends-graph .js-plotly-plot'), {'xaxis.range': [lo, hi]})",
            [lo, hi],
        )
        page.wait_for_function(f"{TRACE_POINTS} === 1 + 120", timeout=30_000)
        assert page.locator("#trends-status").inner_text().startswith("120 points")
        page.screenshot(path=artifact("hmi-trends-zoom.png"))

        page.evaluate(
            "Plotly.relayout(document.querySelector('#trends-graph .js-plotly-plot'),"
            " {'xaxis.autorange': true})"
        )
        page.wait_for_function(f"{TRACE_POINTS} > 1000", timeout=30_000)
    finally:
        page.close()
