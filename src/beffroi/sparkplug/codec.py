"""Sparkplug B topics and payloads, and how Beffroi's tags and samples travel as metrics.

Payloads are the protobuf schema of the Sparkplug 3.0 specification (`sparkplug_b.proto`,
Eclipse Tahu's field numbers, read by any Sparkplug B peer) through Google's `protobuf`. A
metric's name is the tag name (`commune/asset/signal`); births give each metric an alias that
data messages use instead of the name. Quality travels as metric properties: `StatusCode`
(the OPC UA status code, UInt32) and `Quality` (Int32 192 good, 500 stale, 0 bad, the
convention SCADA hosts such as Ignition read), sent only when the value is not good.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from google.protobuf.message import DecodeError

from beffroi.core import status_codes
from beffroi.core.model import Quality, Sample, TagSpec, Value, WriteResult, WriteStatus
from beffroi.sparkplug import sparkplug_b_pb2 as pb

NAMESPACE = "spBv1.0"
BD_SEQ = "bdSeq"
REBIRTH = "Node Control/Rebirth"
# Properties of a metric in births: what a host needs to show and check a value.
UNIT, LOW, HIGH, WRITABLE = "engUnit", "engLow", "engHigh", "Writable"
STATUS, QUALITY = "StatusCode", "Quality"
COMMAND_RESULT = "Beffroi/CommandResult"  # on the answer to a refused command: why
QUALITY_GOOD, QUALITY_BAD, QUALITY_STALE = 192, 0, 500

# Sparkplug datatypes (Payload.DataType).
INT8, INT16, INT32, INT64 = 1, 2, 3, 4
UINT8, UINT16, UINT32, UINT64 = 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT, UUID = 9, 10, 11, 12, 13, 14, 15
_KIND_TYPE = {"float": DOUBLE, "bool": BOOLEAN, "str": STRING}
_SIGNED_BITS = {INT8: 8, INT16: 16, INT32: 32, INT64: 64}
# The value fields a datatype may use (numbers: any numeric field, as some peers widen).
_NUMBER_FIELDS = frozenset({"int_value", "long_value", "float_value", "double_value"})
_FIELDS_OF = {
    BOOLEAN: frozenset({"boolean_value"}),
    STRING: frozenset({"string_value"}),
    TEXT: frozenset({"string_value"}),
    UUID: frozenset({"string_value"}),
}


class Malformed(ValueError):
    """A Sparkplug message that cannot be read: counted and skipped by its reader."""


class Kind(StrEnum):
    """Sparkplug message types."""

    NBIRTH = "NBIRTH"
    NDEATH = "NDEATH"
    DBIRTH = "DBIRTH"
    DDEATH = "DDEATH"
    NDATA = "NDATA"
    DDATA = "DDATA"
    NCMD = "NCMD"
    DCMD = "DCMD"
    STATE = "STATE"


@dataclass(frozen=True, slots=True)
class Topic:
    """A Sparkplug topic: `spBv1.0/<group>/<kind>/<node>[/<device>]`, or a host's STATE."""

    group: str
    kind: Kind
    node: str
    device: str | None = None

    def __str__(self) -> str:
        if self.kind is Kind.STATE:
            return f"{NAMESPACE}/STATE/{self.node}"
        tail = f"/{self.device}" if self.device else ""
        return f"{NAMESPACE}/{self.group}/{self.kind}/{self.node}{tail}"

    @classmethod
    def parse(cls, topic: str) -> Topic:
        """Read a topic; Malformed when it is not Sparkplug B's."""
        parts = topic.split("/")
        if len(parts) == 3 and parts[0] == NAMESPACE and parts[1] == "STATE" and parts[2]:
            return cls("", Kind.STATE, parts[2])
        if len(parts) not in (4, 5) or parts[0] != NAMESPACE or not all(parts[1:]):
            raise Malformed(f"not a Sparkplug B topic: {topic!r}")
        try:
            kind = Kind(parts[2])
        except ValueError:
            raise Malformed(f"unknown message type {parts[2]!r}") from None
        device = parts[4] if len(parts) == 5 else None
        if (device is None) != kind.startswith("N"):
            raise Malformed(f"{kind} {'needs' if device is None else 'has no'} device: {topic!r}")
        return cls(parts[1], kind, parts[3], device)


def host_topic(host_id: str) -> str:
    """Return the STATE topic of a primary host."""
    return f"{NAMESPACE}/STATE/{host_id}"


def ms(ts: datetime) -> int:
    """Return a time as Sparkplug's milliseconds since the epoch (UTC)."""
    return int(ts.timestamp() * 1000)


def from_ms(value: int) -> datetime:
    """Return Sparkplug's milliseconds since the epoch as an aware UTC time."""
    return datetime.fromtimestamp(value / 1000, UTC)


def datatype(spec: TagSpec) -> int:
    """Return the Sparkplug datatype a tag travels as."""
    return _KIND_TYPE[spec.kind]


def _set_value(metric: pb.Payload.Metric, dtype: int, value: Value) -> None:
    """Set a metric's value for its datatype (a value that is not finite goes as null)."""
    if dtype == BOOLEAN:
        metric.boolean_value = bool(value)
    elif dtype == STRING:
        metric.string_value = str(value)
    elif isinstance(value, bool | int | float) and math.isfinite(value):
        metric.double_value = float(value)
    else:
        metric.is_null = True


def _quality(metric: pb.Payload.Metric, sample: Sample) -> None:
    """Add the properties of a value that is not good: its status code and Quality."""
    if sample.quality is Quality.GOOD and not sample.status:
        return
    status = sample.status or _STATUS_OF[sample.quality]
    props = metric.properties
    props.keys.extend((STATUS, QUALITY))
    code = props.values.add()
    code.type, code.int_value = UINT32, status
    quality = props.values.add()
    quality.type = INT32
    stale = sample.quality is Quality.COMM_LOSS or sample.quality is Quality.UNCERTAIN
    quality.int_value = (
        QUALITY_GOOD
        if sample.quality is Quality.GOOD
        else (QUALITY_STALE if stale else QUALITY_BAD)
    )


_STATUS_OF = {
    Quality.GOOD: 0,
    Quality.UNCERTAIN: 0x40000000,
    Quality.BAD: 0x80000000,
    Quality.COMM_LOSS: status_codes.BadNoCommunication,
}


def _prop(props: pb.Payload.PropertySet, key: str, dtype: int) -> pb.Payload.PropertyValue:
    props.keys.append(key)
    value = props.values.add()
    value.type = dtype
    return value


def birth(
    specs: Sequence[tuple[int, TagSpec]],
    latest: dict[str, Sample],
    seq: int,
    now: datetime,
    *,
    bd_seq: int | None = None,
) -> bytes:
    """Return a birth payload: each metric's name, alias, datatype, properties, last value.

    An NBIRTH (`bd_seq` given) also carries bdSeq and the rebirth control, as the
    specification requires; a DBIRTH carries the metrics of its device.
    """
    payload = pb.Payload(timestamp=ms(now), seq=seq)
    if bd_seq is not None:
        m = payload.metrics.add(name=BD_SEQ, datatype=INT64, timestamp=ms(now))
        m.long_value = bd_seq
        m = payload.metrics.add(name=REBIRTH, datatype=BOOLEAN, timestamp=ms(now))
        m.boolean_value = False
    for alias, spec in specs:
        dtype = datatype(spec)
        m = payload.metrics.add(name=spec.name, alias=alias, datatype=dtype)
        props = m.properties
        if spec.unit:
            _prop(props, UNIT, STRING).string_value = spec.unit
        if spec.low is not None:
            _prop(props, LOW, DOUBLE).double_value = spec.low
        if spec.high is not None:
            _prop(props, HIGH, DOUBLE).double_value = spec.high
        _prop(props, WRITABLE, BOOLEAN).boolean_value = spec.writable
        last = latest.get(spec.name)
        if last is None:
            m.is_null = True
            m.timestamp = ms(now)
            continue
        m.timestamp = ms(last.ts)
        _set_value(m, dtype, last.value)
        if last.quality is not Quality.GOOD or last.status:
            extra = pb.Payload.Metric()
            _quality(extra, last)
            m.properties.keys.extend(extra.properties.keys)
            m.properties.values.extend(extra.properties.values)
    return payload.SerializeToString()


def death(bd_seq: int, now: datetime) -> bytes:
    """Return an NDEATH payload (the MQTT will): the bdSeq of the session it ends."""
    payload = pb.Payload(timestamp=ms(now))
    m = payload.metrics.add(name=BD_SEQ, datatype=INT64)
    m.long_value = bd_seq
    return payload.SerializeToString()


def data(
    samples: Iterable[tuple[int, int, Sample]], seq: int, now: datetime, *, historical: bool
) -> bytes:
    """Return a data payload of (alias, datatype, sample): by alias, source time, quality."""
    payload = pb.Payload(timestamp=ms(now), seq=seq)
    add = payload.metrics.add
    for alias, dtype, sample in samples:
        m = add(alias=alias, timestamp=ms(sample.ts))
        if historical:
            m.is_historical = True
        _set_value(m, dtype, sample.value)
        if sample.quality is not Quality.GOOD or sample.status:
            _quality(m, sample)
    return payload.SerializeToString()


def command(metrics: Sequence[tuple[str, int | None, int, Value]], now: datetime) -> bytes:
    """Return an NCMD/DCMD payload of (name, alias, datatype, value)."""
    payload = pb.Payload(timestamp=ms(now))
    for name, alias, dtype, value in metrics:
        m = payload.metrics.add(name=name, datatype=dtype, timestamp=ms(now))
        if alias is not None:
            m.alias = alias
        _set_value(m, dtype, value)
    return payload.SerializeToString()


def decode(raw: bytes) -> pb.Payload:
    """Parse a payload; Malformed when it is not a Sparkplug B protobuf."""
    try:
        return pb.Payload.FromString(raw)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise Malformed(f"not a Sparkplug B payload ({exc})") from None


def value_of(metric: pb.Payload.Metric, dtype: int) -> Value | None:
    """Return a metric's value as Beffroi keeps values (numbers as floats), None if null."""
    if metric.is_null:
        return None
    which = metric.WhichOneof("value")
    if which is None:
        return None
    if which in ("dataset_value", "template_value", "extension_value", "bytes_value"):
        raise Malformed(f"metric {metric.name or metric.alias}: {which} is not a tag value")
    raw = getattr(metric, which)
    wanted = _FIELDS_OF.get(dtype, _NUMBER_FIELDS)
    if which not in wanted:
        raise Malformed(f"metric {metric.name or metric.alias}: {which} for datatype {dtype}")
    if which == "boolean_value":
        return bool(raw)
    if which == "string_value":
        return str(raw)
    bits = _SIGNED_BITS.get(dtype)
    if bits is not None and which in ("int_value", "long_value"):
        # Signed integers travel as unsigned two's complement (spec 3.0, 6.4.16).
        raw = raw - (1 << bits) if raw >= 1 << (bits - 1) else raw
    return float(raw)


def quality_of(metric: pb.Payload.Metric) -> tuple[Quality, int]:
    """Return a metric's quality and OPC UA status code from its properties (good if none)."""
    if not metric.HasField("properties"):
        return Quality.GOOD, 0
    props = dict(zip(metric.properties.keys, metric.properties.values, strict=False))
    status = props.get(STATUS)
    if status is not None and status.WhichOneof("value") in ("int_value", "long_value"):
        code = int(getattr(status, status.WhichOneof("value"))) & 0xFFFFFFFF
        if code == status_codes.BadNoCommunication:
            return Quality.COMM_LOSS, code
        return Quality.from_opcua_status(code), code
    quality = props.get(QUALITY)
    if quality is not None and quality.WhichOneof("value") == "int_value":
        q = struct.unpack("<i", struct.pack("<I", quality.int_value & 0xFFFFFFFF))[0]
        if q == QUALITY_GOOD:
            return Quality.GOOD, 0
        if q == QUALITY_STALE:
            return Quality.UNCERTAIN, _STATUS_OF[Quality.UNCERTAIN]
        return Quality.BAD, _STATUS_OF[Quality.BAD]
    return Quality.GOOD, 0


def property_text(metric: pb.Payload.Metric, key: str) -> str | None:
    """Return a string property of a metric, or None."""
    for k, v in zip(metric.properties.keys, metric.properties.values, strict=False):
        if k == key and v.WhichOneof("value") == "string_value":
            return str(v.string_value)
    return None


def answer(alias: int, dtype: int, sample: Sample, outcome: str, seq: int) -> bytes:
    """Return the DDATA that answers a command: the tag's value now, and the outcome."""
    payload = pb.Payload(timestamp=ms(sample.ts), seq=seq)
    m = payload.metrics.add(alias=alias, timestamp=ms(sample.ts))
    _set_value(m, dtype, sample.value)
    if sample.quality is not Quality.GOOD or sample.status:
        _quality(m, sample)
    _prop(m.properties, COMMAND_RESULT, STRING).string_value = outcome
    return payload.SerializeToString()


def outcome_text(result: WriteResult) -> str:
    """Return a write's outcome as a command answer carries it: `ok` or `<status>: why`."""
    if result.ok:
        return "ok"
    return f"{result.status.name.lower()}: {result.detail}"


def outcome_status(text: str) -> tuple[WriteStatus, str]:
    """Return the write status and detail of a command answer's outcome."""
    if text == "ok":
        return WriteStatus.CONFIRMED, ""
    name, _, detail = text.partition(": ")
    try:
        return WriteStatus[name.upper()], detail
    except KeyError:
        return WriteStatus.REJECTED, text
