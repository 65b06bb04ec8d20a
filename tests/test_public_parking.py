"""The residents' car-park page and the standard feed: no login, French, live, accessible."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import jsonschema
import pytest
from flask import Flask

from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register, build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.basemap import register_basemap
from beffroi.hmi.parking_page import sort_key
from beffroi.hmi.public import register_public
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.browser import artifact, chromium
from tests.conftest import free_port

# The Smart Data Models OffStreetParking schema (dataModel.Parking 0.1.3, schema.json), the
# properties this feed publishes, transcribed: the schema itself is not on a package registry
# (pysmartdatamodels ships only its property list), and its $refs point at the network.
OFFSTREETPARKING_SCHEMA = {
    "type": "object",
    "required": ["id", "type", "location"],
    "properties": {
        "id": {"type": "string", "pattern": "^urn:ngsi-ld:OffStreetParking:"},
        "type": {"type": "string", "enum": ["OffStreetParking"]},
        "name": {"type": "string"},
        "location": {
            "type": "object",
            "required": ["type", "coordinates"],
            "properties": {
                "type": {"enum": ["Point"]},
                "coordinates": {"type": "array", "minItems": 2, "items": {"type": "number"}},
            },
        },
        "address": {"type": "object"},
        "category": {"type": "array", "minItems": 1, "uniqueItems": True},
        "allowedVehicleType": {"type": "array", "minItems": 1, "items": {"enum": ["car"]}},
        "totalSpotNumber": {"type": "integer", "minimum": 0},
        "availableSpotNumber": {"type": "integer", "minimum": 0},
        "occupiedSpotNumber": {"type": "integer", "minimum": 0},
        "occupancy": {"type": "number", "minimum": 0, "maximum": 1},
        "status": {
            "type": "array",
            "items": {
                "enum": [
                    "almostFull",
                    "closed",
                    "closedAbnormal",
                    "full",
                    "fullAtEntrance",
                    "open",
                    "openingTimesInForce",
                    "spacesAvailable",
                ]
            },
        },
        "dateModified": {"type": "string", "format": "date-time"},
        "occupancyModified": {"type": "string", "format": "date-time"},
        "@context": {"type": "array", "items": {"type": "string"}},
    },
}
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


class _Items(HTMLParser):
    """Collect the list items of the page: id and the text of each data-field."""

    def __init__(self) -> None:
        super().__init__()
        self.items: list[dict[str, str]] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "li" and a.get("class") == "park":
            self.items.append({"id": a["data-id"] or "", "state": a["data-status"] or ""})
        elif self.items and a.get("data-field"):
            self._field = a["data-field"]
            self.items[-1].setdefault(self._field, "")

    def handle_endtag(self, tag: str) -> None:
        self._field = None

    def handle_data(self, data: str) -> None:
        if self._field and self.items:
            self.items[-1][self._field] += data


def _items(html: str) -> list[dict[str, str]]:
    parser = _Items()
    parser.feed(html)
    return parser.items


@dataclass
class Site:
    """A public site on a free port: its car parks, live values and historian."""

    server: HmiServer
    parks: list[Asset]
    live: LiveValues
    historian: DuckDBHistorian
    register: Register

    @property
    def url(self) -> str:
        return self.server.url

    def set_free(self, park: Asset, free: float, quality: Quality = Quality.GOOD) -> None:
        self.live.update([Sample(park.tag("free_spaces"), utcnow(), free, quality)])


@pytest.fixture
def site(demo_config, tmp_path):  # type: ignore[no-untyped-def]
    """Serve the public routes (feeds, page, base map) on a plain Flask app, with history.

    Six car parks in known states: filling, emptying, stable, full, faulted, counter lost,
    plus one closed (capacity 0) and one whose count is stale.
    """
    register = build_register(demo_config, assets=300)
    parks = sorted(
        (a for a in register.assets.values() if a.asset_class == "car_park"), key=lambda a: a.id
    )
    assert len(parks) >= 8
    live, hist, now = LiveValues(), DuckDBHistorian(tmp_path / "h.duckdb"), utcnow()
    samples, history = [], []
    before = [300.0, 50.0, 121.0, 40.0, 200.0, 200.0, 0.0, 200.0]
    current = [100.0, 200.0, 120.0, 0.0, 150.0, float("nan"), 0.0, 180.0]
    for i, a in enumerate(parks):
        cap = 0.0 if i == 6 else 400.0
        free = current[i] if i < len(current) else 250.0
        stamp = now - timedelta(hours=2) if i == 7 else now - timedelta(seconds=20)
        quality = Quality.COMM_LOSS if i == 5 else Quality.GOOD
        samples += [
            Sample(a.tag("capacity"), now - timedelta(hours=1), cap),
            Sample(a.tag("free_spaces"), stamp, free, quality),
            Sample(a.tag("fault"), now, i == 4),
        ]
        if i < len(before):
            history += [
                Sample(a.tag("free_spaces"), now - timedelta(minutes=m), before[i])
                for m in (28, 24, 20, 16)
            ]
    live.update(samples)
    hist.write(history)
    public = demo_config.hmi.public.model_copy(
        update={
            "requests_per_min": 1000,
            "cache_s": 0.5,
            "page_refresh_s": 1.0,
            "names": {parks[0].id: "Parking Darcy", parks[1].id: "Parking Éperon"},
        }
    )
    cfg = demo_config.model_copy(
        update={"hmi": demo_config.hmi.model_copy(update={"public": public})}
    )
    app = Flask("public-parking-test")
    register_public(app, cfg, register, live, historian=hist)
    register_basemap(app, cfg)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    yield Site(server, parks, live, hist, register)
    server.stop()
    hist.close()


def test_page_is_public_french_and_locked_down(site: Site) -> None:
    """The page needs no login, speaks French, allows no inline script and caches briefly."""
    status, headers, body = _get(site.url + "public/parking")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert "Set-Cookie" not in headers
    html = body.decode()
    assert '<html lang="fr">' in html and "Parkings : places libres" in html
    assert 'name="viewport" content="width=device-width, initial-scale=1"' in html
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp and "unsafe-inline" not in csp and "<script>" not in html
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert headers["Cache-Control"] == "public, max-age=0"  # cache_s of this site
    assert headers["X-Frame-Options"] == "DENY" and headers["X-Content-Type-Options"] == "nosniff"
    english = _get(site.url + "public/parking?lang=en")[2].decode()
    assert '<html lang="en">' in english and "Car parks: free spaces" in english

    status, headers, body = _get(site.url + "public/static/vendor/leaflet/leaflet.js")
    assert status == 200 and b"Leaflet" in body[:400]
    assert headers["Cache-Control"] == "public, max-age=86400"
    assert b"BSD 2-Clause" in _get(site.url + "public/static/vendor/leaflet/LICENSE")[2]
    assert _get(site.url + "public/static/../public.py")[0] == 404
    assert _get(site.url + "public/static/vendor/leaflet/nothing.js")[0] == 404


def test_list_matches_the_feed_with_states_and_trends(site: Site) -> None:
    """Every car park of the feed is listed, sorted by commune then name, with its count,
    French state words and a trend read from the historian's last half hour."""
    records = {
        r["id"]: r for r in json.loads(_get(site.url + "public/parking.json")[2])["car_parks"]
    }
    live = json.loads(_get(site.url + "public/parking/live.json")[2])
    rows = {r["id"]: r for r in live["car_parks"]}
    html = _get(site.url + "public/parking")[2].decode()
    items = {i["id"]: i for i in _items(html)}
    assert set(items) == set(records) == set(rows)
    assert [i["id"] for i in _items(html)] == [r["id"] for r in live["car_parks"]]
    keys = [(sort_key(r["commune"]), sort_key(r["name"])) for r in live["car_parks"]]
    assert keys == sorted(keys)  # by commune then name, accents folded
    for pid, item in items.items():
        free, cap = records[pid]["free_spaces"], records[pid]["capacity"]
        if item["state"] in ("available", "almost_full", "full"):
            assert item["spaces"] == f"{free} places libres sur {cap}" or free == 0
    p = site.parks
    assert (items[p[0].id]["trend"], items[p[0].id]["arrow"]) == ("Se remplit", "↗")  # 300 -> 100
    assert (items[p[1].id]["trend"], items[p[1].id]["arrow"]) == ("Se vide", "↘")  # 50 -> 200
    assert items[p[2].id]["trend"] == "Stable"  # 121 -> 120
    assert items[p[3].id]["state"] == "full" and items[p[3].id]["status"] == "Complet"
    assert items[p[3].id]["spaces"] == "0 place libre sur 400"
    for i in (4, 5, 7):  # faulted, counter lost, count two hours old
        assert items[p[i].id]["state"] == "unavailable"
        assert items[p[i].id]["spaces"] == "Places libres : inconnues"
        assert rows[p[i].id]["trend"] is None
    assert items[p[6].id]["state"] == "closed"
    for state, text in (
        ("available", "Places disponibles"),
        ("full", "Complet"),
        ("closed", "Fermé"),
        ("unavailable", "Données indisponibles"),
    ):
        assert re.search(rf'badge-{state}" data-field="status">{text}<', html), state
    assert items[p[0].id]["occupancy"] == "Occupé à 75\u202f%"
    assert re.fullmatch(r"Mis à jour : \d\d:\d\d", items[p[0].id]["updated"])
    assert "Parking Darcy" in html and "Parking Éperon" in html


def test_no_script_filter_and_bad_commune(site: Site) -> None:
    """?commune= narrows the list on the server; an unknown commune is said and ignored."""
    live = json.loads(_get(site.url + "public/parking/live.json")[2])["car_parks"]
    commune = live[0]["commune"]
    url = site.url + "public/parking?commune=" + urllib.request.quote(commune)
    items = _items(_get(url)[2].decode())
    assert items and {i["id"] for i in items} == {r["id"] for r in live if r["commune"] == commune}
    html = _get(site.url + "public/parking?commune=%3Cscript%3E")[2].decode()
    assert "Commune inconnue : tous les parkings sont affichés." in html
    assert "<script>" not in html and len(_items(html)) == len(live)
    assert len(_items(_get(site.url + "public/parking?q=darcy")[2].decode())) == 1


def test_standard_feed_is_valid_offstreetparking(site: Site) -> None:
    """The NGSI-LD feed holds one valid OffStreetParking entity per car park; unknown counts
    are left out, not zero; states use the schema's DATEX II values."""
    status, headers, body = _get(site.url + "public/api/parking/offstreetparking.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*" and "json-ld#context" in headers["Link"]
    entities = {e["id"]: e for e in json.loads(body)}
    assert len(entities) == len(site.parks)
    checker = jsonschema.Draft7Validator(
        OFFSTREETPARKING_SCHEMA, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER
    )
    for e in entities.values():
        checker.validate(e)
        assert "dataModel.Parking" in e["@context"][0]
    p = site.parks
    darcy = entities["urn:ngsi-ld:OffStreetParking:" + p[0].id]
    assert darcy["name"] == "Parking Darcy"
    assert darcy["location"]["coordinates"] == [round(p[0].lon, 6), round(p[0].lat, 6)]
    assert (darcy["totalSpotNumber"], darcy["availableSpotNumber"]) == (400, 100)
    assert darcy["occupancy"] == 0.75 and darcy["status"] == ["spacesAvailable"]
    assert darcy["dateModified"].endswith("Z")
    assert entities["urn:ngsi-ld:OffStreetParking:" + p[3].id]["status"] == ["full"]
    assert entities["urn:ngsi-ld:OffStreetParking:" + p[6].id]["status"] == ["closed"]
    lost = entities["urn:ngsi-ld:OffStreetParking:" + p[5].id]
    assert "availableSpotNumber" not in lost and "status" not in lost


def test_page_is_mounted_without_login_in_the_hmi(demo_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """In the whole HMI the page and its static files answer without a session."""
    register = build_register(demo_config, assets=100)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    app = create_app(demo_config, register, LiveValues(), hist, users=users)
    client = app.server.test_client()
    page = client.get("/public/parking")
    assert page.status_code == 200 and "Parkings : places libres" in page.get_data(as_text=True)
    assert client.get("/public/static/parking/parking.js").status_code == 200
    assert client.get("/public/parking/live.json").status_code == 200
    users.close()
    hist.close()


@pytest.mark.parametrize(
    ("viewport", "shot"),
    [
        ({"width": 390, "height": 844}, "public-parking-phone.png"),
        ({"width": 1366, "height": 900}, "public-parking-desktop.png"),
    ],
)
def test_page_in_a_browser(site: Site, viewport: dict[str, int], shot: str) -> None:
    """Chromium draws a marker per car park, fills the list, refreshes a count without reload,
    announces a change of state, filters, and axe-core finds no WCAG 2.1 AA violation."""
    from axe_playwright_python.sync_playwright import Axe

    errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport=viewport, locale="fr-FR")
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("response", lambda r: errors.append(r.url) if r.status >= 400 else None)
        page.goto(site.url + "public/parking")
        page.wait_for_selector("#parking-map[data-ready=true]", timeout=20_000)
        page.wait_for_function(
            "n => document.querySelectorAll('.parking-marker').length === n",
            arg=len(site.parks),
            timeout=20_000,
        )
        assert page.locator("#parking-list > li").count() == len(site.parks)
        page.screenshot(path=str(artifact(shot)), full_page=viewport["width"] < 800)
        first = site.parks[0]
        label = page.get_attribute(f'.parking-marker[data-id="{first.id}"]', "aria-label")
        assert label == "Parking Darcy — Places disponibles, 100 places libres sur 400"
        marker = page.locator(f'.parking-marker[data-id="{first.id}"]')
        assert marker.inner_text() == "100"

        site.set_free(first, 0.0)  # the car park fills up: the page says so without reloading
        spaces = page.locator(f'#park-{first.id} [data-field="spaces"]')
        page.wait_for_function(
            "id => document.querySelector('#park-' + id + ' [data-field=spaces]').textContent"
            " === '0 place libre sur 400'",
            arg=first.id,
            timeout=20_000,
        )
        assert spaces.inner_text() == "0 place libre sur 400"
        announce = page.locator("#parking-announce").text_content() or ""
        assert "Parking Darcy : Complet" in announce
        assert marker.inner_text() == "0"

        page.select_option(
            "#parking-commune", label=page.locator(f"#park-{first.id} .park-commune").inner_text()
        )
        shown = page.locator("#parking-list > li:not([hidden])").count()
        assert 0 < shown < len(site.parks)
        assert re.fullmatch(r"\d+ parkings? affichés?", page.inner_text("#parking-count"))
        page.select_option("#parking-commune", value="")

        page.locator(f"#park-{first.id} .show-on-map").click()
        page.wait_for_selector(".leaflet-popup-content", timeout=10_000)
        assert "Parking Darcy" in page.inner_text(".leaflet-popup-content")
        page.keyboard.press("Escape")
        # Leaflet fades a popup out: axe would measure its text half transparent.
        page.wait_for_function(
            "() => [...document.querySelectorAll('.leaflet-popup')]"
            ".every(p => getComputedStyle(p).opacity === '1')",
            timeout=10_000,
        )

        results = Axe().run(page, options={"runOnly": {"type": "tag", "values": AXE_TAGS}})
        assert results.violations_count == 0, results.generate_report()
        page.close()
    assert not errors, errors


def test_static_files_are_in_the_package() -> None:
    """Leaflet's files and licence, the page's script, style and template are where served."""
    hmi = Path(__file__).resolve().parent.parent / "src" / "beffroi" / "hmi"
    for name in (
        "static/vendor/leaflet/leaflet.js",
        "static/vendor/leaflet/leaflet.css",
        "static/vendor/leaflet/LICENSE",
        "static/vendor/leaflet/images/marker-icon.png",
        "static/parking/parking.js",
        "static/parking/parking.css",
        "templates/public_parking.html",
    ):
        assert (hmi / name).is_file(), name
