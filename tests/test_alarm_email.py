"""Alarm e-mails received by a real SMTP server (aiosmtpd on a free port)."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from beffroi.alerts.config import AlarmsConfig, alarm_problems
from beffroi.alerts.notifiers.email import EmailNotifier
from beffroi.alerts.service import AlarmService
from beffroi.core.model import Sample
from beffroi.core.register import build_register
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from tests.conftest import eventually, free_port
from tests.tls_files import make_tls_files

T0 = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # Monday 10:00 in Dijon

RULES = [
    {"name": "fault", "class": "streetlight_cabinet", "signal": "fault", "type": "discrete",
     "equals": True, "severity": 3, "message": "Cabinet fault"},
    {"name": "fault", "class": "reservoir", "signal": "fault", "type": "discrete",
     "equals": True, "severity": 2, "message": "Pumping station fault"},
    {"name": "fault", "class": "traffic_controller", "signal": "fault", "type": "discrete",
     "equals": True, "severity": 1, "message": "Traffic lights fault"},
]  # fmt: skip
TEAMS = [
    {"name": "eclairage", "addresses": ["eclairage@example.org"]},
    {"name": "eau", "addresses": ["eau@example.org"], "escalation": ["chef-eau@example.org"],
     "escalate_after_min": 5},
    {"name": "voirie", "addresses": ["voirie@example.org"],
     "escalation": ["astreinte@example.org"], "escalate_after_min": 5},
    {"name": "direction", "addresses": ["direction@example.org"]},
]  # fmt: skip
ROUTES = [
    {"team": "eclairage", "domains": ["lighting"]},
    {"team": "eau", "domains": ["water"]},
    {"team": "voirie", "domains": ["traffic"]},
    {"team": "direction", "min_severity": 1},
]


@dataclass
class Received:
    """One e-mail as the SMTP server accepted it."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    @property
    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()


class SmtpServer:
    """A real aiosmtpd SMTP server in its own thread, stoppable and restartable on its port."""

    def __init__(self, port: int | None = None, **smtp_kwargs):
        self.port = port or free_port()
        self.kwargs = smtp_kwargs
        self.received: list[Received] = []
        self.controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):
        msg = message_from_bytes(envelope.original_content, policy=default_policy)
        self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), msg))
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **self.kwargs)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


class Clock:
    def __init__(self, t: datetime = T0):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, **kw) -> None:
        self.t += timedelta(**kw)


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def reg(demo_config):
    return build_register(demo_config, assets=200)


def alarm_config(demo_config, tmp_path, port: int, **email):
    ac = AlarmsConfig.model_validate({
        "rules": RULES, "teams": TEAMS, "routes": ROUTES,
        "email": {"enabled": True, "host": "127.0.0.1", "port": port, "security": "none",
                  "sender": "beffroi@dijon.example", "digest_window_s": 60,
                  "retry_min_s": 1, "retry_max_s": 2, "timeout_s": 5, **email},
    })  # fmt: skip
    historian = demo_config.historian.model_copy(update={"path": str(tmp_path / "h.duckdb")})
    cfg = demo_config.model_copy(update={"alarms": ac, "historian": historian})
    cfg._source = demo_config.source
    return cfg


def assets(reg, cls: str, n: int):
    return [a for a in reg.assets.values() if a.asset_class == cls][:n]


def fault(svc: AlarmService, clock: Clock, asset, on: bool = True) -> None:
    svc.process([Sample(asset.tag("fault"), clock(), on)])


@contextlib.asynccontextmanager
async def running(cfg, reg, clock):
    async with contextlib.AsyncExitStack() as stack:
        svc = AlarmService(cfg, reg, clock=clock)
        await svc.start(stack)
        yield svc


async def test_digest_groups_activations_per_team_with_links(demo_config, reg, tmp_path, smtp):
    """Activations within the window make one e-mail per team: subject, body and links."""
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, smtp.port)
    cabinets, [rs] = assets(reg, "streetlight_cabinet", 3), assets(reg, "reservoir", 1)
    async with running(cfg, reg, clock) as svc:
        for lc in cabinets:
            fault(svc, clock, lc)
            clock.advance(seconds=10)
        fault(svc, clock, rs)
        await svc.flush()
        assert smtp.received == []  # the digest window is still open
        clock.advance(seconds=31)  # the cabinets' window (opened at T0) closes
        await eventually(lambda: len(smtp.received) == 1)
        clock.advance(seconds=30)  # the reservoir's (opened 30 s later) too
        await eventually(lambda: len(smtp.received) == 2)
        await svc.flush()
    light = smtp.to("eclairage@example.org")
    water = smtp.to("eau@example.org")
    assert len(light) == 1 and len(water) == 1 and not smtp.to("direction@example.org")
    mail = light[0]
    assert mail.rcpt_tos == ["eclairage@example.org"] and mail.mail_from == "beffroi@dijon.example"
    assert mail.message["Subject"].startswith("[Beffroi][P3] 3 alarmes : ")
    assert mail.message["Message-ID"]
    commune = reg.communes[cabinets[0].commune].name
    for lc in cabinets:
        assert f"http://127.0.0.1:8050/?asset={lc.id}" in mail.text
        assert f"http://127.0.0.1:8050/trends?tag={lc.tag('fault')}" in mail.text
        assert f"{lc.tag('fault')}#fault" in mail.html
    # In French, the labels aligned; local time in French format, at the edge.
    where = f"{commune} ({cabinets[0].commune}), équipement {cabinets[0].id}, lighting"
    assert re.search(rf"\n  Où : +{re.escape(where)}\n", mail.text)
    assert re.search(r"\n  Depuis : +03/03/2025 10:00:00 CET\n", mail.text)
    assert "Acquitter : beffroi alarms ack" in mail.text and "<th>Quoi</th>" in mail.html
    assert "valeur 1 pour un seuil" not in mail.text and "Cabinet fault" in mail.text
    subject = water[0].message["Subject"]
    assert (
        subject
        == f"[Beffroi][P2] {reg.communes[rs.commune].name} · {rs.id} · Pumping station fault"
    )


async def test_routes_by_severity_and_a_chattering_alarm_sends_once(
    demo_config, reg, tmp_path, smtp
):
    """P1 also goes to the direction; an alarm toggling 5 times in a minute is e-mailed once."""
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, smtp.port, digest_window_s=0)
    [tc] = assets(reg, "traffic_controller", 1)
    async with running(cfg, reg, clock) as svc:
        fault(svc, clock, tc)
        await eventually(lambda: len(smtp.received) == 2)
        for _ in range(4):
            clock.advance(seconds=5)
            fault(svc, clock, tc, False)
            clock.advance(seconds=5)
            fault(svc, clock, tc, True)
            await svc.flush()
        clock.advance(seconds=1)
        await svc.flush()
        assert len(smtp.received) == 2
        assert svc.notifier.folded == 4
        figures = svc.stats(T0 - timedelta(hours=1), clock.t + timedelta(seconds=1))
    assert {r.rcpt_tos[0] for r in smtp.received} == {"voirie@example.org", "direction@example.org"}
    assert all(r.message["Subject"].startswith("[Beffroi][P1] ") for r in smtp.received)
    assert [c["alarm_id"] for c in figures["chattering"]] == [f"{tc.tag('fault')}#fault"]


async def test_escalation_when_left_unacknowledged(demo_config, reg, tmp_path, smtp):
    """A P2 alarm unacknowledged for 5 minutes goes to the escalation list; an acked one not."""
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, smtp.port, digest_window_s=0)
    rs1, rs2 = assets(reg, "reservoir", 2)
    async with running(cfg, reg, clock) as svc:
        fault(svc, clock, rs1)
        fault(svc, clock, rs2)
        await eventually(lambda: len(smtp.to("eau@example.org")) == 1)
        clock.advance(minutes=2)
        svc.ack([f"{rs2.tag('fault')}#fault"], "chloe", "on my way")
        clock.advance(minutes=2, seconds=59)
        await svc.flush()
        assert not smtp.to("chef-eau@example.org")
        clock.advance(seconds=1)
        await eventually(lambda: len(smtp.to("chef-eau@example.org")) == 1)
        clock.advance(minutes=30)
        await svc.flush()
    [esc] = smtp.to("chef-eau@example.org")
    assert esc.rcpt_tos == ["chef-eau@example.org"]
    assert esc.message["Subject"].startswith(
        "[Beffroi][P2] ESCALADE, non acquittée depuis 5 min : "
    )
    assert rs1.id in esc.text and rs2.id not in esc.text
    assert "NON ACQUITTÉE" in esc.text


async def test_return_to_normal_is_sent_when_configured(demo_config, reg, tmp_path, smtp):
    """A route with notify_return also tells its team when the alarm clears."""
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, smtp.port, digest_window_s=0)
    routes = [{"team": "eclairage", "domains": ["lighting"], "notify_return": True}]
    cfg = cfg.model_copy(update={"alarms": cfg.alarms.model_copy(update={"routes": [
        cfg.alarms.routes[0].model_validate(r) for r in routes]})})  # fmt: skip
    cfg._source = demo_config.source
    [lc] = assets(reg, "streetlight_cabinet", 1)
    async with running(cfg, reg, clock) as svc:
        fault(svc, clock, lc)
        await eventually(lambda: len(smtp.received) == 1)
        clock.advance(minutes=5)
        fault(svc, clock, lc, False)
        await eventually(lambda: len(smtp.received) == 2)
    subject = smtp.received[1].message["Subject"]
    assert subject.startswith("[Beffroi][P3] Retour à la normale : ") and lc.id in subject
    assert "RETOUR À LA NORMALE" in smtp.received[1].text


async def test_smtp_down_then_up_delivers_queued_mail_exactly_once(demo_config, reg, tmp_path):
    """E-mails wait in the outbox while SMTP is down, survive a restart, and arrive once."""
    server = SmtpServer()
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, server.port, digest_window_s=0)
    cabinets = assets(reg, "streetlight_cabinet", 2)
    async with running(cfg, reg, clock) as svc:
        fault(svc, clock, cabinets[0])
        await eventually(lambda: svc.sender.failures >= 1)
        assert svc.outbox.pending() == 1
    # The gateway restarts while the mail server is still down: the e-mail is still queued.
    async with running(cfg, reg, clock) as svc:
        assert svc.outbox.pending() == 1
        fault(svc, clock, cabinets[1])
        await eventually(lambda: svc.outbox.pending() == 2)
        server.start()
        try:
            clock.advance(seconds=3)  # past the retry backoff
            await eventually(lambda: len(server.received) == 2)
            for _ in range(3):
                clock.advance(seconds=3)
                await svc.flush()
            assert svc.outbox.pending() == 0
            rows = svc.journal.fetch("SELECT message_id, status, attempts FROM outbox ORDER BY id")
        finally:
            server.stop()
    assert len(server.received) == 2
    got = [r.message["Message-ID"] for r in server.received]
    assert got == [r["message_id"] for r in rows] and len(set(got)) == 2
    assert [r["status"] for r in rows] == ["sent", "sent"] and rows[0]["attempts"] >= 2
    assert cabinets[0].id in server.received[0].message["Subject"]


async def test_starttls_and_credentials_from_the_environment(
    demo_config, reg, tmp_path, monkeypatch
):
    """STARTTLS against the server's certificate (private CA), login from env variables."""
    ca, cert, key = make_tls_files(tmp_path / "tls")
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"s3cret")

    server = SmtpServer(tls_context=tls, require_starttls=True, authenticator=authenticator,
                        auth_require_tls=True)  # fmt: skip
    server.start()
    monkeypatch.setenv("TEST_SMTP_USER", "beffroi")
    monkeypatch.setenv("TEST_SMTP_PASSWORD", "s3cret")
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, server.port, digest_window_s=0,
                       security="starttls", ca_file=str(ca), username_env="TEST_SMTP_USER",
                       password_env="TEST_SMTP_PASSWORD")  # fmt: skip
    try:
        async with running(cfg, reg, clock) as svc:
            fault(svc, clock, assets(reg, "streetlight_cabinet", 1)[0])
            await eventually(lambda: len(server.received) == 1)
    finally:
        server.stop()
    assert logins == [("beffroi", "s3cret")]
    assert server.received[0].rcpt_tos == ["eclairage@example.org"]


def test_on_call_windows_in_local_time(demo_config, reg) -> None:
    """Addresses on call are chosen by weekday and local time, overnight windows included."""
    ac = AlarmsConfig.model_validate({
        "teams": [{"name": "eclairage", "addresses": ["bal@example.org"], "on_call": [
            {"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00",
             "addresses": ["jour@example.org"]},
            {"days": ["mon"], "start": "18:00", "end": "08:00",
             "addresses": ["nuit@example.org"]},
        ]}],
    })  # fmt: skip
    notifier = EmailNotifier(ac, reg, hmi_url="http://hmi:8050")
    team = notifier.teams["eclairage"]

    def at(local: str) -> list[str]:
        t = datetime.fromisoformat(local).astimezone(UTC)
        return notifier.recipients(team, t)

    assert at("2025-03-03T10:00+01:00") == ["bal@example.org", "jour@example.org"]  # Monday
    assert at("2025-03-03T22:00+01:00") == ["bal@example.org", "nuit@example.org"]
    assert at("2025-03-04T03:00+01:00") == ["bal@example.org", "nuit@example.org"]  # Tue night
    assert at("2025-03-04T22:00+01:00") == ["bal@example.org"]
    assert at("2025-03-08T10:00+01:00") == ["bal@example.org"]  # Saturday
    assert at("2025-07-07T17:30+02:00") == ["bal@example.org", "jour@example.org"]  # summer time


async def test_routes_by_class_and_inventory_attributes_follow_an_import(
    demo_config, tmp_path, smtp
) -> None:
    """A route on an attribute of the inventory (the maintenance contract) takes the alarms of
    the assets an import gave it while running; the others' go by domain only."""
    reg = build_register(demo_config, assets=200)
    clock = Clock()
    cfg = alarm_config(demo_config, tmp_path, smtp.port, digest_window_s=0)
    routes = [*ROUTES, {"team": "direction", "classes": ["streetlight_cabinet"],
                        "attributes": {"contrat": ["EP-2024-*", "EP-2025-01"]}}]  # fmt: skip
    cfg = cfg.model_copy(update={"alarms": cfg.alarms.model_copy(update={
        "routes": AlarmsConfig.model_validate({"routes": routes}).routes})})  # fmt: skip
    cfg._source = demo_config.source
    first, second, third = assets(reg, "streetlight_cabinet", 3)
    inventory = Inventory(cfg, reg, None)
    records = [
        dataclasses.replace(AssetRecord.of(first), attributes={"contrat": "EP-2024-07"}),
        dataclasses.replace(AssetRecord.of(second), attributes={"contrat": "EP-2023-02"}),
    ]
    async with running(cfg, reg, clock) as svc:
        fault(svc, clock, first)
        await eventually(lambda: len(smtp.received) == 1)
        assert smtp.received[0].rcpt_tos == ["eclairage@example.org"]  # no contract known yet
        report = inventory.import_records(records, "sig-eclairage.csv", "gis", partial=True)
        assert report.errors == []
        for asset in (first, second, third):
            fault(svc, clock, asset, on=False)
            clock.advance(minutes=5)
            fault(svc, clock, asset)
        await eventually(lambda: smtp.to("direction@example.org") and len(smtp.received) == 3)
    [contract] = smtp.to("direction@example.org")
    assert first.id in contract.text
    assert second.id not in contract.text and third.id not in contract.text
    light = smtp.to("eclairage@example.org")[1]  # by domain: all three, as before the import
    assert all(a.id in light.text for a in (first, second, third))


def test_a_route_naming_an_unknown_class_is_a_config_error(demo_config) -> None:
    """A typo in a route's classes would route nothing, silently: it is refused by name."""
    alarms = demo_config.alarms.model_copy(update={"routes": AlarmsConfig.model_validate(
        {"routes": [{"team": "t", "classes": ["streetlamp"]}]}).routes})  # fmt: skip
    cfg = demo_config.model_copy(update={"alarms": alarms})
    problems = alarm_problems(cfg)
    assert "alarms.routes[0].classes: unknown asset class 'streetlamp'" in problems
