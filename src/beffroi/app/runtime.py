"""The gateway: one process wiring the collectors, the historian, alarms, KPIs, control and HMI.

A sample's path, module by module: a collector (`collectors/opcua/collector.py`) pushes a batch
to `Runtime.sink`, which updates the live values (`core/live.py`), hands the batch to the alarm
service (`alerts/service.py`), and offers it to the compressor (`historian/compression.py`),
whose kept samples go to the write buffer (`historian/buffer.py`), flushed at least once a
second into the historian back end chosen by config (`app/registry.py`), or its spool.

The register changes while running (`inventory/service.py`): every part follows it as a
register listener (alarms bind and close, KPIs count assets while in service, collectors
subscribe and unsubscribe), and the collectors tell the inventory what they discover and what
their servers no longer offer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import faulthandler
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal

from beffroi.alerts.service import AlarmService
from beffroi.api.gateway_file import gateway_file_path, new_token, write_gateway_file
from beffroi.app.config import Config, register_problems
from beffroi.app.downtime import HEARTBEAT_S, Downtime
from beffroi.app.registry import COLLECTORS, HISTORIANS
from beffroi.collectors.base import CollectorBase
from beffroi.control.service import ControlService
from beffroi.core.errors import ConfigError, MissingCredentials
from beffroi.core.keys import kept_secret
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample
from beffroi.core.register import Register, RegisterChange
from beffroi.core.scheduler import Scheduler
from beffroi.core.seams import Collector, Historian
from beffroi.historian.buffer import WriteBuffer
from beffroi.historian.compression import Compressor
from beffroi.historian.spool import Spool
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore, reset_demo_users
from beffroi.interventions.config import interventions_place
from beffroi.interventions.demo import seed_reports
from beffroi.interventions.service import InterventionService
from beffroi.interventions.store import InterventionStore
from beffroi.inventory.config import store_place
from beffroi.inventory.formats import read_inventory
from beffroi.inventory.service import Inventory
from beffroi.inventory.store import InventoryStore
from beffroi.kpi.engine import KpiEngine
from beffroi.pair.forward import ActiveNode
from beffroi.pair.lease import Lease
from beffroi.pair.node import PairNode
from beffroi.simulator.history import ColumnHistorian, HistoryReport, complete_history, demo_history
from beffroi.simulator.physics import stored_counters
from beffroi.simulator.server import MetropolisSimulator
from beffroi.sparkplug.edge import SparkplugEdge
from beffroi.sparkplug.host import SparkplugHost

log = logging.getLogger(__name__)


Role = Literal["all", "edge", "central"]
SHUTDOWN_DUMP_S = 45.0
INVENTORY_CHECK_S = 60.0  # how often assets gone from their server are checked against grace
INVENTORY_CHECK_MIN_S = 1.0  # … or a quarter of a shorter grace, but not more often than this
INVENTORY_ERRORS_SHOWN = 20
PAIR_TOKEN_MIN = 32  # characters of the token the two nodes of a pair share
# The system alarm of an active node whose standby is gone (or never came).
NO_STANDBY = "pair_no_standby"
NO_STANDBY_MESSAGE = "the redundant pair runs without a standby: this gateway is alone"
NO_STANDBY_SEVERITY = 2  # bad rows of an inventory file named in the log (then counted)


class Runtime:
    """One gateway: a simulator (optional), collectors, the historian writer and the HMI."""

    def __init__(
        self,
        cfg: Config,
        register: Register,
        *,
        simulator: bool,
        hmi: bool = True,
        demo: bool = False,
        role: Role = "all",
        edge: str | None = None,
        node: str | None = None,
    ):
        self.cfg = cfg
        self.register = register
        # all: one process does everything. edge: collectors, compression and the spool,
        # published to the central site over Sparkplug B. central: everything but the field
        # collectors, the edges' data arriving through a Sparkplug primary host.
        self.role: Role = role
        self.edge_name = edge
        self.edge: SparkplugEdge | None = None
        # A redundant pair ([pair]): this node's name, and its place once started.
        self.node_name = node or cfg.pair.node
        self.pair: PairNode | None = None
        self.pair_token: str | None = None
        self.host: SparkplugHost | None = None  # the central's Sparkplug host, in a pair
        self._started_active = False
        self.newest_sample: datetime | None = None
        self.with_simulator = simulator and cfg.simulator.enabled
        self.with_hmi = hmi
        self.demo = demo
        self.users: UserStore | None = None
        self.inventory: Inventory | None = None
        self.demo_passwords: dict[str, str] = {}
        self.live = LiveValues()
        self.collectors: list[Collector] = []
        # Set by start(), in this order; None until then (or when not configured).
        self.scheduler: Scheduler | None = None
        self.historian: Historian | None = None
        self.buffer: WriteBuffer | None = None
        self.compressor: Compressor | None = None
        self.simulator: MetropolisSimulator | None = None
        self.history_done: asyncio.Task[None] | None = None  # the demo history's KPIs computed
        self.hmi_server: HmiServer | None = None
        self.alarms: AlarmService | None = None
        self.kpi: KpiEngine | None = None
        self.control: ControlService | None = None
        self.interventions: InterventionService | None = None
        self.tag_collectors: dict[str, Collector] = {}  # tag → the collector that writes it
        self.started_at = time.monotonic()
        self.samples_in = 0
        self.downtime = Downtime(cfg.data_dir() / "gateway.alive", self._store)

    def _store(self, samples: Sequence[Sample]) -> None:
        """Queue samples for the historian, past the compressor (marks of downtime)."""
        assert self.buffer is not None, "the write buffer starts before anything is collected"
        self.buffer.put(samples)

    def sink(self, batch: Sequence[Sample]) -> None:
        """Receive a batch from a collector: live values, alarms, then compression and storage."""
        assert self.buffer is not None, "the write buffer starts before the collectors"
        self.samples_in += len(batch)
        if batch:
            self.newest_sample = batch[-1].ts
        # First values after a restart, older than the downtime's mark, stored again now:
        # past the compressor, which could hold an unchanged value back.
        again = self.downtime.restamp(batch)
        self.live.update(batch)
        if again:
            self.live.update(again)
        if self.alarms is not None:
            self.alarms.process(batch)
        self.buffer.put(self.compressor.offer_batch(batch) if self.compressor else batch)
        if again:
            self.buffer.put(again)

    def collector_for(self, tag: str) -> Collector | None:
        """Return the collector serving a tag (for setpoint writes), or None."""
        found = self.tag_collectors.get(tag)
        if found is None:  # OPC UA discovery finds its tags after start
            found = next((c for c in self.collectors if tag in c.tags), None)
            if found is not None:
                self.tag_collectors[tag] = found
        return found

    def status(self) -> dict[str, Any]:
        """Return the gateway's state for /healthz and the HMI."""
        return {
            "uptime_s": round(time.monotonic() - self.started_at, 1),
            "previous_run": self.downtime.previous,
            "samples_in": self.samples_in,
            "live_tags": len(self.live),
            "historian": {
                "backend": self.cfg.historian.backend,
                **(self.buffer.status() if self.buffer else {}),
                "compression_ratio": round(self.compressor.ratio, 2) if self.compressor else 1.0,
            },
            "collectors": [c.status() for c in self.collectors],
            "alarms": self.alarms.status() if self.alarms is not None else None,
            "kpi": self.kpi.status() if self.kpi is not None else None,
            "control": self.control.status() if self.control is not None else None,
            "http": dataclasses.asdict(self.hmi_server.stats()) if self.hmi_server else None,
            "pair": self.pair.status() if self.pair is not None else None,
        }

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start every part; cleanup runs in reverse order when the stack closes."""
        cfg, register = self.cfg, self.register
        problems = register_problems(cfg, register)  # e.g. a Modbus device's asset
        if problems:
            raise ConfigError(str(cfg.source or "config"), problems)
        self.downtime.check_alone()
        if self.role == "edge":
            await self._start_edge(stack)
            return
        self.scheduler = scheduler = Scheduler(cfg.metropolis.timezone)
        await scheduler.start(stack)
        if cfg.pair.enabled:  # the role first: every part below asks it before acting
            self.pair = await self._start_pair(stack)
            scheduler.acting = self.pair.acting
        # The inventory first: every part below is built from the register as it holds.
        self.inventory = inventory = await asyncio.to_thread(self._open_inventory, stack)
        grace = cfg.inventory.removed_after_s
        check_s = min(INVENTORY_CHECK_S, max(INVENTORY_CHECK_MIN_S, grace / 4))
        scheduler.every(check_s, inventory.check_removed, "inventory-removed", duty=True)
        self.historian = historian = HISTORIANS[cfg.historian.backend].from_config(cfg, register)
        stack.callback(historian.close)
        historian.schedule(scheduler, cfg)
        # The demo's past, at its first start: before the alarms start, so that they restore the
        # state the history's journal ends in, and before the simulator, which goes on from it.
        history = None
        if self.demo and self.with_simulator:
            history = await asyncio.to_thread(demo_history, cfg, register, historian)
        spool_bytes = int(cfg.historian.spool_max_mb * 1024 * 1024)
        spool = Spool(cfg.resolve(cfg.historian.spool_dir), spool_bytes)
        self.buffer = buffer = WriteBuffer(
            historian, spool, cfg.historian.flush_interval_s, cfg.historian.max_batch
        )
        await buffer.start(stack)
        # Runs after the collectors stop (an exit stack unwinds in reverse) and after the
        # compressor's held points: collection ends with CommLoss of every collected tag.
        stack.callback(lambda: self.downtime.stop(self.collectors))
        # Exception and swinging-door compression at the edge, before storage (not for alarms,
        # which see every value). At shutdown the held last points go to the buffer first.
        self.compressor = compressor = Compressor.from_config(cfg, register)
        stack.callback(lambda: buffer.put(compressor.flush()))
        # Every part follows the register from its start: changes come from the HMI's and the
        # API's threads (imports, confirmations, retirements), the collectors (discovery) and
        # the scheduler (removal at source), each listener safe from any of them.
        register.subscribe(self._follow_register)
        if cfg.alarms.enabled:  # started before the collectors, so it stops after them
            self.alarms = AlarmService(cfg, register)
            self.alarms.acting = scheduler.acting
            if self.pair is not None:
                self.alarms.declare_system(NO_STANDBY, NO_STANDBY_MESSAGE, NO_STANDBY_SEVERITY)
            await self.alarms.start(stack, scheduler)
            if self.pair is not None:
                self._fence_alarms(self.pair)
            register.subscribe(self.alarms.follow)
        if cfg.kpi.active:  # after the alarms: MTTR and MTBF read their journal
            self.kpi = KpiEngine(cfg, register, historian, alarms=self.alarms)
            await self.kpi.start(stack, scheduler)
            register.subscribe(self.kpi.follow)
        if self.with_simulator:
            resume = None
            if history is None:  # a new start on stored data: meters go on from their values
                resume = await asyncio.to_thread(stored_counters, historian, register)
            self.simulator = MetropolisSimulator(
                cfg,
                register,
                physics=history.physics if history is not None else None,
                resume=resume,
            )
            await self.simulator.start(stack)
        if history is not None and isinstance(historian, ColumnHistorian):
            self._complete_history(stack, historian, history)
        # Each protocol table ([[collectors.opcua]], …) names its class in the registry; each
        # collector picks its own tags from the register (filters, device lists, discovery).
        if self.role == "central":
            await self._start_host(stack, inventory)
        else:
            await self._start_collectors(stack, inventory, cfg.collectors.entries())
        self.downtime.start(self.collectors, historian.latest)
        scheduler.every(HEARTBEAT_S, self.downtime.heartbeat.beat, "gateway-heartbeat")
        if cfg.control.enabled:  # after the collectors (it writes through them), stops before
            self.control = ControlService(cfg, register, self.live, self.collector_for)
            self.control.acting = scheduler.acting
            await self.control.start(stack, scheduler, node=self.pair.node if self.pair else None)
            if self.pair is not None and self.control.mailer is not None:
                self.control.mailer.sender.acting = self.pair.acting
            if self.control.audit is not None:
                await asyncio.to_thread(self.inventory.attach_audit, self.control.audit)
        if cfg.interventions.enabled:  # after control: it audits in control's log
            self.interventions = await asyncio.to_thread(self._open_interventions, stack)
            self._schedule_interventions(scheduler, self.interventions)
        if self.with_hmi:
            self._start_hmi(stack, historian)
        if self.pair is not None:
            self.pair.on_active.append(self._take_over)
            self.pair.on_standby.append(self._stand_by)
            check = self.cfg.pair.renew_s * 2
            scheduler.every(check, self._watch_standby, "pair-standby", duty=True)
            # The role may have changed while the parts started, before their hooks were set.
            if self.pair.acting() and not self._started_active:
                await self._take_over()
            elif not self.pair.acting() and self._started_active:
                await self._stand_by()
            if self.pair.acting():
                await asyncio.to_thread(self._audit_active)

    def _open_interventions(self, stack: contextlib.AsyncExitStack) -> InterventionService:
        """Open the interventions store and service (its field-link key from the environment,
        or generated once in the data folder)."""
        cfg = self.cfg
        store = InterventionStore(interventions_place(cfg))
        stack.callback(store.close)
        secret = kept_secret(
            cfg.interventions.link_secret_env, cfg.data_dir() / "field-link.secret"
        )
        service = InterventionService(
            cfg,
            self.register,
            store,
            secret,
            audit=self.control.audit if self.control is not None else None,
            alarms=self.alarms.alarms if self.alarms is not None else None,
        )
        service.acting = self.scheduler.acting if self.scheduler is not None else service.acting
        if self.demo:
            seed_reports(service)
        return service

    def _schedule_interventions(self, scheduler: Scheduler, service: InterventionService) -> None:
        """Alarms into interventions, e-mails sent and retried, contacts forgotten in time."""

        def route_and_send() -> None:
            service.route_alarms()
            if service.store.pending_mail():
                service.deliver()

        scheduler.every(5.0, route_and_send, "interventions-route", duty=True)
        scheduler.every(3600, service.forget_contacts, "interventions-retention", duty=True)

    def _complete_history(
        self, stack: contextlib.AsyncExitStack, historian: ColumnHistorian, history: HistoryReport
    ) -> None:
        """Compute the history's KPIs, then seal it, in the background; shutdown waits for it."""
        task = asyncio.create_task(
            asyncio.to_thread(complete_history, self.cfg, historian, self.kpi, history),
            name="demo-history-kpis",
        )
        self.history_done = task

        async def wait() -> None:
            with contextlib.suppress(Exception):
                await task

        stack.push_async_callback(wait)

    async def _start_pair(self, stack: contextlib.AsyncExitStack) -> PairNode:
        """Join the pair: claim the lease once, so that this node starts knowing its role."""
        cfg = self.cfg
        self.pair_token = self._pair_token()  # before anything: a pair cannot run without it
        secret = cfg.hmi.session_secret_env
        if not os.environ.get(secret):  # a session opened on one node must hold on the other
            raise MissingCredentials(
                f"hmi.session_secret_env: the environment variable {secret} must hold the HMI "
                "session secret both nodes of the pair share"
            )
        links = cfg.interventions.link_secret_env
        if cfg.interventions.enabled and not os.environ.get(links):  # a crew's link, either node
            raise MissingCredentials(
                f"interventions.link_secret_env: the environment variable {links} must hold the "
                "field-link key both nodes of the pair share"
            )
        if not self.node_name:
            raise ConfigError(
                str(cfg.source or "config"),
                ["pair.node: name this gateway in its pair (or start it with --node NAME)"],
            )
        lease = await asyncio.to_thread(Lease, cfg.state.url(), self.node_name, cfg.pair.lease_s)
        pair = PairNode(
            cfg.pair,
            self.node_name,
            cfg.pair.url or cfg.hmi_url(),
            lease,
            live=lambda: (len(self.live), self.newest_sample),
        )
        await pair.start(stack)
        self._started_active = pair.acting()
        log.info("pair: node %s starts %s (lease held by %s)", pair.node, pair.role, pair.holder)
        return pair

    def _fence_alarms(self, pair: PairNode) -> None:
        """Journal and outbox writes check the lease in their transaction; e-mails are sent
        only while acting, checked before each."""
        assert self.alarms is not None
        if self.alarms.journal is not None:
            self.alarms.journal.fence = pair.fence
        if self.alarms.sender is not None:
            self.alarms.sender.acting = pair.acting

    def _pair_token(self) -> str:
        """Return the token the two nodes of the pair share, from its environment variable."""
        name = self.cfg.pair.token_env
        token = os.environ.get(name, "").strip()
        if len(token) < PAIR_TOKEN_MIN:
            raise MissingCredentials(
                f"pair.token_env: the environment variable {name} must hold the token both "
                f"nodes share, at least {PAIR_TOKEN_MIN} characters (e.g. `openssl rand -hex 32`)"
            )
        return token

    def _forward_to_active(self, token: str) -> None:
        """Let a standby's users act through the active node (commands, alarm actions)."""
        pair = self.pair
        assert pair is not None
        active = ActiveNode(pair.node, pair.active_url, token)
        if self.alarms is not None:
            self.alarms.forward = active.alarm
        if self.control is not None and self.control.setpoints is not None:
            self.control.setpoints.forward = active.command

    async def _stand_by(self) -> None:
        """This node is no longer the active one: its Sparkplug host stops being the primary."""
        if self.host is not None:
            self.host.renew_session()

    async def _take_over(self) -> None:
        """This node became the active one: its parts take over from the journal and the runs."""
        if self.host is not None:  # the primary host now: STATE online, with its will
            self.host.renew_session()
        if self.alarms is not None:
            await self.alarms.take_over(self.live.snapshot)
        if self.control is not None:
            await self.control.take_over()
        if self.interventions is not None:  # what the dead node claimed and never sent
            await asyncio.to_thread(self.interventions.store.release)
        await asyncio.to_thread(self._audit_active)

    def _watch_standby(self) -> None:
        """Raise the system alarm while the pair runs without a standby; clear it when back."""
        if self.pair is not None and self.alarms is not None:
            self.alarms.set_system(NO_STANDBY, self.pair.standby() is None)

    def _audit_active(self) -> None:
        """Record in the audit log which node acts from now on (the log names both nodes)."""
        if self.pair is None or self.control is None or self.control.audit is None:
            return
        self.control.audit.record(
            "system", "pair.active", target=self.pair.node, epoch=self.pair.epoch
        )

    async def _start_collectors(
        self,
        stack: contextlib.AsyncExitStack,
        inventory: Inventory,
        entries: Sequence[tuple[str, Any]],
    ) -> None:
        """Build, wire and start the field collectors of these config entries."""
        for protocol, col_cfg in entries:
            await self._run_collector(stack, self._collector(protocol, col_cfg, inventory))

    def _collector(self, protocol: str, col_cfg: Any, inventory: Inventory) -> CollectorBase[Any]:
        """Build and wire the collector of one config entry (not started)."""
        collector = COLLECTORS[protocol].from_config(col_cfg, self.cfg, self.register, self.sink)
        self._wire(collector, inventory, f"{protocol}:{collector.name}")
        return collector

    async def _run_collector(
        self, stack: contextlib.AsyncExitStack, collector: CollectorBase[Any]
    ) -> None:
        """Start a collector and make it the writer of its tags."""
        await collector.start(stack)
        self.collectors.append(collector)
        for tag in collector.tags:
            self.tag_collectors.setdefault(tag, collector)

    async def _start_host(self, stack: contextlib.AsyncExitStack, inventory: Inventory) -> None:
        """Start the Sparkplug primary host, the central site's one collector of every edge."""
        host = SparkplugHost.from_config(self.cfg.sparkplug, self.cfg, self.register, self.sink)
        host.store_historical = self._store  # an edge's spool: stored, not live
        host.state_path = self.cfg.data_dir() / "sparkplug-host.json"
        if self.pair is not None:  # both nodes listen; the active one is the primary host
            host.acting = self.pair.acting
            host.session_name = f"beffroi-host-{self.cfg.sparkplug.name}-{self.pair.node}"
            self.host = host
        await asyncio.to_thread(host.load_births)
        self._wire(host, inventory, f"sparkplug:{host.name}")
        await host.start(stack)
        self.collectors.append(host)
        for tag in host.tags:
            self.tag_collectors.setdefault(tag, host)

    async def _start_edge(self, stack: contextlib.AsyncExitStack) -> None:
        """Start an edge: its communes' collectors, compression, the spool, the edge node."""
        cfg, register = self.cfg, self.register
        try:
            edge_cfg = cfg.sparkplug.edge(self.edge_name or "")
        except KeyError as exc:
            raise ConfigError(str(cfg.source or "config"), [f"--edge: {exc.args[0]}"]) from None
        self.scheduler = scheduler = Scheduler(cfg.metropolis.timezone)
        await scheduler.start(stack)
        self.inventory = inventory = await asyncio.to_thread(self._open_inventory, stack)
        entries = [
            (protocol, self._scoped(col_cfg, edge_cfg.communes))
            for protocol, col_cfg in cfg.collectors.entries()
        ]
        self.edge = edge = SparkplugEdge(cfg.sparkplug, edge_cfg, self.live, self.collector_for)
        spool_bytes = int(cfg.historian.spool_max_mb * 1024 * 1024)
        spool = Spool(cfg.resolve(cfg.historian.spool_dir), spool_bytes)
        self.buffer = buffer = WriteBuffer(
            edge,
            spool,
            cfg.historian.flush_interval_s,
            cfg.historian.max_batch,
            replay=edge.write_historical,
            live_first=True,
        )
        edge.on_born = buffer.target_back
        # No compression here: the central site's live values and alarms need every value
        # the equipment reports (by exception, within its deadbands); it compresses what it
        # stores, as a single gateway does.
        register.subscribe(self._follow_register)
        collectors = [self._collector(protocol, c, inventory) for protocol, c in entries]
        edge.tags_of = lambda: [t for c in collectors for t in c.tags.values()]
        # Stopped in reverse: the collectors, the downtime's marks, the buffer's last flush
        # (published, or spooled for the next start), then the edge node's clean death.
        await edge.start(stack)
        await buffer.start(stack)
        stack.callback(lambda: self.downtime.stop(self.collectors))
        for collector in collectors:
            await self._run_collector(stack, collector)
        self.downtime.start(self.collectors, _nothing_stored)
        scheduler.every(HEARTBEAT_S, self.downtime.heartbeat.beat, "gateway-heartbeat")
        log.info(
            "edge %s: %d collectors, %d tags, publishing to %s:%d",
            edge_cfg.name,
            len(self.collectors),
            len(edge.tags_of()),
            cfg.sparkplug.host,
            cfg.sparkplug.port,
        )

    def _scoped(self, col_cfg: Any, communes: Sequence[str]) -> Any:
        """Return a collector's config narrowed to an edge's communes (none: unchanged)."""
        if not communes:
            return col_cfg
        if hasattr(col_cfg, "devices"):  # Modbus: the devices of assets in those communes
            assets = self.register.assets
            keep = [d for d in col_cfg.devices if d.asset in assets
                    and assets[d.asset].commune in communes]  # fmt: skip
            return col_cfg.model_copy(update={"devices": keep})
        mine = [c for c in (col_cfg.communes or communes) if c in communes]
        # An edge outside a collector's communes: a scope that takes nothing, not everything.
        return col_cfg.model_copy(update={"communes": mine or ["-"]})

    def _wire(self, collector: CollectorBase[Any], inventory: Inventory, origin: str) -> None:
        """Make a collector follow the register and report to the inventory (before it starts)."""
        self.register.subscribe(collector.follow)
        collector.on_discovered = lambda found: inventory.discovered(found, origin)
        collector.on_not_offered = lambda tags: inventory.not_offered(tags, origin)
        collector.on_offered = inventory.offered

    def _follow_register(self, change: RegisterChange) -> None:
        """Follow a register change in the runtime's own maps: writes, compression."""
        for old in change.retired:
            for t in old.tags:  # a setpoint to a retired asset finds no collector
                self.tag_collectors.pop(t.name, None)
        if change.added and self.compressor is not None:
            added = {a.id: a for a in change.added}
            tags = {t.name: t for a in added.values() for t in a.tags}
            part = Register(self.register.communes, added, tags)
            # New tags are compressed as the register's are; dict updates are atomic for the
            # event loop reading the specs.
            self.compressor.specs.update(Compressor.from_config(self.cfg, part).specs)
        if self.edge is not None and (change.added or change.retired or change.updated):
            # The collectors take and drop tags on their loops first; the edge is born
            # again a moment later with what they read then.
            self.edge.rebirth_soon()

    def _open_inventory(self, stack: contextlib.AsyncExitStack) -> Inventory:
        """Open the inventory store, lay it over the register, import the configured files."""
        cfg = self.cfg
        store = InventoryStore(store_place(cfg))
        stack.callback(store.close)
        inventory = Inventory(cfg, self.register, store)
        inventory.load()
        for name in cfg.inventory.files:
            path = cfg.resolve(name)
            try:
                records, errors = read_inventory(path)
            except OSError as exc:
                log.error("inventory file %s cannot be read: %s", path, exc.strerror)
                continue
            for row in errors[:INVENTORY_ERRORS_SHOWN]:
                log.warning("inventory file: %s", row)
            report = inventory.import_records(records, path.name, "system")
            for problem in report.errors[:INVENTORY_ERRORS_SHOWN]:
                log.warning("inventory file %s: %s", path.name, problem)
        return inventory

    def _start_hmi(self, stack: contextlib.AsyncExitStack, historian: Historian) -> None:
        """Serve the HMI and the token API; record where in gateway.json for the CLI."""
        cfg = self.cfg
        # A pair shares one token: the standby sends its users' commands to the active's API.
        token = self.pair_token or new_token()
        self.users = users = UserStore(
            cfg.state.place(cfg.resolve(cfg.hmi.users_db), "users"), set(self.register.communes)
        )
        stack.callback(users.close)
        audit = self.control.audit if self.control is not None else None
        if self.demo:
            self.demo_passwords = reset_demo_users(users)
            if audit is not None:
                audit.record("system", "user.demo_reset", target=",".join(self.demo_passwords))
        app = create_app(
            cfg,
            self.register,
            self.live,
            historian,
            self.status,
            api_token=token,
            users=users,
            alarms=self.alarms,
            kpi=self.kpi,
            audit=audit,
            control=self.control,
            inventory=self.inventory,
            pair=self.pair.status if self.pair is not None else None,
            interventions=self.interventions,
        )
        self.hmi_server = server = HmiServer(
            app, cfg.hmi.host, cfg.hmi.port, threads=cfg.hmi.threads, http=cfg.hmi.http
        )
        server.start()
        stack.callback(server.stop)
        if self.pair is not None:
            self._forward_to_active(token)
        # Every `beffroi` command that works on the gateway's files asks it first, found here.
        gateway_file = gateway_file_path(cfg)
        write_gateway_file(gateway_file, server.url, token)
        stack.callback(gateway_file.unlink, missing_ok=True)

    async def run(
        self, duration: float | None = None, ready: Callable[[Runtime], None] | None = None
    ) -> None:
        """Run until the duration elapses or SIGINT/SIGTERM arrives, then shut down cleanly."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with contextlib.AsyncExitStack() as stack:
            await self.start(stack)
            if ready is not None:
                ready(self)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), duration)
            log.info("shutting down")
            # A stop that hangs (a part that does not return) prints every thread's stack.
            faulthandler.dump_traceback_later(SHUTDOWN_DUMP_S, exit=False)
        faulthandler.cancel_dump_traceback_later()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


def _nothing_stored(tags: Sequence[str]) -> Any:
    """An edge stores nothing: its downtime is marked from its heartbeat."""
    raise LookupError("an edge keeps no history")
