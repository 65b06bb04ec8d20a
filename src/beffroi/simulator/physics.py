"""Simulation engine: every asset's model stepped in simulated time, reporting changes."""

from __future__ import annotations

import logging
import math
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from beffroi.core.model import Asset, TagSpec, Value
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.simulator.equipment import Clock, Model, blank, py_value
from beffroi.simulator.models import MODELS

logger = logging.getLogger(__name__)


class Columns(NamedTuple):
    """The reports of one signal at one step: kind, indices into `Metropolis.tags`, values."""

    kind: str
    at: np.ndarray
    values: np.ndarray


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

    def emit(self, t: float) -> np.ndarray:
        """Return the indices of the values to report now, and remember them as reported."""
        changed = self.value != self.last
        if self.kind == "float" and self.deadband > 0:
            due = self.due <= t
            big = np.abs(self.value - self.last) > self.deadband
            emit = changed & (due | big)
            self.due[due | emit] = t + self.interval
        else:
            emit = changed
        idx = np.flatnonzero(emit)
        if idx.size:
            self.last[idx] = self.value[idx]
        return idx

    def changes(self, t: float) -> list[tuple[str, Value]]:
        """Return the tags to report now, and remember them as reported."""
        idx = self.emit(t)
        if not idx.size:
            return []
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
        self._classes: dict[str, Model] = {}
        self._bases: dict[int, int] = {}  # id(channel) → index of its first tag in `tags`
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
                self._bases[id(ch)] = len(self._where)
                for i, tag in enumerate(tags):
                    self._where[tag] = (model, ch, i)
            for i, a in enumerate(assets):
                self._models[a.id] = (model, i)
            self._blocks.append((model, chans))
            self._classes[cls_id] = model
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

    def step_columns(self, now: datetime) -> list[Columns]:
        """Advance to `now` and return the reports as columns: no per-value Python objects."""
        t = now.timestamp()
        dt = t - self._t
        if dt <= 0:
            return []
        self._t = t
        clk = self._clock(t, dt)
        out: list[Columns] = []
        for model, chans in self._blocks:
            values = model.update(clk)
            for signal, ch in chans.items():
                if signal in values:
                    ch.set(values[signal])
                idx = ch.emit(t)
                if idx.size:
                    out.append(Columns(ch.kind, idx + self._bases[id(ch)], ch.value[idx]))
        return out

    def model(self, asset_class: str) -> Model | None:
        """Return the model stepping an asset class, None if the register has none of it."""
        return self._classes.get(asset_class)

    def models(self) -> list[Model]:
        """Return the models of every simulated class."""
        return [model for model, _ in self._blocks]

    def clock(self, dt: float = 0.0) -> Clock:
        """Return the simulated clock at the last step."""
        return self._clock(self._t, dt)

    def reader(self, tags: list[str]) -> Callable[[], np.ndarray]:
        """Return a function giving the current values of some tags as one array, in order."""
        parts: dict[int, tuple[_Channel, list[int], list[int]]] = {}
        for k, tag in enumerate(tags):
            _, ch, i = self._where[tag]
            parts.setdefault(id(ch), (ch, [], []))[1].append(k)
            parts[id(ch)][2].append(i)
        groups = [(ch, np.array(ks), np.array(ix)) for ch, ks, ix in parts.values()]

        def read() -> np.ndarray:
            out = np.zeros(len(tags))
            for ch, ks, ix in groups:
                out[ks] = ch.value[ix]
            return out

        return read

    def resume(self, values: Mapping[str, float]) -> int:
        """Take counters' last stored values as the state they go on from; return how many."""
        taken = 0
        for tag, value in values.items():
            where = self._where.get(tag)
            if where is None or not isinstance(value, int | float) or not math.isfinite(value):
                continue
            model, ch, i = where
            if model.resume(tag.rsplit("/", 1)[1], i, float(value)):
                ch.value[i] = ch.last[i] = value  # reported as it was: no spurious change
                taken += 1
        return taken

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


def counter_tags(register: Register) -> list[str]:
    """Return the tags of every simulated counter: what a new start takes back from storage."""
    return [
        a.tag(signal)
        for a in register.assets.values()
        for signal in MODELS.get(a.asset_class, Model).COUNTERS
    ]


def stored_counters(historian: Historian, register: Register) -> dict[str, float]:
    """Return the last stored value of every simulated counter (none on a new historian)."""
    tags = counter_tags(register)
    if not tags:
        return {}
    df = historian.latest(tags)
    return {
        str(t): float(v)
        for t, v in zip(df["tag"].tolist(), df["value"].tolist(), strict=True)
        if isinstance(v, int | float) and math.isfinite(v)
    }
