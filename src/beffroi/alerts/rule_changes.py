"""Limit rules changed at runtime by supervisors: validated, kept in the journal, reapplied.

The config file stays what was deployed; a change made in the HMI is a row of the journal's
`rule_changes` table (who, when, why, the new limits and the file's limits it was made over),
applied over the config at each start, so that a restart does not silently undo what a
supervisor decided; until the file's limits of that rule change: a new deployment wins.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from beffroi.alerts.config import AlarmRuleConfig
from beffroi.alerts.journal import Journal
from beffroi.core.model import naive_utc

LIMIT_FIELDS = ("lolo", "lo", "hi", "hihi", "deadband")


class RuleChangeError(ValueError):
    """A change that cannot apply, said in one line for the operator."""


def changed_rule(rule: AlarmRuleConfig, limits: dict[str, float | None]) -> AlarmRuleConfig:
    """Return the rule with new limits, checked as the config file's are."""
    if rule.type != "limit":
        raise RuleChangeError(f"rule {rule.name} is a {rule.type} rule: only limits change here")
    unknown = set(limits) - set(LIMIT_FIELDS)
    if unknown:
        raise RuleChangeError(f"not a limit: {', '.join(sorted(unknown))}")
    data = {**rule.model_dump(by_alias=True, exclude_none=True), **limits}
    data = {k: v for k, v in data.items() if v is not None}
    try:
        return AlarmRuleConfig.model_validate(data)
    except ValidationError as exc:
        raise RuleChangeError(
            "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        ) from None


def limits_of(rule: AlarmRuleConfig) -> dict[str, float | None]:
    """Return a limit rule's limits and deadband."""
    return {k: getattr(rule, k) for k in LIMIT_FIELDS}


def record(
    journal: Journal,
    rule: str,
    limits: dict[str, float | None],
    base: dict[str, float | None],
    user: str,
    comment: str,
    ts: datetime,
) -> None:
    """Keep a change in the journal, with the config file's limits it was made over."""
    params = {"limits": limits, "base": base}
    journal.run(
        "INSERT INTO rule_changes VALUES (?, ?, ?, ?, ?)",
        [naive_utc(ts), rule, json.dumps(params), user, comment],
    )


def latest(journal: Journal) -> dict[str, dict[str, Any]]:
    """Return each changed rule's newest limits, with who changed them, when and why."""
    rows = journal.fetch(
        "SELECT r.rule, r.params, r.user_name, r.comment, r.ts FROM rule_changes r JOIN "
        "(SELECT rule, max(ts) AS ts FROM rule_changes GROUP BY rule) newest "
        "ON r.rule = newest.rule AND r.ts = newest.ts"
    )
    return {
        r["rule"]: {
            **json.loads(r["params"]),
            "user": r["user_name"],
            "comment": r["comment"],
            "ts": r["ts"],
        }
        for r in rows
    }
