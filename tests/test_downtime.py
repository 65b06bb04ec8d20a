"""The gateway's own downtime is in the history: CommLoss of what it collects, stop or crash."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.errors import BeffroiError
from beffroi.core.model import Quality, utcnow
from beffroi.core.register import build_register
from beffroi.core.status_codes import BadShutdown as BAD_SHUTDOWN
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.simulator.server import MetropolisSimulator
from tests.conftest import eventually, free_port


async def _run_once(cfg, register, simulator: bool = True) -> Runtime:  # type: ignore[no-untyped-def]
    """Start a gateway, let it store every tag's value, and stop it cleanly."""
    runtime = Runtime(cfg, register, simulator=simulator, hmi=False)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        assert runtime.downtime.heartbeat.path.exists()  # at once: a kill from now is marked
        await eventually(lambda: runtime.buffer.written > len(register.tags), within=30)
    return runtime


def _history(cfg, tags: list[str]) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    hist = DuckDBHistorian(cfg.resolve(cfg.historian.path), read_only=True)
    try:
        return hist.query(tags, utcnow() - timedelta(days=1), utcnow() + timedelta(minutes=1))
    finally:
        hist.close()


def _crash_record(cfg, alive, pid: int = 1) -> Path:  # type: ignore[no-untyped-def]
    """Leave the heartbeat a killed gateway leaves: alive until `alive`, never stopped."""
    heartbeat = cfg.resolve(cfg.historian.path).parent / "gateway.alive"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write_text(json.dumps({"alive": alive.isoformat(), "pid": pid}))
    return heartbeat


@pytest.fixture
def cfg(demo_config_fixture, tmp_path: Path):  # type: ignore[no-untyped-def]
    return demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=free_port())


async def test_a_clean_stop_ends_every_collected_tag_with_commloss(cfg) -> None:
    """After a stop, a trend or a KPI sees no value held through the downtime."""
    register = build_register(cfg, assets=30)
    runtime = await _run_once(cfg, register)
    collected = sorted(t for c in runtime.collectors for t in c.tags)
    assert runtime.downtime.marks == len(collected) + len(runtime.collectors) > 1
    # A clean stop is recorded: the next start has nothing to mark.
    assert runtime.downtime.previous is None  # this was a first start
    record = runtime.downtime.heartbeat.read()
    assert record["stopped"] == record["alive"]

    df = _history(cfg, collected)
    last = df.sort_values("ts").groupby("tag").tail(1).set_index("tag")
    assert sorted(last.index) == collected
    assert (last["quality"] == int(Quality.COMM_LOSS)).all()
    assert (last["status"] == BAD_SHUTDOWN).all() and last["value"].isna().all()
    assert last["ts"].nunique() == 1  # one moment: when collection stopped
    status = _history(cfg, [c.status_tag for c in runtime.collectors])
    assert status.sort_values("ts")["value"].iloc[-1] == 0.0  # disconnected, from then on
    assert status["ts"].max() == last["ts"].iloc[0]


async def test_after_a_restart_unchanged_values_are_current_again(cfg) -> None:
    """The plant runs on while the gateway restarts: values that did not change since before
    the stop arrive with their old time, and are stored again when received, after the mark."""
    register = build_register(cfg, assets=30)
    async with contextlib.AsyncExitStack() as plant:
        await MetropolisSimulator(cfg, register).start(plant)
        first = await _run_once(cfg, register, simulator=False)
        stopped = pd.Timestamp(first.downtime.heartbeat.read()["stopped"])
        second = await _run_once(cfg, register, simulator=False)
    collected = sorted(t for c in second.collectors for t in c.tags)
    assert second.downtime.restamped > 0
    df = _history(cfg, collected)
    between = df[(df["ts"] > stopped) & (df["status"] != BAD_SHUTDOWN)]
    # Every tag has a value known after the first stop's mark, before the second stop's.
    assert sorted(set(between["tag"])) == collected
    assert (between["quality"] == int(Quality.GOOD)).all()


async def test_a_start_after_a_crash_marks_the_downtime_after_the_last_stored_value(
    cfg, caplog
) -> None:
    """A killed gateway left its heartbeat; values it stored after that beat still end with
    the mark, just after them."""
    register = build_register(cfg, assets=30)
    alive = (utcnow() - timedelta(minutes=20)).replace(microsecond=0)
    late = [t for t in register.tags if t.endswith("/power_kw")]
    hist = DuckDBHistorian(cfg.resolve(cfg.historian.path))
    ts = np.full(len(late), int((alive + timedelta(seconds=8)).timestamp() * 1e6), np.int64)
    hist.write_columns(late, np.arange(len(late), dtype=np.int32), ts, np.ones(len(late)))
    hist.close()
    _crash_record(cfg, alive)

    runtime = await _run_once(cfg, register)
    collected = sorted(t for c in runtime.collectors for t in c.tags)
    assert runtime.downtime.marks == 2 * (len(collected) + len(runtime.collectors))
    assert "stopped without a clean stop" in caplog.text
    assert runtime.downtime.previous == {"alive": alive.isoformat(), "pid": 1}

    df = _history(cfg, collected).sort_values("ts", kind="stable")
    before = df[df["ts"] < pd.Timestamp(alive + timedelta(minutes=1))]
    last = before.groupby("tag").tail(1).set_index("tag")
    assert sorted(last.index) == collected
    assert (last["quality"] == int(Quality.COMM_LOSS)).all()
    assert (last["status"] == BAD_SHUTDOWN).all()
    after_late = pd.Timestamp(alive + timedelta(seconds=8, microseconds=1))
    assert (last.loc[late, "ts"] == after_late).all()
    others = [t for t in collected if t not in late]
    assert (last.loc[others, "ts"] == pd.Timestamp(alive)).all()


async def test_a_failed_start_keeps_the_evidence_of_a_crash(cfg) -> None:
    """The simulator cannot start (its port taken): the crash before stays to be marked."""
    heartbeat = _crash_record(cfg, utcnow() - timedelta(minutes=5))
    port = int(cfg.simulator.endpoint.rsplit(":", 1)[1].split("/")[0])
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        runtime = Runtime(cfg, build_register(cfg, assets=30), simulator=True, hmi=False)
        with pytest.raises(OSError):
            async with contextlib.AsyncExitStack() as stack:
                await runtime.start(stack)
    assert "stopped" not in json.loads(heartbeat.read_text())


async def test_a_second_gateway_on_the_same_data_folder_is_refused(cfg) -> None:
    """A live process beats in this folder: starting would mark its values lost."""
    sleep = "import time; time.sleep(60)"
    other = await asyncio.create_subprocess_exec(sys.executable, "-c", sleep)
    try:
        heartbeat = _crash_record(cfg, utcnow(), pid=other.pid)
        runtime = Runtime(cfg, build_register(cfg, assets=30), simulator=True, hmi=False)
        with pytest.raises(BeffroiError, match=f"another gateway \\(pid {other.pid}\\)"):
            async with contextlib.AsyncExitStack() as stack:
                await runtime.start(stack)
        assert json.loads(heartbeat.read_text())["pid"] == other.pid  # left alone
    finally:
        other.kill()
        await other.wait()


async def test_an_unreadable_heartbeat_is_reported_and_the_gateway_starts(cfg, caplog) -> None:
    heartbeat = cfg.resolve(cfg.historian.path).parent / "gateway.alive"
    heartbeat.parent.mkdir(parents=True, exist_ok=True)
    heartbeat.write_text("{half a file")
    runtime = await _run_once(cfg, build_register(cfg, assets=30))
    assert f"{heartbeat} is unreadable" in caplog.text
    assert runtime.downtime.marks == sum(len(c.tags) + 1 for c in runtime.collectors)


def test_only_first_values_after_a_restart_are_stored_again(tmp_path: Path, monkeypatch) -> None:
    """Values received once the equipment had time to send its current ones are not copied."""
    from types import SimpleNamespace

    from beffroi.app import downtime
    from beffroi.core.model import Sample

    heartbeat = tmp_path / "gateway.alive"
    stopped = utcnow() - timedelta(minutes=5)
    heartbeat.write_text(json.dumps({"alive": stopped.isoformat(), "stopped": stopped.isoformat()}))
    collector = SimpleNamespace(tags={"a/X/v": None, "a/Y/v": None}, status_tag="_system/c")
    put: list = []
    down = downtime.Downtime(heartbeat, put.extend)
    down.check_alone()
    down.start([collector], lambda tags: pd.DataFrame())
    old = stopped - timedelta(hours=1)
    again = down.restamp([Sample("a/X/v", old, 1.0)])
    assert [s.tag for s in again] == ["a/X/v"] and again[0].ts > stopped
    assert down.restamp([Sample("a/X/v", old, 1.0)]) == []  # only its first value

    monkeypatch.setattr(downtime, "FIRST_VALUES_S", 0.0)
    down.start([collector], lambda tags: pd.DataFrame())  # the first values' time is over
    assert down.restamp([Sample("a/Y/v", old, 2.0)]) == []
    assert down.restamp([Sample("a/X/v", old, 2.0)]) == []
