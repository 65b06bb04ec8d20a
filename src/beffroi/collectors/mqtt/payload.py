"""MQTT topics and payloads: topic levels → tags, JSON or plain payloads → values, commands."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beffroi.collectors.mqtt.config import MqttTopicConfig
from beffroi.core.model import TagSpec, Value, tag_name

_INDEX = re.compile(r"^(.*?)\[(\d+)\]$")
_TRUE = {"true", "1", "on", "yes"}
_FALSE = {"false", "0", "off", "no"}


class Malformed(ValueError):
    """A payload that cannot give a value: the reason is what the log and counter record."""


@dataclass(frozen=True, slots=True)
class TopicRule:
    """A topic filter compiled for matching, with where the commune, asset and signal are."""

    config: MqttTopicConfig
    levels: tuple[str, ...]

    @classmethod
    def of(cls, config: MqttTopicConfig) -> TopicRule:
        """Compile a topic config."""
        return cls(config, tuple(config.filter.split("/")))

    def match(self, topic: str) -> tuple[str, str, str] | None:
        """Return (commune, asset, signal) when the topic matches the filter, else None."""
        parts = topic.split("/")
        levels = self.levels
        if levels[-1] == "#":
            if len(parts) < len(levels) - 1:
                return None
        elif len(parts) != len(levels):
            return None
        for level, part in zip(levels, parts, strict=False):
            if level == "#":
                break
            if level != "+" and level != part:
                return None
        cfg = self.config
        signal = cfg.signal if cfg.signal is not None else parts[cfg.signal_level or 0]
        return parts[cfg.commune_level], parts[cfg.asset_level], signal

    def produces(self, signal: str) -> bool:
        """Say whether this rule can yield a tag of that signal."""
        return self.config.signal is None or self.config.signal == signal

    def command_topic(self, spec: TagSpec) -> str | None:
        """Return the topic a setpoint for this tag is published to, if the rule has one."""
        template = self.config.command_topic
        if template is None:
            return None
        return template.format(commune=spec.commune, asset=spec.asset, signal=spec.signal)


def lookup(doc: Any, path: str) -> Any:
    """Follow a dotted path with optional [n] indexes (`data.values[0].v`); KeyError if absent."""
    node = doc
    for part in path.split("."):
        m = _INDEX.match(part)
        key, index = (m.group(1), int(m.group(2))) if m else (part, None)
        if key:
            if not isinstance(node, dict) or key not in node:
                raise KeyError(path)
            node = node[key]
        if index is not None:
            if not isinstance(node, list) or index >= len(node):
                raise KeyError(path)
            node = node[index]
    return node


def _typed(raw: Any, spec: TagSpec, where: str) -> Value:
    if spec.kind == "float":
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise Malformed(f"{where} is {type(raw).__name__} {raw!r:.40}, expected a number")
        value = float(raw)
        if not math.isfinite(value):
            raise Malformed(f"{where} is not a finite number")
        return value
    if spec.kind == "bool":
        if not isinstance(raw, bool):
            raise Malformed(f"{where} is {type(raw).__name__} {raw!r:.40}, expected true/false")
        return raw
    if not isinstance(raw, str):
        raise Malformed(f"{where} is {type(raw).__name__}, expected text")
    return raw


def _plain(text: str, spec: TagSpec) -> Value:
    if spec.kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise Malformed(f"{text!r:.40} is not a number") from None
        if not math.isfinite(value):
            raise Malformed("not a finite number")
        return value
    if spec.kind == "bool":
        low = text.lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise Malformed(f"{text!r:.40} is not true/false")
    return text


def _timestamp(raw: Any) -> datetime:
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        # Epoch seconds, or milliseconds when the number is too big to be seconds.
        seconds = raw / 1000.0 if raw > 1e11 else float(raw)
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            raise Malformed(f"timestamp {raw!r} is out of range") from None
    if isinstance(raw, str):
        try:
            ts = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise Malformed(f"timestamp {raw!r:.40} is not ISO 8601") from None
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    raise Malformed(f"timestamp is {type(raw).__name__}, expected ISO 8601 or epoch seconds")


def parse(
    payload: bytes, rule: MqttTopicConfig, spec: TagSpec, max_bytes: int
) -> tuple[Value, datetime | None]:
    """Return (value, source timestamp or None) from a payload, or raise Malformed."""
    if len(payload) > max_bytes:
        raise Malformed(f"payload of {len(payload)} bytes exceeds {max_bytes}")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise Malformed("payload is not UTF-8 text") from None
    if rule.format == "plain":
        return _plain(text, spec), None
    try:
        doc = json.loads(text)
    except ValueError:
        raise Malformed("payload is not JSON") from None
    try:
        value = _typed(lookup(doc, rule.value_path), spec, rule.value_path)
    except KeyError:
        raise Malformed(f"no field {rule.value_path!r}") from None
    if rule.unit_path is not None:
        try:
            unit = lookup(doc, rule.unit_path)
        except KeyError:
            raise Malformed(f"no field {rule.unit_path!r}") from None
        if unit != spec.unit:
            raise Malformed(f"unit {unit!r:.20} where {spec.unit!r} is expected")
    ts = None
    if rule.timestamp_path is not None:
        try:
            ts = _timestamp(lookup(doc, rule.timestamp_path))
        except KeyError:
            raise Malformed(f"no field {rule.timestamp_path!r}") from None
    return value, ts


def command_payload(value: Value, rule: MqttTopicConfig) -> bytes:
    """Encode a setpoint the way the state topic reports it (JSON at value_path, or plain)."""
    if rule.format == "plain":
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        return text.encode()
    doc: Any = value
    for part in reversed(rule.value_path.split(".")):
        doc = {part: doc}
    return json.dumps(doc).encode()


def tag_of(match: tuple[str, str, str]) -> str:
    """Return the tag name of a (commune, asset, signal) match."""
    return tag_name(*match)
