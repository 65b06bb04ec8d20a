"""Domain types shared by every package: samples, qualities, tags, assets and communes."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import IntEnum
from typing import Any, Literal, overload

from beffroi.core import status_codes

Value = float | bool | str
ValueKind = Literal["float", "bool", "str"]


class Quality(IntEnum):
    """Quality of a value, from best to worst, as stored in the historian."""

    GOOD = 0
    UNCERTAIN = 1
    BAD = 2
    COMM_LOSS = 3

    @classmethod
    def from_opcua_status(cls, code: int) -> Quality:
        """Map an OPC UA StatusCode value to a quality by its severity bits."""
        severity = status_codes.severity(code)
        if severity == 0:
            return cls.GOOD
        if severity == 1:
            return cls.UNCERTAIN
        return cls.BAD

    @property
    def label(self) -> str:
        """Return the name shown to users."""
        return {0: "Good", 1: "Uncertain", 2: "Bad", 3: "CommLoss"}[int(self)]


@dataclass(slots=True)
class Sample:
    """One value of one tag at its source time."""

    tag: str
    ts: datetime
    value: Value
    quality: Quality = Quality.GOOD
    server_ts: datetime | None = None
    # The full OPC UA StatusCode (severity and sub-code, e.g. 0x808B0000 BadDeviceFailure),
    # the lingua franca of SCADA quality; Modbus and MQTT collectors use the same codes.
    status: int = 0


@dataclass(frozen=True, slots=True)
class Commune:
    """A commune of the metropolis, with its centre and weight in the equipment register."""

    id: str
    name: str
    lat: float
    lon: float
    population: int


@dataclass(frozen=True, slots=True)
class TagSpec:
    """A tag of one asset, derived from its class template."""

    name: str
    asset: str
    commune: str
    signal: str
    kind: ValueKind
    unit: str = ""
    writable: bool = False
    low: float | None = None
    high: float | None = None
    interval_s: float = 10.0


# Where an asset's record comes from, by precedence: an operator's confirmation or an
# inventory file wins over discovery, which wins over the generated demo register.
AssetSource = Literal["generated", "inventory", "discovery"]
# active: in service; to_place: found by discovery, not in the inventory yet (its place is its
# commune's centre until an operator confirms it); removed: a server no longer offers it
# (its grace period passed); retired: taken out of the inventory, its history kept.
AssetState = Literal["active", "to_place", "removed", "retired"]


@dataclass(slots=True)
class Asset:
    """A piece of public equipment placed in a commune."""

    id: str
    asset_class: str
    commune: str
    lat: float
    lon: float
    domain: str
    tags: list[TagSpec] = field(default_factory=list)
    name: str = ""
    address: str = ""
    model: str = ""
    installed: date | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    source: AssetSource = "generated"
    origin: str = ""  # the file, the operator or the collector it came from
    state: AssetState = "active"

    def tag(self, signal: str) -> str:
        """Return the full tag name of one of this asset's signals."""
        return f"{self.commune}/{self.id}/{signal}"


def tag_name(commune: str, asset: str, signal: str) -> str:
    """Build a hierarchical tag name `commune/asset/signal`."""
    return f"{commune}/{asset}/{signal}"


@overload
def naive_utc(ts: datetime) -> datetime: ...
@overload
def naive_utc(ts: None) -> None: ...
def naive_utc(ts: datetime | None) -> datetime | None:
    """Return the storage form of a time: naive UTC (naive input is taken as UTC already)."""
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(UTC).replace(tzinfo=None)


def aware_utc(ts: Any) -> Any:
    """Return a stored naive UTC time as an aware datetime (None and NaT give None)."""
    if ts is None or ts != ts:  # NaT is the one time unequal to itself
        return None
    to_py = getattr(ts, "to_pydatetime", None)
    if to_py is not None:
        ts = to_py()
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts


def utcnow() -> datetime:
    """Return the current time, timezone-aware UTC."""
    return datetime.now(UTC)


class WriteStatus(IntEnum):
    """Outcome of a setpoint write to equipment."""

    CONFIRMED = 0
    REJECTED = 1
    UNCONFIRMED = 2
    REFUSED = 3


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What became of a setpoint write: confirmed by read-back, rejected, unconfirmed or refused."""

    tag: str
    status: WriteStatus
    value: Value | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        """Return True when the device confirmed the new value."""
        return self.status is WriteStatus.CONFIRMED
