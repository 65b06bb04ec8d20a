"""Modbus TCP collector against a real pymodbus server in this process, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import math

import pytest

from beffroi.collectors.modbus.codec import Point, plan_reads
from beffroi.collectors.modbus.collector import ModbusCollector
from beffroi.collectors.modbus.config import ModbusCollectorConfig, ModbusRegisterConfig
from beffroi.core.model import Quality, TagSpec, WriteStatus
from tests.conftest import free_port
from tests.servers import ModbusDevice, Received

# Known register images (independent of the collector's codec): value → registers on the wire.
VECTORS = [
    # signal, type, byte_order, word_order, registers, value
    ("i16", "int16", "big", "big", [0xFFFE], -2.0),
    ("u16", "uint16", "big", "big", [0xFFFE], 65534.0),
    ("i32_abcd", "int32", "big", "big", [0xFFFF, 0xFFFE], -2.0),
    ("u32_cdab", "uint32", "big", "little", [0x5678, 0x1234], float(0x12345678)),
    ("f32_abcd", "float32", "big", "big", [0x3F80, 0x0000], 1.0),
    ("f32_cdab", "float32", "big", "little", [0x0000, 0x3F80], 1.0),
    ("f32_badc", "float32", "little", "big", [0x803F, 0x0000], 1.0),
    ("f32_dcba", "float32", "little", "little", [0x0000, 0x803F], 1.0),
    ("f64_abcd", "float64", "big", "big", [0x400E, 0x0000, 0x0000, 0x0000], 3.75),
    ("f64_dcba", "float64", "little", "little", [0x0000, 0x0000, 0x0000, 0x0E40], 3.75),
]


def _meter_map() -> list[ModbusRegisterConfig]:
    regs, address = [], 0
    for signal, type_, byte_order, word_order, words, _ in VECTORS:
        regs.append(
            ModbusRegisterConfig(
                signal=signal,
                table="holding",
                address=address,
                type=type_,
                byte_order=byte_order,
                word_order=word_order,
            )
        )
        address += len(words) + 1  # one unused register between signals: still one read
    return regs


RESERVOIR_MAP = [
    {"signal": "level_pct", "table": "input", "address": 0, "type": "uint16", "scale": 0.1},
    {
        "signal": "temp_c",
        "table": "input",
        "address": 1,
        "type": "int16",
        "scale": 0.5,
        "offset": -20,
        "unit": "°C",
    },
    {"signal": "pump_on", "table": "coil", "address": 3, "type": "bool"},
    {"signal": "fault", "table": "discrete", "address": 5, "type": "bool"},
    {"signal": "alarm", "table": "holding", "address": 20, "type": "bit", "bit": 3},
    {"signal": "setpoint_m", "table": "holding", "address": 21, "type": "int16", "scale": 0.01},
    {"signal": "limit_m", "table": "holding", "address": 22, "type": "uint16", "scale": 0.01},
    {"signal": "ghost", "table": "holding", "address": 250, "type": "uint32"},  # not there
]


def _tag(asset: str, signal: str, kind="float", writable=False, low=None, high=None) -> TagSpec:
    return TagSpec(f"dijon/{asset}/{signal}", asset, "dijon", signal, kind, "", writable, low, high)


def _reservoir(asset: str) -> list[TagSpec]:
    return [
        _tag(asset, "level_pct"),
        _tag(asset, "temp_c"),
        _tag(asset, "pump_on", "bool", writable=True),
        _tag(asset, "fault", "bool", writable=True),
        _tag(asset, "alarm", "bool", writable=True),
        _tag(asset, "setpoint_m", writable=True, low=0, high=300),
        _tag(asset, "limit_m", writable=True, low=0, high=10),
        _tag(asset, "ghost", writable=True),
    ]


METER_TAGS = [_tag("MT-0001", v[0], writable=True) for v in VECTORS]
RS1, RS2 = _reservoir("RS-0001"), _reservoir("RS-0002")
CLASSES = {"MT-0001": "meter", "RS-0001": "reservoir", "RS-0002": "reservoir"}


def _config(port: int, **extra) -> ModbusCollectorConfig:
    base = {
        "name": "water",
        "host": "127.0.0.1",
        "port": port,
        "poll_interval_s": 0.1,
        "timeout_s": 0.3,
        "retries": 0,
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 0.5,
        "devices": [
            {"asset": "MT-0001", "unit_id": 1},
            {"asset": "RS-0001", "unit_id": 2},
            {"asset": "RS-0002", "unit_id": 3, "poll_interval_s": 0.2},
        ],
        "maps": {"meter": _meter_map(), "reservoir": RESERVOIR_MAP},
    }
    return ModbusCollectorConfig.model_validate(base | extra)


@pytest.fixture
async def device():
    d = ModbusDevice(free_port(), unit_ids=(1, 2, 3))
    await d.start()
    yield d
    await d.stop()


@contextlib.asynccontextmanager
async def running(port: int, **extra):
    sink = Received()
    collector = ModbusCollector(
        _config(port, **extra), METER_TAGS + RS1 + RS2, sink, asset_classes=CLASSES
    )
    async with contextlib.AsyncExitStack() as stack:
        await collector.start(stack)
        async with asyncio.timeout(10):
            await collector.wait_connected()
        yield collector, sink


def _latest(sink: Received, tag: str):
    samples = sink.of(tag)
    return samples[-1] if samples else None


async def test_data_types_and_byte_orders_round_trip(device) -> None:
    """Every type and byte/word order decodes known register images, and encodes them back."""
    address = 0
    for _, _, _, _, words, _ in VECTORS:
        await device.set("holding", address, words, unit=1)
        address += len(words) + 1
    async with running(device.port) as (collector, sink):
        for (signal, *_, value), tag in zip(VECTORS, METER_TAGS, strict=True):
            got = await sink.wait_for(lambda s, t=tag.name: s.tag == t)
            assert got.value == value and got.quality is Quality.GOOD, signal
        address = 0
        for (signal, *_, words, value), tag in zip(VECTORS, METER_TAGS, strict=True):
            await device.set("holding", address, [0] * len(words), unit=1)
            result = await collector.write(tag.name, value)
            assert result.status is WriteStatus.CONFIRMED, (signal, result)
            assert await device.get("holding", address, len(words), unit=1) == words, signal
            address += len(words) + 1


async def test_reads_are_grouped_into_few_requests(device) -> None:
    """The meter's ten signals are one read; a reservoir needs one read per table and range."""
    async with running(device.port) as (collector, _):
        # meter: 1 holding read; each reservoir: input, coil, discrete, holding 20-22, holding 190
        assert collector.read_blocks == 1 + 2 * 5
    reg = ModbusRegisterConfig(signal="x", table="holding", address=0, type="float64")
    far = [Point(f"t{i}", 1, reg.model_copy(update={"address": i * 4})) for i in range(100)]
    blocks = plan_reads(far, max_registers=125, max_bits=2000, max_gap=0)
    assert [b.count for b in blocks] == [124, 124, 124, 28]  # 400 registers, 125 at most each


async def test_scale_offset_units_coils_and_bits(device) -> None:
    """Scaled values, coils, discrete inputs and a bit in a register arrive in engineering units."""
    await device.set("input", 0, [734, 90], unit=2)  # 73.4 %, 90 * 0.5 - 20 = 25 °C
    await device.set("coil", 3, [True], unit=2)
    await device.set("discrete", 5, [True], unit=2)
    await device.set("holding", 20, [0b1000], unit=2)
    async with running(device.port) as (collector, sink):
        await sink.wait_for(lambda s: s.tag == RS1[3].name and s.value is True)
        assert math.isclose(_latest(sink, RS1[0].name).value, 73.4)
        assert _latest(sink, RS1[1].name).value == 25.0
        assert collector.tags[RS1[1].name].unit == "°C"
        assert _latest(sink, RS1[2].name).value is True
        assert _latest(sink, RS1[4].name).value is True
        other = await sink.wait_for(lambda s: s.tag == RS2[2].name)
        assert other.value is False  # the other reservoir's pump is off


async def test_a_device_exception_is_bad_with_its_reason(device) -> None:
    """An address the device refuses gives Bad samples with the reason, the rest stays Good."""
    async with running(device.port) as (_, sink):
        ghost = await sink.wait_for(lambda s: s.tag == RS1[7].name)
        assert ghost.quality is Quality.BAD and math.isnan(ghost.value)
        assert ghost.status == 0x80340000  # IllegalDataAddress → BadNodeIdUnknown
        level = await sink.wait_for(lambda s: s.tag == RS1[0].name)
        assert level.quality is Quality.GOOD


async def test_writes_confirm_or_report_failure(device) -> None:
    """Writes are confirmed by read-back, refused before sending, rejected or unconfirmed."""
    await device.set("holding", 20, [0b0101], unit=2)
    async with running(device.port) as (collector, _):
        setpoint, limit = RS1[5].name, RS1[6].name
        ok = await collector.write(setpoint, 2.5)
        assert ok.status is WriteStatus.CONFIRMED and ok.value == 2.5
        assert await device.get("holding", 21, unit=2) == [250]
        assert (await collector.write(RS1[2].name, True)).ok
        assert await device.get("coil", 3, unit=2) == [True]
        assert (await collector.write(RS1[4].name, True)).ok  # bit 3 of a status word
        assert await device.get("holding", 20, unit=2) == [0b1101]  # the other bits kept
        high = await collector.write(setpoint, 400)
        assert high.status is WriteStatus.REFUSED and "above 300" in high.detail
        read_only = await collector.write(RS1[3].name, True)
        assert read_only.status is WriteStatus.REFUSED and "read-only" in read_only.detail
        too_big = await collector.write(METER_TAGS[0].name, 40000)
        assert too_big.status is WriteStatus.REFUSED and "int16" in too_big.detail
        device.clamp[22] = 500  # the device keeps at most 5.00 m
        clamped = await collector.write(limit, 8)
        assert clamped.status is WriteStatus.UNCONFIRMED and clamped.value == 5.0
        rejected = await collector.write(RS1[7].name, 1)
        assert rejected.status is WriteStatus.REJECTED and "IllegalDataAddress" in rejected.detail
        device.muted.add(2)
        silent = await collector.write(setpoint, 1.0)
        assert silent.status is WriteStatus.UNCONFIRMED and "no answer" in silent.detail


async def test_silent_device_and_server_restart_give_commloss_then_recover(device) -> None:
    """A silent device's tags go CommLoss once; a lost endpoint takes them all, then recovers."""
    async with running(device.port, reconnect_min_s=0.1) as (collector, sink):
        await sink.wait_for(lambda s: s.tag == RS2[0].name and s.quality is Quality.GOOD)
        device.muted.add(2)
        await sink.wait_for(lambda s: s.tag == RS1[0].name and s.quality is Quality.COMM_LOSS)
        await asyncio.sleep(0.5)  # more failed polls: still one CommLoss per tag
        lost = [s for s in sink.samples if s.quality is Quality.COMM_LOSS]
        assert sorted(s.tag for s in lost) == sorted(t.name for t in RS1)
        assert collector.connected and "RS-0001" in collector.status()["silent_devices"]
        n = len(sink.samples)
        await sink.wait_for(lambda s: s.tag == RS2[0].name and sink.samples.index(s) >= n)
        device.muted.clear()
        await device.stop()
        await sink.wait_for(lambda s: s.tag == collector.status_tag and s.value is False)
        await asyncio.sleep(0.6)
        lost = [s for s in sink.samples if s.quality is Quality.COMM_LOSS]
        assert len(lost) == len(RS1) + len(collector.tags)  # once per outage, not per attempt
        await device.start()
        await device.set("input", 0, [555], unit=3)
        got = await sink.wait_for(lambda s: s.tag == RS2[0].name and s.value == 55.5, within=10)
        assert got.quality is Quality.GOOD and collector.connected


async def test_the_gateway_starts_modbus_collectors_from_config(demo_config, tmp_path) -> None:
    """A [[collectors.modbus]] table is started by the runtime; its values reach live values."""
    from beffroi.app.runtime import Runtime
    from beffroi.core.register import build_register
    from tests.servers import gateway_config

    dev = ModbusDevice(free_port(), unit_ids=(7,))
    await dev.start()
    table = {
        "name": "reservoirs",
        "host": "127.0.0.1",
        "port": dev.port,
        "poll_interval_s": 0.1,
        "devices": [{"asset": "RS-0001", "unit_id": 7}],
        "maps": {
            "reservoir": [
                {"signal": "level_pct", "table": "input", "address": 0, "type": "float32"},
                {"signal": "pump_on", "table": "coil", "address": 0, "type": "bool"},
            ]
        },
    }
    cfg = gateway_config(demo_config, tmp_path, modbus=[table])
    register = build_register(cfg, assets=60)
    level = register.assets["RS-0001"].tag("level_pct")
    await dev.set("input", 0, [0x4290, 0x0000], unit=7)  # 72.0 as float32
    runtime = Runtime(cfg, register, simulator=False, hmi=False)
    try:
        async with contextlib.AsyncExitStack() as stack:
            await runtime.start(stack)
            [collector] = runtime.collectors
            assert collector.protocol == "modbus" and set(collector.tags) == {
                level,
                register.assets["RS-0001"].tag("pump_on"),
            }
            async with asyncio.timeout(10):
                while (got := runtime.live.get(level)) is None:  # noqa: ASYNC110  (live values have no event)
                    await asyncio.sleep(0.05)
            assert got.value == 72.0 and got.quality is Quality.GOOD
            assert (await collector.write(register.assets["RS-0001"].tag("pump_on"), True)).ok
    finally:
        await dev.stop()
