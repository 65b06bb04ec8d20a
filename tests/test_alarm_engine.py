"""The alarm engine driven by real Sample streams and a controllable clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from beffroi.alerts.config import AlarmsConfig
from beffroi.alerts.engine import AlarmEngine
from beffroi.alerts.state import AlarmCommandError, AlarmState
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register


@pytest.fixture(scope="module")
def reg(demo_config):
    """Return a register of 200 assets: several of every class."""
    return build_register(demo_config, assets=200)


T0 = datetime(2025, 1, 15, 11, 0, tzinfo=UTC)  # noon in Dijon: daylight
NIGHT = datetime(2025, 1, 15, 22, 0, tzinfo=UTC)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, t: datetime = T0):
        self.t = t

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> datetime:
        self.t += timedelta(seconds=seconds)
        return self.t


def make_engine(register, rules: list[dict], clock: Clock, **extra) -> AlarmEngine:
    cfg = AlarmsConfig.model_validate({"rules": rules, **extra})
    return AlarmEngine(cfg, register, clock=clock)


def first(register, cls: str):
    return next(a for a in register.assets.values() if a.asset_class == cls)


def feed(engine: AlarmEngine, clock: Clock, tag: str, *values, quality=Quality.GOOD) -> None:
    for v in values:
        engine.process([Sample(tag, clock(), v, quality)])


def state(engine: AlarmEngine, alarm_id: str) -> AlarmState:
    return engine.alarms[alarm_id].state


LEVEL = {
    "name": "level",
    "class": "reservoir",
    "signal": "level_pct",
    "type": "limit",
    "lo": 20,
    "lolo": 10,
    "hi": 95,
    "deadband": 2,
    "severity": 3,
    "extreme_severity": 1,
}


def test_limits_deadband_levels_and_ack(reg) -> None:
    """Lo then LoLo annunciate (LoLo more urgent); the deadband holds; ack then RTN is Normal."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock)
    rs = first(reg, "reservoir")
    tag, aid = rs.tag("level_pct"), f"{rs.tag('level_pct')}#level"
    feed(eng, clock, tag, 50.0, 30.0, 21.0)
    assert state(eng, aid) is AlarmState.NORMAL
    feed(eng, clock, tag, 19.5)
    alarm = eng.alarms[aid]
    assert (alarm.state, alarm.level, alarm.limit, alarm.severity) == (
        AlarmState.UNACK_ACTIVE,
        "LO",
        20.0,
        3,
    )
    feed(eng, clock, tag, 9.0)
    assert (alarm.level, alarm.severity) == ("LOLO", 1)
    feed(eng, clock, tag, 11.5)  # above LoLo but inside its deadband: still LoLo
    assert alarm.level == "LOLO"
    feed(eng, clock, tag, 12.5)
    assert alarm.level == "LO" and alarm.active
    eng.ack([aid], "marie", "pump restarted")
    assert alarm.state is AlarmState.ACK_ACTIVE
    feed(eng, clock, tag, 21.0)  # inside Lo's deadband: still active
    assert alarm.active
    feed(eng, clock, tag, 22.5)
    assert alarm.state is AlarmState.NORMAL
    events = [(e.event, e.state, e.user) for e in eng.take_events()]
    assert events == [
        ("activate", "unack_active", ""),
        ("level", "unack_active", ""),
        ("level", "unack_active", ""),
        ("ack", "ack_active", "marie"),
        ("clear", "normal", ""),
    ]
    with pytest.raises(AlarmCommandError, match="nothing to acknowledge"):
        eng.ack([aid], "marie")


def test_return_without_ack_is_unack_rtn(reg) -> None:
    """An alarm back to normal before anyone acknowledged it waits in Unack-RTN."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock)
    tag = first(reg, "reservoir").tag("level_pct")
    feed(eng, clock, tag, 99.0, 50.0)
    aid = f"{tag}#level"
    assert state(eng, aid) is AlarmState.UNACK_RTN
    eng.ack([aid], "paul")
    assert state(eng, aid) is AlarmState.NORMAL


def test_on_and_off_delays_need_the_tick(reg) -> None:
    """A condition shorter than the on-delay raises nothing; the off-delay holds the alarm."""
    clock = Clock()
    rule = {**LEVEL, "on_delay_s": 30, "off_delay_s": 20}
    eng = make_engine(reg, [rule], clock)
    tag = first(reg, "reservoir").tag("level_pct")
    aid = f"{tag}#level"
    feed(eng, clock, tag, 15.0)
    clock.advance(25)
    eng.tick()
    feed(eng, clock, tag, 50.0)  # back before 30 s: no alarm at all
    clock.advance(60)
    eng.tick()
    assert state(eng, aid) is AlarmState.NORMAL and not eng.take_events()
    feed(eng, clock, tag, 15.0)
    clock.advance(29)
    eng.tick()
    assert state(eng, aid) is AlarmState.NORMAL
    clock.advance(1)
    eng.tick()
    assert state(eng, aid) is AlarmState.UNACK_ACTIVE
    feed(eng, clock, tag, 50.0)
    clock.advance(19)
    eng.tick()
    assert eng.alarms[aid].active
    clock.advance(1)
    eng.tick()
    assert state(eng, aid) is AlarmState.UNACK_RTN


def test_discrete_fault_and_count_above(reg) -> None:
    """fault == true and lamp_failures > 2 (with deadband) raise and clear on value changes."""
    clock = Clock()
    rules = [
        {"name": "fault", "class": "streetlight_cabinet", "signal": "fault", "type": "discrete",
         "equals": True, "severity": 2},
        {"name": "lamps", "class": "streetlight_cabinet", "signal": "lamp_failures",
         "type": "discrete", "above": 2, "deadband": 1},
    ]  # fmt: skip
    eng = make_engine(reg, rules, clock)
    lc = first(reg, "streetlight_cabinet")
    feed(eng, clock, lc.tag("fault"), False, True)
    assert state(eng, f"{lc.tag('fault')}#fault") is AlarmState.UNACK_ACTIVE
    assert eng.alarms[f"{lc.tag('fault')}#fault"].severity == 2
    lamps = f"{lc.tag('lamp_failures')}#lamps"
    feed(eng, clock, lc.tag("lamp_failures"), 2.0)
    assert not eng.alarms[lamps].active
    feed(eng, clock, lc.tag("lamp_failures"), 3.0, 2.0)  # 2 > 3 - 1: held by the deadband
    assert eng.alarms[lamps].active
    feed(eng, clock, lc.tag("lamp_failures"), 1.0)
    assert not eng.alarms[lamps].active
    # Bad quality carries no value: the alarm keeps its state.
    feed(eng, clock, lc.tag("fault"), False, quality=Quality.BAD)
    assert eng.alarms[f"{lc.tag('fault')}#fault"].active


def test_rate_of_change_and_deviation(reg) -> None:
    """A fast level drop over the window alarms; temperature far from setpoint alarms."""
    clock = Clock()
    rules = [
        {"name": "roc", "class": "reservoir", "signal": "level_pct", "type": "rate",
         "max_rate_per_min": 5, "window_s": 120, "direction": "down"},
        {"name": "dev", "class": "building", "signal": "temperature_c", "type": "deviation",
         "setpoint": "setpoint_c", "max_deviation": 3, "deadband": 0.5},
    ]  # fmt: skip
    eng = make_engine(reg, rules, clock)
    tag = first(reg, "reservoir").tag("level_pct")
    for level in (60.0, 59.0, 58.0):  # -1 %/min
        feed(eng, clock, tag, level)
        clock.advance(60)
    assert not eng.alarms[f"{tag}#roc"].active
    feed(eng, clock, tag, 45.0)  # -13 % in a minute: -7 %/min over the window
    assert eng.alarms[f"{tag}#roc"].active
    bt = first(reg, "building")
    feed(eng, clock, bt.tag("setpoint_c"), 20.0)
    feed(eng, clock, bt.tag("temperature_c"), 19.0, 16.5)
    dev = eng.alarms[f"{bt.tag('temperature_c')}#dev"]
    assert dev.active and dev.limit == 20.0 and dev.value == 16.5
    feed(eng, clock, bt.tag("temperature_c"), 17.2)  # 2.8 away: inside the deadband
    assert dev.active
    feed(eng, clock, bt.tag("setpoint_c"), 18.0)
    assert not dev.active


def test_stale_data_after_n_intervals(reg) -> None:
    """No new value for stale_factor × interval_s raises; a new value clears."""
    clock = Clock()
    rule = {"name": "stale", "class": "bus", "signal": "delay_s", "type": "stale",
            "stale_factor": 4}  # fmt: skip
    eng = make_engine(reg, [rule], clock)
    bus = first(reg, "bus")
    tag = bus.tag("delay_s")  # interval 30 s → stale after 120 s
    aid = f"{tag}#stale"
    feed(eng, clock, tag, 60.0)
    clock.advance(119)
    eng.tick()
    assert not eng.alarms[aid].active
    clock.advance(2)
    eng.tick()
    assert eng.alarms[aid].active and eng.alarms[aid].value == 121.0
    feed(eng, clock, tag, 61.0)
    assert state(eng, aid) is AlarmState.UNACK_RTN


def test_commloss_suppresses_the_assets_other_alarms(reg) -> None:
    """While an asset's communication alarm is active its other alarms are suppressed."""
    clock = Clock()
    rules = [
        {"name": "fault", "class": "reservoir", "signal": "fault", "type": "discrete",
         "equals": True},
        {"name": "stale", "class": "reservoir", "signal": "level_pct", "type": "stale"},
        {"name": "comm", "class": "reservoir", "type": "commloss", "severity": 2},
    ]  # fmt: skip
    eng = make_engine(reg, rules, clock)
    rs = first(reg, "reservoir")
    fault, stale, comm = (f"{rs.tag('fault')}#fault", f"{rs.tag('level_pct')}#stale",
                          f"{rs.commune}/{rs.id}#comm")  # fmt: skip
    feed(eng, clock, rs.tag("fault"), True)
    assert state(eng, fault) is AlarmState.UNACK_ACTIVE
    for t in rs.tags:
        feed(eng, clock, t.name, float("nan"), quality=Quality.COMM_LOSS)
    assert state(eng, comm) is AlarmState.UNACK_ACTIVE
    assert state(eng, fault) is AlarmState.SUPPRESSED
    clock.advance(3600)
    eng.tick()  # the level is stale now, but suppressed too
    assert eng.alarms[stale].active and state(eng, stale) is AlarmState.SUPPRESSED
    for t in rs.tags:
        feed(eng, clock, t.name, True if t.kind == "bool" else 50.0)
    assert state(eng, comm) is AlarmState.UNACK_RTN
    # Back from suppression while still active: annunciated again, to be acknowledged.
    assert state(eng, fault) is AlarmState.UNACK_ACTIVE
    # The level cleared while still suppressed: nothing for anyone to acknowledge.
    assert state(eng, stale) is AlarmState.NORMAL
    unsuppressed = [e for e in eng.take_events() if e.event == "unsuppress"]
    assert {e.alarm_id for e in unsuppressed if e.annunciate} == {fault}


def test_lighting_off_suppressed_in_daylight(reg) -> None:
    """A lighting-off alarm is suppressed by day at the cabinet's place, annunciated at night."""
    clock = Clock(T0)
    rule = {"name": "dark", "class": "streetlight_cabinet", "signal": "lit", "type": "discrete",
            "equals": False, "suppress_in_daylight": True}  # fmt: skip
    eng = make_engine(reg, [rule], clock)
    lc = first(reg, "streetlight_cabinet")
    aid = f"{lc.tag('lit')}#dark"
    feed(eng, clock, lc.tag("lit"), False)
    assert eng.alarms[aid].active and state(eng, aid) is AlarmState.SUPPRESSED
    clock.t = NIGHT
    eng.tick()
    assert state(eng, aid) is AlarmState.UNACK_ACTIVE
    clock.t = NIGHT + timedelta(hours=12)  # 11:00 Paris the next day
    eng.tick()
    assert state(eng, aid) is AlarmState.SUPPRESSED


def test_shelving_timed_one_shot_and_maximum(reg) -> None:
    """Timed shelving expires on the tick; one-shot ends at return to normal; max enforced."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock, max_shelve_min=60)
    tag = first(reg, "reservoir").tag("level_pct")
    aid = f"{tag}#level"
    feed(eng, clock, tag, 15.0)
    with pytest.raises(AlarmCommandError, match="minutes"):
        eng.shelve(aid, "luc", "too long", minutes=120)
    ev = eng.shelve(aid, "luc", "sensor being replaced", minutes=10)
    assert ev.state == "shelved" and ev.user == "luc" and ev.comment == "sensor being replaced"
    assert ev.shelved_until == clock() + timedelta(minutes=10)
    clock.advance(599)
    eng.tick()
    assert state(eng, aid) is AlarmState.SHELVED
    clock.advance(1)
    eng.tick()
    assert state(eng, aid) is AlarmState.UNACK_ACTIVE  # still low: annunciated again
    eng.shelve(aid, "luc", "until it refills")  # one-shot
    feed(eng, clock, tag, 30.0)
    assert state(eng, aid) is AlarmState.NORMAL
    last = eng.take_events()[-2:]
    assert [(e.event, e.user) for e in last] == [("clear", ""), ("unshelve", "system")]
    with pytest.raises(AlarmCommandError, match="one-shot"):
        eng.shelve(aid, "luc")


def test_out_of_service_hides_then_returns(reg) -> None:
    """Out of service: no annunciation; back in service while active: annunciated."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock)
    tag = first(reg, "reservoir").tag("level_pct")
    aid = f"{tag}#level"
    eng.set_out_of_service(aid, True, "ana", "maintenance")
    feed(eng, clock, tag, 15.0)
    assert state(eng, aid) is AlarmState.OUT_OF_SERVICE
    assert not [e for e in eng.take_events() if e.annunciate]
    eng.set_out_of_service(aid, False, "ana", "done")
    assert state(eng, aid) is AlarmState.UNACK_ACTIVE


def test_restore_takes_back_states(reg) -> None:
    """A new engine given the last journal rows has the same alarms active, shelved, acked."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock)
    rs = [a for a in reg.assets.values() if a.asset_class == "reservoir"][:2]
    a, b = (f"{r.tag('level_pct')}#level" for r in rs)
    feed(eng, clock, rs[0].tag("level_pct"), 5.0)
    feed(eng, clock, rs[1].tag("level_pct"), 15.0)
    eng.ack([a], "x")
    eng.shelve(b, "y", minutes=30)
    last = {}
    for e in eng.take_events():
        last[e.alarm_id] = {**e.as_row()}
    again = make_engine(reg, [LEVEL], clock)
    assert again.restore(last.values()) == 2
    assert state(again, a) is AlarmState.ACK_ACTIVE and again.alarms[a].level == "LOLO"
    assert state(again, b) is AlarmState.SHELVED
    feed(again, clock, rs[0].tag("level_pct"), 50.0)  # the evaluator knew it was LoLo
    assert state(again, a) is AlarmState.NORMAL
    clock.advance(1800)
    again.tick()
    assert state(again, b) is AlarmState.UNACK_ACTIVE


def test_text_on_a_numeric_tag_is_counted_not_raised(reg) -> None:
    """A value of the wrong type does not stop the batch."""
    clock = Clock()
    eng = make_engine(reg, [LEVEL], clock)
    rs = [a for a in reg.assets.values() if a.asset_class == "reservoir"][:2]
    eng.process([Sample(rs[0].tag("level_pct"), clock(), "oops"),
                 Sample(rs[1].tag("level_pct"), clock(), 5.0)])  # fmt: skip
    assert eng.alarms[f"{rs[1].tag('level_pct')}#level"].active
