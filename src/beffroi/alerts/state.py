"""The ISA-18.2 / OPC UA Part 9 alarm state machine and the events its transitions produce."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from beffroi.core.model import Value


class AlarmState(StrEnum):
    """What an operator sees of an alarm (ISA-18.2 states)."""

    NORMAL = "normal"
    UNACK_ACTIVE = "unack_active"
    ACK_ACTIVE = "ack_active"
    UNACK_RTN = "unack_rtn"
    SHELVED = "shelved"
    SUPPRESSED = "suppressed"
    OUT_OF_SERVICE = "out_of_service"


STATE_LABELS = {
    AlarmState.NORMAL: "Normal",
    AlarmState.UNACK_ACTIVE: "Unacknowledged-Active",
    AlarmState.ACK_ACTIVE: "Acknowledged-Active",
    AlarmState.UNACK_RTN: "Unacknowledged-Return-to-normal",
    AlarmState.SHELVED: "Shelved",
    AlarmState.SUPPRESSED: "Suppressed",
    AlarmState.OUT_OF_SERVICE: "Out-of-service",
}
MASKED = frozenset({AlarmState.SHELVED, AlarmState.SUPPRESSED, AlarmState.OUT_OF_SERVICE})


class AlarmCommandError(ValueError):
    """An operator command that does not apply to the alarm's state."""


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One transition of one alarm, as journaled and notified."""

    ts: datetime
    alarm_id: str
    rule: str
    kind: str
    event: str
    state: AlarmState
    tag: str
    asset: str
    commune: str
    domain: str
    severity: int
    level: str
    value: float | None
    limit: float | None
    user: str
    comment: str
    active: bool
    acked: bool
    shelved_until: datetime | None
    oneshot: bool
    since: datetime | None
    message: str
    annunciate: bool = False

    def as_row(self) -> dict[str, Any]:
        """Return the event as a journal row."""
        return {
            "ts": self.ts,
            "alarm_id": self.alarm_id,
            "rule": self.rule,
            "kind": self.kind,
            "event": self.event,
            "state": str(self.state),
            "tag": self.tag,
            "asset": self.asset,
            "commune": self.commune,
            "domain": self.domain,
            "severity": self.severity,
            "level": self.level,
            "value": self.value,
            "limit": self.limit,
            "user": self.user,
            "comment": self.comment,
            "active": self.active,
            "acked": self.acked,
            "shelved_until": self.shelved_until,
            "oneshot": self.oneshot,
            "since": self.since,
            "message": self.message,
            "annunciated": self.annunciate,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AlarmEvent:
        """Return the event a journal row holds (as `Journal.after` gives it)."""
        fields = {k: row[k] for k in _ROW_FIELDS}
        return cls(**fields, state=AlarmState(row["state"]), annunciate=bool(row["annunciated"]))


# The journal row's columns that are the event's fields under the same name.
_ROW_FIELDS = (
    "ts", "alarm_id", "rule", "kind", "event", "tag", "asset", "commune", "domain", "severity",
    "level", "value", "limit", "user", "comment", "active", "acked", "shelved_until", "oneshot",
    "since", "message",
)  # fmt: skip


def numeric(value: Value | None) -> float | None:
    """Return a value as a float for the journal (booleans 0/1, text None)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float):
        return float(value)
    return None


class Alarm:
    """One alarm: its identity, its condition after delays, and its orthogonal masks.

    `raw` is what the rule sees now; `active` follows it after the on-delay (or off-delay).
    Shelving, suppression and out-of-service mask the alarm: it still tracks its condition,
    needs no acknowledgement, and is annunciated again when unmasked while still active.
    """

    __slots__ = (
        "acked",
        "activated_at",
        "active",
        "annunciated_at",
        "asset",
        "base_severity",
        "commune",
        "domain",
        "extreme_severity",
        "id",
        "kind",
        "level",
        "limit",
        "message",
        "off_delay",
        "on_delay",
        "oneshot",
        "out_of_service",
        "raw",
        "raw_level",
        "raw_limit",
        "raw_since",
        "rule",
        "severity",
        "shelved",
        "shelved_until",
        "supp_comm",
        "supp_daylight",
        "suppress_on_commloss",
        "tag",
        "value",
    )

    def __init__(
        self,
        alarm_id: str,
        rule: str,
        kind: str,
        tag: str,
        asset: str,
        commune: str,
        domain: str,
        severity: int,
        *,
        message: str = "",
        extreme_severity: int | None = None,
        on_delay_s: float = 0.0,
        off_delay_s: float = 0.0,
        suppress_on_commloss: bool = True,
    ):
        self.id, self.rule, self.kind, self.tag = alarm_id, rule, kind, tag
        self.asset, self.commune, self.domain = asset, commune, domain
        self.base_severity = self.severity = severity
        self.extreme_severity = extreme_severity or max(1, severity - 1)
        self.message = message
        self.on_delay = timedelta(seconds=on_delay_s)
        self.off_delay = timedelta(seconds=off_delay_s)
        self.suppress_on_commloss = suppress_on_commloss
        self.active = self.raw = False
        self.acked = True
        self.level = self.raw_level = ""
        self.limit: float | None = None
        self.raw_limit: float | None = None
        self.value: Value | None = None
        self.raw_since: datetime | None = None
        self.activated_at: datetime | None = None
        self.annunciated_at: datetime | None = None
        self.shelved = self.oneshot = False
        self.shelved_until: datetime | None = None
        self.supp_comm = self.supp_daylight = False
        self.out_of_service = False

    @property
    def masked(self) -> bool:
        """Tell whether the alarm is shelved, suppressed or out of service."""
        return self.out_of_service or self.shelved or self.supp_comm or self.supp_daylight

    @property
    def state(self) -> AlarmState:
        """Return the ISA-18.2 state, masks first."""
        if self.out_of_service:
            return AlarmState.OUT_OF_SERVICE
        if self.shelved:
            return AlarmState.SHELVED
        if self.supp_comm or self.supp_daylight:
            return AlarmState.SUPPRESSED
        if self.active:
            return AlarmState.ACK_ACTIVE if self.acked else AlarmState.UNACK_ACTIVE
        return AlarmState.NORMAL if self.acked else AlarmState.UNACK_RTN

    @property
    def pending(self) -> bool:
        """Tell whether the condition changed and waits for its delay."""
        return self.raw != self.active or (self.raw and self.raw_level != self.level)

    def see(self, on: bool, now: datetime, level: str, limit: float | None) -> None:
        """Record the rule's raw condition; the delay counts from its last change."""
        if on != self.raw or (on and level != self.raw_level):
            if on != self.raw:
                self.raw_since = now
            self.raw, self.raw_level, self.raw_limit = on, level, limit

    def settle(self, now: datetime) -> str | None:
        """Apply the raw condition once its delay has elapsed; return the event, if any."""
        since = self.raw_since or now
        if self.raw and not self.active:
            if now - since >= self.on_delay:
                self.active, self.activated_at = True, now
                self._take_level()
                if not self.masked:
                    self.acked, self.annunciated_at = False, now
                return "activate"
        elif not self.raw and self.active:
            if now - since >= self.off_delay:
                self.active = False
                return "clear"
        elif self.raw and self.raw_level != self.level:
            worse = _rank(self.raw_level) > _rank(self.level)
            self._take_level()
            if worse and not self.masked:
                self.acked, self.annunciated_at = False, now
            return "level"
        return None

    def _take_level(self) -> None:
        self.level, self.limit = self.raw_level, self.raw_limit
        extreme = self.level in ("HIHI", "LOLO")
        self.severity = self.extreme_severity if extreme else self.base_severity

    def ack(self) -> str:
        """Acknowledge: Unack-Active → Ack-Active, Unack-RTN → Normal."""
        if self.acked or self.masked:
            raise AlarmCommandError(f"{self.id}: nothing to acknowledge ({self.state})")
        self.acked = True
        return "ack"

    def shelve(self, until: datetime, oneshot: bool = False) -> str:
        """Shelve until a time; one-shot also ends when the condition returns to normal."""
        if self.out_of_service:
            raise AlarmCommandError(f"{self.id}: out of service, cannot be shelved")
        if oneshot and not self.active:
            raise AlarmCommandError(f"{self.id}: one-shot shelving needs an active alarm")
        self.shelved, self.shelved_until, self.oneshot, self.acked = True, until, oneshot, True
        return "shelve"

    def unshelve(self, now: datetime) -> str:
        """End shelving; an alarm still active is annunciated again."""
        if not self.shelved:
            raise AlarmCommandError(f"{self.id}: not shelved")
        self.shelved, self.shelved_until, self.oneshot = False, None, False
        self._unmasked(now)
        return "unshelve"

    def set_out_of_service(self, out: bool, now: datetime) -> str:
        """Take the alarm out of service or put it back."""
        if out == self.out_of_service:
            raise AlarmCommandError(f"{self.id}: already {'out of' if out else 'in'} service")
        self.out_of_service = out
        if out:
            self.acked = True
            self.shelved, self.shelved_until, self.oneshot = False, None, False
        else:
            self._unmasked(now)
        return "out_of_service" if out else "in_service"

    def suppress(self, source: str, on: bool, now: datetime) -> str | None:
        """Set a suppression source ("comm" or "daylight"); return the event when it changes."""
        was = self.supp_comm or self.supp_daylight
        if source == "comm":
            self.supp_comm = on
        else:
            self.supp_daylight = on
        now_supp = self.supp_comm or self.supp_daylight
        if now_supp == was:
            return None
        if now_supp:
            self.acked = True
            return "suppress"
        self._unmasked(now)
        return "unsuppress"

    def _unmasked(self, now: datetime) -> None:
        if not self.masked and self.active:
            self.acked, self.annunciated_at = False, now

    def restore(self, row: dict[str, Any]) -> None:
        """Take back the state of a journal row (last event of this alarm) at restart."""
        state = AlarmState(row["state"])
        self.active = self.raw = bool(row["active"])
        self.acked = bool(row["acked"])
        self.level = self.raw_level = row.get("level") or ""
        self.limit = self.raw_limit = row.get("limit")
        self.value = row.get("value")
        self.activated_at = self.annunciated_at = row.get("since")
        self.shelved = state is AlarmState.SHELVED
        self.shelved_until = row.get("shelved_until") if self.shelved else None
        self.oneshot = self.shelved and bool(row.get("oneshot"))
        self.out_of_service = state is AlarmState.OUT_OF_SERVICE
        if self.active:
            self._take_level()

    def event(self, name: str, now: datetime, user: str = "", comment: str = "") -> AlarmEvent:
        """Build the event of a transition, as the alarm stands after it."""
        annunciate = (
            not self.acked
            and not self.masked
            and self.active
            and name in ("activate", "level", "unshelve", "unsuppress", "in_service")
        )
        return AlarmEvent(
            ts=now,
            alarm_id=self.id,
            rule=self.rule,
            kind=self.kind,
            event=name,
            state=self.state,
            tag=self.tag,
            asset=self.asset,
            commune=self.commune,
            domain=self.domain,
            severity=self.severity,
            level=self.level,
            value=numeric(self.value),
            limit=self.limit,
            user=user,
            comment=comment,
            active=self.active,
            acked=self.acked,
            shelved_until=self.shelved_until,
            oneshot=self.oneshot,
            since=self.activated_at,
            message=self.message,
            annunciate=annunciate,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alarm:
        """Rebuild an alarm from its last journal row (offline commands, no rules loaded)."""
        alarm = cls(
            row["alarm_id"],
            row["rule"],
            row["kind"],
            row["tag"],
            row["asset"],
            row["commune"],
            row["domain"],
            int(row["severity"]),
            message=row.get("message") or "",
        )
        alarm.restore(row)
        alarm.severity = int(row["severity"])
        alarm.supp_comm = row["state"] == AlarmState.SUPPRESSED
        return alarm


def _rank(level: str) -> int:
    return {"HIHI": 2, "LOLO": 2, "HI": 1, "LO": 1}.get(level, 1 if level else 0)
