"""Intervention KPIs: how fast teams take, reach and repair, what waits, who saw it first.

Over the interventions opened in a period (merged duplicates left out: their work is counted
once, in the one they joined), per scope (all, domain, commune, team):
- `opened`, `done`, `cancelled`: counts;
- `backlog`: open at the end of the period (opened before it, not closed by then);
- `time_to_assign_min`, `time_to_arrive_min`, `time_to_repair_min`: medians, in minutes, from
  opening to assigned, on site, done;
- `telemetry_first_pct`: of the faults both telemetry and residents saw (an alarm and a report
  linked), the share an alarm raised before the first report.
The auditor's CSV carries one row per scope, and a manifest beside it (definitions, SHA-256),
like the other KPI exports. No resident's address is read here.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

import beffroi
from beffroi.core.csv_safe import CRLF, safe_cell
from beffroi.core.model import naive_utc, utcnow
from beffroi.interventions.store import InterventionStore

COLUMNS = (
    "period_start", "period_end", "scope_kind", "scope", "opened", "done", "cancelled",
    "backlog", "time_to_assign_min", "time_to_arrive_min", "time_to_repair_min",
    "telemetry_first_pct",
)  # fmt: skip
DEFINITIONS = {
    "opened": "interventions opened in the period (merged duplicates excluded)",
    "done": "of those, closed as done",
    "cancelled": "of those, cancelled",
    "backlog": "interventions open at the period's end, whenever opened",
    "time_to_assign_min": "median minutes from opening to assigned (to a team)",
    "time_to_arrive_min": "median minutes from opening to on site",
    "time_to_repair_min": "median minutes from opening to done",
    "telemetry_first_pct": "of interventions with both an alarm and a resident's report "
    "linked, the share whose first alarm began before the first report",
}
SCOPES = ("domain", "commune", "team")


def intervention_kpis(store: InterventionStore, start: datetime, end: datetime) -> pd.DataFrame:
    """Return one row per scope (all, then each domain, commune, team) over [start, end)."""
    t0, t1 = naive_utc(start), naive_utc(end)
    df = store.db.frame(
        "SELECT id, created, domain, commune, team, state, assigned_at, on_site_at, done_at, "
        "cancelled_at, merged_into FROM interventions WHERE created < ? "
        "AND (merged_into IS NULL)",
        [t1],
    )
    links = store.db.frame(
        "SELECT intervention, kind, min(linked) AS first FROM intervention_links "
        "GROUP BY intervention, kind"
    )
    for col in ("created", "assigned_at", "on_site_at", "done_at", "cancelled_at"):
        df[col] = pd.to_datetime(df[col])
    closed_at = df["done_at"].fillna(df["cancelled_at"])
    df["open_at_end"] = closed_at.isna() | (closed_at >= t1)
    opened = df[df["created"] >= t0].copy()
    first = links.pivot_table(index="intervention", columns="kind", values="first", aggfunc="min")
    both = first.dropna(subset=[c for c in ("alarm", "report") if c in first.columns])
    if {"alarm", "report"} <= set(first.columns):
        ahead = (pd.to_datetime(both["alarm"]) < pd.to_datetime(both["report"])).rename("ahead")
    else:
        ahead = pd.Series(dtype=bool, name="ahead")
    opened = opened.join(ahead, on="id")
    rows = [_row("all", "all", opened, df)]
    for kind in SCOPES:
        for value in sorted(set(opened[kind]) | set(df.loc[df["open_at_end"], kind])):
            if value == "":
                continue
            rows.append(_row(kind, value, opened[opened[kind] == value], df[df[kind] == value]))
    out = pd.DataFrame(rows)
    out.insert(0, "period_end", end)
    out.insert(0, "period_start", start)
    return out[list(COLUMNS)]


def _minutes(later: pd.Series, created: pd.Series) -> float | None:
    spans = (later - created).dropna().dt.total_seconds() / 60.0
    return round(float(spans.median()), 1) if len(spans) else None


def _row(kind: str, scope: str, opened: pd.DataFrame, every: pd.DataFrame) -> dict[str, Any]:
    seen_both = opened["ahead"].dropna() if "ahead" in opened else pd.Series(dtype=bool)
    return {
        "scope_kind": kind,
        "scope": scope,
        "opened": len(opened),
        "done": int((opened["state"] == "done").sum()),
        "cancelled": int((opened["state"] == "cancelled").sum()),
        "backlog": int(every["open_at_end"].sum()),
        "time_to_assign_min": _minutes(opened["assigned_at"], opened["created"]),
        "time_to_arrive_min": _minutes(opened["on_site_at"], opened["created"]),
        "time_to_repair_min": _minutes(opened["done_at"], opened["created"]),
        "telemetry_first_pct": (
            round(100.0 * float(seen_both.astype(bool).mean()), 1) if len(seen_both) else None
        ),
    }


def to_csv(df: pd.DataFrame) -> str:
    """Return the KPI rows as CSV text (RFC 4180 line ends, text cells safe)."""
    out = df.copy()
    for col in ("period_start", "period_end"):
        out[col] = [t.isoformat() for t in out[col]]
    for col in ("scope_kind", "scope"):
        out[col] = out[col].map(safe_cell)
    buf = io.StringIO()
    out.to_csv(buf, index=False, lineterminator=CRLF)
    return buf.getvalue()


def write_export(
    text: str, start: datetime, end: datetime, out: Path, metropolis: str
) -> dict[str, Any]:
    """Write the CSV text and its manifest beside it; return the manifest."""
    data = text.encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(out)
    manifest = {
        "file": out.name,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "rows": text.count(CRLF) - 1,
        "columns": list(COLUMNS),
        "generated_at": utcnow().isoformat(),
        "software": {"name": "beffroi", "version": beffroi.__version__},
        "metropolis": metropolis,
        "query": {"from": start.isoformat(), "to": end.isoformat()},
        "definitions": DEFINITIONS,
        "personal_data": "none: no resident's address or name is read for these figures",
    }
    path = out.with_name(out.name + ".manifest.json")
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest
