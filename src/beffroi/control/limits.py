"""What may be sent: value kinds, ranges and steps, interlock rules, maintenance windows, rates."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from beffroi.control.config import ClassControl, InterlockConfig, MaintenanceWindow, on_step
from beffroi.control.model import Actor, ControlError
from beffroi.core.limits import MESSAGE_MAX, check_text
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, TagSpec, Value
from beffroi.i18n import N_, _, fmt_number

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TRUE = {"true", "1", "on", "yes", "oui"}
_FALSE = {"false", "0", "off", "no", "non"}
# A quality in the words of a sentence ("the equipment reports bad quality").
QUALITY_WORDS = {
    Quality.GOOD: N_("good"),
    Quality.UNCERTAIN: N_("uncertain"),
    Quality.BAD: N_("bad"),
    Quality.COMM_LOSS: N_("communication lost"),
}


def coerce(spec: TagSpec, raw: Any) -> Value:
    """Turn a value from a form or config into the tag's kind, or refuse it."""
    if spec.kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ControlError(
            _("%(signal)s takes true or false, not %(value)s")
            % {"signal": spec.signal, "value": repr(raw)}
        )
    if spec.kind == "str":
        if not isinstance(raw, str):
            raise ControlError(_("%(signal)s takes text") % {"signal": spec.signal})
        if len(raw) > MESSAGE_MAX:
            raise ControlError(
                _("text longer than %(limit)s characters") % {"limit": fmt_number(MESSAGE_MAX)}
            )
        try:
            return check_text(raw, spec.signal, MESSAGE_MAX)
        except ValueError as exc:  # control characters
            raise ControlError(str(exc)) from None
    if isinstance(raw, bool):
        raise ControlError(_("%(signal)s takes a number") % {"signal": spec.signal})
    try:
        number = float(str(raw).strip().replace(",", ".")) if isinstance(raw, str) else float(raw)
    except (TypeError, ValueError):
        raise ControlError(
            _("%(signal)s takes a number, not %(value)s")
            % {"signal": spec.signal, "value": repr(raw)}
        ) from None
    if not math.isfinite(number):
        raise ControlError(_("not a finite number"))
    return number


def check_range(spec: TagSpec, value: Value, step: float | None) -> None:
    """Refuse a number outside the tag's [low, high] or off its step."""
    if spec.kind != "float":
        return
    assert isinstance(value, float)
    if spec.low is not None and value < spec.low:
        raise ControlError(
            _("%(value)s is below the minimum %(low)s") % {"value": _g(value), "low": _g(spec.low)},
            rule="range",
        )
    if spec.high is not None and value > spec.high:
        raise ControlError(
            _("%(value)s is above the maximum %(high)s")
            % {"value": _g(value), "high": _g(spec.high)},
            rule="range",
        )
    if step and not on_step(value, spec.low or 0.0, step):
        raise ControlError(
            _("%(value)s is not on the step of %(step)s") % {"value": _g(value), "step": _g(step)},
            rule="step",
        )


def _g(x: float) -> str:
    """Format a setpoint value the locale's way, with the decimals it has ("2,5", "9")."""
    if "e" in f"{x:g}":  # a huge or tiny number: babel's decimals refuse some, round others
        return f"{x:g}"
    return fmt_number(x, _decimals(x))


def _decimals(x: float) -> int:
    text = f"{x:g}"
    return 0 if "e" in text or "." not in text else len(text.split(".")[1])


def shown_value(value: Value | None) -> str:
    """Show a reported value in words: true/false in the locale's language, numbers its way."""
    if isinstance(value, bool):
        return _("true") if value else _("false")
    if isinstance(value, float | int):
        return _g(float(value))
    return repr(value)


def same_value(a: Value | None, b: Value | None) -> bool:
    """Compare a commanded value and a reported one (floats within rounding)."""
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return a == b
    if a is None or b is None:
        return False
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-6)


def _hm(text: str) -> time | None:
    """Parse HH:MM; 24:00 is None (the end of the day)."""
    if text == "24:00":
        return None
    h, m = text.split(":")
    return time(int(h), int(m))


class MaintenanceCalendar:
    """Weekly maintenance windows in local time, per commune and class."""

    def __init__(self, windows: Sequence[MaintenanceWindow], timezone: str):
        self.windows = list(windows)
        self.tz = ZoneInfo(timezone)

    def window(self, commune: str, asset_class: str, now: datetime) -> str | None:
        """Return the name of a window open now for this commune and class, or None."""
        local = now.astimezone(self.tz)
        for i, w in enumerate(self.windows):
            if w.communes and commune not in w.communes:
                continue
            if w.classes and asset_class not in w.classes:
                continue
            if self._open(w, local):
                return w.name or f"window {i + 1}"
        return None

    @staticmethod
    def _open(w: MaintenanceWindow, local: datetime) -> bool:
        start, end, t = _hm(w.start), _hm(w.end), local.time()
        today = DAY_NAMES[local.weekday()]
        yesterday = DAY_NAMES[(local - timedelta(days=1)).weekday()]
        assert start is not None or w.start == "24:00"
        start = start or time(0)
        if end is None or end > start:  # same-day window
            return today in w.days and start <= t and (end is None or t < end)
        # Overnight: the part after midnight belongs to the previous day's window.
        return (today in w.days and t >= start) or (yesterday in w.days and t < end)


class Interlocks:
    """The interlock rules of the config, evaluated against live values."""

    def __init__(
        self, rules: Sequence[InterlockConfig], calendar: MaintenanceCalendar, live: LiveValues
    ):
        self.rules = list(rules)
        self.calendar = calendar
        self.live = live

    def applying(self, asset: Asset, spec: TagSpec) -> list[InterlockConfig]:
        """Return the rules guarding this asset's setpoint."""
        return [
            r for r in self.rules if r.asset_class == asset.asset_class and r.signal == spec.signal
        ]

    @staticmethod
    def _matches(rule: InterlockConfig, value: Value | None) -> bool:
        return value is None or not rule.values or any(same_value(value, v) for v in rule.values)

    def _blocks(
        self, rule: InterlockConfig, asset: Asset, actor: Actor, now: datetime
    ) -> str | None:
        """Return why the rule blocks now (every condition holds), or None."""
        why: list[str] = []
        if rule.block_when is not None:
            s = self.live.get(asset.tag(rule.block_when.signal))
            # Fail safe: an unknown input (no value, bad quality) counts as blocking.
            if s is None or s.quality is not Quality.GOOD:
                why.append(_("%(signal)s has no good value") % {"signal": rule.block_when.signal})
            elif same_value(s.value, rule.block_when.equals):
                why.append(
                    _("%(signal)s is %(value)s")
                    % {"signal": rule.block_when.signal, "value": shown_value(s.value)}
                )
            else:
                return None
        if rule.outside_maintenance:
            if self.calendar.window(asset.commune, asset.asset_class, now) is not None:
                return None
            why.append(_("outside a maintenance window"))
        if rule.unless_roles:
            if actor.role in rule.unless_roles:
                return None
            why.append(
                _("role %(role)s is not %(roles)s")
                % {"role": actor.role, "roles": _(" or ").join(rule.unless_roles)}
            )
        return ", ".join(why)

    def state(self, asset: Asset, spec: TagSpec, actor: Actor, now: datetime) -> list[dict]:
        """Describe each rule guarding a setpoint and whether it blocks now, for the selection."""
        out = []
        for rule in self.applying(asset, spec):
            why = self._blocks(rule, asset, actor, now)
            out.append(
                {
                    "rule": rule.name,
                    "message": _(rule.message) if rule.message else rule.name,
                    "values": list(rule.values),
                    "blocking": why is not None,
                    "why": why or "",
                }
            )
        return out

    def check(self, asset: Asset, spec: TagSpec, value: Value, actor: Actor, now: datetime) -> None:
        """Refuse a command that an interlock rule blocks now."""
        for rule in self.applying(asset, spec):
            if not self._matches(rule, value):
                continue
            why = self._blocks(rule, asset, actor, now)
            if why is not None:
                raise ControlError(
                    _("interlock %(rule)s: %(message)s (%(why)s)")
                    % {
                        "rule": rule.name,
                        "message": _(rule.message) if rule.message else why,
                        "why": why,
                    },
                    rule=rule.name,
                )


class RateLimiter:
    """At most one command per asset per its class's min_interval_s."""

    def __init__(self, classes: dict[str, ClassControl], clock: Callable[[], datetime]):
        self.classes, self.clock = classes, clock
        self._last: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def wait_s(self, asset: Asset) -> float:
        """Return how long the asset must wait before its next command (0: now)."""
        with self._lock:
            return self._wait_locked(asset)

    def take(self, asset: Asset) -> float:
        """Claim the asset's next slot if free now (return 0), else return the wait."""
        with self._lock:
            wait = self._wait_locked(asset)
            if wait == 0.0:
                self._last[asset.id] = self.clock()
            return wait

    def _wait_locked(self, asset: Asset) -> float:
        c = self.classes.get(asset.asset_class)
        last = self._last.get(asset.id)
        if c is None or c.min_interval_s <= 0 or last is None:
            return 0.0
        return max(0.0, c.min_interval_s - (self.clock() - last).total_seconds())


@dataclass(frozen=True, slots=True)
class Hold:
    """Who set a setpoint by hand or by playbook, so that schedules leave it alone until then."""

    owner: str
    until: datetime | None


class Holds:
    """Setpoints held by an operator (for a while) or a playbook run (until its rollback)."""

    def __init__(self, clock: Callable[[], datetime], manual_hold_min: float):
        self.clock, self.manual_hold_min = clock, manual_hold_min
        self._holds: dict[str, Hold] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._holds)

    def hold(self, tag: str, owner: str, since: datetime | None = None) -> None:
        """Hold a tag: `manual:<user>` for manual_hold_min (from `since`, default now), any
        other owner until released."""
        until = None
        if owner.startswith("manual:"):
            if self.manual_hold_min <= 0:
                return
            until = (since or self.clock()) + timedelta(minutes=self.manual_hold_min)
            if until <= self.clock():
                return
        with self._lock:
            self._holds[tag] = Hold(owner, until)

    def held(self, tag: str) -> Hold | None:
        """Return who holds a tag now, or None."""
        with self._lock:
            h = self._holds.get(tag)
            if h is not None and h.until is not None and h.until <= self.clock():
                del self._holds[tag]
                return None
            return h

    def release(self, tag: str, owner: str) -> bool:
        """Release a hold if `owner` still has it; return whether it did."""
        with self._lock:
            h = self._holds.get(tag)
            if h is None or h.owner != owner:
                return False
            del self._holds[tag]
            return True
