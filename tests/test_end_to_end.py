"""The walking skeleton end to end: simulator → OPC UA → collector → DuckDB, and `beffroi demo`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.model import Quality
from beffroi.core.register import build_register
from beffroi.core.status_codes import BadShutdown as BAD_SHUTDOWN
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.inventory.formats import read_inventory
from beffroi.inventory.service import Inventory
from tests.conftest import ROOT, free_port


async def test_simulated_values_reach_the_historian(demo_config_fixture, tmp_path: Path) -> None:
    """Values served by the simulator arrive in DuckDB with their tag, timestamp and quality."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=free_port())
    register = build_register(cfg, assets=60)
    runtime = Runtime(cfg, register, simulator=True, hmi=False)
    started = datetime.now(UTC)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        collector = runtime.collectors[0]
        async with asyncio.timeout(30):
            await collector.wait_connected()
        await asyncio.sleep(4)
    # The stack closed the gateway's historian; reopen the file to see what is on disk.
    h = DuckDBHistorian(tmp_path / "beffroi.duckdb", read_only=True)
    stored = h.query(list(register.tags), started - timedelta(days=1), datetime.now(UTC))
    h.close()
    assert len(stored) >= len(register.tags)  # every tag's initial value at least
    assert set(stored.tag) == set(register.tags)
    good = stored[stored.quality == Quality.GOOD]
    assert set(good.tag) == set(register.tags)
    if collector.reconnects == 0:  # a slow first connection marks CommLoss once, legitimately
        # Good, but for the stop's own mark: each tag ends CommLoss (BadShutdown), once.
        marks = stored[stored.status == BAD_SHUTDOWN]
        assert sorted(marks.tag) == sorted(register.tags)
        assert len(good) == len(stored) - len(marks)
    assert (good.ts <= pd.Timestamp(datetime.now(UTC) + timedelta(seconds=2))).all()
    # Everything received was stored, less what edge compression chose to leave out.
    assert runtime.compressor.offered == runtime.samples_in
    assert runtime.buffer.written == runtime.compressor.stored + runtime.downtime.marks
    assert runtime.buffer.dropped == 0


def _get(url: str) -> int:
    """GET a page as a browser would: logged out, it lands on the login form."""
    req = urllib.request.Request(url, headers={"Accept": "text/html"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.url.endswith("/login?next=/")
        return resp.status


def test_beffroi_demo_runs_for_a_duration_and_leaves_points(tmp_path: Path) -> None:
    """`beffroi demo --duration` serves the HMI, exits 0, and `beffroi query` finds every class."""
    port, opc = free_port(), free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "beffroi",
        "demo",
        "-c",
        str(ROOT / "config.toml"),
        "--duration",
        "20",
        "--data",
        str(tmp_path),
        "--port",
        str(port),
        "--opcua-port",
        str(opc),
        "--assets",
        "120",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen_hmi = False
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen_hmi = seen_hmi or _get(f"http://127.0.0.1:{port}/") == 200
        time.sleep(0.5)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the demo did not exit; its stacks and last lines:\n{err[-8000:]}")
    assert proc.returncode == 0, err[-3000:]
    assert f"HMI: http://127.0.0.1:{port}" in out
    assert seen_hmi, "the HMI never answered while the demo ran"
    assert "Traceback" not in err
    # Every sample received is accounted for at the stop: stored, or held back by compression;
    # and every collected tag ends with a CommLoss mark of the gateway's downtime.
    summary = re.search(
        r"Stopped cleanly: (\d+) samples received(?:, (\d+) of them within their compression "
        r"deadbands \(not stored, by design\))?; (\d+) samples written to the historian, (\d+) "
        r"of them marks of the gateway's downtime\.",
        out,
    )
    assert summary, out[-2000:]
    received, within, written, marks = (int(g or 0) for g in summary.groups())
    assert received > 0 and written == received - within + marks

    cfg_path = tmp_path / "query.toml"
    text = (
        (ROOT / "config.toml")
        .read_text()
        .replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    )
    cfg_path.write_text(text)
    from beffroi.app.config import load_config

    cfg = load_config(cfg_path)
    register = build_register(cfg, assets=120)
    # The demo's inventory file over the generated register, as the gateway laid it at start.
    records, errors = read_inventory(ROOT / "data" / "inventaire-demo.csv")
    assert errors == []
    report = Inventory(cfg, register, None).import_records(records, "inventaire-demo.csv", "t")
    assert report.added > 0 and report.errors == []  # ids beyond the 120 generated assets
    # The simulator's collector serves every tag: each CommLoss, and the collector disconnected.
    assert marks == len(register.tags) + 1
    one_per_class: dict[str, str] = {}
    for asset in register.assets.values():
        one_per_class.setdefault(asset.asset_class, asset.tags[0].name)
    q = subprocess.run(
        [
            sys.executable,
            "-m",
            "beffroi",
            "query",
            "-c",
            str(cfg_path),
            *one_per_class.values(),
            "--start",
            "-10m",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert q.returncode == 0, q.stderr
    rows = pd.read_csv(io.StringIO(q.stdout))
    assert set(rows.tag) == set(one_per_class.values())
    # The demo's residents' reports wait for triage; the auditor's intervention KPIs are
    # written from the files once the gateway has stopped.
    today = datetime.now(UTC).date()
    k = subprocess.run(
        [sys.executable, "-m", "beffroi", "interventions", "kpis", "-c", str(cfg_path),
         "--from", str(today - timedelta(days=1)), "--to", str(today),
         "--out", str(tmp_path / "interventions.csv")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert k.returncode == 0, k.stderr
    kpis = pd.read_csv(tmp_path / "interventions.csv")
    assert kpis.iloc[0]["scope_kind"] == "all"
    assert (tmp_path / "interventions.csv.manifest.json").exists()
    from beffroi.interventions.store import InterventionStore

    store = InterventionStore(tmp_path / "interventions.duckdb")
    try:
        assert len(store.reports()) == 5
    finally:
        store.close()
