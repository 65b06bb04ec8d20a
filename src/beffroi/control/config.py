"""Config of `[control]`: limits, interlocks, maintenance windows, playbooks, lighting."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from beffroi.core.config import DAYS, HHMM, Day, Emails, EnvName, Slug, Strict
from beffroi.core.site import SignalConfig
from beffroi.mail.config import SmtpConfig
from beffroi.state.config import Place, StateSite

SetValue = bool | float | str


class ClassControl(Strict):
    """Per asset class: how often one asset may be commanded, steps of its setpoints."""

    min_interval_s: float = Field(default=0.0, ge=0, description="one command per asset per …")
    steps: dict[str, float] = {}
    settle_s: float | None = Field(default=None, ge=0)

    @field_validator("steps")
    @classmethod
    def _positive(cls, steps: dict[str, float]) -> dict[str, float]:
        for signal, step in steps.items():
            if not step > 0:
                raise ValueError(f"{signal}: a step must be above 0, got {step}")
        return steps


class BlockWhen(Strict):
    """A condition on another signal of the same asset that blocks a command."""

    signal: Slug
    equals: SetValue


class InterlockConfig(Strict):
    """A rule refusing some commands while all its conditions hold."""

    name: Slug
    asset_class: str = Field(alias="class")
    signal: Slug
    values: list[SetValue] = Field(default=[], description="commands guarded; empty: all")
    block_when: BlockWhen | None = None
    outside_maintenance: bool = False
    unless_roles: list[str] = []
    message: str = ""

    @model_validator(mode="after")
    def _has_condition(self) -> InterlockConfig:
        if self.block_when is None and not self.outside_maintenance and not self.unless_roles:
            raise ValueError("give block_when, outside_maintenance or unless_roles")
        return self


class MaintenanceWindow(Strict):
    """A weekly window (local time) during which maintenance-only commands are allowed."""

    name: str = ""
    days: list[Day] = list(DAYS)
    start: HHMM = "00:00"
    end: HHMM = "24:00"
    communes: list[str] = []
    classes: list[str] = []


class PlaybookStepConfig(Strict):
    """One step of a playbook: setpoints to the assets of a class near the scene, or an e-mail."""

    title: str
    action: Literal["setpoint", "email"] = "setpoint"
    asset_class: str | None = Field(default=None, alias="class")
    signal: Slug | None = None
    value: SetValue | None = None
    within_m: float | None = Field(default=None, gt=0, description="default: the run's radius")
    nearest: int | None = Field(default=None, ge=1)
    on_rollback: Literal["restore", "keep"] = "restore"
    stop_on_failure: bool = False
    to: Emails = []
    subject: str = ""
    body: str = ""
    rollback_subject: str = ""
    rollback_body: str = ""

    @model_validator(mode="after")
    def _complete(self) -> PlaybookStepConfig:
        if self.action == "setpoint":
            if self.asset_class is None or self.signal is None or self.value is None:
                raise ValueError("a setpoint step needs class, signal and value")
            if self.to or self.subject:
                raise ValueError("to and subject go with action = 'email'")
        else:
            if not self.to or not self.subject:
                raise ValueError("an email step needs to and subject")
            if self.asset_class or self.signal or self.value is not None or self.nearest:
                raise ValueError("class, signal, value and nearest go with action = 'setpoint'")
        return self


class PlaybookConfig(Strict):
    """A named incident response: steps run in order around a place, each one undoable."""

    name: Slug
    label: str
    description: str = ""
    radius_m: float = Field(default=1000.0, gt=0, le=20_000)
    steps: list[PlaybookStepConfig] = Field(min_length=1)


class LightingLevels(Strict):
    """Dimming levels and switching offsets of a lighting schedule (None: the default's)."""

    dusk_offset_min: float | None = Field(default=None, ge=-180, le=180)
    dawn_offset_min: float | None = Field(default=None, ge=-180, le=180)
    evening_pct: float | None = Field(default=None, ge=0, le=100)
    night_pct: float | None = Field(default=None, ge=0, le=100)
    night_start: HHMM | None = None
    night_end: HHMM | None = None
    presence_pct: float | None = Field(default=None, ge=0, le=100)


class LightingProfile(LightingLevels):
    """A schedule for some cabinets (by id) or communes; the first matching profile wins."""

    name: str = ""
    assets: list[str] = []
    communes: list[str] = []


class LightingScheduleConfig(Strict):
    """Adaptive street lighting: on at dusk, off at dawn, reduced at night, boosted by presence."""

    enabled: bool = True
    asset_class: str = Field(default="streetlight_cabinet", alias="class")
    signal: Slug = "dimming_pct"
    tick_s: float = Field(default=5.0, gt=0, le=3600)
    dusk_offset_min: float = Field(default=0.0, ge=-180, le=180)
    dawn_offset_min: float = Field(default=0.0, ge=-180, le=180)
    evening_pct: float = Field(default=100.0, ge=0, le=100)
    night_pct: float = Field(default=50.0, ge=0, le=100)
    night_start: HHMM = "23:00"
    night_end: HHMM = "05:00"
    day_pct: float = Field(default=0.0, ge=0, le=100)
    presence_pct: float = Field(default=100.0, ge=0, le=100)
    presence_signal: Slug = "presence"
    presence_radius_m: float = Field(default=150.0, ge=0, le=5000)
    presence_hold_s: float = Field(default=120.0, ge=0)
    tolerance_pct: float = Field(default=1.0, ge=0)
    retry_after_s: float = Field(default=600.0, gt=0)
    communes: list[str] = []
    profiles: list[LightingProfile] = []


class ControlConfig(Strict):
    """Commands to equipment: select-before-operate, limits, interlocks, playbooks, lighting."""

    enabled: bool = True
    audit: str = Field(default="", description="default: audit.duckdb beside the historian")
    select_timeout_s: float = Field(default=30.0, gt=0, le=600)
    settle_s: float = Field(default=2.5, ge=0, le=120)
    write_timeout_s: float = Field(default=15.0, gt=0, le=300)
    concurrency: int = Field(default=16, ge=1, le=1000)
    manual_hold_min: float = Field(default=60.0, ge=0)
    min_reason_chars: int = Field(default=3, ge=1)
    classes: dict[str, ClassControl] = {}
    interlocks: list[InterlockConfig] = []
    maintenance: list[MaintenanceWindow] = []
    playbooks: list[PlaybookConfig] = []
    lighting: LightingScheduleConfig = LightingScheduleConfig()
    # Checkpoints of the audit log's head kept outside it, so that deleting its newest records
    # shows (control/audit_anchor.py): files, ideally on another disk or host.
    audit_anchor: list[str] = Field(
        default=[], description="default: audit-anchor.jsonl beside the historian"
    )
    audit_anchor_key_env: EnvName = Field(
        default="", description="default: audit-anchor.key in the data folder, made at first use"
    )
    audit_anchor_every_s: float = Field(default=60.0, ge=1, le=86_400)
    audit_anchor_email: Emails = []
    audit_anchor_email_every_h: float = Field(default=24.0, gt=0, le=744)

    @field_validator("audit_anchor", mode="before")
    @classmethod
    def _one_or_more(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v


class MailRelay(Protocol):
    """The section that names the gateway's one SMTP relay (`[alarms.email]`)."""

    @property
    def email(self) -> SmtpConfig: ...


class ControlSite(StateSite, Protocol):
    """What control reads of the config: its section, and the SMTP relay for playbook e-mails."""

    @property
    def control(self) -> ControlConfig: ...

    @property
    def alarms(self) -> MailRelay: ...


def audit_path(site: ControlSite) -> Path:
    """Return the audit file: as configured, or audit.duckdb in the gateway's data folder."""
    if site.control.audit:
        return site.resolve(site.control.audit)
    return site.data_dir() / "audit.duckdb"


def audit_place(site: ControlSite) -> Place:
    """Return where the audit log lives: its file, or the `audit` schema in PostgreSQL."""
    return site.state.place(audit_path(site), "audit")


def audit_anchor_paths(site: ControlSite) -> list[Path]:
    """Return the anchor files: as configured, or audit-anchor.jsonl in the data folder."""
    if site.control.audit_anchor:
        return [site.resolve(p) for p in site.control.audit_anchor]
    return [site.data_dir() / "audit-anchor.jsonl"]


def audit_anchor_key_path(site: ControlSite) -> Path:
    """Return the key file made at first use when no environment variable holds the key."""
    return site.data_dir() / "audit-anchor.key"


def value_problem(sig: SignalConfig, value: SetValue, step: float | None) -> str | None:
    """Say why a value does not suit a signal (kind, range, step), or None."""
    if sig.kind == "bool":
        return None if isinstance(value, bool) else f"{sig.name} takes true or false"
    if sig.kind == "str":
        return None if isinstance(value, str) else f"{sig.name} takes text"
    if isinstance(value, bool | str):
        return f"{sig.name} takes a number"
    if (sig.low is not None and value < sig.low) or (sig.high is not None and value > sig.high):
        return f"{value} is outside {sig.name}'s range [{sig.low}, {sig.high}]"
    if step and not on_step(value, sig.low or 0.0, step):
        return f"{value} is not on {sig.name}'s step of {step}"
    return None


def on_step(value: float, origin: float, step: float) -> bool:
    """Tell whether value = origin + k × step for an integer k (within rounding)."""
    k = (value - origin) / step
    return math.isclose(k, round(k), abs_tol=1e-6)


def control_problems(cfg: ControlSite) -> list[str]:
    """Check references of [control] to classes, signals, communes, and values' ranges."""
    ctl, out = cfg.control, []
    communes, classes = set(cfg.commune_ids()), cfg.asset_classes

    def signal(
        where: str, cls_id: str | None, name: str | None, writable: bool = True
    ) -> SignalConfig | None:
        cls = classes.get(cls_id or "")
        if cls is None:
            out.append(f"{where}.class: unknown asset class {cls_id!r}")
            return None
        sig = next((s for s in cls.signals if s.name == name), None)
        if sig is None:
            out.append(f"{where}: {cls_id} has no signal {name!r}")
        elif writable and not sig.writable:
            out.append(f"{where}: {cls_id}.{name} is not writable")
            return None
        return sig

    def step_of(cls_id: str | None, name: str | None) -> float | None:
        c = ctl.classes.get(cls_id or "")
        return c.steps.get(name or "") if c else None

    for cls_id, c in ctl.classes.items():
        for name in c.steps:
            sig = signal(f"control.classes.{cls_id}.steps.{name}", cls_id, name)
            if sig is not None and sig.kind != "float":
                out.append(f"control.classes.{cls_id}.steps.{name}: only float signals have steps")
    for i, rule in enumerate(ctl.interlocks):
        where = f"control.interlocks[{i}]"
        sig = signal(where, rule.asset_class, rule.signal)
        for v in rule.values:
            if sig is not None and (p := value_problem(sig, v, None)) is not None:
                out.append(f"{where}.values: {p}")
        if rule.block_when is not None and sig is not None:
            signal(f"{where}.block_when", rule.asset_class, rule.block_when.signal, False)
        out += [
            f"{where}.unless_roles: unknown role {r!r}"
            for r in rule.unless_roles
            if r not in ("viewer", "operator", "supervisor", "auditor", "admin", "system")
        ]
    for i, w in enumerate(ctl.maintenance):
        out += [
            f"control.maintenance[{i}].communes: unknown commune {c!r}"
            for c in w.communes
            if c not in communes
        ]
        out += [
            f"control.maintenance[{i}].classes: unknown asset class {c!r}"
            for c in w.classes
            if c not in classes
        ]
    names: dict[str, int] = {}
    for i, pb in enumerate(ctl.playbooks):
        if pb.name in names:
            out.append(f"control.playbooks[{i}].name: duplicate playbook {pb.name!r}")
        names.setdefault(pb.name, i)
        for j, step in enumerate(pb.steps):
            where = f"control.playbooks[{i}].steps[{j}]"
            if step.action != "setpoint":
                continue
            sig = signal(where, step.asset_class, step.signal)
            if sig is not None and step.value is not None:
                p = value_problem(sig, step.value, step_of(step.asset_class, step.signal))
                if p is not None:
                    out.append(f"{where}.value: {p}")
    audit_file = audit_path(cfg).resolve()
    for i, anchor in enumerate(audit_anchor_paths(cfg) if ctl.audit_anchor else []):
        if anchor.resolve() == audit_file:
            out.append(f"control.audit_anchor[{i}]: must be another file than the audit log")
    light = ctl.lighting
    # The defaults name the demo's classes: a config without them simply has no lighting
    # schedule or car parks to publish; naming a class that does not exist is an error.
    if light.enabled and light.model_fields_set:
        signal("control.lighting", light.asset_class, light.signal)
        out += [
            f"control.lighting.communes: unknown commune {c!r}"
            for c in light.communes
            if c not in communes
        ]
        for i, prof in enumerate(light.profiles):
            out += [
                f"control.lighting.profiles[{i}].communes: unknown commune {c!r}"
                for c in prof.communes
                if c not in communes
            ]
    return out
