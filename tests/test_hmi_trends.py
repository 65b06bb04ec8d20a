"""Trends: server-side downsampling, zoom that fetches detail, and CSV of what is shown."""

from __future__ import annotations

import base64
import io
import json
import urllib.request
from datetime import timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest

from beffroi.core.live import LiveValues
from beffroi.core.model import utcnow
from beffroi.historian.duckdb import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener

PW = "correct horse battery"
PARIS = ZoneInfo("Europe/Paris")


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_config, small_register):
    """An HMI over a historian holding 8 days of one-minute power values of one cabinet."""
    folder = tmp_path_factory.mktemp("trends")
    tag = next(t for t in small_register.tags if t.endswith("/power_kw"))
    hist = DuckDBHistorian(folder / "h.duckdb")
    now = utcnow().replace(second=0, microsecond=0)
    n = 8 * 24 * 60
    ts_us = np.int64(now.timestamp() * 1e6) - np.arange(n)[::-1].astype(np.int64) * 60_000_000
    values = 5 + np.sin(np.arange(n) / 300)
    hist.write_columns([tag], np.zeros(n, np.int32), ts_us, values)
    hist.compact()
    users = UserStore(folder / "u.duckdb")
    users.add("sup", PW, "supervisor", ["*"])
    app = create_app(demo_config, small_register, LiveValues(), hist, users=users)
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
        return json.loads(resp.read())["response"]


def _graph(
    opener, url, tag, range_key, relayout=None, zoom=None, changed=()
) -> tuple[list[dict], dict]:
    """Ask for the trend as the browser does; a relayout is the user zooming on the chart."""
    r = _call(
        opener,
        url,
        "..trends-graph.figure...trends-status.children...trends-zoom.data..",
        [
            {"id": "trends-graph", "property": "figure"},
            {"id": "trends-status", "property": "children"},
            {"id": "trends-zoom", "property": "data"},
        ],
        [
            {"id": "trends-tags", "property": "value", "value": [tag]},
            {"id": "trends-range", "property": "value", "value": range_key},
            {"id": "trends-interval", "property": "n_intervals", "value": 0},
            {"id": "trends-graph", "property": "relayoutData", "value": relayout},
        ],
        [{"id": "trends-zoom", "property": "data", "value": zoom}],
        changed=changed or (["trends-graph.relayoutData"] if relayout else []),
    )
    return r["trends-graph"]["figure"]["data"], r["trends-zoom"]["data"]


def test_seven_days_are_downsampled_and_a_zoom_brings_every_point(served) -> None:
    """The browser never gets more than 2,000 points a tag; zooming re-queries for detail."""
    server, tag, now = served
    op = logged_in_opener(server.url, "sup", PW)
    week, zoom = _graph(op, server.url, tag, "7d")
    assert 1000 < len(week[0]["x"]) <= 2000  # 10,080 stored minutes
    assert zoom is None
    lo = (now - timedelta(hours=30)).astimezone(PARIS).replace(tzinfo=None)
    hi = (now - timedelta(hours=28)).astimezone(PARIS).replace(tzinfo=None)
    relayout = {"xaxis.range[0]": lo.isoformat(sep=" "), "xaxis.range[1]": hi.isoformat(sep=" ")}
    detail, zoom = _graph(op, server.url, tag, "7d", relayout=relayout)
    assert zoom["start"].endswith("+00:00")
    assert len(detail[0]["x"]) == 120  # every stored minute of the two hours
    # A new range leaves the zoomed window: the whole week again, downsampled.
    week_again, zoom = _graph(op, server.url, tag, "7d", zoom=zoom)
    assert zoom is None and len(week_again[0]["x"]) == len(week[0]["x"])
    # A new range and the redraw's own relayout arrive together: the range wins.
    both = ["trends-graph.relayoutData", "trends-range.value"]
    day, zoom = _graph(op, server.url, tag, "24h", {"autosize": True}, zoom=None, changed=both)
    assert zoom is None and 1000 < len(day[0]["x"]) <= 1440
    # Double-click (autorange) zooms back out.
    back, zoom = _graph(op, server.url, tag, "7d", relayout={"xaxis.autorange": True}, zoom=zoom)
    assert zoom is None and len(back[0]["x"]) == len(week[0]["x"])


def test_csv_download_is_what_the_chart_shows(served) -> None:
    """The CSV has local times with their offset, the unit and the quality of each value."""
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
    assert list(df.columns) == ["time", "tag", "value", "unit", "quality"]
    assert len(df) in (59, 60, 61) and set(df.unit) == {"kW"} and set(df.quality) == {"Good"}
    assert df.time.str.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+0[12]:00$").all()
