"""MQTT collector: topic filters mapped to tags, JSON or plain payloads, QoS 1, setpoints."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any, Self

import aiomqtt
from aiomqtt.types import PayloadType

from beffroi.collectors.base import Backoff, CollectorBase
from beffroi.collectors.mqtt.config import MqttCollectorConfig
from beffroi.collectors.mqtt.payload import Malformed, TopicRule, command_payload, parse, tag_of
from beffroi.core.config import ASSET_ID
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

log = logging.getLogger(__name__)

_ASSET_ID = re.compile(ASSET_ID)

LOG_EVERY_S = 60.0  # a misbehaving topic is logged at most once a minute
HELD_MAX = 1000  # values of a found asset held while the inventory takes it (then passed on)
COUNTERS_EVERY_S = 1.0  # the _system counters are published at most once a second


class MqttCollector(CollectorBase[MqttCollectorConfig]):
    """Subscribe to topic filters on one broker and turn messages into samples of known tags."""

    protocol = "mqtt"

    def __init__(self, config: MqttCollectorConfig, tags: Sequence[TagSpec], sink: Sink):
        super().__init__(config, tags, sink)
        self.rules = [TopicRule.of(t) for t in config.topics]
        self.client_id = config.client_id or f"beffroi-{config.name}"
        self.malformed = 0
        self.unmapped = 0
        self._client: aiomqtt.Client | None = None
        self._logged: dict[str, tuple[float, int]] = {}
        self._counters_at = 0.0
        self._counters_due: asyncio.TimerHandle | None = None
        self._waiters: dict[str, list[tuple[Value, asyncio.Future[Value]]]] = {}
        self._last: dict[str, Value] = {}
        self.reconnects = 0
        # Discovery (`discover = true`): what a message may name, and what was found already.
        self._register: Register | None = None
        self._classes: dict[str, tuple[str, AssetClassConfig]] = {}  # id prefix → class
        self._communes: set[str] = set()
        self._found: set[str] = set()
        # Samples of assets found, held until the inventory has them (their alarms bound).
        self._held: dict[str, list[Sample]] = {}
        self.discovered = 0

    @classmethod
    def from_config(
        cls, config: MqttCollectorConfig, site: Site, register: Register, sink: Sink
    ) -> Self:
        """Build the collector with its register tags; with discovery, what it may find."""
        collector = super().from_config(config, site, register, sink)
        if config.discover:
            collector._register = register
            collector._classes = {
                c.prefix: (cid, c)
                for cid, c in site.asset_classes.items()
                if not config.classes or cid in config.classes
            }
            collector._communes = set(config.communes or site.commune_ids())
        return collector

    @classmethod
    def wants(cls, config: MqttCollectorConfig, asset: Asset) -> list[TagSpec]:
        """Return the tags of an asset in scope that one of the topic rules can carry."""
        return [
            t
            for t in super().wants(config, asset)
            if any(r.signal is None or r.signal == t.signal for r in config.topics)
        ]

    @property
    def malformed_tag(self) -> str:
        """Return the tag counting payloads that gave no value."""
        return f"_system/collector/{self.name}/malformed"

    @property
    def unmapped_tag(self) -> str:
        """Return the tag counting messages whose topic names no tag of this collector."""
        return f"_system/collector/{self.name}/unmapped"

    async def _stop(self) -> None:
        if self._counters_due is not None:
            self._counters_due.cancel()
        await super()._stop()

    async def _run(self) -> None:
        cfg = self.config
        backoff = Backoff(cfg.reconnect_min_s, cfg.reconnect_max_s)
        where = f"{cfg.host}:{cfg.port}"
        filters = list(dict.fromkeys(t.filter for t in cfg.topics))
        subscriptions: list[tuple[str, int]] = [(f, cfg.qos) for f in filters]
        while True:
            error = "disconnected"
            try:
                creds = cfg.login()
                async with aiomqtt.Client(
                    cfg.host,
                    cfg.port,
                    identifier=self.client_id,
                    clean_session=cfg.clean_session,
                    keepalive=cfg.keepalive_s,
                    username=creds[0] if creds else None,
                    password=creds[1] if creds else None,
                    timeout=10,
                    logger=log,
                ) as client:
                    self._client = client
                    # QoS 1 on a persistent session: the broker keeps what arrives while we
                    # are away and delivers it on reconnect.
                    await client.subscribe(subscriptions)
                    backoff.reset()
                    self._went_up()
                    self._ready.set()
                    log.info("%s: subscribed to %d filters on %s", self.name, len(filters), where)
                    async for message in client.messages:
                        self._on_message(str(message.topic), message.payload)
            except asyncio.CancelledError:
                raise
            except (aiomqtt.MqttError, MissingCredentials, OSError) as exc:
                error = (
                    str(exc)
                    if isinstance(exc, MissingCredentials)
                    else (f"{type(exc).__name__}: {exc}")
                )
                if self.connected or not self._outage_marked:
                    log.warning("%s: broker %s: %s", self.name, where, error)
            except Exception as exc:  # the collector never dies on a bug; it says so and goes on
                error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: unexpected error", self.name)
            self._client = None
            self._ready.clear()
            self._went_down(error)
            await asyncio.sleep(backoff.delay())
            self.reconnects += 1

    def _on_message(self, topic: str, payload: PayloadType) -> None:
        """Turn one message into a sample, or count and (rarely) log why it could not."""
        first: tuple[TopicRule, tuple[str, str, str]] | None = None
        for rule in self.rules:
            match = rule.match(topic)
            if match is None:
                continue
            spec = self.tags.get(tag_of(match))
            if spec is not None:
                self._take(topic, rule, spec, payload)
                return
            first = first or (rule, match)
        if first is not None and self._classes:
            spec = self._discover(*first)
            if spec is not None:
                self._take(topic, first[0], spec, payload)
                return
        self.unmapped += 1
        self._complain(topic, "no tag of this collector matches the topic")
        self._counters_changed()

    def _take(self, topic: str, rule: TopicRule, spec: TagSpec, payload: PayloadType) -> None:
        """Read one message's value for its tag, and hand the sample on."""
        data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
        try:
            value, ts = parse(bytes(data), rule.config, spec, self.config.max_payload_bytes)
        except Malformed as exc:
            self.malformed += 1
            self._complain(topic, f"malformed payload: {exc}")
            self._counters_changed()
            return
        # No source time in the payload: the arrival time stands for both.
        now = utcnow()
        sample = Sample(spec.name, ts or now, value, Quality.GOOD, now)
        self.samples_received += 1
        self._last[spec.name] = value
        held = self._held.get(spec.asset)
        if held is not None and len(held) < HELD_MAX:
            held.append(sample)
        else:
            self.sink([sample])
        self._settle(spec.name, value)

    def _discover(self, rule: TopicRule, match: tuple[str, str, str]) -> TagSpec | None:
        """Take the asset a message names when nobody listed it; return the message's tag.

        Its tags (the signals of its class that a topic rule can carry) are collected at once,
        and the inventory is told, off the loop: it adds the asset "to be placed", whose
        alarms then bind. An id the register has (elsewhere, or retired) is not taken again.
        """
        commune, asset_id, signal = match
        if asset_id in self._found or len(self._found) >= self.config.discover_max:
            return None
        found = self._classes.get(asset_id.split("-", 1)[0])
        register = self._register
        if (
            found is None
            or register is None
            or commune not in self._communes
            or not _ASSET_ID.fullmatch(asset_id)
            or asset_id in register.assets
            or asset_id in register.retired
        ):
            return None
        class_id, cls = found
        if signal not in {s.name for s in cls.signals}:
            return None
        specs = [
            t
            for t in tags_for(asset_id, commune, cls)
            if any(r.produces(t.signal) for r in self.rules)
        ]
        self._found.add(asset_id)
        self.discovered += 1
        self.tags = {**self.tags, **{t.name: t for t in specs}}
        log.info(
            "%s: found %s (%s, %s) on %s",
            self.name,
            asset_id,
            class_id,
            commune,
            rule.config.filter,
        )
        asset = Asset(asset_id, class_id, commune, 0.0, 0.0, cls.domain, specs)
        if self._loop is None or self.on_discovered is None:
            self._report(self.on_discovered, [asset])
        else:
            self._held[asset_id] = []
            task = asyncio.get_running_loop().create_task(self._introduce(asset))
            self._reports.add(task)
            task.add_done_callback(self._reports.discard)
        if len(self._found) == self.config.discover_max:
            log.warning(
                "%s: %d assets found by discovery; no more are taken until the next start "
                "(discover_max)",
                self.name,
                len(self._found),
            )
        return self.tags.get(tag_of(match))

    async def _introduce(self, asset: Asset) -> None:
        """Tell the inventory of an asset found, then pass on its values held meanwhile.

        So that a fault already on in its first message is an alarm: its rules are bound
        when the inventory has taken it (or its values pass anyway if that failed).
        """
        try:
            if self.on_discovered is not None:
                await self._call_hook(self.on_discovered, [asset])
        finally:
            held = self._held.pop(asset.id, [])
            if held:
                self.sink(held)

    def _complain(self, topic: str, why: str) -> None:
        now = time.monotonic()
        last, suppressed = self._logged.get(topic, (-math.inf, 0))
        if now - last < LOG_EVERY_S:
            self._logged[topic] = (last, suppressed + 1)
            return
        more = f" ({suppressed} more since the last report)" if suppressed else ""
        log.warning("%s: %s: %s%s", self.name, topic, why, more)
        self._logged[topic] = (now, 0)

    def _counters_changed(self) -> None:
        if self._counters_due is not None:
            return
        wait = self._counters_at + COUNTERS_EVERY_S - time.monotonic()
        if wait <= 0:
            self._publish_counters()
        else:
            self._counters_due = asyncio.get_running_loop().call_later(wait, self._publish_counters)

    def _publish_counters(self) -> None:
        self._counters_due = None
        self._counters_at = time.monotonic()
        now = utcnow()
        self.sink(
            [
                Sample(self.malformed_tag, now, float(self.malformed)),
                Sample(self.unmapped_tag, now, float(self.unmapped)),
            ]
        )

    def status(self) -> dict[str, Any]:
        """Return the collector's state, with its malformed and unmapped message counts."""
        return {
            **super().status(),
            "malformed": self.malformed,
            "unmapped": self.unmapped,
            "discovered": self.discovered,
        }

    def _settle(self, tag: str, value: Value) -> None:
        """Confirm the writes waiting for this tag's state to report their value."""
        waiting = self._waiters.get(tag)
        if not waiting:
            return
        for expected, fut in list(waiting):
            if not fut.done() and _same(value, expected):
                fut.set_result(value)

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Publish a setpoint to the command topic; confirmed when the state topic reports it."""
        refused = self.check_write(tag, value)
        if refused is not None:
            return refused
        spec = self.tags[tag]
        rule = next(
            (r for r in self.rules if r.produces(spec.signal) and r.command_topic(spec)), None
        )
        if rule is None:
            return WriteResult(tag, WriteStatus.REFUSED, value, f"no command_topic for {tag}")
        topic = rule.command_topic(spec)
        assert topic is not None
        client = self._client
        if client is None or not self.connected:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, "not connected")
        typed: Value = float(value) if spec.kind == "float" else value
        fut: asyncio.Future[Value] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(tag, []).append((typed, fut))
        timeout = self.config.write_timeout_s
        try:
            await client.publish(
                topic, command_payload(typed, rule.config), qos=self.config.qos, timeout=timeout
            )
            async with asyncio.timeout(timeout):
                confirmed = await fut
        except aiomqtt.MqttError as exc:
            return WriteResult(tag, WriteStatus.UNCONFIRMED, value, f"not published: {exc}")
        except TimeoutError:
            last = self._last.get(tag)
            detail = f"{topic}: state did not report {typed!r} within {timeout:g} s"
            if last is not None:
                detail += f" (last reported {last!r})"
            return WriteResult(tag, WriteStatus.UNCONFIRMED, last, detail)
        finally:
            waiting = self._waiters[tag]
            waiting[:] = [w for w in waiting if w[1] is not fut]
        return WriteResult(tag, WriteStatus.CONFIRMED, confirmed)


def _same(a: Value, b: Value) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b
