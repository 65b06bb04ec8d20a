"""Config of `[[collectors.modbus]]`: the endpoint, its devices and register maps per class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from beffroi.collectors.config import CollectorConfig
from beffroi.core.config import Slug, Strict
from beffroi.core.model import Asset
from beffroi.core.site import Site

ModbusTable = Literal["coil", "discrete", "holding", "input"]
ModbusType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit"]


class ModbusRegisterConfig(Strict):
    """Where a signal of a device class lives in the Modbus address space, and how to decode it."""

    signal: Slug
    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    type: ModbusType = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15)
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModbusRegisterConfig:
        bits = self.table in ("coil", "discrete")
        if bits and self.type != "bool":
            raise ValueError(
                f"a {self.table} holds one bit: type must be 'bool', got {self.type!r}"
            )
        if not bits and self.type == "bool":
            raise ValueError(f"{self.table} registers are 16-bit words: use 'bit' with bit = 0..15")
        if (self.type == "bit") != (self.bit is not None):
            raise ValueError("bit = 0..15 is required with type 'bit', and only with it")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class ModbusDeviceConfig(Strict):
    """One asset of the register reached through this Modbus TCP endpoint."""

    asset: str
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_s: float | None = Field(default=None, gt=0)


class ModbusCollectorConfig(CollectorConfig):
    """A Modbus TCP endpoint (a device or a gateway) polled for the devices behind it."""

    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    poll_interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    max_registers_per_read: int = Field(default=125, ge=1, le=125)
    max_bits_per_read: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124)
    devices: list[ModbusDeviceConfig] = Field(min_length=1)
    maps: dict[str, list[ModbusRegisterConfig]] = Field(min_length=1)


def modbus_problems(site: Site, configs: list[ModbusCollectorConfig]) -> list[str]:
    """Check the register maps' classes and signals, and devices listed twice."""
    problems: list[str] = []
    classes = site.asset_classes
    for i, col in enumerate(configs):
        where = f"collectors.modbus[{i}]"
        for class_id, entries in col.maps.items():
            if class_id not in classes:
                problems.append(f"{where}.maps.{class_id}: unknown asset class {class_id!r}")
                continue
            signals = {s.name: s for s in classes[class_id].signals}
            seen: set[str] = set()
            for j, reg in enumerate(entries):
                if reg.signal not in signals:
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {class_id} has no signal "
                        f"{reg.signal!r}"
                    )
                elif signals[reg.signal].kind == "str":
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {reg.signal!r} is text, which "
                        "Modbus registers do not carry"
                    )
                if reg.signal in seen:
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {reg.signal!r} is mapped twice"
                    )
                seen.add(reg.signal)
        assets: dict[str, int] = {}
        for j, dev in enumerate(col.devices):
            if dev.asset in assets:
                problems.append(
                    f"{where}.devices[{j}].asset: {dev.asset!r} is listed twice "
                    f"(also devices[{assets[dev.asset]}])"
                )
            assets.setdefault(dev.asset, j)
    return problems


def modbus_device_problems(
    configs: list[ModbusCollectorConfig], assets: Mapping[str, Asset]
) -> list[str]:
    """Check what only the register can tell: each device's asset exists and has a map."""
    problems: list[str] = []
    for i, col in enumerate(configs):
        for j, dev in enumerate(col.devices):
            asset = assets.get(dev.asset)
            where = f"collectors.modbus[{i}].devices[{j}].asset"
            if asset is None:
                problems.append(f"{where}: unknown asset {dev.asset!r}")
            elif asset.asset_class not in col.maps:
                problems.append(
                    f"{where}: {dev.asset} is a {asset.asset_class}, which has no register map "
                    f"(collectors.modbus[{i}].maps.{asset.asset_class})"
                )
    return problems
