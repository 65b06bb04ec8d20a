"""Turn OPC UA data values into Samples: subscription publish responses and polled reads."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from beffroi.collectors.opcua.decoder import FastDataChange, Item
from beffroi.collectors.opcua.items import chunks
from beffroi.core.model import Quality, Sample, utcnow

log = logging.getLogger(__name__)

_QUALITY = (Quality.GOOD, Quality.UNCERTAIN, Quality.BAD, Quality.BAD)


def samples_from(pairs: Sequence[tuple[str, ua.DataValue]]) -> list[Sample]:
    """Convert (tag, DataValue) pairs: quality and sub-code from the status, both timestamps."""
    out: list[Sample] = []
    append = out.append
    nan = float("nan")
    now: datetime | None = None
    for tag, dv in pairs:
        sc = dv.StatusCode
        code = sc.value if sc is not None else 0
        quality = _QUALITY[code >> 30]
        variant = dv.Value
        value = variant.Value if variant is not None else None
        if quality is Quality.BAD or value is None:
            # A Bad value is stored as Bad (NaN), never replaced by the last good one.
            value = value if isinstance(value, str) else nan
        server_ts = dv.ServerTimestamp
        source_ts: datetime | None = dv.SourceTimestamp or server_ts
        if source_ts is None:
            source_ts = now = now or utcnow()
        append(Sample(tag, source_ts, value, quality, server_ts, code))
    return out


def samples_from_items(items: Sequence[Item], tag_of: dict[int, str]) -> list[Sample]:
    """Convert decoded monitored items (see decoder.py) into Samples: the hot path."""
    out: list[Sample] = []
    append = out.append
    nan = float("nan")
    good = Quality.GOOD
    now: datetime | None = None
    for handle, value, code, source_ts, server_ts in items:
        tag = tag_of.get(handle)
        if tag is None:
            continue
        quality = good if code == 0 else _QUALITY[code >> 30]
        if value is None or (quality is Quality.BAD and not isinstance(value, str)):
            value = nan  # a Bad value is stored as Bad, never replaced by the last good one
        if source_ts is None:
            source_ts = server_ts or (now := now or utcnow())
        append(Sample(tag, source_ts, value, quality, server_ts, code))
    return out


class BatchSubscription(Subscription):
    """A subscription that turns each publish response into one Sample batch.

    asyncua's handler mode starts a task per value change; at tens of thousands of changes a
    second that is the bottleneck, so the whole notification message is converted at once.
    """

    def __init__(
        self,
        client: Client,
        params: ua.CreateSubscriptionParameters,
        on_samples: Callable[[list[Sample]], None],
        on_status: Callable[[ua.StatusCode], None],
    ):
        super().__init__(client.uaclient.session, params, handler=None, queue_maxsize=1)
        self._on_samples = on_samples
        self._on_status = on_status
        self.tag_of: dict[int, str] = {}
        # Watched for staleness from the start, not only after the first publish response.
        self.last_publish_at = time.monotonic()

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        """Convert a publish response's data changes into Samples for the sink."""
        self.last_publish_at = time.monotonic()
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return
        self.last_sequence_number = int(publish_result.NotificationMessage.SequenceNumber)
        tag_of = self.tag_of
        for notif in data:
            if isinstance(notif, FastDataChange):
                self._on_samples(samples_from_items(notif.items, tag_of))
            elif isinstance(notif, ua.DataChangeNotification):
                pairs = [
                    (tag_of[item.ClientHandle], item.Value)
                    for item in notif.MonitoredItems
                    if item.ClientHandle in tag_of
                ]
                self._on_samples(samples_from(pairs))
            elif isinstance(notif, ua.StatusChangeNotification):
                self._on_status(notif.Status)


class Poller:
    """Read tags at their sampling interval, for servers without subscriptions.

    Like a subscription, only changes of status or value (beyond the deadband) are reported.
    """

    def __init__(
        self,
        client: Client,
        groups: dict[float, list[tuple[str, ua.NodeId, float | None]]],
        read_chunk: int,
        on_samples: Callable[[list[Sample]], None],
    ):
        self._client = client
        self._groups = groups
        self._read_chunk = read_chunk
        self._on_samples = on_samples
        self._last: dict[str, tuple[object, int]] = {}

    async def run(self) -> None:
        """Poll every group at its interval until cancelled or a read fails (which raises)."""
        async with asyncio.TaskGroup() as tg:
            for interval_ms, items in self._groups.items():
                tg.create_task(self._poll(max(interval_ms, 10.0) / 1000.0, items))

    async def _poll(self, period: float, items: list[tuple[str, ua.NodeId, float | None]]) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        parts = chunks(items, self._read_chunk)
        while True:
            for part in parts:
                params = ua.ReadParameters()
                params.TimestampsToReturn = ua.TimestampsToReturn.Both
                params.NodesToRead = [
                    ua.ReadValueId(NodeId=nid, AttributeId=ua.AttributeIds.Value)
                    for _, nid, _ in part
                ]
                results = await self._client.uaclient.read(params)
                changed = [
                    (tag, dv)
                    for (tag, _, deadband), dv in zip(part, results, strict=True)
                    if self._changed(tag, dv, deadband)
                ]
                if changed:
                    self._on_samples(samples_from(changed))
            # An overrun delays the next poll instead of bunching reads.
            next_at = max(next_at + period, loop.time())
            await asyncio.sleep(next_at - loop.time())

    def _changed(self, tag: str, dv: ua.DataValue, deadband: float | None) -> bool:
        code = dv.StatusCode.value if dv.StatusCode is not None else 0
        value = dv.Value.Value if dv.Value is not None else None
        prev = self._last.get(tag)
        if prev is not None and prev[1] == code:
            old = prev[0]
            if old == value:
                return False
            if (
                deadband
                and isinstance(value, float)
                and isinstance(old, float)
                and not math.isnan(value)
                and abs(value - old) <= deadband
            ):
                return False
        self._last[tag] = (value, code)
        return True
