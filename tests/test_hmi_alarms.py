"""The alarm console in a real browser: banner, acknowledge with a comment, scope and rights."""

from __future__ import annotations

import asyncio
import contextlib
import json
import urllib.error
import urllib.request
from pathlib import Path

from beffroi.alerts.service import AlarmService
from beffroi.app.config import demo_config
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import eventually, free_port
from tests.test_hmi import logged_in_opener

PW = "correct horse battery"


def _fault(asset) -> Sample:
    return Sample(asset.tag("fault"), utcnow(), True)


def _ack_request(alarm_id: str, commune: str) -> dict:
    return {
        "output": "..alarms-feedback.children...alarms-comment.value..",
        "outputs": [
            {"id": "alarms-feedback", "property": "children"},
            {"id": "alarms-comment", "property": "value"},
        ],
        "inputs": [
            {"id": "alarms-ack", "property": "n_clicks", "value": 1},
            {"id": "alarms-shelve", "property": "n_clicks", "value": 0},
        ],
        "changedPropIds": ["alarms-ack.n_clicks"],
        "state": [
            {
                "id": "alarms-active",
                "property": "selectedRows",
                "value": [{"alarm_id": alarm_id, "commune": commune}],
            },
            {"id": "alarms-comment", "property": "value", "value": "hand-built"},
        ],
    }


def _post(opener, url: str, payload: dict) -> int:
    req = urllib.request.Request(
        url + "_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(req, timeout=20) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _panel(opener, url: str, asset_id: str) -> str:
    """Return the map's asset panel for one asset, as the JSON text Dash sends."""
    body = {
        "output": "map-panel.children",
        "outputs": {"id": "map-panel", "property": "children"},
        "inputs": [
            {"id": "map-selected", "property": "data", "value": asset_id},
            {"id": "map-interval", "property": "n_intervals", "value": 1},
        ],
        "changedPropIds": ["map-selected.data"],
        "state": [],
    }
    req = urllib.request.Request(
        url + "_dash-update-component",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with opener.open(req, timeout=20) as resp:
        return json.dumps(json.loads(resp.read()), ensure_ascii=False)


def _browser_ack(url: str, alarm_id: str) -> str:
    """Log in as the supervisor, acknowledge one alarm from the console, return the feedback."""
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 950})
        log_in(page, url, "sup", PW)
        page.goto(url + "alarms")
        page.wait_for_function(
            "document.querySelector('#shell-alarms')?.innerText.startsWith('2 à acquitter')",
            timeout=20_000,
        )
        row = page.locator(f"#alarms-active .ag-row[row-id='{alarm_id}']")
        row.wait_for(timeout=20_000)
        row.locator(".ag-selection-checkbox input, .ag-checkbox-input").first.click()
        page.fill("#alarms-comment", "lampe remplacée demain")
        page.click("#alarms-ack")
        page.wait_for_function(
            "document.querySelector('#alarms-feedback')?.innerText.includes('acquittée')",
            timeout=20_000,
        )
        feedback = page.inner_text("#alarms-feedback")
        page.wait_for_function(
            "document.querySelector('#shell-alarms')?.innerText.startsWith('1 à acquitter')",
            timeout=20_000,
        )
        page.screenshot(path=artifact("hmi-alarms.png"))
        return feedback


async def test_console_acknowledges_with_comment_within_scope(
    tmp_path: Path, demo_config_fixture, small_register
) -> None:
    """A fault raises the banner; the supervisor acknowledges it; others cannot reach past scope."""
    require_chromium()
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=None)
    service = AlarmService(cfg, small_register)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb", set(small_register.communes))
    users.add("sup", PW, "supervisor", ["*"])
    users.add("op-talant", PW, "operator", ["talant"])
    users.add("viewer", PW, "viewer", ["*"])
    dijon = next(
        a
        for a in small_register.assets.values()
        if a.commune == "dijon" and a.asset_class == "traffic_controller"
    )
    talant = next(
        a
        for a in small_register.assets.values()
        if a.commune == "talant" and a.asset_class == "streetlight_cabinet"
    )
    async with contextlib.AsyncExitStack() as stack:
        await service.start(stack)
        app = create_app(cfg, small_register, LiveValues(), hist, users=users, alarms=service)
        server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
        server.start()
        stack.callback(server.stop)
        service.process([_fault(dijon), _fault(talant)])
        await eventually(lambda: len(service.alarms()) == 2)
        dijon_id = f"{dijon.tag('fault')}#controller-fault"
        talant_id = f"{talant.tag('fault')}#cabinet-fault"
        assert {a["alarm_id"] for a in service.alarms()} == {dijon_id, talant_id}

        op = logged_in_opener(server.url, "op-talant", PW)
        assert _post(op, server.url, _ack_request(dijon_id, "talant")) == 403  # lying commune
        viewer = logged_in_opener(server.url, "viewer", PW)
        assert _post(viewer, server.url, _ack_request(talant_id, "talant")) == 403  # no right
        assert all(a["state"] == "unack_active" for a in service.alarms())

        sup = logged_in_opener(server.url, "sup", PW)
        panel = _panel(sup, server.url, dijon.id)
        assert (
            "map-panel-alarms" in panel
            and "P1 · Défaut feux tricolores · active, non acquittée" in panel
        )
        assert "map-panel-spark" in panel

        feedback = await asyncio.to_thread(_browser_ack, server.url, dijon_id)
        assert feedback == "1 alarme acquittée par sup."
        states = {a["alarm_id"]: a["state"] for a in service.alarms()}
        assert states == {dijon_id: "ack_active", talant_id: "unack_active"}
        await eventually(
            lambda: (
                not service.events(alarm_ids=[dijon_id]).empty
                and "lampe remplacée demain"
                in set(service.events(alarm_ids=[dijon_id]).get("comment", []))
            )
        )
    users.close()
    hist.close()
