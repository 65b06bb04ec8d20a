"""OPC UA collector against a real asyncua server in this process, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import UTC, datetime, timedelta

import pytest
from asyncua import Server, ua

from beffroi.collectors.opcua import OpcUaCollector
from beffroi.core.config import OpcUaCollectorConfig
from beffroi.core.model import Quality, Sample, TagSpec, WriteStatus
from tests.conftest import free_port

NS = "urn:beffroi:test"
POWER = TagSpec("dijon/LC-0001/power_kw", "LC-0001", "dijon", "power_kw", "float", "kW")
DIM = TagSpec(
    "dijon/LC-0001/dimming_pct", "LC-0001", "dijon", "dimming_pct", "float", "%", True, 0, 100
)
MSG = TagSpec("dijon/IP-0001/message", "IP-0001", "dijon", "message", "str", "", True)
TAGS = [POWER, DIM, MSG]


class Plant:
    """A real asyncua server holding the test tags; can be stopped and started again."""

    def __init__(self, port: int):
        self.url = f"opc.tcp://127.0.0.1:{port}/test/"
        self.server: Server | None = None
        self.idx = 0

    async def start(self) -> None:
        """Build the address space and listen."""
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        self.idx = await server.register_namespace(NS)
        objects = server.nodes.objects
        initial = {"float": 0.0, "str": ""}
        for spec in TAGS:
            var = await objects.add_variable(
                ua.NodeId(spec.name, self.idx), spec.signal, initial[spec.kind]
            )
            if spec.writable:
                await var.set_writable()
        await server.start()
        self.server = server

    async def stop(self) -> None:
        """Stop listening, dropping the clients' connections."""
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def set(self, tag: str, value, ts: datetime, status=ua.StatusCodes.Good) -> None:
        """Change a value at its source, with a source timestamp and status code."""
        assert self.server is not None
        dv = ua.DataValue(
            ua.Variant(value),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=ts,
            ServerTimestamp=datetime.now(UTC),
        )
        await self.server.write_attribute_value(ua.NodeId(tag, self.idx), dv)


class Received:
    """The sink: records every batch the collector pushes."""

    def __init__(self) -> None:
        self.samples: list[Sample] = []
        self.event = asyncio.Event()

    def __call__(self, batch) -> None:
        self.samples.extend(batch)
        self.event.set()

    async def wait_for(self, predicate, within: float = 15.0) -> Sample:
        """Wait until a received sample satisfies the predicate."""
        async with asyncio.timeout(within):
            while True:
                for s in self.samples:
                    if predicate(s):
                        return s
                self.event.clear()
                await self.event.wait()


@pytest.fixture
async def plant():
    p = Plant(free_port())
    await p.start()
    yield p
    await p.stop()


def _config(url: str) -> OpcUaCollectorConfig:
    return OpcUaCollectorConfig(
        name="plant",
        url=url,
        namespace=NS,
        publishing_interval_ms=50,
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
        timeout_s=2.0,
    )


@contextlib.asynccontextmanager
async def running(url: str):
    sink = Received()
    collector = OpcUaCollector(_config(url), TAGS, sink)
    async with contextlib.AsyncExitStack() as stack:
        await collector.start(stack)
        async with asyncio.timeout(15):
            await collector.wait_connected()
        yield collector, sink


async def test_values_arrive_with_tag_timestamp_and_quality(plant) -> None:
    """A value changed on the server arrives with its source timestamp and Good quality."""
    async with running(plant.url) as (collector, sink):
        ts = datetime(2026, 5, 4, 21, 30, 0, 123000, tzinfo=UTC)
        await plant.set(POWER.name, 7.25, ts)
        got = await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 7.25)
        assert got.ts == ts
        assert got.quality is Quality.GOOD
        assert got.server_ts is not None and got.server_ts > ts
        status = await sink.wait_for(lambda s: s.tag == collector.status_tag)
        assert status.value is True


async def test_bad_status_is_stored_as_bad_not_last_good(plant) -> None:
    """A Bad status code gives a Bad sample, never the previous good value."""
    async with running(plant.url) as (_, sink):
        now = datetime.now(UTC)
        await plant.set(POWER.name, 3.0, now)
        await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 3.0)
        await plant.set(
            POWER.name, 3.0, now + timedelta(seconds=1), ua.StatusCodes.BadSensorFailure
        )
        bad = await sink.wait_for(lambda s: s.tag == POWER.name and s.quality is Quality.BAD)
        assert math.isnan(bad.value)
        await plant.set(
            POWER.name, 4.0, now + timedelta(seconds=2), ua.StatusCodes.UncertainLastUsableValue
        )
        unc = await sink.wait_for(lambda s: s.tag == POWER.name and s.quality is Quality.UNCERTAIN)
        assert unc.value == 4.0


async def test_server_restart_gives_commloss_then_recovers(plant) -> None:
    """Stopping the server marks every tag CommLoss once; after restart values flow again."""
    async with running(plant.url) as (collector, sink):
        await plant.stop()
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
        lost = [s for s in sink.samples if s.quality is Quality.COMM_LOSS]
        assert {s.tag for s in lost} == {t.name for t in TAGS}
        assert not collector.connected
        await asyncio.sleep(1.5)  # several failed reconnect attempts: no CommLoss flood
        assert len([s for s in sink.samples if s.quality is Quality.COMM_LOSS]) == len(TAGS)
        await plant.start()
        async with asyncio.timeout(20):
            await collector.wait_connected()
        after = datetime.now(UTC)
        await plant.set(POWER.name, 42.0, after)
        got = await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 42.0, within=20)
        assert got.quality is Quality.GOOD and got.ts == after
        assert collector.reconnects >= 1


async def test_write_confirms_by_read_back_and_refuses_out_of_range(plant) -> None:
    """A setpoint write is confirmed by reading it back; invalid ones never reach the device."""
    async with running(plant.url) as (collector, _):
        ok = await collector.write(DIM.name, 40)
        assert ok.status is WriteStatus.CONFIRMED and ok.value == 40.0
        assert plant.server is not None
        node = plant.server.get_node(ua.NodeId(DIM.name, plant.idx))
        assert await node.read_value() == 40.0
        msg = await collector.write(MSG.name, "Accident: déviation par la rue de Talant")
        assert msg.ok
        too_high = await collector.write(DIM.name, 140)
        assert too_high.status is WriteStatus.REFUSED and "above 100" in too_high.detail
        read_only = await collector.write(POWER.name, 1.0)
        assert read_only.status is WriteStatus.REFUSED
        assert await node.read_value() == 40.0


async def test_write_to_a_read_only_node_reports_device_rejection(plant) -> None:
    """When the device refuses the write, the result says rejected with its status."""
    async with running(plant.url) as (collector, _):
        assert plant.server is not None
        node = plant.server.get_node(ua.NodeId(DIM.name, plant.idx))
        await node.set_writable(False)
        result = await collector.write(DIM.name, 10)
        assert result.status is WriteStatus.REJECTED
        assert "BadUserAccessDenied" in result.detail or "Bad" in result.detail
