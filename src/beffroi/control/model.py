"""Who commands, what a selection holds, and what became of a command."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from beffroi.core.model import Value, WriteStatus


class Actor(Protocol):
    """Whoever sends a command: an HMI user, or the system's own schedules."""

    @property
    def name(self) -> str: ...

    @property
    def role(self) -> str: ...

    def sees(self, commune: str) -> bool:
        """Tell whether the actor's scope includes a commune."""
        ...

    def may(self, right: str) -> bool:
        """Tell whether the actor's role grants a right."""
        ...


@dataclass(frozen=True, slots=True)
class SystemActor:
    """The gateway itself (lighting schedules): every commune, setpoints only."""

    name: str = "system"
    role: str = "system"

    def sees(self, commune: str) -> bool:
        """Return True: the system acts for the whole metropolis."""
        return True

    def may(self, right: str) -> bool:
        """Return True for setpoints only."""
        return right == "setpoint"


SYSTEM = SystemActor()


class ControlError(Exception):
    """A command or selection refused before anything was sent, with the reason."""

    def __init__(self, reason: str, *, rule: str = ""):
        super().__init__(reason)
        self.reason = reason
        self.rule = rule


@dataclass(slots=True)
class Selection:
    """A user's hold on one setpoint between select and operate (select-before-operate)."""

    id: str
    user: str
    tag: str
    asset: str
    commune: str
    signal: str
    kind: str
    unit: str
    current: Value | None
    current_ts: datetime | None
    quality: str
    low: float | None
    high: float | None
    step: float | None
    interlocks: list[dict[str, Any]]
    others: list[str]
    selected_at: datetime
    expires_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """Return the selection as JSON-ready data (times ISO UTC)."""
        out = {k: getattr(self, k) for k in self.__slots__}
        for k in ("current_ts", "selected_at", "expires_at"):
            out[k] = out[k].isoformat() if out[k] is not None else None
        return out


STATUS_NAMES = {
    WriteStatus.CONFIRMED: "confirmed",
    WriteStatus.REJECTED: "rejected",
    WriteStatus.UNCONFIRMED: "unconfirmed",
    WriteStatus.REFUSED: "refused",
}


@dataclass(slots=True)
class CommandResult:
    """What became of one command: confirmed, rejected, unconfirmed or refused, and why."""

    tag: str
    value: Value
    status: WriteStatus
    detail: str = ""
    previous: Value | None = None
    reported: Value | None = None
    rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Return True when the equipment confirmed the new value."""
        return self.status is WriteStatus.CONFIRMED

    @property
    def outcome(self) -> str:
        """Return the status as users read it."""
        return STATUS_NAMES[self.status]

    def as_dict(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "tag": self.tag,
            "value": self.value,
            "status": self.outcome,
            "detail": self.detail,
            "previous": self.previous,
            "reported": self.reported,
            "rule": self.rule,
        }
