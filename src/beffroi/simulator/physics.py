"""Simulation engine: every asset's model stepped in simulated time, reporting changes."""

from __future__ import annotations

import logging
import math
import zlib
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from beffroi.core.model import Asset, TagSpec, Value
from beffroi.core.register import Register
from beffroi.simulator.equipment import Clock, Model, blank, py_value
from beffroi.simulator.models import MODELS

logger = logging.getLogger(__name__)


class _Channel:
    """One signal of one class: current values, what was last reported, when it is next due."""

    def __init__(self, tags: list[str], spec: TagSpec, fmt: tuple[int, float], due: np.ndarray):
        self.tags, self.kind, self.interval = tags, spec.kind, spec.interval_s
        self.decimals, self.deadband = fmt[0], 0.0 if spec.writable else fmt[1]
        self.value = blank(spec.kind, len(tags))
        self.last = self.value.copy()
        self.due = due

    def set(self, values: np.ndarray) -> None:
        """Take new values, in reported form (rounded floats)."""
        if self.kind == "float":
            self.value = np.round(np.asarray(values, float), self.decimals) + 0.0  # no -0.0
        else:
            self.value = np.array(values, dtype=self.value.dtype)

    def changes(self, t: float) -> list[tuple[str, Value]]:
        """Return the tags to report now, and remember them as reported."""
        changed = self.value != self.last
        if self.kind == "float" and self.deadband > 0:
            due = self.due <= t
            big = np.abs(self.value - self.last) > self.deadband
            emit = changed & (due | big)
            self.due[due | emit] = t + self.interval
        else:
            emit = changed
        idx = np.flatnonzero(emit)
        if not idx.size:
            return []
        self.last[idx] = self.value[idx]
        return list(
            zip([self.tags[i] for i in idx.tolist()], self.value[idx].tolist(), strict=True)
        )


class Metropolis:
    """Every asset's simulated state, stepped in simulated time, reporting only changes."""

    def __init__(
        self,
        register: Register,
        *,
        seed: int,
        fault_rate_per_hour: float,
        start: datetime,
        timezone: str = "Europe/Paris",
    ):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.tz = ZoneInfo(timezone)
        self._t = start.timestamp()
        by_class: dict[str, list[Asset]] = defaultdict(list)
        for a in register.assets.values():
            by_class[a.asset_class].append(a)
        clk = self._clock(self._t, 0.0)
        phase = np.random.default_rng([seed, 0])
        self._blocks: list[tuple[Model, dict[str, _Channel]]] = []
        self._where: dict[str, tuple[Model, _Channel, int]] = {}
        self._models: dict[str, tuple[Model, int]] = {}
        for cls_id in sorted(by_class):
            assets = by_class[cls_id]
            rng = np.random.default_rng([seed, zlib.crc32(cls_id.encode())])
            model = MODELS.get(cls_id, Model)(assets, rng, fault_rate_per_hour)
            model.setup(clk)
            out = model.update(clk)
            chans: dict[str, _Channel] = {}
            for spec in assets[0].tags:
                tags = [a.tag(spec.signal) for a in assets]
                due = self._t + phase.uniform(0.0, spec.interval_s, len(assets))
                ch = _Channel(tags, spec, model.FORMAT.get(spec.signal, (3, math.inf)), due)
                if spec.signal in out:
                    ch.set(out[spec.signal])
                ch.last = ch.value.copy()
                chans[spec.signal] = ch
                for i, tag in enumerate(tags):
                    self._where[tag] = (model, ch, i)
            for i, a in enumerate(assets):
                self._models[a.id] = (model, i)
            self._blocks.append((model, chans))
        logger.info("simulating %d assets, %d tags", len(self._models), len(self._where))

    def _clock(self, t: float, dt: float) -> Clock:
        local = datetime.fromtimestamp(t, self.tz)
        hour = local.hour + local.minute / 60 + local.second / 3600
        return Clock(t, dt, hour, local.weekday(), local.date(), self.tz)

    @property
    def now(self) -> datetime:
        """Return the simulated time of the last step (UTC)."""
        return datetime.fromtimestamp(self._t, UTC)

    @property
    def tags(self) -> list[str]:
        """Return every simulated tag name."""
        return list(self._where)

    def values(self) -> dict[str, Value]:
        """Return the last reported value of every tag."""
        return {t: py_value(ch.last[i]) for t, (_, ch, i) in self._where.items()}

    def value(self, tag: str) -> Value:
        """Return the last reported value of one tag."""
        _, ch, i = self._where[tag]
        return py_value(ch.last[i])

    def step(self, now: datetime) -> list[tuple[str, Value]]:
        """Advance to `now` and return the (tag, value) pairs to report."""
        t = now.timestamp()
        dt = t - self._t
        if dt <= 0:
            return []
        self._t = t
        clk = self._clock(t, dt)
        changes: list[tuple[str, Value]] = []
        for model, chans in self._blocks:
            out = model.update(clk)
            for signal, ch in chans.items():
                if signal in out:
                    ch.set(out[signal])
                changes.extend(ch.changes(t))
        return changes

    def refusal(self, tag: str) -> str | None:
        """Return why the equipment refuses a write to a setpoint now, or None."""
        model, _, i = self._where[tag]
        return model.refusal(tag.rsplit("/", 1)[1], i)

    def set_setpoint(self, tag: str, value: Any) -> Value | None:
        """Apply a written setpoint from the next step on; return it, None if not taken."""
        model, ch, i = self._where[tag]
        signal = tag.rsplit("/", 1)[1]
        if signal not in model.sp:
            raise KeyError(f"{tag} is not a writable signal")
        why = model.refusal(signal, i)
        if why is not None:
            logger.info("%s refuses %r: %s", tag, value, why)
            return None
        written = model.accept(signal, value)
        if written is None:
            logger.warning("ignored unusable setpoint %r for %s", value, tag)
            return None
        model.sp[signal][i] = written
        # The node now holds what the client wrote; report the accepted value if it differs.
        ch.last[i] = value if ch.kind != "float" else float(value)
        return written

    def force_fault(self, asset_id: str, on: bool | None) -> list[tuple[str, Value]]:
        """Force an asset's fault on or off (None: back to random faults); return changes."""
        model, i = self._models[asset_id]
        model.forced[i] = -1 if on is None else int(on)
        fault = bool(on) if on is not None else bool(model.fault_until[i] > self._t)
        model.fault[i] = fault
        chans = dict(self._blocks)[model]
        ch = chans.get("fault")
        if ch is None:
            return []
        ch.value[i] = fault
        if ch.last[i] == fault:
            return []
        ch.last[i] = fault
        return [(ch.tags[i], fault)]
