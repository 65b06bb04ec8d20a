"""CSV exports open safely in a spreadsheet: text from people or equipment is never a formula.

Hostile texts go into the real stores (the DuckDB historian, the alarm journal), each CSV comes
out of the code path users take (the CLI, the HMI's download callbacks over HTTP), and the
parsed cells must show: no text starting with = + - @ tab or CR unless after a `'`, no row
broken by a text's own line break, the text otherwise unchanged, and numbers (a value of -5.2)
still numbers.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from typer.testing import CliRunner

from beffroi.alerts.config import journal_path
from beffroi.alerts.engine import AlarmEngine
from beffroi.alerts.journal import Journal
from beffroi.app.config import Config, load_config
from beffroi.cli import app
from beffroi.control.audit import AuditLog
from beffroi.control.config import audit_path
from beffroi.core.csv_safe import safe_cell, safe_text
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from beffroi.i18n import in_locale
from beffroi.kpi.definitions import series_tag
from beffroi.kpi.export import manifest_path
from tests.conftest import ROOT, free_port
from tests.test_hmi import logged_in_opener

HOSTILE = [
    '=HYPERLINK("http://evil","click")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tcmd /c calc",
    "\rcmd /c calc",
]
PLAIN = "Route barrée, déviation"  # ordinary text goes out as it is
# A line break inside a text stays in its cell: a new row would start with the formula.
INSIDE = "Fermé\r=2+5+cmd|' /C calc'!A0"  # no quote or comma, which would get it quoted anyway
TEXTS = [*HOSTILE, PLAIN, INSIDE]
NEGATIVE = -5.2
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")
PARIS = ZoneInfo("Europe/Paris")
PW = "correct horse battery"


def safe_rows(text: str) -> list[dict[str, str]]:
    """Parse CSV text as a spreadsheet import splits it, checking that no cell is a formula.

    A number may start with "-"; any other cell starting with a formula character fails, and
    so does a row of another width than the header (a line break inside a text broke it).
    """
    header, *body = list(csv.reader(io.StringIO(text, newline="")))
    cells = [c for row in (header, *body) for c in row]
    assert [c for c in cells if c.startswith(FORMULA_STARTS) and not NUMBER.match(c)] == []
    assert [r for r in body if len(r) != len(header)] == []
    return [dict(zip(header, r, strict=True)) for r in body]


def assert_shown(rows: list[dict[str, str]], column: str, texts: list[str]) -> None:
    """Each text is in `column` as typed, after a `'` only when it starts like a formula."""
    cells = [r[column] for r in rows]
    for t in texts:
        shown = "'" + t if t.startswith(FORMULA_STARTS) else t
        assert shown in cells, (t, cells)


def assert_number(rows: list[dict[str, str]], column: str, value: float) -> None:
    """A numeric cell is written as the number, not as text."""
    cells = [r[column] for r in rows if r[column] and NUMBER.match(r[column])]
    assert value in [float(c) for c in cells], [r[column] for r in rows]


def test_the_helper_follows_owasp() -> None:
    """Formula starts get a `'`; other text, numbers and missing values are left alone."""
    assert [safe_text(t) for t in HOSTILE] == ["'" + t for t in HOSTILE]
    assert safe_text(PLAIN) == PLAIN and safe_text("") == "" and safe_text("'=x") == "'=x"
    assert safe_cell(NEGATIVE) == NEGATIVE and safe_cell(None) is None


# -- the command line over the files ---------------------------------------------------------


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Config]:
    """A config whose historian (and the journal beside it) lives in a temp folder."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path, load_config(path)


def _tags(cfg: Config) -> tuple[str, str]:
    """Return an information panel's message tag and a cabinet's power tag."""
    reg = build_register(cfg)
    message = next(t for t in reg.tags if t.endswith("/message"))
    power = next(t for t in reg.tags if t.endswith("/power_kw"))
    return message, power


def test_query_csv_of_string_tags(files: tuple[Path, Config]) -> None:
    """`beffroi query --format csv`: panel messages prefixed, a negative value a number."""
    path, cfg = files
    message, power = _tags(cfg)
    now = utcnow().replace(microsecond=0)
    texts = TEXTS
    hist = DuckDBHistorian(cfg.resolve(cfg.historian.path))
    samples = [Sample(message, now - timedelta(minutes=30 - i), t) for i, t in enumerate(texts)]
    hist.write([*samples, Sample(power, now - timedelta(minutes=5), NEGATIVE)])
    hist.close()
    runner = CliRunner()
    args = ["query", message, power, "-c", str(path), "--start", "-1h"]
    res = runner.invoke(app, [*args, "--format", "csv"])
    assert res.exit_code == 0, res.output
    rows = safe_rows(res.stdout)
    assert_shown(rows, "value", texts)
    assert len(rows) == len(texts) + 1
    assert_number(rows, "value", NEGATIVE)
    # JSON is data, not a spreadsheet: it keeps the text as stored.
    res = runner.invoke(app, [*args, "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [r["value"] for r in json.loads(res.stdout) if r["tag"] == message] == texts


def test_kpi_export_cli_and_manifest(files: tuple[Path, Config]) -> None:
    """`beffroi kpi export`: a scope that would be a formula is prefixed; the hash still holds."""
    path, cfg = files
    day0 = datetime(2026, 3, 28, tzinfo=PARIS)
    samples = []
    for scope, v in [(t, NEGATIVE) for t in TEXTS] + [("metropolis", 72.0)]:
        samples.append(Sample(series_tag("energy_kwh", "day", scope), day0, v))
        samples.append(Sample(series_tag("energy_kwh", "day", scope, "coverage"), day0, 100.0))
    hist = DuckDBHistorian(cfg.resolve(cfg.historian.path))
    hist.write(samples)
    hist.close()
    out = path.parent / "kpis.csv"
    res = CliRunner().invoke(
        app, ["kpi", "export", "-c", str(path), "--from", "2026-03-28", "--to", "2026-03-28",
              "--out", str(out)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    data = out.read_bytes()
    rows = safe_rows(data.decode())
    assert_shown(rows, "scope", [*TEXTS, "metropolis"])
    assert len(rows) == len(TEXTS) + 1
    assert_number(rows, "value", NEGATIVE)
    assert {r["kpi"] for r in rows} == {"energy_kwh"}
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["rows"] == len(rows) and "apostrophe (')" in manifest["text_cells"]


def test_alarm_list_and_export_of_hostile_comments(files: tuple[Path, Config]) -> None:
    """`alarms list --format csv` and `alarms export`: comments and users typed by people."""
    path, cfg = files
    reg = build_register(cfg)
    cabinets = [a for a in reg.assets.values() if a.asset_class == "streetlight_cabinet"]
    reservoir = next(a for a in reg.assets.values() if a.asset_class == "reservoir")
    t = [utcnow() - timedelta(minutes=10)]
    eng = AlarmEngine(cfg.alarms, reg, clock=lambda: t[0])
    for lc in cabinets[: len(TEXTS)]:
        eng.process([Sample(lc.tag("fault"), t[0], True)])
    eng.process([Sample(reservoir.tag("level_pct"), t[0], NEGATIVE)])  # below lolo
    t[0] += timedelta(seconds=60)  # past the level rule's on-delay
    eng.tick(t[0])
    journal = Journal(journal_path(cfg))
    journal.write(eng.take_events())
    journal.close()
    runner = CliRunner()
    c = ["-c", str(path)]
    for lc, text in zip(cabinets, TEXTS, strict=False):
        aid = f"{lc.tag('fault')}#cabinet-fault"
        # `--opt=value`: a value starting with "-" is not taken for an option.
        res = runner.invoke(app, ["alarms", "ack", aid, *c, f"--user={text}", f"--comment={text}"])
        assert res.exit_code == 0, res.output
    with in_locale("en"):  # the columns by their English names; the cells are what is tested
        listed = runner.invoke(app, ["alarms", "list", *c, "--format", "csv"])
    assert listed.exit_code == 0, listed.output
    rows = safe_rows(listed.stdout)
    assert_shown(rows, "comment", TEXTS)
    assert_shown(rows, "user", TEXTS)
    assert len(rows) == len(TEXTS) + 1
    assert_number(rows, "value", NEGATIVE)
    with in_locale("en"):
        exported = runner.invoke(app, ["alarms", "export", *c, "--start", "-1h"])
    assert exported.exit_code == 0, exported.output
    rows = safe_rows(exported.stdout)
    assert_shown(rows, "comment", TEXTS)
    assert_shown(rows, "user", TEXTS)
    assert [r["event"] for r in rows].count("ack") == len(TEXTS)
    assert_number(rows, "value", NEGATIVE)


def test_audit_export_of_hostile_names_and_reasons(files: tuple[Path, Config]) -> None:
    """An audit record whose user, target and detail were typed as formulas exports safely."""
    path, cfg = files
    log = AuditLog(audit_path(cfg))
    for text in TEXTS:
        log.record(text, "setpoint.operate", target=text, commune="dijon", reason=text)
    log.close()
    result = CliRunner().invoke(app, ["audit", "export", "-c", str(path), "--from", "-1h"])
    assert result.exit_code == 0, result.output
    rows = safe_rows(result.stdout)
    assert_shown(rows, "user", TEXTS)
    assert_shown(rows, "target", TEXTS)
    assert [json.loads(r["detail"])["reason"] for r in rows] == TEXTS  # details stay JSON


# -- the HMI's downloads ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, demo_config, small_register):
    """An HMI over a historian holding hostile panel messages and KPI scopes of today."""
    folder = tmp_path_factory.mktemp("csv-safety")
    message = next(t for t in small_register.tags if t.endswith("/message"))
    power = next(t for t in small_register.tags if t.endswith("/power_kw"))
    now = utcnow().replace(microsecond=0)
    texts = TEXTS
    hist = DuckDBHistorian(folder / "h.duckdb")
    hist.write([Sample(message, now - timedelta(minutes=30 - i), t) for i, t in enumerate(texts)])
    hist.write([Sample(power, now - timedelta(minutes=5), NEGATIVE)])
    day0 = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
    for scope in TEXTS:
        hist.write(
            [
                Sample(series_tag("energy_kwh", "day", scope), day0, NEGATIVE),
                Sample(series_tag("energy_kwh", "day", scope, "coverage"), day0, 100.0),
            ]
        )
    users = UserStore(folder / "u.duckdb")
    users.add("boss", PW, "admin", ["*"])
    dash_app = create_app(demo_config, small_register, LiveValues(), hist, users=users)
    server = HmiServer(dash_app, "127.0.0.1", free_port(), threads=2)
    server.start()
    yield server, message, power, texts
    server.stop()
    users.close()
    hist.close()


def _download(server: HmiServer, output: str, button: str, state: list[dict]) -> str:
    """Click a download button as the browser does; return the file's text."""
    body = {
        "output": f"{output}.data",
        "outputs": {"id": output, "property": "data"},
        "inputs": [{"id": button, "property": "n_clicks", "value": 1}],
        "changedPropIds": [f"{button}.n_clicks"],
        "state": state,
    }
    req = urllib.request.Request(
        server.url + "_dash-update-component",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with logged_in_opener(server.url, "boss", PW).open(req, timeout=30) as resp:
        data = json.loads(resp.read())["response"][output]["data"]
    content = data["content"]
    return base64.b64decode(content).decode() if data.get("base64") else content


def test_trends_download_of_panel_messages(served) -> None:
    """The trends CSV, headed in French: panel messages prefixed, -5.2 a number."""
    server, message, power, texts = served
    text = _download(
        server,
        "trends-download",
        "trends-download-button",
        [
            {"id": "trends-tags", "property": "value", "value": [message, power]},
            {"id": "trends-range", "property": "value", "value": "1h"},
            {"id": "trends-zoom", "property": "data", "value": None},
        ],
    )
    rows = safe_rows(text)
    assert_shown(rows, "valeur", texts)
    assert len(rows) == len(texts) + 1
    assert_number(rows, "valeur", NEGATIVE)
    assert {r["qualité"] for r in rows} == {"Bonne"}


def test_kpis_page_download(served) -> None:
    """The KPIs page's CSV goes through the export's cells: scopes prefixed, values numbers."""
    server, *_ = served
    text = _download(
        server,
        "kpis-download",
        "kpis-download-button",
        [
            {"id": "kpis-period", "property": "value", "value": "today"},
            {"id": "kpis-communes", "property": "value", "value": None},
        ],
    )
    rows = safe_rows(text)
    assert_shown(rows, "scope", TEXTS)
    assert len(rows) == len(TEXTS)
    assert_number(rows, "value", NEGATIVE)
