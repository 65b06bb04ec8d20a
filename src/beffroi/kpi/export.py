"""Auditor exports: KPI series as CSV, streamed period by period, with a verifiable manifest.

The CSV has one row per stored value: period start and end in local time with their offset,
resolution, KPI, scope, value, unit, coverage and the gap-filled flag. The manifest beside it
says what the figures are (formulas, inputs with their compression settings, baseline), which
software computed them, the query, the row count and the SHA-256 of the CSV's bytes. Text cells
are safe to open in a spreadsheet (`core.csv_safe`); the hash is of the bytes as written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

import pandas as pd

import beffroi
from beffroi.core.csv_safe import safe_text
from beffroi.core.model import Quality, utcnow
from beffroi.core.seams import Historian
from beffroi.i18n import N_, _, in_locale
from beffroi.kpi.config import KpiSite
from beffroi.kpi.definitions import BY_NAME, COVERAGE, KpiDef, parse_series_tag, scope_commune
from beffroi.kpi.inputs_doc import inputs_of
from beffroi.kpi.periods import Resolution, local_iso, period_of

log = logging.getLogger(__name__)

HEADER = (
    "period_start", "period_end", "resolution", "kpi", "scope", "value", "unit",
    "coverage_pct", "gap_filled",
)  # fmt: skip
# The header row keeps these stable keys (tools, the API stream and the hash read them); the
# manifest names each column for people, in French.
COLUMN_LABELS = {
    "period_start": N_("start of the period (local time, with its offset)"),
    "period_end": N_("end of the period (local time, with its offset)"),
    "resolution": N_("resolution (hour, day, month)"),
    "kpi": N_("indicator"),
    "scope": N_("scope (metropolis, commune, commune/asset class)"),
    "value": N_("value (decimal point)"),
    "unit": N_("unit"),
    "coverage_pct": N_("coverage, in percent of the period"),
    "gap_filled": N_("gap-filled inputs (true/false)"),
}
# Periods read from the historian at once: bounds memory whatever the range.
CHUNK = {"hour": timedelta(days=2), "day": timedelta(days=31), "month": timedelta(days=366)}


@dataclass(frozen=True)
class ExportQuery:
    """What to export: [start, end) in UTC, a resolution, and optional KPI and commune filters."""

    start: datetime
    end: datetime
    resolution: Resolution = "day"
    kpis: tuple[str, ...] = ()
    communes: tuple[str, ...] = ()
    # Metropolis-wide figures aggregate every commune: only for users who see them all.
    metropolis: bool = True

    def wants(self, kpi: str, resolution: str, scope: str) -> bool:
        """Tell whether a series belongs to the export."""
        if resolution != self.resolution or (self.kpis and kpi not in self.kpis):
            return False
        commune = scope_commune(scope)
        if commune is None:
            return self.metropolis and not self.communes
        return not self.communes or commune in self.communes

    def as_json(self, tz: ZoneInfo) -> dict[str, Any]:
        """Return the query as the manifest records it."""
        return {
            "from": local_iso(self.start, tz),
            "to": local_iso(self.end, tz),
            "resolution": self.resolution,
            "kpis": list(self.kpis) or "all",
            "communes": list(self.communes) or "all",
            "metropolis_scopes": self.metropolis and not self.communes,
            "timezone": tz.key,
        }


@dataclass
class ExportResult:
    """What an export wrote."""

    rows: int = 0
    bytes: int = 0
    sha256: str = ""
    kpis: set[str] = field(default_factory=set)


def series_of(historian: Historian, query: ExportQuery) -> list[tuple[str, str, str]]:
    """Return (kpi, scope, value tag) of every stored series the export covers, sorted."""
    out = []
    for tag in historian.tags():
        parsed = parse_series_tag(tag)
        if parsed is None:
            continue
        kpi, res, fld, scope = parsed
        if fld == "" and kpi in BY_NAME and query.wants(kpi, res, scope):
            out.append((kpi, scope, tag))
    return sorted(out)


def _text(s: str) -> str:
    """Return a text cell of a hand-built CSV line: formula-safe, quoted when it must be."""
    s = safe_text(s)
    return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\r\n') else s


def _fmt(v: float) -> str:
    # repr is the shortest text that reads back as the same float: values equal the series.
    return "" if v is None or not math.isfinite(v) else repr(float(v))


def iter_csv(
    historian: Historian,
    query: ExportQuery,
    timezone: str,
    result: ExportResult | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Iterator[str]:
    """Yield the CSV text piece by piece, oldest period first; count rows into result."""
    tz = ZoneInfo(timezone)
    result = result if result is not None else ExportResult()
    series = series_of(historian, query)
    yield ",".join(HEADER) + "\r\n"
    if not series:
        return
    key_of = {tag: (kpi, scope) for kpi, scope, tag in series}
    # Scopes come from tag names: text cells like any other export's, formatted once a series.
    cells_of = {tag: (_text(kpi), _text(scope), _text(BY_NAME[kpi].unit))
                for kpi, scope, tag in series}  # fmt: skip
    cov_of = {tag: tag.replace(f".{query.resolution}/", f".{query.resolution}.{COVERAGE}/", 1)
              for _, _, tag in series}  # fmt: skip
    tags = [t for _, _, t in series] + list(cov_of.values())
    result.kpis.update(kpi for kpi, _, _ in series)
    step = CHUNK[query.resolution]
    total = max(1, math.ceil((query.end - query.start) / step))
    t0, done = query.start, 0
    while t0 < query.end:
        t1 = min(t0 + step, query.end)
        df = historian.query(tags, t0, t1)
        lines = _chunk_lines(df, key_of, cells_of, cov_of, query.resolution, tz)
        result.rows += len(lines)
        if lines:
            text = "\r\n".join(lines) + "\r\n"
            del lines  # one chunk in memory at a time
            yield text
        done += 1
        if progress is not None:
            progress(done, total)
        t0 = t1


def _chunk_lines(
    df: pd.DataFrame,
    key_of: dict[str, tuple[str, str]],
    cells_of: dict[str, tuple[str, str, str]],
    cov_of: dict[str, str],
    resolution: Resolution,
    tz: ZoneInfo,
) -> list[str]:
    """Format the rows of one chunk of series values, by period, KPI and scope."""
    if df.empty:
        return []
    # Plain Python and numpy columns: iterating pandas' Arrow strings row by row is slow.
    tags: list[str] = df["tag"].to_numpy(dtype=object).tolist()
    ts = df["ts"].dt.as_unit("us").astype("int64").to_numpy().tolist()
    value = df["value"].to_numpy(dtype=float).tolist()
    quality = df["quality"].to_numpy().tolist()
    is_value = [t in key_of for t in tags]
    cover = {(t, ts[i]): value[i] for i, t in enumerate(tags) if not is_value[i]}
    rows = [i for i, v in enumerate(is_value) if v]
    rows.sort(key=lambda i: (ts[i], key_of[tags[i]]))
    bounds: dict[int, str] = {}
    for t in {ts[i] for i in rows}:
        # A handful of distinct periods per chunk: format their bounds once.
        start = datetime.fromtimestamp(t / 1e6, UTC)
        end = period_of(start, resolution, tz)[1]
        bounds[t] = f"{local_iso(start, tz)},{local_iso(end, tz)},{resolution}"
    flag = {int(q): "true" if q == Quality.UNCERTAIN else "false" for q in Quality}
    out = []
    for i in rows:
        kpi, scope, unit = cells_of[tags[i]]
        c = cover.get((cov_of[tags[i]], ts[i]), math.nan)
        out.append(
            f"{bounds[ts[i]]},{kpi},{scope},{_fmt(value[i])},{unit},{_fmt(c)},{flag[quality[i]]}"
        )
    return out


class HashingWriter:
    """Write text as UTF-8 bytes to a binary file, hashing and counting them on the way."""

    def __init__(self, f: IO[bytes]):
        self.f, self.sha, self.bytes = f, hashlib.sha256(), 0

    def write(self, text: str) -> None:
        """Write a piece of text."""
        data = text.encode("utf-8")
        self.sha.update(data)
        self.bytes += len(data)
        self.f.write(data)


def definitions(cfg: KpiSite, kpis: set[str]) -> list[dict[str, Any]]:
    """Return the definitions of KPIs as the manifest records them: formula, inputs, baseline."""
    out = []
    for name in sorted(kpis):
        k: KpiDef = BY_NAME[name]
        out.append(
            {
                "kpi": k.name,
                "label": k.label,
                "unit": k.unit,
                "formula": k.formula,
                "components": list(k.components),
                "coverage": _(
                    "share of the period's time backed by Good-quality samples of %(tags)s"
                )
                % {"tags": ", ".join(k.coverage_from)},
                **inputs_of(cfg, k.family),
            }
        )
    return out


def manifest(
    cfg: KpiSite, query: ExportQuery, csv_path: Path, result: ExportResult
) -> dict[str, Any]:
    """Return the sidecar manifest of a written export, its text for people in French."""
    with in_locale("fr"):  # a file, the same whoever asks for it
        return _manifest(cfg, query, csv_path, result)


def _manifest(
    cfg: KpiSite, query: ExportQuery, csv_path: Path, result: ExportResult
) -> dict[str, Any]:
    tz = ZoneInfo(cfg.metropolis.timezone)
    return {
        "file": csv_path.name,
        "sha256": result.sha256,
        "bytes": result.bytes,
        "rows": result.rows,
        "columns": list(HEADER),
        "column_labels": {c: _(COLUMN_LABELS[c]) for c in HEADER},
        "csv_dialect": _(
            "comma-separated, UTF-8, CRLF line ends; numbers with a decimal point, "
            "times in ISO 8601"
        ),
        "generated_at": local_iso(utcnow(), tz),
        "software": {"name": "beffroi", "version": beffroi.__version__},
        "metropolis": cfg.metropolis.name,
        "query": query.as_json(tz),
        "quality": _(
            "gap_filled = true when gap-filled (interpolated) inputs went into the value; "
            "an empty value is undefined (no Good data, or a ratio over zero)"
        ),
        "text_cells": _(
            "a text cell starting with =, +, -, @, a tab or a carriage return is "
            "written with a leading ' so that spreadsheets show it as text (CSV injection)"
        ),
        "definitions": definitions(cfg, result.kpis or set(query.kpis)),
    }


def manifest_path(csv_path: Path) -> Path:
    """Return where the manifest of a CSV goes: beside it, `.manifest.json` appended."""
    return csv_path.with_name(csv_path.name + ".manifest.json")


def write_export(
    historian: Historian,
    cfg: KpiSite,
    query: ExportQuery,
    out: Path,
    progress: Callable[[int, int], None] | None = None,
) -> ExportResult:
    """Write the CSV and its manifest; return rows, bytes and hash."""
    result = ExportResult()
    chunks = iter_csv(historian, query, cfg.metropolis.timezone, result, progress)
    write_stream(chunks, out, result)
    write_manifest(cfg, query, out, result)
    return result


def write_stream(chunks: Iterator[str], out: Path, result: ExportResult) -> None:
    """Write CSV text to a file through a temporary name, hashing it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with tmp.open("wb") as f:
        w = HashingWriter(f)
        for chunk in chunks:
            w.write(chunk)
    tmp.replace(out)
    result.sha256, result.bytes = w.sha.hexdigest(), w.bytes


def write_manifest(cfg: KpiSite, query: ExportQuery, out: Path, result: ExportResult) -> Path:
    """Write the manifest beside the CSV."""
    path = manifest_path(out)
    body = manifest(cfg, query, out, result)
    path.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("exported %d rows to %s (sha256 %s)", result.rows, out, result.sha256)
    return path


class Exporter:
    """Exports for the command line: from the historian, or from a running gateway's stream."""

    def __init__(self, cfg: KpiSite):
        self.cfg = cfg

    def query(
        self,
        start: datetime,
        end: datetime,
        resolution: Resolution = "day",
        kpis: tuple[str, ...] = (),
        communes: tuple[str, ...] = (),
    ) -> ExportQuery:
        """Return an export query, checking the KPI names and communes."""
        unknown = [k for k in kpis if k not in BY_NAME]
        if unknown:
            raise ValueError(f"unknown KPI {unknown[0]!r} (known: {', '.join(BY_NAME)})")
        known = set(self.cfg.commune_ids())
        bad = [c for c in communes if c not in known]
        if bad:
            raise ValueError(f"unknown commune {bad[0]!r}")
        return ExportQuery(start, end, resolution, tuple(kpis), tuple(communes))

    def to_file(
        self,
        historian: Historian,
        query: ExportQuery,
        out: Path,
        progress: Callable[[int, int], None] | None = None,
    ) -> ExportResult:
        """Export from the historian to a CSV file and its manifest."""
        return write_export(historian, self.cfg, query, out, progress)

    def from_stream(
        self,
        chunks: Iterator[str],
        query: ExportQuery,
        out: Path,
        on_rows: Callable[[int], None] | None = None,
    ) -> ExportResult:
        """Write CSV text received from a gateway, counting its rows; then the manifest."""
        result = ExportResult()

        def counted() -> Iterator[str]:
            pending = ""
            for chunk in chunks:
                yield chunk
                pending += chunk
                lines = pending.split("\r\n")
                pending = lines.pop()
                for line in lines:
                    if line and not line.startswith(HEADER[0]):
                        result.rows += 1
                        result.kpis.add(line.split(",")[3])
                if on_rows is not None:
                    on_rows(result.rows)

        write_stream(counted(), out, result)
        write_manifest(self.cfg, query, out, result)
        return result
