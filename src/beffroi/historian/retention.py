"""Retention rules of `[historian.retention]`: how many days each tag keeps its raw samples."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from beffroi.core.model import naive_utc


def ids_by_days(
    ids: Mapping[str, int], rules: Mapping[str, float], default_days: float | None
) -> dict[float, list[int]]:
    """Group tag ids by their days kept: the first rule matching the tag, else the default."""
    by_days: dict[float, list[int]] = {}
    for name, tid in ids.items():
        days = next((d for p, d in rules.items() if matches(name, p)), default_days)
        if days is not None:
            by_days.setdefault(days, []).append(tid)
    return by_days


def first_day_kept(now: datetime, days: float) -> datetime:
    """Return the naive UTC midnight of the first day kept: every day before is past `days`."""
    cut = naive_utc(now - timedelta(days=days))
    return cut.replace(hour=0, minute=0, second=0, microsecond=0)


def matches(tag: str, pattern: str) -> bool:
    """Match a tag against a retention pattern: `*/BUS-*/lat` style, `*` within one level."""
    parts, pats = tag.split("/"), pattern.split("/")
    return len(parts) == len(pats) and all(
        fnmatchcase(p, s) for p, s in zip(parts, pats, strict=True)
    )
