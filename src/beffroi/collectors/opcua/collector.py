"""OPC UA collector: subscriptions (or polling) in chunks, security, discovery, reconnects."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

from asyncua import Client, ua
from asyncua.ua.status_codes import get_name_and_doc

from beffroi.collectors.base import Backoff, CollectorBase
from beffroi.collectors.opcua import decoder, security
from beffroi.collectors.opcua.config import OpcUaCollectorConfig
from beffroi.collectors.opcua.discovery import discover, resolve_root
from beffroi.collectors.opcua.items import (
    OperationLimits,
    absolute_deadband,
    data_change_filter,
    in_chunks,
    item_settings,
    monitored_item_request,
    node_id,
    read_eu_ranges,
    read_limits,
)
from beffroi.collectors.opcua.samples import BatchSubscription, Poller
from beffroi.core import status_codes
from beffroi.core.errors import BeffroiError, MissingCredentials
from beffroi.core.model import Quality, Sample, TagSpec, Value, WriteResult, WriteStatus, utcnow
from beffroi.core.register import Register
from beffroi.core.seams import Sink
from beffroi.core.site import AssetClassConfig, Site

log = logging.getLogger(__name__)

_VARIANT = {
    "float": ua.VariantType.Double,
    "bool": ua.VariantType.Boolean,
    "str": ua.VariantType.String,
}
_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, ConnectionError, ua.UaError)
_RETRYABLE = (*_CONNECTION_ERRORS, security.UntrustedServerCertificate, MissingCredentials)
STALE_MARGIN = 3.0  # keep-alive periods without any publish response before the session is dead
# A node the server does not offer (any more): the tag is reported by name, once.
_GONE = frozenset({status_codes.BadNodeIdUnknown, status_codes.BadNodeIdInvalid})
GONE_NAMED = 20  # tags named one by one in the log when many go at once; the rest are counted


class _LinkDownTraceback(logging.Filter):
    """Keep asyncua's traceback of a publish loop broken by the lost link out of the log.

    asyncua logs it at ERROR, with a traceback, at every outage; the collector says the same
    once, by name ("connection to … lost"), and reconnects. Other failures still show.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Return False for the publish loop's failure caused by the connection."""
        exc = record.exc_info[1] if record.exc_info else None
        expected = str(record.msg).startswith("Publish iteration crashed")
        return not (expected and isinstance(exc, _CONNECTION_ERRORS))


logging.getLogger("asyncua.client.ua_session.UaSession").addFilter(_LinkDownTraceback())


class OpcUaCollector(CollectorBase[OpcUaCollectorConfig]):
    """Collect tags from one OPC UA server; node ids are `ns=<namespace>;s=<tag>` or discovered."""

    protocol = "opcua"

    def __init__(
        self,
        config: OpcUaCollectorConfig,
        tags: Sequence[TagSpec],
        sink: Sink,
        *,
        asset_classes: dict[str, AssetClassConfig] | None = None,
        communes: Sequence[str] = (),
    ):
        super().__init__(config, tags, sink)
        self._asset_classes = asset_classes or {}
        self._communes = list(communes)
        self._client: Client | None = None
        self._ns: int | None = None
        self._nodes: dict[str, ua.NodeId] = {}
        self._lost = asyncio.Event()
        self._work: asyncio.Task[None] | None = None
        self._sub: BatchSubscription | None = None
        self.pki = security.Pki(Path(config.pki_dir), config.name)
        self.limits = OperationLimits()
        self.monitored = 0
        self.create_calls = 0
        self.missing: dict[str, str] = {}  # tag → why the server does not offer it (status name)
        self.reconnects = 0

    @classmethod
    def from_config(
        cls, config: OpcUaCollectorConfig, site: Site, register: Register, sink: Sink
    ) -> Self:
        """Build the collector with its register tags, or the templates when it discovers them."""
        config = config.model_copy(update={"pki_dir": str(site.resolve(config.pki_dir))})
        if config.discovery is not None:
            communes = config.communes or site.commune_ids()
            return cls(config, [], sink, asset_classes=dict(site.asset_classes), communes=communes)
        return super().from_config(config, site, register, sink)

    async def _run(self) -> None:
        backoff = Backoff(self.config.reconnect_min_s, self.config.reconnect_max_s)
        while True:
            try:
                await self._connect()
                backoff.reset()
                await self._watch()
                error = "connection lost"
                log.warning("%s: connection to %s lost", self.name, self.config.url)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Whatever happens, the collector reconnects: it never dies silently.
                error = _describe(exc)
                if self.connected or not self._outage_marked or error != self.last_error:
                    log.warning("%s: cannot collect from %s: %s", self.name, self.config.url, error)
                if not isinstance(_first(exc), _RETRYABLE):
                    log.error("%s: unexpected error", self.name, exc_info=exc)
            self._ready.clear()
            await self._disconnect()
            self._went_down(error)
            await asyncio.sleep(backoff.delay())
            self.reconnects += 1

    async def _watch(self) -> None:
        """Return when the connection is lost, the polling fails or the subscription goes stale."""
        while not self._lost.is_set():
            if self._work is not None and self._work.done():
                exc = None if self._work.cancelled() else self._work.exception()
                if exc is not None:
                    raise exc
                return
            if self._sub is not None and self._sub.is_stale(STALE_MARGIN):
                log.warning("%s: no publish response for too long: session lost", self.name)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), 0.5)

    async def _connect(self) -> None:
        cfg = self.config
        self._lost.clear()
        # The watchdog's probe times out after its interval: at 1 s (asyncua's default) a server
        # busy creating thousands of items, or this loop decoding a big publish response, reads
        # as a lost connection and starts a reconnect storm. Give it the request timeout.
        client = Client(cfg.url, timeout=cfg.timeout_s, watchdog_intervall=max(cfg.timeout_s, 1.0))
        client.application_uri = f"urn:beffroi:collector:{cfg.name}"
        client.name = client.description = f"Beffroi collector {cfg.name}"
        client.connection_lost_callback = self._on_connection_lost
        self._client = client
        creds = cfg.login()
        if creds is not None:
            client.set_user(creds[0])
            client.set_password(creds[1])
        if cfg.security_policy != "None":
            await security.secure(
                client,
                self.pki,
                cfg.security_policy,
                cfg.security_mode,
                cfg.url,
                cfg.trust_on_first_use,
            )
        await client.connect()
        decoder.install(client.uaclient.session)
        self._ns = await client.get_namespace_index(cfg.namespace)
        self.limits = await read_limits(client)
        if cfg.discovery is not None:
            await self._discover(client)
        else:
            self._nodes = {tag: node_id(tag, self._ns) for tag in self.tags}
        if cfg.mode == "poll":
            await self._start_polling(client)
        else:
            await self._subscribe(client)
        self._went_up()
        self._ready.set()

    async def _discover(self, client: Client) -> None:
        cfg = self.config
        assert cfg.discovery is not None and self._ns is not None
        root = await resolve_root(client, cfg.discovery.root, self._ns)
        found = await discover(
            client,
            root,
            self._asset_classes,
            self._communes,
            cfg.classes,
            self.limits,
            cfg.chunk_size,
        )
        self.tags = {t.name: t for t in found.tags}
        self._nodes = found.nodes
        skipped = ", ".join(f"{n} {why}" for why, n in found.skipped.items()) or "none"
        log.info(
            "%s: discovered %d tags under %s (skipped: %s)",
            self.name,
            len(self.tags),
            cfg.discovery.root,
            skipped,
        )

    async def _deadbands(self, client: Client) -> dict[str, float | None]:
        settings = item_settings(list(self.tags.values()), self.config)
        percent = {t: self._nodes[t] for t, s in settings.items() if s.deadband_type == "percent"}
        ranges = (
            await read_eu_ranges(client, percent, self.limits, self.config.chunk_size)
            if percent
            else {}
        )
        out: dict[str, float | None] = {}
        for tag, s in settings.items():
            out[tag] = absolute_deadband(s, self.tags[tag], ranges.get(tag))
            if s.deadband_type == "percent" and out[tag] is None:
                log.warning("%s: %s has no EURange (nor low/high): no deadband", self.name, tag)
        return out

    async def _subscribe(self, client: Client) -> None:
        cfg = self.config
        # Keep-alives every keepalive_s even when nothing changes, so that a subscription the
        # server dropped (session timeout, restart behind a proxy) is noticed as stale.
        keepalive = max(1, math.ceil(cfg.keepalive_s * 1000 / cfg.publishing_interval_ms))
        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=cfg.publishing_interval_ms,
            RequestedLifetimeCount=max(10_000, 3 * keepalive),
            RequestedMaxKeepAliveCount=keepalive,
            MaxNotificationsPerPublish=0,
            PublishingEnabled=True,
            Priority=0,
        )
        sub = BatchSubscription(client, params, self._receive, self._subscription_status)
        await sub.init()
        self._sub = sub
        settings = item_settings(list(self.tags.values()), cfg)
        deadbands = await self._deadbands(client)
        requests: list[ua.MonitoredItemCreateRequest] = []
        for handle, tag in enumerate(self.tags, start=1):
            sub.tag_of[handle] = tag
            flt = data_change_filter(deadbands[tag])
            requests.append(monitored_item_request(self._nodes[tag], handle, settings[tag], flt))
        size = self.limits.chunk(self.limits.monitored_items_per_call, cfg.chunk_size)
        self.create_calls = 0

        async def create(part: list[ua.MonitoredItemCreateRequest]) -> list[int | ua.StatusCode]:
            self.create_calls += 1
            return await sub.create_monitored_items(part)

        results = await in_chunks(requests, size, create, "monitored items")
        failed = [
            (r.ItemToMonitor.NodeId, res)
            for r, res in zip(requests, results, strict=True)
            if isinstance(res, ua.StatusCode)
        ]
        tag_of_node = {node: tag for tag, node in self._nodes.items()}
        refused = {tag_of_node[nodeid]: int(status.value) for nodeid, status in failed}
        self._not_offered(refused)
        back = sorted(t for t in self.missing if t not in refused)
        if back:
            log.info("%s: offered again: %s", self.name, _named(back))
            for tag in back:
                del self.missing[tag]
        self.monitored = len(requests) - len(failed)
        if failed:
            self.last_error = f"{len(failed)} of {len(requests)} tags could not be monitored"
            log.warning("%s: %s", self.name, self.last_error)
        log.info(
            "%s: monitoring %d tags on %s in %d calls",
            self.name,
            self.monitored,
            cfg.url,
            self.create_calls,
        )

    async def _start_polling(self, client: Client) -> None:
        settings = item_settings(list(self.tags.values()), self.config)
        deadbands = await self._deadbands(client)
        groups: dict[float, list[tuple[str, ua.NodeId, float | None]]] = {}
        for tag, s in settings.items():
            groups.setdefault(s.sampling_interval_ms, []).append(
                (tag, self._nodes[tag], deadbands[tag])
            )
        read_chunk = self.limits.chunk(self.limits.nodes_per_read, self.config.chunk_size)
        poller = Poller(client, groups, read_chunk, self._receive)
        self.monitored = len(settings)
        self._work = asyncio.create_task(poller.run(), name=f"opcua-poll:{self.name}")
        log.info("%s: polling %d tags on %s", self.name, self.monitored, self.config.url)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost.set()

    def _subscription_status(self, status: ua.StatusCode) -> None:
        log.warning("%s: subscription status %s", self.name, status.name)
        if status.is_bad():
            self._lost.set()

    def _receive(self, batch: list[Sample]) -> None:
        if batch:
            self.samples_received += len(batch)
            gone = {s.tag: s.status for s in batch if s.status and s.status in _GONE}
            if gone:
                self._not_offered(gone)
            self.sink(batch)

    def _not_offered(self, tags: dict[str, int]) -> None:
        """Report tags the server does not offer, once each, and store them Bad with why."""
        new = {t: code for t, code in tags.items() if t not in self.missing}
        if not new:
            return
        for tag, code in new.items():
            self.missing[tag] = status_name(code)
        log.warning(
            "%s: %d tag(s) not offered by %s: %s",
            self.name,
            len(new),
            self.config.url,
            _named(sorted(new), {t: self.missing[t] for t in new}),
        )
        now, nan = utcnow(), float("nan")
        self.sink([Sample(t, now, nan, Quality.BAD, None, code) for t, code in new.items()])

    async def _disconnect(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
        self._sub = None
        client, self._client = self._client, None
        if client is None:
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.disconnect(), timeout=2.0)

    def status(self) -> dict[str, Any]:
        """Return the collector's state, with how many items are monitored."""
        return {
            **super().status(),
            "monitored": self.monitored,
            "reconnects": self.reconnects,
            "missing": len(self.missing),
        }

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a setpoint, then read it back to confirm the device holds the new value."""
        refused = self.check_write(tag, value)
        if refused is not None:
            return refused
        client = self._client
        if client is None or not self.connected or tag not in self._nodes:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "not connected")
        spec = self.tags[tag]
        typed: Value = float(value) if spec.kind == "float" else value
        node = client.get_node(self._nodes[tag])
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


def _first(exc: BaseException) -> BaseException:
    """Return the first leaf of an exception group (a failed polling task), or the exception."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def status_name(code: int) -> str:
    """Return an OPC UA status code's name (BadNodeIdUnknown), or its hex value if unknown."""
    try:
        return str(get_name_and_doc(code)[0])
    except KeyError:
        return f"0x{code:08X}"


def _named(tags: Sequence[str], why: dict[str, str] | None = None) -> str:
    """Name the first GONE_NAMED tags (with why), and count the others."""
    shown = [f"{t} ({why[t]})" if why else t for t in tags[:GONE_NAMED]]
    more = len(tags) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def _describe(exc: BaseException) -> str:
    """Say what went wrong in one line: our own messages as they are, others with their type."""
    exc = _first(exc)
    if isinstance(exc, BeffroiError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
