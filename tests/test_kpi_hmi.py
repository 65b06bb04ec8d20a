"""The KPIs page: a month of lighting savings, only the user's communes, in French; the CSV
download only with the export right."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from beffroi.app.config import parse_config
from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.context import get_context
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from beffroi.kpi.definitions import series_tag
from beffroi.kpi.periods import local_midnight
from beffroi.simulator.history import marker_path
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener
from tests.test_kpi_cases import CASES

PW = "correct horse battery"
PARIS = ZoneInfo("Europe/Paris")
SAVINGS = {"metropolis": 58.5, "dijon": 61.0, "talant": 49.0}
# Five past days of lighting, (measured, baseline) kWh a day: Dijon saves 60 %, Talant 40 %.
MONTH_DAYS = 5
LIGHTING = {"metropolis": (70.0, 150.0), "dijon": (40.0, 100.0), "talant": (30.0, 50.0)}
NNBSP = "\u202f"  # French writes "65 %" with a narrow no-break space


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serve the HMI over a historian holding today's KPI values of two communes."""
    folder = tmp_path_factory.mktemp("kpi-hmi")
    text = (CASES / "base.toml").read_text()
    text += (CASES / "lighting_baseline" / "config.toml").read_text()
    cfg = parse_config(text, str(folder / "config.toml"))
    register = build_register(cfg)
    hist = DuckDBHistorian(folder / "h.duckdb")
    day0 = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
    samples = []
    for scope, v in SAVINGS.items():
        for kpi, value in (("lighting_savings_pct", v), ("energy_kwh", 100.0 + v)):
            samples.append(Sample(series_tag(kpi, "day", scope), day0, value))
            samples.append(Sample(series_tag(kpi, "day", scope, "coverage"), day0, 100.0))
        samples.append(
            Sample(series_tag("availability_pct", "day", scope), day0, 97.5, Quality.UNCERTAIN)
        )
        samples.append(Sample(series_tag("availability_pct", "day", scope, "coverage"), day0, 90.0))
    for scope, (kwh, baseline) in LIGHTING.items():
        for back in range(1, MONTH_DAYS + 1):
            day = local_midnight(day0.date() - timedelta(days=back), PARIS)
            samples.append(Sample(series_tag("lighting_kwh", "day", scope), day, kwh))
            samples.append(Sample(series_tag("lighting_baseline_kwh", "day", scope), day, baseline))
    hist.write(samples)
    users = UserStore(folder / "users.duckdb", set(register.communes))
    users.add("auditor", PW, "auditor", ["*"])
    users.add("auditor-talant", PW, "auditor", ["talant"])
    users.add("viewer-talant", PW, "viewer", ["talant"])
    app = create_app(cfg, register, LiveValues(), hist, users=users)
    srv = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    srv.start()
    yield srv
    srv.stop()
    users.close()
    hist.close()


def _post(opener, base: str, payload: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(
        base + "_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _refresh(communes: list[str] | None, period: str = "today") -> dict:
    outs = [
        "kpis-lighting-headline.children", "kpis-savings.figure", "kpis-energy.figure",
        "kpis-availability.children", "kpis-services.children", "kpis-status.children",
    ]  # fmt: skip
    return {
        "output": ".." + "...".join(outs) + "..",
        "outputs": [dict(zip(("id", "property"), o.split("."), strict=True)) for o in outs],
        "inputs": [
            {"id": "kpis-period", "property": "value", "value": period},
            {"id": "kpis-communes", "property": "value", "value": communes},
            {"id": "kpis-interval", "property": "n_intervals", "value": 1},
        ],
        "changedPropIds": ["kpis-period.value"],
        "state": [],
    }


def _month(communes: list[str] | None) -> dict:
    outs = ["kpis-month-headline.children", "kpis-month.figure"]
    return {
        "output": ".." + "...".join(outs) + "..",
        "outputs": [dict(zip(("id", "property"), o.split("."), strict=True)) for o in outs],
        "inputs": [
            {"id": "kpis-communes", "property": "value", "value": communes},
            {"id": "kpis-interval", "property": "n_intervals", "value": 1},
        ],
        "changedPropIds": ["kpis-communes.value"],
        "state": [],
    }


def _download(communes: list[str] | None = None) -> dict:
    return {
        "output": "kpis-download.data",
        "outputs": {"id": "kpis-download", "property": "data"},
        "inputs": [{"id": "kpis-download-button", "property": "n_clicks", "value": 1}],
        "changedPropIds": ["kpis-download-button.n_clicks"],
        "state": [
            {"id": "kpis-period", "property": "value", "value": "today"},
            {"id": "kpis-communes", "property": "value", "value": communes},
        ],
    }


def test_page_shows_savings_toward_the_target_for_the_users_communes(server) -> None:
    """A metropolis-wide user sees the metropolis and both communes; Talant's only Talant."""
    status, body = _post(logged_in_opener(server.url, "auditor", PW), server.url, _refresh(None))
    assert status == 200
    text = json.dumps(body, ensure_ascii=False)
    fig = body["response"]["kpis-savings"]["figure"]
    assert fig["data"][0]["x"] == ["Métropole", "Dijon", "Talant"]
    assert fig["data"][0]["y"] == [58.5, 61.0, 49.0]
    assert f"Métropole : 58,5{NNBSP}% économisés" in text
    assert f"90{NNBSP}% du chemin vers l'objectif de 65{NNBSP}%" in text
    assert "97,5 *" in text  # availability, gap-filled, the French way

    opener = logged_in_opener(server.url, "viewer-talant", PW)
    status, body = _post(opener, server.url, _refresh(None))
    assert status == 200
    fig = body["response"]["kpis-savings"]["figure"]
    assert fig["data"][0]["x"] == ["Talant"]
    assert "Dijon" not in json.dumps(body, ensure_ascii=False)
    status, _ = _post(opener, server.url, _refresh(["dijon"]))
    assert status == 403


def _month_seen(opener, base: str, communes: list[str] | None) -> tuple[str, dict]:
    status, body = _post(opener, base, _month(communes))
    assert status == 200, body
    assert isinstance(body, dict)
    head = json.dumps(body["response"]["kpis-month-headline"]["children"], ensure_ascii=False)
    return head, body["response"]["kpis-month"]["figure"]


def test_month_of_lighting_against_the_baseline_and_the_target(server) -> None:
    """30 days: a bar a day of measured and baseline kWh, the daily savings, the 65 % line,
    and the month's figure, for the metropolis, the chosen communes, or the user's own."""
    opener = logged_in_opener(server.url, "auditor", PW)
    head, fig = _month_seen(opener, server.url, None)
    assert f"Économie d'éclairage sur 30 jours : 53{NNBSP}% (objectif 65{NNBSP}%)" in head
    assert "Métropole" in head
    traces = {t["name"]: t for t in fig["data"]}
    assert set(traces) == {"référence", "mesuré", "économie", f"objectif 65{NNBSP}%"}
    assert traces["mesuré"]["y"] == [70.0] * MONTH_DAYS
    assert traces["référence"]["y"] == [150.0] * MONTH_DAYS
    assert traces["économie"]["y"] == [53.33] * MONTH_DAYS
    days = [datetime.fromisoformat(x).date() for x in traces["économie"]["x"]]
    today = datetime.now(PARIS).date()
    assert days == [today - timedelta(days=b) for b in range(MONTH_DAYS, 0, -1)]
    assert traces[f"objectif 65{NNBSP}%"]["y"] == [65.0, 65.0]
    assert fig["layout"]["separators"] == ", "  # 53,3 in the hover, the French way

    # Two communes chosen: their energies summed, then the ratio (not a mean of ratios).
    head, fig = _month_seen(opener, server.url, ["dijon", "talant"])
    assert f"53{NNBSP}%" in head and "2 communes" in head
    head, _fig = _month_seen(opener, server.url, ["dijon"])
    assert f"30 jours : 60{NNBSP}%" in head and "Dijon" in head

    # Talant's viewer sees Talant's month, and may not ask for Dijon's.
    opener = logged_in_opener(server.url, "viewer-talant", PW)
    head, fig = _month_seen(opener, server.url, None)
    assert f"30 jours : 40{NNBSP}%" in head and "Talant" in head
    status, _ = _post(opener, server.url, _month(["dijon"]))
    assert status == 403


def test_month_says_when_it_is_computed_and_marks_the_simulated_days(server) -> None:
    """After a demo's first start the month says it is being computed; once computed, the
    simulated days are shaded, and every page's shell says the history is simulated."""
    marker = marker_path(get_context().cfg)
    today = datetime.now(PARIS).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today - timedelta(days=3)
    opener = logged_in_opener(server.url, "auditor", PW)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"start": start.isoformat(), "end": today.isoformat()}))
        head, fig = _month_seen(opener, server.url, None)
        assert "Calcul des indicateurs du mois en cours…" in head
        assert fig["data"] == []
        assert "Calcul des indicateurs du mois en cours…" in fig["layout"]["annotations"][0]["text"]

        marker.write_text(
            json.dumps({"start": start.isoformat(), "end": today.isoformat(), "kpi_values": 9})
        )
        head, fig = _month_seen(opener, server.url, None)
        assert "30 jours" in head
        bands = [s for s in fig["layout"]["shapes"] if s.get("name") == "simulated-history"]
        assert [(b["x0"][:10], b["x1"][:10]) for b in bands] == [
            (start.date().isoformat(), today.date().isoformat())
        ]
        notes = [a["text"] for a in fig["layout"]["annotations"]]
        assert "historique simulé" in notes

        with opener.open(server.url + "_dash-layout", timeout=20) as resp:
            shell = json.dumps(json.loads(resp.read()), ensure_ascii=False)
        said = "Données simulées : historique de démonstration du "
        said += f"{start:%d/%m/%Y} au {today:%d/%m/%Y}"
        assert said in shell
    finally:
        marker.unlink(missing_ok=True)
    with opener.open(server.url + "_dash-layout", timeout=20) as resp:
        shell = json.dumps(json.loads(resp.read()), ensure_ascii=False)
    assert "shell-history" in shell and "Données simulées" not in shell  # no simulated past


def test_a_period_without_kpis_says_so_instead_of_empty_axes(server) -> None:
    """Nothing computed last month: each chart says so, with no bars and no axes."""
    status, body = _post(
        logged_in_opener(server.url, "auditor", PW), server.url, _refresh(None, "last-month")
    )
    assert status == 200
    for chart, said in (
        ("kpis-savings", "Aucune économie d'éclairage calculée pour cette période"),
        ("kpis-energy", "Aucune énergie calculée pour cette période"),
    ):
        fig = body["response"][chart]["figure"]
        assert fig["data"] == [] and fig["layout"]["xaxis"]["visible"] is False
        assert said in fig["layout"]["annotations"][0]["text"]


def test_download_needs_the_export_right_and_stays_in_scope(server) -> None:
    """Auditors get a CSV of what is shown; a viewer is refused; scopes stay the user's."""
    status, body = _post(logged_in_opener(server.url, "auditor", PW), server.url, _download())
    assert status == 200
    data = body["response"]["kpis-download"]["data"]
    rows = list(csv.DictReader(io.StringIO(data["content"])))
    assert {r["scope"] for r in rows} == {"metropolis", "dijon", "talant"}
    savings = {r["scope"]: float(r["value"]) for r in rows if r["kpi"] == "lighting_savings_pct"}
    assert savings == SAVINGS
    assert data["filename"].startswith("beffroi-kpis-day-")

    opener = logged_in_opener(server.url, "auditor-talant", PW)
    status, body = _post(opener, server.url, _download())
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body["response"]["kpis-download"]["data"]["content"])))
    assert {r["scope"] for r in rows} == {"talant"}

    opener = logged_in_opener(server.url, "viewer-talant", PW)
    status, _ = _post(opener, server.url, _download())
    assert status == 403


def test_page_is_in_the_navigation(server) -> None:
    """The shell links to /kpis and the page renders for a logged-in user."""
    opener = logged_in_opener(server.url, "auditor", PW)
    req = urllib.request.Request(server.url + "_dash-layout")
    with opener.open(req, timeout=20) as resp:
        assert "shell-nav-kpis" in resp.read().decode()
