"""A fast decoder for the data changes of OPC UA publish responses (the collector's hot path).

asyncua decodes every monitored item into DataValue, Variant and StatusCode objects (about
22 µs an item on the reference machine), which caps a gateway near 20,000 changes a second
before anything is stored. Publish responses are decoded here instead, straight into
(client handle, value, status code, source time, server time) tuples; anything unusual
(arrays, structures, other notifications) is handed to asyncua's decoders, and a response this
decoder cannot read is decoded by asyncua whole.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from asyncua import ua
from asyncua.client.ua_session import UaSession
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import (
    extensionobject_from_binary,
    nodeid_from_binary,
    struct_from_binary,
    variant_from_binary,
)
from asyncua.ua.uaerrors import UaStructParsingError

from beffroi.collectors.opcua.items import node_id

log = logging.getLogger(__name__)

_I32 = struct.Struct("<i").unpack_from
_U32 = struct.Struct("<I").unpack_from
_I64 = struct.Struct("<q").unpack_from
_HANDLE_MASK = struct.Struct("<IB").unpack_from
_BYTE = struct.Struct("<B").unpack_from
# Scalar variant types of fixed size: type id → (unpack, size).
_FIXED = {
    1: (struct.Struct("<?").unpack_from, 1),
    2: (struct.Struct("<b").unpack_from, 1),
    3: (struct.Struct("<B").unpack_from, 1),
    4: (struct.Struct("<h").unpack_from, 2),
    5: (struct.Struct("<H").unpack_from, 2),
    6: (struct.Struct("<i").unpack_from, 4),
    7: (struct.Struct("<I").unpack_from, 4),
    8: (struct.Struct("<q").unpack_from, 8),
    9: (struct.Struct("<Q").unpack_from, 8),
    10: (struct.Struct("<f").unpack_from, 4),
    11: (struct.Struct("<d").unpack_from, 8),
}
_DATA_CHANGE = node_id(ua.ObjectIds.DataChangeNotification_Encoding_DefaultBinary)

Item = tuple[int, Any, int, datetime | None, datetime | None]


@dataclass(slots=True)
class FastDataChange:
    """A DataChangeNotification decoded into plain tuples, one per monitored item."""

    items: list[Item]


def decode_items(data: bytes | memoryview, pos: int) -> tuple[list[Item], int]:
    """Decode an array of MonitoredItemNotification; return the items and the next position."""
    (count,) = _I32(data, pos)
    pos += 4
    out: list[Item] = []
    append = out.append
    to_dt = ua.win_epoch_to_datetime
    fixed = _FIXED
    last_raw, last_dt = None, None
    for _ in range(max(count, 0)):
        handle, mask = _HANDLE_MASK(data, pos)
        pos += 5
        value = None
        if mask & 1:
            vtype = data[pos]
            kind = vtype & 0x3F
            if vtype < 0x40 and kind in fixed:
                unpack, size = fixed[kind]
                (value,) = unpack(data, pos + 1)
                pos += 1 + size
            elif vtype == 12:
                (length,) = _I32(data, pos + 1)
                pos += 5
                if length >= 0:
                    value = bytes(data[pos : pos + length]).decode("utf-8", "replace")
                    pos += length
            elif vtype == 0:
                pos += 1
            else:
                buf = Buffer(data, pos)
                value = variant_from_binary(buf).Value
                pos = buf.cur_pos
        code = 0
        if mask & 2:
            (code,) = _U32(data, pos)
            pos += 4
        source = server = None
        if mask & 4:
            (raw,) = _I64(data, pos)
            pos += 8
            # Items of one publish mostly share timestamps: reuse the datetime objects.
            if raw != last_raw:
                last_raw, last_dt = raw, to_dt(raw)
            source = last_dt
        if mask & 16:
            pos += 2
        if mask & 8:
            (raw,) = _I64(data, pos)
            pos += 8
            if raw != last_raw:
                last_raw, last_dt = raw, to_dt(raw)
            server = last_dt
        if mask & 32:
            pos += 2
        append((handle, value, code, source, server))
    return out, pos


def _uint32_array(buf: Buffer) -> list[int]:
    (n,) = _I32(buf.read(4), 0)
    return list(struct.unpack(f"<{max(n, 0)}I", buf.read(4 * max(n, 0))))


def decode_publish_response(buf: Buffer) -> ua.PublishResponse:
    """Decode a PublishResponse, its data changes as FastDataChange, the rest with asyncua."""
    nodeid_from_binary(buf)  # the response's TypeId
    header = struct_from_binary(ua.ResponseHeader, buf)
    (sub_id,) = _U32(buf.read(4), 0)
    available = _uint32_array(buf)
    (more,) = _BYTE(buf.read(1), 0)
    (seq,) = _U32(buf.read(4), 0)
    (raw_time,) = _I64(buf.read(8), 0)
    (n,) = _I32(buf.read(4), 0)
    notifications: list[Any] = []
    data = buf._data
    for _ in range(max(n, 0)):
        at = buf.cur_pos
        typeid = nodeid_from_binary(buf)
        (encoding,) = _BYTE(buf.read(1), 0)
        if typeid == _DATA_CHANGE and encoding == 1:
            (length,) = _I32(buf.read(4), 0)
            items, _ = decode_items(data, buf.cur_pos)
            buf.skip(length)  # the item array, then diagnostic infos we do not use
            notifications.append(FastDataChange(items))
        else:
            other = Buffer(data, at, len(buf) + (buf.cur_pos - at))
            notifications.append(extensionobject_from_binary(other))
            buf.skip(other.cur_pos - buf.cur_pos)
    # asyncua annotates a StatusCode's value with ua.UInt32, an int subclass it never requires.
    codes = _uint32_array(buf)
    results = [ua.StatusCode(c) for c in codes]  # type: ignore[arg-type]  # plain int is meant
    (n_diag,) = _I32(buf.read(4), 0)
    diagnostics = [struct_from_binary(ua.DiagnosticInfo, buf) for _ in range(max(n_diag, 0))]
    message = ua.NotificationMessage(
        SequenceNumber=seq,
        PublishTime=ua.win_epoch_to_datetime(raw_time),
        NotificationData=notifications,
    )
    return ua.PublishResponse(
        ResponseHeader=header,
        Parameters=ua.PublishResult(
            SubscriptionId=sub_id,
            AvailableSequenceNumbers=available,
            MoreNotifications=bool(more),
            NotificationMessage=message,
            Results=results,
            DiagnosticInfos=diagnostics,
        ),
    )


def install(session: UaSession) -> None:
    """Make an asyncua UaSession decode its publish responses with the fast decoder."""

    async def publish(acks: list[ua.SubscriptionAcknowledgement]) -> ua.PublishResponse:
        request = ua.PublishRequest()
        request.Parameters.SubscriptionAcknowledgements = acks if acks else []
        data = await session._send_request(request, timeout=0)
        at, size = data.cur_pos, len(data)
        try:
            return decode_publish_response(data)
        except Exception:
            log.debug("fast decoder declined a publish response", exc_info=True)
        try:
            return struct_from_binary(ua.PublishResponse, Buffer(data._data, at, size))
        except Exception as exc:
            # What asyncua's own publish raises, so that its publish loop carries on.
            log.exception("cannot parse a publish response")
            raise UaStructParsingError from exc

    # Replaced on this one session object, on purpose: asyncua has no hook for its decoding.
    session.publish = publish  # type: ignore[method-assign]  # a deliberate per-instance override
