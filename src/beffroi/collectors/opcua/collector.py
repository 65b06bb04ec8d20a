"""OPC UA collector: subscriptions (or polling) in chunks, security, discovery, reconnects.

It follows the living register on its live subscription: monitored items are created for the
tags of added assets and deleted for those of retired ones, without a reconnect. Every
`rediscover_s` it looks at the server again: in discovery mode it browses again (assets added
while running join the inventory "to be placed", tags gone are not offered any more); with
register tags it reads the nodes, so that a node deleted or added back is noticed even from a
server that says nothing of it.
"""

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
from beffroi.collectors.opcua.discovery import Discovered, discover, resolve_root
from beffroi.collectors.opcua.items import (
    OperationLimits,
    absolute_deadband,
    chunks,
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
from beffroi.core.model import (
    Asset,
    Quality,
    Sample,
    TagSpec,
    Value,
    WriteResult,
    WriteStatus,
    tag_name,
    utcnow,
)
from beffroi.core.register import Register, RegisterChange
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
        # tag → node; in discovery mode, only the nodes the last browse found (a gone tag
        # stays in `tags`, not offered, and is never subscribed by a node id it used to have).
        self._nodes: dict[str, ua.NodeId] = {}
        self._lost = asyncio.Event()
        self._work: asyncio.Task[None] | None = None
        self._rescan_task: asyncio.Task[None] | None = None
        self._sub: BatchSubscription | None = None
        self._items: dict[str, tuple[int, int]] = {}  # tag → (client handle, server handle)
        self._handle = 0
        self._items_lock = asyncio.Lock()  # one change of the live subscription at a time
        self._excluded: set[str] = set()  # retired assets: discovery does not take them again
        self._told: set[str] = set()  # assets found and told to the inventory
        self._absent: set[str] = set()  # template signals of found assets the server lacks
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
            found = cls(config, [], sink, asset_classes=dict(site.asset_classes), communes=communes)
            found._excluded = set(register.retired)
            return found
        return super().from_config(config, site, register, sink)

    @classmethod
    def wants(cls, config: OpcUaCollectorConfig, asset: Asset) -> list[TagSpec]:
        """Return the register tags of an asset this collector subscribes (none in discovery).

        An asset found by discovery belongs to the collector that found it: another server's
        collector would only be refused its nodes, and report them not offered.
        """
        if config.discovery is not None or asset.source == "discovery":
            return []
        return super().wants(config, asset)

    def follow(self, change: RegisterChange) -> None:
        """Follow a change of the register; in discovery mode, retired assets stay out."""
        if self.config.discovery is not None:
            back = {a.id for a in change.added}
            gone = {a.id for a in change.retired} - back
            self._on_loop(self._exclude, gone, back)
        super().follow(change)

    def _exclude(self, gone: set[str], back: set[str]) -> None:
        self._excluded = (self._excluded | gone) - back

    def _tags_changed(self, added: list[str], dropped: list[str]) -> None:
        """Create the added tags' monitored items and delete the dropped ones, live."""
        for tag in dropped:
            self.missing.pop(tag, None)
            self._absent.discard(tag)
        if self.config.discovery is None and self._ns is not None:
            for tag in added:
                self._nodes[tag] = node_id(tag, self._ns)
        for tag in dropped:
            self._nodes.pop(tag, None)
        task = asyncio.get_running_loop().create_task(self._update(added, dropped))
        self._reports.add(task)  # awaited at stop, like the reports
        task.add_done_callback(self._reports.discard)

    async def _update(self, added: list[str], dropped: list[str]) -> None:
        """Bring the live subscription (or polling) in line with a change of `tags`."""
        async with self._items_lock:
            client = self._client
            if client is None or not self.connected:
                return  # the next connection subscribes `tags` as they are then
            try:
                if self.config.mode == "poll":
                    await self._start_polling(client)
                    return
                await self._delete_items([t for t in dropped if t not in self.tags])
                await self._create_items(client, [t for t in added if t in self._nodes])
            except _CONNECTION_ERRORS as exc:
                # The link is going: the reconnect subscribes every tag of `tags`.
                log.info("%s: subscription not changed: %s", self.name, _describe(exc))

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
        async with self._items_lock:  # a register change waits for the whole subscription
            if cfg.mode == "poll":
                await self._start_polling(client)
            else:
                await self._subscribe(client)
        self._went_up()
        self._ready.set()
        if cfg.rediscover_s > 0:
            self._rescan_task = asyncio.create_task(
                self._rescan_loop(client), name=f"opcua-rescan:{self.name}"
            )

    async def _browse(self, client: Client) -> tuple[Discovered, dict[str, TagSpec]]:
        """Browse the discovery root; return what was found and the tags to take of it."""
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
        tags = {t.name: t for t in found.tags if t.asset not in self._excluded}
        return found, tags

    async def _discover(self, client: Client) -> None:
        cfg = self.config
        assert cfg.discovery is not None
        found, tags = await self._browse(client)
        # Tags found before and not now stay known, not offered; found ones take their nodes.
        gone = {t: status_codes.BadNodeIdUnknown for t in self.tags if t not in tags}
        self.tags = {**self.tags, **tags}
        self._nodes = {t: found.nodes[t] for t in tags}
        skipped = ", ".join(f"{n} {why}" for why, n in found.skipped.items()) or "none"
        log.info(
            "%s: discovered %d tags under %s (skipped: %s)",
            self.name,
            len(tags),
            cfg.discovery.root,
            skipped,
        )
        self._told.clear()  # at each connection, the inventory hears of all it found
        await self._tell_found(found, tags)
        self._not_offered(gone)

    async def _tell_found(self, found: Discovered, tags: dict[str, TagSpec]) -> None:
        """Tell the inventory of the assets found, before their values arrive.

        Awaited, so that the alarms of a new asset are bound before its first values (a fault
        already on is an alarm at once). The template signals a found asset lacks are told as
        not offered: the asset is "removed at source" once the ones it had go too.
        """
        per_asset: dict[str, list[TagSpec]] = {}
        for t in tags.values():
            per_asset.setdefault(t.asset, []).append(t)
        new: list[Asset] = []
        absent: dict[str, int] = {}
        for aid, specs in per_asset.items():
            commune, class_id = found.assets[aid]
            if aid not in self._told:
                cls = self._asset_classes[class_id]
                new.append(Asset(aid, class_id, commune, 0.0, 0.0, cls.domain, specs))
            for sig in self._asset_classes[class_id].signals:
                name = tag_name(commune, aid, sig.name)
                if name not in tags and name not in self._absent:
                    absent[name] = status_codes.BadNodeIdUnknown
        again = sorted(t for t in tags if t in self._absent)
        self._absent = (self._absent | absent.keys()) - set(again)
        if new and self.on_discovered is not None:
            async with self._report_lock:
                try:
                    await asyncio.to_thread(self.on_discovered, new)
                    self._told.update(a.id for a in new)
                except Exception:
                    log.exception("%s: the inventory could not take the assets found", self.name)
        if absent:
            self._report(self.on_not_offered, absent)
        if again:
            self._report(self.on_offered, again)

    async def _rescan_loop(self, client: Client) -> None:
        """Look at the server again every rediscover_s, while this connection lasts."""
        while True:
            await asyncio.sleep(self.config.rediscover_s)
            try:
                async with self._items_lock:
                    if self.config.discovery is not None:
                        await self._rediscover(client)
                    else:
                        await self._recheck(client)
            except _CONNECTION_ERRORS as exc:
                # The watchdog notices a lost link and reconnects; this task ends with it.
                log.info("%s: cannot look at %s again: %s", self.name, self.config.url, exc)
            except Exception:
                log.exception("%s: looking at the server again failed", self.name)

    async def _rediscover(self, client: Client) -> None:
        """Browse again: take what was added, mark not offered what went, follow moved nodes."""
        found, tags = await self._browse(client)
        gone = [t for t in self._nodes if t not in tags]
        moved = [t for t in tags if t in self._nodes and self._nodes[t] != found.nodes[t]]
        fresh = [t for t in tags if t not in self._nodes]  # new, or found again
        if not (gone or moved or fresh):
            return
        new_assets = {tags[t].asset for t in fresh} - self._told
        log.info(
            "%s: browsed again: %d tags new or back (%d assets new), %d gone, %d moved",
            self.name,
            len(fresh),
            len(new_assets),
            len(gone),
            len(moved),
        )
        await self._tell_found(found, tags)
        for t in gone:
            del self._nodes[t]
        self.tags = {**self.tags, **tags}
        self._nodes.update((t, found.nodes[t]) for t in tags)
        await self._apply_scan(client, [*gone, *moved], [*moved, *fresh])
        self._not_offered(dict.fromkeys(gone, status_codes.BadNodeIdUnknown))

    async def _recheck(self, client: Client) -> None:
        """Read every register tag's node: note those gone, take back those offered again."""
        tags = [t for t in self.tags if t in self._nodes]
        read = [
            ua.ReadValueId(NodeId=self._nodes[t], AttributeId=ua.AttributeIds.NodeClass)
            for t in tags
        ]
        size = self.limits.chunk(self.limits.nodes_per_read, self.config.chunk_size)
        codes: list[int] = []
        for part in chunks(read, size):
            results = await client.uaclient.read(ua.ReadParameters(NodesToRead=part))
            codes += [0 if dv.StatusCode is None else int(dv.StatusCode.value) for dv in results]
        status = dict(zip(tags, codes, strict=True))
        gone = {t: c for t, c in status.items() if c in _GONE and t not in self.missing}
        back = [t for t, c in status.items() if c == 0 and t in self.missing]
        if gone or back:
            await self._apply_scan(client, [*gone, *back], back)
            self._not_offered(gone)

    async def _apply_scan(self, client: Client, drop: list[str], create: list[str]) -> None:
        """Delete and create monitored items after a scan (restart polling instead)."""
        if self.config.mode == "poll":
            await self._start_polling(client)
            back = sorted(t for t in create if t in self.missing)
            self._offered_again(back)
            return
        await self._delete_items(drop)
        await self._create_items(client, create)

    async def _deadbands(
        self, client: Client, tags: list[str] | None = None
    ) -> dict[str, float | None]:
        specs = [self.tags[t] for t in tags] if tags is not None else list(self.tags.values())
        settings = item_settings(specs, self.config)
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
        self._items, self._handle = {}, 0
        self.create_calls = 0
        tags = [t for t in self.tags if t in self._nodes]
        failed = await self._create_items(client, tags)
        # Missing tags no longer ours (dropped, or gone from a browse) are not waited for.
        for tag in [t for t in self.missing if t not in self.tags]:
            del self.missing[tag]
        if failed:
            self.last_error = f"{failed} of {len(tags)} tags could not be monitored"
            log.warning("%s: %s", self.name, self.last_error)
        log.info(
            "%s: monitoring %d tags on %s in %d calls",
            self.name,
            self.monitored,
            cfg.url,
            self.create_calls,
        )

    async def _create_items(self, client: Client, tags: list[str]) -> int:
        """Create the monitored items of tags on the live subscription; return how many failed.

        Tags the server refuses are not offered; tags that were not and now are, offered again.
        """
        sub = self._sub
        if sub is None or not tags:
            return 0
        cfg = self.config
        settings = item_settings([self.tags[t] for t in tags], cfg)
        deadbands = await self._deadbands(client, tags)
        requests: list[ua.MonitoredItemCreateRequest] = []
        handles: list[int] = []
        for tag in tags:
            self._handle += 1
            handles.append(self._handle)
            sub.tag_of[self._handle] = tag
            flt = data_change_filter(deadbands[tag])
            requests.append(
                monitored_item_request(self._nodes[tag], self._handle, settings[tag], flt)
            )
        size = self.limits.chunk(self.limits.monitored_items_per_call, cfg.chunk_size)

        async def create(part: list[ua.MonitoredItemCreateRequest]) -> list[int | ua.StatusCode]:
            self.create_calls += 1
            return await sub.create_monitored_items(part)

        try:
            results = await in_chunks(requests, size, create, "monitored items")
        except BaseException:
            for handle in handles:  # none of them is monitored: their values have no tag
                sub.tag_of.pop(handle, None)
            raise
        refused: dict[str, int] = {}
        for tag, handle, res in zip(tags, handles, results, strict=True):
            if isinstance(res, ua.StatusCode):
                sub.tag_of.pop(handle, None)
                refused[tag] = int(res.value)
            else:
                self._items[tag] = (handle, res)
        self.monitored = len(self._items)
        self._not_offered(refused)
        self._offered_again(sorted(t for t in tags if t in self.missing and t not in refused))
        return len(refused)

    async def _delete_items(self, tags: list[str]) -> None:
        """Delete the monitored items of tags from the live subscription."""
        sub = self._sub
        if sub is None:
            return
        server_handles: list[int] = []
        for tag in tags:
            item = self._items.pop(tag, None)
            if item is not None:
                sub.tag_of.pop(item[0], None)  # a value still in flight has no tag any more
                server_handles.append(item[1])
        self.monitored = len(self._items)
        size = self.limits.chunk(self.limits.monitored_items_per_call, self.config.chunk_size)
        for part in chunks(server_handles, size):
            # An item the server already dropped (its node deleted) is gone all the same.
            with contextlib.suppress(ua.UaStatusCodeError):
                await sub.unsubscribe(part)

    def _offered_again(self, back: list[str]) -> None:
        """Note tags the server offers again, and tell the inventory."""
        if not back:
            return
        log.info("%s: offered again: %s", self.name, _named(back))
        for tag in back:
            del self.missing[tag]
        self._report(self.on_offered, back)

    async def _start_polling(self, client: Client) -> None:
        tags = [t for t in self.tags if t in self._nodes]
        settings = item_settings([self.tags[t] for t in tags], self.config)
        deadbands = await self._deadbands(client, tags)
        groups: dict[float, list[tuple[str, ua.NodeId, float | None]]] = {}
        for tag, s in settings.items():
            groups.setdefault(s.sampling_interval_ms, []).append(
                (tag, self._nodes[tag], deadbands[tag])
            )
        read_chunk = self.limits.chunk(self.limits.nodes_per_read, self.config.chunk_size)
        poller = Poller(client, groups, read_chunk, self._receive)
        self.monitored = len(settings)
        # A register change starts a new poller: the watch loop sees the new task at once.
        old, self._work = (
            self._work,
            asyncio.create_task(poller.run(), name=f"opcua-poll:{self.name}"),
        )
        if old is not None:
            old.cancel()
            with contextlib.suppress(BaseException):
                await old
        log.info("%s: polling %d tags on %s", self.name, self.monitored, self.config.url)

    async def _on_connection_lost(self, exc: Exception) -> None:
        self._lost.set()

    def _subscription_status(self, status: ua.StatusCode) -> None:
        if int(status.value) in _GONE:
            # Some servers (asyncua's) say a monitored node was deleted through the
            # subscription's status: the subscription lives; the next look finds which.
            log.info("%s: the server deleted a monitored node", self.name)
            return
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
        self._report(self.on_not_offered, new)

    async def _disconnect(self) -> None:
        for task in (self._work, self._rescan_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
        self._work = self._rescan_task = None
        self._sub = None
        self._items = {}
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
