"""Rule evaluators: turn samples into raw alarm conditions, cheaply, one object per alarm.

Each evaluator is fed the samples of the tags it watches (`feed`) and tells its engine only
when its raw condition changes, so the per-sample cost of a value inside its limits is a few
comparisons. Time-based rules (stale data) also have `check(now)`, run by the engine's tick.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import datetime, timedelta

from beffroi.alerts.config import AlarmRuleConfig
from beffroi.alerts.state import Alarm
from beffroi.core.model import Quality, Sample, Value

# engine.condition(alarm, on, now, value, level, limit)
Report = Callable[[Alarm, bool, datetime, object, str, "float | None"], None]
INF = math.inf
_BAD = int(Quality.BAD)  # samples of this quality or worse carry no usable value


def describe(rule: AlarmRuleConfig, signal: str | None) -> str:
    """Return the default one-line text of a rule's alarm."""
    what = signal or "asset"
    if rule.message:
        return rule.message
    if rule.type == "limit":
        return f"{what} out of limits"
    if rule.type == "discrete":
        if rule.equals is not None:
            shown = str(rule.equals).lower() if isinstance(rule.equals, bool) else rule.equals
            return f"{what} = {shown}"
        return f"{what} > {rule.above}" if rule.above is not None else f"{what} < {rule.below}"
    if rule.type == "rate":
        return f"{what} changing too fast"
    if rule.type == "deviation":
        return f"{what} deviates from {rule.setpoint}"
    if rule.type == "stale":
        return f"no new data from {what}"
    return "communication lost"


class Evaluator:
    """Base of every evaluator: the alarm it drives and the engine callback."""

    __slots__ = ("alarm", "report")
    timed = False

    def __init__(self, alarm: Alarm, report: Report):
        self.alarm, self.report = alarm, report

    def feed(self, s: Sample, now: datetime) -> None:
        """Take one sample of a watched tag."""

    def check(self, now: datetime) -> None:
        """Re-evaluate time-based conditions (stale data)."""

    def restore(self) -> None:
        """Align the evaluator's raw state with an alarm restored from the journal."""


class LimitEvaluator(Evaluator):
    """HiHi / Hi / Lo / LoLo limits with a deadband: exclusive levels, as OPC UA's limit alarm."""

    __slots__ = ("db", "hi", "hi_in", "hihi", "level", "lo", "lo_in", "lolo")

    def __init__(self, alarm: Alarm, report: Report, rule: AlarmRuleConfig):
        super().__init__(alarm, report)
        self.level = 0  # -2 LOLO, -1 LO, 0 normal, 1 HI, 2 HIHI
        self.set_limits(rule)

    def set_limits(self, rule: AlarmRuleConfig) -> None:
        """Take a rule's limits and deadband (at start, or changed at runtime)."""
        self.hihi = INF if rule.hihi is None else rule.hihi
        self.hi = INF if rule.hi is None else rule.hi
        self.lo = -INF if rule.lo is None else rule.lo
        self.lolo = -INF if rule.lolo is None else rule.lolo
        # The nearest limit on each side: inside them a normal value stays normal, no more work.
        self.hi_in, self.lo_in = min(self.hi, self.hihi), max(self.lo, self.lolo)
        self.db = rule.deadband or 0.0

    def feed(self, s: Sample, now: datetime) -> None:
        if s.quality >= _BAD:
            return
        # Limit rules read float or bool signals (the config checks it); no check on this path.
        v: float = s.value  # type: ignore[assignment]
        level = self.level
        if level == 0 and self.lo_in < v < self.hi_in:
            return
        self._judge(v, level, now)

    def recheck(self, s: Sample, now: datetime) -> None:
        """Judge the current value again under new limits (no deadband kept from the old)."""
        if s.quality < _BAD and isinstance(s.value, int | float):
            self._judge(float(s.value), self.level, now)

    def _judge(self, v: float, level: int, now: datetime) -> None:
        self.alarm.value = v
        new = self._level(v, level)
        if new != level:
            self.level = new
            self.report(self.alarm, new != 0, now, v, _NAMES[new], self._limit(new))

    def _level(self, v: float, cur: int) -> int:
        db = self.db
        if v >= self.hihi or (cur == 2 and v > self.hihi - db):
            return 2
        if v >= self.hi or (cur >= 1 and v > self.hi - db):
            return 1
        if v <= self.lolo or (cur == -2 and v < self.lolo + db):
            return -2
        if v <= self.lo or (cur <= -1 and v < self.lo + db):
            return -1
        return 0

    def _limit(self, level: int) -> float | None:
        return {2: self.hihi, 1: self.hi, -1: self.lo, -2: self.lolo}.get(level)

    def restore(self) -> None:
        self.level = {v: k for k, v in _NAMES.items()}.get(self.alarm.level, 0)


_NAMES = {2: "HIHI", 1: "HI", 0: "", -1: "LO", -2: "LOLO"}


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "on", "yes")
    return bool(value)


class DiscreteEvaluator(Evaluator):
    """A state equals a value (fault == true), or a count is above or below a threshold."""

    __slots__ = ("db", "limit", "mode", "on", "target")

    def __init__(self, alarm: Alarm, report: Report, rule: AlarmRuleConfig):
        super().__init__(alarm, report)
        self.db = rule.deadband or 0.0
        self.on = False
        self.limit = INF  # the threshold of `gt` and `lt`
        self.target: bool | float | str | None = rule.equals  # the state of `eq`
        if rule.equals is not None:
            self.mode = "eq"
            self.alarm.level = self.alarm.raw_level = "ON"
        elif rule.above is not None:
            self.mode, self.limit = "gt", rule.above
        else:
            assert rule.below is not None, "a discrete rule has one of equals, above, below"
            self.mode, self.limit = "lt", rule.below

    def _test(self, v: Value) -> bool:
        if self.mode == "eq":
            t = self.target
            if isinstance(t, bool):
                return _truthy(v) == t
            if isinstance(t, str) or isinstance(v, str):
                return str(v) == str(t)
            return float(v) == t
        x = float(v)
        if self.mode == "gt":
            return x > self.limit or (self.on and x > self.limit - self.db)
        return x < self.limit or (self.on and x < self.limit + self.db)

    def feed(self, s: Sample, now: datetime) -> None:
        if s.quality >= _BAD:
            return
        v = s.value
        self.alarm.value = v
        on = self._test(v)
        if on != self.on:
            self.on = on
            # A state (true, "text") is no numeric limit; a count compared with `equals` is.
            t = self.target if self.mode == "eq" else self.limit
            limit = float(t) if isinstance(t, float | int) and not isinstance(t, bool) else None
            self.report(self.alarm, on, now, v, "ON", limit)

    def restore(self) -> None:
        self.on = self.alarm.active


class RateEvaluator(Evaluator):
    """Rate of change over a window, per minute, against a maximum (source timestamps)."""

    __slots__ = ("db", "direction", "max_rate", "on", "points", "window")

    def __init__(self, alarm: Alarm, report: Report, rule: AlarmRuleConfig):
        super().__init__(alarm, report)
        self.window = float(rule.window_s or 60.0)
        self.max_rate = float(rule.max_rate_per_min or INF)
        self.direction = rule.direction or "both"
        self.db = rule.deadband or 0.0
        self.points: deque[tuple[float, float]] = deque()
        self.on = False

    def feed(self, s: Sample, now: datetime) -> None:
        if s.quality >= _BAD:
            return
        t, v = s.ts.timestamp(), float(s.value)
        pts = self.points
        pts.append((t, v))
        while len(pts) > 2 and t - pts[1][0] >= self.window:
            pts.popleft()
        self.alarm.value = v
        t0, v0 = pts[0]
        if t - t0 <= 0:
            return
        rate = (v - v0) / (t - t0) * 60.0
        signed = {"up": rate, "down": -rate}.get(self.direction, abs(rate))
        on = signed > self.max_rate or (self.on and signed > self.max_rate - self.db)
        if on != self.on:
            self.on = on
            self.report(self.alarm, on, now, round(rate, 6), "ROC", self.max_rate)

    def restore(self) -> None:
        self.on = self.alarm.active


class DeviationEvaluator(Evaluator):
    """Measured value against factor × setpoint + offset, both tags of the same asset."""

    __slots__ = ("db", "factor", "max_dev", "measured", "offset", "on", "setpoint", "sp_tag")

    def __init__(self, alarm: Alarm, report: Report, rule: AlarmRuleConfig, sp_tag: str):
        super().__init__(alarm, report)
        self.sp_tag = sp_tag
        self.factor = 1.0 if rule.factor is None else rule.factor
        self.offset = rule.offset or 0.0
        self.max_dev = float(rule.max_deviation or INF)
        self.db = rule.deadband or 0.0
        self.measured: float | None = None
        self.setpoint: float | None = None
        self.on = False

    def feed(self, s: Sample, now: datetime) -> None:
        if s.quality >= _BAD:
            return
        if s.tag == self.sp_tag:
            self.setpoint = float(s.value)
        else:
            self.measured = float(s.value)
            self.alarm.value = self.measured
        if self.measured is None or self.setpoint is None:
            return
        expected = self.setpoint * self.factor + self.offset
        dev = abs(self.measured - expected)
        on = dev > self.max_dev or (self.on and dev > self.max_dev - self.db)
        if on != self.on:
            self.on = on
            self.report(self.alarm, on, now, self.measured, "DEV", expected)

    def restore(self) -> None:
        self.on = self.alarm.active


class StaleEvaluator(Evaluator):
    """No new value from the watched tags for stale_factor × their longest interval."""

    __slots__ = ("limit", "on", "seen")
    timed = True

    def __init__(self, alarm: Alarm, report: Report, limit_s: float, now: datetime):
        super().__init__(alarm, report)
        self.limit = timedelta(seconds=limit_s)
        self.seen = now  # the engine's start counts as the last value: a grace period
        self.on = False

    def feed(self, s: Sample, now: datetime) -> None:
        if s.quality == Quality.COMM_LOSS:  # a lost link is the commloss alarm's, not new data
            return
        self.seen = now
        if self.on:
            self.on = False
            self.report(self.alarm, False, now, None, "STALE", None)

    def check(self, now: datetime) -> None:
        if not self.on and now - self.seen > self.limit:
            self.on = True
            age = (now - self.seen).total_seconds()
            self.report(self.alarm, True, now, round(age, 1), "STALE", self.limit.total_seconds())

    def restore(self) -> None:
        self.on = self.alarm.active


class CommLossEvaluator(Evaluator):
    """CommLoss quality on any watched tag of an asset; clears when all have values again."""

    __slots__ = ("lost",)

    def __init__(self, alarm: Alarm, report: Report):
        super().__init__(alarm, report)
        self.lost: set[str] = set()
        alarm.level = alarm.raw_level = "COMM"

    def feed(self, s: Sample, now: datetime) -> None:
        lost = self.lost
        if s.quality == Quality.COMM_LOSS:
            if not lost:
                self.report(self.alarm, True, now, None, "COMM", None)
            lost.add(s.tag)
        elif lost:
            lost.discard(s.tag)
            lost.discard("*")  # the marker of an alarm restored active: any value clears it
            if not lost:
                self.report(self.alarm, False, now, None, "COMM", None)

    def restore(self) -> None:
        # Restored active: the next good value of the asset clears it.
        if self.alarm.active:
            self.lost.add("*")
