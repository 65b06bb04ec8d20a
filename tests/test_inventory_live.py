"""The living inventory in a running gateway: every part follows the register as it changes.

Two real OPC UA servers: the plant, whose node ids are the register's tag names, and a vendor
server whose address space the register does not know (numeric node ids under
Plant/<commune>/<asset>/<signal>), read by discovery. Assets are added, removed and renamed on
the servers and imported and retired in the inventory while the gateway runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from asyncua import Node, ua

from beffroi.app.config import Config, demo_config
from beffroi.app.runtime import Runtime
from beffroi.collectors.opcua.collector import OpcUaCollector
from beffroi.core import status_codes
from beffroi.core.model import Sample
from beffroi.core.register import RegisterChange, build_register, tags_for
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.inventory.records import AssetRecord
from beffroi.kpi.definitions import series_tag
from beffroi.kpi.engine import KpiEngine
from beffroi.kpi.store import KpiStore
from tests.conftest import eventually, free_port
from tests.servers import NS, OpcUaPlant, gateway_config
from tests.test_kpi_cases import load_case

# One event loop for the module: the servers and the gateway serve every test, in order.
pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # asyncua's server calls a coroutine without awaiting it when a monitored node is deleted.
    pytest.mark.filterwarnings("ignore:coroutine 'MonitoredItemService.datachange_callback'"),
]

CABINET = "streetlight_cabinet"
FAULT_RULE = "cabinet-fault"  # config.toml: fault == true, severity 3


@dataclasses.dataclass
class Gateway:
    """The gateway under test, its two servers, and what the tests need of them."""

    runtime: Runtime
    plant: OpcUaPlant
    vendor: OpcUaPlant
    commune: str  # the plant collector's commune
    vendor_nodes: dict[str, Node]

    def collector(self, name: str) -> OpcUaCollector:
        found = next(c for c in self.runtime.collectors if c.name == name)
        assert isinstance(found, OpcUaCollector)
        return found

    def alarm(self, alarm_id: str) -> dict | None:
        assert self.runtime.alarms is not None
        rows = self.runtime.alarms.alarms(include_normal=True)
        return next((r for r in rows if r["alarm_id"] == alarm_id), None)


async def _vendor_asset(server: OpcUaPlant, commune: str, asset_id: str, fault: bool) -> Node:
    """Add Plant/<commune>/<asset> with power_kw and fault (numeric node ids), as a vendor would."""
    assert server.server is not None
    idx = server.idx
    plant = await server.server.nodes.objects.get_child([f"{idx}:Plant"])
    try:
        folder = await plant.get_child([f"{idx}:{commune}"])
    except ua.UaError:
        folder = await plant.add_folder(idx, commune)
    node = await folder.add_object(idx, asset_id)
    await node.add_variable(idx, "power_kw", 0.0)
    await node.add_variable(idx, "fault", fault)
    await node.add_variable(idx, "colour", "amber")  # not a signal of the class
    return node


def _value(runtime: Runtime, tag: str) -> object:
    sample = runtime.live.get(tag)
    return None if sample is None else sample.value


async def _set_signal(node: Node, signal: str, value) -> None:
    var = await node.get_child([f"{node.nodeid.NamespaceIndex}:{signal}"])
    await var.write_value(value)


def _config(base: Config, folder: Path, plant: OpcUaPlant, vendor: OpcUaPlant, commune: str):
    cfg = demo_config(base, data=folder, port=free_port(), opcua_port=None)
    common = {"namespace": NS, "publishing_interval_ms": 50, "timeout_s": 2.0,
              "reconnect_min_s": 0.2, "reconnect_max_s": 1.0, "rediscover_s": 0.5}  # fmt: skip
    # The plant's collector reads register tags of one commune's cabinets; the vendor's finds
    # its assets by browsing.
    scope = {"communes": [commune], "classes": [CABINET]}
    cfg = gateway_config(
        cfg,
        folder,
        opcua=[
            {"name": "plant", "url": plant.url, **scope, **common},
            {"name": "vendor", "url": vendor.url, "discovery": {"root": "Plant"}, **common},
        ],
    )
    out = cfg.model_copy(
        update={
            "inventory": cfg.inventory.model_copy(update={"removed_after_s": 1.0}),
            "kpi": cfg.kpi.model_copy(update={"enabled": False}),  # tested on its own below
        }
    )
    out._source = cfg.source
    return out


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def gateway(demo_config_fixture, tmp_path_factory):
    register = build_register(demo_config_fixture, assets=40)
    commune = next(a.commune for a in register.assets.values() if a.asset_class == CABINET)
    cls = demo_config_fixture.asset_classes[CABINET]
    # The plant has its cabinets' nodes, and those of LC-9001, which an import adds later.
    served = [t for a in register.assets.values() if a.asset_class == CABINET
              and a.commune == commune for t in a.tags]  # fmt: skip
    plant = OpcUaPlant(free_port(), [*served, *tags_for("LC-9001", commune, cls)])
    vendor = OpcUaPlant(free_port(), [])
    await plant.start()
    await vendor.start()
    assert vendor.server is not None
    await vendor.server.nodes.objects.add_folder(vendor.idx, "Plant")
    nodes = {"LC-8001": await _vendor_asset(vendor, "dijon", "LC-8001", fault=False)}
    folder = tmp_path_factory.mktemp("live")
    cfg = _config(demo_config_fixture, folder, plant, vendor, commune)
    runtime = Runtime(cfg, register, simulator=False, hmi=False)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await runtime.start(stack)
            for c in runtime.collectors:
                async with asyncio.timeout(20):
                    await c.wait_connected()  # type: ignore[attr-defined]
            yield Gateway(runtime, plant, vendor, commune, nodes)
    finally:
        await plant.stop()
        await vendor.stop()


async def test_an_asset_only_discovery_found_waits_to_be_placed_with_its_alarms(gateway) -> None:
    """Discovery's asset joins the register "to be placed" and its fault raises an alarm."""
    register = gateway.runtime.register
    await eventually(lambda: "LC-8001" in register.assets, within=20)
    found = register.assets["LC-8001"]
    assert (found.state, found.source, found.origin) == ("to_place", "discovery", "opcua:vendor")
    dijon = register.communes["dijon"]
    assert (found.lat, found.lon) == (dijon.lat, dijon.lon)  # its commune's centre, for now
    # The inventory lists it among the assets to be placed; its tags are what the server has.
    to_place = [a.id for a in register.assets.values() if a.state == "to_place"]
    assert to_place == ["LC-8001"]
    assert {t.signal for t in found.tags} == {"power_kw", "fault"}

    await _set_signal(gateway.vendor_nodes["LC-8001"], "fault", True)
    alarm_id = f"dijon/LC-8001/fault#{FAULT_RULE}"
    await eventually(lambda: (gateway.alarm(alarm_id) or {}).get("state") == "unack_active")
    assert gateway.alarm(alarm_id)["severity"] == 3


async def test_an_asset_added_on_the_server_while_running_is_found_with_its_fault(
    gateway,
) -> None:
    """Browsed again: a new asset joins; its fault, already on, is an alarm from its first value."""
    gateway.vendor_nodes["LC-8002"] = await _vendor_asset(
        gateway.vendor, "quetigny", "LC-8002", fault=True
    )
    register = gateway.runtime.register
    await eventually(lambda: "LC-8002" in register.assets, within=20)
    assert register.assets["LC-8002"].state == "to_place"
    alarm_id = f"quetigny/LC-8002/fault#{FAULT_RULE}"
    await eventually(lambda: (gateway.alarm(alarm_id) or {}).get("state") == "unack_active")
    vendor = gateway.collector("vendor")
    assert vendor.reconnects == 0  # found by browsing again, on the live subscription


async def test_an_import_while_running_binds_and_subscribes_then_retiring_closes_with_why(
    gateway,
) -> None:
    """An imported asset's tags are monitored without a reconnect and its rules bound; taken
    out of the file, it is retired: its alarm closes with the reason, its items are deleted."""
    runtime, commune = gateway.runtime, gateway.commune
    inventory, alarms = runtime.inventory, runtime.alarms
    assert inventory is not None and alarms is not None
    plant = gateway.collector("plant")
    calls = plant.create_calls
    record = AssetRecord("LC-9001", CABINET, commune, 47.33, 5.02, "Armoire du Lavoir")
    report = await asyncio.to_thread(inventory.import_records, [record], "ep.csv", "marie")
    assert (report.added, report.errors) == (1, [])
    power, fault = f"{commune}/LC-9001/power_kw", f"{commune}/LC-9001/fault"
    await eventually(lambda: fault in plant._items and power in plant._items)
    assert plant.reconnects == 0 and plant.create_calls == calls + 1  # one call, live
    await gateway.plant.set(power, 3.5)
    await eventually(lambda: _value(runtime, power) == 3.5)
    await gateway.plant.set(fault, True)
    alarm_id = f"{fault}#{FAULT_RULE}"
    await eventually(lambda: (gateway.alarm(alarm_id) or {}).get("state") == "unack_active")

    # The next version of the file no longer lists it.
    report = await asyncio.to_thread(inventory.import_records, [], "ep.csv", "marie")
    assert report.retired == 1 and "LC-9001" in runtime.register.retired
    assert gateway.alarm(alarm_id) is None  # no longer in the alarm list
    await eventually(lambda: power not in plant._items and fault not in plant._items)
    assert power not in plant.tags and plant.reconnects == 0

    await alarms.flush()  # what the flusher does every quarter of a second
    rows = (await asyncio.to_thread(alarms.events, alarm_ids=[alarm_id])).to_dict("records")
    last = rows[-1]
    assert last["event"] == "retire"
    assert (last["state"], last["active"], last["user"]) == ("normal", False, "marie")
    assert last["comment"] == "asset retired: import ep.csv"
    # Its values are no longer collected.
    await gateway.plant.set(power, 9.9)
    await asyncio.sleep(0.5)
    assert _value(runtime, power) == 3.5


async def test_an_asset_renamed_on_the_server_is_removed_at_source_then_back(gateway) -> None:
    """Renamed on the server: the new name is found, the old one is removed at source past
    the grace period with a system alarm, which clears when the server offers it again."""
    runtime, vendor = gateway.runtime, gateway.vendor
    assert vendor.server is not None
    await vendor.server.delete_nodes([gateway.vendor_nodes.pop("LC-8002")], recursive=True)
    gateway.vendor_nodes["LC-8003"] = await _vendor_asset(vendor, "quetigny", "LC-8003", False)
    register = runtime.register
    await eventually(lambda: "LC-8003" in register.assets, within=20)
    await eventually(lambda: register.assets["LC-8002"].state == "removed", within=20)
    system_id = "quetigny/LC-8002#removed_at_source"
    alarm = gateway.alarm(system_id)
    assert alarm is not None and alarm["state"] == "unack_active"
    assert (alarm["severity"], alarm["kind"], alarm["asset"]) == (3, "system", "LC-8002")
    assert "removed at source" in alarm["message"]
    # A tag it had is Bad with the status code that says why.
    gone = runtime.live.get("quetigny/LC-8002/power_kw")
    assert gone is not None and gone.status == status_codes.BadNodeIdUnknown

    gateway.vendor_nodes["LC-8002"] = await _vendor_asset(vendor, "quetigny", "LC-8002", False)
    await eventually(lambda: register.assets["LC-8002"].state == "to_place", within=20)
    await eventually(lambda: (gateway.alarm(system_id) or {}).get("state") == "unack_rtn")
    assert gateway.collector("vendor").reconnects == 0


async def test_a_register_asset_deleted_on_its_server_is_removed_then_back(gateway) -> None:
    """Register tags: the nodes read again are gone, so not offered; past the grace the asset is
    removed at source with a system alarm; added back, they are monitored again and it clears.
    A BadNodeIdUnknown value tells the inventory too."""
    runtime, plant, commune = gateway.runtime, gateway.plant, gateway.commune
    assert plant.server is not None
    collector = gateway.collector("plant")
    told: list[dict[str, int]] = []
    hook = collector.on_not_offered
    assert hook is not None
    collector.on_not_offered = lambda tags: (told.append(dict(tags)), hook(tags))
    cabinets = [a for a in runtime.register.assets.values()
                if a.commune == commune and a.asset_class == CABINET]  # fmt: skip
    # A server that says so in a value: the tag is reported at once.
    said = cabinets[1].tags[0]
    await plant.set(said.name, 0.0, status=ua.StatusCodes.BadNodeIdUnknown)
    await eventually(lambda: any(said.name in t for t in told))
    assert told[-1][said.name] == status_codes.BadNodeIdUnknown

    asset = cabinets[0]
    nodes = [plant.server.get_node(ua.NodeId(t.name, plant.idx)) for t in asset.tags]
    await plant.server.delete_nodes(nodes)
    await eventually(lambda: runtime.register.assets[asset.id].state == "removed", within=20)
    system_id = f"{commune}/{asset.id}#removed_at_source"
    assert gateway.alarm(system_id)["state"] == "unack_active"
    assert collector.reconnects == 0

    initial = {"float": 0.0, "str": "", "bool": False}
    for t in asset.tags:
        await plant.server.nodes.objects.add_variable(
            ua.NodeId(t.name, plant.idx), t.signal, initial[t.kind]
        )
    await eventually(lambda: runtime.register.assets[asset.id].state == "active", within=20)
    await eventually(lambda: (gateway.alarm(system_id) or {}).get("state") == "unack_rtn")
    power = asset.tag("power_kw")
    await plant.set(power, 4.25)
    await eventually(lambda: _value(runtime, power) == 4.25)


# --- KPIs -------------------------------------------------------------------------------------

PARIS = ZoneInfo("Europe/Paris")


async def test_kpis_count_an_asset_from_its_addition_until_its_retirement(tmp_path: Path) -> None:
    """Added at 10:20, a building counts from 10:20 (hour 10 fully covered); BT-1, retired at
    11:30, counts until then (its held 10 kW does not run on); the hours closed before the
    retirement are not taken for late data after it."""
    cfg, register, _ = load_case("late_data")
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    t0 = datetime(2026, 3, 10, 0, tzinfo=PARIS)
    at = lambda h, m=0: t0 + timedelta(hours=h, minutes=m)  # noqa: E731
    clock = {"now": at(0)}
    engine = KpiEngine(cfg, register, hist, store=KpiStore(tmp_path / "kpi.duckdb"),
                       clock=lambda: clock["now"])  # fmt: skip
    register.subscribe(engine.follow)
    bt1 = register.assets["BT-1"]
    bt2 = dataclasses.replace(
        bt1, id="BT-2", tags=tags_for("BT-2", "dijon", cfg.asset_classes["building"])
    )
    hist.write([Sample("dijon/BT-1/power_kw", at(0, m), 10.0) for m in range(0, 690, 10)])
    clock["now"] = at(10, 20)
    register.apply(RegisterChange(added=(bt2,)))
    hist.write([Sample("dijon/BT-2/power_kw", at(10, m), 10.0) for m in range(20, 90, 10)])
    clock["now"] = at(11, 25)
    first = engine.run_current()  # hours up to 10:00 close
    assert first["hours"] == 12, first
    clock["now"] = at(11, 30)
    register.apply(RegisterChange(retired=(dataclasses.replace(bt1, state="retired"),)))
    hist.write([Sample("dijon/BT-2/power_kw", at(11, m), 10.0) for m in range(30, 60, 10)])
    clock["now"] = at(12, 5)
    report = engine.run_current()
    # BT-1's tags are still read for the hours it counted in: its retirement is no late data.
    assert report.get("late_hours", 0) == 0, report
    assert engine.store.changes().empty

    def hour(h: int) -> tuple[float, float]:
        start = at(h)
        tags = [series_tag("energy_kwh", "hour", "dijon", f) for f in ("", "coverage")]
        df = hist.query(tags, start, start + timedelta(seconds=1))
        got = dict(zip(df["tag"], df["value"], strict=True))
        return got[tags[0]], got[tags[1]]

    assert hour(9) == pytest.approx((10.0, 100.0))  # BT-1 alone
    assert hour(10) == pytest.approx((10.0 + 10.0 * 40 / 60, 100.0))  # BT-2 from 10:20
    assert hour(11) == pytest.approx((10.0 * 30 / 60 + 10.0, 100.0))  # BT-1 until 11:30
    hist.close()
