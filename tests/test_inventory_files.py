"""Inventory files (CSV, GeoJSON), `beffroi inventory` on the files and through a gateway."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from typer.testing import CliRunner

from beffroi.api.inventory import Uploads, import_text
from beffroi.app.config import demo_config, load_config
from beffroi.cli import app
from beffroi.cli.inventory import json_parts
from beffroi.control.audit import AuditLog
from beffroi.core.register import build_register
from beffroi.inventory.formats import (
    Format,
    UnreadableInventory,
    parse_file,
    parse_inventory,
    read_inventory,
    write_csv,
    write_geojson,
)
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from beffroi.inventory.store import InventoryStore
from tests.conftest import ROOT, free_port

CABINET = AssetRecord(
    "LC-9001", "streetlight_cabinet", "talant", 47.336512345678, 5.00512, "Armoire d'éclairage "
    "place du Marché", "2 place du Marché, 21240 Talant", "Hélios 4", date(2019, 3, 12),
    {"contrat": "EP-2024-17", "note": 'dit "le vieux"; voir\nplan', "delta": "-12"},
)  # fmt: skip
PLAIN = dataclasses.replace(CABINET, attributes={"contrat": "EP-2024-17"})
ODD = AssetRecord(
    "CAM-0001", "camera", "dijon", -0.5, 179.999999, "=HYPERLINK(\"x\")", "'=déjà marqué",
    "", None, {"Numéro d'inventaire": "@42"},
)  # fmt: skip


def _config_file(tmp_path: Path, extra: str = "") -> Path:
    """Write the demo config with its data (historian, store, audit) in tmp_path."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "h.duckdb"}"')
    out = tmp_path / "config.toml"
    out.write_text(text + extra)
    return out


def _cli(*args: str):  # type: ignore[no-untyped-def]
    return CliRunner().invoke(app, list(args))


# -- files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [",", ";"])
def test_csv_round_trip_keeps_every_field_and_attribute(sep: str, tmp_path: Path) -> None:
    """What is written reads back the same: floats, dates, quotes, line breaks, formula-like
    text (marked for spreadsheets, unmarked when read), attributes as columns."""
    text = write_csv([CABINET, ODD], sep=sep)
    assert text.startswith("\ufeff") == (sep == ";")  # French spreadsheets need the BOM
    assert "'=HYPERLINK" in text and "''=déjà" in text and "'@42" in text and "'-12" in text
    path = tmp_path / "out.csv"
    path.write_text(text, encoding="utf-8", newline="")
    records, errors = read_inventory(path)
    assert errors == [] and records == [CABINET, ODD]


def test_geojson_round_trip_keeps_every_field_and_attribute(tmp_path: Path) -> None:
    """A FeatureCollection of Points, one feature per line, reads back the same records."""
    text = write_geojson([CABINET, ODD])
    assert len(text.splitlines()) == 4  # the collection's lines and one per feature
    doc = json.loads(text)
    assert doc["features"][0]["id"] == "LC-9001"
    assert doc["features"][0]["geometry"] == {
        "type": "Point",
        "coordinates": [5.00512, 47.336512345678],
    }
    path = tmp_path / "out.geojson"
    path.write_text(text, encoding="utf-8")
    assert read_inventory(path) == ([CABINET, ODD], [])


def test_geojson_shapes_are_placed_at_their_centroid() -> None:
    """A polygon (its hole subtracted), a line, points; the feature's own id; numbers as text."""
    square = [[5.0, 47.0], [5.2, 47.0], [5.2, 47.2], [5.0, 47.2], [5.0, 47.0]]
    hole = [[5.0, 47.0], [5.1, 47.0], [5.1, 47.1], [5.0, 47.1], [5.0, 47.0]]  # lower-left quarter
    features = [
        {"type": "Polygon", "coordinates": [square, hole]},
        {"type": "LineString", "coordinates": [[5.0, 47.0], [5.0, 47.1], [5.3, 47.1]]},
        {"type": "MultiPoint", "coordinates": [[5.0, 47.0], [5.2, 47.4]]},
        {"type": "GeometryCollection", "geometries": [
            {"type": "Point", "coordinates": [9.0, 9.0]},
            {"type": "Polygon", "coordinates": [square]},
        ]},
    ]  # fmt: skip
    doc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "id": f"BT-{i}", "geometry": g,
             "properties": {"class": "building", "commune": "dijon", "surface_m2": 1200}}
            for i, g in enumerate(features)
        ],
    }  # fmt: skip
    records, errors = parse_inventory(json.dumps(doc), "bat.geojson")
    assert errors == []
    places = [(round(r.lon, 6), round(r.lat, 6)) for r in records]
    # The square's centroid less its lower-left quarter's, by area: 7/12 of the side from 5, 47.
    assert places[0] == (round(5.0 + 0.2 * 7 / 12, 6), round(47.0 + 0.2 * 7 / 12, 6))
    assert places[1] == (
        round((0.1 * 5.0 + 0.3 * 5.15) / 0.4, 6),
        round((0.1 * 47.05 + 0.3 * 47.1) / 0.4, 6),
    )
    assert places[2] == (5.1, 47.2)
    assert places[3] == (5.1, 47.1)  # the area wins over the point
    assert records[0].id == "BT-0" and records[0].attributes == {"surface_m2": "1200"}


def test_each_bad_csv_value_is_a_row_error_with_file_line_and_field(tmp_path: Path) -> None:
    """One error per bad field, naming the line where its row starts; good rows still load."""
    lines = [
        "id,class,commune,lat,lon,name,installed",
        'LC-1,streetlight_cabinet,dijon,47.32,5.04,"Armoire\nsur deux lignes",2020-01-31',
        ",streetlight_cabinet,dijon,47.32,5.04,,",  # line 4
        "LC-3,,dijon,47.32,5.04,,",
        "LC-4,camera,,47.32,5.04,,",
        "LC-5,camera,dijon,abc,5.04,,",
        "LC-6,camera,dijon,95,5.04,,",
        "LC-7,camera,dijon,47.3,,,",
        "LC-8,camera,dijon,47.3,5.0,,12/03/2019",
        "LC-9,camera,dijon,47.3,5.0,,,surplus",
        "",
        "LC-10,camera,dijon,nan,5.0,,",
        "LC-11,camera,dijon,47.3,5.0,,",
    ]
    path = tmp_path / "ep.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    records, errors = read_inventory(path)
    assert [r.id for r in records] == ["LC-1", "LC-11"]
    assert records[0].name == "Armoire\nsur deux lignes"
    got = [(e.file, e.line, e.field) for e in errors]
    assert got == [
        (str(path), 4, "id"), (str(path), 5, "class"), (str(path), 6, "commune"),
        (str(path), 7, "lat"), (str(path), 8, "lat"), (str(path), 9, "lon"),
        (str(path), 10, "installed"), (str(path), 11, ""), (str(path), 13, "lat"),
    ]  # fmt: skip
    text = [str(e) for e in errors]
    assert "expected an asset id, the cell is empty" in text[0]
    assert "expected a latitude in decimal degrees (-90 to 90, WGS 84), got 'abc'" in text[3]
    assert "got '95'" in text[4]
    assert text[6].endswith("installed: expected an ISO date YYYY-MM-DD, got '12/03/2019'")
    assert "8 cells where the header has 7 columns" in text[7]
    assert parse_file(path.read_text(), "ep.csv").refused == {
        f"LC-{i}" for i in (3, 4, 5, 6, 7, 8, 9, 10)
    }


def test_each_bad_geojson_feature_is_a_row_error_with_its_index_and_member() -> None:
    """Errors name the feature's index and the member (properties.x, geometry)."""
    point = {"type": "Point", "coordinates": [5.04, 47.32]}
    good = {
        "type": "Feature",
        "geometry": point,
        "properties": {"id": "LC-1", "class": "camera", "commune": "dijon"},
    }
    features = [
        good,
        {"type": "Point", "coordinates": [5.0, 47.0]},
        {**good, "properties": ["LC-2"]},
        {**good, "geometry": None},
        {**good, "geometry": {"type": "Point", "coordinates": ["5", 47]}},
        {**good, "geometry": {"type": "Circle", "coordinates": [5, 47]}},
        {**good, "properties": {"id": "LC-6", "commune": "dijon", "installed": "hier"}},
        {**good, "geometry": {"type": "Point", "coordinates": [47.3, 95.0]}},  # lat, lon swapped
    ]
    records, errors = parse_inventory(
        json.dumps({"type": "FeatureCollection", "features": features}), "x.geojson"
    )
    assert [r.id for r in records] == ["LC-1"]
    assert [(e.line, e.field) for e in errors] == [
        (1, "features[1].type"), (2, "features[2].properties"), (3, "features[3].geometry"),
        (4, "features[4].geometry"), (5, "features[5].geometry"),
        (6, "features[6].properties.class"), (6, "features[6].properties.installed"),
        (7, "features[7].geometry"),
    ]  # fmt: skip
    assert "expected a position [longitude, latitude]" in errors[3].message
    assert "expected a latitude" in errors[7].message


def test_a_french_semicolon_csv_with_bom_and_decimal_commas(tmp_path: Path) -> None:
    """As a French spreadsheet saves it: BOM, `;`, CRLF, decimal commas, headers in capitals."""
    text = (
        "ID;Class;Commune;Latitude;Longitude;Name;Address;Contrat;Remarque\r\n"
        "LC-0001;streetlight_cabinet;dijon;47,3216;5,0415;Armoire d'éclairage rue de la Liberté;"
        "12 rue de la Liberté, 21000 Dijon;EP-2024-17;\r\n"
        ";;;;;;;;\r\n"
    )
    path = tmp_path / "ep.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    records, errors = read_inventory(path)
    assert errors == []
    [r] = records
    assert (r.id, r.lat, r.lon) == ("LC-0001", 47.3216, 5.0415)
    assert r.attributes == {"Contrat": "EP-2024-17"}  # the empty `Remarque`: no attribute
    assert r.name == "Armoire d'éclairage rue de la Liberté"


def test_a_file_that_cannot_be_read_whole_loads_nothing(demo_config, tmp_path: Path) -> None:
    """Not UTF-8, a column missing, GeoJSON in Lambert 93: an OSError for the gateway's start (it
    logs it and goes on), and an import that changes nothing, rather than retiring everything."""
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(
        "id;class;commune;lat;lon\nLC-1;camera;dijon;47,3;5,0;Armoire Hélios\n".encode("cp1252")
    )
    with pytest.raises(UnreadableInventory, match=r"latin1.csv:2: not UTF-8 text \(byte 0xE9\)"):
        read_inventory(latin1)
    no_lon = tmp_path / "no_lon.csv"
    no_lon.write_text("id,class,commune,lat\nLC-1,camera,dijon,47.3\n")
    with pytest.raises(
        OSError, match=r"no_lon.csv:1: lon: column missing \(the header has: id, class"
    ):
        read_inventory(no_lon)
    l93 = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}}
    lambert = {"type": "FeatureCollection", "features": [], "crs": l93}
    assert parse_file(json.dumps(lambert), "l93.geojson").whole

    inv = Inventory(demo_config, build_register(demo_config, assets=30), None)
    first = import_text(
        inv, write_csv([CABINET]), name="ep.csv", fmt=Format.csv, origin="ep.csv", user="marie"
    )
    assert first["counts"]["added"] == 1
    answer = import_text(
        inv, no_lon.read_text(), name="ep.csv", fmt=Format.csv, origin="ep.csv", user="marie"
    )
    assert not answer["imported"] and answer["errors"][0]["field"] == "lon"
    assert inv.register.assets[CABINET.id].name == CABINET.name  # not retired


# -- import -----------------------------------------------------------------------------------


def test_an_import_rehearses_refuses_rows_and_keeps_the_assets_of_refused_rows(
    demo_config, tmp_path: Path
) -> None:
    """Changes listed before they are made; a dry run changes nothing; a row refused by the site
    (unknown class) names its line; an asset whose row is refused is kept, not retired."""
    register = build_register(demo_config, assets=30)
    store = InventoryStore(tmp_path / "inventory.duckdb")
    inv = Inventory(demo_config, register, store)
    other = dataclasses.replace(CABINET, id="LC-9002", name="Armoire rue Pasteur")
    text = write_csv([CABINET, other])
    dry = import_text(
        inv, text, name="ep.csv", fmt=Format.csv, origin="ep.csv", user="marie", dry_run=True
    )
    assert [c["change"] for c in dry["changes"]] == ["add", "add"] and dry["counts"]["added"] == 2
    assert "LC-9001" not in register.assets and store.records() == []
    done = import_text(inv, text, name="ep.csv", fmt=Format.csv, origin="ep.csv", user="marie")
    assert done["changes"] == dry["changes"] and register.assets["LC-9001"].origin == "ep.csv"
    broken = write_csv([dataclasses.replace(CABINET, asset_class="rocket", lat=47.4), other])
    again = import_text(inv, broken, name="ep.csv", fmt=Format.csv, origin="ep.csv", user="marie")
    assert again["errors"] == [{"file": "ep.csv", "line": 2, "field": "class",
                                "message": "unknown asset class 'rocket'"}]  # fmt: skip
    assert again["kept"] == ["LC-9001"] and again["counts"]["retired"] == 0
    assert register.assets["LC-9001"].lat == CABINET.lat
    store.close()


def test_the_demo_inventory_takes_over_the_generated_assets(demo_config) -> None:
    """data/inventaire-demo.csv: a few hundred assets of the demo register, every commune, each
    placed within 50 m of its generated place, named, with an address; no row refused."""
    register = build_register(demo_config)
    names = {c.id: c.name for c in demo_config.communes}
    path = ROOT / "data" / "inventaire-demo.csv"
    shipped = load_config(ROOT / "config.toml")  # what `make demo` starts with imports it
    assert [shipped.resolve(f) for f in shipped.inventory.files] == [path]
    records, errors = read_inventory(path)
    assert errors == [] and 250 <= len(records) <= 500
    assert {r.commune for r in records} == set(register.communes)
    for r in records:
        a = register.assets[r.id]
        assert (a.asset_class, a.commune) == (r.asset_class, r.commune)
        assert abs(a.lat - r.lat) * 111_000 < 50 and abs(a.lon - r.lon) * 75_000 < 50
        assert r.name and r.model and ", 21" in r.address
        assert r.address.endswith(names[r.commune])
    inv = Inventory(demo_config, register, None)
    answer = import_text(inv, path.read_text(encoding="utf-8"), name=str(path), fmt=Format.csv,
                         origin=path.name, user="system")  # fmt: skip
    assert answer["errors"] == [] and answer["counts"]["updated"] == len(records)


def test_json_parts_stay_under_the_body_limit() -> None:
    """Parts of a file sent through the gateway: each under the budget once JSON-escaped."""
    text = ("id;name\r\n" + 'LC-1;Armoire d\'éclairage « rue » "x" 🏛\n' * 400) * 3
    parts = list(json_parts(text, 1000))
    assert "".join(parts) == text and len(parts) > 10
    assert all(len(json.dumps(p)) <= 1000 for p in parts)


def test_uploads_take_parts_in_order_within_bounds() -> None:
    """Parts come in order; a lost part, an unknown upload, too big or too many are refused."""
    now = [0.0]
    up = Uploads(max_chars=10, max_pending=1, idle_s=60, clock=lambda: now[0])
    key, parts, chars = up.add("", 0, "abc")
    assert (parts, chars) == (1, 3)
    with pytest.raises(ValueError, match="part 2: expected part 1"):
        up.add(key, 2, "x")
    with pytest.raises(ValueError, match="inventory uploads are in progress"):
        up.add("", 0, "x")
    up.add(key, 1, "def")
    assert up.take(key) == "abcdef"
    with pytest.raises(ValueError, match="no upload"):
        up.take(key)
    key, _, _ = up.add("", 0, "abcdef")
    with pytest.raises(ValueError, match="over 10 characters"):
        up.add(key, 1, "ghijk")
    key, _, _ = up.add("", 0, "a")
    now[0] = 61.0
    up.add("", 0, "b")  # the idle one was dropped
    with pytest.raises(ValueError, match="no upload"):
        up.take(key)


# -- the command line on the files ------------------------------------------------------------


def test_cli_on_the_files_imports_moves_retires_exports_and_diffs(tmp_path: Path) -> None:
    """No gateway: the store and the register from the config; audited; exit 1 on bad rows."""
    config = str(_config_file(tmp_path))
    first = tmp_path / "ep.csv"
    other = dataclasses.replace(PLAIN, id="LC-9002", commune="dijon", name="Armoire rue Pasteur")
    first.write_text(write_csv([PLAIN, other]) + "LC-9003,rocket,dijon,47.3,5.0,,,,,\r\n")
    res = _cli("inventory", "import", str(first), "-c", config, "--user", "marie")
    assert res.exit_code == 1, res.output
    assert "add        LC-9001" in res.stdout and "add        LC-9002" in res.stdout
    assert f"{first}:4: class: unknown asset class 'rocket'" in res.stderr
    assert "ep.csv: 2 added, 0 moved" in res.stdout and "1 rows refused" in res.stdout
    assert "through the running gateway" not in res.stderr

    second = tmp_path / "ep-2.csv"
    moved = dataclasses.replace(PLAIN, lat=47.337)
    second.write_text(write_csv([moved]))
    res = _cli("inventory", "import", str(second), "-c", config, "--origin", "ep.csv", "--dry-run")
    assert res.exit_code == 0, res.output
    assert "(dry run: nothing changed)" in res.stdout
    res = _cli(
        "inventory", "import", str(second), "-c", config, "--origin", "ep.csv", "--user", "marie"
    )
    assert res.exit_code == 0, res.output
    assert "move       LC-9001        talant: lat" in res.stdout
    assert "retire     LC-9002        dijon (not in ep.csv)" in res.stdout

    out = tmp_path / "all.geojson"
    res = _cli("inventory", "export", "-c", config, "--format", "geojson", "--out", str(out))
    assert res.exit_code == 0, res.output
    records, _ = read_inventory(out)
    assert moved in records and not any(r.id == "LC-9002" for r in records)
    assert f"{len(records)} assets written to {out}" in res.stderr
    res = _cli("inventory", "export", "-c", config, "--state", "retired", "--sep", ";")
    assert res.stdout.startswith("\ufeffid;class;commune") and "LC-9002;" in res.stdout

    res = _cli("inventory", "diff", str(first), str(second))
    assert res.exit_code == 0, res.output  # a class unknown to the site is still a good row
    assert "move       LC-9001" in res.stdout and "retire     LC-9002" in res.stdout
    assert "retire     LC-9003" in res.stdout
    res = _cli("inventory", "diff", str(second), str(out), "--json")
    assert json.loads(res.stdout)["counts"]["added"] == len(records) - 1
    res = _cli("inventory", "to-place", "-c", config)
    assert res.stdout.strip() == "no asset waits to be placed"

    audit = AuditLog(tmp_path / "audit.duckdb", read_only=True)
    actions = list(audit.frame().action)
    audit.close()
    assert actions == ["inventory.add", "inventory.add", "inventory.move", "inventory.retire"]


# -- the command line through a running gateway -----------------------------------------------


def _beffroi(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beffroi", *args], capture_output=True, text=True, timeout=120
    )


async def test_cli_imports_through_the_running_gateway_in_parts(
    demo_config_fixture, tmp_path: Path
) -> None:
    """A file larger than the gateway's body limit goes in parts; the running register changes
    at once (assets added, moved, retired), audited; export reads what it holds."""
    from beffroi.app.runtime import Runtime

    limit = "\n[hmi.http]\nmax_body_bytes = 4096\n"
    config = _config_file(tmp_path, limit)
    cfg = demo_config(load_config(config), data=tmp_path, port=free_port(), opcua_port=free_port())
    register = build_register(cfg, assets=30)
    runtime = Runtime(cfg, register, simulator=False, hmi=True)
    generated = [AssetRecord.of(a) for a in list(register.assets.values())[:20]]
    new = [
        dataclasses.replace(CABINET, id=f"LC-9{i:03d}", name=f"Armoire n° {i}") for i in range(60)
    ]
    taken = [
        dataclasses.replace(r, lat=r.lat + 0.0001, name=f"Équipement {r.id}") for r in generated
    ]
    first = tmp_path / "inventaire.csv"
    first.write_text(write_csv(taken + new))
    assert first.stat().st_size > 3 * 4096
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        args = ["inventory", "import", "-c", str(config), "--user", "marie"]
        proc = await asyncio.to_thread(_beffroi, *args, str(first))
        assert proc.returncode == 0, proc.stderr
        assert "(sent through the running gateway at" in proc.stderr
        assert "inventaire.csv: 60 added, 20 moved" in proc.stdout
        assert runtime.register.assets["LC-9059"].name == "Armoire n° 59"
        assert "talant/LC-9059/power_kw" in runtime.register.tags
        assert runtime.register.assets[taken[0].id].name == taken[0].name

        second = tmp_path / "inventaire-2.csv"
        second.write_text(write_csv(taken + new[:-1]))
        proc = await asyncio.to_thread(_beffroi, *args, "--origin", "inventaire.csv", str(second))
        assert proc.returncode == 0, proc.stderr
        assert "retire     LC-9059" in proc.stdout and "LC-9059" in runtime.register.retired
        proc = await asyncio.to_thread(_beffroi, "inventory", "export", "-c", str(config))
        assert proc.returncode == 0 and "(read through the running gateway at" in proc.stderr
        exported, errors = parse_inventory(proc.stdout, "export.csv")
        assert errors == [] and len(exported) == len(runtime.register.assets)
        assert runtime.control is not None and runtime.control.audit is not None
        actions = list(runtime.control.audit.frame().action)
        assert actions.count("inventory.add") == 60 and "inventory.retire" in actions


def test_inventory_routes_answer_409_when_the_gateway_has_no_inventory(
    demo_config_fixture, small_register, tmp_path: Path
) -> None:
    """A gateway built without an inventory says so, as for alarms and the audit log."""
    from flask import Flask

    from beffroi.api.server import mount_api
    from beffroi.historian.duckdb.historian import DuckDBHistorian

    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    server = Flask("t")
    mount_api(server, "tok", historian=hist, timezone="Europe/Paris")
    got = server.test_client().post(
        "/api/v1/inventory/import", headers={"Authorization": "Bearer tok"}
    )
    assert got.status_code == 409 and "inventory is not open" in got.get_json()["error"]
    hist.close()
