"""The runtime objects the HMI pages read, set once by create_app before the pages load."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beffroi.alerts.service import AlarmService
from beffroi.control.audit import AuditLog
from beffroi.control.service import ControlService
from beffroi.core.live import LiveValues
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.hmi.config import HmiSite
from beffroi.hmi.users import UserStore
from beffroi.interventions.service import InterventionService
from beffroi.inventory.service import Inventory


@dataclass(frozen=True, slots=True)
class HmiContext:
    """What the pages need: config, register, live values, historian, users; the optional parts."""

    cfg: HmiSite
    register: Register
    live: LiveValues
    historian: Historian
    users: UserStore
    status: Callable[[], dict[str, Any]] | None = None
    alarms: AlarmService | None = None  # None when the alarm service is not running
    audit: AuditLog | None = None  # None when control (and so its audit log) is not running
    control: ControlService | None = None  # None when control is not running
    inventory: Inventory | None = None  # the living inventory (imports, discovery, changes)
    pair: Callable[[], dict[str, Any]] | None = None  # the redundant pair, as this node sees it
    interventions: InterventionService | None = None  # work orders and residents' reports


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


def one_param(value: object) -> str | None:
    """Return a page's query parameter as one text: the first of a repeated one, else None."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None
