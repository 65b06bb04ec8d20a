"""The living inventory: imports, precedence, discovery, confirmation, removal, on real files."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beffroi.control.audit import AuditLog
from beffroi.core.register import RegisterChange, build_register
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from beffroi.inventory.store import InventoryStore


def _inventory(demo_config, tmp_path: Path, clock=None) -> tuple[Inventory, list[RegisterChange]]:
    register = build_register(demo_config, assets=30)
    seen: list[RegisterChange] = []
    register.subscribe(seen.append)
    store = InventoryStore(tmp_path / "inventory.duckdb")
    inv = Inventory(demo_config, register, store, **({"clock": clock} if clock else {}))
    inv.load()
    return inv, seen


CABINET = AssetRecord(
    "LC-9001", "streetlight_cabinet", "talant", 47.336, 5.005, "Armoire Place du Marché",
    "2 place du Marché, 21240 Talant", "Hélios 4", None, {"contrat": "EP-2024-17"},
)  # fmt: skip


def test_an_import_adds_moves_reclassifies_and_retires_what_its_file_says(
    demo_config, tmp_path: Path
) -> None:
    """A second import of one origin is a diff: moved, reclassified, retired; all stored."""
    inv, seen = _inventory(demo_config, tmp_path)
    other = dataclasses.replace(CABINET, id="LC-9002", name="Armoire rue Pasteur")
    first = inv.import_records([CABINET, other], "ep.csv", "marie")
    assert (first.added, first.errors) == (2, [])
    asset = inv.register.assets["LC-9001"]
    assert (asset.name, asset.source, asset.origin, asset.attributes["contrat"]) == (
        "Armoire Place du Marché", "inventory", "ep.csv", "EP-2024-17"
    )  # fmt: skip
    assert "talant/LC-9001/power_kw" in inv.register.tags
    moved = dataclasses.replace(CABINET, lat=47.337)
    camera = dataclasses.replace(other, asset_class="camera")
    again = inv.import_records([moved, camera], "ep.csv", "marie")
    assert (again.updated, again.reclassified, again.retired) == (1, 1, 0)
    third = inv.import_records([moved], "ep.csv", "marie")
    assert third.retired == 1 and "LC-9002" in inv.register.retired
    assert "talant/LC-9002/online" not in inv.register.tags  # its tags left with it
    assert [len(c.added) for c in seen] == [2, 1, 0]
    inv.store.close()
    # A restart brings the inventory back as it was.
    inv2, _ = _inventory(demo_config, tmp_path)
    assert inv2.register.assets["LC-9001"].lat == 47.337
    assert "LC-9002" in inv2.register.retired


def test_bad_records_are_refused_one_by_one_with_why(demo_config, tmp_path: Path) -> None:
    """A record of an unknown class, commune, or a NUL in its name is refused; the rest goes in."""
    inv, _ = _inventory(demo_config, tmp_path)
    bad = [
        dataclasses.replace(CABINET, id="LC-9101", asset_class="rocket"),
        dataclasses.replace(CABINET, id="LC-9102", commune="paris"),
        dataclasses.replace(CABINET, id="LC-9103", name="a\x00b"),
        dataclasses.replace(CABINET, id="LC 9104"),
        dataclasses.replace(CABINET, id="LC-9105", lat=123.0),
    ]
    report = inv.import_records([*bad, CABINET], "ep.csv", "marie")
    assert report.added == 1 and len(report.errors) == 5
    assert "unknown asset class 'rocket'" in report.errors[0]
    assert "unknown commune 'paris'" in report.errors[1]


def test_discovered_assets_wait_to_be_placed_then_join_the_inventory(
    demo_config, tmp_path: Path
) -> None:
    """Discovery adds what nobody listed, at its commune's centre; an operator places it."""
    inv, _ = _inventory(demo_config, tmp_path)
    audit = AuditLog(tmp_path / "audit.duckdb")
    inv.attach_audit(audit)
    template = inv.register.assets[next(iter(inv.register.assets))]
    found = dataclasses.replace(template, id="LC-7777", commune="dijon", state="active")
    known = dataclasses.replace(template)  # the generated register has it: it wins
    [new] = inv.discovered([found, known], "opcua:plant")
    assert (new.state, new.source) == ("to_place", "discovery")
    dijon = inv.register.communes["dijon"]
    assert (new.lat, new.lon) == (dijon.lat, dijon.lon)
    placed = inv.confirm("LC-7777", "marie", lat=47.32, lon=5.04, name="Armoire du Port")
    assert (placed.state, placed.source, placed.name) == ("active", "inventory", "Armoire du Port")
    actions = list(audit.frame().action)
    assert actions == ["inventory.discover", "inventory.confirm"]
    audit.close()


def test_an_asset_gone_from_its_server_is_removed_after_the_grace_period(
    demo_config, tmp_path: Path
) -> None:
    """Not offered: nothing at first; past `removed_after_s`, removed at source; back: active."""
    now = [datetime(2026, 12, 7, 12, tzinfo=UTC)]
    inv, _ = _inventory(demo_config, tmp_path, clock=lambda: now[0])
    asset = next(iter(inv.register.assets.values()))
    inv.not_offered({t.name: 0x80340000 for t in asset.tags}, "opcua:plant")
    assert inv.check_removed() == []
    now[0] += timedelta(seconds=demo_config.inventory.removed_after_s)
    [gone] = inv.check_removed()
    assert gone.id == asset.id and inv.register.assets[asset.id].state == "removed"
    assert inv.offered([asset.tags[0].name])[0].id == asset.id
    assert inv.register.assets[asset.id].state == "active"
