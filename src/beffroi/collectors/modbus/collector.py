"""Modbus TCP collector: register maps per device class, grouped reads, per-device polling."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Self

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.pdu import ModbusPDU

from beffroi.collectors.base import Backoff, CollectorBase
from beffroi.collectors.modbus.codec import Point, ReadBlock, decode, encode, plan_reads, with_bit
from beffroi.collectors.modbus.config import ModbusCollectorConfig
from beffroi.core import status_codes
from beffroi.core.model import Quality, Sample, TagSpec, Value, WriteResult, WriteStatus, utcnow
from beffroi.core.register import Register, RegisterChange
from beffroi.core.seams import Sink
from beffroi.core.site import Site

log = logging.getLogger(__name__)

_READ = {
    "coil": "read_coils",
    "discrete": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}


# Modbus exception codes → the OPC UA status codes a Bad sample carries.
_EXCEPTION_STATUS = {
    1: status_codes.BadNotSupported,  # IllegalFunction
    2: status_codes.BadNodeIdUnknown,  # IllegalDataAddress
    3: status_codes.BadOutOfRange,  # IllegalDataValue
    4: status_codes.BadDeviceFailure,  # ServerDeviceFailure
    6: status_codes.BadResourceUnavailable,  # ServerDeviceBusy
}
_EXCEPTION_NAME = {
    1: "IllegalFunction",
    2: "IllegalDataAddress",
    3: "IllegalDataValue",
    4: "ServerDeviceFailure",
    6: "ServerDeviceBusy",
    10: "GatewayPathUnavailable",
    11: "GatewayTargetDeviceFailedToRespond",
}
# A gateway saying its target does not answer is the device's communication loss.
_GATEWAY_NO_ANSWER = (10, 11)


class DeviceSilent(Exception):
    """A device behind the endpoint did not answer (the TCP connection itself is up)."""


class ModbusCollector(CollectorBase[ModbusCollectorConfig]):
    """Poll the devices behind one Modbus TCP endpoint; each device is an asset of the register."""

    protocol = "modbus"

    def __init__(
        self,
        config: ModbusCollectorConfig,
        tags: Sequence[TagSpec],
        sink: Sink,
        *,
        asset_classes: Mapping[str, str],
    ):
        devices = {d.asset: d for d in config.devices}
        points: dict[str, Point] = {}
        kept = []
        for spec in tags:
            device = devices.get(spec.asset)
            maps = config.maps.get(asset_classes.get(spec.asset, ""), [])
            reg = next((r for r in maps if r.signal == spec.signal), None)
            if device is None or reg is None:
                continue
            points[spec.name] = Point(spec.name, device.unit_id, reg)
            kept.append(dataclasses.replace(spec, unit=reg.unit) if reg.unit is not None else spec)
        super().__init__(config, kept, sink)
        self.points = points
        # One poll loop per device: each has its own interval and its own outage state.
        self._plans: list[tuple[str, float, list[ReadBlock]]] = []
        for d in config.devices:
            mine = [p for p in points.values() if self.tags[p.tag].asset == d.asset]
            plan = plan_reads(
                mine, config.max_registers_per_read, config.max_bits_per_read, config.max_gap
            )
            self._plans.append((d.asset, d.poll_interval_s or config.poll_interval_s, plan))
        self._client: AsyncModbusTcpClient | None = None
        self._silent: set[str] = set()
        self.reads = 0
        self.reconnects = 0

    @classmethod
    def from_config(
        cls, config: ModbusCollectorConfig, site: Site, register: Register, sink: Sink
    ) -> Self:
        """Build the collector for its devices (checked against the register at load time)."""
        assets = [register.assets[d.asset] for d in config.devices]
        tags = [t for a in assets for t in a.tags]
        return cls(config, tags, sink, asset_classes={a.id: a.asset_class for a in assets})

    def follow(self, change: RegisterChange) -> None:
        """Keep polling the configured devices: a device list is config, not the register's."""

    @property
    def read_blocks(self) -> int:
        """Return how many read requests one poll of every device takes."""
        return sum(len(plan) for _, _, plan in self._plans)

    async def _disconnect(self) -> None:
        self._close()

    def _close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        where = f"{cfg.host}:{cfg.port}"
        while True:
            try:
                # pymodbus's own reconnect is off (reconnect_delay=0): this loop owns it.
                client = AsyncModbusTcpClient(
                    cfg.host,
                    port=cfg.port,
                    timeout=cfg.timeout_s,
                    retries=cfg.retries,
                    reconnect_delay=0,
                )
                self._client = client
                if not await client.connect():
                    raise ConnectionError(f"cannot connect to {where}")
                # One silent unit behind a gateway must not drop the link of the others: the
                # link is dropped here only when every device is silent.
                client.set_max_no_responses(1_000_000)
                backoff.reset()
                self._silent.clear()
                self._went_up()
                self._ready.set()
                log.info("%s: connected to %s, %d devices", self.name, where, len(self._plans))
                async with asyncio.TaskGroup() as tg:
                    for asset, interval, plan in self._plans:
                        if plan:
                            tg.create_task(self._poll_device(client, asset, interval, plan))
                if not any(plan for _, _, plan in self._plans):
                    log.warning("%s: no device has a mapped register: nothing to poll", self.name)
                    await asyncio.Event().wait()  # stay connected for writes, poll nothing
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = _describe(exc)
                if self.connected or not self._outage_marked:
                    log.warning("%s: lost %s: %s", self.name, where, error)
                self._ready.clear()
                self._close()
                self._went_down(error)
            await asyncio.sleep(backoff.delay())
            self.reconnects += 1

    async def _poll_device(
        self, client: AsyncModbusTcpClient, asset: str, interval: float, plan: list[ReadBlock]
    ) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        tags = [p.tag for block in plan for p in block.points]
        while True:
            try:
                batch = [s for block in plan for s in await self._read(client, block)]
            except DeviceSilent as exc:
                if asset not in self._silent:  # CommLoss once per device outage
                    self._silent.add(asset)
                    log.warning("%s: device %s does not answer: %s", self.name, asset, exc)
                    self._mark_comm_loss(tags)
                if len(self._silent) == sum(1 for _, _, plan in self._plans if plan):
                    raise ConnectionError("no device answers") from exc
            else:
                if asset in self._silent:
                    self._silent.discard(asset)
                    log.info("%s: device %s answers again", self.name, asset)
                self.samples_received += len(batch)
                self.sink(batch)
            # An overrun delays the next poll instead of bunching requests.
            next_at = max(next_at + interval, loop.time())
            await asyncio.sleep(next_at - loop.time())

    async def _read(self, client: AsyncModbusTcpClient, block: ReadBlock) -> list[Sample]:
        if not client.connected:
            raise ConnectionError("connection closed")
        try:
            resp: ModbusPDU = await getattr(client, _READ[block.table])(
                block.start, count=block.count, device_id=block.unit_id
            )
        except ConnectionException:
            raise
        except ModbusIOException as exc:
            if not client.connected:
                raise ConnectionError(str(exc)) from exc
            raise DeviceSilent(str(exc)) from exc
        self.reads += 1
        now = utcnow()
        if resp.isError() and getattr(resp, "exception_code", 0) in _GATEWAY_NO_ANSWER:
            raise DeviceSilent(f"gateway: {_EXCEPTION_NAME[resp.exception_code]}")
        if resp.isError():
            # The device answered with an exception: Bad, with why, not CommLoss.
            code = getattr(resp, "exception_code", 0)
            status = _EXCEPTION_STATUS.get(code, status_codes.BadDeviceFailure)
            log.debug("%s: unit %d refused %s: %s", self.name, block.unit_id, block, code)
            nan = float("nan")
            return [Sample(p.tag, now, nan, Quality.BAD, None, status) for p in block.points]
        data = resp.bits if block.table in ("coil", "discrete") else resp.registers
        return [Sample(p.tag, now, self._typed(p.tag, value)) for p, value in block.values(data)]

    def _typed(self, tag: str, value: float | bool) -> Value:
        return bool(value) if self.tags[tag].kind == "bool" else float(value)

    def status(self) -> dict[str, Any]:
        """Return the collector's state, with the devices that do not answer."""
        return {
            **super().status(),
            "silent_devices": sorted(self._silent),
            "reads": self.reads,
            "reconnects": self.reconnects,
        }

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a holding register or coil, then read it back to confirm."""
        refused = self.check_write(tag, value)
        if refused is not None:
            return refused
        point = self.points[tag]
        reg = point.reg
        if reg.table in ("discrete", "input"):
            return WriteResult(tag, WriteStatus.REFUSED, value, f"{reg.table} is read-only")
        client = self._client
        if client is None or not self.connected:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "not connected")
        try:
            words = encode(value, reg)
        except ValueError as exc:
            return WriteResult(tag, WriteStatus.REFUSED, value, str(exc))
        unit = point.unit_id
        try:
            if reg.table == "coil":
                resp = await client.write_coil(reg.address, bool(words[0]), device_id=unit)
            elif reg.type == "bit":
                current = await client.read_holding_registers(reg.address, device_id=unit)
                if current.isError():
                    return _rejected(tag, value, current)
                words = [with_bit(current.registers[0], reg, bool(value))]
                resp = await client.write_register(reg.address, words[0], device_id=unit)
            elif len(words) == 1:
                resp = await client.write_register(reg.address, words[0], device_id=unit)
            else:
                resp = await client.write_registers(reg.address, words, device_id=unit)
            if resp.isError():
                return _rejected(tag, value, resp)
            read = _READ[reg.table]
            back: ModbusPDU = await getattr(client, read)(
                reg.address, count=point.width, device_id=unit
            )
        except ModbusException as exc:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, f"no answer: {exc}")
        if back.isError():
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "read-back refused")
        got = back.bits[:1] if reg.table == "coil" else back.registers[: point.width]
        decoded = self._typed(tag, decode(got, reg))
        expected = [bool(words[0])] if reg.table == "coil" else words
        if list(got) == list(expected):
            return WriteResult(tag, WriteStatus.CONFIRMED, decoded)
        return WriteResult(tag, WriteStatus.UNCONFIRMED, decoded, f"read back {decoded!r}")


def _rejected(tag: str, value: Value, resp: ModbusPDU) -> WriteResult:
    code = getattr(resp, "exception_code", 0)
    why = _EXCEPTION_NAME.get(code, "exception")
    return WriteResult(tag, WriteStatus.REJECTED, value, f"device refused: {why} ({code})")


def _describe(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"
