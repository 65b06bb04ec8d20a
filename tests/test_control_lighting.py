"""Adaptive lighting: the schedule's rules, and the scheduler commanding the simulated cabinets."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from beffroi.control.config import LightingProfile
from beffroi.control.config import LightingScheduleConfig as LightingConfig
from beffroi.control.lighting import Levels, LightingScheduler, Twilight, target_pct
from beffroi.core.model import utcnow
from beffroi.hmi.users import User
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from tests.conftest import eventually
from tests.test_control_helpers import Clock, P, running_scene, scene_config

PARIS = ZoneInfo("Europe/Paris")
DAY = datetime(2025, 1, 15, tzinfo=PARIS).date()


def _at(hour: int, minute: int = 0) -> datetime:
    return datetime(2025, 1, 15, hour, minute, tzinfo=PARIS)


def test_schedule_follows_dusk_dawn_night_window_offsets_and_presence() -> None:
    """Off by day, evening level from dusk, reduced in the night window, boosted by presence."""
    dawn, dusk = Twilight("Europe/Paris").of(*P, DAY)
    assert 7 <= dawn.astimezone(PARIS).hour <= 8 and 17 <= dusk.astimezone(PARIS).hour <= 18
    levels = Levels.merged(LightingConfig(), None)

    def level(t: datetime, boosted: bool = False, lv: Levels = levels) -> tuple[float, str]:
        return target_pct(lv, dawn, dusk, t, t.timetz().replace(tzinfo=None), boosted)

    assert level(_at(12)) == (0.0, "day")
    assert level(dusk + timedelta(minutes=1)) == (100.0, "dusk to night")
    assert level(_at(23, 30)) == (50.0, "night reduction")
    assert level(_at(3)) == (50.0, "night reduction")
    assert level(_at(3), boosted=True) == (100.0, "presence")
    assert level(_at(6)) == (100.0, "dusk to night")  # after the night window, before dawn
    assert level(dawn + timedelta(minutes=1)) == (0.0, "day")
    late = Levels.merged(LightingConfig(dusk_offset_min=20, dawn_offset_min=-15), None)
    assert level(dusk + timedelta(minutes=10), lv=late) == (0.0, "day")
    assert level(dusk + timedelta(minutes=25), lv=late)[0] == 100.0
    assert level(dawn - timedelta(minutes=5), lv=late) == (0.0, "day")
    centre = LightingProfile(assets=["LC-HDV"], night_pct=70)
    assert level(_at(1), lv=Levels.merged(LightingConfig(), centre)) == (70.0, "night reduction")


async def test_scheduler_dims_at_night_boosts_on_presence_and_leaves_held_cabinets(
    demo_config, tmp_path
) -> None:
    """At 23:30 the cabinets go to 50 %, the one near an occupied bollard to 100 % until the
    boost expires; a cabinet an operator set by hand is left alone; all audited as system."""
    clock = Clock(_at(23, 30).astimezone(UTC))
    async with running_scene(scene_config(demo_config, tmp_path, classes={}), clock) as scene:
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", True)
        setpoints = scene.control.setpoints
        operator = User("marc", "operator", ("*",))
        sel = scene.control.select(operator, scene.tag("LC-T3", "dimming_pct"))
        assert (await setpoints.operate(operator, sel.id, 80, "market tonight")).ok
        for cab in ("LC-T1", "LC-T2", "LC-T4"):  # a level no schedule gives
            assert (await scene.collector.write(scene.tag(cab, "dimming_pct"), 30.0)).ok
        await eventually(lambda: scene.live.get(scene.tag("LC-T4", "dimming_pct")).value == 30)
        lighting = LightingScheduler(scene.cfg, scene.register, scene.live, setpoints, clock=clock)
        assert lighting.sensors["LC-T1"] == [scene.tag("BO-T1", "presence")]
        assert lighting.sensors["LC-T2"] == []

        assert await lighting.tick() == 3  # LC-T3 is held by the operator
        levels = {a: scene.value(a, "dimming_pct") for a in ("LC-T1", "LC-T2", "LC-T3", "LC-T4")}
        assert levels == {"LC-T1": 100.0, "LC-T2": 50.0, "LC-T3": 80.0, "LC-T4": 50.0}
        assert await lighting.tick() == 0  # nothing differs any more

        await scene.occupy("BO-T1", False)
        clock.advance(60)
        assert await lighting.tick() == 0  # the boost holds for two minutes
        clock.advance(61)
        assert await lighting.tick() == 1
        assert scene.value("LC-T1", "dimming_pct") == 50.0

        df = scene.control.audit.frame(actions=["operate"])
        system = df[df.user == "system"]
        reasons = sorted({json.loads(d)["reason"] for d in system.detail})
        assert reasons == ["lighting schedule: night reduction", "lighting schedule: presence"]
        assert scene.tag("LC-T3", "dimming_pct") not in set(system.target)


async def test_lighting_runs_by_itself_as_a_scheduler_job(demo_config, tmp_path) -> None:
    """Started with a scheduler, the control service brings every cabinet to its level alone."""
    cfg = scene_config(demo_config, tmp_path, classes={})
    cfg = cfg.model_copy(
        update={
            "control": cfg.control.model_copy(
                update={"lighting": cfg.control.lighting.model_copy(update={"tick_s": 0.5})}
            )
        }
    )
    async with running_scene(cfg, with_jobs=True) as scene:
        lighting = scene.control.lighting
        assert lighting is not None and len(lighting.cabinets) == 4
        for cab in lighting.cabinets:  # a level no schedule gives
            assert (await scene.collector.write(cab.tag("dimming_pct"), 30.0)).ok

        def settled() -> bool:
            now = utcnow()
            return all(
                scene.value(c.id, "dimming_pct") == lighting.target(c, now)[0]
                for c in lighting.cabinets
            )

        await eventually(settled, within=20)
        await eventually(lambda: len(scene.control.audit.frame(actions=["result"])) >= 4)
        df = scene.control.audit.frame(actions=["result"])
        assert set(df.user) == {"system"} and len(df) >= 4
        assert set(df.outcome) == {"confirmed"}


async def test_the_schedule_follows_the_inventory_while_running(demo_config, tmp_path) -> None:
    """A cabinet retired is no longer commanded, one imported is scheduled, and one moved away
    from the bollard loses its presence boost, at the first tick after the change."""
    clock = Clock(_at(23, 30).astimezone(UTC))
    async with running_scene(scene_config(demo_config, tmp_path, classes={}), clock) as scene:
        scene.keep_bollards_free()
        await scene.occupy("BO-T1", True)
        setpoints = scene.control.setpoints
        lighting = LightingScheduler(scene.cfg, scene.register, scene.live, setpoints, clock=clock)
        assert {"LC-T1", "LC-T2"} <= {a.id for a in lighting.cabinets}
        assert lighting.sensors["LC-T1"] == [scene.tag("BO-T1", "presence")]

        for cab in ("LC-T1", "LC-T2", "LC-T4"):
            assert (await scene.collector.write(scene.tag(cab, "dimming_pct"), 30.0)).ok
        await eventually(lambda: scene.live.get(scene.tag("LC-T4", "dimming_pct")).value == 30)
        inventory = Inventory(scene.cfg, scene.register, None)
        t2 = scene.tag("LC-T2", "dimming_pct")
        inventory.retire("LC-T2", "marc", "cabinet replaced")
        t1 = AssetRecord.of(scene.register.assets["LC-T1"])
        moved = dataclasses.replace(t1, lat=t1.lat + 0.01)  # about 1.1 km north
        new = dataclasses.replace(t1, id="LC-T9", name="Armoire neuve")
        report = inventory.import_records([moved, new], "sig.csv", "marc", partial=True)
        assert report.errors == [] and report.added == 1 and report.updated == 1

        await lighting.tick()
        assert {a.id for a in lighting.cabinets} >= {"LC-T1", "LC-T9"}
        assert "LC-T2" not in {a.id for a in lighting.cabinets}
        assert lighting.sensors["LC-T1"] == []  # the bollard is 1 km away now
        levels = {a: scene.value(a, "dimming_pct") for a in ("LC-T1", "LC-T4")}
        assert levels == {"LC-T1": 50.0, "LC-T4": 50.0}
        assert scene.live.get(t2).value == 30.0  # retired: left as it was
