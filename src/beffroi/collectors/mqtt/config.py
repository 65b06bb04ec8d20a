"""Config of `[[collectors.mqtt]]`: the broker, and topic rules naming commune, asset, signal."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from beffroi.collectors.config import CollectorConfig, scope_problems
from beffroi.core.config import Credentials, Slug, Strict
from beffroi.core.site import Site

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class MqttTopicConfig(Strict):
    """A topic filter whose levels name the commune, asset (and signal) of each message."""

    filter: str = Field(min_length=1)
    commune_level: int = Field(ge=0)
    asset_level: int = Field(ge=0)
    signal: Slug | None = None
    signal_level: int | None = Field(default=None, ge=0)
    format: Literal["json", "plain"] = "json"
    value_path: str = "value"
    timestamp_path: str | None = None
    unit_path: str | None = None
    command_topic: str | None = None

    @field_validator("filter")
    @classmethod
    def _mqtt_filter(cls, v: str) -> str:
        levels = v.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"'#' must be the whole last level of a filter, got {v!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of a filter, got {v!r}")
        return v

    @field_validator("command_topic")
    @classmethod
    def _command_template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "+" in v or "#" in v:
            raise ValueError(f"a command topic is published to, it cannot hold wildcards: {v!r}")
        for name in _PLACEHOLDER.findall(v):
            if name not in ("commune", "asset", "signal"):
                raise ValueError(
                    f"unknown placeholder {{{name}}} (use {{commune}}, {{asset}}, {{signal}})"
                )
        return v

    @model_validator(mode="after")
    def _levels(self) -> MqttTopicConfig:
        if self.command_topic and self.format == "json" and "[" in self.value_path:
            raise ValueError("a command is written at value_path, which cannot index a list")
        if (self.signal is None) == (self.signal_level is None):
            raise ValueError("give either signal (fixed) or signal_level (from the topic)")
        levels = self.filter.split("/")
        named = {"commune_level": self.commune_level, "asset_level": self.asset_level}
        if self.signal_level is not None:
            named["signal_level"] = self.signal_level
        for key, idx in named.items():
            if idx >= len(levels) or levels[idx] != "+":
                raise ValueError(
                    f"{key} = {idx}: level {idx} of {self.filter!r} must be a '+' wildcard"
                )
        return self


class MqttCollectorConfig(CollectorConfig, Credentials):
    """An MQTT broker and the topics that carry equipment values."""

    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = False
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_payload_bytes: int = Field(default=65_536, ge=16)
    write_timeout_s: float = Field(default=5.0, gt=0)
    communes: list[str] = []
    classes: list[str] = []
    topics: list[MqttTopicConfig] = Field(min_length=1)
    # Discovery: a message naming an asset nobody listed (a commune of the metropolis, an id
    # whose prefix names a class, a signal of that class) makes the asset join the inventory
    # "to be placed", and its values are collected, instead of being counted as unmapped.
    discover: bool = False
    discover_max: int = Field(default=10_000, ge=1, le=1_000_000)  # assets found per start


def mqtt_problems(site: Site, configs: list[MqttCollectorConfig]) -> list[str]:
    """Check the MQTT collectors' filters and that fixed topic signals exist in their classes."""
    problems: list[str] = []
    classes = site.asset_classes
    for i, col in enumerate(configs):
        problems += scope_problems(site, f"collectors.mqtt[{i}]", col.communes, col.classes)
    for i, col in enumerate(configs):
        wanted = [classes[k] for k in col.classes if k in classes] or list(classes.values())
        signals = {s.name for c in wanted for s in c.signals}
        for j, topic in enumerate(col.topics):
            if topic.signal is not None and topic.signal not in signals:
                problems.append(
                    f"collectors.mqtt[{i}].topics[{j}].signal: no asset class has a signal "
                    f"{topic.signal!r}"
                )
    return problems
