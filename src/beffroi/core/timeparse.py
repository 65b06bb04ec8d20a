"""Parse the times and bucket widths users type: `now`, `-15m`, ISO 8601, `1h`."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_WIDTH = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Parse `now`, a relative time like `-15m`/`-2h`/`-7d`, or ISO 8601 (naive = UTC)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        try:
            return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
        except OverflowError:  # -99999999d: before the year 1
            raise ValueError(f"{text!r}: too far back") from None
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected now, -15m, -2h, -7d or ISO 8601") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_every(text: str) -> timedelta:
    """Parse a bucket width like `30s`, `15m`, `1h`, `1d`."""
    m = _WIDTH.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r}: expected a width like 30s, 15m, 1h or 1d")
    try:
        return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r}: too wide") from None
