"""HMI benchmark in headless Chromium: map first render, a 30-day trend, the alarm console.

Run: .venv/bin/python bench/hmi.py [--assets 5000] [--alarms 1000] [--runs 5]
Prints one JSON line per figure. Needs Debian's chromium (make test installs it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

from beffroi.alerts.service import AlarmService
from beffroi.app.config import demo_config, load_config
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PW = "bench-password-123"
# Assets the map shows: members of cluster markers plus single markers (tests/test_hmi.py).
SHOWN_JS = (
    "Array.from(document.querySelectorAll('.beffroi-cluster [data-count]'))"
    ".reduce((n, d) => n + Number(d.dataset.count), 0)"
    " + document.querySelectorAll('path.beffroi-asset').length"
)

# The trend's stored lines, without the dotted "held" segments that follow them to now.
LINES = (
    "(document.querySelector('#trends-graph .js-plotly-plot')?.data || [])"
    ".filter(t => !(t.name || '').endsWith(' · held'))"
)


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    print(
        json.dumps(
            {"bench": "hmi", "figure": name, "value": round(value, 1), "unit": unit, **extra}
        ),
        flush=True,
    )


def summary(name: str, samples: list[float], target: str, **extra) -> None:
    """Print the median of runs, with the spread."""
    emit(
        name,
        statistics.median(samples),
        "ms",
        min=round(min(samples), 1),
        max=round(max(samples), 1),
        runs=len(samples),
        target=target,
        **extra,
    )


def prepare(folder: Path, n_assets: int, n_alarms: int):
    """Build the register, live values, a 30-day history of 4 tags, and active alarms."""
    cfg = demo_config(load_config(ROOT / "config.toml"), data=folder, port=None, opcua_port=None)
    register = build_register(cfg, assets=n_assets)
    now = utcnow()
    live = LiveValues()
    live.update(
        [
            Sample(t.name, now, False if t.kind == "bool" else (1.0 if t.kind == "float" else "ok"))
            for t in register.tags.values()
        ]
    )
    hist = DuckDBHistorian(folder / "bench.duckdb")
    tags = [t for t in register.tags if t.endswith("/power_kw")][:4]
    n = 30 * 24 * 60
    ts = np.int64(now.timestamp() * 1e6) - np.arange(n)[::-1].astype(np.int64) * 60_000_000
    for i, tag in enumerate(tags):
        hist.write_columns([tag], np.zeros(n, np.int32), ts, 5 + np.sin(np.arange(n) / (50 + i)))
    hist.compact()
    users = UserStore(folder / "users.duckdb")
    users.add("sup", PW, "supervisor", ["*"])
    faulty = [
        a
        for a in register.assets.values()
        if a.asset_class in ("streetlight_cabinet", "waste_container", "traffic_controller")
    ][:n_alarms]
    return cfg, register, live, hist, users, tags, faulty


def browse(url: str, tags: list[str], n_assets: int, n_alarms: int, runs: int) -> None:
    """Drive Chromium: log in, then time each page."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        ctx = browser.new_context(viewport={"width": 1600, "height": 1000})
        page = ctx.new_page()
        page.goto(url + "login")
        page.fill("#username", "sup")
        page.fill("#password", PW)
        page.click("#login-submit")
        page.wait_for_selector("#shell-user-name", timeout=60_000)
        map_ms, single_ms, trend_ms, grid_ms = [], [], [], []
        for _ in range(runs):  # markers grouped, as the map opens by default
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function(f"({SHOWN_JS}) >= {n_assets}", timeout=60_000)
            map_ms.append((time.perf_counter() - t0) * 1000)
        page.locator("#map-cluster input[type=checkbox]").uncheck()  # kept by the browser
        for _ in range(runs):  # one marker per asset: the worst case
            t0 = time.perf_counter()
            page.goto(url)
            page.wait_for_function(
                f"document.querySelectorAll('path.beffroi-asset').length >= {n_assets}",
                timeout=60_000,
            )
            single_ms.append((time.perf_counter() - t0) * 1000)
        query = "&".join(f"tag={t}" for t in tags)
        for _ in range(runs):
            page.goto(url + f"trends?{query}&range=15m")
            page.wait_for_function(f"({LINES}).length === 4", timeout=60_000)
            t0 = time.perf_counter()
            page.click("#trends-range input[value='30d']")
            page.wait_for_function(
                f"(() => {{ const d = {LINES}; return d.length === 4"
                " && d.every(t => t.x.length > 1000); })()",
                timeout=60_000,
            )
            trend_ms.append((time.perf_counter() - t0) * 1000)
        for _ in range(runs):
            t0 = time.perf_counter()
            page.goto(url + "alarms")
            page.wait_for_function(
                "(() => { try { return dash_ag_grid.getApi('alarms-active')"
                f".getDisplayedRowCount() >= {n_alarms}; }} catch (e) {{ return false; }} }})()",
                timeout=60_000,
            )
            grid_ms.append((time.perf_counter() - t0) * 1000)
        browser.close()
    summary("map_first_render_ms", map_ms, "< 2000", assets=n_assets, markers="grouped")
    summary("map_first_render_single_ms", single_ms, "< 2000", assets=n_assets, markers="single")
    summary(
        "trend_30d_4_tags_ms",
        trend_ms,
        "< 500",
        points_per_tag=30 * 24 * 60,
        note="click on 30 d until the 4 downsampled traces are drawn",
    )
    summary("alarm_console_ms", grid_ms, "< 1000", rows=n_alarms)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--alarms", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="beffroi-bench-hmi-") as tmp:
        cfg, register, live, hist, users, tags, faulty = prepare(
            Path(tmp), args.assets, args.alarms
        )
        async with contextlib.AsyncExitStack() as stack:
            service = AlarmService(cfg, register)
            await service.start(stack)
            service.process(
                [Sample(a.tag("fault"), utcnow() - timedelta(seconds=5), True) for a in faulty]
            )
            app = create_app(cfg, register, live, hist, users=users, alarms=service)
            server = HmiServer(app, "127.0.0.1", 0, threads=8)
            server.start()
            stack.callback(server.stop)
            await asyncio.to_thread(
                browse, server.url, tags, len(register.assets), len(service.alarms()), args.runs
            )
        users.close()
        hist.close()


if __name__ == "__main__":
    asyncio.run(main())
