"""The Control page: a supervisor runs and rolls back the accident playbook in Chromium; an
operator is refused playbooks and other communes' setpoints, even by hand-built requests."""

from __future__ import annotations

import asyncio

from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import free_port
from tests.test_audit import _login
from tests.test_control_helpers import P, dash_request, post_callback, running_scene, scene_config

PW = "correct horse battery"
MESSAGE = "Accident rue de la Liberté : suivez la déviation"


def _preview(lat: float, lon: float) -> dict:
    return dash_request(
        ["control-run-id.data", "control-preview-feedback.children"],
        {"control-preview.n_clicks": 1},
        {
            "control-playbook.value": "accident",
            "control-lat.value": lat,
            "control-lon.value": lon,
            "control-radius.value": None,
            "control-place.value": "rue de la Liberté",
        },
    )


def _select(tag: str) -> dict:
    return dash_request(
        ["control-selection.children", "control-selection-id.data"],
        {"control-select.n_clicks": 1},
        {"control-signal.value": tag},
    )


def _operate(selection_id: str, value: str) -> dict:
    return dash_request(
        ["control-result.children"],
        {"control-operate.n_clicks": 1},
        {
            "control-selection-id.data": selection_id,
            "control-value.value": value,
            "control-reason.value": "réglage du plan de feux",
        },
    )


def _browser_run(url: str, values) -> dict:  # type: ignore[no-untyped-def]
    """Log in as the supervisor, preview the accident at P, run it, roll it back."""
    seen: dict = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        log_in(page, url, "sup", PW)
        page.goto(url + "control")
        page.wait_for_selector("#control-map .leaflet-container, #control-map.leaflet-container")
        page.click("#control-map", position={"x": 200, "y": 120})  # a place picked on the map
        page.wait_for_function("document.querySelector('#control-lat').value !== ''")
        seen["clicked"] = float(page.input_value("#control-lat"))
        page.fill("#control-lat", str(P[0]))
        page.fill("#control-lon", str(P[1]))
        page.fill("#control-place", "rue de la Liberté")
        page.click("#control-preview")
        page.wait_for_function(
            "document.querySelector('#control-preview-feedback')?.innerText.startsWith('Prévisualisation')"
        )
        seen["preview"] = page.inner_text("#control-preview-feedback")
        page.wait_for_selector(".control-command")
        seen["planned"] = page.locator(".control-command").count()
        page.wait_for_selector("#control-run:not([disabled])")
        page.click("#control-run")
        page.wait_for_function(
            "document.querySelector('#control-run-state')?.innerText === 'terminé'", timeout=60_000
        )
        seen["steps"] = [page.inner_text(f"#control-step-{i}") for i in range(1, 5)]
        seen["after_run"] = values()
        page.wait_for_selector("#control-rollback:not([disabled])")
        page.click("#control-rollback")
        page.wait_for_function(
            "document.querySelector('#control-run-state')?.innerText === 'annulé'",
            timeout=60_000,
        )
        seen["after_rollback"] = values()
        page.screenshot(path=artifact("hmi-control-playbook.png"), full_page=True)
    return seen


async def test_playbook_from_the_browser_and_refusals_by_hand(demo_config, tmp_path) -> None:
    """Operators get 403 on playbooks and other communes; the supervisor previews, runs and
    rolls back the accident playbook from the Control page, confirmed on the equipment."""
    cfg = scene_config(demo_config, tmp_path, classes={})
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb")
    users.add("sup", PW, "supervisor", ["*"])
    users.add("op-talant", PW, "operator", ["talant"])
    async with running_scene(cfg) as scene:
        app = create_app(
            cfg,
            scene.register,
            scene.live,
            hist,
            users=users,
            audit=scene.control.audit,
            control=scene.control,
        )
        server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
        server.start()
        try:
            url = server.url
            op = await asyncio.to_thread(_login, url, "op-talant")

            async def call(opener, payload):  # type: ignore[no-untyped-def]
                return await asyncio.to_thread(post_callback, opener, url, payload)

            assert (await call(op, _preview(*P)))[0] == 403
            assert (await call(op, _select(scene.tag("TC-T1", "plan"))))[0] == 403
            status, body = await call(op, _select(scene.tag("TC-T5", "plan")))
            assert status == 200
            selection_id = body["response"]["control-selection-id"]["data"]
            status, body = await call(op, _operate(selection_id, "3"))
            assert status == 200 and "CONFIRMÉ" in str(body["response"]["control-result"])
            assert scene.value("TC-T5", "plan") == 3.0
            assert not scene.control.playbooks.runs()

            require_chromium()
            for tag, value in (
                (scene.tag("IP-T1", "message"), "Marché couvert ouvert"),
                (scene.tag("TC-T2", "plan"), 1.0),
                (scene.tag("LC-T1", "dimming_pct"), 40.0),
            ):
                assert (await scene.collector.write(tag, value)).ok
            await asyncio.sleep(0.5)  # the live values follow, through the subscription
            before = {
                "IP-T1": scene.value("IP-T1", "message"),
                "TC-T2": scene.value("TC-T2", "plan"),
                "LC-T1": scene.value("LC-T1", "dimming_pct"),
            }

            def values() -> dict:
                return {
                    "IP-T1": scene.value("IP-T1", "message"),
                    "TC-T2": scene.value("TC-T2", "plan"),
                    "LC-T1": scene.value("LC-T1", "dimming_pct"),
                }

            seen = await asyncio.to_thread(_browser_run, url, values)
        finally:
            server.stop()
        assert 47.0 < seen["clicked"] < 47.7
        assert seen["preview"].startswith("Prévisualisation : 7 commandes et 1 courriel.")
        assert seen["planned"] == 7
        assert "confirmé" in seen["steps"][0] and "IP-T1" in seen["steps"][0]
        assert "Courriel à police-municipale@dijon-metropole.fr" in seen["steps"][3]
        assert seen["after_run"] == {"IP-T1": MESSAGE, "TC-T2": 5.0, "LC-T1": 100.0}
        assert seen["after_rollback"] == before
        run = scene.control.playbooks.runs()[0]
        assert run.user == "sup" and run.rolled_back_by == "sup" and run.state == "rolled_back"
        assert scene.control.audit.verify().ok
    users.close()
    hist.close()
