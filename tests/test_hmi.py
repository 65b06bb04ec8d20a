"""Web HMI: display states, trend figures, the served app, and the map in a real browser."""

from __future__ import annotations

import contextlib
import json
import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pandas as pd
import plotly.graph_objects as go
import pytest

from beffroi.app.config import Config
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.figures import trend_figure
from beffroi.hmi.server import HmiServer
from beffroi.hmi.state import (
    STATE_CODES,
    STATE_COLOURS,
    STATES,
    AlarmMark,
    alarm_marks,
    asset_rows,
    asset_state,
    count_states,
    filter_assets,
    layer_geojson,
    layer_hideout,
    map_frame,
    mobile_classes,
)
from beffroi.hmi.users import UserStore
from tests.browser import artifact, log_in
from tests.conftest import free_port

SUPERVISOR = "sup"
PASSWORD = "correct horse battery"
BUS_POSITION = (47.3305, 5.0610)


def _first(register: Register, asset_class: str) -> Asset:
    return next(
        a
        for a in sorted(register.assets.values(), key=lambda a: a.id)
        if a.asset_class == asset_class
    )


def _healthy_samples(asset: Asset, ts: datetime) -> list[Sample]:
    out = []
    for spec in asset.tags:
        value: float | bool | str = {"float": 12.5, "bool": False, "str": "ok"}[spec.kind]
        out.append(Sample(spec.name, ts, value, Quality.GOOD))
    return out


@dataclass
class Scene:
    """A register whose live values hold one asset of each display state."""

    register: Register
    live: LiveValues
    fault: Asset
    commloss: Asset
    stale: Asset
    bus: Asset

    def fill(self, now: datetime) -> None:
        """Write every asset's live values as of now: healthy, except the chosen ones."""
        batch: list[Sample] = []
        for asset in self.register.assets.values():
            if asset is not self.stale:  # never heard from: nothing is known of it
                batch += _healthy_samples(asset, now - timedelta(seconds=1))
        fresh = now - timedelta(seconds=1)
        batch += [
            Sample(self.fault.tag("fault"), fresh, True),
            Sample(self.commloss.tag("plan"), fresh, 3.0, Quality.COMM_LOSS),
            Sample(self.bus.tag("lat"), fresh, BUS_POSITION[0]),
            Sample(self.bus.tag("lon"), fresh, BUS_POSITION[1]),
        ]
        self.live.update(batch)


@pytest.fixture(scope="module")
def scene(small_register: Register) -> Scene:
    """Return live values where LC is faulted, TC lost comms, a camera never reported."""
    s = Scene(
        register=small_register,
        live=LiveValues(),
        fault=_first(small_register, "streetlight_cabinet"),
        commloss=_first(small_register, "traffic_controller"),
        stale=_first(small_register, "camera"),
        bus=_first(small_register, "bus"),
    )
    s.fill(utcnow())
    return s


# --- display state: pure logic ------------------------------------------------------------


def test_state_of_each_asset_follows_its_live_values(scene: Scene) -> None:
    now = utcnow()
    scene.fill(now)
    snap = scene.live.snapshot()
    assert asset_state(scene.fault, snap, now) == "fault"
    assert asset_state(scene.commloss, snap, now) == "commloss"
    assert asset_state(scene.stale, snap, now) == "stale"
    assert asset_state(scene.bus, snap, now) == "normal"


def test_fault_wins_over_commloss_and_no_value_is_stale(scene: Scene) -> None:
    now = utcnow()
    asset = scene.commloss
    snap = {s.tag: s for s in _healthy_samples(asset, now)}
    snap[asset.tag("plan")] = Sample(asset.tag("plan"), now, 1.0, Quality.COMM_LOSS)
    assert asset_state(asset, snap, now) == "commloss"
    snap[asset.tag("fault")] = Sample(asset.tag("fault"), now, True)
    assert asset_state(asset, snap, now) == "fault"
    assert asset_state(asset, {}, now) == "stale"


def test_stale_when_nothing_received_or_past_an_asked_age(scene: Scene) -> None:
    asset = scene.fault  # streetlight cabinet: the slowest signal is every 300 s
    limit = 3 * max(t.interval_s for t in asset.tags)
    assert limit == 900
    ts = datetime(2025, 1, 15, 8, 0, tzinfo=UTC)
    snap = {s.tag: s for s in _healthy_samples(asset, ts)}
    # Report by exception: unchanged values stay current while the link is up.
    assert asset_state(asset, snap, ts + timedelta(days=2)) == "normal"
    # For sources that must report periodically, an age limit can be asked for.
    assert asset_state(asset, snap, ts + timedelta(seconds=limit - 1), stale_factor=3) == "normal"
    assert asset_state(asset, snap, ts + timedelta(seconds=limit + 1), stale_factor=3) == "stale"
    # One fresh tag is enough: staleness looks at the newest value of the asset.
    fresh = Sample(asset.tag("power_kw"), ts + timedelta(seconds=limit), 3.0)
    snap[fresh.tag] = fresh
    assert asset_state(asset, snap, ts + timedelta(seconds=limit + 1), stale_factor=3) == "normal"


def test_rows_carry_colours_counts_and_live_bus_position(scene: Scene) -> None:
    now = utcnow()
    scene.fill(now)
    rows = asset_rows(scene.register.assets.values(), scene.live.snapshot(), now)
    by_id = {r["id"]: r for r in rows}
    assert by_id[scene.fault.id]["colour"] == STATE_COLOURS["fault"]
    assert by_id[scene.fault.id]["class"] == "streetlight_cabinet"
    assert by_id[scene.fault.id]["commune"] == scene.fault.commune
    assert (by_id[scene.bus.id]["lat"], by_id[scene.bus.id]["lon"]) == BUS_POSITION
    assert (by_id[scene.fault.id]["lat"], by_id[scene.fault.id]["lon"]) == (
        scene.fault.lat,
        scene.fault.lon,
    )
    n = len(scene.register.assets)
    counts = count_states(rows)
    assert list(counts) == list(STATES)  # every state, most urgent first, zero when none
    assert {s: c for s, c in counts.items() if c} == {
        "normal": n - 3,
        "fault": 1,
        "commloss": 1,
        "stale": 1,
    }


def _alarm(asset: Asset, state: str, severity: int) -> dict:
    return {"asset": asset.id, "state": state, "severity": severity}


def test_alarms_colour_assets_by_their_most_urgent_sounding_alarm(scene: Scene) -> None:
    now = utcnow()
    scene.fill(now)
    snap = scene.live.snapshot()
    building = _first(scene.register, "building")
    marks = alarm_marks(
        [
            _alarm(building, "unack_active", 3),
            _alarm(building, "ack_active", 2),
            _alarm(building, "unack_rtn", 1),  # back to normal: nothing sounds any more
            _alarm(building, "shelved", 1),  # masked by an operator
            _alarm(scene.bus, "out_of_service", 2),
            _alarm(scene.commloss, "unack_active", 1),
            _alarm(scene.fault, "unack_active", 3),
        ]
    )
    assert marks[building.id] == AlarmMark(2, False)
    assert asset_state(building, snap, now, mark=marks[building.id]) == "p2"
    assert asset_state(scene.bus, snap, now, mark=marks[scene.bus.id]) == "oos"
    # What the equipment itself says comes first: its fault, then a lost link.
    assert asset_state(scene.fault, snap, now, mark=marks[scene.fault.id]) == "fault"
    assert asset_state(scene.commloss, snap, now, mark=marks[scene.commloss.id]) == "commloss"
    rows = asset_rows(scene.register.assets.values(), snap, now, marks=marks)
    by_id = {r["id"]: r for r in rows}
    assert by_id[building.id]["colour"] == STATE_COLOURS["p2"]
    assert count_states(rows)["p2"] == 1 and count_states(rows)["oos"] == 1
    frame = map_frame(rows, [], key="k")
    assert frame["rank"] == "".join(STATE_CODES[s] for s in STATES)
    assert frame["fixed"][[r["id"] for r in rows].index(building.id)] == "2"


def test_map_payloads_index_states_and_move_buses(scene: Scene, demo_config: Config) -> None:
    now = utcnow()
    scene.fill(now)
    assets = filter_assets(scene.register, None, ["lighting", "mobility"])
    assert {a.domain for a in assets} == {"lighting", "mobility"}
    assert [a.id for a in assets] == sorted(a.id for a in assets)
    mobile = mobile_classes(demo_config)  # every class reporting lat and lon moves
    assert mobile == {"bus", "police_vehicle", "maintenance_van", "street_sweeper", "waste_truck"}
    rows = asset_rows(assets, scene.live.snapshot(), now)
    fixed = [r for r in rows if r["class"] not in mobile]
    moving = [r for r in rows if r["class"] in mobile]
    geo = layer_geojson(fixed)
    assert [f["properties"]["i"] for f in geo["features"]] == list(range(len(fixed)))
    hideout = layer_hideout("fixed", fixed, key="k")
    frame = map_frame(fixed, moving, key="k")
    fault_i = next(
        f["properties"]["i"] for f in geo["features"] if f["properties"]["id"] == scene.fault.id
    )
    assert hideout["states"][fault_i] == frame["fixed"][fault_i] == "f"
    assert hideout["colours"]["f"] == STATE_COLOURS["fault"]
    assert frame["fixed"].count("f") == 1 and set(frame["fixed"]) == {"n", "f"}
    bus_i = [r["id"] for r in moving].index(scene.bus.id)
    assert frame["pos"][bus_i] == list(BUS_POSITION)


# --- figures --------------------------------------------------------------------------------


def test_trend_has_one_trace_per_tag_and_a_gap_at_commloss() -> None:
    t0 = datetime(2025, 7, 1, 10, 0, tzinfo=UTC)  # 12:00 in Paris (summer time)
    qualities = [Quality.GOOD, Quality.GOOD, Quality.COMM_LOSS, Quality.GOOD, Quality.GOOD]
    rows = [
        {
            "ts": t0 + timedelta(minutes=i),
            "tag": "a/X-1/power_kw",
            "value": 10.0 + i,
            "quality": int(q),
        }
        for i, q in enumerate(qualities)
    ] + [
        {"ts": t0 + timedelta(minutes=i), "tag": "a/X-2/lit", "value": float(i % 2), "quality": 0}
        for i in range(5)
    ]
    df = pd.DataFrame(rows)
    fig = trend_figure(
        df,
        ["a/X-1/power_kw", "a/X-2/lit", "a/X-3/empty"],
        units={"a/X-1/power_kw": "kW"},
        step_tags={"a/X-2/lit"},
    )
    assert len(fig["data"]) == 3
    power, lit, empty = fig["data"]
    assert power["name"] == "a/X-1/power_kw (kW)"
    y = list(power["y"])
    assert math.isnan(y[2])
    assert y[:2] == [10.0, 11.0] and y[3:] == [13.0, 14.0]
    assert power["connectgaps"] is False
    assert pd.Timestamp(power["x"][0]) == pd.Timestamp("2025-07-01 12:00:00")
    # French by default: mixed qualities get one label per point, all Good is said once.
    assert list(power["text"])[2] == "Perte de communication"
    assert lit["line"]["shape"] == "hv" and "text" not in lit
    assert "Bonne" in lit["hovertemplate"]
    window = trend_figure(df, ["a/X-1/power_kw"], x_range=(t0, t0 + timedelta(hours=1)))
    lo, hi = (pd.Timestamp(v) for v in window["layout"]["xaxis"]["range"])
    assert (lo, hi) == (pd.Timestamp("2025-07-01 12:00"), pd.Timestamp("2025-07-01 13:00"))
    assert len(empty["x"]) == 0
    # What the browser receives is valid plotly: the schema accepts it as is.
    go.Figure(fig)


# --- the served app ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def historian(tmp_path_factory: pytest.TempPathFactory, scene: Scene):
    """Return a DuckDB historian holding 30 min of one tag, with a CommLoss sample."""
    h = DuckDBHistorian(tmp_path_factory.mktemp("hmi") / "hmi.duckdb")
    now = utcnow()
    tag = scene.fault.tag("power_kw")
    h.write(
        [
            Sample(
                tag,
                now - timedelta(minutes=30 - i),
                5.0 + (i % 7),
                Quality.COMM_LOSS if i == 15 else Quality.GOOD,
            )
            for i in range(30)
        ]
        + [
            Sample(scene.commloss.tag("plan"), now - timedelta(minutes=i), float(i % 4))
            for i in range(30)
        ]
    )
    yield h
    h.close()


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory, scene: Scene):
    """Return a user store with a supervisor of the whole metropolis."""
    store = UserStore(
        tmp_path_factory.mktemp("users") / "users.duckdb", set(scene.register.communes)
    )
    store.add(SUPERVISOR, PASSWORD, "supervisor", ["*"])
    yield store
    store.close()


@pytest.fixture(scope="module")
def hmi(demo_config: Config, scene: Scene, historian: DuckDBHistorian, users: UserStore):
    """Serve the HMI over the scene with waitress on a free port."""
    app = create_app(
        demo_config,
        scene.register,
        scene.live,
        historian,
        status=lambda: {"collectors": {"simulator": "connected"}},
        users=users,
    )
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    yield server
    server.stop()


def _get(url: str, opener=None) -> tuple[int, str, str]:
    opener = opener or urllib.request.build_opener()
    with opener.open(url, timeout=10) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def logged_in_opener(base: str, name: str = SUPERVISOR, password: str = PASSWORD):
    """Return a urllib opener holding a session cookie of a logged-in user."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    with opener.open(base + "login", data=form, timeout=10) as resp:
        assert resp.status == 200
    return opener


def login_page(browser, base: str, name: str = SUPERVISOR, password: str = PASSWORD):
    """Open a browser page logged in through the login form."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    log_in(page, base, name, password)
    return page


@contextlib.contextmanager
def page_at(browser, base: str, path: str = ""):  # type: ignore[no-untyped-def]
    """Yield a logged-in browser page opened at `path` of the HMI; close it after."""
    page = login_page(browser, base)
    try:
        page.goto(base + path)
        yield page
    finally:
        page.close()


def ungroup_markers(page) -> None:  # type: ignore[no-untyped-def]
    """Switch the map's marker grouping off, so that every asset has a marker of its own."""
    page.wait_for_selector("#map-cluster input[type=checkbox]", timeout=20_000)
    page.locator("#map-cluster input[type=checkbox]").uncheck()


# Assets the map shows in its view: members of cluster markers plus single markers.
SHOWN_JS = (
    "Array.from(document.querySelectorAll('.beffroi-cluster [data-count]'))"
    ".reduce((n, d) => n + Number(d.dataset.count), 0)"
    " + document.querySelectorAll('path.beffroi-asset').length"
)


def test_healthz_reports_ok_and_the_runtime_status(hmi: HmiServer, scene: Scene) -> None:
    status, ctype, body = _get(hmi.url + "healthz")
    assert status == 200 and ctype.startswith("application/json")
    data = json.loads(body)
    assert data["status"] == "ok"
    assert data["live_tags"] == len(scene.live)
    assert data["assets"] == len(scene.register.assets)
    assert data["collectors"] == {"simulator": "connected"}


def test_pages_are_served(hmi: HmiServer, scene: Scene) -> None:
    opener = logged_in_opener(hmi.url)
    status, ctype, body = _get(hmi.url, opener)
    assert status == 200 and ctype.startswith("text/html")
    assert "_dash-config" in body and "Beffroi" in body
    assert "beffroi.js" in body  # the marker functions the map needs
    status, _, body = _get(hmi.url + "trends?tag=" + scene.fault.tag("power_kw"), opener)
    assert status == 200 and "_dash-config" in body
    status, _, layout = _get(hmi.url + "_dash-layout", opener)
    assert status == 200 and "shell-strip" in layout and "Tendances" in layout


def _pong(environ, start_response):  # type: ignore[no-untyped-def]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"pong"]


def test_server_on_port_zero_reports_its_port_and_stops() -> None:
    server = HmiServer(_pong, "127.0.0.1", 0)
    server.start()
    try:
        assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}/"
        assert _get(server.url)[2] == "pong"
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(server.url, timeout=2)


# --- a real browser -------------------------------------------------------------------------


def test_map_in_browser_shows_states_legend_and_panel(
    hmi: HmiServer, scene: Scene, browser
) -> None:
    scene.fill(utcnow())
    n = len(scene.register.assets)
    with page_at(browser, hmi.url) as page:
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {n}", timeout=20_000
        )
        fault = page.locator(f"path.beffroi-id-{scene.fault.id}")
        assert fault.get_attribute("fill") == STATE_COLOURS["fault"]
        assert "beffroi-state-fault" in fault.get_attribute("class")
        commloss = page.locator(f"path.beffroi-id-{scene.commloss.id}")
        assert commloss.get_attribute("fill") == STATE_COLOURS["commloss"]
        bus = page.locator(f"path.beffroi-id-{scene.bus.id}")
        assert bus.get_attribute("fill") == STATE_COLOURS["normal"]
        counts = {
            s: page.locator(f"#map-count-{s}").inner_text()
            for s in ("normal", "fault", "commloss", "stale")
        }
        assert counts == {"normal": str(n - 3), "fault": "1", "commloss": "1", "stale": "1"}
        page.wait_for_function(
            "document.getElementById('shell-strip').innerText.includes('en direct')"
        )
        assert page.locator("img.leaflet-tile").count() == 0  # no tile server
        page.screenshot(path=artifact("hmi-map.png"))

        # A new fault and a moving bus show up in place, without rebuilding the layer.
        other = _first(scene.register, "building")
        marker = f"path.beffroi-id-{other.id}"
        page.evaluate(f"document.querySelector('{marker}').dataset.probe = 'same-node'")
        bus_d = bus.get_attribute("d")
        now = utcnow()
        scene.live.update(
            [
                Sample(other.tag("fault"), now, True),
                Sample(scene.bus.tag("lat"), now, BUS_POSITION[0] + 0.01),
                Sample(scene.bus.tag("lon"), now, BUS_POSITION[1] + 0.01),
            ]
        )
        page.wait_for_function(
            f"document.querySelector('{marker}').getAttribute('fill') === "
            f"'{STATE_COLOURS['fault']}'",
            timeout=10_000,
        )
        assert page.locator(marker).get_attribute("data-probe") == "same-node"
        assert "beffroi-state-fault" in page.locator(marker).get_attribute("class")
        page.wait_for_function("document.getElementById('map-count-fault').innerText === '2'")
        assert bus.get_attribute("d") != bus_d
        scene.live.update([Sample(other.tag("fault"), utcnow(), False)])
        page.wait_for_function("document.getElementById('map-count-fault').innerText === '1'")
        assert page.locator(marker).get_attribute("fill") == STATE_COLOURS["normal"]

        fault.click(force=True)
        page.wait_for_function(
            f"document.getElementById('map-panel-id')?.innerText === '{scene.fault.id}'",
            timeout=10_000,
        )
        commune = scene.register.communes[scene.fault.commune].name
        assert page.locator("#map-panel-commune").inner_text() == commune
        assert page.locator("#map-panel-class").inner_text() == "Armoire d'éclairage public"
        assert page.locator("#map-panel-values tbody tr").count() == len(scene.fault.tags)
        fault_row = page.locator("#map-panel-values tbody tr", has_text="fault")
        assert "vrai" in fault_row.inner_text()
        href = page.locator("#map-panel-trend").get_attribute("href")
        assert href == "/trends?tag=" + scene.fault.tag("power_kw")
        page.screenshot(path=artifact("hmi-map-panel.png"))

        page.locator("#map-domain").click()
        page.keyboard.type("Lighting")
        page.keyboard.press("Enter")
        lighting = sum(1 for a in scene.register.assets.values() if a.domain == "lighting")
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {lighting}",
            timeout=10_000,
        )
        assert page.locator("#map-count-fault").inner_text() == "1"


def _zoom_out(page, times: int, n: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(times):
        page.locator(".leaflet-control-zoom-out").click()
        page.wait_for_function(
            f"!document.querySelector('.leaflet-zoom-anim') && ({SHOWN_JS}) === {n}",
            timeout=10_000,
        )


RED_GROUP = ".beffroi-cluster.beffroi-state-fault"


def _fault_marks(page) -> int:  # type: ignore[no-untyped-def]
    return page.locator(".beffroi-cluster.beffroi-state-fault, path.beffroi-state-fault").count()


def test_map_groups_markers_coloured_by_their_most_urgent_member(
    hmi: HmiServer, scene: Scene, browser
) -> None:
    scene.fill(utcnow())
    n = len(scene.register.assets)
    with page_at(browser, hmi.url) as page:
        page.wait_for_function(f"({SHOWN_JS}) === {n}", timeout=20_000)
        _zoom_out(page, 1, n)
        # Zoomed out, assets are grouped: fewer markers than assets, every asset counted once.
        assert page.locator(".beffroi-cluster").count() >= 2
        assert page.locator("path.beffroi-asset").count() < n
        red = page.locator(".beffroi-cluster.beffroi-state-fault")
        assert red.count() == 1 and _fault_marks(page) == 1
        assert page.locator(f"path.beffroi-id-{scene.fault.id}").count() == 0
        dot = red.locator("[data-count]")
        assert STATE_COLOURS["fault"] in _rgb_to_hex(dot.evaluate("d => d.style.background"))
        red.hover()
        tip = page.locator(".leaflet-tooltip", has_text="équipements :")
        tip.wait_for(timeout=5_000)
        assert (
            "1 Défaut" in tip.inner_text() and f"{dot.inner_text()} équipements" in tip.inner_text()
        )
        page.screenshot(path=artifact("hmi-map-clusters.png"))

        # A fault far from the first one turns its own group red, in place.
        far = max(
            scene.register.assets.values(),
            key=lambda a: (a.lat - scene.fault.lat) ** 2 + (a.lon - scene.fault.lon) ** 2,
        )
        scene.live.update([Sample(far.tag("fault"), utcnow(), True)])
        page.wait_for_function(
            "document.querySelectorAll('.beffroi-state-fault').length === 2", timeout=10_000
        )
        scene.live.update([Sample(far.tag("fault"), utcnow(), False)])
        page.wait_for_function(
            "document.querySelectorAll('.beffroi-state-fault').length === 1", timeout=10_000
        )

        # Clicking a group zooms in on it, until its members stand on their own.
        own = f"document.querySelector('path.beffroi-id-{scene.fault.id}')"
        red_count = "document.querySelector('.beffroi-cluster.beffroi-state-fault [data-count]')"
        for _ in range(8):
            if page.evaluate(f"!!{own}"):
                break
            before = int(page.locator(f"{RED_GROUP} [data-count]").inner_text())
            page.locator(RED_GROUP).click()
            page.wait_for_function(
                f"{own} || ({red_count} && Number({red_count}.dataset.count) < {before})",
                timeout=10_000,
            )
        marker = page.locator(f"path.beffroi-id-{scene.fault.id}")
        marker.wait_for(timeout=10_000)
        assert marker.get_attribute("fill") == STATE_COLOURS["fault"]

        # Grouping off: one marker per asset, wherever the view is.
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {n}", timeout=10_000
        )
        assert page.locator(".beffroi-cluster").count() == 0


def _rgb_to_hex(css: str) -> str:
    """Turn a CSS `rgb(r, g, b)` colour into `#rrggbb`."""
    parts = css[css.index("(") + 1 : css.index(")")].split(",")
    return "#" + "".join(f"{int(p):02x}" for p in parts[:3])


def test_trends_in_browser_plots_the_tag_from_the_url(
    hmi: HmiServer, scene: Scene, browser
) -> None:
    tag = scene.fault.tag("power_kw")
    with page_at(browser, hmi.url, "trends?tag=" + tag) as page:
        page.wait_for_function(
            "(() => { const gd = document.querySelector('#trends-graph .js-plotly-plot');"
            " return gd && gd.data && gd.data.length > 0 && gd.data[0].x.length > 0; })()",
            timeout=20_000,
        )
        traces = page.evaluate(
            "document.querySelector('#trends-graph .js-plotly-plot')"
            "._fullData.map(t => ({name: t.name, n: t.x.length, y: Array.from(t.y)}))"
        )
        # The stored line, and its newest value held (dotted) up to now: the link is up.
        assert [t["name"] for t in traces] == [f"{tag} (kW)", f"{tag} · maintenue"]
        assert traces[0]["n"] == 30 + 1  # the live value, newer than the stored ones
        y = traces[0]["y"]
        gap = y[15]  # the CommLoss sample is a gap: null or NaN, never a value
        assert gap is None or math.isnan(gap)
        assert all(v is not None and not math.isnan(v) for v in y[:15] + y[16:])
        line = page.locator("#trends-graph .scatterlayer .trace").first
        # The gap is drawn: the line is two separate segments around the CommLoss sample.
        assert line.locator("path.js-line").count() == 2
        assert "30 points" in page.locator("#trends-status").inner_text()
        page.screenshot(path=artifact("hmi-trends.png"))

        # Searching the register's tags adds a second trace; 15 min shows a quarter of an hour.
        other = scene.commloss.tag("plan")
        page.locator("#trends-tags").click()
        page.keyboard.type(f"{scene.commloss.id} plan")
        page.locator(".dash-dropdown-option", has_text=other).click()
        page.keyboard.press("Escape")
        # Its controller's link is lost: its plan is drawn as stored, not held to now.
        lines = (
            "document.querySelector('#trends-graph .js-plotly-plot')._fullData"
            ".filter(t => !t.name.endsWith(' · maintenue'))"
        )
        page.wait_for_function(f"{lines}.length === 2", timeout=10_000)
        page.locator("label", has=page.locator("input[name=trends-range][value='15m']")).click()
        page.wait_for_function(
            f"(() => {{ const d = {lines};"
            " return d.length === 2 && d.every(t => t.x.length > 0 && t.x.length <= 17); })()",
            timeout=10_000,
        )
        held = page.evaluate(
            "document.querySelector('#trends-graph .js-plotly-plot')._fullData"
            ".filter(t => t.name.endsWith(' · maintenue')).map(t => t.name)"
        )
        assert held == [f"{tag} · maintenue"]
        page.screenshot(path=artifact("hmi-trends-search.png"))
