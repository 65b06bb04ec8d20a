"""Time the demo's simulated history: generation, bulk write, alarm replay, journal, KPIs.

    .venv/bin/python bench/demo_history.py [--assets N] [--days 30] [--step 600]

Without --assets, config.toml's register (1,060 assets); without --step, its history step.
Prints one JSON line per figure (seconds, samples, samples/s) on a fresh temporary data folder.
The KPI engine reads the history's alarm journal (MTTR, MTBF) as the gateway's does.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from beffroi.alerts.config import journal_place
from beffroi.alerts.journal import Journal
from beffroi.app.config import demo_config, load_config
from beffroi.app.registry import HISTORIANS
from beffroi.core.register import build_register
from beffroi.kpi.engine import KpiEngine
from beffroi.simulator.history import complete_history, demo_history

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    """Write a history into a temporary folder and print its timings."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=None)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--step", type=float, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cfg = demo_config(
            load_config(ROOT / "config.toml"), data=Path(folder), port=None, opcua_port=None
        )
        if args.step is not None:
            sim = cfg.simulator.model_copy(update={"history_step_s": args.step})
            cfg = cfg.model_copy(update={"simulator": sim})
        register = build_register(cfg, assets=args.assets)
        historian = HISTORIANS[cfg.historian.backend].from_config(cfg, register)
        t0 = time.perf_counter()
        report = demo_history(cfg, register, historian, days=args.days)
        start_s = time.perf_counter() - t0
        assert report is not None
        journal = Journal(journal_place(cfg), read_only=True)
        engine = KpiEngine(
            cfg, register, historian, events=lambda a, b: journal.events(start=a, end=b)
        )
        complete_history(cfg, historian, engine, report)
        total_s = time.perf_counter() - t0
        engine.close()
        journal.close()
        historian.close()
    base = {"assets": len(register.assets), "days": args.days, "step_s": report.step_s}
    for name, seconds in report.seconds.items():
        print(json.dumps({**base, "figure": f"{name}_s", "value": seconds}))
    print(json.dumps({**base, "figure": "extra_start_s", "value": round(start_s, 2)}))
    kpis_at = start_s + report.seconds.get("kpis", 0.0)
    print(json.dumps({**base, "figure": "kpis_stored_after_s", "value": round(kpis_at, 2)}))
    print(json.dumps({**base, "figure": "all_done_s", "value": round(total_s, 2)}))
    print(json.dumps({**base, "figure": "samples", "value": report.samples}))
    print(json.dumps({**base, "figure": "alarm_events", "value": report.alarm_events}))
    rate = report.samples / max(report.seconds["generate"] + report.seconds["write"], 1e-9)
    print(json.dumps({**base, "figure": "samples_per_s", "value": round(rate)}))


if __name__ == "__main__":
    main()
