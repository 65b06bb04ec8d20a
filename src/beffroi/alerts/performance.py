"""ISA-18.2 alarm-performance figures computed from the journal."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from beffroi.alerts.journal import Journal, aware_utc, naive_utc

# An annunciation: an alarm activating, or reaching a worse limit level, in front of operators.
_ANNUNCIATED = "event IN ('activate', 'level') AND annunciated"


def alarm_performance(
    journal: Journal,
    start: datetime,
    end: datetime,
    chatter_count: int = 3,
    chatter_window_s: float = 60.0,
    standing_after_h: float = 24.0,
) -> dict[str, Any]:
    """Return alarm rate, standing, chattering, top-10 and mean time to acknowledge."""
    t0, t1 = naive_utc(start), naive_utc(end)
    hours = max((end - start).total_seconds() / 3600.0, 1e-9)
    period = f"ts >= ? AND ts < ? AND {_ANNUNCIATED}"
    activations = journal.fetch(
        f"SELECT severity, count(*) AS n FROM alarm_events WHERE {period} GROUP BY severity",
        [t0, t1],
    )
    by_severity = {int(r["severity"]): int(r["n"]) for r in activations}
    total = sum(by_severity.values())
    peak = journal.fetch(
        f"SELECT time_bucket(INTERVAL 10 MINUTES, ts) AS b, count(*) AS n FROM alarm_events "
        f"WHERE {period} GROUP BY b ORDER BY n DESC LIMIT 1",
        [t0, t1],
    )
    # Standing: the last event of each alarm before the period's end says it is still active.
    standing = journal.fetch(
        "SELECT alarm_id, since FROM (SELECT *, row_number() OVER (PARTITION BY alarm_id "
        "ORDER BY seq DESC) AS r FROM alarm_events WHERE ts < ?) WHERE r = 1 AND active "
        "AND state IN ('unack_active', 'ack_active')",
        [t1],
    )
    old = t1 - timedelta(hours=standing_after_h) if t1 is not None else None
    chattering = journal.fetch(
        "SELECT alarm_id, any_value(tag) AS tag, any_value(asset) AS asset, "
        "any_value(commune) AS commune, max(n) AS max_in_window, count(*) AS activations "
        "FROM (SELECT *, count(*) OVER (PARTITION BY alarm_id ORDER BY ts RANGE BETWEEN "
        f"INTERVAL {float(chatter_window_s)} SECONDS PRECEDING AND CURRENT ROW) AS n "
        f"FROM alarm_events WHERE {period}) GROUP BY alarm_id HAVING max(n) >= ? "
        "ORDER BY max_in_window DESC, alarm_id",
        [t0, t1, chatter_count],
    )
    top = journal.fetch(
        "SELECT alarm_id, any_value(tag) AS tag, any_value(asset) AS asset, "
        "any_value(commune) AS commune, any_value(domain) AS domain, count(*) AS activations "
        f"FROM alarm_events WHERE {period} GROUP BY alarm_id "
        "ORDER BY activations DESC, alarm_id LIMIT 10",
        [t0, t1],
    )
    ack = journal.fetch(
        "SELECT count(*) AS n, avg(epoch(ts) - epoch(since)) AS mean_s, "
        "median(epoch(ts) - epoch(since)) AS median_s FROM alarm_events "
        "WHERE ts >= ? AND ts < ? AND event = 'ack' AND since IS NOT NULL",
        [t0, t1],
    )[0]
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "hours": round(hours, 3),
        "activations": total,
        "per_hour": round(total / hours, 3),
        "peak_per_10min": int(peak[0]["n"]) if peak else 0,
        "by_severity": {f"P{k}": by_severity.get(k, 0) for k in (1, 2, 3, 4)},
        "standing": len(standing),
        f"standing_over_{standing_after_h:g}h": sum(
            1 for r in standing if r["since"] is not None and old is not None and r["since"] < old
        ),
        "chattering": [_clean(r) for r in chattering],
        "top10": [_clean(r) for r in top],
        "acknowledged": int(ack["n"]),
        "mean_time_to_ack_s": None if ack["mean_s"] is None else round(float(ack["mean_s"]), 1),
        "median_time_to_ack_s": (
            None if ack["median_s"] is None else round(float(ack["median_s"]), 1)
        ),
    }


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (aware_utc(v).isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}
