"""Auditor exports: the CSV verifies against its manifest and equals the stored KPI series."""

from __future__ import annotations

import csv
import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

import beffroi
from beffroi.app.config import parse_config
from beffroi.cli import app
from beffroi.core.model import Sample
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.kpi.definitions import COVERAGE, parse_series_tag, series_tag
from beffroi.kpi.engine import KpiEngine
from beffroi.kpi.export import ExportQuery, manifest_path, write_export
from beffroi.kpi.store import KpiStore
from tests.test_kpi_cases import CASES, read_samples

NOW = datetime(2026, 4, 5, 12, tzinfo=UTC)
# The spring DST case's data, with compression configured on the building's power (the
# manifest must state it) and the demo's lighting baseline rules.
EXTRA = """
[compression.classes.building]
power_kw = { deviation = 0.5, max_time_s = 900 }

[kpi.lighting]
class = "streetlight_cabinet"
default_kw = 3.0
"""


def _config(tmp_path: Path):
    base = (CASES / "base.toml").read_text().replace("[compression]\nenabled = false", "")
    text = base + "\n" + (CASES / "dst_spring" / "config.toml").read_text() + EXTRA
    text += f'\n[historian]\npath = "{tmp_path / "h.duckdb"}"\n'
    text += f'\n[kpi]\njournal = "{tmp_path / "kpi.duckdb"}"\n'
    (tmp_path / "config.toml").write_text(text)
    return parse_config(text, str(tmp_path / "config.toml"))


@pytest.fixture
def computed(tmp_path: Path):
    """Return a config and a historian holding the KPIs of 28-30 March 2026."""
    cfg = _config(tmp_path)
    register = build_register(cfg)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    hist.write(read_samples(CASES / "dst_spring" / "samples.csv"))
    engine = KpiEngine(cfg, register, hist, store=KpiStore(tmp_path / "kpi.duckdb"),
                       clock=lambda: NOW)  # fmt: skip
    engine.recompute(datetime(2026, 3, 27, 23, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC))
    engine.close()
    yield cfg, hist
    hist.close()


def _stored(hist, resolution: str, start: datetime, end: datetime) -> dict:
    """Return {(kpi, scope, ts): (value, coverage)} of every stored series of a resolution."""
    tags = [t for t in hist.tags() if (p := parse_series_tag(t)) and p[1] == resolution]
    df = hist.query(tags, start, end)
    out: dict = {}
    for tag, ts, v in zip(df["tag"], df["ts"], df["value"], strict=True):
        kpi, _, fld, scope = parse_series_tag(tag)
        out.setdefault((kpi, scope, ts), {})[fld or "value"] = v
    return out


def test_export_round_trip(computed, tmp_path: Path) -> None:
    """Manifest hash = the CSV's bytes; every stored value is a row, equal to the series."""
    cfg, hist = computed
    start, end = datetime(2026, 3, 27, 23, tzinfo=UTC), datetime(2026, 3, 30, 22, tzinfo=UTC)
    out = tmp_path / "export" / "kpis.csv"
    result = write_export(hist, cfg, ExportQuery(start, end, "day"), out)
    data = out.read_bytes()
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest() == result.sha256
    assert manifest["bytes"] == len(data)
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    assert manifest["rows"] == len(rows) == result.rows
    stored = _stored(hist, "day", start, end)
    assert len(rows) == len(stored)
    for r in rows:
        ts = datetime.fromisoformat(r["period_start"]).astimezone(UTC)
        s = stored[(r["kpi"], r["scope"], ts)]
        assert (float(r["value"]) if r["value"] else None) == (
            None if s["value"] != s["value"] else s["value"]
        )
        assert float(r["coverage_pct"]) == s[COVERAGE]
    by_key = {(r["kpi"], r["scope"], r["period_start"]): r for r in rows}
    day = by_key[("energy_kwh", "dijon", "2026-03-29T00:00:00+01:00")]
    assert day["period_end"] == "2026-03-30T00:00:00+02:00"  # 23 hours, offsets at both ends
    assert (day["value"], day["unit"], day["gap_filled"]) == ("46.0", "kWh", "false")
    # What an auditor needs to check the figures.
    assert manifest["software"] == {"name": "beffroi", "version": beffroi.__version__}
    assert manifest["query"]["from"] == "2026-03-28T00:00:00+01:00"
    assert manifest["query"]["to"] == "2026-03-31T00:00:00+02:00"
    # The header keeps its stable keys; the manifest names the columns in French.
    assert manifest["columns"] == list(rows[0])
    assert manifest["column_labels"]["kpi"] == "indicateur"
    assert "ISO 8601" in manifest["csv_dialect"] and "point décimal" in manifest["csv_dialect"]
    defs = {d["kpi"]: d for d in manifest["definitions"]}
    assert "bonne qualité" in defs["energy_kwh"]["coverage"]
    energy = defs["energy_kwh"]
    assert "counter" in energy["formula"] and "integral" in energy["formula"]
    building = next(i for i in energy["inputs"] if i["class"] == "building")
    assert building["compression"]["deviation"] == 0.5
    assert building["compression"]["max_time_s"] == 900
    assert building["held_after_silence_s"] == 900
    assert defs["lighting_savings_pct"]["baseline"]["default_kw"] == 3.0
    assert defs["lighting_savings_pct"]["baseline"]["target_pct"] == 65


def test_export_filters_and_hourly_dst(computed, tmp_path: Path) -> None:
    """--commune and --kpi keep only those series; hourly rows show the DST jump."""
    cfg, hist = computed
    start, end = datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC)
    out = tmp_path / "h.csv"
    q = ExportQuery(start, end, "hour", ("energy_kwh",), ("dijon",))
    write_export(hist, cfg, q, out)
    rows = list(csv.DictReader(out.open()))
    assert {r["kpi"] for r in rows} == {"energy_kwh"}
    assert {r["scope"].split("/")[0] for r in rows} == {"dijon"}
    starts = [r["period_start"] for r in rows if r["scope"] == "dijon"]
    assert len(starts) == 23
    assert "2026-03-29T01:00:00+01:00" in starts and "2026-03-29T03:00:00+02:00" in starts


def test_cli_compute_and_export(computed, tmp_path: Path) -> None:
    """`beffroi kpi compute` then `export` from the files: rows and manifest match."""
    _, hist = computed
    hist.close()  # the CLI opens the file itself
    runner = CliRunner()
    config = str(tmp_path / "config.toml")
    res = runner.invoke(app, ["kpi", "compute", "-c", config, "--from", "2026-03-29",
                              "--to", "2026-03-29"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "computed 23 hours" in res.stdout
    out = tmp_path / "cli.csv"
    res = runner.invoke(app, ["kpi", "export", "-c", config, "--from", "2026-03-28", "--to",
                              "2026-03-30", "--kpi", "energy_kwh", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert f"{manifest['rows']} rows written" in res.stdout
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == manifest["rows"] == 3 * 11  # 3 days × 11 energy scopes of the case
    metro = [r for r in rows if r["scope"] == "metropolis"]
    assert [r["value"] for r in metro] == ["72.0", "69.0", "72.0"]
    res = runner.invoke(app, ["kpi", "export", "-c", config, "--from", "2026-03-28", "--to",
                              "2026-03-30", "--kpi", "nope", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2 and "unknown KPI 'nope'" in res.stderr

    # A corrected reading on the 29th, then a recompute: the change of a closed day is listed.
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    hist.write([Sample("dijon/BT-1/power_kw", datetime(2026, 3, 29, 10, 5, tzinfo=UTC), 50.0)])
    hist.close()
    res = runner.invoke(app, ["kpi", "compute", "-c", config, "--from", "2026-03-29",
                              "--to", "2026-03-29"])  # fmt: skip
    assert res.exit_code == 0 and "changes of closed periods recorded" in res.stdout
    res = runner.invoke(app, ["kpi", "changes", "-c", config])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("detected_at,kpi,resolution,scope,period_start")
    day = [ln for ln in lines if ",energy_kwh,day,dijon,2026-03-29T00:00:00+01:00," in ln]
    assert len(day) == 1 and day[0].endswith(",recompute requested")
    assert ",46.0," in day[0]  # the old value


def test_series_tags_are_parsed_back() -> None:
    """The storage scheme reads back: kpi, resolution, field, scope."""
    tag = series_tag("energy_kwh", "day", "dijon/domain-lighting", COVERAGE)
    assert tag == "_kpi/energy_kwh.day.coverage/dijon/domain-lighting"
    assert parse_series_tag(tag) == ("energy_kwh", "day", "coverage", "dijon/domain-lighting")
    assert parse_series_tag("dijon/LC-0001/power_kw") is None
