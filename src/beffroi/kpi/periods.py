"""KPI periods: UTC hours, and local days and months as [local midnight, next local midnight).

A local day is not `every=1d`: Europe/Paris days start at 22:00 or 23:00 UTC and last 23, 24 or
25 hours. Every period here is a half-open range of aware UTC datetimes on whole UTC hours, so
days and months are sums of hourly cells.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

HOUR = timedelta(hours=1)
Resolution = Literal["hour", "day", "month"]
RESOLUTIONS: tuple[Resolution, ...] = ("hour", "day", "month")


def resolution_of(text: str) -> Resolution:
    """Return the resolution a user named, or raise ValueError saying which exist."""
    for r in RESOLUTIONS:
        if text == r:
            return r
    raise ValueError(f"resolution must be hour, day or month, got {text!r}")


def floor_hour(ts: datetime) -> datetime:
    """Return the start of the UTC hour holding ts."""
    ts = ts.astimezone(UTC)
    return ts.replace(minute=0, second=0, microsecond=0)


def ceil_hour(ts: datetime) -> datetime:
    """Return the first UTC hour boundary at or after ts."""
    f = floor_hour(ts)
    return f if f == ts else f + HOUR


def hours(start: datetime, end: datetime) -> list[datetime]:
    """Return the UTC hour starts in [floor(start), end)."""
    out, h = [], floor_hour(start)
    while h < end:
        out.append(h)
        h += HOUR
    return out


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """Return the UTC instant a local day starts."""
    # Midnight exists in every zone this project accepts (DST changes at 02:00/03:00 in Paris).
    return datetime(day.year, day.month, day.day, tzinfo=tz).astimezone(UTC)


def day_of(ts: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the local day holding ts as [start, end) in UTC."""
    d = ts.astimezone(tz).date()
    return local_midnight(d, tz), local_midnight(d + timedelta(days=1), tz)


def month_of(ts: datetime, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the local month holding ts as [start, end) in UTC."""
    d = ts.astimezone(tz).date().replace(day=1)
    nxt = (d + timedelta(days=32)).replace(day=1)
    return local_midnight(d, tz), local_midnight(nxt, tz)


def period_of(ts: datetime, resolution: Resolution, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """Return the period of a resolution holding ts, as [start, end) in UTC."""
    if resolution == "hour":
        h = floor_hour(ts)
        return h, h + HOUR
    return day_of(ts, tz) if resolution == "day" else month_of(ts, tz)


def periods(
    start: datetime, end: datetime, resolution: Resolution, tz: ZoneInfo
) -> Iterator[tuple[datetime, datetime]]:
    """Yield the periods of a resolution overlapping [start, end), in order."""
    if start >= end:
        return
    p0, p1 = period_of(start, resolution, tz)
    while p0 < end:
        yield p0, p1
        p0, p1 = period_of(p1, resolution, tz)


def parse_local(text: str, tz: ZoneInfo, *, end: bool = False) -> datetime:
    """Parse a date (local midnight; the next one when `end`) or an ISO 8601 time, to UTC."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            return local_midnight(d + timedelta(days=1) if end else d, tz)
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r}: expected a date (2026-01-31) or ISO 8601 time") from None
    return (ts.replace(tzinfo=tz) if ts.tzinfo is None else ts).astimezone(UTC)


def local_iso(ts: datetime, tz: ZoneInfo) -> str:
    """Format an instant as local ISO 8601 with its offset (an export is an edge)."""
    return ts.astimezone(tz).isoformat()
