"""Compression at the edge, as in the PI System: exception deadband and swinging door, per tag.

A filter sees each tag's samples in time order and says which to store now. Rules common to
both methods:

- a sample that is not Good, or has no finite numeric value, always passes, after the held
  snapshot (so the stored trend ends on the last good value before the gap), and restarts the
  filter: the next good sample is stored;
- a good sample less than `min_time` after the last stored one is dropped (PI's ExcMin/CompMin);
- stored samples are never more than `max_time` apart while samples keep arriving (PI's
  ExcMax/CompMax);
- a sample older than (or as old as) the last one seen passes unchanged: late data is stored.

Guarantees, for samples not dropped by `min_time`: with the deadband, holding the last stored
value until the next (a stepped trend) stays within the deviation, and linear interpolation
within twice the deviation; with the swinging door, linear interpolation between stored samples
stays within the deviation.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from beffroi.core.model import Quality, Sample
from beffroi.core.register import Register
from beffroi.historian.config import HistorianSite

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompressionSpec:
    """One tag's method, absolute deviation (in the signal's unit) and time limits."""

    method: Literal["deadband", "swinging_door"]
    deviation: float
    min_time: timedelta = timedelta(0)
    max_time: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if self.deviation < 0 or self.min_time >= self.max_time:
            raise ValueError(f"invalid compression spec {self}")


def _number(s: Sample) -> float | None:
    """Return a good sample's finite numeric value, or None when it must pass through."""
    if s.quality is not Quality.GOOD or isinstance(s.value, str) or s.value is None:
        return None
    v = float(s.value)
    return v if math.isfinite(v) else None


class _Filter(ABC):
    """The rules both methods share: late data, samples without a value, min_time, max_time."""

    def __init__(self, spec: CompressionSpec):
        self.dev = spec.deviation
        self.min_s = spec.min_time.total_seconds()
        self.max_s = spec.max_time.total_seconds()
        self._last: tuple[float, float] | None = None  # last stored (t, v)
        self._held: Sample | None = None  # last accepted and not stored yet
        self._seen = -math.inf

    def offer(self, s: Sample) -> list[Sample]:
        """Return the samples to store now."""
        v, t = _number(s), s.ts.timestamp()
        if t <= self._seen:
            return [s]
        self._seen = t
        if v is None:
            flushed = self.flush()
            self._last = None
            return [*flushed, s]
        if self._last is None:
            self._store(t, v)
            return [s]
        out: list[Sample] = []
        if t - self._last[0] > self.max_s:
            out = self.flush()
            if not out or t - self._last[0] > self.max_s:
                # Nothing held, or a gap longer than max_time in the input: store this one.
                self._store(t, v)
                return [*out, s]
        if t - self._last[0] < self.min_s:
            return out
        return self._compress(s, t, v, out)

    @property
    def _anchor(self) -> tuple[float, float]:
        """Return the last stored (t, v), which every good sample past the first is judged by."""
        # offer() stores a good sample whenever there is none, so _compress always has one.
        assert self._last is not None
        return self._last

    @abstractmethod
    def _compress(self, s: Sample, t: float, v: float, out: list[Sample]) -> list[Sample]:
        """Add to `out` what the method stores for a good sample past min_time; return it."""

    def _store(self, t: float, v: float) -> None:
        self._last, self._held = (t, v), None

    def flush(self) -> list[Sample]:
        """Store the held sample now (shutdown, or before a gap)."""
        held = self._held
        if held is None:
            return []
        self._store(held.ts.timestamp(), float(held.value))
        return [held]


class DeadbandFilter(_Filter):
    """Exception reporting: store a value when it leaves the band around the last stored one."""

    def _compress(self, s: Sample, t: float, v: float, out: list[Sample]) -> list[Sample]:
        if abs(v - self._anchor[1]) > self.dev:
            held = self._held
            # The previous value marks where the flat stretch ended, so that a trend drawn
            # with straight lines does not start the change at the last stored point.
            if held is not None and t - held.ts.timestamp() >= self.min_s:
                out.append(held)
            out.append(s)
            self._store(t, v)
            return out
        self._held = s
        return out


class SwingingDoorFilter(_Filter):
    """Swinging-door trending: store the previous sample when no line from the last stored
    one keeps every sample since within the deviation."""

    def __init__(self, spec: CompressionSpec):
        super().__init__(spec)
        self._low = -math.inf  # slopes of the two doors from the anchor, `_last`
        self._high = math.inf

    def _compress(self, s: Sample, t: float, v: float, out: list[Sample]) -> list[Sample]:
        # The door closes: the snapshot is stored and a new door starts from it.
        if self._held is not None and not self._inside(t, v):
            out += self.flush()
            if t - self._anchor[0] < self.min_s:
                return out
        self._accept(s, t, v)
        return out

    def _inside(self, t: float, v: float) -> bool:
        """Return True when the line from the anchor to (t, v) lies between the doors."""
        t0, v0 = self._anchor
        slope = (v - v0) / (t - t0)
        return self._low <= slope <= self._high

    def _accept(self, s: Sample, t: float, v: float) -> None:
        """Make s the snapshot and narrow the doors to keep it within the deviation."""
        t0, v0 = self._anchor
        self._low = max(self._low, (v - self.dev - v0) / (t - t0))
        self._high = min(self._high, (v + self.dev - v0) / (t - t0))
        self._held = s

    def _store(self, t: float, v: float) -> None:
        super()._store(t, v)
        self._low, self._high = -math.inf, math.inf


_FILTERS = {"deadband": DeadbandFilter, "swinging_door": SwingingDoorFilter}


class Compressor:
    """Send each tag's samples through its filter; tags without a spec pass unchanged."""

    def __init__(self, specs: Mapping[str, CompressionSpec]):
        self.specs = dict(specs)
        self._filters: dict[str, _Filter] = {}
        self.offered = 0
        self.stored = 0

    @classmethod
    def from_config(cls, cfg: HistorianSite, register: Register) -> Compressor:
        """Build the specs of every register tag that has a `[compression]` rule."""
        specs: dict[str, CompressionSpec] = {}
        if cfg.compression.enabled:
            for asset in register.assets.values():
                rules = cfg.compression.classes.get(asset.asset_class, {})
                for tag in asset.tags:
                    rule = rules.get(tag.signal)
                    if rule is None or rule.method == "off":
                        continue
                    deviation = rule.deviation
                    if deviation is None:
                        # The config checks: a rule without deviation has deviation_pct, and a
                        # span or a tag with low and high.
                        assert rule.deviation_pct is not None
                        span = rule.span
                        if not span:
                            assert tag.high is not None and tag.low is not None
                            span = tag.high - tag.low
                        deviation = rule.deviation_pct / 100 * span
                    specs[tag.name] = CompressionSpec(
                        rule.method,
                        deviation,
                        timedelta(seconds=rule.min_time_s),
                        timedelta(seconds=rule.max_time_s),
                    )
        log.info("compression on for %d tags", len(specs))
        return cls(specs)

    def offer(self, sample: Sample) -> list[Sample]:
        """Return the samples to store now for one incoming sample."""
        self.offered += 1
        f = self._filters.get(sample.tag)
        if f is None:
            spec = self.specs.get(sample.tag)
            if spec is None:
                self.stored += 1
                return [sample]
            f = self._filters[sample.tag] = _FILTERS[spec.method](spec)
        out = f.offer(sample)
        self.stored += len(out)
        return out

    def offer_batch(self, batch: Iterable[Sample]) -> list[Sample]:
        """Return the samples to store now for a batch, in order."""
        out: list[Sample] = []
        for s in batch:
            out.extend(self.offer(s))
        return out

    def flush(self) -> list[Sample]:
        """Return every held snapshot, e.g. at shutdown, so the last values are stored."""
        out = [s for f in self._filters.values() for s in f.flush()]
        self.stored += len(out)
        return out

    @property
    def ratio(self) -> float:
        """Return samples offered per sample stored (1.0 when nothing was compressed)."""
        return self.offered / self.stored if self.stored else 1.0
