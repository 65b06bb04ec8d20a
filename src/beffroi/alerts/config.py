"""Config of `[alarms]`: rules, teams, routes, e-mail; and their cross-checks."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal, Protocol

from pydantic import AfterValidator, Field, model_validator

from beffroi.core.config import DAYS, HHMM, Day, Emails, Slug, Strict, check_http_url
from beffroi.mail.config import SmtpConfig
from beffroi.state.config import Place, StateSite

Severity = Annotated[int, Field(ge=1, le=4)]
RuleType = Literal["limit", "discrete", "rate", "deviation", "stale", "commloss"]

# Which keys each rule type uses; any other type-specific key is an error, not silently ignored.
_KEYS: dict[str, set[str]] = {
    "limit": {"hihi", "hi", "lo", "lolo", "deadband", "extreme_severity"},
    "discrete": {"equals", "above", "below", "deadband"},
    "rate": {"max_rate_per_min", "window_s", "direction", "deadband"},
    "deviation": {"setpoint", "max_deviation", "factor", "offset", "deadband"},
    "stale": {"stale_factor"},
    "commloss": set(),
}
_SPECIFIC = set().union(*_KEYS.values())


class AlarmRuleConfig(Strict):
    """One alarm rule, on every asset of a class (a template) or on one tag."""

    name: Slug
    asset_class: str | None = Field(default=None, alias="class")
    tag: str | None = None
    signal: str | None = None
    type: RuleType
    severity: Severity = 3
    message: str = ""
    on_delay_s: float = Field(default=0.0, ge=0)
    off_delay_s: float = Field(default=0.0, ge=0)
    suppress_in_daylight: bool = False
    suppress_on_commloss: bool = True
    hihi: float | None = None
    hi: float | None = None
    lo: float | None = None
    lolo: float | None = None
    deadband: float | None = Field(default=None, ge=0)
    extreme_severity: Severity | None = None
    equals: bool | float | str | None = None
    above: float | None = None
    below: float | None = None
    max_rate_per_min: float | None = Field(default=None, gt=0)
    window_s: float | None = Field(default=None, gt=0)
    direction: Literal["up", "down", "both"] | None = None
    setpoint: str | None = None
    max_deviation: float | None = Field(default=None, gt=0)
    factor: float | None = None
    offset: float | None = None
    stale_factor: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _consistent(self) -> AlarmRuleConfig:
        if (self.asset_class is None) == (self.tag is None):
            raise ValueError("give one of class (every asset of a class) or tag (one tag)")
        if self.tag is not None and self.signal is not None:
            raise ValueError("signal goes with class; a tag rule names its signal in the tag")
        extra = sorted(k for k in _SPECIFIC - _KEYS[self.type] if getattr(self, k) is not None)
        if extra:
            raise ValueError(f"{', '.join(extra)}: not used by {self.type} rules")
        getattr(self, f"_check_{self.type}", lambda: None)()
        return self

    def _check_limit(self) -> None:
        levels = [(k, getattr(self, k)) for k in ("lolo", "lo", "hi", "hihi")]
        given = [(k, v) for k, v in levels if v is not None]
        if not given:
            raise ValueError("a limit rule needs at least one of hihi, hi, lo, lolo")
        for (ka, a), (kb, b) in pairwise(given):
            if a >= b:
                raise ValueError(f"limits must increase lolo < lo < hi < hihi: {ka} {a} ≥ {kb} {b}")

    def _check_discrete(self) -> None:
        if sum(v is not None for v in (self.equals, self.above, self.below)) != 1:
            raise ValueError("a discrete rule needs exactly one of equals, above, below")

    def _check_rate(self) -> None:
        if self.max_rate_per_min is None or self.window_s is None:
            raise ValueError("a rate rule needs max_rate_per_min and window_s")

    def _check_deviation(self) -> None:
        if self.setpoint is None or self.max_deviation is None:
            raise ValueError("a deviation rule needs setpoint and max_deviation")

    @property
    def signal_needed(self) -> bool:
        """Tell whether a class rule must name a signal (stale and commloss may watch all)."""
        return self.type not in ("stale", "commloss")


class OnCallConfig(Strict):
    """A weekly window (Europe/Paris) during which some addresses are on call for a team."""

    days: list[Day] = list(DAYS)
    start: HHMM = "00:00"
    end: HHMM = "24:00"
    addresses: Emails = Field(min_length=1)


class TeamConfig(Strict):
    """A maintenance team: its e-mails, on-call windows, escalations and members (HMI users)."""

    name: Slug
    addresses: Emails = []
    members: list[str] = Field(
        default=[], description="HMI user names: their 'Mon équipe' queue of interventions"
    )
    on_call: list[OnCallConfig] = []
    escalation: Emails = []
    escalate_after_min: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _someone(self) -> TeamConfig:
        if not self.addresses and not self.on_call:
            raise ValueError("a team needs addresses or on_call windows")
        return self


def _patterns(v: dict[str, str | list[str]]) -> dict[str, list[str]]:
    """Return each attribute's accepted values as a list (one value may be written alone)."""
    return {k: [p] if isinstance(p, str) else p for k, p in v.items()}


class RouteConfig(Strict):
    """Which alarms go to which team: by domain, commune, class, attributes and severity."""

    team: str
    domains: list[str] = []
    communes: list[str] = []
    classes: list[str] = []
    # The asset's free attributes (from the inventory), each matching one of its patterns
    # (`*` and `?` wildcards), e.g. {contrat = "EP-2024-*"}: the contractor's team.
    attributes: Annotated[dict[str, str | list[str]], AfterValidator(_patterns)] = {}
    min_severity: Severity = Field(default=4, description="route severities 1..min_severity")
    notify_return: bool = False


def _link_base(v: str) -> str:
    """Return the base of links to the HMI without its trailing slash ("" for the default)."""
    return check_http_url(v).rstrip("/") if v else v


class EmailConfig(SmtpConfig):
    """Alarm e-mails: whether they are sent, their links, digests and escalation."""

    enabled: bool = False
    hmi_url: Annotated[str, AfterValidator(_link_base)] = ""
    digest_window_s: float = Field(default=60.0, ge=0)
    escalate_severity: Severity = 2


class AlarmsConfig(Strict):
    """Alarm rules, the journal, the evaluation tick, and who is told by e-mail."""

    enabled: bool = True
    journal: str = Field(default="", description="default: journal.duckdb beside the historian")
    tick_s: float = Field(default=1.0, gt=0, le=60)
    max_shelve_min: float = Field(default=480.0, gt=0)
    chatter_count: int = Field(default=3, ge=2)
    chatter_window_s: float = Field(default=60.0, gt=0)
    rules: list[AlarmRuleConfig] = []
    teams: list[TeamConfig] = []
    routes: list[RouteConfig] = []
    email: EmailConfig = EmailConfig()


class AlarmsSite(StateSite, Protocol):
    """What the alarm service reads of the config."""

    @property
    def alarms(self) -> AlarmsConfig: ...


def journal_path(site: AlarmsSite) -> Path:
    """Return the journal file: as configured, or journal.duckdb in the gateway's data folder."""
    if site.alarms.journal:
        return site.resolve(site.alarms.journal)
    return site.data_dir() / "journal.duckdb"


def journal_place(site: AlarmsSite) -> Place:
    """Return where the journal lives: its file, or the `journal` schema in PostgreSQL."""
    return site.state.place(journal_path(site), "journal")


def _signal_problems(
    cfg: AlarmsSite, where: str, cls_id: str, signal: str | None, rule: AlarmRuleConfig
) -> list[str]:
    """Check that a rule's signal exists in its class and has a kind the rule can read."""
    cls = cfg.asset_classes.get(cls_id)
    if cls is None:  # a fixed asset of an unknown class: reported by the register checks
        return []
    signals = {s.name: s for s in cls.signals}
    if signal is None:
        return [] if not rule.signal_needed else [f"{where}.signal: required with class"]
    sig = signals.get(signal)
    if sig is None:
        return [f"{where}: {cls_id} has no signal {signal!r}"]
    numeric = rule.type in ("limit", "rate", "deviation") or (
        rule.type == "discrete" and rule.equals is None
    )
    if numeric and sig.kind == "str":
        return [f"{where}: {rule.type} rules need a float or bool signal ({signal} is str)"]
    if rule.type == "deviation":
        setpoint = rule.setpoint or ""  # a deviation rule has one (its own check)
        sp = setpoint if rule.asset_class else setpoint.rsplit("/", 1)[-1]
        if sp not in signals:
            return [f"{where}.setpoint: {cls_id} has no signal {sp!r}"]
    return []


def _tag_class(cfg: AlarmsSite, where: str, tag: str) -> tuple[str | None, list[str]]:
    """Return the asset class of a `commune/asset/signal` tag, or the problems found."""
    parts = tag.split("/")
    if len(parts) != 3:
        return None, [f"{where}.tag: expected commune/asset/signal, got {tag!r}"]
    commune, asset, _ = parts
    if commune not in set(cfg.commune_ids()):
        return None, [f"{where}.tag: unknown commune {commune!r}"]
    fixed = {f.id: f.asset_class for f in cfg.register.fixed}
    if asset in fixed:
        return fixed[asset], []
    prefix = asset.split("-", 1)[0]
    for cls_id, cls in cfg.asset_classes.items():
        if cls.prefix == prefix:
            return cls_id, []
    return None, [f"{where}.tag: no asset class or fixed asset matches {asset!r}"]


def alarm_problems(cfg: AlarmsSite) -> list[str]:
    """Check references of [alarms] to classes, signals, communes, domains and teams."""
    problems: list[str] = []
    alarms = cfg.alarms
    seen: dict[str, int] = {}
    for i, rule in enumerate(alarms.rules):
        where = f"alarms.rules[{i}]"
        if rule.name in seen:
            problems.append(
                f"{where}.name: duplicate rule name {rule.name!r} (also [{seen[rule.name]}])"
            )
        seen.setdefault(rule.name, i)
        if rule.asset_class is not None:
            if rule.asset_class not in cfg.asset_classes:
                problems.append(f"{where}.class: unknown asset class {rule.asset_class!r}")
                continue
            problems += _signal_problems(cfg, where, rule.asset_class, rule.signal, rule)
        else:
            cls_id, found = _tag_class(cfg, where, rule.tag or "")
            problems += found
            if cls_id is not None:
                signal = (rule.tag or "").rsplit("/", 1)[-1]
                problems += _signal_problems(cfg, where, cls_id, signal, rule)
    teams: dict[str, int] = {}
    for i, team in enumerate(alarms.teams):
        if team.name in teams:
            problems.append(f"alarms.teams[{i}].name: duplicate team {team.name!r}")
        teams.setdefault(team.name, i)
    communes, domains = set(cfg.commune_ids()), {c.domain for c in cfg.asset_classes.values()}
    for i, route in enumerate(alarms.routes):
        where = f"alarms.routes[{i}]"
        if route.team not in teams:
            problems.append(f"{where}.team: unknown team {route.team!r}")
        problems += [
            f"{where}.communes: unknown commune {c!r}" for c in route.communes if c not in communes
        ]
        problems += [
            f"{where}.domains: unknown domain {d!r}" for d in route.domains if d not in domains
        ]
        problems += [
            f"{where}.classes: unknown asset class {c!r}"
            for c in route.classes
            if c not in cfg.asset_classes
        ]
    if alarms.email.enabled and not alarms.routes:
        problems.append("alarms.email.enabled: no [[alarms.routes]] send alarms to a team")
    return problems
