"""The base of every collector: lifecycle, CommLoss once per outage, backoff, write checks.

A collector is built from its validated config entry, connects in `start(stack)`, and pushes
`Sample` batches to a sink; it fulfils `core.seams.Collector`. It follows the living register
(`follow`: the tags of added assets in its scope, not those of retired ones) and tells the
inventory, through hooks the runtime sets, what it discovers and what its source no longer
offers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, Generic, Self, TypeVar

from beffroi.collectors.config import CollectorConfig
from beffroi.core import status_codes
from beffroi.core.model import (
    Asset,
    Quality,
    Sample,
    TagSpec,
    Value,
    WriteResult,
    WriteStatus,
    utcnow,
)
from beffroi.core.register import Register, RegisterChange
from beffroi.core.seams import Sink
from beffroi.core.site import Site

log = logging.getLogger(__name__)

C = TypeVar("C", bound=CollectorConfig)
# What a collector tells the inventory (the runtime sets them; each may block on a file, so a
# collector calls them off its event loop): assets it found, tags (→ status code) its source
# no longer offers, tags offered again.
OnDiscovered = Callable[[list[Asset]], object]
OnNotOffered = Callable[[dict[str, int]], object]
OnOffered = Callable[[list[str]], object]


class Backoff:
    """Reconnect delays: a few quick retries first, then doubling up to the maximum, jittered.

    Most outages are short (a server restart, a switch rebooting): the first FAST_TRIES retries
    come after the minimum delay, so the link is back within a second or two of the equipment.
    A longer outage backs off so that many gateways do not hammer a server that is down; the
    maximum bounds how late values resume after it comes back.
    """

    FAST_TRIES = 3

    def __init__(self, min_s: float, max_s: float):
        self.min_s, self.max_s = min_s, max_s
        self._tries = 0
        self._jitter = random.Random()  # its own: the process's random state is not ours to move

    def reset(self) -> None:
        """Start again from the quick retries."""
        self._tries = 0

    def delay(self) -> float:
        """Return the delay before the next attempt."""
        self._tries += 1
        doublings = max(0, self._tries - self.FAST_TRIES)
        base = min(self.min_s * 2.0 ** min(doublings, 30), self.max_s)
        # Jitter spreads the reconnects of many gateways after a server restart.
        return base * self._jitter.uniform(0.8, 1.2)


class CollectorBase(ABC, Generic[C]):
    """Reads a set of tags from one source and pushes Sample batches to a sink."""

    protocol: str = "collector"

    def __init__(self, config: C, tags: Sequence[TagSpec], sink: Sink):
        self.config = config
        self.name = config.name
        self.tags = {t.name: t for t in tags}
        self.sink = sink
        self.connected = False
        self.last_error = ""
        self.samples_received = 0
        self._outage_marked = False
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()  # set by the loop while connected and collecting
        self.on_discovered: OnDiscovered | None = None
        self.on_not_offered: OnNotOffered | None = None
        self.on_offered: OnOffered | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._reports: set[asyncio.Task[None]] = set()
        self._report_lock = asyncio.Lock()  # reports reach the inventory in the order made

    @classmethod
    def wants(cls, config: C, asset: Asset) -> list[TagSpec]:
        """Return the tags of an asset this collector reads: those in its communes and classes."""
        communes: list[str] = getattr(config, "communes", [])
        classes: list[str] = getattr(config, "classes", [])
        if (not communes or asset.commune in communes) and (
            not classes or asset.asset_class in classes
        ):
            return list(asset.tags)
        return []

    @classmethod
    def from_config(cls, config: C, site: Site, register: Register, sink: Sink) -> Self:
        """Build the collector of one config table entry, with its tags from the register."""
        tags = [t for a in register.assets.values() for t in cls.wants(config, a)]
        return cls(config, tags, sink)

    # --- the living register ---

    def follow(self, change: RegisterChange) -> None:
        """Follow a change of the register (a listener, from any thread): take or drop tags."""
        keep: dict[str, TagSpec] = {}
        for new in change.added:
            keep.update((t.name, t) for t in self.wants(self.config, new))
        drop = {t.name for old in change.retired for t in old.tags}  # whoever collected them
        for before, after in change.updated:  # e.g. a discovered asset confirmed by an operator
            was, now = self.wants(self.config, before), self.wants(self.config, after)
            keep.update((t.name, t) for t in now)
            drop.update(t.name for t in was)
        drop -= keep.keys()  # a reclassified asset keeps the tags both records have
        added = [t for name, t in keep.items() if self.tags.get(name) != t]
        dropped = sorted(name for name in drop if name in self.tags)
        if added or dropped:
            self._on_loop(self._retag, added, dropped)

    def _retag(self, added: list[TagSpec], dropped: list[str]) -> None:
        """Take new tags and drop old ones (on the event loop), then act on the source."""
        gone = set(dropped)
        tags = {n: t for n, t in self.tags.items() if n not in gone}
        tags.update((t.name, t) for t in added)
        self.tags = tags  # swapped whole: threads reading it see before or after
        log.info(
            "%s: %d tag(s) taken, %d dropped after a register change",
            self.name,
            len(added),
            len(dropped),
        )
        self._tags_changed([t.name for t in added], dropped)

    def _tags_changed(self, added: list[str], dropped: list[str]) -> None:
        """Act on the source after `tags` changed (a live subscription); nothing by default."""

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        """Run fn on the collector's event loop: now if on it, soon if called from a thread."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread:
            fn(*args)
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: the gateway is stopping
            loop.call_soon_threadsafe(fn, *args)

    def _report(self, hook: Callable[[Any], object] | None, arg: Any) -> None:
        """Tell the inventory something, off the event loop, in order, without waiting."""
        if hook is None:
            return
        if self._loop is None:  # not started (tests): synchronously
            hook(arg)
            return
        task = asyncio.get_running_loop().create_task(self._call_hook(hook, arg))
        self._reports.add(task)
        task.add_done_callback(self._reports.discard)

    async def _call_hook(self, hook: Callable[[Any], object], arg: Any) -> None:
        """Call a hook in a worker thread; its failure is logged, never the collector's."""
        async with self._report_lock:
            try:
                await asyncio.to_thread(hook, arg)
            except Exception:
                log.exception("%s: the inventory could not take a report", self.name)

    @property
    def status_tag(self) -> str:
        """Return the tag that records whether this collector is connected."""
        return f"_system/collector/{self.name}/connected"

    def _publish_status(self, connected: bool, error: str = "") -> None:
        self.connected = connected
        if error:
            self.last_error = error
        self.sink([Sample(self.status_tag, utcnow(), connected, Quality.GOOD)])

    def _mark_comm_loss(self, tags: Sequence[str] | None = None) -> None:
        """Give every tag (or some) of this collector CommLoss quality."""
        now, nan = utcnow(), float("nan")
        self.sink(
            [
                Sample(t, now, nan, Quality.COMM_LOSS, None, status_codes.BadNoCommunication)
                for t in (self.tags if tags is None else tags)
            ]
        )

    def _went_down(self, error: str) -> None:
        """Record a failed or lost connection; status and CommLoss are published once per outage."""
        self.last_error = error
        if self.connected or not self._outage_marked:
            self._publish_status(False, error)
            self._mark_comm_loss()
            self._outage_marked = True

    def _went_up(self) -> None:
        """Record a working connection: the status tag says so and the next outage is new."""
        self._outage_marked = False
        self._publish_status(True)

    def check_write(self, tag: str, value: Value) -> WriteResult | None:
        """Refuse a write to an unknown, read-only or out-of-range tag before sending anything."""
        spec = self.tags.get(tag)
        if spec is None:
            return WriteResult(
                tag, WriteStatus.REFUSED, value, f"{tag} is not served by {self.name}"
            )
        if not spec.writable:
            return WriteResult(tag, WriteStatus.REFUSED, value, f"{tag} is not writable")
        if spec.kind == "float":
            with contextlib.suppress(TypeError, ValueError):
                number = float(value)
                if not math.isfinite(number):
                    return WriteResult(tag, WriteStatus.REFUSED, value, "not a finite number")
                if spec.low is not None and number < spec.low:
                    return WriteResult(tag, WriteStatus.REFUSED, value, f"below {spec.low}")
                if spec.high is not None and number > spec.high:
                    return WriteResult(tag, WriteStatus.REFUSED, value, f"above {spec.high}")
                return None
            return WriteResult(tag, WriteStatus.REFUSED, value, "not a number")
        if spec.kind == "bool" and not isinstance(value, bool):
            return WriteResult(tag, WriteStatus.REFUSED, value, "not a boolean")
        if spec.kind == "str" and not isinstance(value, str):
            return WriteResult(tag, WriteStatus.REFUSED, value, "not text")
        return None

    def status(self) -> dict[str, Any]:
        """Return the collector's state for the HMI and /healthz."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "connected": self.connected,
            "tags": len(self.tags),
            "samples_received": self.samples_received,
            "last_error": self.last_error,
        }

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Run the connect-and-collect loop in the background; register its stop on the stack."""
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._task = asyncio.create_task(self._run(), name=f"{self.protocol}:{self.name}")
        stack.push_async_callback(self._stop)

    async def wait_connected(self) -> None:
        """Wait until the collector is connected and collecting (wrap in asyncio.timeout)."""
        await self._ready.wait()

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._disconnect()
        # Reports under way reach the inventory before it closes (it stops after collectors).
        if self._reports:
            await asyncio.gather(*self._reports, return_exceptions=True)

    # Not abstract: a loop holding its client in `async with` leaves nothing to close.
    async def _disconnect(self) -> None:
        """Close the connection the cancelled loop left open."""

    @abstractmethod
    async def _run(self) -> None:
        """Connect, collect and reconnect until cancelled, setting `_ready` while connected."""

    @abstractmethod
    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a setpoint and confirm it by reading it back."""
