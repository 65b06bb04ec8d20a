"""MQTT collector against Debian's Mosquitto broker, started on a free port for each test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime

import aiomqtt
import pytest

from beffroi.collectors.mqtt.collector import MqttCollector
from beffroi.collectors.mqtt.config import MqttCollectorConfig
from beffroi.core.model import Quality, TagSpec, WriteStatus
from tests.conftest import free_port
from tests.servers import Mosquitto, Received

FILL = TagSpec("dijon/WC-0001/fill_pct", "WC-0001", "dijon", "fill_pct", "float", "%")
FILL2 = TagSpec("talant/WC-0002/fill_pct", "WC-0002", "talant", "fill_pct", "float", "%")
POWER = TagSpec("dijon/LC-0001/power_kw", "LC-0001", "dijon", "power_kw", "float", "kW")
DIM = TagSpec(
    "dijon/LC-0001/dimming_pct", "LC-0001", "dijon", "dimming_pct", "float", "%", True, 0, 100
)
LIT = TagSpec("dijon/LC-0001/lit", "LC-0001", "dijon", "lit", "bool", "", True)
TAGS = [FILL, FILL2, POWER, DIM, LIT]

TOPICS = [
    {
        "filter": "city/+/waste/+/fill",
        "commune_level": 1,
        "asset_level": 3,
        "signal": "fill_pct",
        "value_path": "fill.pct",
        "timestamp_path": "ts",
        "unit_path": "unit",
    },
    {
        "filter": "city/+/lighting/+/+",
        "commune_level": 1,
        "asset_level": 3,
        "signal_level": 4,
        "format": "plain",
        "command_topic": "city/{commune}/lighting/{asset}/{signal}/set",
    },
]


@pytest.fixture
def broker(tmp_path):
    b = Mosquitto(tmp_path / "broker", free_port())
    b.start()
    yield b
    b.stop()


def _config(port: int, **extra) -> MqttCollectorConfig:
    base = {
        "name": "sensors",
        "port": port,
        "topics": TOPICS,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "write_timeout_s": 1.0,
    }
    return MqttCollectorConfig.model_validate(base | extra)


@contextlib.asynccontextmanager
async def running(port: int, **extra):
    sink = Received()
    collector = MqttCollector(_config(port, **extra), TAGS, sink)
    async with contextlib.AsyncExitStack() as stack:
        await collector.start(stack)
        async with asyncio.timeout(10):
            await collector.wait_connected()
        yield collector, sink


@contextlib.asynccontextmanager
async def publisher(port: int):
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-device") as client:
        yield client


async def test_json_and_plain_payloads_arrive_as_tags(broker) -> None:
    """Topic levels give commune and asset; JSON paths give value and source time."""
    async with running(broker.port) as (collector, sink), publisher(broker.port) as dev:
        ts = "2026-03-01T06:15:00.250Z"
        doc = {"fill": {"pct": 73}, "unit": "%", "ts": ts}
        await dev.publish("city/dijon/waste/WC-0001/fill", json.dumps(doc), qos=1)
        await dev.publish(
            "city/talant/waste/WC-0002/fill",
            b'{"fill": {"pct": 12.5}, "unit": "%", "ts": 1772345700}',
            qos=1,
        )
        await dev.publish("city/dijon/lighting/LC-0001/power_kw", b"4.25", qos=1)
        await dev.publish("city/dijon/lighting/LC-0001/lit", b"true", qos=1)
        got = await sink.wait_for(lambda s: s.tag == FILL.name)
        assert got.value == 73.0 and got.quality is Quality.GOOD
        assert got.ts == datetime(2026, 3, 1, 6, 15, 0, 250000, tzinfo=UTC)
        assert got.server_ts is not None and got.server_ts > got.ts
        epoch = await sink.wait_for(lambda s: s.tag == FILL2.name)
        assert epoch.value == 12.5 and epoch.ts == datetime.fromtimestamp(1772345700, UTC)
        assert (await sink.wait_for(lambda s: s.tag == POWER.name)).value == 4.25
        assert (await sink.wait_for(lambda s: s.tag == LIT.name)).value is True
        assert collector.malformed == 0


async def test_garbage_payloads_are_counted_logged_once_and_the_next_good_one_arrives(
    broker, caplog
) -> None:
    """Malformed payloads never stop the collector: counted in a _system tag, logged rarely."""
    caplog.set_level(logging.WARNING, logger="beffroi.collectors.mqtt")
    topic = "city/dijon/waste/WC-0001/fill"
    garbage = [
        b"\x00\xff not even text",
        b"full of rubbish",  # not JSON
        b'{"fill": {"pct": "73%"}, "unit": "%", "ts": 1}',  # wrong type
        b'{"fill": {}, "unit": "%", "ts": 1}',  # missing field
        b'{"fill": {"pct": 70}, "unit": "cm", "ts": 1}',  # wrong unit
        b'{"fill": {"pct": 70}, "unit": "%", "ts": "yesterday"}',  # bad timestamp
        b'{"fill": {"pct": 70}, "unit": "%", "ts": 1, "pad": "' + b"x" * 70_000 + b'"}',  # huge
    ]
    async with running(broker.port) as (collector, sink), publisher(broker.port) as dev:
        for payload in garbage:
            await dev.publish(topic, payload, qos=1)
        await dev.publish("city/dijon/lighting/LC-0001/power_kw", b"NaN-ish", qos=1)
        await dev.publish("city/gotham/waste/WC-9999/fill", b'{"fill": {"pct": 1}}', qos=1)
        await dev.publish(topic, b'{"fill": {"pct": 41}, "unit": "%", "ts": 1772345700}', qos=1)
        good = await sink.wait_for(lambda s: s.tag == FILL.name)
        assert good.value == 41.0
        counted = await sink.wait_for(
            lambda s: s.tag == collector.malformed_tag and s.value == len(garbage) + 1
        )
        assert counted.quality is Quality.GOOD
        await sink.wait_for(lambda s: s.tag == collector.unmapped_tag and s.value == 1.0)
        assert collector.connected and collector.status()["malformed"] == len(garbage) + 1
        about_topic = [r for r in caplog.records if topic in r.getMessage()]
        assert len(about_topic) == 1 and "malformed payload" in about_topic[0].getMessage()


async def test_setpoints_are_confirmed_by_the_state_topic(broker) -> None:
    """A command is confirmed when the state reports the value; otherwise it says what happened."""
    behaviour = {"mode": "obey"}

    async def device() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="cabinet") as client:
            await client.subscribe("city/+/lighting/+/+/set", qos=1)
            ready.set()
            async for msg in client.messages:
                state = str(msg.topic).removesuffix("/set")
                value = msg.payload.decode()
                if behaviour["mode"] == "clamp":
                    value = str(min(float(value), 50.0))
                if behaviour["mode"] != "mute":
                    await client.publish(state, value, qos=1)

    ready = asyncio.Event()
    task = asyncio.create_task(device())
    try:
        async with running(broker.port) as (collector, sink):
            await asyncio.wait_for(ready.wait(), 10)
            ok = await collector.write(DIM.name, 40)
            assert ok.status is WriteStatus.CONFIRMED and ok.value == 40.0
            assert (await collector.write(LIT.name, True)).ok
            behaviour["mode"] = "clamp"
            clamped = await collector.write(DIM.name, 80)
            assert clamped.status is WriteStatus.UNCONFIRMED and clamped.value == 50.0
            assert "did not report 80.0" in clamped.detail
            behaviour["mode"] = "mute"
            silent = await collector.write(DIM.name, 20)
            assert silent.status is WriteStatus.UNCONFIRMED
            refused = await collector.write(DIM.name, 120)
            assert refused.status is WriteStatus.REFUSED
            no_command = await collector.write(FILL.name, 10)
            assert no_command.status is WriteStatus.REFUSED
            assert [s.value for s in sink.of(DIM.name)] == [40.0, 50.0]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_persistent_session_keeps_messages_and_broker_restart_recovers(broker) -> None:
    """QoS 1 messages sent while the gateway is away arrive later; a broker restart is CommLoss."""
    async with running(broker.port):
        pass  # the broker now knows this client's session and subscriptions
    async with publisher(broker.port) as dev:
        await dev.publish("city/dijon/lighting/LC-0001/power_kw", b"7.5", qos=1)
    async with running(broker.port) as (collector, sink):
        assert (await sink.wait_for(lambda s: s.tag == POWER.name)).value == 7.5
        broker.stop()
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
        await asyncio.sleep(0.8)  # failed reconnects: CommLoss once, not per attempt
        lost = [s for s in sink.samples if s.quality is Quality.COMM_LOSS]
        assert sorted(s.tag for s in lost) == sorted(t.name for t in TAGS)
        n = len(sink.samples)
        broker.start()
        await sink.wait_for(
            lambda s: s.tag == collector.status_tag and s.value is True and s in sink.samples[n:]
        )
        async with publisher(broker.port) as dev:
            await dev.publish("city/dijon/lighting/LC-0001/power_kw", b"8.5", qos=1)
        got = await sink.wait_for(lambda s: s.tag == POWER.name and s.value == 8.5)
        assert got.quality is Quality.GOOD and collector.connected


async def test_the_gateway_starts_mqtt_collectors_from_config(broker, demo_config, tmp_path):
    """A [[collectors.mqtt]] table is started by the runtime with the tags its rules can name."""
    from beffroi.app.runtime import Runtime
    from beffroi.core.register import build_register
    from tests.servers import gateway_config

    table = {"name": "waste", "port": broker.port, "topics": [TOPICS[0]]}
    cfg = gateway_config(demo_config, tmp_path, mqtt=[table])
    register = build_register(cfg, assets=60)
    bins = [a for a in register.assets.values() if a.asset_class == "waste_container"]
    target = bins[0]
    runtime = Runtime(cfg, register, simulator=False, hmi=False)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        [collector] = runtime.collectors
        assert set(collector.tags) == {a.tag("fill_pct") for a in bins}
        async with asyncio.timeout(10):
            await collector.wait_connected()
        async with publisher(broker.port) as dev:
            doc = {"fill": {"pct": 64.5}, "unit": "%", "ts": "2026-03-01T06:15:00Z"}
            await dev.publish(
                f"city/{target.commune}/waste/{target.id}/fill", json.dumps(doc), qos=1
            )
        async with asyncio.timeout(10):
            while runtime.live.get(target.tag("fill_pct")) is None:  # noqa: ASYNC110  (no event)
                await asyncio.sleep(0.05)
        assert runtime.live.get(target.tag("fill_pct")).value == 64.5


async def test_discovery_adds_assets_nobody_listed_to_be_placed_with_their_alarms(
    broker, demo_config, tmp_path
):
    """With `discover`, a message naming an unknown asset makes it join the inventory "to be
    placed" (commune from the topic), its fault in that very first message is an alarm, and
    later values are collected; what cannot be an asset of the metropolis stays unmapped."""
    from beffroi.app.runtime import Runtime
    from beffroi.core.register import build_register
    from tests.servers import gateway_config

    table = {"name": "lighting", "port": broker.port, "topics": [TOPICS[1]], "discover": True,
             "classes": ["streetlight_cabinet"]}  # fmt: skip
    cfg = gateway_config(demo_config, tmp_path, mqtt=[table])
    register = build_register(cfg, assets=60)
    known = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    elsewhere = "talant" if known.commune != "talant" else "dijon"
    runtime = Runtime(cfg, register, simulator=False, hmi=False)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        [collector] = runtime.collectors
        async with asyncio.timeout(10):
            await collector.wait_connected()
        async with publisher(broker.port) as dev:
            await dev.publish("city/talant/lighting/LC-7001/fault", b"true", qos=1)
            for topic in (
                "city/paris/lighting/LC-7002/fault",  # not a commune of the metropolis
                "city/talant/lighting/ZZ-7003/fault",  # no class has this prefix
                "city/talant/lighting/LC-7004/colour",  # not a signal of the class
                f"city/{elsewhere}/lighting/{known.id}/fault",  # listed, in another commune
                "city/talant/lighting/TL-7005/fault",  # a class this collector does not take
            ):
                await dev.publish(topic, b"true", qos=1)
            async with asyncio.timeout(10):
                while "LC-7001" not in register.assets:  # noqa: ASYNC110  (no event)
                    await asyncio.sleep(0.05)
            await dev.publish("city/talant/lighting/LC-7001/power_kw", b"3.5", qos=1)
            async with asyncio.timeout(10):
                while runtime.live.get("talant/LC-7001/power_kw") is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
        found = register.assets["LC-7001"]
        assert (found.state, found.source, found.commune) == ("to_place", "discovery", "talant")
        assert found.origin == "mqtt:lighting"
        assert runtime.alarms is not None
        alarm = next(
            r for r in runtime.alarms.alarms(include_normal=True)
            if r["alarm_id"] == "talant/LC-7001/fault#cabinet-fault"
        )  # fmt: skip
        assert alarm["state"] == "unack_active" and alarm["value"] is True
        assert not {"LC-7002", "ZZ-7003", "LC-7004", "TL-7005"} & set(register.assets)
        assert register.assets[known.id].commune == known.commune
        async with asyncio.timeout(10):
            while collector.unmapped < 5:  # noqa: ASYNC110  (no event)
                await asyncio.sleep(0.05)
        assert collector.status()["discovered"] == 1
