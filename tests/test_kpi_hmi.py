"""The KPIs page: only the user's communes; the CSV download only with the export right."""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.request
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from beffroi.app.config import parse_config
from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from beffroi.kpi.definitions import series_tag
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener
from tests.test_kpi_cases import CASES

PW = "correct horse battery"
PARIS = ZoneInfo("Europe/Paris")
SAVINGS = {"metropolis": 58.5, "dijon": 61.0, "talant": 49.0}


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
    assert "58.5 % saved" in text and "90 % of the way to the 65 % target" in text
    assert "97.5 *" in text  # availability, gap-filled

    opener = logged_in_opener(server.url, "viewer-talant", PW)
    status, body = _post(opener, server.url, _refresh(None))
    assert status == 200
    fig = body["response"]["kpis-savings"]["figure"]
    assert fig["data"][0]["x"] == ["Talant"]
    assert "Dijon" not in json.dumps(body, ensure_ascii=False)
    status, _ = _post(opener, server.url, _refresh(["dijon"]))
    assert status == 403


def test_a_period_without_kpis_says_so_instead_of_empty_axes(server) -> None:
    """Nothing computed last month: each chart says so, with no bars and no axes."""
    status, body = _post(
        logged_in_opener(server.url, "auditor", PW), server.url, _refresh(None, "last-month")
    )
    assert status == 200
    for chart, what in (("kpis-savings", "lighting savings"), ("kpis-energy", "energy")):
        fig = body["response"][chart]["figure"]
        assert fig["data"] == [] and fig["layout"]["xaxis"]["visible"] is False
        assert f"No {what} computed for this period yet" in fig["layout"]["annotations"][0]["text"]


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
