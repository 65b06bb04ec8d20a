"""The setpoint service against the simulator's real OPC UA server: select-before-operate,
limits, interlocks, rate limits, and the equipment's confirmation."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from asyncua import ua
from asyncua.common.callback import CallbackType

from beffroi.control.model import ControlError
from beffroi.core.model import WriteStatus
from beffroi.hmi.users import User
from tests.conftest import eventually
from tests.test_control_helpers import Clock, running_scene, scene_config

MONDAY_10H = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)  # 10:00 in Dijon: no maintenance window
TUESDAY_2H = datetime(2025, 3, 4, 1, 0, tzinfo=UTC)  # 02:00 in Dijon: traffic maintenance

OPERATOR = User("marc", "operator", ("dijon",))
OPERATOR_2 = User("lea", "operator", ("dijon",))
TALANT_OPERATOR = User("paul", "operator", ("talant",))
SUPERVISOR = User("claire", "supervisor", ("*",))


def _records(scene, action: str | None = None) -> list[dict]:
    df = scene.control.audit.frame()
    rows = df.to_dict("records")
    for r in rows:
        r["detail"] = json.loads(r["detail"])
    return [r for r in rows if action is None or r["action"] == action]


async def test_selection_shows_value_range_interlocks_others_and_expires(
    demo_config, tmp_path
) -> None:
    """A selection shows what an operator needs; used after 30 s it is refused and audited."""
    clock = Clock(MONDAY_10H)
    async with running_scene(scene_config(demo_config, tmp_path), clock) as scene:
        tag = scene.tag("TC-T1", "plan")
        sel = scene.control.select(OPERATOR, tag)
        assert sel.current == scene.value("TC-T1", "plan")
        assert (sel.low, sel.high, sel.step) == (0, 9, 1)
        assert [i["rule"] for i in sel.interlocks] == ["flashing-amber"]
        assert sel.interlocks[0]["blocking"] and "maintenance" in sel.interlocks[0]["why"]
        assert sel.others == []
        other = scene.control.select(OPERATOR_2, tag)
        assert other.others == ["marc"]

        clock.advance(31)
        result = await scene.control.setpoints.operate(OPERATOR, sel.id, 3, "test expiry")
        assert result.status is WriteStatus.REFUSED and "expirée" in result.detail
        assert scene.control.setpoints.selection(sel.id) is None
        refused = _records(scene, "operate")[-1]
        assert refused["user"] == "marc" and refused["outcome"] == "refused"
        assert "expirée" in refused["detail"]["refusal"]
        assert [r["user"] for r in _records(scene, "select")] == ["marc", "lea"]

        with_no_reason = scene.control.select(OPERATOR, tag)
        result = await scene.control.setpoints.operate(OPERATOR, with_no_reason.id, 3, " ")
        assert result.status is WriteStatus.REFUSED and "motif" in result.detail


async def test_out_of_range_and_off_step_commands_are_refused_and_audited(
    demo_config, tmp_path
) -> None:
    """Nothing outside a tag's range or step reaches the equipment; each refusal is audited."""
    async with running_scene(scene_config(demo_config, tmp_path), Clock(MONDAY_10H)) as scene:
        tag, before = scene.tag("TC-T2", "plan"), scene.value("TC-T2", "plan")
        for value, why in ((12, "supérieur au maximum 9"), (2.5, "ne respecte pas le pas de 1")):
            sel = scene.control.select(OPERATOR, tag)
            result = await scene.control.setpoints.operate(OPERATOR, sel.id, value, "test")
            assert result.status is WriteStatus.REFUSED and why in result.detail
        assert scene.value("TC-T2", "plan") == before
        refused = [r for r in _records(scene, "operate") if r["outcome"] == "refused"]
        assert [r["detail"]["rule"] for r in refused] == ["range", "step"]
        assert [r["detail"]["value"] for r in refused] == [12, 2.5]
        assert not _records(scene, "result")  # nothing was sent


async def test_interlocks_refuse_and_audit(demo_config, tmp_path) -> None:
    """Presence on a bollard refuses moving it; flashing amber needs a window or a supervisor."""
    clock = Clock(MONDAY_10H)
    async with running_scene(scene_config(demo_config, tmp_path), clock) as scene:
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", True)
        raised = scene.tag("BO-T1", "raised")
        before = scene.value("BO-T1", "raised")
        sel = scene.control.select(OPERATOR, raised)
        assert sel.interlocks[0]["rule"] == "bollard-occupied" and sel.interlocks[0]["blocking"]
        result = await scene.control.setpoints.operate(OPERATOR, sel.id, not before, "test")
        assert result.status is WriteStatus.REFUSED and result.rule == "bollard-occupied"
        assert scene.value("BO-T1", "raised") == before

        plan = scene.tag("TC-T3", "plan")
        sel = scene.control.select(OPERATOR, plan)
        result = await scene.control.setpoints.operate(OPERATOR, sel.id, 9, "night works")
        assert result.status is WriteStatus.REFUSED and result.rule == "flashing-amber"
        assert scene.value("TC-T3", "plan") != 9
        refusals = [r["detail"]["rule"] for r in _records(scene, "operate")]
        assert refusals == ["bollard-occupied", "flashing-amber"]

        clock.t = TUESDAY_2H  # inside the traffic maintenance window: an operator may
        sel = scene.control.select(OPERATOR, plan)
        assert not sel.interlocks[0]["blocking"]
        result = await scene.control.setpoints.operate(OPERATOR, sel.id, 9, "night works")
        assert result.status is WriteStatus.CONFIRMED and scene.value("TC-T3", "plan") == 9.0
        clock.t = MONDAY_10H  # outside it, a supervisor may
        sel = scene.control.select(SUPERVISOR, scene.tag("TC-T4", "plan"))
        result = await scene.control.setpoints.operate(SUPERVISOR, sel.id, 9, "crash at P")
        assert result.status is WriteStatus.CONFIRMED and scene.value("TC-T4", "plan") == 9.0


async def test_a_bollard_takes_one_command_per_10_s(demo_config, tmp_path) -> None:
    """The second command within 10 s is refused with the wait; after 10 s it goes through."""
    clock = Clock(MONDAY_10H)
    async with running_scene(scene_config(demo_config, tmp_path), clock) as scene:
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", False)
        tag = scene.tag("BO-T1", "raised")
        first = not scene.value("BO-T1", "raised")
        sel = scene.control.select(OPERATOR, tag)
        ok = await scene.control.setpoints.operate(OPERATOR, sel.id, first, "delivery")
        assert ok.status is WriteStatus.CONFIRMED and scene.value("BO-T1", "raised") is first
        clock.advance(4)
        sel = scene.control.select(OPERATOR, tag)
        too_soon = await scene.control.setpoints.operate(OPERATOR, sel.id, not first, "again")
        assert too_soon.status is WriteStatus.REFUSED and too_soon.rule == "rate"
        assert "attendez 6 s" in too_soon.detail and scene.value("BO-T1", "raised") is first
        clock.advance(6)
        sel = scene.control.select(OPERATOR, tag)
        later = await scene.control.setpoints.operate(OPERATOR, sel.id, not first, "again")
        assert later.status is WriteStatus.CONFIRMED
        assert scene.value("BO-T1", "raised") is (not first)
        assert _records(scene, "operate")[1]["detail"]["rule"] == "rate"


async def test_results_confirmed_rejected_and_unconfirmed(demo_config, tmp_path) -> None:
    """The equipment's answer reaches the user: held, refused by the device, or not held."""
    async with running_scene(scene_config(demo_config, tmp_path), Clock(MONDAY_10H)) as scene:
        dim = scene.tag("LC-T1", "dimming_pct")
        sel = scene.control.select(OPERATOR, dim)
        ok = await scene.control.setpoints.operate(OPERATOR, sel.id, "40", "test")
        assert ok.status is WriteStatus.CONFIRMED and ok.reported == 40.0
        assert scene.value("LC-T1", "dimming_pct") == 40.0
        assert scene.sim.physics.value(dim) == 40.0  # the cabinet's own state, a tick later

        # The controller is switched to local control: its node refuses remote writes.
        plan = scene.tag("TC-T1", "plan")
        before = scene.value("TC-T1", "plan")
        node = scene.sim._server.get_node(ua.NodeId(plan, scene.sim.namespace_index))
        await node.set_writable(False)
        sel = scene.control.select(OPERATOR, plan)
        rejected = await scene.control.setpoints.operate(OPERATOR, sel.id, 4, "test")
        assert rejected.status is WriteStatus.REJECTED and "BadUserAccessDenied" in rejected.detail
        assert scene.value("TC-T1", "plan") == before

        # A bollard jams just as it takes the order (the server's post-write hook): it says
        # yes, then reports the position it is stuck in.
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", False)
        raised_tag = scene.tag("BO-T1", "raised")

        async def jam(event, _dispatcher) -> None:  # type: ignore[no-untyped-def]
            if any(w.NodeId.Identifier == raised_tag for w in event.request_params.NodesToWrite):
                await scene.sim.force_fault("BO-T1", True)

        scene.sim._server.subscribe_server_callback(CallbackType.PostWrite, jam)
        raised = scene.value("BO-T1", "raised")
        sel = scene.control.select(OPERATOR, raised_tag)
        stuck = await scene.control.setpoints.operate(OPERATOR, sel.id, not raised, "test")
        assert stuck.status is WriteStatus.UNCONFIRMED and stuck.reported is raised
        said = "vrai" if raised else "faux"
        assert f"l'équipement signale {said} " in stuck.detail and "en défaut" in stuck.detail
        assert scene.value("BO-T1", "raised") is raised

        outcomes = [(r["target"], r["outcome"]) for r in _records(scene, "result")]
        assert outcomes == [(dim, "confirmed"), (plan, "rejected"), (raised_tag, "unconfirmed")]
        assert scene.control.audit.verify().ok


async def test_a_jammed_bollard_refuses_and_the_command_is_reported_failed(
    demo_config, tmp_path
) -> None:
    """A healthy bollard moves; a jammed one refuses the order and never shows it: rejected,
    audited as rejected with the device's status; once repaired it moves again."""
    clock = Clock(MONDAY_10H)
    async with running_scene(scene_config(demo_config, tmp_path), clock) as scene:
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", False)
        tag, fault = scene.tag("BO-T1", "raised"), scene.tag("BO-T1", "fault")
        up = not scene.value("BO-T1", "raised")
        sel = scene.control.select(OPERATOR, tag)
        moved = await scene.control.setpoints.operate(OPERATOR, sel.id, up, "delivery")
        assert moved.status is WriteStatus.CONFIRMED and scene.value("BO-T1", "raised") is up

        await scene.sim.force_fault("BO-T1", True)
        await eventually(lambda: (s := scene.live.get(fault)) is not None and s.value is True)
        before = scene.live.get(tag)
        clock.advance(10)  # past the bollard's one command per 10 s
        sel = scene.control.select(OPERATOR, tag)
        jammed = await scene.control.setpoints.operate(OPERATOR, sel.id, not up, "delivery")
        assert jammed.status is WriteStatus.REJECTED and not jammed.ok
        assert "BadDeviceFailure" in jammed.detail
        # Ticks later it still has not moved, and no report of the order ever reached us.
        for _ in range(3):
            t = scene.sim.physics.now
            await eventually(lambda t=t: scene.sim.physics.now > t)
        assert scene.value("BO-T1", "raised") is up and scene.sim.physics.value(tag) is up
        assert scene.live.get(tag) == before

        await scene.sim.force_fault("BO-T1", False)
        clock.advance(10)
        sel = scene.control.select(OPERATOR, tag)
        repaired = await scene.control.setpoints.operate(OPERATOR, sel.id, not up, "delivery")
        assert repaired.status is WriteStatus.CONFIRMED
        assert scene.value("BO-T1", "raised") is (not up)

        results = _records(scene, "result")
        assert [(r["target"], r["outcome"]) for r in results] == [
            (tag, "confirmed"),
            (tag, "rejected"),
            (tag, "confirmed"),
        ]
        assert "BadDeviceFailure" in results[1]["detail"]["detail"]
        assert results[1]["detail"]["value"] is (not up)
        assert [r["outcome"] for r in _records(scene, "operate")] == ["sent"] * 3
        assert scene.control.audit.verify().ok


async def test_commands_outside_the_users_communes_are_refused(demo_config, tmp_path) -> None:
    """Talant's operator cannot select Dijon's equipment; the refusal is audited."""
    async with running_scene(scene_config(demo_config, tmp_path), Clock(MONDAY_10H)) as scene:
        try:
            scene.control.select(TALANT_OPERATOR, scene.tag("TC-T1", "plan"))
        except ControlError as exc:
            assert "hors des communes de paul" in exc.reason
        else:
            raise AssertionError("a Dijon controller was selected by Talant's operator")
        sel = scene.control.select(TALANT_OPERATOR, scene.tag("TC-T5", "plan"))
        assert sel.commune == "talant"
        result = await scene.control.setpoints.command(
            TALANT_OPERATOR, scene.tag("LC-T1", "dimming_pct"), 20, "bypassing selection"
        )
        assert result.status is WriteStatus.REFUSED
        assert [r["outcome"] for r in _records(scene, "select")] == ["refused", "ok"]


async def test_the_standby_of_a_pair_sends_no_command_and_one_fenced_midway_neither(
    demo_config, tmp_path
) -> None:
    """A standby refuses (audited, rule "standby"); a node whose lease goes while the command's
    audit record is written refuses it before the write: the equipment never sees it."""
    async with running_scene(scene_config(demo_config, tmp_path), Clock(MONDAY_10H)) as scene:
        setpoints = scene.control.setpoints
        tag, before = scene.tag("TC-T2", "plan"), scene.value("TC-T2", "plan")
        setpoints.acting = lambda: False
        result = await setpoints.command(OPERATOR, tag, 3, "test standby")
        assert result.status is WriteStatus.REFUSED and result.rule == "standby"
        assert "nœud actif" in result.detail
        # Acting at the first check, no longer at the second (the lease ran out meanwhile).
        answers = iter([True, False])
        setpoints.acting = lambda: next(answers)
        fenced = await setpoints.command(OPERATOR, tag, 3, "test fenced")
        assert fenced.status is WriteStatus.REFUSED and fenced.rule == "standby"
        assert scene.value("TC-T2", "plan") == before
        outcomes = [(r["action"], r["outcome"], r["detail"].get("rule")) for r in _records(scene)
                    if r["action"] in ("operate", "result")]  # fmt: skip
        assert outcomes == [("operate", "refused", "standby"), ("operate", "sent", None),
                            ("result", "refused", "standby")]  # fmt: skip
