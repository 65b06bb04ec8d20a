"""Alarms in the running gateway: a simulator fault raises one; the CLI acks it through the API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from beffroi.alerts.journal import Journal
from beffroi.api.gateway_file import gateway_file_path
from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.register import build_register
from tests.conftest import ROOT, eventually, free_port


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beffroi", *args], capture_output=True, text=True, timeout=60
    )


async def test_a_forced_fault_raises_an_alarm_acked_through_the_gateway(
    demo_config_fixture, tmp_path: Path
) -> None:
    """force_fault → OPC UA → collector → engine: active; `alarms ack` reaches the engine."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg_file = tmp_path / "gw.toml"
    text = (ROOT / "config.toml").read_text()
    cfg_file.write_text(
        text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    )
    register = build_register(cfg, assets=60)
    cabinet = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    aid = f"{cabinet.tag('fault')}#cabinet-fault"
    runtime = Runtime(cfg, register, simulator=True, hmi=True)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        async with asyncio.timeout(30):
            await runtime.collectors[0].wait_connected()
        engine = runtime.alarms.engine
        await runtime.simulator.force_fault(cabinet.id, False)
        await eventually(lambda: engine.alarms[aid].value is False, within=15)
        await runtime.simulator.force_fault(cabinet.id, True)
        await eventually(lambda: engine.alarms[aid].state == "unack_active", within=15)
        assert runtime.status()["alarms"]["states"]["unack_active"] >= 1

        listed = await asyncio.to_thread(
            _cli, "alarms", "list", "-c", str(cfg_file), "--format", "json"
        )
        assert listed.returncode == 0, listed.stderr
        assert "through the running gateway" in listed.stderr
        rows = {r["alarm_id"]: r for r in json.loads(listed.stdout)}
        assert rows[aid]["state"] == "unack_active" and rows[aid]["asset"] == cabinet.id

        acked = await asyncio.to_thread(
            _cli, "alarms", "ack", aid, "-c", str(cfg_file), "--user", "léa", "--comment", "crew"
        )
        assert acked.returncode == 0, acked.stderr
        assert engine.alarms[aid].state == "ack_active"  # the running engine, not only a file

        info = json.loads(gateway_file_path(cfg).read_text())
        bad = urllib.request.Request(
            f"{info['url']}api/v1/alarms", headers={"Authorization": "Bearer nope"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            await asyncio.to_thread(urllib.request.urlopen, bad, timeout=10)
        assert err.value.code == 401
        exported = await asyncio.to_thread(
            _cli, "alarms", "export", "-c", str(cfg_file), "--start", "-1h"
        )
        assert exported.returncode == 0, exported.stderr
        assert aid in exported.stdout
        await runtime.simulator.force_fault(cabinet.id, False)
        await eventually(lambda: engine.alarms[aid].state == "normal", within=15)
    journal = Journal(tmp_path / "journal.duckdb", read_only=True)
    try:
        events = journal.events(alarm_ids=[aid])
    finally:
        journal.close()
    assert list(events.event) == ["activate", "ack", "clear"]
    assert list(events.user) == ["", "léa", ""] and events.comment.iloc[1] == "crew"
