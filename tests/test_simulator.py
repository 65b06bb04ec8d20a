"""The simulated metropolis: physics behaviour, and a real asyncua server read by a real client."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from asyncua import Client, ua

from beffroi.app.config import Config
from beffroi.core.model import Asset, Commune, TagSpec
from beffroi.core.register import Register
from beffroi.simulator.physics import Metropolis
from beffroi.simulator.server import MetropolisSimulator
from tests.conftest import free_port

PARIS = ZoneInfo("Europe/Paris")
WINTER_NIGHT = datetime(2025, 1, 15, 23, 0, tzinfo=PARIS)
WINTER_NOON = datetime(2025, 1, 15, 13, 0, tzinfo=PARIS)


def tuned(cfg: Config, **simulator: Any) -> Config:
    """Return the config with some simulator settings replaced."""
    return cfg.model_copy(update={"simulator": cfg.simulator.model_copy(update=simulator)})


def first(register: Register, asset_class: str) -> Asset:
    """Return the first asset of a class in the register."""
    return next(a for a in register.assets.values() if a.asset_class == asset_class)


def physics(register: Register, start: datetime, seed: int = 7, faults: float = 0.0) -> Metropolis:
    """Return a physics engine over the register, faults off unless asked."""
    return Metropolis(register, seed=seed, fault_rate_per_hour=faults, start=start)


def run(m: Metropolis, start: datetime, hours: float, step_s: float = 60.0) -> None:
    """Step the physics from start for some simulated hours."""
    for k in range(1, int(hours * 3600 / step_s) + 1):
        m.step(start + timedelta(seconds=k * step_s))


@contextlib.asynccontextmanager
async def served(
    cfg: Config, register: Register, **kw: Any
) -> AsyncIterator[tuple[MetropolisSimulator, Client, int]]:
    """Start the simulator on a free port and connect a real client to it."""
    async with contextlib.AsyncExitStack() as stack:
        sim = MetropolisSimulator(
            cfg, register, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/beffroi/", **kw
        )
        await sim.start(stack)
        client = Client(sim.endpoint, timeout=10)
        await stack.enter_async_context(client)
        ns = await client.get_namespace_index(cfg.simulator.namespace)
        yield sim, client, ns


async def eventually(probe: Callable[[], Awaitable[Any]], within_s: float = 5.0) -> Any:
    """Poll an async probe until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        got = await probe()
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


# --- physics alone -------------------------------------------------------------------------


def test_same_seed_same_values_and_changes(small_register: Register) -> None:
    a = physics(small_register, WINTER_NIGHT, faults=0.5)
    b = physics(small_register, WINTER_NIGHT, faults=0.5)
    assert a.values() == b.values()
    for k in range(1, 30):
        now = WINTER_NIGHT + timedelta(seconds=10 * k)
        assert a.step(now) == b.step(now)
    assert a.values() == b.values()
    other = physics(small_register, WINTER_NIGHT, seed=8, faults=0.5)
    assert other.values() != physics(small_register, WINTER_NIGHT, faults=0.5).values()


def test_every_tag_has_a_value_of_its_kind(small_register: Register) -> None:
    values = physics(small_register, WINTER_NIGHT).values()
    assert set(values) == set(small_register.tags)
    types = {"float": float, "bool": bool, "str": str}
    for tag, spec in small_register.tags.items():
        assert type(values[tag]) is types[spec.kind], tag


def test_one_tick_changes_only_a_few_tags(small_register: Register) -> None:
    m = physics(small_register, WINTER_NIGHT)
    changed = m.step(WINTER_NIGHT + timedelta(seconds=1))
    assert 0 < len(changed) < 0.25 * len(small_register.tags)
    assert {tag for tag, _ in changed} <= set(small_register.tags)


def test_cabinets_lit_at_night_dark_at_noon_and_count_energy(small_register: Register) -> None:
    cab = first(small_register, "streetlight_cabinet")
    night = physics(small_register, WINTER_NIGHT)
    noon = physics(small_register, WINTER_NOON)
    assert night.value(cab.tag("lit")) is True and night.value(cab.tag("power_kw")) > 1.0
    assert noon.value(cab.tag("lit")) is False and noon.value(cab.tag("power_kw")) == 0.0
    before = night.value(cab.tag("energy_kwh"))
    run(night, WINTER_NIGHT, hours=2)
    gained = night.value(cab.tag("energy_kwh")) - before
    assert gained == pytest.approx(2 * night.value(cab.tag("power_kw")), rel=0.1)


def test_no_twilight_near_the_pole_is_handled() -> None:
    svalbard = Commune("svalbard", "Longyearbyen", 78.22, 15.65, 2000)
    tags = [
        TagSpec(f"svalbard/LC-1/{s}", "LC-1", "svalbard", s, k)
        for s, k in (("lit", "bool"), ("power_kw", "float"), ("fault", "bool"))
    ]
    asset = Asset("LC-1", "streetlight_cabinet", "svalbard", 78.22, 15.65, "lighting", tags)
    reg = Register({"svalbard": svalbard}, {"LC-1": asset}, {t.name: t for t in tags})
    summer = physics(reg, datetime(2025, 6, 21, 0, 0, tzinfo=PARIS))
    winter = physics(reg, datetime(2025, 12, 21, 12, 0, tzinfo=PARIS))
    assert summer.value("svalbard/LC-1/lit") is False  # midnight sun
    assert winter.value("svalbard/LC-1/lit") is True  # polar night, even at noon


def test_setpoints_drive_the_physics(small_register: Register) -> None:
    cab = first(small_register, "streetlight_cabinet")
    m = physics(small_register, WINTER_NIGHT)
    p0, d0 = m.value(cab.tag("power_kw")), m.value(cab.tag("dimming_pct"))
    assert m.set_setpoint(cab.tag("dimming_pct"), 50.0) == 50.0
    changes = dict(m.step(WINTER_NIGHT + timedelta(seconds=1)))
    assert changes[cab.tag("power_kw")] == pytest.approx(p0 * 50 / d0, rel=0.05)
    assert m.set_setpoint(cab.tag("dimming_pct"), 150.0) == 100.0  # clamped to [low, high]
    changes = dict(m.step(WINTER_NIGHT + timedelta(seconds=2)))
    assert changes[cab.tag("dimming_pct")] == 100.0  # the device reports what it applied

    bt = first(small_register, "building")
    t0 = m.value(bt.tag("temperature_c"))
    m.set_setpoint(bt.tag("setpoint_c"), 24.0)
    run(m, WINTER_NIGHT + timedelta(seconds=2), hours=3)
    t3 = m.value(bt.tag("temperature_c"))
    assert t0 + 1.0 < t3 <= 24.5  # heats with inertia, not instantly, and does not overshoot


def test_pump_fills_and_consumption_drains(small_register: Register) -> None:
    rs = first(small_register, "reservoir")
    for pump, sign in ((True, 1), (False, -1)):
        m = physics(small_register, WINTER_NOON)
        m.set_setpoint(rs.tag("pump_on"), pump)
        level = m.value(rs.tag("level_pct"))
        run(m, WINTER_NOON, hours=0.5)
        assert (m.value(rs.tag("level_pct")) - level) * sign > 0
        assert (m.value(rs.tag("flow_m3h")) > 0) is pump


def test_daily_profiles(small_register: Register) -> None:
    cp, wc = first(small_register, "car_park"), first(small_register, "waste_container")
    m = physics(small_register, datetime(2025, 1, 15, 4, 0, tzinfo=PARIS))  # a Wednesday
    night_occ, fill = m.value(cp.tag("occupancy_pct")), m.value(wc.tag("fill_pct"))
    run(m, datetime(2025, 1, 15, 4, 0, tzinfo=PARIS), hours=10)  # to 14:00
    assert m.value(cp.tag("occupancy_pct")) > night_occ + 30
    assert m.value(cp.tag("free_spaces")) + m.value(cp.tag("occupancy_pct")) / 100 * m.value(
        cp.tag("capacity")
    ) == pytest.approx(m.value(cp.tag("capacity")), abs=1)
    assert m.value(wc.tag("fill_pct")) != fill


def test_random_faults_come_and_go_and_can_be_forced(small_register: Register) -> None:
    m = physics(small_register, WINTER_NIGHT, faults=6.0)
    seen = []
    for k in range(1, 121):
        seen += [
            v for t, v in m.step(WINTER_NIGHT + timedelta(seconds=60 * k)) if t.endswith("/fault")
        ]
    assert True in seen and False in seen  # faults start and clear on their own
    bo = first(small_register, "bollard")
    assert m.force_fault(bo.id, True) in ([(bo.tag("fault"), True)], [])
    assert m.value(bo.tag("fault")) is True
    raised = m.value(bo.tag("raised"))
    assert m.refusal(bo.tag("raised")) == "jammed"
    assert m.set_setpoint(bo.tag("raised"), not raised) is None  # a jammed bollard refuses
    changes = dict(m.step(WINTER_NIGHT + timedelta(hours=3)))
    assert bo.tag("raised") not in changes and m.value(bo.tag("raised")) is raised
    m.force_fault(bo.id, False)
    assert m.refusal(bo.tag("raised")) is None
    m.set_setpoint(bo.tag("raised"), not raised)
    m.step(WINTER_NIGHT + timedelta(hours=3, seconds=1))
    assert m.value(bo.tag("raised")) is (not raised)


# --- over OPC UA ---------------------------------------------------------------------------


async def test_address_space_is_browsable_with_tag_node_ids(
    demo_config: Config, small_register: Register
) -> None:
    cfg = tuned(demo_config, tick_s=0.2)
    async with served(cfg, small_register, speed=120.0) as (sim, client, ns):
        assert ns == sim.namespace_index
        root = await client.nodes.objects.get_child(f"{ns}:Beffroi")
        communes = {(await n.read_browse_name()).Name for n in await root.get_children()}
        assert communes == set(small_register.communes)
        cab = first(small_register, "streetlight_cabinet")
        asset = await root.get_child([f"{ns}:{cab.commune}", f"{ns}:{cab.id}"])
        assert asset.nodeid == ua.NodeId(f"{cab.commune}/{cab.id}", ns)
        signals = {}
        for var in await asset.get_children():
            signals[(await var.read_browse_name()).Name] = var
        assert set(signals) == {t.signal for t in cab.tags}
        kinds = {"float": ua.VariantType.Double, "bool": ua.VariantType.Boolean}
        for spec in cab.tags:
            var = signals[spec.signal]
            assert var.nodeid.Identifier == spec.name
            assert var.nodeid.NodeIdType == ua.NodeIdType.String
            assert await var.read_data_type_as_variant_type() == kinds[spec.kind]
            access = await var.read_attribute(ua.AttributeIds.UserAccessLevel)
            writable = bool(access.Value.Value & ua.AccessLevel.CurrentWrite.mask)
            assert writable is spec.writable, spec.name
        panel = first(small_register, "info_panel")
        message = client.get_node(ua.NodeId(panel.tag("message"), ns))
        assert await message.read_data_type_as_variant_type() == ua.VariantType.String
        folder = await root.get_child(f"{ns}:{cab.commune}")
        children = {(await n.read_browse_name()).Name for n in await folder.get_children()}
        assert children == {a.id for a in small_register.assets_of([cab.commune])}
        assert (await asset.get_parent()).nodeid == folder.nodeid

        # A subscribed client is told about changes, with the simulated source time.
        got: asyncio.Queue[ua.DataValue] = asyncio.Queue()

        class Handler:
            def datachange_notification(self, node: Any, val: Any, data: Any) -> None:
                got.put_nowait(data.monitored_item.Value)

        sub = await client.create_subscription(100, Handler())
        bus = first(small_register, "bus")
        await sub.subscribe_data_change(client.get_node(ua.NodeId(bus.tag("lon"), ns)))
        initial = await asyncio.wait_for(got.get(), 5)
        update = await asyncio.wait_for(got.get(), 5)
        assert update.Value.Value != initial.Value.Value
        assert update.SourceTimestamp > initial.SourceTimestamp

        # Values move, stamped with simulated time (120x faster than real time), Good.
        lat = client.get_node(ua.NodeId(bus.tag("lat"), ns))
        first_dv = await lat.read_data_value()
        moved = await eventually(lambda: _changed(lat, first_dv.Value.Value))
        assert moved.StatusCode.is_good()
        real = datetime.now(UTC)
        assert moved.SourceTimestamp.replace(tzinfo=UTC) > real + timedelta(seconds=30)
        assert abs(moved.ServerTimestamp.replace(tzinfo=UTC) - real) < timedelta(seconds=5)
        assert sim.current(bus.tag("lat")) == (await lat.read_value())


async def _changed(node: Any, old: Any) -> ua.DataValue | None:
    dv = await node.read_data_value()
    return dv if dv.Value.Value != old else None


async def test_setpoint_written_by_a_client_changes_behaviour(
    demo_config: Config, small_register: Register
) -> None:
    cfg = tuned(demo_config, tick_s=0.1, fault_rate_per_hour=0.0)
    cab = first(small_register, "streetlight_cabinet")
    async with served(cfg, small_register, speed=1.0, start_time=WINTER_NIGHT) as (sim, client, ns):
        node = {t.signal: client.get_node(ua.NodeId(t.name, ns)) for t in cab.tags}
        assert await node["lit"].read_value() is True
        p0, d0 = await node["power_kw"].read_value(), await node["dimming_pct"].read_value()
        assert p0 > 1.0

        await node["dimming_pct"].write_value(ua.DataValue(ua.Variant(50.0, ua.VariantType.Double)))
        p1 = await eventually(lambda: _moved_from(node["power_kw"], p0))
        assert p1 == pytest.approx(p0 * 50.0 / d0, rel=0.05)
        assert await node["dimming_pct"].read_value() == 50.0

        await node["dimming_pct"].write_value(
            ua.DataValue(ua.Variant(140.0, ua.VariantType.Double))
        )
        assert await eventually(lambda: _equals(node["dimming_pct"], 100.0))  # clamped echo

        await sim.force_fault(cab.id, True)
        assert await node["fault"].read_value() is True  # at once, not a tick later
        assert await eventually(lambda: _equals(node["power_kw"], 0.0))  # tripped cabinet
        assert await node["lit"].read_value() is False
        await sim.force_fault(cab.id, False)
        assert await node["fault"].read_value() is False
        assert await eventually(lambda: _moved_from(node["power_kw"], 0.0))


async def _moved_from(node: Any, old: float) -> float | None:
    v = await node.read_value()
    return v if v != old else None


async def _equals(node: Any, want: Any) -> bool:
    return (await node.read_value()) == want
