"""The state of a playbook run: its planned commands, step results, and their persistence."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from beffroi.control.audit import AuditLog
from beffroi.core.model import Value

log = logging.getLogger(__name__)

# States of a run, in order; a run is open (may be rolled back) from running to stopped.
OPEN = ("running", "done", "stopped", "rollback_failed")
FINAL = ("rolled_back", "discarded")


@dataclass(slots=True)
class PlannedCommand:
    """One setpoint a step sends, and what became of it and of its undoing."""

    tag: str
    asset: str
    commune: str
    distance_m: float
    value: Value
    previous: Value | None = None
    status: str = "pending"
    detail: str = ""
    rollback_status: str = ""
    rollback_detail: str = ""


@dataclass(slots=True)
class StepRun:
    """One step of a run: its commands or its e-mail, its status and its rollback's."""

    index: int
    title: str
    action: str
    on_rollback: str = "restore"
    stop_on_failure: bool = False
    commands: list[PlannedCommand] = field(default_factory=list)
    to: list[str] = field(default_factory=list)
    subject: str = ""
    body: str = ""
    rollback_subject: str = ""
    rollback_body: str = ""
    note: str = ""
    status: str = "pending"
    detail: str = ""
    rollback_status: str = ""
    rollback_detail: str = ""

    def summarise(self, attr: str = "status") -> str:
        """Return the step's status from its commands: confirmed, partial, failed or skipped."""
        done = [getattr(c, attr) for c in self.commands]
        if not done:
            return "skipped"
        ok = sum(1 for s in done if s in ("confirmed", "restored", "kept"))
        if ok == len(done):
            return "confirmed" if attr == "status" else "restored"
        return "failed" if ok == 0 else "partial"


@dataclass(slots=True)
class PlaybookRun:
    """A playbook applied at one place by one user: previewed, run, then rolled back."""

    id: str
    playbook: str
    label: str
    place: str
    lat: float
    lon: float
    radius_m: float
    user: str
    created: datetime
    steps: list[StepRun]
    state: str = "preview"
    started: datetime | None = None
    finished: datetime | None = None
    rolled_back_by: str = ""
    rolled_back: datetime | None = None
    log: list[str] = field(default_factory=list)

    @property
    def hold_owner(self) -> str:
        """Return the hold name this run puts on the setpoints it sends."""
        return f"playbook:{self.id}"

    def communes(self) -> set[str]:
        """Return the communes of every command of the run."""
        return {c.commune for s in self.steps for c in s.commands}

    def as_dict(self) -> dict[str, Any]:
        """Return the run as JSON-ready data (times ISO UTC)."""
        out = asdict(self)
        for k in ("created", "started", "finished", "rolled_back"):
            v = out[k]
            out[k] = v.isoformat() if isinstance(v, datetime) else v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PlaybookRun:
        """Rebuild a run stored with as_dict."""
        d = dict(d)
        for k in ("created", "started", "finished", "rolled_back"):
            if d.get(k):
                d[k] = datetime.fromisoformat(d[k]).astimezone(UTC)
        steps = []
        for s in d.pop("steps"):
            s = dict(s)
            s["commands"] = [PlannedCommand(**c) for c in s["commands"]]
            steps.append(StepRun(**s))
        return cls(steps=steps, **d)


class RunStore:
    """Runs kept in the audit file's `playbook_runs` table, so open ones survive a restart."""

    def __init__(self, audit: AuditLog):
        self.audit = audit

    def save(self, run: PlaybookRun) -> None:
        """Store a run's current state (previews are not stored)."""
        if run.state == "preview":
            return
        try:
            self.audit.execute(
                "INSERT INTO playbook_runs VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "updated = excluded.updated, state = excluded.state, body = excluded.body",
                [
                    run.id,
                    datetime.now(UTC).replace(tzinfo=None),
                    run.state,
                    json.dumps(run.as_dict(), default=str, ensure_ascii=False),
                ],
            )
        except Exception:  # the audit log has each step; the run state is a convenience
            log.exception("cannot store playbook run %s", run.id)

    def load_open(self) -> list[PlaybookRun]:
        """Return the runs not yet rolled back (to be rolled back after a restart)."""
        rows = self.audit.fetch(
            "SELECT body FROM playbook_runs WHERE state IN "
            f"({', '.join('?' * len(OPEN))}) ORDER BY updated",
            list(OPEN),
        )
        return [PlaybookRun.from_dict(json.loads(r["body"])) for r in rows]
