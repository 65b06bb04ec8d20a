"""Bus priority at the simulated junctions: requests and grants, in the physics and over OPC UA."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
from asyncua import ua

from beffroi.app.config import Config
from beffroi.core.register import Register, build_register
from beffroi.simulator.models import RECOVERY_S
from beffroi.simulator.physics import Metropolis
from tests.test_simulator import PARIS, eventually, first, physics, run, served, tuned

REQUESTS, GRANTED = "bus_priority_requests", "bus_priority_granted"
MONDAY = datetime(2025, 3, 3, 0, 0, tzinfo=PARIS)


def controllers(cfg: Config, assets: int) -> Register:
    """Return the traffic controllers of a generated register (the other classes cost time)."""
    full = build_register(cfg, assets=assets)
    kept = {k: a for k, a in full.assets.items() if a.asset_class == "traffic_controller"}
    return Register(full.communes, kept, {t.name: t for a in kept.values() for t in a.tags})


def counters(m: Metropolis, register: Register) -> tuple[np.ndarray, np.ndarray]:
    """Return the request and grant counters each controller reports, in register order."""
    assets = list(register.assets.values())
    return (
        np.array([m.value(a.tag(REQUESTS)) for a in assets]),
        np.array([m.value(a.tag(GRANTED)) for a in assets]),
    )


def test_counters_only_increase_and_grants_never_outrun_requests(demo_config: Config) -> None:
    """Over a day with faults, as reported at every step: monotonic, grants within requests."""
    reg = controllers(demo_config, 400)
    m = physics(reg, MONDAY, faults=0.5)
    r0, g0 = counters(m, reg)
    assert (g0 <= r0).all()
    last_r, last_g = r0, g0
    for k in range(1, 24 * 60 + 1):
        m.step(MONDAY + timedelta(minutes=k))
        r, g = counters(m, reg)
        assert (r >= last_r).all() and (g >= last_g).all(), k
        assert (g - last_g <= r - last_r).all(), k  # a grant answers a request of that step
        last_r, last_g = r, g
    asked, granted = (last_r - r0).sum(), (last_g - g0).sum()
    assert len(reg.assets) >= 20 and asked > 50 * len(reg.assets)  # every junction has buses
    assert 0.5 * asked < granted < asked  # most are granted, not all


def test_no_priority_while_flashing_or_faulted_and_one_per_cycle(demo_config: Config) -> None:
    """Flashing amber or a fault refuses every request; a bunch of buses gets one per cycle."""
    reg = controllers(demo_config, 200)
    start = MONDAY + timedelta(hours=8)
    m = physics(reg, start)
    flashing, faulted, bunched, *others = list(reg.assets.values())
    m.set_setpoint(flashing.tag("plan"), 9.0)
    m.force_fault(faulted.id, True)
    model, i = m._models[bunched.id]
    model.lines[i] = 100.0  # a bus every few seconds: priority cannot follow
    r0, g0 = counters(m, reg)
    run(m, start, hours=2, step_s=10.0)
    r, g = counters(m, reg)
    asked, granted = r - r0, g - g0
    assert asked[0] >= 5 and granted[0] == 0  # flashing: counted, refused
    assert asked[1] >= 5 and granted[1] == 0  # faulted: counted, refused
    assert asked[2] > 1000
    assert 0 < granted[2] <= 2 * 3600 / RECOVERY_S + 1  # the cross streets get their turn
    assert 0 < granted[3:].sum() <= asked[3:].sum() and len(others) >= 10


async def test_counters_served_and_a_flashing_junction_grants_nothing(
    demo_config: Config, small_register: Register
) -> None:
    """A client reads both counters; after it sets plan 9 requests go on and grants stop."""
    cfg = tuned(demo_config, tick_s=0.2, fault_rate_per_hour=0.0)
    tc = first(small_register, "traffic_controller")
    start = MONDAY + timedelta(hours=8)
    async with served(cfg, small_register, speed=600.0, start_time=start) as (sim, client, ns):
        req, gra, plan = (
            client.get_node(ua.NodeId(tc.tag(s), ns)) for s in (REQUESTS, GRANTED, "plan")
        )
        for node in (req, gra):
            assert await node.read_data_type_as_variant_type() == ua.VariantType.Double
            access = await node.read_attribute(ua.AttributeIds.UserAccessLevel)
            assert not access.Value.Value & ua.AccessLevel.CurrentWrite.mask  # read-only
        model, i = sim.physics._models[tc.id]
        model.lines[i] = 20.0  # a busy junction: several requests a simulated minute
        r0, g0 = await client.read_values([req, gra])
        assert g0 <= r0
        await eventually(lambda: _grew(client, [req, gra], (r0, g0)), 20.0)

        await plan.write_value(ua.DataValue(ua.Variant(9.0, ua.VariantType.Double)))
        await eventually(lambda: _taken(sim.physics, tc.tag("plan"), 9.0))  # at the next tick
        r1, g1 = await client.read_values([req, gra])
        await eventually(lambda: _grew(client, [req], (r1 + 20,)), 20.0)
        r2, g2 = await client.read_values([req, gra])
        assert r2 >= r1 + 20 and g2 == g1


async def _taken(m: Metropolis, tag: str, value: float) -> bool:
    return m.value(tag) == value


async def _grew(client, nodes, floor) -> bool:  # type: ignore[no-untyped-def]
    values = await client.read_values(nodes)
    return all(v > f for v, f in zip(values, floor, strict=True))
