"""Interventions on both state back ends: alarms routed into work orders, residents' reports
matched and merged, states followed to the end, e-mails (aiosmtpd), and a resident's address
deleted from every store once its retention is over."""

from __future__ import annotations

import hashlib
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from beffroi.alerts.config import RouteConfig, TeamConfig
from beffroi.app.config import Config
from beffroi.control.audit import AuditLog
from beffroi.core.register import Register, build_register
from beffroi.interventions import kpis
from beffroi.interventions.model import State, Via
from beffroi.interventions.service import InterventionError, InterventionService
from beffroi.interventions.store import InterventionStore
from beffroi.state.config import PgPlace, Place
from tests.test_alarm_email import SmtpServer

T0 = datetime(2026, 3, 2, 21, 0, tzinfo=UTC)
RESIDENT = "habitante.quartier@example.org"


class Clock:
    """The time the service sees, moved by the test (retention is counted in days)."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> datetime:
        return self.t


@pytest.fixture(params=["duckdb", "postgres"])
def places(request, tmp_path: Path) -> tuple[Place, Place]:
    """The interventions store and the audit log, in files or in a fresh PostgreSQL database."""
    if request.param == "duckdb":
        return tmp_path / "interventions.duckdb", tmp_path / "audit.duckdb"
    url = request.getfixturevalue("pg_url")
    return PgPlace(url, "interventions"), PgPlace(url, "audit")


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


def _config(demo_config: Config, smtp_port: int) -> Config:
    alarms = demo_config.alarms.model_copy(
        update={
            "teams": [
                TeamConfig(name="eclairage", addresses=["eclairage@example.org"]),
                TeamConfig(name="voirie", addresses=["voirie@example.org"]),
            ],
            "routes": [
                RouteConfig(team="eclairage", domains=["lighting"]),
                RouteConfig(team="voirie", domains=["traffic", "security"]),
            ],
            "email": demo_config.alarms.email.model_copy(
                update={
                    "enabled": True,
                    "port": smtp_port,
                    "security": "none",
                    "hmi_url": "https://beffroi.example.org",
                }
            ),
        }
    )
    cfg = demo_config.model_copy(update={"alarms": alarms})
    cfg._source = demo_config.source
    return cfg


class Site:
    """A service on real stores, with the alarms needing attention the test says."""

    def __init__(self, cfg: Config, register: Register, places: tuple[Place, Place]):
        self.clock = Clock()
        self.store = InterventionStore(places[0], clock=self.clock)
        self.audit = AuditLog(places[1])
        self.active: list[dict[str, Any]] = []
        self.service = InterventionService(
            cfg,
            register,
            self.store,
            b"k" * 32,
            audit=self.audit,
            alarms=lambda: list(self.active),
            clock=self.clock,
        )
        self.register = register

    def alarm(self, asset_id: str, n: int = 1, severity: int = 1) -> str:
        asset = self.register.assets[asset_id]
        alarm_id = f"{asset.tags[0].name}#fault{n}"
        self.active.append(
            {
                "alarm_id": alarm_id,
                "state": "unack_active",
                "severity": severity,
                "rule": "fault",
                "asset": asset.id,
                "commune": asset.commune,
                "domain": asset.domain,
                "message": "Défaut armoire",
                "since": self.clock().isoformat(),
            }
        )
        return alarm_id

    def close(self) -> None:
        self.store.close()
        self.audit.close()


@pytest.fixture
def site(demo_config: Config, places, smtp):
    cfg = _config(demo_config, smtp.port)
    register = build_register(cfg, assets=120)
    s = Site(cfg, register, places)
    yield s
    s.close()


def _cabinets(site: Site) -> list:
    return [a for a in site.register.assets.values() if a.asset_class == "streetlight_cabinet"]


def test_an_alarm_routed_to_a_team_opens_one_intervention_and_tells_the_team(site, smtp):
    cab = _cabinets(site)[0]
    first = site.alarm(cab.id, 1)
    [iid] = site.service.route_alarms()
    assert site.service.route_alarms() == []  # already linked: not opened twice
    second = site.alarm(cab.id, 2)  # another alarm of the same cabinet joins it
    assert site.service.route_alarms() == []
    item = site.service.get(iid)
    assert (item.team, item.state, item.origin) == ("eclairage", State.ASSIGNED, "alarm")
    assert item.alarms == [first, second] and item.assets == [cab.id]
    assert (item.lat, item.lon) == (cab.lat, cab.lon)
    # A P4 alarm (auto_severity 3) waits for an operator.
    other = _cabinets(site)[1]
    site.alarm(other.id, 1, severity=4)
    assert site.service.route_alarms() == []
    assert site.service.deliver() == 1
    [mail] = smtp.to("eclairage@example.org")
    text = mail.message.get_content()
    assert f"Intervention n° {iid}" in text and cab.id in text
    url = next(w for w in text.split() if w.startswith("https://beffroi.example.org/field/"))
    assert site.service.links.check(url.rsplit("/", 1)[1]) == iid
    audit = site.audit.frame(actions=["intervention.create"])
    assert list(audit.target) == [f"intervention:{iid}"] and list(audit.user) == ["system"]


def test_reports_and_alarms_about_one_cabinet_merge_into_one_intervention(site):
    cab = _cabinets(site)[0]
    site.alarm(cab.id, 1)
    site.alarm(cab.id, 2)
    svc = site.service
    # Two alarm interventions made apart (an operator opened the second by hand).
    [a] = svc.route_alarms()
    b = svc.create(
        "op",
        Via.HMI,
        title="Rue sombre",
        commune=cab.commune,
        domain="lighting",
        assets=[cab.id],
        team="eclairage",
    )
    reports = [
        svc.report("dark_street", cab.lat + 0.0003 * i, cab.lon, f"Plus de lumière ({i})")
        for i in range(3)
    ]
    assert reports[0]["known_problem"]  # the cabinet's alarms are open
    assert [r["duplicate_of"] for r in reports] == [None, reports[0]["id"], reports[0]["id"]]
    first = svc.store.report(reports[0]["id"])
    assert first is not None and json.loads(first["matches"])["assets"][0] == cab.id
    assert first["commune"] == cab.commune
    for r in reports:
        svc.report_to(r["id"], b, "op")
    kept = svc.merge([b, a], "op")
    assert kept == a
    item = svc.get(a)
    assert sorted(item.reports) == sorted(r["id"] for r in reports)
    assert len(item.alarms) == 2 and item.open
    gone = svc.get(b)
    assert gone.state is State.CANCELLED and gone.merged_into == a and gone.reports == []
    assert list(svc.table().id) == [a]
    assert svc.reports().empty  # none waits for triage any more
    with pytest.raises(InterventionError):
        svc.merge([a], "op")


def test_states_move_forward_only_closing_tells_the_resident_and_revokes_links(site, smtp):
    cab = _cabinets(site)[0]
    svc = site.service
    rep = svc.report(
        "dark_street",
        cab.lat,
        cab.lon,
        "Rue éteinte depuis hier soir",
        email=RESIDENT,
        consent=True,
    )
    iid = svc.report_to(rep["id"], None, "op")
    assert svc.get(iid).state is State.NEW
    with pytest.raises(InterventionError, match="affectez-la"):
        svc.move(iid, State.EN_ROUTE, "op", Via.HMI)
    svc.assign(iid, "eclairage", "op")
    link = svc.field_link(iid, "op")
    for state, minutes in ((State.EN_ROUTE, 10), (State.ON_SITE, 35)):
        site.clock.t += timedelta(minutes=minutes)
        svc.move(iid, state, "field:eclairage", Via.FIELD)
    with pytest.raises(InterventionError):
        svc.move(iid, State.ASSIGNED, "op", Via.HMI)
    svc.note(iid, "Fusible remplacé", "field:eclairage", Via.FIELD)
    site.clock.t += timedelta(minutes=20)
    item = svc.move(iid, State.DONE, "field:eclairage", Via.FIELD)
    assert [str(s) for s in item.times] == ["assigned", "en_route", "on_site", "done", "new"]
    assert item.times["done"] - item.times["on_site"] == timedelta(minutes=20)
    with pytest.raises(ValueError, match="révoqué"):
        svc.links.check(link.token)
    svc.deliver()
    [told] = smtp.to(RESIDENT)
    assert f"signalement n° {rep['id']} a été traité" in told.message.get_content()
    kinds = [e["kind"] for e in item.events]
    assert kinds == ["created", "assign", "state", "state", "note", "state"]
    moves = site.audit.frame(actions=["intervention.state"])
    assert set(moves.user) == {"field:eclairage"}
    assert svc.store.report(rep["id"])["state"] == "closed"  # type: ignore[index]


def test_the_residents_address_is_gone_from_every_store_after_its_retention(site, smtp):
    cab = _cabinets(site)[0]
    svc = site.service
    rep = svc.report(
        "dark_street", cab.lat, cab.lon, "Lampadaire éteint", email=RESIDENT, consent=True
    )
    iid = svc.report_to(rep["id"], None, "op")
    svc.assign(iid, "eclairage", "op")
    svc.move(iid, State.DONE, "op", Via.HMI)
    svc.deliver()
    assert smtp.to(RESIDENT)
    assert svc.contact(rep["id"], "supervisor", "sup") == RESIDENT
    with pytest.raises(InterventionError):
        svc.contact(rep["id"], "operator", "op")
    assert _holding(site, RESIDENT) == ["report_contacts", "mail_outbox"]
    site.clock.t += timedelta(days=29)
    assert svc.forget_contacts() == 0  # not yet: 30 days after closure
    site.clock.t += timedelta(days=2)
    assert svc.forget_contacts() == 1
    assert _holding(site, RESIDENT) == []
    assert svc.store.report(rep["id"]) is not None  # the report itself stays, anonymous
    [forgot] = site.audit.frame(actions=["report.forget_contacts"]).to_dict("records")
    assert forgot["user"] == "system"
    assert site.audit.verify().ok


def _holding(site: Site, needle: str) -> list[str]:
    """Return the tables of the interventions store and the audit log holding a text."""
    tables = [
        "interventions",
        "intervention_events",
        "intervention_links",
        "field_links",
        "reports",
        "report_contacts",
        "mail_outbox",
    ]
    found = []
    for t in tables:
        if any(needle in str(v) for row in site.store.db.rows(f"SELECT * FROM {t}") for v in row):
            found.append(t)
    audit = site.audit.frame()
    if any(needle in str(v) for v in audit.astype(str).to_numpy().ravel()):
        found.append("audit")
    return found


def test_a_report_is_refused_with_the_reason_and_without_consent_no_address_is_kept(site):
    cab = _cabinets(site)[0]
    svc = site.service
    bad = [
        (("nope", cab.lat, cab.lon, "x"), {}, "catégorie"),
        (("dark_street", cab.lat, cab.lon, "  "), {}, "description"),
        (("dark_street", cab.lat, cab.lon, "x" * 5000), {}, "description"),
        (("dark_street", 48.85, 2.35, "Paris"), {}, "métropole"),
        (("dark_street", 95.0, cab.lon, "x"), {}, "position"),
        (("dark_street", cab.lat, cab.lon, "x"), {"email": RESIDENT}, "accord"),
        (
            ("dark_street", cab.lat, cab.lon, "x"),
            {"email": "pas une adresse", "consent": True},
            "e-mail",
        ),
    ]
    for args, kwargs, why in bad:
        with pytest.raises(InterventionError, match=why):
            svc.report(*args, **kwargs)
    assert svc.reports().empty
    ok = svc.report("dark_street", cab.lat, cab.lon, "Éteint", email="")
    assert svc.store.contact(ok["id"]) is None


def test_kpis_time_each_step_count_the_backlog_and_who_saw_the_fault_first(site, tmp_path):
    cabs = _cabinets(site)
    svc = site.service
    # 1: the cabinet's alarm at 21:00, a resident's report at 21:30: telemetry first.
    site.alarm(cabs[0].id, 1)
    [a] = svc.route_alarms()
    site.clock.t += timedelta(minutes=30)
    rep = svc.report("dark_street", cabs[0].lat, cabs[0].lon, "Noir")
    svc.report_to(rep["id"], a, "op")
    for state in (State.EN_ROUTE, State.ON_SITE):
        site.clock.t += timedelta(minutes=15)
        svc.move(a, state, "crew", Via.FIELD)
    site.clock.t += timedelta(minutes=30)
    svc.move(a, State.DONE, "crew", Via.FIELD)  # on site at 60 min, done at 90
    # 2: a resident first, the alarm linked later (began after the report): left open.
    rep2 = svc.report("dark_street", cabs[1].lat, cabs[1].lon, "Éteint aussi")
    b = svc.report_to(rep2["id"], None, "op")
    site.clock.t += timedelta(minutes=5)
    site.alarm(cabs[1].id, 1)
    svc.route_alarms()  # the cabinet already has an open intervention: linked there
    assert len(svc.get(b).alarms) == 1
    df = kpis.intervention_kpis(site.store, T0 - timedelta(hours=1), site.clock.t)
    every = df[df.scope_kind == "all"].iloc[0]
    assert (every.opened, every.done, every.backlog) == (2, 1, 1)
    assert every.time_to_assign_min == 0.0  # a routed alarm is assigned at once
    assert every.time_to_arrive_min == 60.0 and every.time_to_repair_min == 90.0
    assert every.telemetry_first_pct == 50.0
    lighting = df[(df.scope_kind == "domain") & (df.scope == "lighting")].iloc[0]
    assert lighting.opened == 2
    out = tmp_path / "interventions.csv"
    text = kpis.to_csv(df)
    manifest = kpis.write_export(text, T0 - timedelta(hours=1), site.clock.t, out, "Dijon")
    text = out.read_text(encoding="utf-8")
    assert manifest["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["rows"] == len(df) and text.startswith(",".join(kpis.COLUMNS))
    assert "@" not in text  # no address


def test_two_crews_closing_at_once_close_it_once(site, smtp):
    """Two taps (or two phones) on « Terminée » together: one closes, the other is refused;
    one history line, one audit record, one e-mail to the resident."""
    cab = _cabinets(site)[0]
    svc = site.service
    rep = svc.report("dark_street", cab.lat, cab.lon, "Noir", email=RESIDENT, consent=True)
    iid = svc.report_to(rep["id"], None, "op")
    svc.assign(iid, "eclairage", "op")
    outcomes: list[str] = []
    gate = threading.Barrier(4)

    def close() -> None:
        gate.wait()
        try:
            svc.move(iid, State.DONE, "crew", Via.FIELD)
            outcomes.append("closed")
        except InterventionError:
            outcomes.append("refused")

    threads = [threading.Thread(target=close) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["closed", "refused", "refused", "refused"]
    assert [e["state"] for e in svc.get(iid).events if e["kind"] == "state"] == ["done"]
    assert len(site.audit.frame(actions=["intervention.state"])) == 1
    svc.deliver()
    assert len(smtp.to(RESIDENT)) == 1


def test_two_operators_triaging_one_report_at_once_make_one_intervention(site):
    cab = _cabinets(site)[0]
    svc = site.service
    rep = svc.report("dark_street", cab.lat, cab.lon, "Noir")
    made: list[int] = []
    refused: list[str] = []
    gate = threading.Barrier(3)

    def triage() -> None:
        gate.wait()
        try:
            made.append(svc.report_to(rep["id"], None, "op"))
        except InterventionError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=triage) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(refused) == 2 and "déjà traité" in refused[0]
    assert list(svc.table().id) == made
    [seen] = site.audit.frame(actions=["report.create"]).to_dict("records")
    assert seen["commune"] == cab.commune  # an auditor of another commune does not see it


def test_two_operators_opening_from_one_alarm_at_once_open_one(site):
    cab = _cabinets(site)[0]
    alarm_id = site.alarm(cab.id, 1, severity=4)  # not routed: operators open it
    svc = site.service
    made: list[int] = []
    refused: list[str] = []
    gate = threading.Barrier(3)

    def open_it() -> None:
        gate.wait()
        try:
            made.append(
                svc.create(
                    "op",
                    Via.HMI,
                    title="Défaut",
                    commune=cab.commune,
                    domain="lighting",
                    assets=[cab.id],
                    alarms=[(alarm_id, T0)],
                    alarms_free=True,
                )
            )
        except InterventionError as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(refused) == 2 and "déjà liée" in refused[0]
