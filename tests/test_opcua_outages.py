"""OPC UA outages as an operator lives them: quick reconnects, a readable log, tags that go."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from beffroi.cli import app
from beffroi.collectors.base import Backoff
from beffroi.collectors.opcua.collector import OpcUaCollector
from beffroi.collectors.opcua.config import OpcUaCollectorConfig
from beffroi.core import status_codes
from beffroi.core.model import Quality, TagSpec
from tests.conftest import ROOT, eventually, free_port
from tests.servers import NS, OpcUaPlant, Received

POWER = TagSpec("dijon/LC-0001/power_kw", "LC-0001", "dijon", "power_kw", "float", "kW")
LEVEL = TagSpec("talant/RS-0001/level_pct", "RS-0001", "talant", "level_pct", "float", "%")


def _config(url: str) -> OpcUaCollectorConfig:
    return OpcUaCollectorConfig(
        name="plant", url=url, namespace=NS, publishing_interval_ms=50, timeout_s=2.0
    )


@contextlib.asynccontextmanager
async def _collecting(url: str, tags: list[TagSpec]):
    sink = Received()
    collector = OpcUaCollector(_config(url), tags, sink)
    async with contextlib.AsyncExitStack() as stack:
        await collector.start(stack)
        async with asyncio.timeout(20):
            await collector.wait_connected()
        yield collector, sink


def test_reconnects_retry_quickly_first_then_back_off() -> None:
    """The first retries of a lost link come within the minimum delay; later ones double, capped."""
    backoff = Backoff(0.5, 10.0)
    delays = [backoff.delay() for _ in range(12)]
    assert all(d <= 0.5 * 1.2 for d in delays[:3])  # a restarting server is back in ~1 s
    assert delays[4] > delays[2] * 1.5  # then it backs off
    assert max(delays) <= 10.0 * 1.2 and delays[-1] >= 10.0 * 0.8
    backoff.reset()
    assert backoff.delay() <= 0.6
    # The default maximum bounds how late values resume after the equipment is back.
    assert _config("opc.tcp://h:4840/").reconnect_max_s <= 10


async def test_an_outage_is_said_once_by_name_without_tracebacks(caplog) -> None:
    """A server that stops: the collector says so, asyncua's publish-loop traceback stays out,
    and status codes are named, not numbers."""
    plant = OpcUaPlant(free_port(), [POWER])
    await plant.start()
    caplog.set_level(logging.DEBUG, logger="asyncua")
    caplog.set_level(logging.INFO, logger="beffroi")
    try:
        async with _collecting(plant.url, [POWER]) as (collector, sink):
            await plant.stop()
            await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
            await asyncio.sleep(1.0)
    finally:
        await plant.stop()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in errors if "Publish iteration crashed" in r.getMessage()], errors
    assert not [r for r in caplog.records if "StatusCode(value=" in r.getMessage()]
    lost = [
        r for r in caplog.records if "connection to" in r.getMessage() and "lost" in r.getMessage()
    ]
    assert len(lost) == 1


async def test_a_tag_the_server_no_longer_offers_is_reported_once_by_name(caplog) -> None:
    """After a restart without one node, its tag is Bad with BadNodeIdUnknown and named in the
    log once; the other tags are collected as before; it comes back when the server offers it."""
    port = free_port()
    full = OpcUaPlant(port, [POWER, LEVEL])
    await full.start()
    caplog.set_level(logging.INFO, logger="beffroi")
    try:
        async with _collecting(full.url, [POWER, LEVEL]) as (collector, sink):
            for shrunk_run in range(2):  # twice: named once only
                await full.stop()
                await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
                shrunk = OpcUaPlant(port, [POWER])
                await shrunk.start()
                try:
                    await eventually(lambda: collector.connected, within=20)
                    gone = await sink.wait_for(
                        lambda s: s.tag == LEVEL.name and s.quality is Quality.BAD
                    )
                    assert gone.status == status_codes.BadNodeIdUnknown
                finally:
                    await shrunk.stop()
                await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
                await full.start()
                await eventually(lambda: collector.connected, within=20)
                if shrunk_run == 0:
                    assert collector.status()["missing"] == 0  # offered again
            named = [
                r for r in caplog.records
                if "not offered" in r.getMessage() and LEVEL.name in r.getMessage()
            ]  # fmt: skip
            assert len(named) == 2  # once per disappearance, not once per reconnect attempt
            assert "BadNodeIdUnknown" in named[0].getMessage()
            assert [r for r in caplog.records if "offered again" in r.getMessage()]
    finally:
        await full.stop()


def test_a_byte_order_mark_is_named(tmp_path: Path) -> None:
    """A config saved with a BOM gets a message that says so, not "invalid statement at 1:1"."""
    path = tmp_path / "bom.toml"
    path.write_text("\ufeff" + (ROOT / "config.toml").read_text(), encoding="utf-8")
    result = CliRunner().invoke(app, ["check-config", "-c", str(path)])
    assert result.exit_code == 2
    assert "byte-order mark" in result.stderr and "Invalid statement" not in result.stderr


@pytest.mark.parametrize("url", ["opc.tcp://plc.dijon.local/beffroi/", "opc.tcp://10.0.0.3"])
def test_an_opc_url_without_port_is_refused(url: str) -> None:
    """OPC UA has no default port a client may assume: the URL must give one."""
    with pytest.raises(ValueError, match=r"opc\.tcp://host:port/path"):
        _config(url)
