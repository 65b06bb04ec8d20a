"""The KPI engine in the gateway: scheduled jobs, values accumulating, the CLI through the
gateway while it holds the files, and holes that close after the hours they cover."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.kpi import engine as engine_module
from beffroi.kpi.definitions import series_tag
from beffroi.kpi.engine import HOLE, KpiEngine
from beffroi.kpi.periods import HOUR
from beffroi.kpi.store import KpiStore
from beffroi.simulator.physics import Metropolis
from tests.conftest import ROOT, eventually, free_port
from tests.test_kpi_cases import load_case

PARIS = ZoneInfo("Europe/Paris")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beffroi", *args], capture_output=True, text=True, timeout=120
    )


async def test_gateway_computes_kpis_and_the_cli_goes_through_it(
    demo_config_fixture, tmp_path: Path, monkeypatch
) -> None:
    """Jobs are scheduled in Europe/Paris; values accumulate; export/compute use the gateway."""
    monkeypatch.setattr(engine_module, "WARMUP_S", 0.0)
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg_file = tmp_path / "gw.toml"
    text = (ROOT / "config.toml").read_text()
    cfg_file.write_text(
        text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    )
    register = build_register(cfg, assets=40)
    runtime = Runtime(cfg, register, simulator=True, hmi=True)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        jobs = {j["name"]: j["next_run"] for j in runtime.scheduler.jobs()}
        assert {"kpi-current", "kpi-close-day", "kpi-close-month"} <= set(jobs)
        close_day = datetime.fromisoformat(jobs["kpi-close-day"]).astimezone(PARIS)
        assert (close_day.hour, close_day.minute) == (1, 0)
        month = datetime.fromisoformat(jobs["kpi-close-month"]).astimezone(PARIS)
        assert (month.day, month.hour, month.minute) == (1, 1, 30)
        assert datetime.fromisoformat(jobs["kpi-current"]).astimezone(PARIS).minute % 15 == 0
        await eventually(lambda: runtime.buffer.written > len(register.tags), within=60)
        report = await asyncio.to_thread(runtime.kpi.run_current)
        assert report["hours"] >= 1 and report["values"] > 0, report
        day0 = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
        tag = series_tag("availability_pct", "day", "metropolis")
        cov = series_tag("availability_pct", "day", "metropolis", "coverage")
        df = runtime.historian.query([tag, cov], day0, day0 + timedelta(seconds=1))
        got = dict(zip(df["tag"], df["value"], strict=True))
        assert 0 < got[cov] <= 100 and 0 <= got[tag] <= 100
        assert runtime.status()["kpi"]["runs"] >= 1

        today = day0.date().isoformat()
        out = tmp_path / "gw.csv"
        args = ["kpi", "export", "-c", str(cfg_file), "--from", today, "--to", today]
        proc = await asyncio.to_thread(_cli, *args, "--out", str(out))
        assert proc.returncode == 0, proc.stderr
        assert "through the running gateway" in proc.stderr
        manifest = json.loads((tmp_path / "gw.csv.manifest.json").read_text())
        assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
        rows = list(csv.DictReader(out.open()))
        assert len(rows) == manifest["rows"] > 0
        assert any(r["kpi"] == "availability_pct" and r["scope"] == "metropolis" for r in rows)
        assert {"energy_kwh", "availability_pct"} <= {d["kpi"] for d in manifest["definitions"]}

        args = ["kpi", "compute", "-c", str(cfg_file), "--from", today, "--to", today]
        proc = await asyncio.to_thread(_cli, *args)
        assert proc.returncode == 0, proc.stderr
        assert "through the running gateway" in proc.stderr and "computed" in proc.stdout


def test_a_hole_closing_later_recomputes_the_hours_it_covered(tmp_path: Path) -> None:
    """Hours computed while a CommLoss hole was open are filled once its end arrives."""
    cfg, register, _ = load_case("late_data")
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    tag = "dijon/BT-1/power_kw"
    t0 = datetime(2026, 3, 10, 0, tzinfo=PARIS)
    hist.write([Sample(tag, t0 + timedelta(minutes=m), 10.0) for m in range(0, 600, 10)])
    hist.write([Sample(tag, t0 + timedelta(hours=10, seconds=5), float("nan"), Quality.COMM_LOSS)])
    clock = {"now": t0 + timedelta(hours=12, minutes=5)}
    store = KpiStore(tmp_path / "kpi.duckdb")
    engine = KpiEngine(cfg, register, hist, store=store, clock=lambda: clock["now"])
    engine.recompute(t0, t0 + timedelta(hours=12, minutes=5))
    hour10 = series_tag("energy_kwh", "hour", "dijon")
    start10 = (t0 + timedelta(hours=10)).astimezone(UTC)
    before = hist.query([hour10], start10, start10 + timedelta(seconds=1))
    assert before["value"].iloc[0] == pytest.approx(10 * 5 / 3600, abs=1e-6)  # 5 s of data
    # The link comes back at 12:30: not late data, but the far end of the hole.
    hist.write([Sample(tag, t0 + timedelta(hours=12, minutes=30), 10.0)])
    clock["now"] = t0 + timedelta(hours=12, minutes=45)
    report = engine.run_current()
    assert report["from"] == start10.isoformat(), report
    after = hist.query([hour10], start10, start10 + timedelta(seconds=1))
    assert after["value"].iloc[0] == pytest.approx(10.0)  # 10 kW filled across the hole
    assert after["quality"].iloc[0] == Quality.UNCERTAIN
    changes = store.changes()
    assert set(changes.reason) == {HOLE}
    assert {"hour"} <= set(changes.resolution)
    engine.close()
    hist.close()


def test_the_daily_close_finds_late_data_days_back(tmp_path: Path) -> None:
    """At 01:00, samples replayed into a day closed three days ago are noticed and recorded."""
    cfg, register, _ = load_case("late_data")
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    tag = "dijon/BT-1/power_kw"
    t0 = datetime(2026, 3, 10, 0, tzinfo=PARIS)
    hist.write([Sample(tag, t0 + timedelta(minutes=m), 10.0) for m in range(0, 4 * 1440, 10)])
    clock = {"now": t0 + timedelta(days=4, minutes=30)}
    store = KpiStore(tmp_path / "kpi.duckdb")
    engine = KpiEngine(cfg, register, hist, store=store, clock=lambda: clock["now"])
    engine.recompute(t0, t0 + timedelta(days=4))
    assert engine.close_day()["hours"] == 0  # nothing new: nothing computed
    # A replay (another 10 kW sample between two stored ones) on 11 March, now closed.
    hist.write([Sample(tag, t0 + timedelta(days=1, hours=3, minutes=5), 70.0)])
    clock["now"] = t0 + timedelta(days=4, hours=1)
    report = engine.close_day()
    assert report["late_hours"] == 1, report
    changes = store.changes()
    day = (t0 + timedelta(days=1)).astimezone(UTC).replace(tzinfo=None)
    row = changes[(changes.resolution == "day") & (changes.scope == "dijon")]
    assert list(row.period_start) == [day]
    assert row.new_value.iloc[0] > row.old_value.iloc[0] and set(changes.reason) == {"late data"}
    engine.close()
    hist.close()


def test_bus_priority_granted_from_the_simulated_controllers(demo_config, tmp_path: Path) -> None:
    """A simulated day of the demo's controllers: the grant ratio is their counters' deltas."""
    register = build_register(demo_config, assets=300)
    tcs = [a for a in register.assets.values() if a.asset_class == "traffic_controller"]
    tags = {a.tag(s) for a in tcs for s in ("bus_priority_requests", "bus_priority_granted")}
    day0 = datetime(2025, 3, 4, tzinfo=PARIS)
    day1, start = day0 + timedelta(days=1), day0 - timedelta(hours=1)
    sim = Metropolis(register, seed=7, fault_rate_per_hour=0.2, start=start)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    stored = [Sample(t, start, v) for t, v in sim.values().items() if t in tags]
    edges = {}
    for k in range(1, 26 * 60 + 1):  # what the collector stores: every change, at its time
        now = start + timedelta(minutes=k)
        stored += [Sample(t, now, v) for t, v in sim.step(now) if t in tags]
        if now in (day0, day1):
            edges[now] = {t: sim.value(t) for t in tags}
    hist.write(stored)
    delta = {
        s: sum(edges[day1][a.tag(s)] - edges[day0][a.tag(s)] for a in tcs)
        for s in ("bus_priority_requests", "bus_priority_granted")
    }
    store = KpiStore(tmp_path / "kpi.duckdb")
    engine = KpiEngine(demo_config, register, hist, store=store, clock=lambda: day1 + HOUR)
    engine.recompute(day0, day1)
    got = {}
    for kpi in ("bus_priority_requests", "bus_priority_granted_pct"):
        df = hist.query([series_tag(kpi, "day", "metropolis")], day0, day0 + timedelta(seconds=1))
        got[kpi] = df["value"].iloc[0]
    engine.close()
    hist.close()
    assert len(tcs) >= 20 and delta["bus_priority_requests"] > 50 * len(tcs)
    # Only the odd request reported in the minute a day edge falls in may change sides.
    assert got["bus_priority_requests"] == pytest.approx(delta["bus_priority_requests"], abs=3)
    ratio = 100 * delta["bus_priority_granted"] / delta["bus_priority_requests"]
    assert 0 < got["bus_priority_granted_pct"] < 100
    assert got["bus_priority_granted_pct"] == pytest.approx(ratio, abs=0.2)
