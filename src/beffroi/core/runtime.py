"""Wire collectors, historian, simulator and HMI into one gateway process."""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import logging
import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from beffroi.app.config import Config
from beffroi.core.downtime import HEARTBEAT_S, Downtime
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample
from beffroi.core.plugins import load
from beffroi.core.register import Register
from beffroi.core.scheduler import Scheduler

log = logging.getLogger(__name__)


SHUTDOWN_DUMP_S = 45.0


def gateway_file_path(cfg: Config) -> Path:
    """Return where a running gateway records its HMI URL and API token."""
    return cfg.resolve(cfg.historian.path).parent / "gateway.json"


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
    ):
        self.cfg = cfg
        self.register = register
        self.with_simulator = simulator and cfg.simulator.enabled
        self.with_hmi = hmi
        self.demo = demo
        self.users: Any = None
        self.demo_passwords: dict[str, str] = {}
        self.live = LiveValues()
        self.collectors: list[Any] = []
        self.historian: Any = None
        self.buffer: Any = None
        self.compressor: Any = None
        self.simulator: Any = None
        self.hmi_server: Any = None
        self.alarms: Any = None
        self.kpi: Any = None
        self.control: Any = None
        self.tag_collectors: dict[str, Any] = {}  # tag → the collector that writes it
        self.started_at = time.monotonic()
        self.samples_in = 0
        self.downtime = Downtime(
            cfg.resolve(cfg.historian.path).parent / "gateway.alive", lambda s: self.buffer.put(s)
        )

    def sink(self, batch: Sequence[Sample]) -> None:
        """Receive a batch from a collector: update live values and queue it for storage."""
        self.samples_in += len(batch)
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

    def collector_for(self, tag: str) -> Any:
        """Return the collector serving a tag (for setpoint writes), or None."""
        found = self.tag_collectors.get(tag)
        if found is None:  # OPC UA discovery finds its tags after start
            found = next((c for c in self.collectors if tag in c.tags), None)
            if found is not None:
                self.tag_collectors[tag] = found
        return found

    def status(self) -> dict:
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
        }

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start every part; cleanup runs in reverse order when the stack closes."""
        cfg = self.cfg
        self.downtime.check_alone()
        self.scheduler = Scheduler(cfg.metropolis.timezone)
        await self.scheduler.start(stack)
        self.historian = load("historian", cfg.historian.backend).from_config(cfg, self.register)
        stack.callback(self.historian.close)
        if hasattr(self.historian, "schedule"):
            self.historian.schedule(self.scheduler, cfg)
        spool = load("write_path", "spool")(
            cfg.resolve(cfg.historian.spool_dir), int(cfg.historian.spool_max_mb * 1024 * 1024)
        )
        self.buffer = load("write_path", "buffer")(
            self.historian, spool, cfg.historian.flush_interval_s, cfg.historian.max_batch
        )
        await self.buffer.start(stack)
        # Runs after the collectors stop (an exit stack unwinds in reverse) and after the
        # compressor's held points: collection ends with CommLoss of every collected tag.
        stack.callback(lambda: self.downtime.stop(self.collectors))
        # Exception and swinging-door compression at the edge, before storage (not for alarms,
        # which see every value). At shutdown the held last points go to the buffer first.
        self.compressor = load("write_path", "compressor").from_config(cfg, self.register)
        stack.callback(lambda: self.buffer.put(self.compressor.flush()))
        if cfg.alarms.enabled:  # started before the collectors, so it stops after them
            self.alarms = load("alerts", "service")(cfg, self.register)
            await self.alarms.start(stack, self.scheduler)
        if cfg.kpi.active:  # after the alarms: MTTR and MTBF read their journal
            self.kpi = load("kpi", "engine")(cfg, self.register, self.historian, alarms=self.alarms)
            await self.kpi.start(stack, self.scheduler)
        if self.with_simulator:
            self.simulator = load("simulator", "opcua")(cfg, self.register)
            await self.simulator.start(stack)
        # Every protocol table ([[collectors.opcua]], [[collectors.modbus]], …) is a registry key;
        # each collector picks its own tags from the register (filters, device lists, discovery).
        for kind, col_cfg in cfg.collectors.entries():
            collector_cls = load("collectors", kind)
            collector = collector_cls.from_config(col_cfg, cfg, self.register, self.sink)
            await collector.start(stack)
            self.collectors.append(collector)
            for tag in collector.tags:
                self.tag_collectors.setdefault(tag, collector)
        self.downtime.start(self.collectors, self.historian.latest)
        self.scheduler.every(HEARTBEAT_S, self.downtime.heartbeat.beat, "gateway-heartbeat")
        if cfg.control.enabled:  # after the collectors (it writes through them), stops before
            self.control = load("control", "service")(
                cfg, self.register, self.live, self.collector_for
            )
            await self.control.start(stack, self.scheduler)
        if self.with_hmi:
            token = load("hmi", "new_token")()
            self.users = load("hmi", "users")(
                cfg.resolve(cfg.hmi.users_db), set(self.register.communes)
            )
            stack.callback(self.users.close)
            if self.demo:
                self.demo_passwords = load("hmi", "reset_demo_users")(self.users)
                if self.control is not None:
                    names = ",".join(self.demo_passwords)
                    self.control.audit.record("system", "user.demo_reset", target=names)
            app = load("hmi", "app")(
                cfg,
                self.register,
                self.live,
                self.historian,
                self.status,
                api_token=token,
                users=self.users,
                alarms=self.alarms,
                kpi=self.kpi,
                audit=self.control.audit if self.control is not None else None,
                control=self.control,
            )
            self.hmi_server = load("hmi", "server")(
                app, cfg.hmi.host, cfg.hmi.port, threads=cfg.hmi.threads
            )
            self.hmi_server.start()
            stack.callback(self.hmi_server.stop)
            # `beffroi query` finds the running gateway here while it holds the DuckDB file.
            gateway_file = gateway_file_path(cfg)
            load("hmi", "write_gateway_file")(gateway_file, self.hmi_server.url, token)
            stack.callback(gateway_file.unlink, missing_ok=True)

    async def run(self, duration: float | None = None, ready: Any = None) -> None:
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
