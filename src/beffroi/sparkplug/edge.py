"""A Sparkplug B edge node: what the edge's collectors read, published to the central site.

The edge's write buffer sends its batches here instead of to a historian (`write`, from the
buffer's worker thread). While the primary host is offline (its STATE message), or the broker
unreachable, `write` refuses, so the buffer keeps the batches in its durable spool, in order;
when the host is back, the node is born again (NBIRTH, a DBIRTH per commune), live values go
first and the spool is drained between them through `write_historical`, every metric flagged
historical. A batch cut by a failure is spooled whole; what of it went is remembered and not
sent again. A birth waits for the data messages under way. Commands (DCMD) are written to
the equipment through the collector that serves the tag, with its checks and read-back, and
answered by a DDATA of the tag carrying the result.

Devices are the communes: `spBv1.0/<group>/DDATA/<edge>/<commune>`. Metric names are tag
names; births give each an alias (stable for the process), which data messages use.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import aiomqtt

from beffroi.collectors.base import Backoff
from beffroi.core.errors import MissingCredentials
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, TagSpec, Value, WriteResult, WriteStatus, utcnow
from beffroi.core.seams import Collector
from beffroi.sparkplug import codec, session
from beffroi.sparkplug.codec import Kind, Malformed, Topic
from beffroi.sparkplug.config import SparkplugConfig, SparkplugEdgeConfig

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 30.0  # a publish the broker has not acknowledged by then failed


class HostOffline(ConnectionError):
    """The primary host is offline or the broker unreachable: the batch stays spooled."""


class SparkplugEdge:
    """Publish an edge's samples as a Sparkplug B edge node; run the commands it receives."""

    name = "sparkplug-edge"

    def __init__(
        self,
        cfg: SparkplugConfig,
        edge: SparkplugEdgeConfig,
        live: LiveValues,
        collector_for: Callable[[str], Collector | None],
    ):
        self.cfg, self.edge, self.live, self.collector_for = cfg, edge, live, collector_for
        self.specs: dict[str, TagSpec] = {}
        # What the edge's collectors read now, asked at each birth (the register changes).
        self.tags_of: Callable[[], Sequence[TagSpec]] = lambda: []
        # Called on the loop once born: the write buffer sends live at once, not spooling
        # behind its back-off what the host would then get flagged historical.
        self.on_born: Callable[[], None] = lambda: None
        self._rebirth_due: asyncio.TimerHandle | None = None
        self.aliases: dict[str, int] = {}
        self._by_alias: dict[int, str] = {}
        self._client: aiomqtt.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._commands: set[asyncio.Task[None]] = set()
        self._seq = 0
        self._seq_lock = threading.Lock()  # data from the buffer's thread, births on the loop
        self.bd_seq = -1
        self.host_online = False
        self.born = False
        # What of a batch went before a publish failed (first, last, length, indices).
        self._sent: tuple[Sample, Sample, int, frozenset[int]] | None = None
        self._inflight = 0  # data publishes under way (a birth waits for them)
        self.published = 0
        self.historical = 0
        self.births = 0
        self.commands = 0
        self.skipped = 0  # samples of tags the edge does not publish (its own _system tags)
        self.malformed = 0
        self.last_error = ""

    # --- what the edge publishes ---

    def serve(self, specs: Sequence[TagSpec]) -> None:
        """Publish these tags and no others: new ones get the next aliases (never reused)."""
        for spec in sorted(specs, key=lambda s: s.name):
            if spec.name not in self.aliases:
                alias = len(self.aliases) + 1
                self.aliases[spec.name] = alias
                self._by_alias[alias] = spec.name
        self.specs = {s.name: s for s in specs}

    def rebirth_soon(self) -> None:
        """Be born again a second from now with the tags read then (from any thread)."""
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed: stopping
            loop.call_soon_threadsafe(self._schedule_rebirth)

    def _schedule_rebirth(self) -> None:
        if self._rebirth_due is not None:
            self._rebirth_due.cancel()
        self._rebirth_due = asyncio.get_running_loop().call_later(1.0, self._rebirth_now)

    def _rebirth_now(self) -> None:
        self._rebirth_due = None
        client = self._client
        if client is None or not self.host_online:
            return  # the next birth takes the tags anyway
        task = asyncio.get_running_loop().create_task(self._birth(client))
        self._commands.add(task)
        task.add_done_callback(self._commands.discard)

    def devices(self) -> dict[str, list[TagSpec]]:
        """Return the tags by device (commune)."""
        out: dict[str, list[TagSpec]] = {}
        for spec in self.specs.values():
            out.setdefault(spec.commune, []).append(spec)
        return out

    def _next_seq(self) -> int:
        with self._seq_lock:
            seq = self._seq
            self._seq = (self._seq + 1) % 256
            return seq

    # --- the write buffer's side (a worker thread) ---

    def write(self, batch: Sequence[Sample]) -> int:
        """Publish a batch as DDATA now; raise HostOffline to have it spooled."""
        return self._publish_batch(batch, historical=False)

    def write_historical(self, batch: Sequence[Sample]) -> int:
        """Publish a spooled batch as DDATA flagged historical (the buffer's drain)."""
        n = self._publish_batch(batch, historical=True)
        self.historical += n
        return n

    def _publish_batch(self, batch: Sequence[Sample], *, historical: bool) -> int:
        loop, client = self._loop, self._client
        if loop is None or client is None:
            raise HostOffline("no broker")
        done = self._resume(batch)
        by_device: dict[str, list[tuple[int, int, int, Sample]]] = {}
        for k, s in enumerate(batch):
            spec = self.specs.get(s.tag)
            if k in done:
                continue
            if spec is None:
                self.skipped += 1
                continue
            by_device.setdefault(spec.commune, []).append(
                (k, self.aliases[s.tag], codec.datatype(spec), s)
            )
        now = utcnow()
        size = self.cfg.batch_metrics
        sent = 0
        for device, metrics in by_device.items():
            topic = str(Topic(self.cfg.group, Kind.DDATA, self.edge.name, device))
            for i in range(0, len(metrics), size):
                part = metrics[i : i + size]
                with self._seq_lock:  # not while a birth is under way (aliases, seq reset)
                    if not self.host_online or not self.born:
                        self._remember(batch, done)
                        raise HostOffline("the primary host is offline")
                    self._inflight += 1
                    seq = self._seq
                    self._seq = (seq + 1) % 256
                try:
                    payload = codec.data([m[1:] for m in part], seq, now, historical=historical)
                    self._publish(loop, client, topic, payload, self.cfg.data_qos)
                except HostOffline:
                    self._remember(batch, done)
                    raise
                finally:
                    with self._seq_lock:
                        self._inflight -= 1
                done.update(m[0] for m in part)
                sent += len(part)
                self.published += len(part)
        return sent

    def _remember(self, batch: Sequence[Sample], done: set[int]) -> None:
        """Keep what of this batch went: spooled whole, it is not sent twice when it comes back."""
        self._sent = (batch[0], batch[-1], len(batch), frozenset(done)) if done else None

    def _resume(self, batch: Sequence[Sample]) -> set[int]:
        """Return the indices of this batch published before a failure."""
        sent, self._sent = self._sent, None
        if sent is None or not batch:
            return set()
        first, last, n, done = sent
        if n == len(batch) and batch[0] == first and batch[-1] == last:
            return set(done)
        return set()

    def _publish(
        self,
        loop: asyncio.AbstractEventLoop,
        client: aiomqtt.Client,
        topic: str,
        payload: bytes,
        qos: int,
    ) -> None:
        """Publish from the buffer's thread on the loop; HostOffline if it does not go."""
        future = asyncio.run_coroutine_threadsafe(client.publish(topic, payload, qos=qos), loop)
        try:
            future.result(PUBLISH_TIMEOUT_S)
        except (aiomqtt.MqttError, concurrent.futures.TimeoutError, RuntimeError) as exc:
            future.cancel()
            raise HostOffline(f"publish failed: {exc}") from exc

    # --- the MQTT session (the event loop) ---

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect in the background; register the clean stop (NDEATH) on the stack."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name=f"sparkplug-edge:{self.edge.name}")
        stack.push_async_callback(self._stop)

    async def _stop(self) -> None:
        client = self._client
        if client is not None and self.bd_seq >= 0:
            # A clean stop says so at once; a crash leaves it to the broker's will.
            with contextlib.suppress(aiomqtt.MqttError, OSError, TimeoutError):
                topic = str(Topic(self.cfg.group, Kind.NDEATH, self.edge.name))
                async with asyncio.timeout(5):
                    await client.publish(topic, codec.death(self.bd_seq, utcnow()), qos=1)
        self.born = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._commands):
            task.cancel()

    async def _run(self) -> None:
        cfg = self.cfg
        backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        node = Topic(cfg.group, Kind.NCMD, self.edge.name)
        while True:
            self.bd_seq = (self.bd_seq + 1) % 256
            will = aiomqtt.Will(
                str(Topic(cfg.group, Kind.NDEATH, self.edge.name)),
                codec.death(self.bd_seq, utcnow()),
                qos=1,
            )
            try:
                async with session.client(
                    cfg,
                    f"beffroi-edge-{self.edge.name}",
                    clean_session=True,  # Sparkplug 3.0: an edge node's session is new
                    will=will,
                    logger=log,
                ) as client:
                    self._client = client
                    await client.subscribe(
                        [
                            (str(node), 1),
                            (f"{codec.NAMESPACE}/{cfg.group}/DCMD/{self.edge.name}/+", 1),
                            (codec.host_topic(cfg.name), 1),
                        ]
                    )
                    backoff.reset()
                    log.info(
                        "edge %s: connected to %s:%d, waiting for host %s",
                        self.edge.name,
                        cfg.host,
                        cfg.port,
                        cfg.name,
                    )
                    async for message in client.messages:
                        await self._on_message(client, str(message.topic), message.payload)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, MissingCredentials, OSError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("edge %s: broker %s:%d: %s", self.edge.name, cfg.host, cfg.port, exc)
            except Exception as exc:  # never dies on a bug: says so and reconnects
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("edge %s: unexpected error", self.edge.name)
            self._client = None
            self.born = self.host_online = False
            await asyncio.sleep(backoff.delay())

    async def _on_message(self, client: aiomqtt.Client, topic: str, raw: Any) -> None:
        data = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
        try:
            parsed = Topic.parse(topic)
            if parsed.kind is Kind.STATE:
                await self._on_state(client, data)
            elif parsed.kind is Kind.NCMD:
                await self._on_node_command(client, codec.decode(data))
            elif parsed.kind is Kind.DCMD and parsed.device is not None:
                self._on_device_command(parsed.device, codec.decode(data))
        except Malformed as exc:
            self.malformed += 1
            log.warning("edge %s: %s: skipped: %s", self.edge.name, topic, exc)

    async def _on_state(self, client: aiomqtt.Client, data: bytes) -> None:
        """Follow the primary host: born when it is online, silent (spooling) when not."""
        try:
            state = json.loads(data)
            online = bool(state["online"])
        except (ValueError, KeyError, TypeError):
            raise Malformed(f"STATE payload is not {{'online': …}}: {data[:80]!r}") from None
        if online and not self.host_online:
            self.host_online = True
            await self._birth(client)
        elif not online and self.host_online:
            log.warning("edge %s: host %s offline: spooling", self.edge.name, self.cfg.name)
            self.host_online = self.born = False

    async def _birth(self, client: aiomqtt.Client) -> None:
        """Publish NBIRTH then a DBIRTH per device, each metric with its last value."""
        with self._seq_lock:
            self.born = False
        # Data already sent off must reach the broker before the births: a host reads data
        # arriving between NBIRTH and DBIRTH with no aliases (and would drop it).
        while self._inflight:  # noqa: ASYNC110  (set by the buffer's thread)
            await asyncio.sleep(0.01)
        self.serve(self.tags_of())
        now = utcnow()
        latest = {t: s for t in self.specs if (s := self.live.get(t)) is not None}
        with self._seq_lock:
            self._seq = 0
        nbirth = codec.birth([], latest, self._next_seq(), now, bd_seq=self.bd_seq)
        cfg = self.cfg
        await client.publish(str(Topic(cfg.group, Kind.NBIRTH, self.edge.name)), nbirth, qos=0)
        for device, specs in sorted(self.devices().items()):
            metrics = [(self.aliases[s.name], s) for s in specs]
            payload = codec.birth(metrics, latest, self._next_seq(), now)
            topic = Topic(cfg.group, Kind.DBIRTH, self.edge.name, device)
            await client.publish(str(topic), payload, qos=0)
        self.births += 1
        self.born = True
        self.on_born()
        log.info(
            "edge %s: born (bdSeq %d): %d devices, %d metrics",
            self.edge.name,
            self.bd_seq,
            len(self.devices()),
            len(self.specs),
        )

    async def _on_node_command(self, client: aiomqtt.Client, payload: Any) -> None:
        for m in payload.metrics:
            if m.name == codec.REBIRTH and m.boolean_value:
                log.info("edge %s: rebirth requested", self.edge.name)
                if self.host_online:
                    await self._birth(client)

    def _on_device_command(self, device: str, payload: Any) -> None:
        for m in payload.metrics:
            tag = m.name or self._by_alias.get(m.alias, "")
            spec = self.specs.get(tag)
            if spec is None or spec.commune != device:
                log.warning("edge %s: command for an unknown metric %r", self.edge.name, tag)
                continue
            value = codec.value_of(m, m.datatype or codec.datatype(spec))
            if value is None:
                continue
            task = asyncio.get_running_loop().create_task(self._command(spec, value))
            self._commands.add(task)
            task.add_done_callback(self._commands.discard)

    async def _command(self, spec: TagSpec, value: Value) -> None:
        """Write a commanded value through its collector, then answer with the result."""
        self.commands += 1
        collector = self.collector_for(spec.name)
        if collector is None:
            result = WriteResult(spec.name, WriteStatus.REFUSED, value, "no collector serves it")
        else:  # the collector checks range and type, writes, and reads back
            result = await collector.write(spec.name, value)
        client = self._client
        if client is None or not self.born:
            return  # the host hears nothing: its command times out, as a lost link would
        current = self.live.get(spec.name)
        answer = current if current is not None else Sample(spec.name, utcnow(), value)
        outcome = codec.outcome_text(result)
        payload = codec.answer(
            self.aliases[spec.name], codec.datatype(spec), answer, outcome, self._next_seq()
        )
        topic = Topic(self.cfg.group, Kind.DDATA, self.edge.name, spec.commune)
        with contextlib.suppress(aiomqtt.MqttError):
            await client.publish(str(topic), payload, qos=self.cfg.data_qos)

    def status(self) -> dict[str, Any]:
        """Return the edge node's state for /healthz and the log."""
        return {
            "edge": self.edge.name,
            "host_online": self.host_online,
            "born": self.born,
            "bd_seq": self.bd_seq,
            "metrics": len(self.specs),
            "published": self.published,
            "historical": self.historical,
            "births": self.births,
            "commands": self.commands,
            "malformed": self.malformed,
            "last_error": self.last_error,
        }
