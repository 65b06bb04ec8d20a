"""The alarm engine: rules bound to the register, fed by sample batches and a periodic tick.

The register changes while the gateway runs (`follow`): rules bind to added assets, retired
assets' alarms close with the reason in the journal, a moved asset's daylight follows its new
place, and an asset its server no longer offers ("removed at source") raises a system alarm.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from beffroi.alerts.config import AlarmRuleConfig, AlarmsConfig
from beffroi.alerts.daylight import Daylight
from beffroi.alerts.rules import (
    CommLossEvaluator,
    DeviationEvaluator,
    DiscreteEvaluator,
    Evaluator,
    LimitEvaluator,
    RateEvaluator,
    StaleEvaluator,
    describe,
)
from beffroi.alerts.state import Alarm, AlarmCommandError, AlarmEvent, AlarmState
from beffroi.core.model import Asset, Sample, utcnow
from beffroi.core.register import Register, RegisterChange

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
Listener = Callable[[AlarmEvent], None]

# The system alarm of an asset its server no longer offers, past the inventory's grace period.
REMOVED_RULE = "removed_at_source"
REMOVED_SEVERITY = 3
REMOVED_MESSAGE = "removed at source: its server no longer offers it"
RETIRE_EVENT = "retire"  # the journal event that closes the alarms of a retired asset


class AlarmEngine:
    """Evaluate every rule on incoming samples and on a tick; hold every alarm's state.

    Thread-safe: batches arrive on the event loop, operator commands from HMI threads; one lock
    serialises them. Listeners (journal, notifier) are called under the lock and must be quick.
    """

    def __init__(
        self,
        cfg: AlarmsConfig,
        register: Register,
        *,
        clock: Clock = utcnow,
        timezone: str = "Europe/Paris",
    ):
        self.cfg = cfg
        self.register = register
        self.clock = clock
        self.listeners: list[Listener] = []
        self.alarms: dict[str, Alarm] = {}
        self.samples = 0
        self._lock = threading.RLock()
        self._index: dict[str, list[Evaluator]] = {}
        self._evaluators: dict[str, Evaluator] = {}
        self._timed: list[Evaluator] = []
        self._pending: set[Alarm] = set()
        self._shelved: set[Alarm] = set()
        self._by_asset: dict[str, list[Alarm]] = {}
        self._daylight_alarms: list[tuple[Alarm, float, float]] = []
        self._daylight = Daylight(timezone)
        self._events: list[AlarmEvent] = []
        self._bad_values = 0
        # The rules as they apply now (limits changed at runtime too): what added assets get.
        self._rules = {r.name: r for r in cfg.rules}
        self._watched: dict[str, list[str]] = {}  # alarm id → the tags its evaluator watches
        now = clock()
        by_class: dict[str, list[Asset]] = {}
        for a in register.assets.values():
            by_class.setdefault(a.asset_class, []).append(a)
        for rule in cfg.rules:
            if rule.asset_class is not None:
                targets = [(a, rule.signal) for a in by_class.get(rule.asset_class, [])]
            else:
                asset = register.asset_of_tag(rule.tag or "")
                if asset is None:
                    # An inventory import or discovery may add it later: it is bound then.
                    log.warning("alarm rule %s: tag %s is not in the register", rule.name, rule.tag)
                    continue
                targets = [(asset, (rule.tag or "").rsplit("/", 1)[1])]
            for asset, signal in targets:
                self._bind(rule, asset, signal, now)
        for alarm, lat, lon in self._daylight_alarms:
            alarm.supp_daylight = self._daylight.is_day(lat, lon, now)
        for a in register.assets.values():
            if a.state == "removed":  # raised by restore(), once the journal says what it was
                self._removed_alarm(a)
        log.info("alarm engine: %d alarms from %d rules", len(self.alarms), len(cfg.rules))

    def _bind(
        self, rule: AlarmRuleConfig, asset: Asset, signal: str | None, now: datetime
    ) -> Alarm | None:
        """Create the alarm and evaluator of one rule on one asset, and index its tags."""
        tag = asset.tag(signal) if signal else f"{asset.commune}/{asset.id}"
        alarm = Alarm(
            f"{tag}#{rule.name}",
            rule.name,
            rule.type,
            tag,
            asset.id,
            asset.commune,
            asset.domain,
            rule.severity,
            message=describe(rule, signal),
            extreme_severity=rule.extreme_severity,
            on_delay_s=rule.on_delay_s,
            off_delay_s=rule.off_delay_s,
            suppress_on_commloss=rule.suppress_on_commloss and rule.type != "commloss",
        )
        watched = [tag] if signal else [t.name for t in asset.tags]
        report = self.condition
        ev: Evaluator
        if rule.type == "limit":
            ev = LimitEvaluator(alarm, report, rule)
        elif rule.type == "discrete":
            ev = DiscreteEvaluator(alarm, report, rule)
        elif rule.type == "rate":
            ev = RateEvaluator(alarm, report, rule)
        elif rule.type == "deviation":
            sp = (rule.setpoint or "").rsplit("/", 1)[-1]
            ev = DeviationEvaluator(alarm, report, rule, asset.tag(sp))
            watched.append(asset.tag(sp))
        elif rule.type == "stale":
            specs = [t for t in asset.tags if t.name in watched]
            limit_s = (rule.stale_factor or 3.0) * max(t.interval_s for t in specs)
            ev = StaleEvaluator(alarm, report, limit_s, now)
            self._timed.append(ev)
        else:
            ev = CommLossEvaluator(alarm, report)
        if alarm.id in self.alarms:
            log.warning("alarm %s defined twice; keeping the first", alarm.id)
            if isinstance(ev, StaleEvaluator):
                self._timed.remove(ev)
            return None
        self.alarms[alarm.id] = alarm
        self._evaluators[alarm.id] = ev
        self._watched[alarm.id] = watched
        self._by_asset.setdefault(asset.id, []).append(alarm)
        for t in watched:
            self._index.setdefault(t, []).append(ev)
        if rule.suppress_in_daylight:
            self._daylight_alarms.append((alarm, asset.lat, asset.lon))
        return alarm

    def declare_system(self, key: str, message: str, severity: int) -> str:
        """Make a system alarm of the gateway itself (before restore, which gives its state).

        It sits in the metropolis's first commune (its seat, where the command post is), under
        the technical management of public buildings; admins and that commune's users see it.
        """
        alarm_id = f"system#{key}"
        with self._lock:
            if alarm_id in self.alarms:
                return alarm_id
            seat = next(iter(self.register.communes), "")
            alarm = Alarm(
                alarm_id, key, "system", "system", "gateway", seat, "buildings", severity,
                message=message, suppress_on_commloss=False,
            )  # fmt: skip
            alarm.level = alarm.raw_level = "SYSTEM"
            self.alarms[alarm_id] = alarm
            self._evaluators[alarm_id] = Evaluator(alarm, self.condition)
            self._watched[alarm_id] = []
        return alarm_id

    def set_system(self, alarm_id: str, on: bool) -> None:
        """Raise or clear a declared system alarm."""
        with self._lock:
            alarm = self.alarms[alarm_id]
            if alarm.raw != on:
                self.condition(alarm, on, self.clock(), None, "SYSTEM", None)

    def _removed_alarm(self, asset: Asset) -> Alarm:
        """Return the system alarm of an asset removed at source, created on first need."""
        alarm_id = f"{asset.commune}/{asset.id}#{REMOVED_RULE}"
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            alarm = Alarm(
                alarm_id,
                REMOVED_RULE,
                "system",
                f"{asset.commune}/{asset.id}",
                asset.id,
                asset.commune,
                asset.domain,
                REMOVED_SEVERITY,
                message=REMOVED_MESSAGE,
                # The inventory's concern, not the equipment's: a lost link does not hide it.
                suppress_on_commloss=False,
            )
            alarm.level = alarm.raw_level = "REMOVED"
            self.alarms[alarm_id] = alarm
            # Driven by the register's changes, not by samples: an evaluator that watches nothing.
            self._evaluators[alarm_id] = Evaluator(alarm, self.condition)
            self._watched[alarm_id] = []
            self._by_asset.setdefault(asset.id, []).append(alarm)
        return alarm

    # --- the living register ---

    def follow(self, change: RegisterChange) -> None:
        """Follow a change of the register: bind, close and unbind, move, raise "removed"."""
        with self._lock:
            now = self.clock()
            added = {a.id for a in change.added}
            for old in change.retired:
                # A reclassified asset (retired, then added again) closes as changed, not gone.
                why = "asset reclassified" if old.id in added else "asset retired"
                self._unbind(old.id, now, change.user, f"{why}: {change.source}".rstrip(": "))
            for new in change.added:
                self._bind_asset(new, now)
            for before, after in change.updated:
                if (before.lat, before.lon) != (after.lat, after.lon):
                    self._move(after, now)
                on = after.state == "removed"
                if on != (before.state == "removed"):
                    self._set_removed(after, on, now)

    def _set_removed(self, asset: Asset, on: bool, now: datetime) -> None:
        """Raise or clear the system alarm of an asset removed at source."""
        alarm_id = f"{asset.commune}/{asset.id}#{REMOVED_RULE}"
        if not on and alarm_id not in self.alarms:
            return
        alarm = self._removed_alarm(asset)
        if alarm.raw != on:
            self.condition(alarm, on, now, None, "REMOVED", None)

    def _bind_asset(self, asset: Asset, now: datetime) -> None:
        """Bind the class rules of an added asset, and the tag rules of its tags."""
        tags = {t.name for t in asset.tags}
        for rule in self._rules.values():
            if rule.asset_class is not None:
                if rule.asset_class != asset.asset_class:
                    continue
                alarm = self._bind(rule, asset, rule.signal, now)
            elif rule.tag in tags:
                alarm = self._bind(rule, asset, (rule.tag or "").rsplit("/", 1)[1], now)
            else:
                continue
            if alarm is not None and rule.suppress_in_daylight:
                # A new alarm starts as its place's daylight says, quietly (as at start).
                alarm.supp_daylight = self._daylight.is_day(asset.lat, asset.lon, now)
        if asset.state == "removed":
            self._set_removed(asset, True, now)

    def _unbind(self, asset_id: str, now: datetime, user: str, comment: str) -> None:
        """Close the alarms of an asset that leaves the register, then forget them."""
        alarms = self._by_asset.pop(asset_id, [])
        if not alarms:
            return
        gone = set(alarms)
        tags: set[str] = set()
        for alarm in alarms:
            if alarm.active or not alarm.acked or alarm.shelved or alarm.out_of_service:
                # What operators see of it ends here, with why: the journal keeps the story.
                alarm.active = alarm.raw = False
                alarm.acked = True
                alarm.shelved = alarm.oneshot = alarm.out_of_service = False
                alarm.shelved_until = None
                alarm.supp_comm = alarm.supp_daylight = False
                self._emit(alarm, RETIRE_EVENT, now, user or "system", comment)
            del self.alarms[alarm.id]
            del self._evaluators[alarm.id]
            tags.update(self._watched.pop(alarm.id, ()))
            self._pending.discard(alarm)
            self._shelved.discard(alarm)
        for tag in tags:
            kept = [ev for ev in self._index.get(tag, ()) if ev.alarm not in gone]
            if kept:
                self._index[tag] = kept
            else:
                self._index.pop(tag, None)
        self._timed = [ev for ev in self._timed if ev.alarm not in gone]
        self._daylight_alarms = [d for d in self._daylight_alarms if d[0] not in gone]

    def _move(self, asset: Asset, now: datetime) -> None:
        """Give a moved asset's daylight-suppressed alarms its new place, judged now."""
        for i, (alarm, _lat, _lon) in enumerate(self._daylight_alarms):
            if alarm.asset != asset.id:
                continue
            self._daylight_alarms[i] = (alarm, asset.lat, asset.lon)
            day = self._daylight.is_day(asset.lat, asset.lon, now)
            if day != alarm.supp_daylight:
                self._suppress(alarm, "daylight", day, now)

    def set_rule(self, rule: AlarmRuleConfig, current: Mapping[str, Sample]) -> int:
        """Give a limit rule's alarms new limits, judged at once on the current values.

        Return how many alarms the rule drives.
        """
        with self._lock:
            now = self.clock()
            if rule.name in self._rules:  # assets added from now on get the new limits too
                self._rules[rule.name] = rule
            evs = [
                ev
                for ev in self._evaluators.values()
                if isinstance(ev, LimitEvaluator) and ev.alarm.rule == rule.name
            ]
            for ev in evs:
                ev.set_limits(rule)
                s = current.get(ev.alarm.tag)
                if s is not None:
                    ev.recheck(s, now)
            return len(evs)

    # --- evaluation ---

    def process(self, batch: Sequence[Sample]) -> None:
        """Evaluate the rules watching the tags of a batch (called for every incoming batch)."""
        if not batch:
            return
        index = self._index
        with self._lock:
            now = self.clock()
            self.samples += len(batch)
            for s in batch:
                evs = index.get(s.tag)
                if evs is None:
                    continue
                for ev in evs:
                    try:
                        ev.feed(s, now)
                    except (TypeError, ValueError):
                        # A value of the wrong type (text on a numeric tag) cannot be compared.
                        self._bad_values += 1
                        if self._bad_values in (1, 100, 10_000):
                            log.warning("alarm rule cannot read %s = %r", s.tag, s.value)

    def condition(
        self, alarm: Alarm, on: bool, now: datetime, value: Any, level: str, limit: float | None
    ) -> None:
        """Take a change of a rule's raw condition (called by evaluators)."""
        if value is not None:
            alarm.value = value
        alarm.see(on, now, level, limit)
        self._settle(alarm, now)

    def _settle(self, alarm: Alarm, now: datetime) -> None:
        name = alarm.settle(now)
        if name is not None:
            self._emit(alarm, name, now)
            if name == "clear" and alarm.shelved and alarm.oneshot:
                alarm.unshelve(now)
                self._shelved.discard(alarm)
                self._emit(alarm, "unshelve", now, "system", "one-shot shelving ended")
            if alarm.kind == "commloss" and name in ("activate", "clear"):
                for other in self._by_asset.get(alarm.asset, ()):
                    if other.suppress_on_commloss:
                        self._suppress(other, "comm", alarm.active, now)
        if alarm.pending:
            self._pending.add(alarm)
        else:
            self._pending.discard(alarm)

    def _suppress(self, alarm: Alarm, source: str, on: bool, now: datetime) -> None:
        visible = alarm.active or not alarm.acked
        name = alarm.suppress(source, on, now)
        # A quiet alarm's suppression changes nothing anyone sees: not worth a journal row.
        if name is not None and (visible or alarm.active):
            self._emit(alarm, name, now)

    def _emit(
        self, alarm: Alarm, name: str, now: datetime, user: str = "", comment: str = ""
    ) -> None:
        event = alarm.event(name, now, user, comment)
        self._events.append(event)
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("alarm listener failed on %s", event.alarm_id)

    def tick(self, now: datetime | None = None) -> None:
        """Evaluate time-based conditions: stale data, delays, shelving expiry, daylight."""
        with self._lock:
            now = now or self.clock()
            for ev in self._timed:
                ev.check(now)
            for alarm in list(self._pending):
                self._settle(alarm, now)
            for alarm in list(self._shelved):
                if alarm.shelved_until is not None and now >= alarm.shelved_until:
                    alarm.unshelve(now)
                    self._shelved.discard(alarm)
                    self._emit(alarm, "unshelve", now, "system", "shelving time elapsed")
            for alarm, lat, lon in self._daylight_alarms:
                day = self._daylight.is_day(lat, lon, now)
                if day != alarm.supp_daylight:
                    self._suppress(alarm, "daylight", day, now)

    def take_events(self) -> list[AlarmEvent]:
        """Return the events since the last call (for the journal), oldest first."""
        with self._lock:
            events, self._events = self._events, []
        return events

    # --- operator commands ---

    def _get(self, alarm_id: str) -> Alarm:
        alarm = self.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmCommandError(f"{alarm_id}: no such alarm")
        return alarm

    def ack(self, alarm_ids: Iterable[str], user: str, comment: str = "") -> list[AlarmEvent]:
        """Acknowledge alarms; all or none (an unknown or acknowledged one refuses the lot)."""
        with self._lock:
            alarms = [self._get(i) for i in alarm_ids]
            for a in alarms:
                if a.acked or a.masked:
                    raise AlarmCommandError(f"{a.id}: nothing to acknowledge ({a.state})")
            now = self.clock()
            out = []
            for a in alarms:
                a.ack()
                self._emit(a, "ack", now, user, comment)
                out.append(self._events[-1])
            return out

    def shelve(
        self, alarm_id: str, user: str, comment: str = "", minutes: float | None = None
    ) -> AlarmEvent:
        """Shelve for some minutes (at most max_shelve_min), or one-shot when minutes is None."""
        limit = self.cfg.max_shelve_min
        if minutes is not None and not 0 < minutes <= limit:
            raise AlarmCommandError(f"shelve for 0 < minutes ≤ {limit:g}, got {minutes:g}")
        with self._lock:
            alarm, now = self._get(alarm_id), self.clock()
            until = now + timedelta(minutes=limit if minutes is None else minutes)
            alarm.shelve(until, oneshot=minutes is None)
            self._shelved.add(alarm)
            self._emit(alarm, "shelve", now, user, comment)
            return self._events[-1]

    def unshelve(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """End an alarm's shelving now."""
        with self._lock:
            alarm, now = self._get(alarm_id), self.clock()
            alarm.unshelve(now)
            self._shelved.discard(alarm)
            self._emit(alarm, "unshelve", now, user, comment)
            return self._events[-1]

    def set_out_of_service(
        self, alarm_id: str, out: bool, user: str, comment: str = ""
    ) -> AlarmEvent:
        """Take an alarm out of service (maintenance) or put it back in service."""
        with self._lock:
            alarm, now = self._get(alarm_id), self.clock()
            name = alarm.set_out_of_service(out, now)
            self._shelved.discard(alarm)
            self._emit(alarm, name, now, user, comment)
            return self._events[-1]

    # --- state ---

    def restore(self, rows: Iterable[dict[str, Any]], *, following: bool = False) -> int:
        """Take back alarm states from the journal's last row per alarm; return how many.

        `following`: the standby of a pair applying what the active node journaled since (the
        register's removed assets are the active node's to judge; said quietly)."""
        n = 0
        with self._lock:
            for row in rows:
                alarm = self.alarms.get(row["alarm_id"])
                if alarm is None:
                    continue  # its rule was removed or changed: the journal keeps its history
                alarm.restore(row)
                self._evaluators[alarm.id].restore()
                if alarm.shelved:
                    self._shelved.add(alarm)
                n += 1
            for alarm in self.alarms.values():
                if alarm.kind == "commloss" and alarm.active:
                    for other in self._by_asset.get(alarm.asset, ()):
                        if other.suppress_on_commloss:
                            other.supp_comm = True
            # Assets removed at source while the gateway was stopped, or back since.
            now = self.clock()
            for asset in () if following else self.register.assets.values():
                self._set_removed(asset, asset.state == "removed", now)
        log.log(
            logging.DEBUG if following else logging.INFO,
            "alarm engine: %d alarm states restored from the journal",
            n,
        )
        return n

    def snapshot(
        self,
        communes: Sequence[str] = (),
        domains: Sequence[str] = (),
        states: Sequence[str] = (),
        include_normal: bool = False,
    ) -> list[dict[str, Any]]:
        """Return the alarms that need attention (or all), most urgent and oldest first."""
        out = []
        with self._lock:
            for a in self.alarms.values():
                state = a.state
                listed = a.active or not a.acked or a.shelved or a.out_of_service
                if not (include_normal or listed):
                    continue
                if communes and a.commune not in communes:
                    continue
                if domains and a.domain not in domains:
                    continue
                if states and state not in states:
                    continue
                out.append(alarm_view(a, state))
        out.sort(key=lambda r: (r["severity"], r["since"] or "", r["alarm_id"]))
        return out

    def status(self) -> dict[str, Any]:
        """Return counts for /healthz."""
        with self._lock:
            counts: dict[str, int] = {}
            for a in self.alarms.values():
                if a.active or not a.acked or a.masked:
                    counts[a.state] = counts.get(a.state, 0) + 1
        return {"alarms": len(self.alarms), "samples": self.samples, "states": counts}


def alarm_view(a: Alarm, state: AlarmState | None = None) -> dict[str, Any]:
    """Return what a list shows of one alarm, JSON-ready (times as ISO 8601 UTC)."""
    value = a.value
    if not isinstance(value, bool | int | float | str) and value is not None:
        value = str(value)
    return {
        "alarm_id": a.id,
        "state": str(state or a.state),
        "severity": a.severity,
        "rule": a.rule,
        "kind": a.kind,
        "tag": a.tag,
        "asset": a.asset,
        "commune": a.commune,
        "domain": a.domain,
        "level": a.level,
        "value": value,
        "limit": a.limit,
        "message": a.message,
        "since": a.activated_at.isoformat() if a.activated_at else None,
        "shelved_until": a.shelved_until.isoformat() if a.shelved_until else None,
    }
