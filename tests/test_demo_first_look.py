"""A new user's first five minutes after `make demo`, in Chromium, through the real path.

The gateway starts as `beffroi demo` does, with days of simulated history written at its first
start and their KPIs computed in the background; once they are, an admin looks at the command
post on a desktop and on a phone: a French interface, a map that orients with vehicles moving
on it, trends and KPIs reaching back to the start of the history, marked as simulated, and the
public page of car parks. Each step is saved as a screenshot under tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from beffroi.app.config import Config, demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.register import Register, build_register
from beffroi.simulator.history import simulated_until
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import free_port

PARIS = ZoneInfo("Europe/Paris")
HISTORY_DAYS = 3
ASSETS = 120
VIEWPORTS = {"desktop": {"width": 1400, "height": 900}, "phone": {"width": 390, "height": 844}}
FLEET = ("police_vehicle", "maintenance_van", "street_sweeper", "waste_truck")
NNBSP = "\u202f"
# Where each vehicle's marker is drawn (its SVG path), by asset id (absent: not drawn).
POSITIONS_JS = """ids => Object.fromEntries(ids.flatMap(id => {
  const el = document.querySelector('path.beffroi-id-' + id);
  return el ? [[id, el.getAttribute('d')]] : [];
}))"""
PLOT = "document.querySelector('{sel} .js-plotly-plot')"


def _with_history(cfg: Config, days: int) -> Config:
    """Return the config with days of simulated history at the first start."""
    out = cfg.model_copy(
        update={"simulator": cfg.simulator.model_copy(update={"history_days": days})}
    )
    out._source = cfg.source
    return out


def _look(url: str, password: str, register: Register, tag: str, size: str) -> dict[str, Any]:
    """Walk the first five minutes at one screen size; return what was seen."""
    seen: dict[str, Any] = {"errors": []}
    buses = [a.id for a in register.assets.values() if a.asset_class == "bus"]
    fleet = [a.id for a in register.assets.values() if a.asset_class in FLEET]
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORTS[size], locale="fr-FR")
        page.on("pageerror", lambda exc: seen["errors"].append(f"page error: {exc}"))
        page.on(
            "response",
            lambda r: seen["errors"].append(f"{r.status} {r.url}") if r.status >= 500 else None,
        )
        log_in(page, url, "admin", password)

        # (a) A French interface, (b) a map that orients, with vehicles moving on it.
        page.goto(url)
        page.wait_for_selector(
            ".leaflet-beffroi-schematic-pane path", state="attached", timeout=30_000
        )
        page.wait_for_selector("path.beffroi-asset", timeout=30_000)
        seen["lang"] = page.get_attribute("html", "lang")
        seen["nav"] = [
            page.inner_text(f"#shell-nav-{k}") for k in ("map", "trends", "alarms", "kpis")
        ]
        seen["banner"] = page.inner_text("#shell-history")
        seen["outlines"] = page.locator(".leaflet-beffroi-schematic-pane path").count()
        page.wait_for_function(
            "ids => ids.some(id => document.querySelector('path.beffroi-id-' + id))",
            arg=buses,
            timeout=30_000,
        )
        before = page.evaluate(POSITIONS_JS, buses + fleet)
        seen["buses"] = sum(1 for i in buses if i in before)
        seen["fleet"] = sum(1 for i in fleet if i in before)
        page.screenshot(path=artifact(f"first-look-map-{size}.png"))
        # The frames come every 2 s; a vehicle on the road moves within a few of them.
        moved: list[str] = []
        for _ in range(30):
            page.wait_for_timeout(2000)
            now = page.evaluate(POSITIONS_JS, buses + fleet)
            moved = [i for i in before if i in now and now[i] != before[i]]
            if moved:
                break
        seen["moved"] = moved

        # (c) The trend of a cabinet's power reaches back to the start of the history.
        page.goto(url + f"trends?tag={tag}&range=7d")
        graph = PLOT.format(sel="#trends-graph")
        page.wait_for_function(f"{graph}?.data?.[0]?.x?.length > 0", timeout=30_000)
        seen["trend_first"] = page.evaluate(f"{graph}.data[0].x[0]")
        seen["trend_bands"] = page.evaluate(
            f"({graph}.layout.shapes || []).filter(s => s.name === 'simulated-history').length"
        )
        page.screenshot(path=artifact(f"first-look-trends-{size}.png"))

        # (d) The KPI page: a month of lighting savings against the baseline and the target.
        page.goto(url + "kpis")
        month = PLOT.format(sel="#kpis-month")
        page.wait_for_function(f"{month}?.data?.length >= 4", timeout=60_000)
        seen["kpi_traces"] = page.evaluate(
            f"{month}.data.map(t => ({{name: t.name, x: t.x, y: t.y}}))"
        )
        seen["kpi_bands"] = page.evaluate(
            f"({month}.layout.shapes || []).filter(s => s.name === 'simulated-history').length"
        )
        seen["kpi_headline"] = page.inner_text("#kpis-month-headline")
        seen["kpi_banner"] = page.inner_text("#shell-history")
        page.screenshot(path=artifact(f"first-look-kpis-{size}.png"), full_page=True)

        # (e) The public page of car parks, no login needed.
        public = browser.new_page(viewport=VIEWPORTS[size], locale="fr-FR")
        public.goto(url + "public/parking")
        public.wait_for_selector("#parking-map[data-ready=true]", timeout=30_000)
        public.wait_for_selector("#parking-list > li", timeout=30_000)
        seen["parks"] = public.locator("#parking-list > li").count()
        seen["parking_title"] = public.title()
        public.screenshot(path=artifact(f"first-look-parking-{size}.png"), full_page=True)
    return seen


async def test_first_five_minutes_after_make_demo(demo_config_fixture, tmp_path: Path) -> None:
    """French, a map with moving vehicles, days of trends and KPIs marked simulated, car parks."""
    require_chromium()
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg = _with_history(cfg, HISTORY_DAYS)
    register = build_register(cfg, assets=ASSETS)
    runtime = Runtime(cfg, register, simulator=True, hmi=True, demo=True)
    cabinet = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    tag = cabinet.tag("power_kw")
    parks = sum(1 for a in register.assets.values() if a.asset_class == "car_park")
    seen: dict[str, dict[str, Any]] = {}
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        async with asyncio.timeout(60):
            await runtime.collectors[0].wait_connected()
        assert runtime.history_done is not None, "the demo wrote no simulated history"
        async with asyncio.timeout(900):  # generous: this is no measure of speed
            await runtime.history_done
        interval = simulated_until(cfg)
        assert runtime.hmi_server is not None and interval is not None
        for size in VIEWPORTS:
            seen[size] = await asyncio.to_thread(
                _look, runtime.hmi_server.url, runtime.demo_passwords["admin"], register, tag, size
            )
    start, end = interval
    history_days = {
        (start + timedelta(days=d)).astimezone(PARIS).date()
        for d in range((end - start).days + 1)
        if start + timedelta(days=d) < end
    }
    said = "Données simulées : historique de démonstration du "
    said += f"{start.astimezone(PARIS):%d/%m/%Y} au {end.astimezone(PARIS):%d/%m/%Y}"
    for size, look in seen.items():
        assert look["errors"] == [], size
        # (a) French.
        assert look["lang"] == "fr"
        assert look["nav"] == ["Carte", "Tendances", "Alarmes", "Indicateurs"], size
        assert look["banner"] == said and look["kpi_banner"] == said, size
        # (b) The schematic of the communes, buses and fleet vehicles, moving.
        assert look["outlines"] >= 24, size
        assert look["buses"] >= 1 and look["fleet"] >= 1, size
        assert look["moved"], (size, "no vehicle moved on the map")
        # (c) The trend starts at the history's start, at least two days back, shaded.
        first = datetime.fromisoformat(look["trend_first"]).replace(tzinfo=PARIS)
        assert first <= datetime.now(PARIS) - timedelta(days=HISTORY_DAYS - 1), look["trend_first"]
        assert first <= start.astimezone(PARIS) + timedelta(hours=1), look["trend_first"]
        assert look["trend_bands"] == 1, size
        # (d) One point a day of history, the daily savings and the 65 % target.
        traces = {t["name"]: t for t in look["kpi_traces"]}
        assert set(traces) == {"référence", "mesuré", "économie", f"objectif 65{NNBSP}%"}, size
        days = [datetime.fromisoformat(x).date() for x in traces["économie"]["x"]]
        assert days == sorted(history_days), (days, history_days)
        assert all(0 < y < 100 for y in traces["économie"]["y"]), traces["économie"]["y"]
        assert traces[f"objectif 65{NNBSP}%"]["y"] == [65, 65]
        assert look["kpi_bands"] == 1
        assert "Économie d'éclairage sur 30 jours :" in look["kpi_headline"]
        assert f"(objectif 65{NNBSP}%)" in look["kpi_headline"]
        # (e) Every car park on the public page, on a phone as on a desktop.
        assert look["parks"] == parks, size
