"""The Inventory page and the map's inventory states, in Chromium, over a living inventory.

A real inventory (its DuckDB store, the audit log) changes the register while the HMI serves:
the grid lists names and addresses within the user's communes, an asset found by discovery is
placed from the page, another retired, hand-built requests without the right or past the
user's communes get 403, and the map shows assets to be placed and removed at source.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from beffroi.app.config import Config
from beffroi.control.audit import AuditLog
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register, build_register, tags_for
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.state import STATE_COLOURS
from beffroi.hmi.users import UserStore
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from beffroi.inventory.store import InventoryStore
from tests.browser import artifact, log_in
from tests.conftest import free_port
from tests.test_control_helpers import dash_request, post_callback
from tests.test_hmi import logged_in_opener, ungroup_markers

PW = "correct horse battery"
MARCHE = AssetRecord(
    "LC-9001", "streetlight_cabinet", "talant", 47.336, 5.005, "Armoire Place du Marché",
    "2 place du Marché, 21240 Talant", "Hélios 4", date(2019, 5, 14), {"contrat": "EP-2024-17"},
)  # fmt: skip
PASTEUR = AssetRecord(
    "LC-9002", "streetlight_cabinet", "dijon", 47.3216, 5.0415, "Armoire rue Pasteur",
    "14 rue Pasteur, 21000 Dijon", "Hélios 3", date(2016, 3, 2), {"contrat": "EP-2021-03"},
)  # fmt: skip
PLACE = (47.3301, 5.0102)  # where the supervisor places the discovered cabinet


@dataclass
class Site:
    """A served HMI over a living inventory, and what the tests look at."""

    url: str
    register: Register
    inventory: Inventory
    live: LiveValues
    audit: AuditLog
    now: list[datetime]  # the inventory's clock

    def discover(self, asset_id: str, commune: str, asset_class: str = "streetlight_cabinet"):  # type: ignore[no-untyped-def]
        """Have a collector report an asset nobody listed (browse path commune/asset)."""
        cls = self.inventory.site.asset_classes[asset_class]
        found = Asset(
            asset_id, asset_class, commune, 0.0, 0.0, cls.domain, tags_for(asset_id, commune, cls)
        )
        [new] = self.inventory.discovered([found], "opcua:plant")
        self.live.update(_healthy(new))
        return new


def _healthy(asset: Asset) -> list[Sample]:
    """Return values of an asset in working order (a bus where the register puts it)."""
    ts = utcnow() - timedelta(seconds=1)
    values = {"float": 12.5, "bool": False, "str": "ok"}
    place = {"lat": asset.lat, "lon": asset.lon}
    return [Sample(t.name, ts, place.get(t.signal, values[t.kind])) for t in asset.tags]


@pytest.fixture
def site(tmp_path: Path, demo_config: Config) -> Iterator[Site]:
    """Serve the HMI over 40 generated assets and two imported cabinets, all reporting."""
    register = build_register(demo_config, assets=40)
    audit = AuditLog(tmp_path / "audit.duckdb")
    now = [datetime(2026, 12, 7, 12, tzinfo=UTC)]
    inventory = Inventory(
        demo_config,
        register,
        InventoryStore(tmp_path / "inventory.duckdb"),
        audit=audit,
        clock=lambda: now[0],
    )
    inventory.load()
    report = inventory.import_records([MARCHE, PASTEUR], "eclairage.csv", "system")
    assert report.added == 2 and not report.errors
    live = LiveValues()
    live.update([s for a in register.assets.values() for s in _healthy(a)])
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    users.add("sup", PW, "supervisor", ["*"])
    users.add("sup-talant", PW, "supervisor", ["talant"])
    users.add("op", PW, "operator", ["*"])
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    app = create_app(
        demo_config, register, live, hist, users=users, audit=audit, inventory=inventory
    )
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    try:
        yield Site(server.url, register, inventory, live, audit, now)
    finally:
        server.stop()
        hist.close()
        users.close()
        assert inventory.store is not None
        inventory.store.close()
        audit.close()


# --- hand-built requests ------------------------------------------------------------------


def _confirm(asset_id: str, lat: object, lon: object, name: object = "", address: object = ""):  # type: ignore[no-untyped-def]
    return dash_request(
        ["inventory-confirm-feedback.children", "inventory-placed.data"],
        {"inventory-confirm.n_clicks": 1},
        {
            "inventory-place-id.data": asset_id,
            "inventory-lat.value": lat,
            "inventory-lon.value": lon,
            "inventory-name.value": name,
            "inventory-address.value": address,
        },
    )


def _retire(asset_id: str, reason: object):  # type: ignore[no-untyped-def]
    return dash_request(
        ["inventory-retire-feedback.children", "inventory-retired.data"],
        {"inventory-retire.n_clicks": 1},
        {"inventory-grid.selectedRows": [{"id": asset_id}], "inventory-reason.value": reason},
    )


def _list(communes: list[str], text: str = "", states: list[str] | None = None):  # type: ignore[no-untyped-def]
    return dash_request(
        [
            "inventory-grid.rowData",
            "inventory-toplace.rowData",
            "inventory-summary.children",
            "inventory-seen.data",
        ],
        {
            "inventory-interval.n_intervals": 1,
            "inventory-search.value": text,
            "inventory-class.value": None,
            "inventory-commune.value": communes,
            "inventory-state.value": states,
            "inventory-retired.data": None,
            "inventory-placed.data": None,
        },
        {"inventory-seen.data": None},
    )


def _feedback(body: dict, which: str) -> str:
    return body["response"][f"inventory-{which}-feedback"]["children"]


def test_hand_built_requests_need_the_right_and_stay_within_the_communes(site: Site) -> None:
    """An operator gets 403 on placing and retiring; a Talant supervisor past Talant too."""
    found = site.discover("LC-7701", "dijon")
    op = logged_in_opener(site.url, "op", PW)
    assert post_callback(op, site.url, _confirm(found.id, *PLACE))[0] == 403
    assert post_callback(op, site.url, _retire("LC-9001", "gone"))[0] == 403
    status, body = post_callback(op, site.url, _list([]))  # looking needs no right
    rows = body["response"]["inventory-grid"]["rowData"]
    assert status == 200 and len(rows) == len(site.register.assets)

    talant = logged_in_opener(site.url, "sup-talant", PW)
    assert post_callback(talant, site.url, _confirm(found.id, *PLACE))[0] == 403
    assert post_callback(talant, site.url, _retire("LC-9002", "gone"))[0] == 403
    assert post_callback(talant, site.url, _list(["dijon"]))[0] == 403
    status, body = post_callback(talant, site.url, _list([]))
    rows = body["response"]["inventory-grid"]["rowData"]
    assert status == 200 and rows and {r["commune"] for r in rows} == {"Talant"}
    assert body["response"]["inventory-toplace"]["rowData"] == []  # Dijon's is not theirs
    assert found.state == site.register.assets[found.id].state == "to_place"
    assert "LC-9001" in site.register.assets and "LC-9002" in site.register.assets

    # The right and the scope, but not the shape: refused with why, nothing changed.
    sup = logged_in_opener(site.url, "sup", PW)
    for lat, lon, name, said in (
        (None, None, "", "Indiquez l'emplacement"),
        ("47.3", 5.0, "", "Indiquez l'emplacement"),
        (123.0, 5.0, "", "Indiquez l'emplacement"),
        (47.3, 5.0, "x" * 1000, "Refusé : nom : 200 caractères au maximum"),
        (47.3, 5.0, "a\x00b", "Refusé : nom : caractères de contrôle"),
        (47.3, 5.0, {"a": 1}, "Refusé : name : texte attendu"),
    ):
        status, body = post_callback(sup, site.url, _confirm(found.id, lat, lon, name))
        assert status == 200 and _feedback(body, "confirm").startswith(said), (lat, name)
    status, body = post_callback(sup, site.url, _retire("LC-9001", ""))
    assert _feedback(body, "retire") == "Un motif est obligatoire."
    status, body = post_callback(sup, site.url, _retire("LC-9001", "r" * 10_000))
    assert _feedback(body, "retire").startswith("Refusé : motif : 500 caractères au maximum")
    assert site.register.assets[found.id].state == "to_place"
    assert "LC-9001" in site.register.assets
    actions = list(site.audit.frame().action)
    assert "inventory.confirm" not in actions and actions.count("inventory.retire") == 0


def test_the_grid_filters_by_text_class_commune_and_state(site: Site) -> None:
    """Accents and case do not matter to the search; states include to place and retired."""
    site.discover("LC-7702", "dijon")
    site.inventory.retire("LC-9002", "system", "démontée")
    sup = logged_in_opener(site.url, "sup", PW)
    _, body = post_callback(sup, site.url, _list([], "marche"))
    [row] = body["response"]["inventory-grid"]["rowData"]
    assert row == {
        "id": "LC-9001",
        "name": "Armoire Place du Marché",
        "address": "2 place du Marché, 21240 Talant",
        "class": "Armoire d'éclairage public",
        "commune": "Talant",
        "state": "En service",
        "model": "Hélios 4",
        "installed": "2019-05-14",
        "source": "inventaire",
        "origin": "eclairage.csv",
        "attributes": "contrat=EP-2024-17",
        "lat": 47.336,
        "lon": 5.005,
    }
    _, body = post_callback(sup, site.url, _list([], states=["to_place", "retired"]))
    rows = {r["id"]: r["state"] for r in body["response"]["inventory-grid"]["rowData"]}
    assert rows == {"LC-7702": "À placer", "LC-9002": "Réformé"}
    summary = body["response"]["inventory-summary"]["children"]
    active = len(site.register.assets) - 1
    assert summary == (
        f"2 affichés · {active} en service · 1 à placer · 0 retiré à la source · 1 réformé"
    )
    [to_place] = body["response"]["inventory-toplace"]["rowData"]
    assert to_place == {
        "id": "LC-7702",
        "class": "Armoire d'éclairage public",
        "commune": "Dijon",
        "origin": "opcua:plant",
        "signals": len(site.register.assets["LC-7702"].tags),
    }


# --- the page in Chromium -------------------------------------------------------------------

GRID_IDS = (
    "(() => {{ try {{ const ids = []; dash_ag_grid.getApi('{grid}')"
    ".forEachNodeAfterFilterAndSort(n => ids.push(n.data.id)); return ids; }}"
    " catch (e) {{ return null; }} }})()"
)


def _wait_grid(page, test: str, grid: str = "inventory-grid") -> None:  # type: ignore[no-untyped-def]
    """Wait until the grid's ids (`ids`, in its order) pass a JS test."""
    ids = GRID_IDS.format(grid=grid)
    page.wait_for_function(
        f"(() => {{ const ids = {ids}; return ids !== null && ({test}); }})()", timeout=20_000
    )


def _data(page, asset_id: str, grid: str = "inventory-grid") -> dict:  # type: ignore[no-untyped-def]
    """Return a grid's row of one asset, as the browser holds it (drawn or not)."""
    return page.evaluate(f"dash_ag_grid.getApi('{grid}').getRowNode('{asset_id}')?.data")


def _click_row(page, grid: str, asset_id: str) -> None:  # type: ignore[no-untyped-def]
    row = page.locator(f"#{grid} .ag-center-cols-container .ag-row[row-id='{asset_id}']")
    row.wait_for(timeout=20_000)
    row.locator(".ag-cell").first.click()


def _search(page, text: str, test: str) -> None:  # type: ignore[no-untyped-def]
    page.fill("#inventory-search", text)
    page.press("#inventory-search", "Enter")
    _wait_grid(page, test)


def test_a_supervisor_places_a_discovered_asset_and_retires_another(site: Site, browser) -> None:
    """Found by discovery, listed to place, placed by a map click and exact figures, audited;
    then a cabinet retired with a reason; the grid follows both without a reload."""
    found = site.discover("LC-7703", "talant")
    n = len(site.register.assets)
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    try:
        log_in(page, site.url, "sup", PW)
        page.goto(site.url + "inventory")
        _wait_grid(page, f"ids.length === {n} && ids.includes('LC-9001')")
        row = _data(page, "LC-9001")
        assert (row["name"], row["address"]) == (MARCHE.name, MARCHE.address)
        summary = page.inner_text("#inventory-summary")
        assert summary.startswith(f"{n} affichés · {n - 1} en service · 1 à placer")
        _search(page, "pasteur", "ids.length === 1 && ids[0] === 'LC-9002'")
        assert "14 rue Pasteur" in page.inner_text("#inventory-grid .ag-center-cols-container")
        _search(page, "", f"ids.length === {n}")

        _click_row(page, "inventory-toplace", found.id)
        page.wait_for_function(
            "document.getElementById('inventory-placing').innerText"
            ".startsWith('Placement de LC-7703')"
        )
        page.locator("#inventory-map").scroll_into_view_if_needed()
        page.click("#inventory-map", position={"x": 300, "y": 130})  # a place picked on the map
        page.wait_for_function("document.querySelector('#inventory-lat').value !== ''")
        clicked = float(page.input_value("#inventory-lat"))
        page.wait_for_selector("#inventory-map path.leaflet-interactive")  # the chosen place
        page.fill("#inventory-lat", str(PLACE[0]))
        page.fill("#inventory-lon", str(PLACE[1]))
        page.fill("#inventory-name", "Armoire du Belvédère")
        page.fill("#inventory-address", "1 rue du Belvédère, 21240 Talant")
        page.screenshot(path=artifact("hmi-inventory-place.png"))
        page.click("#inventory-confirm")
        page.wait_for_function(
            "document.getElementById('inventory-confirm-feedback').innerText.includes('placé')"
        )
        said = page.inner_text("#inventory-confirm-feedback")
        page.wait_for_function(  # the form is cleared for the next one
            "document.getElementById('inventory-placing').innerText.startsWith('Choisissez')"
            " && document.querySelector('#inventory-lat').value === ''"
        )
        _wait_grid(page, "ids.length === 0", grid="inventory-toplace")
        assert _data(page, found.id)["state"] == "En service"
        assert _data(page, found.id)["name"] == "Armoire du Belvédère"

        _search(page, "9001", "ids.length === 1")
        _click_row(page, "inventory-grid", "LC-9001")
        page.wait_for_function(
            "document.getElementById('inventory-selected').innerText.startsWith('LC-9001')"
        )
        page.fill("#inventory-reason", "armoire déposée, quartier rénové")
        page.click("#inventory-retire")
        page.wait_for_function(
            "document.getElementById('inventory-retire-feedback').innerText.includes('réformé')"
        )
        retired_said = page.inner_text("#inventory-retire-feedback")
        page.wait_for_function(
            "document.getElementById('inventory-summary').innerText.endsWith('1 réformé')"
        )
        assert _data(page, "LC-9001")["state"] == "Réformé"
        _search(page, "", f"ids.length === {n}")
        page.evaluate("document.querySelector('.inventory-page').scrollTo(0, 0)")
        page.screenshot(path=artifact("hmi-inventory.png"))
    finally:
        page.close()

    assert 47.0 < clicked < 47.7
    lat, lon = (f"{v:.6f}".replace(".", ",") for v in PLACE)  # French decimals
    assert said == (f"LC-7703 placé en {lat} ; {lon} par sup : il figure désormais à l'inventaire.")
    placed = site.register.assets[found.id]
    assert (placed.state, placed.source, placed.origin) == (
        "active",
        "inventory",
        "confirmed by sup",
    )
    assert (placed.lat, placed.lon, placed.name) == (*PLACE, "Armoire du Belvédère")
    assert placed.address == "1 rue du Belvédère, 21240 Talant"
    assert retired_said == "LC-9001 réformé par sup."
    assert "LC-9001" in site.register.retired and "LC-9001" not in site.register.assets
    df = site.audit.frame()
    by_action = {r.action: r for r in df.itertuples() if r.user == "sup" and r.action != "login"}
    assert set(by_action) == {"inventory.confirm", "inventory.retire"}
    assert by_action["inventory.confirm"].target == found.id
    assert json.loads(by_action["inventory.confirm"].detail)["lat"] == PLACE[0]
    assert "quartier rénové" in by_action["inventory.retire"].detail
    assert site.audit.verify().ok


def test_the_map_shows_assets_to_place_and_removed_at_source_in_their_own_states(
    site: Site, browser
) -> None:
    """To be placed: a dashed ring at its commune's centre; removed at source: neither
    CommLoss nor anything its leftover values say; retired: not on the map."""
    found = site.discover("LC-7704", "talant")
    gone = site.register.assets["LC-9002"]
    site.inventory.not_offered({t.name: 0x80340000 for t in gone.tags}, "opcua:plant")
    site.now[0] += timedelta(seconds=site.inventory.site.inventory.removed_after_s)
    assert [a.id for a in site.inventory.check_removed()] == ["LC-9002"]
    lost = next(a for a in site.register.assets.values() if a.asset_class == "traffic_controller")
    ts = utcnow()
    site.live.update(
        [Sample(t.name, ts, float("nan"), Quality.COMM_LOSS) for t in (*gone.tags, *lost.tags)]
    )
    retired = next(a for a in site.register.assets.values() if a.asset_class == "camera")
    site.inventory.retire(retired.id, "system", "déposée")
    n = len(site.register.assets)
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    try:
        log_in(page, site.url, "sup", PW)
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {n}", timeout=20_000
        )
        assert page.locator(f"path.beffroi-id-{retired.id}").count() == 0
        to_place = page.locator(f"path.beffroi-id-{found.id}")
        assert to_place.get_attribute("fill") == STATE_COLOURS["toplace"]
        assert "beffroi-state-toplace" in to_place.get_attribute("class")
        assert "beffroi-toplace" in to_place.get_attribute("class")
        assert to_place.get_attribute("stroke-dasharray") == "3 2"
        removed = page.locator("path.beffroi-id-LC-9002")
        assert removed.get_attribute("fill") == STATE_COLOURS["removed"]
        assert "beffroi-state-removed" in removed.get_attribute("class")
        commloss = page.locator(f"path.beffroi-id-{lost.id}")
        assert commloss.get_attribute("fill") == STATE_COLOURS["commloss"]
        counts = {
            s: page.locator(f"#map-count-{s}").inner_text()
            for s in ("toplace", "removed", "commloss", "normal")
        }
        assert counts == {"toplace": "1", "removed": "1", "commloss": "1", "normal": str(n - 3)}
        assert page.inner_text("#map-legend-toplace").startswith("À placer")
        assert page.inner_text("#map-legend-removed").startswith("Retiré à la source")

        to_place.dispatch_event("click")  # whatever marker lies over the commune's centre
        page.wait_for_function(
            f"document.getElementById('map-panel-id')?.innerText === '{found.id}'"
        )
        assert "absent de l'inventaire" in page.inner_text("#map-panel-toplace")
        href = page.locator("#map-panel-toplace a").get_attribute("href")
        assert href == f"/inventory?asset={found.id}"
        assert "trouvé par découverte · opcua:plant" in page.inner_text("#map-panel-record")
        page.screenshot(path=artifact("hmi-map-inventory-states.png"))
        page.click("#map-panel-toplace a")  # the inventory, ready to place it
        page.wait_for_function(
            "document.getElementById('inventory-placing')?.innerText"
            f" === 'Placement de {found.id} (Talant)'",
            timeout=20_000,
        )
        page.goto(site.url)
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {n}", timeout=20_000
        )

        site.inventory.offered([gone.tags[0].name])  # back on its server: in service again
        site.live.update(_healthy(gone))
        page.locator("path.beffroi-id-LC-9002").dispatch_event("click")
        page.wait_for_function("document.getElementById('map-panel-id')?.innerText === 'LC-9002'")
        page.wait_for_function("document.getElementById('map-count-removed').innerText === '0'")
        assert page.inner_text("#map-panel-name") == "Armoire rue Pasteur"
        assert page.inner_text("#map-panel-address") == "14 rue Pasteur, 21000 Dijon"
        record = page.inner_text("#map-panel-record")
        for text in ("Hélios 3", "02/03/2016", "inventaire · eclairage.csv", "EP-2021-03"):
            assert text in record
    finally:
        page.close()


def test_assets_imported_while_the_pages_are_open_appear_at_the_next_refresh(
    site: Site, browser
) -> None:
    """No reload: the grid and the map follow the register's changes as the gateway runs."""
    n = len(site.register.assets)
    new = dataclasses.replace(MARCHE, id="LC-9003", name="Armoire du Lac", lat=47.338)
    newer = dataclasses.replace(MARCHE, id="LC-9004", name="Armoire des Vignes", lat=47.334)
    page = browser.new_page(viewport={"width": 1500, "height": 950})
    try:
        log_in(page, site.url, "sup", PW)
        page.goto(site.url + "inventory")
        _wait_grid(page, f"ids.length === {n}")
        report = site.inventory.import_records([new], "lac.csv", "system", partial=True)
        assert report.added == 1
        _wait_grid(page, f"ids.length === {n + 1} && ids.includes('LC-9003')")
        assert _data(page, "LC-9003")["name"] == "Armoire du Lac"

        page.goto(site.url)
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {n + 1}",
            timeout=20_000,
        )
        site.inventory.import_records([newer], "vignes.csv", "system", partial=True)
        site.live.update(_healthy(site.register.assets["LC-9004"]))
        page.wait_for_function(
            "document.querySelector('path.beffroi-id-LC-9004') !== null", timeout=20_000
        )
        assert page.locator("path.beffroi-asset").count() == n + 2
        site.inventory.retire("LC-9003", "system", "doublon")
        page.wait_for_function(
            "document.querySelector('path.beffroi-id-LC-9003') === null", timeout=20_000
        )
        assert page.locator("path.beffroi-asset").count() == n + 1
        assert (
            page.locator("path.beffroi-id-LC-9004").get_attribute("fill")
            == (STATE_COLOURS["normal"])
        )
    finally:
        page.close()
