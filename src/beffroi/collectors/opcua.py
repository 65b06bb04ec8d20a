"""OPC UA collector: subscriptions in chunks, quality from status codes, reconnect with backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Sequence

from asyncua import Client, ua
from asyncua.common.subscription import Subscription

from beffroi.collectors.base import Collector, Sink
from beffroi.core.config import OpcUaCollectorConfig
from beffroi.core.model import Quality, Sample, TagSpec, Value, WriteResult, WriteStatus, utcnow

log = logging.getLogger(__name__)

_VARIANT = {
    "float": ua.VariantType.Double,
    "bool": ua.VariantType.Boolean,
    "str": ua.VariantType.String,
}
_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError)


class _BatchSubscription(Subscription):
    """A subscription that turns each publish response into one Sample batch.

    asyncua's handler mode starts a task per value change; at tens of thousands of changes a
    second that is the bottleneck, so the whole notification message is converted at once.
    """

    def __init__(
        self, client: Client, params: ua.CreateSubscriptionParameters, owner: OpcUaCollector
    ):
        super().__init__(client.uaclient.session, params, handler=owner)
        self._owner = owner
        self._tag_of: dict[int, str] = {}

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        """Convert a publish response's data changes into Samples for the sink."""
        self.last_publish_at = time.monotonic()
        data = publish_result.NotificationMessage.NotificationData
        if not data:
            return
        self.last_sequence_number = int(publish_result.NotificationMessage.SequenceNumber)
        for notif in data:
            if isinstance(notif, ua.DataChangeNotification):
                self._owner._receive(self._samples(notif.MonitoredItems))
            elif isinstance(notif, ua.StatusChangeNotification):
                self._owner._subscription_status(notif.Status)

    def _samples(self, items: Sequence[ua.MonitoredItemNotification]) -> list[Sample]:
        out = []
        tag_of = self._tag_of
        for item in items:
            tag = tag_of.get(item.ClientHandle)
            if tag is None:
                known = self._monitored_items.get(item.ClientHandle)
                if known is None or known.node is None:
                    continue
                tag = tag_of[item.ClientHandle] = known.node.nodeid.Identifier
            dv = item.Value
            code = dv.StatusCode.value if dv.StatusCode is not None else 0
            quality = Quality.from_opcua_status(code)
            value = dv.Value.Value if dv.Value is not None else None
            if value is None or quality is Quality.BAD:
                # A Bad value is stored as Bad, never replaced by the last good one.
                value = float("nan") if not isinstance(value, str) else value
            server_ts = dv.ServerTimestamp
            source_ts = dv.SourceTimestamp or server_ts or utcnow()
            out.append(Sample(tag, source_ts, value, quality, server_ts))
        return out


class OpcUaCollector(Collector):
    """Subscribe to tags on one OPC UA server; node ids are `ns=<namespace>;s=<tag>`."""

    protocol = "opcua"

    def __init__(self, config: OpcUaCollectorConfig, tags: Sequence[TagSpec], sink: Sink):
        super().__init__(config.name, tags, sink)
        self.config = config
        self._client: Client | None = None
        self._ns: int | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self.reconnects = 0

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start the connect, subscribe and watch loop in the background."""
        self._task = asyncio.create_task(self._run(), name=f"opcua:{self.name}")
        stack.push_async_callback(self._stop)

    async def wait_connected(self) -> None:
        """Wait until the subscription is in place (wrap in asyncio.timeout)."""
        await self._ready.wait()

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()

    async def _run(self) -> None:
        delay = self.config.reconnect_min_s
        first = True
        while True:
            try:
                await self._connect_and_subscribe()
                delay = self.config.reconnect_min_s
                first = False
                await self._lost.wait()
                log.warning("%s: connection to %s lost", self.name, self.config.url)
                self.last_error = "connection lost"
            except asyncio.CancelledError:
                raise
            except _CONNECTION_ERRORS as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("%s: cannot reach %s: %s", self.name, self.config.url, self.last_error)
            was_connected = self.connected
            self._ready.clear()
            await self._disconnect()
            if was_connected or first:
                self._publish_status(False, self.last_error)
                self._mark_comm_loss()
                first = False
            # Jitter spreads the reconnects of many gateways after a server restart.
            await asyncio.sleep(delay * random.uniform(0.8, 1.2))
            delay = min(delay * 2, self.config.reconnect_max_s)
            self.reconnects += 1

    async def _connect_and_subscribe(self) -> None:
        cfg = self.config
        self._lost.clear()
        client = Client(
            cfg.url, timeout=cfg.timeout_s, watchdog_intervall=1.0, auto_reconnect=False
        )
        client.connection_lost_callback = self._on_connection_lost
        self._client = client
        await client.connect()
        self._ns = await client.get_namespace_index(cfg.namespace)
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cfg.publishing_interval_ms,
            RequestedLifetimeCount=10_000,
            RequestedMaxKeepAliveCount=client.get_keepalive_count(cfg.publishing_interval_ms),
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = _BatchSubscription(client, params, self)
        await sub.init()
        nodes = [client.get_node(ua.NodeId(tag, self._ns)) for tag in self.tags]
        failed = 0
        for i in range(0, len(nodes), cfg.chunk_size):
            chunk = nodes[i : i + cfg.chunk_size]
            handles = await sub.subscribe_data_change(
                chunk, queuesize=10, sampling_interval=float(cfg.publishing_interval_ms)
            )
            for node, handle in zip(chunk, handles, strict=True):
                if isinstance(handle, ua.StatusCode):
                    failed += 1
                    log.debug("%s: cannot monitor %s: %s", self.name, node.nodeid, handle)
        if failed:
            self.last_error = f"{failed} of {len(nodes)} tags could not be monitored"
            log.warning("%s: %s", self.name, self.last_error)
        log.info("%s: subscribed to %d tags on %s", self.name, len(nodes) - failed, cfg.url)
        self._publish_status(True)
        self._ready.set()

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost.set()

    def _subscription_status(self, status: ua.StatusCode) -> None:
        log.warning("%s: subscription status %s", self.name, status)
        if status.is_bad():
            self._lost.set()

    def _receive(self, batch: list[Sample]) -> None:
        if batch:
            self.samples_received += len(batch)
            self.sink(batch)

    async def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout=2.0)

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a setpoint, then read it back to confirm the device holds the new value."""
        refused = self.check_write(tag, value)
        if refused is not None:
            return refused
        client = self._client
        if client is None or not self.connected or self._ns is None:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "not connected")
        spec = self.tags[tag]
        typed: Value = float(value) if spec.kind == "float" else value
        node = client.get_node(ua.NodeId(tag, self._ns))
        try:
            await node.write_value(ua.DataValue(ua.Variant(typed, _VARIANT[spec.kind])))
        except ua.UaStatusCodeError as exc:
            return WriteResult(tag, WriteStatus.REJECTED, value, f"device refused: {exc}")
        except _CONNECTION_ERRORS as exc:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, f"no answer: {exc}")
        try:
            back = await node.read_value()
        except _CONNECTION_ERRORS as exc:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, f"read-back failed: {exc}")
        same = back == typed or (
            isinstance(back, float) and isinstance(typed, float) and math.isclose(back, typed)
        )
        if same:
            return WriteResult(tag, WriteStatus.CONFIRMED, back)
        return WriteResult(tag, WriteStatus.UNCONFIRMED, back, f"read back {back!r}")
