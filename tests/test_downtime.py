"""The gateway's own downtime is in the history: CommLoss of what it collects, stop or crash."""

from __future__ import annotations

import contextlib
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd

from beffroi.core.cli import demo_config
from beffroi.core.downtime import BAD_SHUTDOWN
from beffroi.core.model import Quality, utcnow
from beffroi.core.register import build_register
from beffroi.core.runtime import Runtime
from beffroi.historian.duckdb import DuckDBHistorian
from tests.conftest import eventually, free_port


async def _run_once(cfg, register) -> Runtime:  # type: ignore[no-untyped-def]
    """Start a gateway on the simulator, let it store values, and stop it cleanly."""
    runtime = Runtime(cfg, register, simulator=True, hmi=False)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        assert runtime.heartbeat.path.exists()  # written at once: a kill from now on is marked
        await eventually(lambda: runtime.buffer.written > len(register.tags), within=30)
    return runtime


def _history(cfg, tags: list[str]) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    hist = DuckDBHistorian(cfg.resolve(cfg.historian.path), read_only=True)
    try:
        return hist.query(tags, utcnow() - timedelta(days=1), utcnow() + timedelta(minutes=1))
    finally:
        hist.close()


async def test_a_clean_stop_ends_every_collected_tag_with_commloss(
    demo_config_fixture, tmp_path: Path
) -> None:
    """After a stop, a trend or a KPI sees no value held through the downtime."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=free_port())
    register = build_register(cfg, assets=30)
    runtime = await _run_once(cfg, register)
    collected = sorted(t for c in runtime.collectors for t in c.tags)
    assert runtime.downtime_marks == len(collected) + len(runtime.collectors) > 1
    # A clean stop is recorded: the next start has nothing to mark, and says how this run ended.
    assert runtime.heartbeat.previous is None  # a first start
    assert runtime.heartbeat.last_run_crashed() is None
    assert runtime.heartbeat.previous["stopped"] == runtime.heartbeat.previous["alive"]

    df = _history(cfg, collected)
    last = df.sort_values("ts").groupby("tag").tail(1).set_index("tag")
    assert sorted(last.index) == collected
    assert (last["quality"] == int(Quality.COMM_LOSS)).all()
    assert (last["status"] == BAD_SHUTDOWN).all() and last["value"].isna().all()
    assert last["ts"].nunique() == 1  # one moment: when collection stopped
    status = _history(cfg, [c.status_tag for c in runtime.collectors])
    assert status.sort_values("ts")["value"].iloc[-1] == 0.0  # disconnected, from then on
    assert status["ts"].max() == last["ts"].iloc[0]


async def test_a_start_after_a_crash_marks_the_downtime_from_the_last_heartbeat(
    demo_config_fixture, tmp_path: Path, caplog
) -> None:
    """A gateway killed without a stop left its heartbeat: the next start marks from there."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=free_port())
    register = build_register(cfg, assets=30)
    alive = (utcnow() - timedelta(minutes=20)).replace(microsecond=0)
    heartbeat = cfg.resolve(cfg.historian.path).parent / "gateway.alive"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write_text(json.dumps({"alive": alive.isoformat(), "pid": 1}))

    runtime = await _run_once(cfg, register)
    collected = sorted(t for c in runtime.collectors for t in c.tags)
    # The crash's, and this stop's.
    assert runtime.downtime_marks == 2 * (len(collected) + len(runtime.collectors))
    assert "stopped without a clean stop" in caplog.text
    assert runtime.heartbeat.previous == {"alive": alive.isoformat(), "pid": 1}

    df = _history(cfg, collected)
    first = df.sort_values("ts").groupby("tag").head(1).set_index("tag")
    assert sorted(first.index) == collected
    assert (first["ts"] == pd.Timestamp(alive)).all()
    assert (first["quality"] == int(Quality.COMM_LOSS)).all()
    assert (first["status"] == BAD_SHUTDOWN).all()


async def test_an_unreadable_heartbeat_is_reported_and_the_gateway_starts(
    demo_config_fixture, tmp_path: Path, caplog
) -> None:
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=free_port())
    heartbeat = cfg.resolve(cfg.historian.path).parent / "gateway.alive"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write_text("{half a file")
    runtime = await _run_once(cfg, build_register(cfg, assets=30))
    assert f"{heartbeat} is unreadable" in caplog.text
    assert runtime.downtime_marks == sum(len(c.tags) + 1 for c in runtime.collectors)
