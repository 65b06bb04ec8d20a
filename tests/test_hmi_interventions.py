"""The Interventions page over a real service (DuckDB store, audit log, aiosmtpd) served by
waitress, driven by hand-built callback requests as a browser sends them.

Residents' reports are triaged within the user's communes (created, joined, rejected);
interventions are merged, assigned (the team's e-mail goes out at once), moved, noted, given a
field link and its links revoked; viewers and auditors are refused every change, users past
their communes too; a resident's address is shown to supervisors only, on request, audited; an
accident report starts the accident playbook through the control service.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from beffroi.alerts.config import TeamConfig
from beffroi.app import config as app_config
from beffroi.app.config import Config
from beffroi.control.audit import AuditLog
from beffroi.control.service import ControlService
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset
from beffroi.core.register import Register, build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.intervention_views import (
    duration_text,
    french_error,
    intervention_rows,
    may_act,
    report_rows,
    selected_ids,
    state_times,
)
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import ROLES, UserStore
from beffroi.interventions.links import LinkRefused
from beffroi.interventions.model import Intervention, State, Via
from beffroi.interventions.service import InterventionService
from beffroi.interventions.store import InterventionStore
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.conftest import eventually, free_port
from tests.test_alarm_email import SmtpServer
from tests.test_control_helpers import dash_request, post_callback
from tests.test_hmi import logged_in_opener

PW = "correct horse battery"
RESIDENT = "habitante.quartier@example.org"
USERS = [
    ("sup", "supervisor", ["*"]),
    ("sup-talant", "supervisor", ["talant"]),
    ("op", "operator", ["*"]),
    ("viewer", "viewer", ["*"]),
    ("auditor", "auditor", ["*"]),
]
ACTIONS = ("merge", "assign", "move", "add-note", "field-link", "revoke")


@dataclass
class Site:
    """A served HMI over a real interventions service, and what the tests look at."""

    url: str
    service: InterventionService
    register: Register
    audit: AuditLog
    smtp: SmtpServer
    openers: dict[str, Any] = field(default_factory=dict)

    def as_(self, name: str) -> Any:
        """Return a urllib opener logged in as one of USERS (one login per user)."""
        if name not in self.openers:
            self.openers[name] = logged_in_opener(self.url, name, PW)
        return self.openers[name]

    def call(self, name: str, payload: dict) -> tuple[int, Any]:
        """Send a callback request as a user; return the status and the answer."""
        return post_callback(self.as_(name), self.url, payload)

    def cabinet(self, commune: str) -> Asset:
        """Return a street-lighting cabinet of a commune."""
        return next(
            a
            for a in sorted(self.register.assets.values(), key=lambda a: a.id)
            if a.commune == commune and a.asset_class == "streetlight_cabinet"
        )

    def actions(self, action: str) -> pd.DataFrame:
        """Return the audit records of one action."""
        df = self.audit.frame()
        return df[df.action == action]


def _config(demo_config: Config, smtp_port: int, data: Path) -> Config:
    """Return the demo config with two teams, e-mail to the test's SMTP server, data in tmp."""
    base = app_config.demo_config(demo_config, data=data, port=None, opcua_port=None)
    alarms = base.alarms.model_copy(
        update={
            "teams": [
                TeamConfig(name="eclairage", addresses=["eclairage@example.org"]),
                TeamConfig(name="voirie", addresses=["voirie@example.org"]),
            ],
            "email": base.alarms.email.model_copy(
                update={
                    "enabled": True,
                    "host": "127.0.0.1",
                    "port": smtp_port,
                    "security": "none",
                    "hmi_url": "https://beffroi.example.org",
                }
            ),
        }
    )
    cfg = base.model_copy(update={"alarms": alarms})
    cfg._source = base.source
    return cfg


@contextlib.contextmanager
def _served(
    tmp_path: Path,
    cfg: Config,
    register: Register,
    audit: AuditLog,
    smtp: SmtpServer,
    control: ControlService | None = None,
) -> Iterator[Site]:
    """Serve the HMI over a fresh interventions store; close everything after."""
    store = InterventionStore(tmp_path / "i.duckdb")
    service = InterventionService(cfg, register, store, b"k" * 32, audit=audit)
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    for name, role, communes in USERS:
        users.add(name, PW, role, communes)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    app = create_app(
        cfg,
        register,
        LiveValues(),
        hist,
        users=users,
        audit=audit,
        control=control,
        interventions=service,
    )
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    try:
        yield Site(server.url, service, register, audit, smtp)
    finally:
        server.stop()
        hist.close()
        users.close()
        store.close()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, demo_config: Config, smtp: SmtpServer) -> Iterator[Site]:
    """Serve the page over 60 generated assets, with an audit log of its own."""
    cfg = _config(demo_config, smtp.port, tmp_path)
    register = build_register(cfg, assets=60)
    audit = AuditLog(tmp_path / "audit.duckdb")
    with _served(tmp_path, cfg, register, audit, smtp) as s:
        yield s
    audit.close()


# --- hand-built requests ---------------------------------------------------------------------


def _refresh(which: str = "open") -> dict:
    return dash_request(
        ["iv-reports.rowData", "iv-grid.rowData", "iv-summary.children", "iv-seen.data"],
        {
            "iv-interval.n_intervals": 1,
            "iv-open-only.value": which,
            "iv-done-report.data": None,
            "iv-done-grid.data": None,
        },
        {"iv-seen.data": None},
    )


def _lists(site: Site, user: str, which: str = "open") -> tuple[list[dict], list[dict], str]:
    status, body = site.call(user, _refresh(which))
    assert status == 200, body
    out = body["response"]
    return out["iv-reports"]["rowData"], out["iv-grid"]["rowData"], out["iv-summary"]["children"]


def _triage(action: str, rid: int, join: object = None, why: object = None) -> dict:
    body = dash_request(
        ["iv-report-feedback.children", "iv-done-report.data"],
        {f"iv-{a}.n_clicks": int(a == action) for a in ("create", "join", "reject")},
        {
            "iv-reports.selectedRows": [{"id": rid}],
            "iv-join-id.value": join,
            "iv-reject-why.value": why,
        },
    )
    body["changedPropIds"] = [f"iv-{action}.n_clicks"]
    return body


def _act(
    action: str, ids: list[int], team: object = None, state: object = None, note: object = None
) -> dict:
    body = dash_request(
        ["iv-grid-feedback.children", "iv-done-grid.data", "iv-link.value", "iv-note.value"],
        {f"iv-{a}.n_clicks": int(a == action) for a in ACTIONS},
        {
            "iv-grid.selectedRows": [{"id": i} for i in ids],
            "iv-team.value": team,
            "iv-state.value": state,
            "iv-note.value": note,
        },
    )
    body["changedPropIds"] = [f"iv-{action}.n_clicks"]
    return body


def _show_report(rid: int) -> dict:
    return dash_request(
        [
            "iv-report-detail.children",
            "iv-join-id.value",
            "iv-accident.hidden",
            "iv-accident-place.value",
        ],
        {"iv-reports.selectedRows": [{"id": rid}], "iv-done-report.data": None},
    )


def _contact(rid: int) -> dict:
    return dash_request(
        ["iv-contact.children"],
        {"iv-contact-show.n_clicks": 1},
        {"iv-reports.selectedRows": [{"id": rid}]},
    )


def _detail(ids: list[int]) -> dict:
    return dash_request(
        ["iv-detail.children"],
        {
            "iv-grid.selectedRows": [{"id": i} for i in ids],
            "iv-done-grid.data": None,
            "iv-interval.n_intervals": 1,
        },
    )


def _said(site: Site, user: str, payload: dict, output: str) -> tuple[str, Any]:
    """Send an action; return its feedback text and the whole answer (status 200 expected)."""
    status, body = site.call(user, payload)
    assert status == 200, body
    out = body["response"]
    return out[output]["children"], out


# --- the page --------------------------------------------------------------------------------


def test_reports_are_triaged_within_the_users_communes(site: Site) -> None:
    """A Dijon report: listed for Dijon only, created, its duplicate joined, another rejected."""
    cab = site.cabinet("dijon")
    service = site.service
    first = service.report(
        "dark_street", cab.lat, cab.lon, "Toute la rue est éteinte", address="3 rue Monge",
        email=RESIDENT, consent=True,
    )["id"]  # fmt: skip
    again = service.report("dark_street", cab.lat + 0.0002, cab.lon, "Rue noire depuis hier")
    assert again["duplicate_of"] == first
    spam = service.report("other", cab.lat, cab.lon, "Achetez mes montres")["id"]

    reports, grid, said = _lists(site, "sup-talant")
    assert reports == [] and grid == []
    reports, grid, said = _lists(site, "viewer")  # looking needs no right
    rows = {r["id"]: r for r in reports}
    assert set(rows) == {first, again["id"], spam} and grid == []
    assert said == "3 signalement(s) à trier · 0 intervention(s)"
    assert rows[first] | {"created": ""} == {
        "id": first,
        "created": "",
        "category": "Rue éteinte / lampadaire en panne",
        "category_id": "dark_street",
        "commune": "Dijon",
        "address": "3 rue Monge",
        "text": "Toute la rue est éteinte",
        "assets": rows[first]["assets"],
        "alarms": 0,
        "duplicate": "",
    }
    assert cab.id in rows[first]["assets"].split(", ")
    assert rows[again["id"]]["duplicate"] == f"n° {first}"
    assert RESIDENT not in json.dumps(reports)

    for user in ("viewer", "auditor"):
        assert site.call(user, _triage("create", first))[0] == 403
        assert site.call(user, _triage("reject", spam, why="spam"))[0] == 403
    assert site.call("sup-talant", _triage("create", first))[0] == 403  # Dijon's report
    assert site.call("sup-talant", _show_report(first))[0] == 403
    assert service.table().empty and site.actions("report.reject").empty

    said, out = _said(site, "op", _triage("create", first), "iv-report-feedback")
    [iid] = service.table()["id"].tolist()
    assert said == f"Intervention n° {iid} créée depuis le signalement n° {first}."
    assert "iv-done-report" in out  # the lists follow at once
    item = service.get(iid)
    assert item.reports == [first] and item.assets == [cab.id] and item.state is State.NEW

    # The duplicate's detail says where its first report went, and the join is suggested.
    status, body = site.call("op", _show_report(again["id"]))
    shown = body["response"]
    assert status == 200 and shown["iv-join-id"]["value"] == iid
    detail = json.dumps(shown["iv-report-detail"]["children"], ensure_ascii=False)
    assert f"Doublon probable du signalement n° {first}, déjà joint à l'intervention n° {iid}" in (
        detail
    )
    assert shown["iv-accident"]["hidden"] is True
    said, _ = _said(site, "op", _triage("join", again["id"], join=iid), "iv-report-feedback")
    assert said == f"Signalement n° {again['id']} joint à l'intervention n° {iid}."
    said, _ = _said(site, "op", _triage("join", again["id"], join=iid), "iv-report-feedback")
    assert said == f"Refusé : le signalement n° {again['id']} est déjà traité (rattaché)"
    said, _ = _said(site, "op", _triage("join", spam, join=999), "iv-report-feedback")
    assert said == "Refusé : pas d'intervention n° 999"
    said, _ = _said(site, "op", _triage("join", spam, join="3"), "iv-report-feedback")
    assert said.startswith("Donnez le n°")
    said, _ = _said(site, "op", _triage("reject", spam, why="x" * 5000), "iv-report-feedback")
    assert said.startswith("Refusé : motif: at most")
    said, _ = _said(site, "op", _triage("reject", spam, why="publicité"), "iv-report-feedback")
    assert said == f"Signalement n° {spam} rejeté."
    [rejected] = site.actions("report.reject").to_dict("records")
    assert rejected["user"] == "op"
    status, body = site.call("op", _show_report(first))  # triaged: its text and contact go
    assert body["response"]["iv-report-detail"]["children"] == (
        f"Signalement n° {first} rattaché (intervention n° {iid})."
    )

    reports, grid, said = _lists(site, "sup")
    assert reports == []
    [row] = grid
    assert row | {"created": ""} == {
        "id": iid,
        "priority": 3,
        "state": "Nouvelle",
        "title": "Rue éteinte / lampadaire en panne — 3 rue Monge",
        "commune": "Dijon",
        "domain": "Éclairage",
        "team": "",
        "created": "",
        "alarms": 0,
        "reports": 2,
    }
    assert said == "0 signalement(s) à trier · 1 intervention(s) (1 nouvelle)"


def test_interventions_are_merged_assigned_moved_noted_and_given_field_links(site: Site) -> None:
    """Every action on the grid's selection: done, audited, refused in French, e-mail sent."""
    service, cab = site.service, site.cabinet("dijon")
    a, b = (
        service.create(
            "system", Via.AUTO, title=f"Armoire en défaut {n}", commune="dijon",
            domain="lighting", assets=[cab.id],
        )
        for n in (1, 2)
    )  # fmt: skip
    talant = service.create("system", Via.AUTO, title="Fuite", commune="talant", domain="water")

    for user in ("viewer", "auditor"):
        assert site.call(user, _act("merge", [a, b]))[0] == 403
        assert site.call(user, _act("add-note", [a], note="vu"))[0] == 403
    assert site.call("sup-talant", _act("assign", [a], team="eclairage"))[0] == 403
    assert service.get(b).open and service.get(a).team == ""

    said, out = _said(site, "op", _act("merge", [b, a]), "iv-grid-feedback")
    assert said == f"Interventions {b} fusionnées dans l'intervention n° {a}."
    assert "iv-done-grid" in out
    gone = service.get(b)
    assert gone.state is State.CANCELLED and gone.merged_into == a
    said, _ = _said(site, "op", _act("merge", [a]), "iv-grid-feedback")
    assert said == "Refusé : fusionner demande au moins deux interventions ouvertes"

    said, _ = _said(site, "op", _act("move", [a], state="en_route"), "iv-grid-feedback")
    assert said == f"Refusé : l'intervention n° {a} n'a pas encore d'équipe : affectez-la d'abord"
    said, _ = _said(site, "op", _act("assign", [a], team="nobody"), "iv-grid-feedback")
    assert said == "Choisissez une équipe."
    said, _ = _said(site, "op", _act("assign", [a], team="eclairage"), "iv-grid-feedback")
    assert said == "1 intervention(s) affectée(s) à l'équipe eclairage."
    assert service.get(a).state is State.ASSIGNED
    [mail] = site.smtp.to("eclairage@example.org")  # sent by the page, not left to the job
    assert f"Intervention {a}" in mail.message["Subject"]

    said, out = _said(
        site, "op", _act("move", [a], state="en_route", note="Équipe partie"), "iv-grid-feedback"
    )
    assert said == "1 intervention(s) : en route."
    assert out["iv-note"]["value"] == ""  # the note went with the move
    said, _ = _said(site, "op", _act("move", [a], state="assigned"), "iv-grid-feedback")
    assert (
        said
        == f"Refusé : l'intervention n° {a} est en route : elle ne peut pas passer à « affectée »"
    )
    said, _ = _said(site, "op", _act("move", [a], state="bogus"), "iv-grid-feedback")
    assert said == "Choisissez un état."
    said, _ = _said(site, "op", _act("add-note", [a], note="  "), "iv-grid-feedback")
    assert said == "Écrivez d'abord la note."
    said, _ = _said(site, "op", _act("add-note", [a], note="a\x00b"), "iv-grid-feedback")
    assert said.startswith("Refusé : note: control characters")
    said, _ = _said(site, "op", _act("add-note", [a], note="Câble sectionné"), "iv-grid-feedback")
    assert said == "Note ajoutée à 1 intervention(s)."

    said, out = _said(site, "op", _act("field-link", [a]), "iv-grid-feedback")
    assert said.startswith(f"Lien terrain de l'intervention n° {a}, valable jusqu'au ")
    url = out["iv-link"]["value"]
    assert url.startswith("https://beffroi.example.org/field/")
    assert service.links.check(url.rsplit("/", 1)[1]) == a
    said, _ = _said(site, "op", _act("field-link", [a, talant]), "iv-grid-feedback")
    assert said == "Un lien terrain s'émet pour une seule intervention."  # (op sees Talant)
    said, out = _said(site, "op", _act("revoke", [a]), "iv-grid-feedback")
    assert said == "2 lien(s) terrain révoqué(s)."  # the page's and the team e-mail's
    with pytest.raises(LinkRefused, match="révoqué"):
        service.links.check(url.rsplit("/", 1)[1])

    said, _ = _said(site, "op", _act("add-note", []), "iv-grid-feedback")
    assert said == "Sélectionnez d'abord une ou plusieurs interventions."
    assert site.call("op", _act("add-note", [{"id": 1}], note="x"))[0] == 200  # ignored shape

    status, body = site.call("viewer", _detail([a]))
    detail = json.dumps(body["response"]["iv-detail"]["children"], ensure_ascii=False)
    assert status == 200 and f"Intervention n° {a} — Armoire en défaut 1" in detail
    for text in ("Temps par état", "En route", "(en cours)", "Fusion", "reçoit", "Affectation",
                 "Câble sectionné", "Équipe partie", cab.id):  # fmt: skip
        assert text in detail, text
    assert site.call("sup-talant", _detail([a]))[0] == 403
    _, grid, _ = _lists(site, "sup-talant")
    assert [r["id"] for r in grid] == [talant]
    _, grid, _ = _lists(site, "sup", "all")
    assert {r["id"]: r["state"] for r in grid} == {
        a: "En route",
        b: "Annulée",
        talant: "Nouvelle",
    }

    recorded = site.audit.frame()
    done = recorded[recorded.user == "op"]
    assert {
        f"intervention.{a}" for a in ("merge", "assign", "state", "note", "link", "revoke")
    } <= set(done.action)


def test_a_residents_contact_is_shown_to_supervisors_only_and_audited(site: Site) -> None:
    """The address goes to a supervisor of the report's commune only, on a click, audited."""
    cab = site.cabinet("dijon")
    rid = site.service.report(
        "dark_street", cab.lat, cab.lon, "Rue noire", email=RESIDENT, consent=True
    )["id"]
    status, body = site.call("op", _show_report(rid))
    detail = json.dumps(body["response"]["iv-report-detail"]["children"], ensure_ascii=False)
    assert status == 200 and "Voir le contact" not in detail and RESIDENT not in detail
    status, body = site.call("sup", _show_report(rid))
    detail = json.dumps(body["response"]["iv-report-detail"]["children"], ensure_ascii=False)
    assert status == 200 and "iv-contact-show" in detail and RESIDENT not in detail

    for user in ("op", "viewer", "auditor", "sup-talant"):
        assert site.call(user, _contact(rid))[0] == 403, user
    assert site.actions("report.contact").empty

    shown, _ = _said(site, "sup", _contact(rid), "iv-contact")
    assert shown == f"Contact : {RESIDENT}"
    [looked] = site.actions("report.contact").to_dict("records")
    assert looked["user"] == "sup" and looked["target"] == "reports"
    assert RESIDENT not in site.audit.frame().to_json(date_format="iso")
    reports, _, _ = _lists(site, "sup")
    assert RESIDENT not in json.dumps(reports)


async def test_an_accident_report_starts_the_accident_playbook(
    tmp_path: Path, demo_config: Config, smtp: SmtpServer
) -> None:
    """An accident report previews and starts the accident playbook, audited by control."""
    cfg = _config(demo_config, smtp.port, tmp_path)
    register = build_register(cfg, assets=60)
    panel = next(a for a in register.assets.values() if a.asset_class == "info_panel")
    async with contextlib.AsyncExitStack() as stack:
        control = ControlService(cfg, register, LiveValues(), lambda tag: None)
        await control.start(stack)
        assert control.audit is not None and control.playbooks is not None
        with _served(tmp_path, cfg, register, control.audit, smtp, control) as site:
            rid = site.service.report(
                "accident", panel.lat, panel.lon, "Collision, voie bloquée", address="rue Monge"
            )["id"]

            async def call(user: str, payload: dict) -> tuple[int, Any]:
                return await asyncio.to_thread(site.call, user, payload)

            status, body = await call("sup", _show_report(rid))
            shown = body["response"]
            assert status == 200 and shown["iv-accident"]["hidden"] is False
            assert shown["iv-accident-place"]["value"] == "rue Monge"

            def preview(place: str) -> dict:
                return dash_request(
                    [
                        "iv-accident-run.data",
                        "iv-accident-feedback.children",
                        "iv-accident-go.disabled",
                    ],
                    {"iv-accident-preview.n_clicks": 1},
                    {"iv-reports.selectedRows": [{"id": rid}], "iv-accident-place.value": place},
                )

            def run(chosen: object) -> dict:
                return dash_request(
                    ["iv-accident-run-feedback.children"],
                    {"iv-accident-go.n_clicks": 1},
                    {"iv-accident-run.data": chosen, "iv-reports.selectedRows": [{"id": rid}]},
                )

            assert (await call("op", preview("rue Monge")))[0] == 403
            status, body = await call("sup", preview("rue Monge"))
            out = body["response"]
            assert status == 200 and out["iv-accident-go"]["disabled"] is False
            assert out["iv-accident-feedback"]["children"].startswith(
                f"Aperçu pour le signalement n° {rid} : "
            )
            chosen = out["iv-accident-run"]["data"]
            assert chosen["report"] == rid
            assert (await call("op", run(chosen)))[0] == 403
            status, body = await call("sup", run({"run": chosen["run"], "report": rid + 1}))
            said = body["response"]["iv-accident-run-feedback"]["children"]
            assert said == "Prévisualisez d'abord le plan pour ce signalement."
            status, body = await call("sup", run(chosen))
            said = json.dumps(body["response"], ensure_ascii=False)
            assert status == 200 and f"Plan accident lancé (exécution {chosen['run']})" in said

            engine = control.playbooks
            await eventually(lambda: engine.get(chosen["run"]).state in ("done", "stopped"))
            status, body = await call(
                "sup",
                dash_request(
                    ["iv-accident-view.children"],
                    {"iv-interval.n_intervals": 2, "iv-accident-run.data": chosen,
                     "iv-accident-run-feedback.children": None},
                ),
            )  # fmt: skip
            view = json.dumps(body["response"], ensure_ascii=False)
            assert status == 200 and "control-run-state" in view and "rue Monge" in view
            records = control.audit.frame()
            runs = records[records.action == "playbook.run"]
            assert set(runs.user) == {"sup"} and len(runs) >= 2  # started, then its outcome
            [previewed] = records[records.action == "playbook.preview"].to_dict("records")
            assert previewed["user"] == "sup"
            await eventually(lambda: bool(site.smtp.to("police-municipale@dijon-metropole.fr")))
            [mail] = site.smtp.to("police-municipale@dijon-metropole.fr")
            assert "rue Monge" in mail.message["Subject"]


def _click_row(page: Any, grid: str, row_id: int) -> None:
    row = page.locator(f"#{grid} .ag-center-cols-container .ag-row[row-id='{row_id}']")
    row.wait_for(timeout=20_000)
    row.locator(".ag-cell").first.click()


def _browser_triage(url: str, rid: int) -> dict[str, Any]:
    """As the supervisor in Chromium: read a report and its contact, triage it, link it."""
    seen: dict[str, Any] = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1400})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        log_in(page, url, "sup", PW)
        errors.clear()  # the login form's 401 before the session
        page.goto(url + "interventions")
        _click_row(page, "iv-reports", rid)
        page.wait_for_selector(f"#iv-report-{rid}")
        seen["detail"] = page.inner_text("#iv-report-detail")
        page.click("#iv-contact-show")
        page.wait_for_function("document.querySelector('#iv-contact')?.innerText !== ''")
        seen["contact"] = page.inner_text("#iv-contact")
        page.click("#iv-create")
        page.wait_for_function(
            "document.querySelector('#iv-report-feedback')?.innerText.startsWith('Intervention')"
        )
        seen["created"] = page.inner_text("#iv-report-feedback")
        page.wait_for_function(
            "document.querySelector('#iv-report-detail')?.innerText.includes('rattaché')"
        )
        seen["after"] = page.inner_text("#iv-report-detail")
        row = page.locator("#iv-grid .ag-center-cols-container .ag-row[row-id='1']")
        row.wait_for(timeout=20_000)
        row.locator(".ag-selection-checkbox input, .ag-checkbox-input").first.click()
        page.wait_for_selector("#iv-detail-1")
        seen["history"] = page.inner_text("#iv-detail")
        page.click("#iv-field-link")
        page.wait_for_function("document.querySelector('#iv-link')?.value.startsWith('https')")
        seen["link"] = page.input_value("#iv-link")
        seen["reports_left"] = page.evaluate(
            "dash_ag_grid.getApi('iv-reports').getDisplayedRowCount()"
        )
        page.screenshot(path=artifact("hmi-interventions.png"), full_page=True)
        seen["errors"] = errors
    return seen


def test_a_supervisor_triages_a_report_in_the_browser(site: Site) -> None:
    """The page in Chromium: report detail, contact on request, creation, detail, field link."""
    require_chromium()
    cab = site.cabinet("dijon")
    rid = site.service.report(
        "dark_street", cab.lat, cab.lon, "Plus de lumière", address="3 rue Monge",
        email=RESIDENT, consent=True,
    )["id"]  # fmt: skip
    seen = _browser_triage(site.url, rid)
    assert "Rue éteinte / lampadaire en panne" in seen["detail"] and cab.id in seen["detail"]
    assert seen["contact"] == f"Contact : {RESIDENT}"
    assert seen["created"] == f"Intervention n° 1 créée depuis le signalement n° {rid}."
    assert "Intervention n° 1" in seen["history"] and "Création" in seen["history"]
    assert seen["link"].startswith("https://beffroi.example.org/field/")
    assert seen["reports_left"] == 0
    assert RESIDENT not in seen["after"]
    assert seen["errors"] == []
    assert len(site.actions("report.contact")) == 1


# --- the pure views --------------------------------------------------------------------------


def test_views_say_times_errors_and_rows_in_french() -> None:
    """Durations, times per state, the service's refusals, rows with missing values."""
    assert [r for r in ROLES if may_act(r)] == ["operator", "supervisor", "admin"]
    assert [duration_text(s) for s in (40, 720, 3900, 2 * 86_400 + 3 * 3600)] == [
        "40 s", "12 min", "1 h 05 min", "2 j 3 h",
    ]  # fmt: skip
    assert french_error("le signalement n° 3 est déjà traité (closed)") == (
        "Refusé : le signalement n° 3 est déjà traité (clos)"
    )
    assert french_error("catégorie inconnue") == "Refusé : catégorie inconnue"
    assert selected_ids([{"id": 3}, {"id": "4"}, {"id": True}, 5, {"id": 3}, {"id": 9}]) == [3, 9]
    assert selected_ids({"id": 3}) == []

    t0 = datetime(2026, 3, 2, 8, 0)  # naive UTC, as stored
    item = Intervention(
        id=1, created=t0, title="t", commune="dijon", domain="lighting", lat=None, lon=None,
        assets=[], priority=2, team="eclairage", state=State.EN_ROUTE, origin="alarm",
        updated=t0, times={"new": t0, "assigned": t0 + timedelta(minutes=5),
                           "en_route": t0 + timedelta(minutes=65)},
    )  # fmt: skip
    rows = state_times(item, datetime(2026, 3, 2, 10, 10, tzinfo=UTC))
    assert rows == [
        {"state": "Nouvelle", "at": "02/03/2026 09:00", "lasted": "5 min"},
        {"state": "Affectée", "at": "02/03/2026 09:05", "lasted": "1 h 00 min"},
        {"state": "En route", "at": "02/03/2026 10:05", "lasted": "1 h 05 min (en cours)"},
    ]

    table = pd.DataFrame(
        {
            "id": [2], "created": [pd.Timestamp("2026-07-01 10:00")], "title": ["x"],
            "commune": ["nowhere"], "domain": ["lighting"], "priority": [1], "team": [""],
            "state": ["on_site"], "n_alarms": [1], "n_reports": [0],
        }
    )  # fmt: skip
    [row] = intervention_rows(table, {"dijon": "Dijon"})
    assert row["created"] == "01/07/2026 12:00" and row["state"] == "Sur place"
    assert row["commune"] == "nowhere" and row["domain"] == "Éclairage"
    assert intervention_rows(table.iloc[:0], {}) == []
    reports = pd.DataFrame(
        {
            "id": [5, 6], "created": [pd.Timestamp("2026-07-01 10:00")] * 2,
            "category": ["accident", "gone"], "commune": ["dijon", "talant"], "address": ["", None],
            "text": ["a", "b"], "duplicate_of": pd.array([None, 5], dtype="Int64"),
            "matches": ['{"assets": ["TC-0001"], "alarms": ["x#y"]}', "not json"],
        }
    )  # fmt: skip
    rows = report_rows(reports, {"dijon": "Dijon"}, lambda c: True)
    assert [(r["category"], r["assets"], r["alarms"], r["duplicate"]) for r in rows] == [
        ("Accident de la circulation", "TC-0001", 1, ""),
        ("gone", "", 0, "n° 5"),
    ]
    assert [r["id"] for r in report_rows(reports, {}, lambda c: c == "talant")] == [6]
