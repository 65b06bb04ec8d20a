"""What an intervention and a resident's report are, and the moves an intervention may make."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from beffroi.i18n import N_


class State(StrEnum):
    """Where a work order stands."""

    NEW = "new"
    ASSIGNED = "assigned"
    EN_ROUTE = "en_route"
    ON_SITE = "on_site"
    DONE = "done"
    CANCELLED = "cancelled"


# English message ids, translated where they are shown (`_(STATE_LABELS[s])`).
STATE_LABELS = {
    State.NEW: N_("New"),
    State.ASSIGNED: N_("Assigned"),
    State.EN_ROUTE: N_("En route"),
    State.ON_SITE: N_("On site"),
    State.DONE: N_("Done"),
    State.CANCELLED: N_("Cancelled"),
}
# What each kind of history event is called (English ids, translated where shown).
EVENT_LABELS = {
    "created": N_("Creation"),
    "state": N_("State change"),
    "assign": N_("Assignment"),
    "note": N_("Note"),
    "merge": N_("Merging"),
    "link": N_("Attachment"),
}
CLOSED = frozenset({State.DONE, State.CANCELLED})
# Forward, one step or more (a crew may close from "assigned"); cancelling from any open state.
ORDER = (State.NEW, State.ASSIGNED, State.EN_ROUTE, State.ON_SITE, State.DONE)


def can_move(current: State, target: State) -> bool:
    """Tell whether an intervention may go from one state to another."""
    if current in CLOSED or current == target:
        return False
    if target is State.CANCELLED:
        return True
    return ORDER.index(target) > ORDER.index(current)


class Via(StrEnum):
    """Where a change came from (every change is audited with it)."""

    HMI = "hmi"
    FIELD = "field"
    AUTO = "auto"
    PUBLIC = "public"


@dataclass(frozen=True)
class Category:
    """A kind of problem a resident may report, with the domain whose equipment it concerns.

    `label` is an English message id, translated where it is shown."""

    id: str
    label: str
    domain: str | None
    classes: tuple[str, ...] = ()


CATEGORIES = {
    c.id: c
    for c in (
        Category(
            "dark_street",
            N_("Dark street / broken street light"),
            "lighting",
            ("streetlight_cabinet",),
        ),
        Category("traffic_light", N_("Broken traffic light"), "traffic", ("traffic_controller",)),
        Category("accident", N_("Traffic accident"), "traffic"),
        Category("bollard", N_("Damaged retractable bollard"), "security", ("bollard",)),
        Category("container", N_("Overflowing container"), "waste", ("waste_container",)),
        Category("water_leak", N_("Water leak"), "water", ("reservoir",)),
        Category("other", N_("Other problem"), None),
    )
}
# Report states: waiting for triage, taken into an intervention, refused, closed.
REPORT_STATES = ("new", "linked", "rejected", "closed")


@dataclass
class Intervention:
    """A work order, with its whole history."""

    id: int
    created: datetime
    title: str
    commune: str
    domain: str
    lat: float | None
    lon: float | None
    assets: list[str]
    priority: int
    team: str
    state: State
    origin: str
    updated: datetime
    merged_into: int | None = None
    times: dict[str, datetime] = field(default_factory=dict)  # state → when it was reached
    alarms: list[str] = field(default_factory=list)
    reports: list[int] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def open(self) -> bool:
        """Tell whether work remains."""
        return self.state not in CLOSED
