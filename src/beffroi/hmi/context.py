"""The runtime objects the HMI pages read, set once by create_app before the pages load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beffroi.core.live import LiveValues
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.hmi.config import HmiSite


@dataclass(frozen=True, slots=True)
class HmiContext:
    """What the pages need: config, register, live values, historian and an optional status."""

    cfg: HmiSite
    register: Register
    live: LiveValues
    historian: Historian
    status: Callable[[], dict] | None = None
    alarms: Any = None  # the alarm service (beffroi.alerts.service.AlarmService), when running
    audit: Any = None  # the audit log (beffroi.control.audit.AuditLog), when control runs
    control: Any = None  # the control service (beffroi.control.service.ControlService)
    users: Any = None  # the user store (beffroi.hmi.users.UserStore)


_current: HmiContext | None = None


def set_context(ctx: HmiContext) -> None:
    """Make ctx the context every page callback reads (one HMI per process)."""
    global _current
    _current = ctx


def get_context() -> HmiContext:
    """Return the current context, or raise if create_app has not set one."""
    if _current is None:
        raise RuntimeError("the HMI context is not set: build the app with create_app() first")
    return _current
