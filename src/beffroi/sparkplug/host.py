"""The central site's Sparkplug B primary host: every edge's metrics in, commands out.

A collector like the others (`CollectorBase`): its tags are the register's, its samples go
to the runtime's sink (live values, alarms, historian), and `write` sends a DCMD to the edge
that serves the tag, confirmed by the edge's answer. It announces itself with a retained
STATE message (`{"online": true}`, the will saying false), on a persistent session, so that
data published while it restarts waits at the broker.

Per edge node it follows births (aliases, datatypes), `seq` (a gap asks the node for a
rebirth, NCMD `Node Control/Rebirth`) and deaths (the node's tags turn CommLoss at once: an
NDEATH comes from the broker when the edge's link dies, within 1.5 keep-alives). Historical
metrics (an edge's spool, drained) are stored without touching live values or alarms. A
payload that cannot be read is counted in `_system/collector/<name>/malformed` and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import aiomqtt

from beffroi.collectors.base import Backoff, CollectorBase
from beffroi.core import status_codes
from beffroi.core.errors import MissingCredentials
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
from beffroi.core.register import Register, tags_for
from beffroi.core.seams import Sink
from beffroi.core.site import AssetClassConfig, Site
from beffroi.sparkplug import codec, session
from beffroi.sparkplug.codec import Kind, Malformed, Topic
from beffroi.sparkplug.config import SparkplugConfig

log = logging.getLogger(__name__)

LOG_EVERY_S = 60.0
BIRTH_WAIT_S = 5.0  # a command waits this long for the DBIRTHs of a node just born
STOP_GRACE_S = 1.0  # a misbehaving node is logged at most once a minute


@dataclass
class Node:
    """What the host knows of one edge node's session."""

    name: str
    bd_seq: int | None = None
    online: bool = False
    next_seq: int | None = None
    aliases: dict[int, tuple[str, int]] = field(default_factory=dict)  # alias → (tag, dtype)
    names: dict[str, tuple[int | None, int, str]] = field(
        default_factory=dict
    )  # tag → (alias, dtype, device)
    devices: dict[str, set[str]] = field(default_factory=dict)  # device → tags
    gaps: int = 0
    rebirths: int = 0
    born_at: float = -math.inf  # monotonic time of its last NBIRTH


def _says_offline(data: bytes) -> bool:
    """Tell whether a STATE payload says offline (anything unreadable says nothing)."""
    try:
        return json.loads(data).get("online") is False
    except (ValueError, AttributeError):
        return False


class SparkplugHost(CollectorBase[SparkplugConfig]):
    """Ingest every edge node of the group; send setpoints down as device commands."""

    protocol = "sparkplug"

    def __init__(self, config: SparkplugConfig, tags: Sequence[TagSpec], sink: Sink):
        super().__init__(config, tags, sink)
        self.nodes: dict[str, Node] = {}
        self.store_historical: Sink | None = None  # the runtime's path to the historian only
        self.malformed = 0
        self.unmapped = 0
        self.historical = 0
        self.reconnects = 0
        self._client: aiomqtt.Client | None = None
        # A redundant pair: both nodes listen (their own MQTT sessions, `session_name`), only
        # the acting one is the primary host (STATE online, its will); renew_session() at a
        # change of role.
        self.acting: Callable[[], bool] = lambda: True
        self.session_name = ""
        self._announced = False
        self._stamp = 0
        self._renew = False
        self._session: asyncio.Future[str] | None = None
        self._chores: set[asyncio.Future[None]] = set()
        self._logged: dict[str, float] = {}
        self._waiters: dict[str, list[tuple[Value, asyncio.Future[WriteResult]]]] = {}
        # Set at each device birth: a command to a node being born (NBIRTH seen, DBIRTH not
        # yet) waits for it rather than being refused.
        self._births = asyncio.Event()
        # The births seen, kept on disk: after a crash, what edges sent before they heard of
        # it waits in this host's session, and is read with the aliases of those births.
        self.state_path: Path | None = None
        # Discovery: metrics of assets nobody listed (an edge's own discovery, another
        # vendor's node) join the inventory "to be placed" when their names say what they are.
        self._register: Register | None = None
        self._classes: dict[str, tuple[str, AssetClassConfig]] = {}
        self._communes: set[str] = set()
        self._save_due: asyncio.TimerHandle | None = None

    @classmethod
    def from_config(
        cls, config: SparkplugConfig, site: Site, register: Register, sink: Sink
    ) -> Self:
        """Take every tag of the register: the edges publish them."""
        host = cls(config, [t for a in register.assets.values() for t in a.tags], sink)
        host._register = register
        host._classes = {c.prefix: (cid, c) for cid, c in site.asset_classes.items()}
        host._communes = set(site.commune_ids())
        return host

    @property
    def malformed_tag(self) -> str:
        """Return the tag counting messages that could not be read."""
        return f"_system/collector/{self.name}/malformed"

    def load_births(self) -> int:
        """Take the births a previous run recorded; return how many nodes."""
        path = self.state_path
        if path is None or not path.exists():
            return 0
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            for name, n in doc.items():
                node = Node(name, bd_seq=n["bd_seq"], online=True)
                node.aliases = {int(a): (t, d) for a, (t, d) in n["aliases"].items()}
                node.names = {t: (a, d, dev) for t, (a, d, dev) in n["names"].items()}
                node.devices = {dev: set(tags) for dev, tags in n["devices"].items()}
                self.nodes[name] = node
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning(
                "%s: births of the last run unreadable (%s): rebirths asked", self.name, exc
            )
            self.nodes.clear()
        return len(self.nodes)

    def _save_births_soon(self) -> None:
        """Record the births a second after the last one (a node's births come in a burst)."""
        if self.state_path is None:
            return
        if self._save_due is not None:
            self._save_due.cancel()
        self._save_due = asyncio.get_running_loop().call_later(1.0, self._save_births)

    def _save_births(self) -> None:
        self._save_due = None
        path = self.state_path
        if path is None:
            return
        doc = {
            n.name: {
                "bd_seq": n.bd_seq,
                "aliases": {str(a): list(v) for a, v in n.aliases.items()},
                "names": {t: list(v) for t, v in n.names.items()},
                "devices": {d: sorted(t) for d, t in n.devices.items()},
            }
            for n in self.nodes.values()
            if n.bd_seq is not None
        }
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(doc), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("%s: births not recorded in %s: %s", self.name, path, exc)

    def _state(self, online: bool) -> bytes:
        # Sparkplug 3.0: the will carries the timestamp of the online message of its session,
        # so that an edge can tell an old host's will from the new host's birth.
        return json.dumps({"online": online, "timestamp": self._stamp}).encode()

    def renew_session(self) -> None:
        """Connect again at once (the pair's role changed): as the active node, with the STATE
        will and online; as the standby, listening only, so its death says nothing."""
        if self._session is not None and not self._session.done():
            self._renew = True
            self._session.cancel()

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        while True:
            self._renew = False
            self._session = asyncio.ensure_future(self._connected(backoff))
            try:
                await asyncio.wait({self._session})
            except asyncio.CancelledError:
                self._session.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._session
                raise
            renewed = self._session.cancelled() and self._renew
            error = "a new session" if renewed else self._session.result()
            self._client = None
            self._ready.clear()
            # The nodes' sessions go on at the broker: their births still hold, and what
            # they published meanwhile waits in this host's session, seq unknown till then.
            for node in self.nodes.values():
                node.next_seq = None
            if renewed:
                continue
            self._went_down(error)
            await asyncio.sleep(backoff.delay())
            self.reconnects += 1

    async def _connected(self, backoff: Backoff) -> str:
        """One session with the broker, until it fails; return why it ended."""
        cfg = self.config
        state_topic = codec.host_topic(cfg.name)
        # The standby of a pair listens (its data warm) but is not the host edges wait for.
        acting = self.acting()
        self._stamp = codec.ms(utcnow())
        try:
            will = aiomqtt.Will(state_topic, self._state(False), qos=1, retain=True)
            async with session.client(
                cfg,
                self.session_name or f"beffroi-host-{cfg.name}",
                # Persistent: what edges publish while the host restarts waits for it.
                clean_session=False,
                will=will if acting else None,
                logger=log,
            ) as client:
                self._client = client
                self._announced = acting
                topics = [(f"{codec.NAMESPACE}/{cfg.group}/#", 1)]
                if self.session_name:  # a node of a pair hears the other node's will
                    topics.append((state_topic, 1))
                await client.subscribe(topics)
                if acting:  # online last: edges are born to a host that already listens
                    await client.publish(state_topic, self._state(True), qos=1, retain=True)
                backoff.reset()
                self._went_up()
                self._ready.set()
                log.info(
                    "%s: %s of group %s on %s:%d", self.name,
                    "primary host" if acting else "standby host", cfg.group, cfg.host, cfg.port,
                )  # fmt: skip
                async for message in client.messages:
                    self._on_message(str(message.topic), message.payload)
        except (aiomqtt.MqttError, MissingCredentials, OSError) as exc:
            error = str(exc) if isinstance(exc, MissingCredentials) else (
                f"{type(exc).__name__}: {exc}"
            )  # fmt: skip
            if self.connected or not self._outage_marked:
                log.warning("%s: broker %s:%d: %s", self.name, cfg.host, cfg.port, error)
            return error
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never dies on a bug: says so and reconnects
            log.exception("%s: unexpected error", self.name)
            return f"{type(exc).__name__}: {exc}"
        finally:
            self._announced = False
        return "disconnected"

    async def _say_online(self) -> None:
        """Say online again: the will of a host that died (the other node of the pair) came
        after this one's birth and is now the retained STATE new edges would read."""
        client = self._client
        if client is None or not self._announced:
            return
        with contextlib.suppress(aiomqtt.MqttError, OSError):
            topic = codec.host_topic(self.config.name)
            await client.publish(topic, self._state(True), qos=1, retain=True)
            log.info("%s: STATE online again, over another host's will", self.name)

    async def _disconnect(self) -> None:
        """Say offline before leaving (the will says it only after a crash)."""

    async def _stop(self) -> None:
        if self._save_due is not None:
            self._save_due.cancel()
            self._save_births()
        client = self._client
        # Not heard back as another host's will while it listens its last moment.
        announced, self._announced = self._announced, False
        if client is not None and announced:  # a standby never said it was the host
            try:
                async with asyncio.timeout(5):
                    await client.publish(
                        codec.host_topic(self.config.name), self._state(False), qos=1, retain=True
                    )
                # Still listening a moment: what edges sent before they heard it is taken,
                # and what comes after they heard it stays in their spools.
                await asyncio.sleep(STOP_GRACE_S)
            except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                log.info("%s: could not say offline: %s", self.name, exc)
        await super()._stop()

    # --- messages ---

    def _on_message(self, topic: str, raw: Any) -> None:
        data = bytes(raw) if isinstance(raw, bytes | bytearray) else str(raw).encode()
        try:
            if len(data) > self.config.max_payload_bytes:
                raise Malformed(f"payload of {len(data)} bytes over max_payload_bytes")
            parsed = Topic.parse(topic)
            if parsed.kind is Kind.STATE:
                if self._announced and _says_offline(data):
                    task = asyncio.ensure_future(self._say_online())
                    self._chores.add(task)
                    task.add_done_callback(self._chores.discard)
                return
            if parsed.kind in (Kind.NCMD, Kind.DCMD):
                return  # commands to edges
            if parsed.group != self.config.group:
                return
            payload = codec.decode(data)
            node = self.nodes.setdefault(parsed.node, Node(parsed.node))
            kind = parsed.kind
            if kind is Kind.NBIRTH:
                self._nbirth(node, payload)
            elif kind is Kind.NDEATH:
                self._ndeath(node, payload)
            elif kind is Kind.DDEATH and parsed.device is not None:
                self._dead(node, node.devices.get(parsed.device, set()), "device death")
            elif not node.online:
                # Data of a node not born to this host (it restarted, or messages were
                # lost): ask for a rebirth rather than guess what its aliases mean.
                self._rebirth(node, "data before birth")
            elif self._seq_ok(node, payload):
                if kind is Kind.DBIRTH and parsed.device is not None:
                    self._dbirth(node, parsed.device, payload)
                elif kind in (Kind.DDATA, Kind.NDATA):
                    self._data(node, payload)
        except Malformed as exc:
            self.malformed += 1
            self._complain(topic, str(exc))
            self.sink([Sample(self.malformed_tag, utcnow(), float(self.malformed))])

    def _seq_ok(self, node: Node, payload: Any) -> bool:
        """Check a message's seq against the node's; a gap asks for a rebirth."""
        if not payload.HasField("seq"):
            raise Malformed(f"node {node.name}: message without seq")
        seq = payload.seq
        expected = node.next_seq
        node.next_seq = (seq + 1) % 256
        if expected is not None and seq != expected:
            node.gaps += 1
            self._rebirth(node, f"seq {seq} where {expected} was due")
            return True  # what arrived is still good data; the rebirth resynchronises
        return True

    def _rebirth(self, node: Node, why: str) -> None:
        node.rebirths += 1  # needed; asked when connected (a reconnection births them anyway)
        self._complain(f"node {node.name}", f"{why}: rebirth requested")
        client = self._client
        if client is None:
            return
        payload = codec.command([(codec.REBIRTH, None, codec.BOOLEAN, True)], utcnow())
        topic = str(Topic(self.config.group, Kind.NCMD, node.name))
        task = asyncio.get_running_loop().create_task(client.publish(topic, payload, qos=0))
        self._reports.add(task)  # kept until done, like the inventory's reports
        task.add_done_callback(self._reports.discard)

    def _nbirth(self, node: Node, payload: Any) -> None:
        bd_seq = None
        for m in payload.metrics:
            if m.name == codec.BD_SEQ:
                bd_seq = int(m.long_value)
        if bd_seq is None:
            raise Malformed(f"node {node.name}: NBIRTH without bdSeq")
        if not payload.HasField("seq"):
            raise Malformed(f"node {node.name}: NBIRTH without seq")
        node.bd_seq, node.online = bd_seq, True
        node.born_at = time.monotonic()
        node.next_seq = (payload.seq + 1) % 256
        node.aliases.clear()
        node.names.clear()
        node.devices.clear()
        self._save_births_soon()
        log.info("%s: node %s born (bdSeq %d)", self.name, node.name, bd_seq)

    def _dbirth(self, node: Node, device: str, payload: Any) -> None:
        tags = node.devices.setdefault(device, set())
        samples: list[Sample] = []
        now = utcnow()
        self._discover([m.name for m in payload.metrics if m.name and m.name not in self.tags])
        for m in payload.metrics:
            tag = m.name
            if not tag or m.datatype == 0:
                raise Malformed(f"node {node.name}/{device}: a birth metric needs name and type")
            spec = self.tags.get(tag)
            if spec is None:
                self.unmapped += 1
                continue
            alias = int(m.alias) if m.HasField("alias") else None
            if alias is not None:
                node.aliases[alias] = (tag, m.datatype)
            node.names[tag] = (alias, m.datatype, device)
            tags.add(tag)
            sample = self._sample(m, tag, m.datatype, now)
            if sample is not None:
                samples.append(sample)
        self._save_births_soon()
        self._births.set()
        self._births = asyncio.Event()
        if samples:
            self.samples_received += len(samples)
            self.sink(samples)

    def _discover(self, names: Sequence[str]) -> None:
        """Take the assets that unknown metric names (`commune/asset/signal`) describe."""
        register = self._register
        if not names or register is None or not self._classes:
            return
        found: dict[str, Asset] = {}
        for name in names:
            parts = name.split("/")
            if len(parts) != 3 or parts[0] not in self._communes:
                continue
            commune, asset_id, signal = parts
            known = self._classes.get(asset_id.split("-", 1)[0])
            if known is None or asset_id in register.assets or asset_id in register.retired:
                continue
            class_id, cls = known
            if signal not in {s.name for s in cls.signals} or asset_id in found:
                continue
            specs = tags_for(asset_id, commune, cls)
            found[asset_id] = Asset(asset_id, class_id, commune, 0.0, 0.0, cls.domain, specs)
        if found:
            self.tags = {**self.tags, **{t.name: t for a in found.values() for t in a.tags}}
            log.info("%s: %d assets found in births: %s", self.name, len(found),
                     ", ".join(sorted(found)[:20]))  # fmt: skip
            if self.on_discovered is not None:
                # At once, on the loop (births are rare): the alarms of the assets found are
                # bound before the birth's values, so a fault already on is an alarm.
                try:
                    self.on_discovered(list(found.values()))
                except Exception:
                    log.exception("%s: the inventory could not take the assets found", self.name)

    def _data(self, node: Node, payload: Any) -> None:
        now = utcnow()
        fallback = codec.from_ms(payload.timestamp) if payload.HasField("timestamp") else now
        live: list[Sample] = []
        past: list[Sample] = []
        for m in payload.metrics:
            if m.HasField("alias") and not m.name:
                known = node.aliases.get(int(m.alias))
                if known is None:
                    raise Malformed(f"node {node.name}: unknown alias {m.alias}")
                tag, dtype = known
            else:
                entry = node.names.get(m.name)
                if entry is None:
                    self.unmapped += 1
                    continue
                tag, dtype = m.name, entry[1]
            sample = self._sample(m, tag, dtype, fallback)
            if sample is None:
                continue
            (past if m.is_historical else live).append(sample)
            answer = codec.property_text(m, codec.COMMAND_RESULT)
            self._settle(tag, sample.value, answer)
        self.samples_received += len(live) + len(past)
        if live:
            self.sink(live)
        if past:
            self.historical += len(past)
            (self.store_historical or self.sink)(past)

    def _sample(self, m: Any, tag: str, dtype: int, fallback: Any) -> Sample | None:
        value = codec.value_of(m, dtype)
        spec = self.tags.get(tag)
        if value is not None and spec is not None and not _fits(spec, value):
            raise Malformed(f"{tag}: a {type(value).__name__} for a {spec.kind} tag")
        quality, status = codec.quality_of(m)
        ts = codec.from_ms(m.timestamp) if m.HasField("timestamp") else fallback
        if value is None:
            if quality is Quality.GOOD:
                return None  # a null birth value: nothing known yet
            value = math.nan
        return Sample(tag, ts, value, quality, utcnow(), status)

    def _ndeath(self, node: Node, payload: Any) -> None:
        bd_seq = next((int(m.long_value) for m in payload.metrics if m.name == codec.BD_SEQ), None)
        if bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            return  # the death of an older session: the node was born again since
        tags = set().union(*node.devices.values()) if node.devices else set()
        node.online = False
        node.next_seq = None
        self._dead(node, tags, "node death")

    def _dead(self, node: Node, tags: set[str], why: str) -> None:
        """Turn a dead node's (or device's) tags CommLoss now, once."""
        if not tags:
            return
        log.warning("%s: %s of %s: %d tags CommLoss", self.name, why, node.name, len(tags))
        now, nan = utcnow(), math.nan
        self.sink(
            [
                Sample(t, now, nan, Quality.COMM_LOSS, None, status_codes.BadNoCommunication)
                for t in sorted(tags)
            ]
        )
        for t in tags:
            for _, fut in self._waiters.pop(t, []):
                if not fut.done():
                    fut.set_result(WriteResult(t, WriteStatus.UNCONFIRMED, None, why))

    def _complain(self, where: str, why: str) -> None:
        now = time.monotonic()
        if now - self._logged.get(where, -math.inf) >= LOG_EVERY_S:
            self._logged[where] = now
            log.warning("%s: %s: %s", self.name, where, why)

    # --- commands ---

    def _settle(self, tag: str, value: Value, answer: str | None) -> None:
        waiting = self._waiters.get(tag)
        if not waiting:
            return
        for expected, fut in list(waiting):
            if fut.done():
                continue
            if answer is not None:
                status, detail = codec.outcome_status(answer)
                fut.set_result(WriteResult(tag, status, value, detail))
            elif _same(value, expected):  # an edge that answers by its value only
                fut.set_result(WriteResult(tag, WriteStatus.CONFIRMED, value))

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Send a DCMD to the edge serving the tag; confirmed by the edge's answer."""
        refused = self.check_write(tag, value)
        if refused is not None:
            return refused
        found = await self._server_of(tag)
        client = self._client
        if found is None or client is None:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "no edge online serves it")
        node, (alias, dtype, device) = found
        fut: asyncio.Future[WriteResult] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tag, []).append((value, fut))
        try:
            payload = codec.command([(tag, alias, dtype, value)], utcnow())
            topic = str(Topic(self.config.group, Kind.DCMD, node.name, device))
            await client.publish(topic, payload, qos=1)
            async with asyncio.timeout(self.config.write_timeout_s):
                return await fut
        except TimeoutError:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "no answer from the edge")
        except aiomqtt.MqttError as exc:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, f"not sent: {exc}")
        finally:
            waiting = self._waiters.get(tag, [])
            self._waiters[tag] = [(v, f) for v, f in waiting if f is not fut]
            if not self._waiters[tag]:
                del self._waiters[tag]

    async def _server_of(self, tag: str) -> tuple[Node, tuple[int | None, int, str]] | None:
        """Return the online node serving a tag, waiting for the births under way."""
        deadline = time.monotonic() + BIRTH_WAIT_S
        while True:
            for n in self.nodes.values():
                if n.online and tag in n.names:
                    return n, n.names[tag]
            now = time.monotonic()
            left = deadline - now
            if left <= 0 or not any(
                n.online and now - n.born_at < BIRTH_WAIT_S for n in self.nodes.values()
            ):
                return None  # no node is being born: none will serve it soon
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._births.wait()

    def status(self) -> dict[str, Any]:
        """Return the host's state: nodes online, gaps, rebirths, malformed messages."""
        return {
            **super().status(),
            "nodes": {n.name: _node_status(n) for n in self.nodes.values()},
            "malformed": self.malformed,
            "unmapped": self.unmapped,
            "historical": self.historical,
        }


def _node_status(n: Node) -> dict[str, Any]:
    return {"online": n.online, "bd_seq": n.bd_seq, "gaps": n.gaps, "rebirths": n.rebirths,
            "metrics": len(n.names)}  # fmt: skip


def _fits(spec: TagSpec, value: Value) -> bool:
    """Tell whether a value is of the kind its tag holds."""
    if spec.kind == "bool":
        return isinstance(value, bool)
    if spec.kind == "str":
        return isinstance(value, str)
    return isinstance(value, float | int) and not isinstance(value, bool)


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
