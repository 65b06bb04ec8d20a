"""KPI benchmark: daily KPIs of 10,000 energy tags, and a year of daily exports.

Run: .venv/bin/python bench/kpi.py [--tags 10000] [--step-s 300] [--export-days 365]
Prints one JSON line per figure.

1. 10,000 energy tags on one day (half street-lighting cabinets with kWh counters reporting by
   exception at night, half buildings with kW power all day), in the embedded historian:
   - the scheduled close of the day (01:00: late-data check of 7 days, day and month values)
     once the 15-minute runs have computed the hours — the "daily KPIs" target, < 1 s;
   - one 15-minute run (the open hours, today's late-data check);
   - recomputing the whole day from raw samples (`beffroi kpi compute`, or late data).
2. A year of daily KPI values for the demo metropolis (every KPI and scope of config.toml)
   exported as CSV with its manifest: time (target < 10 s) and peak Python memory for one
   month and for the year (flat: the export streams month by month).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beffroi.app.config import load_config, parse_config  # noqa: E402
from beffroi.core.register import build_register  # noqa: E402
from beffroi.historian.duckdb.historian import DuckDBHistorian  # noqa: E402
from beffroi.kpi.definitions import BREAKDOWNS, scopes_of, series_tag  # noqa: E402
from beffroi.kpi.engine import KpiEngine, active_kpis  # noqa: E402
from beffroi.kpi.export import ExportQuery, write_export  # noqa: E402
from beffroi.kpi.store import KpiStore  # noqa: E402

PARIS = ZoneInfo("Europe/Paris")
DAY0 = datetime(2026, 1, 9, tzinfo=PARIS)  # winter days: 14 hours of lighting


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "kpi", "figure": name, "value": round(value, 4), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


CONFIG = """
[metropolis]
name = "Bench"
[[communes]]
id = "dijon"
name = "Dijon"
lat = 47.322
lon = 5.0415
population = 156000
[[communes]]
id = "talant"
name = "Talant"
lat = 47.337
lon = 5.005
population = 11500
[asset_classes.streetlight_cabinet]
domain = "lighting"
label = "Cabinet"
prefix = "LC"
share = 0.5
signals = [
  { name = "energy_kwh", kind = "float", unit = "kWh", interval_s = 60 },
  { name = "dimming_pct", kind = "float", unit = "%", writable = true, low = 0, high = 100 },
  { name = "fault", kind = "bool" },
]
[asset_classes.building]
domain = "buildings"
label = "Building"
prefix = "BT"
share = 0.5
signals = [{ name = "power_kw", kind = "float", unit = "kW", interval_s = 60 },
           { name = "fault", kind = "bool" }]
[asset_classes.car_park]
domain = "parking"
label = "Car park"
prefix = "CP"
share = 0.0
signals = [{ name = "capacity", kind = "float" }, { name = "free_spaces", kind = "float" }]
[register]
assets = {assets}
[simulator]
enabled = false
[compression]
enabled = false
[kpi.energy.streetlight_cabinet]
signal = "energy_kwh"
method = "counter"
hold_after_s = {hold}
[kpi.energy.building]
signal = "power_kw"
method = "power"
hold_after_s = {hold}
[kpi.lighting]
default_kw = 10.0
"""


def fill_day(h: DuckDBHistorian, register, step_s: int, day0: datetime) -> int:
    """Write one local day of samples; return how many."""
    rng = np.random.default_rng(int(day0.timestamp()))
    n = int(86_400 // step_s)
    t_s = day0.timestamp() + np.arange(n) * step_s
    local_h = ((t_s - day0.timestamp()) / 3600.0) % 24
    night = (local_h < 7.8) | (local_h >= 17.85)
    cabinets = [a for a in register.assets.values() if a.asset_class == "streetlight_cabinet"]
    buildings = [a for a in register.assets.values() if a.asset_class == "building"]
    names = [a.tag("energy_kwh") for a in cabinets] + [a.tag("power_kw") for a in buildings]
    idx, ts, vals = [], [], []
    for i, _ in enumerate(cabinets):
        kw = rng.uniform(2, 12)
        # By exception: the counter reports only while it moves (at night).
        times = t_s[night]
        base = 10_000 + 1_000 * (day0 - DAY0).days
        energy = base + np.cumsum(np.full(len(times), kw * step_s / 3600))
        idx.append(np.full(len(times), i)), ts.append(times), vals.append(energy)
    for j, _ in enumerate(buildings):
        power = 50 + 20 * np.sin(local_h / 24 * 2 * np.pi) + rng.normal(0, 1, n)
        idx.append(np.full(n, len(cabinets) + j)), ts.append(t_s), vals.append(power)
    ts_us = (np.concatenate(ts) * 1e6).astype(np.int64)
    count = h.write_columns(names, np.concatenate(idx), ts_us, np.round(np.concatenate(vals), 3))
    h.compact()
    return count


def bench_daily(args, folder: Path) -> None:
    text = CONFIG.replace("{assets}", str(args.tags)).replace("{hold}", str(2 * args.step_s))
    cfg = parse_config(text, str(folder / "bench.toml"))
    register = build_register(cfg)
    h = DuckDBHistorian(folder / "daily.duckdb")
    days = [DAY0 + timedelta(days=d) for d in range(args.days)]
    samples = sum(fill_day(h, register, args.step_s, d) for d in days)
    # Data goes on after the last day, as it does up to `now` in a running gateway.
    fill_day(h, register, args.step_s, days[-1] + timedelta(days=1))
    end = (days[-1] + timedelta(days=1)).astimezone(UTC)
    clock = {"now": end + timedelta(minutes=20)}
    store = KpiStore(folder / "kpi.duckdb")
    engine = KpiEngine(cfg, register, h, store=store, clock=lambda: clock["now"])
    times = []
    for d in days:
        t = time.perf_counter()
        engine.recompute(d.astimezone(UTC), (d + timedelta(days=1)).astimezone(UTC))
        times.append(time.perf_counter() - t)
    emit("day_recompute_from_raw_s", float(np.median(times)), "s", tags=args.tags,
         samples_per_day=samples // len(days), step_s=args.step_s,
         note="24 hours from raw (median of the days): `kpi compute`, late data")  # fmt: skip
    # Then as in the gateway: the 15-minute job after midnight, then the 01:00 close.
    t = time.perf_counter()
    engine.run_current()
    emit("run_15min_s", time.perf_counter() - t, "s", tags=args.tags,
         note="open hours + late-data check of today and yesterday")  # fmt: skip
    clock["now"] = end + timedelta(hours=1)
    engine.run_current()
    t = time.perf_counter()
    engine.close_day()
    emit("daily_close_s", time.perf_counter() - t, "s", tags=args.tags, target="< 1",
         days_checked=len(days),
         note="01:00 job: late-data check of the closed days, from hourly aggregates")  # fmt: skip
    engine.close()
    h.close()


def demo_series(cfg, register) -> list[str]:
    """Return the day-resolution value tags the demo metropolis's KPIs produce."""
    out = []
    for k in active_kpis(cfg):
        scopes = set()
        for a in register.assets.values():
            d = cfg.asset_classes[a.asset_class].domain
            scopes.update(scopes_of(a.commune, d, a.asset_class, BREAKDOWNS.get(k.family, ("",))))
        out += [series_tag(k.name, "day", s) for s in sorted(scopes)]
    return out


def bench_export(args, folder: Path) -> None:
    cfg = load_config(ROOT / "config.toml")
    register = build_register(cfg)
    h = DuckDBHistorian(folder / "export.duckdb")
    tags = demo_series(cfg, register)
    names = tags + [t.replace(".day/", ".day.coverage/", 1) for t in tags]
    start = datetime(2026, 1, 1, tzinfo=PARIS)
    days = [(start + timedelta(days=d)).astimezone(UTC) for d in range(args.export_days)]
    day_us = np.array([int(d.timestamp() * 1e6) for d in days], np.int64)
    rng = np.random.default_rng(3)
    n = len(names) * len(days)
    h.write_columns(
        names, np.repeat(np.arange(len(names)), len(days)), np.tile(day_us, len(names)),
        np.round(rng.uniform(0, 100, n), 6),
    )  # fmt: skip
    h.compact()
    end = (start + timedelta(days=args.export_days)).astimezone(UTC)
    q = ExportQuery(start.astimezone(UTC), end, "day")
    t = time.perf_counter()
    result = write_export(h, cfg, q, folder / "year.csv")
    emit("export_year_daily_s", time.perf_counter() - t, "s", rows=result.rows,
         series=len(tags), bytes=result.bytes, target="< 10")  # fmt: skip
    ranges = {"month": 31, "quarter": 90, "year": args.export_days}
    for label, n_days in ranges.items():
        stop = start + timedelta(days=n_days)
        tracemalloc.start()
        res = write_export(
            h, cfg, ExportQuery(q.start, stop.astimezone(UTC), "day"), folder / f"{label}.csv"
        )
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        emit(f"export_{label}_peak_python_mb", peak / 1e6, "MB", rows=res.rows,
             note="tracemalloc peak during the export (flat: streamed month by month)")  # fmt: skip
    h.close()


def main() -> None:
    """Run both benchmarks in a temporary folder."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tags", type=int, default=10_000)
    p.add_argument("--step-s", type=int, default=300)
    p.add_argument("--days", type=int, default=7, help="days of data (the late-data window)")
    p.add_argument("--export-days", type=int, default=365)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="beffroi-kpi-bench-") as tmp:
        bench_daily(args, Path(tmp))
        bench_export(args, Path(tmp))


if __name__ == "__main__":
    main()
