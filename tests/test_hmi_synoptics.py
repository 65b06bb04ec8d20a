"""Mimic diagrams show every live value of every class, with its quality in words."""

from __future__ import annotations

import asyncio
import contextlib
import html
import math
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.model import Asset, Quality, Sample, TagSpec, utcnow
from beffroi.core.privacy import PositionPolicy
from beffroi.core.register import build_register
from beffroi.hmi.synoptics import (
    BAD,
    INK,
    LIT,
    STALE,
    Reader,
    private_positions,
    signal_rows,
    synoptic,
)
from beffroi.i18n import in_locale
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import free_port

# A plausible value of every signal of config.toml's classes.
VALUES: dict[str, float | bool | str] = {
    "lit": True,
    "dimming_pct": 50.0,
    "power_kw": 3.2,
    "energy_kwh": 12_345.0,
    "lamp_failures": 2.0,
    "fault": False,
    "plan": 3.0,
    "bus_priority_requests": 12.0,
    "bus_priority_granted": 9.0,
    "lat": 47.32113,
    "lon": 5.04127,
    "speed_kmh": 32.0,
    "delay_s": 30.0,
    "state": "patrol",
    "raised": True,
    "presence": True,
    "message": "Travaux : déviation",
    "online": True,
    "capacity": 540.0,
    "free_spaces": 120.0,
    "occupancy_pct": 77.8,
    "level_pct": 40.0,
    "pump_on": True,
    "flow_m3h": 55.0,
    "fill_pct": 82.0,
    "temperature_c": 19.5,
    "setpoint_c": 20.0,
}
# None: no sample at all (nothing received: stale).
QUALITIES: list[Quality | None] = [
    Quality.GOOD,
    Quality.UNCERTAIN,
    Quality.BAD,
    Quality.COMM_LOSS,
    None,
]
FRENCH_QUALITY = {"good": "bonne", "uncertain": "incertaine", "bad": "mauvaise"}
FRENCH_QUALITY |= {"commloss": "perte de comm.", "stale": "périmée"}


def _asset(register, cls) -> Asset:
    return next(a for a in register.assets.values() if a.asset_class == cls)


def _texts(fig) -> dict[str, tuple[str, str]]:
    return {a.name: (html.unescape(a.text), a.font.color) for a in fig.layout.annotations if a.name}


def _snap(asset, values: dict, now, quality=Quality.GOOD, age_s: float = 1.0) -> dict:
    return {
        asset.tag(k): Sample(asset.tag(k), now - timedelta(seconds=age_s), v, quality)
        for k, v in values.items()
    }


def _mixed(asset: Asset, now, shift: int) -> dict[str, Sample]:
    """Give each signal a quality in turn; a CommLoss sample carries NaN, as collectors send."""
    snap = {}
    for i, spec in enumerate(asset.tags):
        q = QUALITIES[(i + shift) % len(QUALITIES)]
        if q is None:
            continue
        value = float("nan") if q is Quality.COMM_LOSS else VALUES.get(spec.signal, 3.0)
        snap[spec.name] = Sample(spec.name, now - timedelta(seconds=5), value, q)
    return snap


def test_every_class_draws_every_signal_with_its_quality(demo_config, small_register) -> None:
    """Each class of config.toml has a drawing whose texts hold every value and its quality."""
    now = utcnow()
    assert len(demo_config.asset_classes) >= 14  # the ten classes and the municipal fleet
    for cls in demo_config.asset_classes:
        asset = _asset(small_register, cls)
        for shift in range(len(QUALITIES)):  # every signal seen in every quality
            snap = _mixed(asset, now, shift)
            fig = synoptic(asset, snap, now)
            assert fig.layout.shapes, f"{cls}: a drawing, not only a list"
            drawn = [html.unescape(a.text) for a in fig.layout.annotations]
            for r in Reader(asset, snap, now).readings():
                holding = [t for t in drawn if r.text in t]
                assert holding, f"{cls}.{r.signal}: {r.text!r} is not drawn in {drawn}"
                if r.quality != "good":
                    said = f"({FRENCH_QUALITY[r.quality]})"
                    assert any(said in t for t in holding), f"{cls}.{r.signal}: {said} missing"
            # The table beside the drawing says each quality in words, with its sign.
            table = str(signal_rows(asset, Reader(asset, snap, now).readings(), now, True, True))
            for i, spec in enumerate(asset.tags):
                q = QUALITIES[(i + shift) % len(QUALITIES)]
                key = "stale" if q is None else Reader(asset, snap, now)(spec.signal).quality
                assert FRENCH_QUALITY[key] in table
            writable = [t for t in asset.tags if t.writable]
            assert ("/control?asset=" in table) == bool(writable), cls


def test_values_in_french_and_the_control_path_for_setpoints(small_register) -> None:
    """Numbers and words are French; a writable signal links to Control only for those who may."""
    cab, now = _asset(small_register, "streetlight_cabinet"), utcnow()
    snap = _snap(cab, {k: VALUES[k] for k in (t.signal for t in cab.tags)}, now)
    texts = _texts(synoptic(cab, snap, now))
    assert texts["power_kw"][0] == "3,2\u00a0kW"
    assert texts["energy_kwh"][0] == "énergie 12\u202f345\u00a0kWh"
    assert texts["dimming_pct"][0] == "gradation 50\u202f%"
    assert texts["lit"][0] == "lampes allumées"
    assert texts["fault"][0] == "pas de défaut"
    rows = Reader(cab, snap, now).readings()
    may = str(signal_rows(cab, rows, now, control_on=True, may=True))
    assert may.count("/control?asset=" + cab.id) == 1  # dimming_pct, the one setpoint
    viewer = str(signal_rows(cab, rows, now, control_on=True, may=False))
    assert "/control" not in viewer and "consigne" in viewer
    with in_locale("en"):
        assert _texts(synoptic(cab, snap, now))["power_kw"][0] == "3.2\u00a0kW"


def test_cabinet_lamps_and_a_fault(small_register) -> None:
    """A lit cabinet at 50 %: one red lamp per failure; a fault is said large and red."""
    cab, now = _asset(small_register, "streetlight_cabinet"), utcnow()
    values = {k: VALUES[k] for k in (t.signal for t in cab.tags)}
    fig = synoptic(cab, _snap(cab, values, now), now)
    lamps = [s for s in fig.layout.shapes if s.type == "circle"]
    assert len(lamps) == 18
    assert sum(1 for s in lamps if s.fillcolor == BAD) == 2
    assert sum(1 for s in lamps if s.fillcolor == LIT) == 16
    assert _texts(fig)["lamp_failures"][0] == "lampes en panne : 2"  # a count, no decimals
    faulty = synoptic(cab, _snap(cab, {**values, "fault": True}, now), now)
    assert _texts(faulty)["fault"] == ("DÉFAUT", BAD)
    assert not any(s.fillcolor == LIT for s in faulty.layout.shapes)  # no lamp shown lit


def test_values_not_good_are_greyed_and_labelled(small_register) -> None:
    """CommLoss or Uncertain values are grey and say why; an old unchanged value is current."""
    cab, now = _asset(small_register, "streetlight_cabinet"), utcnow()
    snap = _snap(cab, {"power_kw": 3.2}, now, age_s=86_400)  # unchanged for a day: still Good
    snap.update(_snap(cab, {"dimming_pct": float("nan")}, now, quality=Quality.COMM_LOSS))
    snap.update(_snap(cab, {"lamp_failures": 1.0}, now, quality=Quality.UNCERTAIN))
    texts = _texts(synoptic(cab, snap, now))
    assert texts["power_kw"] == ("3,2\u00a0kW", INK)
    assert texts["dimming_pct"] == ("gradation — (perte de comm.)", STALE)
    assert texts["lamp_failures"][0] == "lampes en panne : 1 (incertaine)"
    assert _texts(synoptic(cab, {}, now))["power_kw"] == ("puissance : — (périmée)", STALE)
    # With a reporting period expected, a value older than that many intervals is stale.
    stale = _texts(synoptic(cab, snap, now, stale_factor=3))
    assert stale["power_kw"] == ("3,2\u00a0kW (périmée)", STALE)
    removed = replace(cab, state="removed")
    assert _texts(synoptic(removed, snap, now))["power_kw"][0].endswith("(périmée)")


def test_intersection_reservoir_and_car_park(small_register) -> None:
    """Plan 9 is flashing amber with the share of bus priority; tank and car park gauges."""
    tc, now = _asset(small_register, "traffic_controller"), utcnow()
    values = {"plan": 9.0, "bus_priority_requests": 12.0, "bus_priority_granted": 9.0}
    texts = _texts(synoptic(tc, _snap(tc, {**values, "fault": False}, now), now))
    assert texts["plan"][0] == "plan 9 — orange clignotant"
    assert texts["bus_priority"] == ("priorité bus : 12 demandes, 9 accordées (75\u202f%)", INK)
    lost = _snap(tc, {"bus_priority_requests": float("nan")}, now, quality=Quality.COMM_LOSS)
    lost.update(_snap(tc, {"plan": 1.0, "bus_priority_granted": 9.0}, now))
    assert _texts(synoptic(tc, lost, now))["bus_priority"] == (
        "demandes de priorité bus : — (perte de comm.) · accordées : 9",
        STALE,
    )
    rs = _asset(small_register, "reservoir")
    fig = synoptic(rs, _snap(rs, {"level_pct": 40.0, "pump_on": True, "flow_m3h": 55.0}, now), now)
    water = next(s for s in fig.layout.shapes if s.name == "water")
    assert math.isclose(water.y1 - water.y0, 4.3 * 0.40)
    assert _texts(fig)["pump_on"][0] == "pompe en marche"
    cp = _asset(small_register, "car_park")
    park = {"capacity": 540.0, "free_spaces": 27.0, "occupancy_pct": 95.0}
    fig = synoptic(cp, _snap(cp, park, now), now)
    bar = next(s for s in fig.layout.shapes if s.name == "occupancy")
    assert bar.fillcolor == BAD and math.isclose(bar.x1 - bar.x0, 7.9 * 0.95)
    assert _texts(fig)["free_spaces"][0] == "libres : 27\u00a0places"


def test_vehicles_bollard_panel_building_camera(small_register) -> None:
    """Speed and delay or state; bollard and panel as the street sees them; setpoint gap."""
    now = utcnow()
    bus = _asset(small_register, "bus")
    texts = _texts(synoptic(bus, _snap(bus, {"speed_kmh": 32.0, "delay_s": 150.0}, now), now))
    assert (
        texts["speed_kmh"][0] == "32\u00a0km/h"
        and texts["delay_s"][0] == "2,5 min de retard (150\u00a0s)"
    )
    pm = _asset(small_register, "police_vehicle")
    fig = synoptic(pm, _snap(pm, {"state": "patrol", "lat": 47.32113, "lon": 5.04127}, now), now)
    assert _texts(fig)["state"][0] == "en patrouille"
    assert _texts(fig)["position"][0] == "position 47,32113°, 5,04127°"
    bo = _asset(small_register, "bollard")
    down = synoptic(bo, _snap(bo, {"raised": False, "presence": True}, now), now)
    post = next(s for s in down.layout.shapes if s.name == "post")
    assert post.y1 - post.y0 < 0.5 and any(s.name == "vehicle" for s in down.layout.shapes)
    assert _texts(down)["raised"][0] == "abaissée"
    ip = _asset(small_register, "info_panel")
    said = "Fermeture <b>pont</b> Bir-Hakeim ce soir 22 h"
    texts = _texts(synoptic(ip, _snap(ip, {"message": said, "online": True}, now), now))
    lines = [texts[k][0] for k in sorted(texts) if k.startswith("message-")]
    assert " ".join(lines) == said  # as the panel displays it, markup kept as text
    assert texts["online"][0] == "en ligne"
    bt = _asset(small_register, "building")
    snap = _snap(bt, {"temperature_c": 22.4, "setpoint_c": 20.0, "power_kw": 12.0}, now)
    assert _texts(synoptic(bt, snap, now))["deviation"] == (
        "+2,4 °C par rapport à la consigne",
        BAD,
    )
    cam = _asset(small_register, "camera")
    texts = _texts(synoptic(cam, _snap(cam, {"online": False}, now), now))
    assert texts["online"] == ("hors ligne", BAD)


def test_unknown_class_and_signal_still_shown(small_register) -> None:
    """A class without a drawing lists its signals; a drawn class lists a signal it lacks."""
    now = utcnow()

    def spec(asset: str, signal: str, kind: Any = "float", unit: str = "") -> TagSpec:
        return TagSpec(f"dijon/{asset}/{signal}", asset, "dijon", signal, kind, unit)

    odd = Asset("AQ-1", "air_quality", "dijon", 47.3, 5.0, "environment")
    odd.tags = [spec("AQ-1", "no2_ugm3", unit="µg/m³"), spec("AQ-1", "fault", "bool")]
    snap = _snap(odd, {"no2_ugm3": 41.5}, now, quality=Quality.UNCERTAIN)
    texts = _texts(synoptic(odd, snap, now))
    assert texts["no2_ugm3"] == ("no2_ugm3 : 41,5\u00a0µg/m³ (incertaine)", STALE)
    assert texts["fault"] == ("défaut : — (périmée)", STALE)
    rs = _asset(small_register, "reservoir")
    extra = TagSpec(rs.tag("chlorine_mgl"), rs.id, rs.commune, "chlorine_mgl", "float", "mg/l")
    more = replace(rs, tags=[*rs.tags, extra])
    fig = synoptic(more, _snap(more, {"chlorine_mgl": 0.3, "level_pct": 60.0}, now), now)
    assert _texts(fig)["chlorine_mgl"][0] == "chlorine_mgl : 0,3\u00a0mg/l"
    assert _texts(fig)["level_pct"][0] == "60\u202f%"  # the drawing is still there


def test_staff_vehicle_position_is_coarse_for_roles_without_need(demo_config, small_register):
    """A viewer sees a police car on the coarse grid, said approximate; a supervisor exactly."""
    pm, now = _asset(small_register, "police_vehicle"), utcnow()
    policy = PositionPolicy.from_config(demo_config)
    live = _snap(pm, {"lat": 47.32113, "lon": 5.04127, "speed_kmh": 20.0}, now)
    seen, grid = private_positions(pm, live, policy, "viewer")
    assert grid == demo_config.privacy.coarse_position_m
    assert seen[pm.tag("lat")].value == policy.coarse_lat(47.32113) != 47.32113
    text = _texts(synoptic(pm, seen, now, coarse_m=grid))["position"][0]
    assert text.startswith("position approchée (maille de 500 m)") and "47,32113" not in text
    exact, grid = private_positions(pm, live, policy, "supervisor")
    assert grid is None and exact[pm.tag("lat")].value == 47.32113
    bus = _asset(small_register, "bus")  # passengers' bus: not a staff position
    assert private_positions(bus, _snap(bus, {"lat": 47.3}, now), policy, "viewer")[1] is None


# Reads, in the page, the table rows and the mimic's texts, drawn by one callback.
PAGE_JS = """() => {
  const rows = [...document.querySelectorAll('#synoptic-signals tbody tr')].map(tr =>
    [...tr.querySelectorAll('td')].map(td => td.textContent));
  const plot = document.querySelector('#synoptic-graph .js-plotly-plot');
  const notes = (plot?.layout?.annotations || []).map(a => a.text);
  return {rows, notes, shapes: (plot?.layout?.shapes || []).length,
          head: document.getElementById('synoptic-head')?.textContent || ''};
}"""


def _visit(url: str, password: str, assets: dict[str, str], lost: str) -> dict[str, Any]:
    """Open the synoptic of one asset per class as admin; return what each page shows."""
    seen: dict[str, Any] = {}
    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 500 else None)
        log_in(page, url, "admin", password)
        for cls, asset in assets.items():
            page.goto(f"{url}synoptic?asset={asset}")
            # Every row has a value received, or the lost asset says it lost its link.
            wanted = "perte de comm." if asset == lost else "bonne"
            page.wait_for_function(
                "w => { const r = [...document.querySelectorAll('#synoptic-signals tbody tr')];"
                " const p = document.querySelector('#synoptic-graph .js-plotly-plot');"
                " return r.length > 0 && r.every(tr => tr.textContent.includes(w))"
                " && (p?.layout?.shapes || []).length > 0; }",
                arg=wanted,
                timeout=30_000,
            )
            seen[cls] = page.evaluate(PAGE_JS)
            page.screenshot(path=artifact(f"synoptic-{cls}.png"), full_page=True)
    seen["errors"] = errors
    return seen


async def test_synoptic_page_of_each_class_in_chromium(demo_config_fixture, tmp_path: Path) -> None:
    """An admin opens one asset of each class: values and qualities drawn, a lost link said."""
    require_chromium()
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    register = build_register(cfg, assets=60)
    runtime = Runtime(cfg, register, simulator=True, hmi=True, demo=True)
    assets = {c: _asset(register, c).id for c in cfg.asset_classes}
    camera = register.assets[assets["camera"]]
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        async with asyncio.timeout(30):
            await runtime.collectors[0].wait_connected()
        # The camera's link is lost: what its collector reports then, through the same sink.
        runtime.sink(
            [Sample(t.name, utcnow(), float("nan"), Quality.COMM_LOSS) for t in camera.tags]
        )
        seen = await asyncio.to_thread(
            _visit, runtime.hmi_server.url, runtime.demo_passwords["admin"], assets, camera.id
        )
    assert seen.pop("errors") == []
    assert set(seen) == set(cfg.asset_classes)
    for cls, shown in seen.items():
        asset = register.assets[assets[cls]]
        assert len(shown["rows"]) == len(asset.tags), cls
        assert shown["shapes"] > 0, cls
        notes = html.unescape(" ".join(shown["notes"])).replace("<br>", " ")
        for signal_name, value, quality, _age, _cmd in shown["rows"]:
            assert quality.split(" ", 1)[1] in FRENCH_QUALITY.values(), (cls, quality)
            # The drawing shows the value the table shows (one snapshot draws both).
            if cls == "info_panel" and signal_name == "message":
                value = " ".join(value.split())
            assert value in notes, (cls, signal_name, value, notes)
        if cls == "camera":
            assert "Liaison perdue : 2 valeurs sur 2 inconnues" in shown["head"]
            assert "liaison : — (perte de comm.)" in notes
        if any(t.writable for t in asset.tags):
            assert "Commandes →" in shown["head"], cls
        if cls in ("bus", "police_vehicle"):
            assert "Voir sur la carte →" in shown["head"]


@pytest.mark.parametrize("locale", ["fr", "en"])
def test_quality_words_in_each_language(small_register, locale: str) -> None:
    """The quality words follow the user's language."""
    cam, now = _asset(small_register, "camera"), utcnow()
    snap = _snap(cam, {"online": float("nan")}, now, quality=Quality.COMM_LOSS)
    with in_locale(locale):
        text = _texts(synoptic(cam, snap, now))["online"][0]
    assert text == ("liaison : — (perte de comm.)" if locale == "fr" else "link: — (comm. loss)")
