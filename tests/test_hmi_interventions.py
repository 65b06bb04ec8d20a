"""The Interventions page over a real service (DuckDB store, audit log, aiosmtpd) served by
waitress, driven by hand-built callback requests as a browser sends them.

Residents' reports are triaged within the user's communes (created, joined, rejected);
interventions are merged, assigned (the team's e-mail goes out at once), moved, noted, given a
field link and its links revoked; viewers and auditors are refused every change, users past
their communes too; a resident's address is shown to supervisors only, on request, audited; an
accident report starts the accident playbook through the control service. Operators open
interventions from an alarm, an asset, a place or by hand (the form prefilled from the page's
address), and a team's members list their team's queue ("Mon équipe").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.parse
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
                TeamConfig(name="eclairage", addresses=["eclairage@example.org"], members=["op"]),
                TeamConfig(
                    name="voirie", addresses=["voirie@example.org"], members=["op", "sup-talant"]
                ),
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


def _refresh(which: str = "open", mine: bool = False) -> dict:
    return dash_request(
        ["iv-reports.rowData", "iv-grid.rowData", "iv-summary.children", "iv-seen.data"],
        {
            "iv-interval.n_intervals": 1,
            "iv-open-only.value": which,
            "iv-my-team.value": ["mine"] if mine else [],
            "iv-done-report.data": None,
            "iv-done-grid.data": None,
            "iv-done-new.data": None,
        },
        {"iv-seen.data": None},
    )


def _lists(
    site: Site, user: str, which: str = "open", mine: bool = False
) -> tuple[list[dict], list[dict], str]:
    status, body = site.call(user, _refresh(which, mine))
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


NEW_FIELDS = ("title", "commune", "priority", "team", "domain", "alarm", "asset", "lat", "lon")


def _new(**form: object) -> dict:
    """Return the new intervention form's request: its fields (priority 3 unless given)."""
    return dash_request(
        [
            "iv-new-feedback.children",
            "iv-done-new.data",
            "iv-new-title.value",
            "iv-new-alarm.value",
            "iv-new-asset.value",
            "iv-new-lat.value",
            "iv-new-lon.value",
        ],
        {"iv-new-create.n_clicks": 1},
        {f"iv-new-{k}.value": form.get(k, 3 if k == "priority" else None) for k in NEW_FIELDS},
    )


def _page(site: Site, user: str, search: str = "") -> dict:
    """Return the page as Dash's router renders it: its layout called with the query's kwargs."""
    payload = dash_request(
        ["_pages_content.children", "_pages_store.data"],
        {"_pages_location.pathname": "/interventions", "_pages_location.search": search},
    )
    status, body = site.call(user, payload)
    assert status == 200, body
    return body["response"]["_pages_content"]["children"]


def _props(tree: object, cid: str) -> dict | None:
    """Return the props of the component with an id in a rendered layout (None if absent)."""
    if isinstance(tree, dict):
        props = tree.get("props")
        if isinstance(props, dict) and props.get("id") == cid:
            return props
        values: list = list(tree.values())
    elif isinstance(tree, list):
        values = tree
    else:
        return None
    for value in values:
        found = _props(value, cid)
        if found is not None:
            return found
    return None


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
    assert said.startswith("Refusé : motif : 500 caractères au maximum")
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
    assert said.startswith("Refusé : note : caractères de contrôle")
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


def _alarm_view(asset: Asset, severity: int = 2) -> dict[str, Any]:
    """Return an alarm needing attention on an asset, as the alarm service lists it."""
    return {
        "alarm_id": f"{asset.id}/fault#cabinet-fault",
        "state": "unack_active",
        "severity": severity,
        "rule": "cabinet-fault",
        "kind": "discrete",
        "tag": f"{asset.id}/fault",
        "asset": asset.id,
        "commune": asset.commune,
        "domain": asset.domain,
        "level": None,
        "value": True,
        "limit": None,
        "message": "Armoire en défaut",
        "since": "2026-03-02T08:00:00+00:00",
        "shelved_until": None,
    }


def test_operators_open_interventions_from_an_alarm_an_asset_a_place_or_by_hand(
    site: Site,
) -> None:
    """The form: an alarm linked (its asset, commune, domain taken), an asset, a place, by hand;
    refusals in French; past the user's communes and for viewers, 403."""
    service = site.service
    dijon, talant = site.cabinet("dijon"), site.cabinet("talant")
    view = _alarm_view(dijon)
    alarm = view["alarm_id"]
    service.alarms = lambda: [view]

    form = _new(alarm=alarm, team="eclairage", priority=2, commune="talant", domain="water")
    said, out = _said(site, "op", form, "iv-new-feedback")
    [iid] = service.table()["id"].tolist()
    assert said == (
        f"Intervention n° {iid} créée et affectée à l'équipe eclairage, liée à l'alarme {alarm}."
    )
    assert "iv-done-new" in out  # the grid follows at once
    assert [out[f"iv-new-{k}"]["value"] for k in ("title", "alarm", "asset", "lat", "lon")] == [
        "", None, "", None, None,
    ]  # fmt: skip
    item = service.get(iid)
    assert (item.title, item.commune, item.domain, item.assets, item.alarms) == (
        f"Armoire en défaut — {dijon.id}", "dijon", dijon.domain, [dijon.id], [alarm],
    )  # fmt: skip  # the alarm's, not the form's commune and domain
    assert (item.lat, item.lon, item.priority, item.team, item.state, item.origin) == (
        dijon.lat, dijon.lon, 2, "eclairage", State.ASSIGNED, "operator",
    )  # fmt: skip
    linked = service.store.db.rows("SELECT linked FROM intervention_links WHERE ref = ?", [alarm])
    assert linked == [(datetime(2026, 3, 2, 8, 0),)]  # since the alarm began
    [mail] = site.smtp.to("eclairage@example.org")  # the team told at once
    assert f"Intervention {iid}" in mail.message["Subject"]
    [made] = site.actions("intervention.create").to_dict("records")
    assert (made["user"], made["commune"]) == ("op", "dijon")
    assert json.loads(made["detail"])["via"] == "hmi"
    said, _ = _said(site, "op", _new(alarm=alarm, title="Encore"), "iv-new-feedback")
    assert said == f"Refusé : l'alarme {alarm} est déjà liée à l'intervention n° {iid}."
    said, _ = _said(site, "op", _new(alarm="gone#rule", title="x"), "iv-new-feedback")
    assert said == "Refusé : l'alarme gone#rule ne demande plus d'attention."

    form = _new(asset=talant.id, title="Porte forcée", priority=4, commune="dijon")
    said, _ = _said(site, "sup-talant", form, "iv-new-feedback")
    by_asset = max(service.table()["id"].tolist())
    assert said == f"Intervention n° {by_asset} créée."
    item = service.get(by_asset)
    assert (item.title, item.commune, item.domain, item.assets, item.lat, item.lon) == (
        "Porte forcée", "talant", talant.domain, [talant.id], talant.lat, talant.lon,
    )  # fmt: skip
    assert (item.priority, item.team, item.state, item.alarms) == (4, "", State.NEW, [])
    said, _ = _said(site, "op", _new(asset=talant.id, title="Encore"), "iv-new-feedback")
    assert said.endswith(f" L'équipement a aussi l'intervention n° {by_asset} en cours.")

    form = _new(title="Fuite rue Monge", commune="dijon", domain="water", lat=47.3164, lon="5,04")
    said, _ = _said(site, "op", form, "iv-new-feedback")
    item = service.get(max(service.table()["id"].tolist()))
    assert said == f"Intervention n° {item.id} créée."
    assert (item.commune, item.domain, item.lat, item.lon, item.assets) == (
        "dijon", "water", 47.3164, 5.04, [],
    )  # fmt: skip

    form = _new(title="Tag sur la mairie", commune="talant", team="voirie")
    said, _ = _said(site, "sup-talant", form, "iv-new-feedback")
    item = service.get(max(service.table()["id"].tolist()))
    assert said == f"Intervention n° {item.id} créée et affectée à l'équipe voirie."
    assert (item.commune, item.domain, item.lat, item.assets, item.team) == (
        "talant", "other", None, [], "voirie",
    )  # fmt: skip
    count = len(service.table())

    refusals = {
        "Donnez une alarme, un équipement ou un lieu : un seul à la fois.": _new(
            title="x", asset=dijon.id, lat=47.3, lon=5.0
        ),
        "Donnez la latitude et la longitude du lieu.": _new(title="x", commune="dijon", lat=47.3),
        "Refusé : la latitude doit être un nombre entre -90 et 90.": _new(
            title="x", commune="dijon", lat=200, lon=5.0
        ),
        "Refusé : la longitude doit être un nombre entre -180 et 180.": _new(
            title="x", commune="dijon", lat=47.3, lon="est"
        ),
        "Refusé : la priorité va de 1 (la plus urgente) à 4.": _new(
            title="x", commune="dijon", priority=9
        ),
        "Refusé : domaine inconnu.": _new(title="x", commune="dijon", domain="bogus"),
        f"Refusé : équipement inconnu : {dijon.id}-nope": _new(title="x", asset=dijon.id + "-nope"),
        "Choisissez une commune.": _new(title="x"),
        "Refusé : une intervention a besoin d'un titre": _new(title="  ", commune="dijon"),
        "Refusé : équipe inconnue : 'nobody'": _new(title="x", commune="dijon", team="nobody"),
        "Refusé : commune inconnue : 'nowhere'": _new(title="x", commune="nowhere"),
    }
    for expected, form in refusals.items():
        said, out = _said(site, "op", form, "iv-new-feedback")
        assert said == expected
        assert "iv-done-new" not in out and "iv-new-title" not in out  # the form kept
    said, _ = _said(site, "op", _new(title="x" * 300, commune="dijon"), "iv-new-feedback")
    assert said.startswith("Refusé : titre : 200 caractères au maximum")

    # Past the user's communes (an asset, an alarm, a commune) and for viewers: refused.
    assert site.call("sup-talant", _new(title="x", asset=dijon.id))[0] == 403
    assert site.call("sup-talant", _new(title="x", commune="dijon"))[0] == 403
    service.store.db.run("DELETE FROM intervention_links")  # the alarm free again
    assert site.call("sup-talant", _new(alarm=alarm))[0] == 403
    for user in ("viewer", "auditor"):
        assert site.call(user, _new(title="x", commune="dijon"))[0] == 403
    assert len(service.table()) == count


def test_the_form_is_prefilled_from_the_pages_address(site: Site) -> None:
    """`?asset=`, `?alarm=`, `?lat=&lon=` fill the form, within the user's communes only."""
    service = site.service
    dijon = site.cabinet("dijon")
    view = _alarm_view(dijon, severity=1)
    service.alarms = lambda: [view]

    page = _page(site, "op", f"?asset={dijon.id}")
    assert _props(page, "iv-new")["open"] is True
    values = {k: (_props(page, f"iv-new-{k}") or {}).get("value") for k in NEW_FIELDS}
    assert values == {
        "title": "", "commune": "dijon", "priority": 3, "team": None, "domain": dijon.domain,
        "alarm": None, "asset": dijon.id, "lat": None, "lon": None,
    }  # fmt: skip
    assert _props(page, "iv-new-feedback")["children"] == ""
    communes = [o["value"] for o in _props(page, "iv-new-commune")["options"]]
    assert "dijon" in communes and "talant" in communes
    [choice] = _props(page, "iv-new-alarm")["options"]
    assert choice == {
        "label": f"P1 · Armoire en défaut — {dijon.id} · Dijon",
        "value": view["alarm_id"],
    }

    page = _page(site, "op", "?alarm=" + view["alarm_id"].replace("#", "%23"))
    assert _props(page, "iv-new-alarm")["value"] == view["alarm_id"]
    assert _props(page, "iv-new-title")["value"] == f"Armoire en défaut — {dijon.id}"
    assert _props(page, "iv-new-priority")["value"] == 1
    page = _page(site, "op", "?lat=47.32&lon=5.04")
    assert (_props(page, "iv-new-lat")["value"], _props(page, "iv-new-lon")["value"]) == (
        47.32, 5.04,
    )  # fmt: skip
    page = _page(site, "op", "?lat=nord&lon=5.04")
    assert _props(page, "iv-new-lat")["value"] is None
    assert _props(page, "iv-new-feedback")["children"].startswith("Refusé : la latitude")
    page = _page(site, "op")
    assert _props(page, "iv-new")["open"] is False
    assert _props(page, "iv-new-asset")["value"] == ""

    # Another commune's asset and alarm: not shown, not even in the list of alarms.
    page = _page(site, "sup-talant", f"?asset={dijon.id}")
    assert _props(page, "iv-new-asset")["value"] == ""
    assert _props(page, "iv-new-commune")["value"] == "talant"  # the user's only commune
    assert [o["value"] for o in _props(page, "iv-new-commune")["options"]] == ["talant"]
    assert _props(page, "iv-new-feedback")["children"] == (
        f"Équipement inconnu ou hors de vos communes : {dijon.id}."
    )
    page = _page(site, "sup-talant", "?alarm=" + view["alarm_id"].replace("#", "%23"))
    assert _props(page, "iv-new-alarm")["value"] is None
    assert _props(page, "iv-new-alarm")["options"] == []
    page = _page(site, "viewer", f"?asset={dijon.id}")  # no form for those who only look
    assert _props(page, "iv-new") is None and _props(page, "iv-read-only") is not None


def test_my_team_lists_the_interventions_of_the_users_teams(site: Site) -> None:
    """Members see the switch; on, the grid keeps their teams' interventions (one or several)."""
    service = site.service
    made = {
        team: service.create(
            "system", Via.AUTO, title=f"Travaux {team or 'sans équipe'}", commune=commune,
            domain="other", team=team,
        )
        for team, commune in (("eclairage", "dijon"), ("voirie", "talant"), ("", "dijon"))
    }  # fmt: skip
    everything = set(made.values())
    _, grid, _ = _lists(site, "op")
    assert {r["id"] for r in grid} == everything
    _, grid, said = _lists(site, "op", mine=True)  # eclairage and voirie
    assert {r["id"] for r in grid} == {made["eclairage"], made["voirie"]}
    assert said == "0 signalement(s) à trier · 2 intervention(s) (2 affectée)"
    _, grid, _ = _lists(site, "sup-talant", mine=True)  # voirie, in Talant
    assert [r["id"] for r in grid] == [made["voirie"]]
    _, grid, _ = _lists(site, "sup", mine=True)  # in no team: none
    assert grid == []

    for user, shown in (("op", True), ("sup-talant", True), ("sup", False), ("viewer", False)):
        box = _props(_page(site, user), "iv-my-team-box")
        assert box is not None and box["hidden"] is (not shown), user
    box = _props(_page(site, "op"), "iv-my-team-box")
    assert box["title"] == "Seulement les interventions de : eclairage, voirie"


def _texts(tree: object) -> set[str]:
    """Return every text a rendered layout shows: children, labels, placeholders, headers."""
    found: set[str] = set()
    if isinstance(tree, str):
        found.add(tree)
    elif isinstance(tree, list):
        for value in tree:
            found |= _texts(value)
    elif isinstance(tree, dict):
        for key, value in tree.items():
            if key in ("children", "label", "placeholder", "title", "headerName", "props"):
                found |= _texts(value)
            elif isinstance(value, list | dict) and key in ("options", "columnDefs"):
                found |= _texts(value)
    return found


def test_an_english_user_gets_the_interventions_page_in_english(site: Site) -> None:
    """After choosing English, the operator reads the page, rows and refusals in English."""
    cab = site.cabinet("dijon")
    service = site.service
    rid = service.report("dark_street", cab.lat, cab.lon, "Rue noire", address="3 rue Monge")["id"]
    iid = service.create("op", Via.HMI, title="Armoire", commune="dijon", domain="lighting")

    form = urllib.parse.urlencode({"language": "en"}).encode()
    with site.as_("op").open(site.url + "language", data=form, timeout=10) as resp:
        assert resp.status == 200

    shown = _texts(_page(site, "op"))
    for english in (
        "Interventions", "New intervention", "Create the intervention", "Reports to triage",
        "Create an intervention", "Reject", "Merge", "Assign to", "Change state", "My team",
        "Under way", "Title (empty: the alarm's)", "state", "created on", "nearby assets",
        "P1 — the most urgent", "Lighting", "Assigned",
    ):  # fmt: skip
        assert english in shown, english
    assert not shown & {"Nouvelle intervention", "Signalements à trier", "Fusionner", "état"}

    reports, grid, said = _lists(site, "op")
    assert said == "1 report(s) to triage · 1 intervention(s) (1 new)"
    assert reports[0]["category"] == "Dark street / broken street light"
    assert (grid[0]["state"], grid[0]["domain"]) == ("New", "Lighting")
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{2} \d{1,2}:\d{2}\W[AP]M", grid[0]["created"])
    said, _ = _said(site, "op", _act("merge", [iid]), "iv-grid-feedback")
    assert said == "Refused: merging needs at least two open interventions"
    status, body = site.call("op", _show_report(rid))
    assert status == 200, body
    detail = _texts(body["response"]["iv-report-detail"]["children"])
    assert f"Report no. {rid} — Dark street / broken street light" in detail

    # Another user keeps French; the title made from the report is stored in French for all.
    assert _lists(site, "sup")[2] == "1 signalement(s) à trier · 1 intervention(s) (1 nouvelle)"
    said, _ = _said(site, "op", _triage("create", rid), "iv-report-feedback")
    assert said.startswith("Intervention no. ") and said.endswith(
        f" created from report no. {rid}."
    )
    titles = {r["title"] for r in _lists(site, "op")[1]}
    assert titles == {"Armoire", "Rue éteinte / lampadaire en panne — 3 rue Monge"}


def test_the_map_panel_links_to_a_new_intervention(site: Site) -> None:
    """The asset panel offers "Ouvrir une intervention" to those who may open one."""
    cab = site.cabinet("dijon")
    payload = dash_request(
        ["map-panel.children"], {"map-selected.data": cab.id, "map-interval.n_intervals": 1}
    )
    status, body = site.call("op", payload)
    assert status == 200, body
    link = _props(body["response"]["map-panel"]["children"], "map-panel-intervention")
    assert link is not None
    assert link["children"]["props"] == {
        "children": "Ouvrir une intervention",
        "href": f"/interventions?asset={cab.id}",
    }
    status, body = site.call("viewer", payload)
    assert status == 200 and "map-panel-intervention" not in json.dumps(body)


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


def _browser_new(url: str, asset: str) -> dict[str, Any]:
    """As the operator in Chromium: open the page for an asset, create, list "Mon équipe"."""
    seen: dict[str, Any] = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        log_in(page, url, "op", PW)
        errors.clear()  # the login form's 401 before the session
        page.goto(url + f"interventions?asset={asset}")
        page.wait_for_selector("#iv-new[open]")
        seen["asset"] = page.input_value("#iv-new-asset")
        seen["commune"] = page.inner_text("#iv-new-commune")
        page.fill("#iv-new-title", "Armoire ouverte")
        page.click("#iv-new-create")
        page.wait_for_function(
            "document.querySelector('#iv-new-feedback')?.innerText.startsWith('Intervention')"
        )
        seen["said"] = page.inner_text("#iv-new-feedback")
        seen["cleared"] = page.input_value("#iv-new-asset")
        page.locator("#iv-grid .ag-row[row-id='1']").first.wait_for(timeout=20_000)
        seen["mine_shown"] = page.is_visible("#iv-my-team-box")
        page.click("#iv-my-team-box input")
        page.wait_for_function("dash_ag_grid.getApi('iv-grid').getDisplayedRowCount() === 1")
        seen["mine"] = page.evaluate(
            "dash_ag_grid.getApi('iv-grid').getDisplayedRowAtIndex(0).data.id"
        )
        page.screenshot(path=artifact("hmi-interventions-new.png"), full_page=True)
        seen["errors"] = errors
    return seen


def test_an_operator_opens_an_intervention_in_the_browser(site: Site) -> None:
    """The page in Chromium: the form prefilled from `?asset=`, created, then "Mon équipe"."""
    require_chromium()
    cab = site.cabinet("dijon")
    site.service.create("system", Via.AUTO, title="Autre", commune="dijon", domain="other")
    mine = site.service.create(
        "system", Via.AUTO, title="Lampadaire", commune="dijon", domain="lighting", team="eclairage"
    )
    seen = _browser_new(site.url, cab.id)
    assert seen["asset"] == cab.id and seen["commune"] == "Dijon"
    assert seen["said"] == "Intervention n° 3 créée."
    assert seen["cleared"] == ""
    assert site.service.get(3).assets == [cab.id]
    assert seen["mine_shown"] is True and seen["mine"] == mine
    assert seen["errors"] == []


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
