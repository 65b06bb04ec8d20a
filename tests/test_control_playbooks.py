"""Incident playbooks end to end: the simulator's equipment, a real SMTP server, the audit log."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from beffroi.control.lighting import LightingScheduler
from beffroi.control.model import ControlError
from beffroi.control.service import ControlService
from beffroi.hmi.users import User
from tests.conftest import eventually
from tests.test_alarm_email import SmtpServer
from tests.test_control_helpers import P, running_scene, scene_config

SUPERVISOR = User("claire", "supervisor", ("*",))
TALANT_SUPERVISOR = User("hugo", "supervisor", ("talant",))
OPERATOR = User("marc", "operator", ("dijon",))
POLICE = "police-municipale@dijon-metropole.fr"
MAINTENANCE = "astreinte-voirie@dijon-metropole.fr"


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


async def _wait(run, *states: str) -> None:
    await eventually(lambda: run.state in states, within=30)


async def test_accident_playbook_runs_and_rolls_back_on_the_equipment(
    demo_config, tmp_path, smtp
) -> None:
    """Preview lists every command; the run changes panels, plans, lighting and sends e-mails;
    the rollback restores what was there and says the incident is closed; all is chained."""
    cfg = scene_config(demo_config, tmp_path, smtp_port=smtp.port, classes={})
    async with running_scene(cfg) as scene:
        # The state of the street before the accident, set through the collector itself.
        before = {"IP-T1": "Marché couvert ouvert", "IP-T2": "", "IP-T3": "Bienvenue"}
        for asset, text in before.items():
            assert (await scene.collector.write(scene.tag(asset, "message"), text)).ok
        for asset, plan in (("TC-T1", 0.0), ("TC-T2", 1.0), ("TC-T3", 2.0), ("TC-T4", 0.0)):
            assert (await scene.collector.write(scene.tag(asset, "plan"), plan)).ok
        for asset in ("LC-T1", "LC-T2", "LC-T3"):
            assert (await scene.collector.write(scene.tag(asset, "dimming_pct"), 40.0)).ok
        await eventually(lambda: scene.live.get(scene.tag("LC-T3", "dimming_pct")).value == 40)
        engine = scene.control.playbooks

        with pytest.raises(
            ControlError, match="n'a pas le droit de lancer des plans d'intervention"
        ):
            engine.preview(OPERATOR, "accident", *P)
        run = engine.preview(SUPERVISOR, "accident", *P, place="rue de la Liberté")
        planned = [[(c.asset, c.value) for c in s.commands] for s in run.steps]
        message = "Accident rue de la Liberté : suivez la déviation"
        assert planned == [
            [("IP-T1", message), ("IP-T2", message)],
            [("TC-T1", 5), ("TC-T2", 5), ("TC-T3", 5)],
            [("LC-T1", 100), ("LC-T2", 100)],
            [],
        ]
        assert run.steps[3].to == [POLICE, MAINTENANCE] and "rue de la Liberté" in (
            run.steps[3].subject
        )
        assert scene.value("IP-T1", "message") == before["IP-T1"]  # a preview sends nothing
        with pytest.raises(ControlError, match="hors de vos communes"):
            engine.begin(TALANT_SUPERVISOR, run.id)

        started = engine.begin(SUPERVISOR, run.id)
        lighting = LightingScheduler(cfg, scene.register, scene.live, scene.control.setpoints)
        await engine.execute(SUPERVISOR, started)
        assert run.state == "done"
        assert [s.status for s in run.steps] == ["confirmed", "confirmed", "confirmed", "sent"]
        assert scene.value("IP-T1", "message") == message
        assert scene.value("IP-T2", "message") == message
        assert scene.value("IP-T3", "message") == "Bienvenue"
        assert [scene.value(a, "plan") for a in ("TC-T1", "TC-T2", "TC-T3", "TC-T4")] == [
            5.0, 5.0, 5.0, 0.0,
        ]  # fmt: skip
        assert [scene.value(a, "dimming_pct") for a in ("LC-T1", "LC-T2", "LC-T3")] == [
            100.0, 100.0, 40.0,
        ]  # fmt: skip
        await eventually(lambda: len(smtp.received) == 1)
        mail = smtp.received[0]
        assert sorted(mail.rcpt_tos) == sorted([POLICE, MAINTENANCE])
        assert mail.message["Subject"] == "Beffroi — Accident sur un axe : rue de la Liberté"
        assert "claire" in mail.text and f"{P[0]:.5f}" in mail.text
        # The lighting schedule leaves the cabinets the playbook holds alone.
        held = {tag for _, tag, _, _ in lighting.due(scene.control.clock())}
        assert scene.tag("LC-T1", "dimming_pct") not in held
        with pytest.raises(ControlError, match="est terminée"):
            engine.begin(SUPERVISOR, run.id)

        await engine.rollback(SUPERVISOR, engine.begin_rollback(SUPERVISOR, run.id))
        assert run.state == "rolled_back"
        for asset, text in before.items():
            assert scene.value(asset, "message") == text
        assert [scene.value(a, "plan") for a in ("TC-T1", "TC-T2", "TC-T3")] == [0.0, 1.0, 2.0]
        assert [scene.value(a, "dimming_pct") for a in ("LC-T1", "LC-T2")] == [40.0, 40.0]
        assert scene.control.setpoints.held(scene.tag("LC-T1", "dimming_pct")) is None
        await eventually(lambda: len(smtp.received) == 2)
        assert smtp.received[1].message["Subject"] == "Beffroi — fin d'incident : rue de la Liberté"

        audit = scene.control.audit
        df = audit.frame()
        steps = df[df.action == "playbook.step"]
        assert [json.loads(d)["phase"] for d in steps.detail] == ["run"] * 4 + ["rollback"] * 4
        assert list(steps.outcome) == ["confirmed"] * 3 + ["sent"] + ["sent"] + ["restored"] * 3
        results = df[(df.action == "result") & df.detail.str.contains(run.id)]
        assert len(results) == 14 and set(results.outcome) == {"confirmed"}  # 7 run, 7 rollback
        assert set(results.user) == {"claire"}
        assert list(df[df.action == "playbook.rollback"].outcome) == ["started", "rolled_back"]
        assert audit.verify().ok


async def test_email_step_waits_in_the_outbox_while_smtp_is_down(demo_config, tmp_path) -> None:
    """With the SMTP server down the step says queued; the retry job delivers it later, once."""
    smtp = SmtpServer()
    cfg = scene_config(demo_config, tmp_path, smtp_port=smtp.port, classes={})
    async with running_scene(cfg) as scene:
        engine = scene.control.playbooks
        run = engine.preview(SUPERVISOR, "accident", 47.40, 5.20, place="route de Gray")
        assert [len(s.commands) for s in run.steps] == [0, 0, 0, 0]
        assert run.steps[0].note == "aucun équipement info_panel à moins de 1\u202f000 m"
        await engine.execute(SUPERVISOR, engine.begin(SUPERVISOR, run.id))
        assert [s.status for s in run.steps] == ["skipped", "skipped", "skipped", "queued"]
        assert scene.control.mailer.outbox.pending() == 1
        smtp.start()
        try:
            scene.control.mailer.sender._retry_at = None  # the retry is due now, not in 1 s
            await scene.control.mailer.retry()
            await eventually(lambda: len(smtp.received) == 1)
            await scene.control.mailer.retry()
            assert len(smtp.received) == 1 and scene.control.mailer.outbox.pending() == 0
        finally:
            smtp.stop()


async def test_a_run_cut_by_a_failover_is_taken_over_and_rolled_back(
    demo_config, tmp_path, pg_url, monkeypatch
) -> None:
    """The active node of a pair dies in the middle of a playbook run (on PostgreSQL): the node
    that takes over finds the run stopped with what it sent, keeps schedules off those
    setpoints, and rolls it back on the equipment; one audit chain holds both nodes' records."""
    monkeypatch.setenv("BEFFROI_STATE_URL", pg_url)
    base = scene_config(demo_config, tmp_path, classes={})
    cfg = base.model_copy(update={"state": base.state.model_copy(update={"backend": "postgres"})})
    cfg._source = base.source
    async with running_scene(cfg) as scene:
        before = {"IP-T1": "Marché couvert ouvert", "IP-T2": ""}
        for asset, text in before.items():
            tag = scene.tag(asset, "message")
            assert (await scene.collector.write(tag, text)).ok
            await eventually(lambda t=tag, v=text: scene.live.get(t).value == v)
        a = scene.control
        assert a.audit is not None
        a.audit.node = "a"
        run = a.playbooks.preview(SUPERVISOR, "accident", *P, place="rue de la Liberté")
        doing = asyncio.ensure_future(
            a.playbooks.execute(SUPERVISOR, a.playbooks.begin(SUPERVISOR, run.id))
        )
        await eventually(lambda: run.steps[0].status == "confirmed", within=30)
        doing.cancel()  # the node dies here; its lease goes with it
        with contextlib.suppress(asyncio.CancelledError):
            await doing
        assert a.setpoints is not None
        a.setpoints.acting = lambda: False
        panel = scene.tag("IP-T1", "message")
        assert scene.value("IP-T1", "message").startswith("Accident")
        async with contextlib.AsyncExitStack() as stack:
            b = ControlService(
                cfg, scene.register, scene.live,
                lambda tag: scene.collector if tag in scene.collector.tags else None,
            )  # fmt: skip
            await b.start(stack, node="b")
            await b.take_over()
            assert b.playbooks is not None and b.setpoints is not None
            taken = b.playbooks.get(run.id)
            assert taken is not None and taken.state == "stopped"
            assert "interrompu" in taken.log[-1]
            assert b.setpoints.held(panel) is not None  # the schedules keep off it
            await b.playbooks.rollback(SUPERVISOR, b.playbooks.begin_rollback(SUPERVISOR, run.id))
            assert taken.state == "rolled_back"
            for asset, text in before.items():
                assert scene.value(asset, "message") == text
            assert b.audit is not None
            assert b.audit.verify(anchor=False).ok
            df = b.audit.frame()
            nodes = {json.loads(d).get("node") for d in df.detail}
            assert {"a", "b"} <= nodes
            sent = df[(df.action == "operate") & (df.outcome == "sent") & (df.target == panel)]
            assert [json.loads(d)["node"] for d in sent.detail] == ["a", "b"]  # run, rollback
