"""The alarm journal on real DuckDB files: queries, CSV export, figures, restore, offline CLI."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from beffroi.alerts.config import AlarmsConfig, journal_path
from beffroi.alerts.engine import AlarmEngine
from beffroi.alerts.journal import Journal, to_csv
from beffroi.alerts.performance import alarm_performance
from beffroi.alerts.service import AlarmService
from beffroi.alerts.state import AlarmState
from beffroi.app.config import load_config
from beffroi.cli import app
from beffroi.core.model import Sample
from beffroi.core.register import build_register
from beffroi.i18n import in_locale
from tests.conftest import ROOT

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
RULES = [
    {"name": "fault", "class": "streetlight_cabinet", "signal": "fault", "type": "discrete",
     "equals": True, "severity": 3},
    {"name": "fault", "class": "reservoir", "signal": "fault", "type": "discrete",
     "equals": True, "severity": 2},
]  # fmt: skip


class Clock:
    def __init__(self, t: datetime = T0):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def reg(demo_config):
    return build_register(demo_config, assets=300)


def by_class(reg, cls):
    return [a for a in reg.assets.values() if a.asset_class == cls]


def history(reg, clock: Clock) -> tuple[AlarmEngine, dict[str, str]]:
    """Drive a known history: a chattering cabinet, two acked alarms, a standing reservoir."""
    eng = AlarmEngine(AlarmsConfig.model_validate({"rules": RULES}), reg, clock=clock)
    lcs, rss = by_class(reg, "streetlight_cabinet"), by_class(reg, "reservoir")
    a, b, c = lcs[0], lcs[1], next(x for x in lcs if x.commune != lcs[0].commune)
    d = rss[0]
    ids = {k: f"{x.tag('fault')}#fault" for k, x in zip("abcd", (a, b, c, d), strict=True)}

    def put(asset, value):
        eng.process([Sample(asset.tag("fault"), clock(), value)])

    for _ in range(4):  # a: 4 activations in 45 s
        put(a, True)
        clock.advance(10)
        put(a, False)
        clock.advance(5)
    eng.ack([ids["a"]], "system", "chatter")
    put(b, True)
    clock.advance(120)
    eng.ack([ids["b"]], "marie", "sent a crew")
    clock.advance(600)
    put(b, False)
    put(c, True)
    clock.advance(60)
    eng.ack([ids["c"]], "paul", "")
    put(c, False)
    clock.advance(1800)
    put(d, True)  # still active at the end: standing
    clock.advance(10)
    return eng, ids


def test_journal_queries_and_csv_export(reg, tmp_path: Path) -> None:
    """Every transition is on disk; filters by commune, domain, state, time; CSV in local time."""
    clock = Clock()
    eng, ids = history(reg, clock)
    path = tmp_path / "journal.duckdb"
    j = Journal(path)
    assert j.write(eng.take_events()) == 16
    j.close()
    j = Journal(path, read_only=True)
    try:
        df = j.events()
        assert list(df.seq) == list(range(1, 17))
        first = df.iloc[0]
        assert first.ts == pd.Timestamp(T0) and first.alarm_id == ids["a"]
        assert (first.event, first.state, first.severity, first.value) == (
            "activate", "unack_active", 3, 1.0,
        )  # fmt: skip
        water = j.events(domains=["water"])
        assert list(water.alarm_id) == [ids["d"]] and water.iloc[0].commune
        acks = j.events(states=["ack_active"])
        assert set(acks.user) == {"marie", "paul"}
        commune = df[df.alarm_id == ids["c"]].iloc[0].commune
        assert set(j.events(communes=[commune]).alarm_id) >= {ids["c"]}
        late = j.events(start=T0 + timedelta(seconds=100), end=T0 + timedelta(seconds=200))
        assert list(late.event) == ["ack"] and late.iloc[0].comment == "sent a crew"
        assert len(j.events(limit=3)) == 3 and j.events(limit=3).iloc[-1].seq == 16
        events_b = j.events(alarm_ids=[ids["b"]])
        csv = to_csv(events_b)
    finally:
        j.close()
    rows = pd.read_csv(io.StringIO(csv))
    # Headers in French (the default language); event codes stay codes.
    assert list(rows.columns[:14]) == [
        "horodatage", "identifiant d'alarme", "variable", "équipement", "commune", "domaine",
        "gravité", "événement", "état", "niveau", "valeur", "seuil", "utilisateur", "commentaire",
    ]  # fmt: skip
    assert list(rows["événement"]) == ["activate", "ack", "clear"]
    assert rows.horodatage[0] == "2025-06-02T10:01:00+02:00"  # Paris summer time in exports
    assert rows.utilisateur[1] == "marie"
    with in_locale("en"):
        english = pd.read_csv(io.StringIO(to_csv(events_b)))
    keys = pd.read_csv(io.StringIO(to_csv(events_b, labels=False)))
    assert list(english.columns[:3]) == ["time", "alarm id", "tag"]
    assert list(keys.columns[:3]) == ["time", "alarm_id", "tag"]


def test_performance_figures_from_the_journal(reg, tmp_path: Path) -> None:
    """Rate, chattering, top 10, standing and mean time to acknowledge match the history."""
    clock = Clock()
    eng, ids = history(reg, clock)
    j = Journal(tmp_path / "journal.duckdb")
    j.write(eng.take_events())
    try:
        f = alarm_performance(j, T0, T0 + timedelta(hours=2))
    finally:
        j.close()
    assert f["activations"] == 7 and f["per_hour"] == 3.5
    assert f["by_severity"] == {"P1": 0, "P2": 1, "P3": 6, "P4": 0}
    assert [c["alarm_id"] for c in f["chattering"]] == [ids["a"]]
    assert f["chattering"][0]["max_in_window"] == 4
    assert f["top10"][0] == {**f["top10"][0], "alarm_id": ids["a"], "activations": 4}
    assert len(f["top10"]) == 4
    assert f["standing"] == 1
    # a acked 45 s after its last activation (15 s after the 4th): times are from `since`.
    assert f["acknowledged"] == 3
    assert f["mean_time_to_ack_s"] == pytest.approx((15 + 120 + 60) / 3, abs=0.1)


async def test_active_alarms_are_restored_at_restart(demo_config, reg, tmp_path: Path) -> None:
    """Stop the service with alarms active and shelved; a new one has them back."""
    clock = Clock()
    historian = demo_config.historian.model_copy(update={"path": str(tmp_path / "h.duckdb")})
    cfg = demo_config.model_copy(
        update={"alarms": AlarmsConfig.model_validate({"rules": RULES}), "historian": historian}
    )
    cfg._source = demo_config.source
    lc, rs = by_class(reg, "streetlight_cabinet")[0], by_class(reg, "reservoir")[0]
    a, d = f"{lc.tag('fault')}#fault", f"{rs.tag('fault')}#fault"
    async with contextlib.AsyncExitStack() as stack:
        svc = AlarmService(cfg, reg, clock=clock)
        await svc.start(stack)
        svc.process(
            [Sample(lc.tag("fault"), clock(), True), Sample(rs.tag("fault"), clock(), True)]
        )
        svc.shelve(d, "ana", "pump being replaced", minutes=60)
    assert journal_path(cfg) == tmp_path / "journal.duckdb"
    clock.advance(120)
    async with contextlib.AsyncExitStack() as stack:
        svc = AlarmService(cfg, reg, clock=clock)
        await svc.start(stack)
        got = {r["alarm_id"]: r for r in svc.alarms()}
        assert got[a]["state"] == "unack_active" and got[a]["since"] == T0.isoformat()
        assert got[d]["state"] == "shelved"
        svc.process([Sample(lc.tag("fault"), clock(), False)])
        assert svc.engine.alarms[a].state is AlarmState.UNACK_RTN
        clock.advance(3600)
        await svc.tick()
        assert svc.engine.alarms[d].state is AlarmState.UNACK_ACTIVE


def _config_file(tmp_path: Path) -> Path:
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    path = tmp_path / "cli.toml"
    path.write_text(text)
    return path


async def test_cli_reads_and_writes_the_journal_when_no_gateway_runs(tmp_path: Path) -> None:
    """list, ack, shelve, export and stats work on the journal file directly."""
    cfg_path = _config_file(tmp_path)
    cfg = load_config(cfg_path)
    reg = build_register(cfg, assets=60)
    lc = by_class(reg, "streetlight_cabinet")[0]
    aid = f"{lc.tag('fault')}#cabinet-fault"
    async with contextlib.AsyncExitStack() as stack:
        svc = AlarmService(cfg, reg)
        await svc.start(stack)
        svc.process([Sample(lc.tag("fault"), datetime.now(UTC), True)])
    runner = CliRunner()
    c = ["-c", str(cfg_path)]
    listed = runner.invoke(app, ["alarms", "list", *c, "--format", "json"])
    assert listed.exit_code == 0, listed.output
    [row] = json.loads(listed.stdout)
    assert (row["alarm_id"], row["state"], row["message"]) == (
        aid,
        "unack_active",
        "Défaut armoire",
    )
    acked = runner.invoke(app, ["alarms", "ack", aid, *c, "--user", "marie", "--comment", "seen"])
    assert acked.exit_code == 0, acked.output
    assert f"{aid}: ack → ack_active" in acked.stdout
    again = runner.invoke(app, ["alarms", "ack", aid, *c, "--user", "marie"])
    assert again.exit_code == 1 and "nothing to acknowledge" in again.stderr
    shelved = runner.invoke(app, ["alarms", "shelve", aid, *c, "--minutes", "30", "--user", "x"])
    assert shelved.exit_code == 0 and "shelve → shelved" in shelved.stdout
    too_long = runner.invoke(app, ["alarms", "shelve", aid, *c, "--minutes", "9999"])
    assert too_long.exit_code == 2 and "max_shelve_min" in too_long.stderr
    out = tmp_path / "alarms.csv"
    exported = runner.invoke(app, ["alarms", "export", *c, "--start", "-1h", "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = pd.read_csv(out)
    assert list(rows["événement"]) == ["activate", "ack", "shelve"]
    assert list(rows.utilisateur.fillna("")) == ["", "marie", "x"]
    assert rows.commentaire[1] == "seen"
    stats = runner.invoke(app, ["alarms", "stats", *c, "--json"])
    assert stats.exit_code == 0, stats.output
    figures = json.loads(stats.stdout)
    assert figures["activations"] == 1 and figures["acknowledged"] == 1
    text = runner.invoke(app, ["alarms", "stats", *c])
    assert "activations: 1" in text.stdout and "mean time to ack" in text.stdout
