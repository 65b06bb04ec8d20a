"""The maps' background: tile layers from config, the offline schematic, labels off the markers,
vehicles with their trails under the privacy policy, and the Control page's playbook map."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.server
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import shapely.geometry as sg
from flask import Flask

from beffroi.app.config import Config, parse_config
from beffroi.core.errors import ConfigError
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.privacy import PositionPolicy
from beffroi.core.register import Register, build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.basemap import (
    SCHEMATIC_URL,
    public_map_settings,
    register_basemap,
    schematic_geojson,
)
from beffroi.hmi.config import MapConfig, TileLayerConfig
from beffroi.hmi.public import register_public
from beffroi.hmi.server import HmiServer
from beffroi.hmi.state import asset_rows, shown_positions, trail_allowed, vehicle_trails
from beffroi.hmi.users import UserStore
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent
PW = "correct horse battery"
# The smallest PNG: Leaflet stretches it over its 256 px tile.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _with_map(cfg: Config, **map_cfg: object) -> Config:
    """Return the config with `[hmi.map]` replaced."""
    out = cfg.model_copy(
        update={"hmi": cfg.hmi.model_copy(update={"map": MapConfig.model_validate(map_cfg)})}
    )
    out._source = cfg.source
    return out


# --- config ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("layer", "expected"),
    [
        (
            'name = "OSM"\nurl = "ftp://tiles.example/{z}/{x}/{y}.png"\nattribution = "© OSM"',
            "hmi.map.layers[0].url: expected an http(s) URL template",
        ),
        (
            'name = "OSM"\nurl = "https://tiles.example/{z}/{x}.png"\nattribution = "© OSM"',
            "hmi.map.layers[0].url: the URL template lacks {y}",
        ),
        (
            'name = "OSM"\nurl = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"',
            "hmi.map.layers[0].attribution: required: the tile provider's credit",
        ),
        (
            'name = "OSM"\nurl = "https://{s}.tiles.example/{z}/{x}/{y}.png"\nattribution = "x"',
            "the URL uses {s}: set subdomains",
        ),
        (
            'name = "OSM"\nurl = "https://t.example/{z}/{x}/{y}.png"\nattribution = "x"\n'
            "min_zoom = 15\nmax_zoom = 10",
            "min_zoom (15) exceeds max_zoom (10)",
        ),
    ],
)
def test_tile_layer_errors_name_the_toml_key(layer: str, expected: str) -> None:
    """A bad tile layer is refused at load time, naming its key and what was expected."""
    text = (ROOT / "config.toml").read_text() + "\n[[hmi.map.layers]]\n" + layer + "\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text)
    assert expected in str(err.value)


def test_tile_layers_load_and_the_schematic_defaults() -> None:
    """Layers load in order; the schematic is drawn alone by default, under tiles on demand."""
    assert MapConfig().draws_schematic
    osm = TileLayerConfig(
        name="OSM",
        url="https://tile.openstreetmap.org/{z}/{x}/{y}.png",
        attribution="© les contributeurs d'OpenStreetMap",
    )
    assert not MapConfig(layers=[osm]).draws_schematic
    assert MapConfig(layers=[osm], schematic=True).draws_schematic
    text = (ROOT / "config.toml").read_text() + (
        '\n[hmi.map]\nschematic = true\nzoom = 13\n[[hmi.map.layers]]\nname = "Plan IGN"\n'
        'url = "https://data.geopf.fr/wmts?SERVICE=WMTS&REQUEST=GetTile&VERSION=1.0.0'
        "&LAYER=GEOGRAPHICALGRIDSYSTEMS.PLANIGNV2&STYLE=normal&FORMAT=image/png"
        '&TILEMATRIXSET=PM&TILEMATRIX={z}&TILEROW={y}&TILECOL={x}"\n'
        'attribution = "IGN-F / Géoportail"\nmax_zoom = 19\n'
    )
    cfg = parse_config(text)
    settings = public_map_settings(cfg)
    assert [t["name"] for t in settings["tiles"]] == ["Plan IGN"]
    assert settings["schematic"] == SCHEMATIC_URL and settings["zoom"] == 13
    assert settings["attribution"].startswith("IGN-F / Géoportail | Fond schématique")
    assert 47.2 < settings["center"][0] < 47.4 and 4.9 < settings["center"][1] < 5.2
    json.dumps(settings)  # JSON-ready for the public page


# --- the schematic --------------------------------------------------------------------------


def test_schematic_has_a_cell_per_commune_holding_its_centre(demo_config: Config) -> None:
    """24 valid, disjoint commune cells, each around its own centre, and links between them."""
    gj = schematic_geojson(demo_config.communes)
    cells = {
        f["properties"]["id"]: sg.shape(f["geometry"])
        for f in gj["features"]
        if f["properties"]["kind"] == "commune"
    }
    assert len(demo_config.communes) == 24 and set(cells) == {c.id for c in demo_config.communes}
    for c in demo_config.communes:
        assert cells[c.id].is_valid and cells[c.id].contains(sg.Point(c.lon, c.lat)), c.id
    ids = sorted(cells)
    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            assert cells[a].intersection(cells[b]).area < 1e-9, (a, b)
    links = [f for f in gj["features"] if f["properties"]["kind"] == "link"]
    linked = {f["properties"]["from"] for f in links} | {f["properties"]["to"] for f in links}
    assert linked == set(cells)  # every commune joined to a neighbour


def test_schematic_is_public_cached_and_revalidated(demo_config: Config) -> None:
    """Served without login before the public catch-all, with Cache-Control and an ETag."""
    server = Flask(__name__)
    register_basemap(server, demo_config)
    register_public(server, demo_config, build_register(demo_config, assets=10), LiveValues())
    client = server.test_client()
    resp = client.get(SCHEMATIC_URL)
    assert resp.status_code == 200 and resp.mimetype == "application/geo+json"
    assert "public" in resp.headers["Cache-Control"] and "max-age" in resp.headers["Cache-Control"]
    body = resp.get_json()
    assert sum(f["properties"]["kind"] == "commune" for f in body["features"]) == 24
    again = client.get(SCHEMATIC_URL, headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""
    assert client.get("/public/anything-else.geojson").status_code == 404


# --- vehicles: privacy and trails -----------------------------------------------------------


def _vehicle(register: Register, asset_class: str) -> Asset:
    return next(
        a
        for a in sorted(register.assets.values(), key=lambda a: a.id)
        if a.asset_class == asset_class
    )


def _drive(asset: Asset, start: tuple[float, float], minutes: int) -> list[Sample]:
    """Return a vehicle's lat and lon samples, one a minute heading north-east, up to now."""
    now = utcnow()
    out = []
    for i in range(minutes):
        ts = now - timedelta(minutes=minutes - i)
        lat, lon = start[0] + 0.001 * i, start[1] + 0.0015 * i
        # Stored apart, a few seconds apart, as compression leaves them.
        out += [
            Sample(asset.tag("lat"), ts, lat),
            Sample(asset.tag("lon"), ts + timedelta(seconds=3), lon),
        ]
    return out


def test_trails_follow_the_history_and_staff_positions_are_coarse(
    demo_config: Config, tmp_path: Path
) -> None:
    """A trail pairs lat and lon stored apart; staff vehicles are coarse and trail-less for
    roles without the need to know, exact with a trail for supervisors; buses always exact."""
    register = build_register(demo_config, assets=400)
    bus = _vehicle(register, "bus")
    police = _vehicle(register, "police_vehicle")
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    try:
        hist.write(_drive(bus, (47.30, 5.00), 30) + _drive(police, (47.33, 5.05), 30))
        hist.write(
            [
                Sample(
                    bus.tag("lat"),
                    utcnow() - timedelta(seconds=30),
                    float("nan"),
                    Quality.COMM_LOSS,
                )
            ]
        )
        trails = vehicle_trails(hist, [bus, police], utcnow())
    finally:
        hist.close()
    # 15 min window: the point held at its start, then one per stored sample of lat or lon.
    bus_trail = trails[bus.id]
    assert 25 <= len(bus_trail) <= 32
    lats = [p[0] for p in bus_trail]
    assert lats == sorted(lats) and lats[-1] == pytest.approx(47.30 + 0.029)
    policy = PositionPolicy.from_config(demo_config)
    assert trail_allowed(policy, "supervisor", "police_vehicle")
    assert not trail_allowed(policy, "viewer", "police_vehicle")
    assert trail_allowed(policy, "viewer", "bus")
    live = LiveValues()
    exact = (47.33123, 5.05123)
    live.update(
        [
            Sample(police.tag("lat"), utcnow(), exact[0]),
            Sample(police.tag("lon"), utcnow(), exact[1]),
            Sample(bus.tag("lat"), utcnow(), exact[0]),
            Sample(bus.tag("lon"), utcnow(), exact[1]),
        ]
    )
    for role, police_exact in (("viewer", False), ("operator", False), ("supervisor", True)):
        rows = asset_rows([police, bus], live.snapshot())
        shown_positions(rows, policy, role)
        got = {r["id"]: (r["lat"], r["lon"]) for r in rows}
        assert got[bus.id] == exact
        assert (got[police.id] == exact) is police_exact, role
        if not police_exact:
            assert got[police.id] == policy.show(role, "police_vehicle", *exact)
            assert abs(got[police.id][0] - exact[0]) < 0.005


# --- in Chromium ----------------------------------------------------------------------------


class _Tiles(http.server.BaseHTTPRequestHandler):
    """A tile server: a PNG for every path, each path remembered."""

    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(PNG)))
        self.end_headers()
        self.wfile.write(PNG)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def tile_server() -> Iterator[tuple[str, list[str]]]:
    """Serve tiles on a free port; yield its base URL and the paths requested."""
    seen: list[str] = []
    handler = type("Tiles", (_Tiles,), {"seen": seen})
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", seen
    finally:
        srv.shutdown()
        srv.server_close()


# Boxes of the labels shown and of every marker (single assets and groups) in the map.
OVERLAPS_JS = """
() => {
  const box = document.querySelector('#map-leaflet');
  const rect = (el) => el.getBoundingClientRect();
  const shown = Array.from(box.querySelectorAll('.map-commune-label:not(.map-label-hidden) span'));
  const marks = Array.from(box.querySelectorAll('path.beffroi-asset, .beffroi-cluster'));
  const hit = (a, b) =>
    a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom;
  const pairs = [];
  for (const l of shown) for (const m of marks) if (hit(rect(l), rect(m)))
    pairs.push(l.innerText + ' / ' + (m.getAttribute('class') || ''));
  return {labels: shown.length, markers: marks.length, overlaps: pairs};
}
"""


def _map_checks(url: str, bus_id: str) -> dict:
    """Open the map as a supervisor; return what the background, labels and trail show."""
    seen: dict = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, url, "sup", PW)
        page.goto(url)
        page.wait_for_selector(".leaflet-beffroi-schematic-pane path", state="attached")
        page.wait_for_selector("path.beffroi-asset, .beffroi-cluster", timeout=20_000)
        seen["outlines"] = page.locator(".leaflet-beffroi-schematic-pane path").count()
        seen["switcher"] = page.locator(".leaflet-control-layers-base input").count()
        page.wait_for_function("document.querySelectorAll('.leaflet-tile-loaded').length > 0")
        checks = []
        for zoom_in in (0, 1, 2):
            if zoom_in:
                page.locator(".leaflet-control-zoom-in").click()
                page.wait_for_function("!document.querySelector('.leaflet-zoom-anim')")
            page.wait_for_timeout(300)
            page.wait_for_function(
                "document.querySelector('#map-leaflet').dataset.labelPending === '0'"
            )
            checks.append(page.evaluate(OVERLAPS_JS))
            if not zoom_in:
                page.screenshot(path=artifact("hmi-map-basemap.png"))
        seen["checks"] = checks
        # The bus's trail: selected by a click on its marker, in the opening view.
        page.goto(url)
        page.locator("#map-cluster input[type=checkbox]").uncheck()
        bus = page.locator(f"path.beffroi-id-{bus_id}")
        bus.wait_for(timeout=10_000)
        bus.click(force=True)
        page.wait_for_selector(f".leaflet-beffroi-trails-pane path.map-trail-{bus_id}")
        seen["trail"] = page.locator(f"path.map-trail-{bus_id}").count()
        page.screenshot(path=artifact("hmi-map-trail.png"))
        seen["errors"] = errors
    return seen


def test_map_draws_tiles_schematic_labels_off_markers_and_a_trail(
    demo_config: Config, tmp_path: Path
) -> None:
    """A supervisor's map asks the configured tile server for tiles, draws the schematic
    under the markers, keeps every shown label off every marker, and a bus's trail."""
    require_chromium()
    register = build_register(demo_config, assets=120)
    bus = _vehicle(register, "bus")
    live = LiveValues()
    now = utcnow()
    live.update(
        [
            Sample(t.name, now, {"float": 12.5, "bool": False, "str": "ok"}[t.kind])
            for a in register.assets.values()
            for t in a.tags
            if t.signal not in ("lat", "lon")
        ]
        + [Sample(bus.tag("lat"), now, 47.329), Sample(bus.tag("lon"), now, 5.0435)]
    )
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    hist.write(_drive(bus, (47.30, 5.00), 30))
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    users.add("sup", PW, "supervisor", ["*"])
    with tile_server() as (tiles, requested):
        cfg = _with_map(
            demo_config,
            schematic=True,
            layers=[
                {"name": "Plan", "url": tiles + "/plan/{z}/{x}/{y}.png", "attribution": "Test"},
                {"name": "Photo", "url": tiles + "/photo/{z}/{x}/{y}.png", "attribution": "T"},
            ],
        )
        app = create_app(cfg, register, live, hist, users=users)
        server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
        server.start()
        try:
            seen = _map_checks(server.url, bus.id)
        finally:
            server.stop()
            hist.close()
            users.close()
    assert seen["errors"] == []
    assert seen["outlines"] >= 24
    assert seen["switcher"] == 2  # two base layers to choose from
    assert requested and all(p.startswith("/plan/") for p in requested)  # the default layer
    z, x, y = requested[0].removeprefix("/plan/").removesuffix(".png").split("/")
    assert 9 <= int(z) <= 19 and int(x) > 0 and int(y) > 0
    for check in seen["checks"]:
        assert check["markers"] > 0 and check["overlaps"] == [], check
    assert max(c["labels"] for c in seen["checks"]) >= 8  # labels are shown, not all hidden
    assert seen["trail"] == 1


def _control_checks(url: str) -> dict:
    """Preview the accident playbook from the Control page; return what its map shows."""
    seen: dict = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1100})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(page, url, "sup", PW)
        page.goto(url + "control")
        try:
            # Attached, not visible: the SVG renderer empties the paths outside the view.
            page.wait_for_selector(
                "#control-map .leaflet-beffroi-schematic-pane path", state="attached"
            )
        finally:
            page.screenshot(path=artifact("hmi-control-map.png"), full_page=True)
            assert errors == []
        seen["outlines"] = page.locator("#control-map .leaflet-beffroi-schematic-pane path").count()
        seen["labels"] = page.locator("#control-map .map-commune-label").count()
        from tests.test_control_helpers import P

        page.fill("#control-lat", str(P[0]))
        page.fill("#control-lon", str(P[1]))
        page.click("#control-preview")
        page.wait_for_selector("#control-map path.control-map-target", state="attached")
        seen["targets"] = page.locator("#control-map path.control-map-target").count()
        seen["planned"] = page.locator(".control-command").count()
        page.screenshot(path=artifact("hmi-control-map.png"), full_page=True)
    return seen


async def test_control_playbook_map_has_the_background_and_its_targets(
    demo_config: Config, tmp_path: Path
) -> None:
    """The playbook map shows the schematic, the labels, and each asset the preview acts on."""
    from tests.test_control_helpers import running_scene, scene_config

    require_chromium()
    cfg = scene_config(demo_config, tmp_path, classes={})
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb")
    users.add("sup", PW, "supervisor", ["*"])
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
            seen = await asyncio.to_thread(_control_checks, server.url)
        finally:
            server.stop()
            hist.close()
            users.close()
    assert seen["outlines"] >= len(cfg.communes)
    assert seen["labels"] == len(cfg.communes)
    assert seen["targets"] >= 1
    # One marker per asset acted on, however many commands each gets.
    assert seen["targets"] <= seen["planned"]


def test_schematic_needs_no_login_on_the_hmi(demo_config: Config, tmp_path: Path) -> None:
    """The HMI serves the schematic at its public address to a client without a session."""
    register = build_register(demo_config, assets=10)
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    try:
        app = create_app(demo_config, register, LiveValues(), hist, users=users)
        resp = app.server.test_client().get(SCHEMATIC_URL)
    finally:
        hist.close()
        users.close()
    assert resp.status_code == 200, "register_basemap(server, cfg) is not called in create_app"
    assert resp.get_json()["type"] == "FeatureCollection"
