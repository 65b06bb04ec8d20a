"""Modbus register maps: data types, byte and word order, scaling, and reads grouped into blocks."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from beffroi.collectors.modbus.config import ModbusRegisterConfig
from beffroi.core.model import Value

WORDS = {
    "int16": 1,
    "uint16": 1,
    "int32": 2,
    "uint32": 2,
    "float32": 2,
    "float64": 4,
    "bit": 1,
    "bool": 1,
}
_STRUCT = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f", "float64": "d"}
_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
}


def _to_bytes(words: Sequence[int], reg: ModbusRegisterConfig) -> bytes:
    """Assemble registers (as received, in address order) into big-endian bytes."""
    ordered = list(reversed(words)) if reg.word_order == "little" else list(words)
    return b"".join(w.to_bytes(2, reg.byte_order) for w in ordered)


def _to_words(data: bytes, reg: ModbusRegisterConfig) -> list[int]:
    """Split big-endian bytes into registers in address order (the inverse of _to_bytes)."""
    words = [int.from_bytes(data[i : i + 2], reg.byte_order) for i in range(0, len(data), 2)]
    return list(reversed(words)) if reg.word_order == "little" else words


def decode(words: Sequence[int], reg: ModbusRegisterConfig) -> float | bool:
    """Decode a signal from its registers (or one coil/discrete bit) into engineering units."""
    if reg.type == "bool":
        return bool(words[0])
    if reg.type == "bit":
        assert reg.bit is not None
        word = int.from_bytes(words[0].to_bytes(2, reg.byte_order), "big")
        return bool((word >> reg.bit) & 1)
    (raw,) = struct.unpack(">" + _STRUCT[reg.type], _to_bytes(words, reg))
    return raw * reg.scale + reg.offset


def encode(value: Value, reg: ModbusRegisterConfig) -> list[int]:
    """Encode a value in engineering units into registers; raise ValueError if it cannot fit."""
    # Text is a number check_write accepted for a float tag ("21.5"): float() reads it.
    if reg.type in ("bool", "bit"):
        return [1 if value else 0]
    raw = (float(value) - reg.offset) / reg.scale
    fmt = _STRUCT[reg.type]
    if reg.type in _INT_RANGE:
        low, high = _INT_RANGE[reg.type]
        number = round(raw)
        if not low <= number <= high:
            raise ValueError(f"{value} does not fit a {reg.type} register (raw {number})")
        data = struct.pack(">" + fmt, number)
    else:
        if reg.type == "float32" and math.isfinite(raw) and abs(raw) > 3.4028234e38:
            raise ValueError(f"{value} does not fit a float32 register")
        data = struct.pack(">" + fmt, raw)
    return _to_words(data, reg)


def with_bit(word: int, reg: ModbusRegisterConfig, on: bool) -> int:
    """Return a register with one bit set or cleared (read-modify-write of a bit in a register)."""
    assert reg.bit is not None
    value = int.from_bytes(word.to_bytes(2, reg.byte_order), "big")
    value = value | (1 << reg.bit) if on else value & ~(1 << reg.bit)
    return int.from_bytes(value.to_bytes(2, "big"), reg.byte_order)


@dataclass(frozen=True, slots=True)
class Point:
    """One tag of one device: where it is read and how it is decoded."""

    tag: str
    unit_id: int
    reg: ModbusRegisterConfig

    @property
    def width(self) -> int:
        """Return how many registers (or bits) the point spans."""
        return WORDS[self.reg.type]


@dataclass(slots=True)
class ReadBlock:
    """One read request: a contiguous range of one table of one device, and the points in it."""

    unit_id: int
    table: str
    start: int
    count: int
    points: list[Point] = field(default_factory=list)

    def values(self, data: Sequence[int]) -> list[tuple[Point, float | bool]]:
        """Decode every point of the block from the registers or bits read."""
        out = []
        for p in self.points:
            offset = p.reg.address - self.start
            out.append((p, decode(data[offset : offset + p.width], p.reg)))
        return out


def plan_reads(
    points: Sequence[Point], max_registers: int, max_bits: int, max_gap: int
) -> list[ReadBlock]:
    """Group points into as few reads as the size limits and the allowed gap permit."""
    blocks: list[ReadBlock] = []
    keyed: dict[tuple[int, str], list[Point]] = {}
    for p in points:
        keyed.setdefault((p.unit_id, p.reg.table), []).append(p)
    for (unit_id, table), group in sorted(keyed.items()):
        limit = max_bits if table in ("coil", "discrete") else max_registers
        group.sort(key=lambda p: (p.reg.address, p.width))
        block: ReadBlock | None = None
        for p in group:
            start, end = p.reg.address, p.reg.address + p.width
            if block is not None:
                block_end = block.start + block.count
                if start - block_end <= max_gap and max(end, block_end) - block.start <= limit:
                    block.count = max(end, block_end) - block.start
                    block.points.append(p)
                    continue
            block = ReadBlock(unit_id, table, start, p.width, [p])
            blocks.append(block)
    return blocks
