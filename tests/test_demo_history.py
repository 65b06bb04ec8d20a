"""The demo's simulated history: real DuckDB historian, alarm engine, journal, KPI engine."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from beffroi.alerts.config import journal_place
from beffroi.alerts.journal import Journal
from beffroi.app.config import Config, demo_config
from beffroi.app.registry import HISTORIANS
from beffroi.core.register import build_register
from beffroi.kpi.engine import KpiEngine
from beffroi.simulator.history import (
    complete_history,
    demo_history,
    simulated_until,
)
from beffroi.simulator.physics import stored_counters
from beffroi.simulator.server import MetropolisSimulator
from tests.conftest import free_port

DAYS = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_config: Config):
    """Write three days of history for 100 assets once; yield (cfg, register, historian, report)."""
    folder = tmp_path_factory.mktemp("history")
    cfg = demo_config_for(demo_config, folder)
    register = build_register(cfg, assets=100)
    historian = HISTORIANS[cfg.historian.backend].from_config(cfg, register)
    report = demo_history(cfg, register, historian, days=DAYS)
    assert report is not None
    engine = KpiEngine(cfg, register, historian)
    complete_history(cfg, historian, engine, report)
    engine.close()
    yield cfg, register, historian, report
    historian.close()


def demo_config_for(cfg: Config, folder: Path) -> Config:
    """Return the demo's config with every file in a folder of the test's."""
    return demo_config(cfg, data=folder, port=free_port(), opcua_port=free_port())


def test_every_class_has_days_of_history(site) -> None:
    """Every simulated asset class has samples from the first day of the history to its end."""
    _cfg, register, historian, report = site
    assert report.end - report.start >= timedelta(days=DAYS)
    by_class: dict[str, list[str]] = {}
    for a in register.assets.values():
        by_class.setdefault(a.asset_class, []).extend(t.name for t in a.tags if t.kind != "str")
    tags = [t for names in by_class.values() for t in names]
    df = historian.query(tags, report.start, report.end + timedelta(seconds=1))
    for cls_id, names in by_class.items():
        rows = df[df.tag.isin(names)]
        assert rows.ts.min() <= report.start + timedelta(hours=1), cls_id
        # By exception: a class's states change somewhere in the last day, if not everywhere.
        assert rows.ts.max() >= report.end - timedelta(days=1), cls_id
    assert report.samples > 10_000


def test_marker_says_simulated_until_and_second_start_writes_nothing(site) -> None:
    """The marker gives the simulated interval; the historian holding data, nothing is rewritten."""
    cfg, register, historian, report = site
    marked = simulated_until(cfg)
    assert marked is not None
    assert abs((marked[1] - report.end).total_seconds()) < 1
    count = historian.count()
    assert demo_history(cfg, register, historian, days=DAYS) is None
    assert historian.count() == count


def test_lighting_dims_at_night_and_counters_rise(site) -> None:
    """Cabinets dim to the schedule's night level and their energy counters only rise."""
    cfg, register, historian, report = site
    cab = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    df = historian.query([cab.tag("dimming_pct"), cab.tag("energy_kwh")], report.start, report.end)
    levels = set(df[df.tag == cab.tag("dimming_pct")].value.round())
    night = cfg.control.lighting
    assert {night.evening_pct, night.night_pct, night.day_pct} <= levels | {night.night_pct + 20}
    energy = df[df.tag == cab.tag("energy_kwh")].sort_values("ts").value
    assert energy.is_monotonic_increasing and energy.iloc[-1] > energy.iloc[0]


def test_vehicles_states_have_their_history(site) -> None:
    """A police car's state (text) changes through the days of the history, not only at start."""
    _cfg, register, historian, report = site
    car = next(a for a in register.assets.values() if a.asset_class == "police_vehicle")
    df = historian.query([car.tag("state")], report.start, report.end + timedelta(seconds=1))
    assert df.ts.max() > report.start + timedelta(days=1)
    assert {"depot", "patrol"} <= set(df.value), sorted(set(df.value))


def test_history_step_is_ten_minutes(site) -> None:
    """The demo's history is stepped every 10 minutes: a cabinet's energy reported on steps."""
    cfg, register, historian, report = site
    assert report.step_s == cfg.simulator.history_step_s == 600
    cab = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    ts = historian.query([cab.tag("energy_kwh")], report.start, report.end).ts.sort_values()
    gaps = ts.diff().dropna().dt.total_seconds()
    # Lit at night: a new value every step; dark by day: none (reports by exception).
    assert gaps.min() == 600 and (gaps % 600 == 0).all()


def test_a_value_holds_until_the_step_before_it_changes(site) -> None:
    """Power dark all day then lit at dusk: stored as a step, not a day-long slope in a trend."""
    _cfg, register, historian, report = site
    cab = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    df = historian.query([cab.tag("power_kw")], report.start, report.end).sort_values("ts")
    gaps = df.ts.diff().dt.total_seconds().to_numpy()[1:]
    moved = df.value.diff().abs().to_numpy()[1:] > 1e-9
    assert moved.sum() > DAYS  # lit and dark every day
    # Two stored samples that differ are at most one step apart: the value before the change is
    # stored at the step before it, as the live path's compression keeps its held point.
    assert (gaps[moved] <= report.step_s).all(), gaps[moved].max()
    assert (gaps > report.step_s).any()  # and a silence is still a silence


def test_journal_holds_past_alarms_with_clears_and_acks(site) -> None:
    """The journal holds fault alarms of the past with their clears and acknowledgements."""
    cfg, _register, _historian, report = site
    journal = Journal(journal_place(cfg), read_only=True)
    try:
        events = journal.events(start=report.start, end=report.end + timedelta(seconds=1))
        current = journal.current()
    finally:
        journal.close()
    assert {"activate", "clear", "ack"} <= set(events.event)
    assert events.ts.min() < report.end - timedelta(days=1)
    acks = events[events.event == "ack"]
    assert set(acks.user) == {"superviseur"}
    # Consistent with the equipment at the end: no fault alarm active whose fault is false.
    faults = {r["tag"] for r in current if r["active"] and r["tag"].endswith("/fault")}
    physics = report.physics
    assert all(physics.value(tag) is True for tag in faults)


def test_kpis_hold_daily_lighting_savings(site) -> None:
    """Daily lighting savings are stored for the past days, plausibly near the 65 % target."""
    _cfg, _register, historian, report = site
    tag = "_kpi/lighting_savings_pct.day/metropolis"
    df = historian.query([tag], report.start, report.end + timedelta(seconds=1))
    assert len(df) >= DAYS
    assert df.value.between(30, 90).all(), df.value.tolist()


async def test_live_simulator_continues_from_the_history(site) -> None:
    """The live simulator goes on from the history's state: a counter never goes back."""
    cfg, register, historian, report = site
    cab = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    tag = cab.tag("energy_kwh")
    last = historian.query([tag], report.start, report.end + timedelta(seconds=1)).value.iloc[-1]
    sim = MetropolisSimulator(cfg, register, physics=report.physics)
    async with contextlib.AsyncExitStack() as stack:
        await sim.start(stack)
        first = sim.current(tag)
        assert isinstance(first, float) and first >= last
        assert first - last < 50.0  # joined, not restarted from a fresh random counter
        assert sim.physics is report.physics
        assert sim.physics.now >= report.end
    assert datetime.now(UTC) - report.end < timedelta(minutes=10)


async def test_a_new_start_takes_its_meters_back_from_storage(site) -> None:
    """Started again on the stored month, the meters go on from their values, not from scratch.

    Otherwise a restarted demo's cabinets fall back to their first start's readings and the
    KPIs count the drop as a meter reset: a day of millions of kWh.
    """
    cfg, register, historian, _report = site
    stored = stored_counters(historian, register)
    cabinets = [a for a in register.assets.values() if a.asset_class == "streetlight_cabinet"]
    junction = next(a for a in register.assets.values() if a.asset_class == "traffic_controller")
    assert {c.tag("energy_kwh") for c in cabinets} <= set(stored)
    assert junction.tag("bus_priority_granted") in stored
    fresh = MetropolisSimulator(cfg, register, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/")
    resumed = MetropolisSimulator(
        cfg, register, endpoint=f"opc.tcp://127.0.0.1:{free_port()}/", resume=stored
    )
    async with contextlib.AsyncExitStack() as stack:
        await fresh.start(stack)
        await resumed.start(stack)
        for c in cabinets:
            tag = c.tag("energy_kwh")
            value = resumed.current(tag)
            assert isinstance(value, float) and 0 <= value - stored[tag] < 50.0, tag
        # Without it, at least one meter would have gone back by the month's consumption.
        assert any(
            fresh.current(c.tag("energy_kwh")) < stored[c.tag("energy_kwh")] for c in cabinets
        )
        granted = resumed.current(junction.tag("bus_priority_granted"))
        assert (
            isinstance(granted, float) and granted >= stored[junction.tag("bus_priority_granted")]
        )
