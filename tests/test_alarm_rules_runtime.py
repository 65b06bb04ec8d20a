"""Limit rules changed at runtime: applied at once, kept for later starts, scoped and audited."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from pathlib import Path

import pytest

from beffroi.alerts.rule_changes import RuleChangeError
from beffroi.alerts.service import AlarmService
from beffroi.app.config import demo_config
from beffroi.control.audit import AuditLog
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.conftest import free_port
from tests.test_control_helpers import dash_request, post_callback
from tests.test_hmi import logged_in_opener

PW = "correct horse battery"
RULE = "reservoir-level"  # lo 20, lolo 10, deadband 2, on-delay 30 s in the demo config


def _level_tag(register) -> str:  # type: ignore[no-untyped-def]
    return next(a for a in register.assets.values() if a.asset_class == "reservoir").tag(
        "level_pct"
    )


async def test_new_limits_apply_at_once_and_after_a_restart(
    demo_config_fixture, small_register, tmp_path: Path, caplog
) -> None:
    """A supervisor raises the low limit: the current level alarms; a restart keeps it."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=None)
    now = [utcnow()]
    tag = _level_tag(small_register)
    level = Sample(tag, now[0], 35.0)
    async with contextlib.AsyncExitStack() as stack:
        service = AlarmService(cfg, small_register, clock=lambda: now[0])
        await service.start(stack)
        service.process([level])
        alarm = service.engine.alarms[f"{tag}#{RULE}"]
        assert not alarm.active  # 35 % is above the configured 20 %
        limits = {"lolo": 10.0, "lo": 40.0, "deadband": 2.0}
        old, new, n = service.set_limits(RULE, limits, "sup", "keep reserves", {tag: level})
        assert (old.lo, new.lo) == (20.0, 40.0) and n >= 1
        now[0] += timedelta(seconds=31)  # the rule's on-delay
        service.engine.tick()
        assert alarm.active and alarm.level == "LO"  # judged on the current value, not the next
        with pytest.raises(RuleChangeError, match="limits must increase"):
            service.set_limits(RULE, {"lolo": 50.0, "lo": 40.0}, "sup", "typo", {})
        with pytest.raises(RuleChangeError, match="only limits change here"):
            service.set_limits("reservoir-fault", {"hi": 1.0}, "sup", "no", {})
        with pytest.raises(RuleChangeError, match="no alarm rule named nope"):
            service.set_limits("nope", {"hi": 1.0}, "sup", "no", {})

    async with contextlib.AsyncExitStack() as stack:
        again = AlarmService(cfg, small_register, clock=lambda: now[0])
        await again.start(stack)
        rule, change = next((r, c) for r, c in again.limit_rules() if r.name == RULE)
        assert (rule.lo, rule.lolo, rule.deadband) == (40.0, 10.0, 2.0)
        assert change["user"] == "sup" and change["comment"] == "keep reserves"
        again.process([Sample(tag, now[0] + timedelta(seconds=1), 39.0)])
        assert again.engine.alarms[f"{tag}#{RULE}"].active  # still below the new limit

    # A new deployment changes the rule's limits in the file: the file wins from then on.
    rules = [r.model_copy(update={"lo": 25.0}) if r.name == RULE else r for r in cfg.alarms.rules]
    deployed = cfg.model_copy(update={"alarms": cfg.alarms.model_copy(update={"rules": rules})})
    async with contextlib.AsyncExitStack() as stack:
        third = AlarmService(deployed, small_register, clock=lambda: now[0])
        with caplog.at_level("WARNING"):
            await third.start(stack)
        rule = next(r for r, _ in third.limit_rules() if r.name == RULE)
        assert rule.lo == 25.0
        assert "the config file's limits changed since" in caplog.text


def _apply(limits: dict, comment: str = "été sec: garder des réserves") -> dict:
    return dash_request(
        ["rules-feedback.children", "rules-grid.rowData"],
        {"rules-apply.n_clicks": 1},
        {
            "rules-grid.selectedRows": [{"rule": RULE}],
            **{f"rules-{k}.value": limits.get(k) for k in ("lolo", "lo", "hi", "hihi", "deadband")},
            "rules-comment.value": comment,
        },
    )


async def test_rule_changes_in_the_hmi_are_scoped_and_audited(
    demo_config_fixture, small_register, tmp_path: Path
) -> None:
    """Only metropolis-wide supervisors change a class rule; each change is in the audit."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=None)
    users = UserStore(tmp_path / "u.duckdb", set(small_register.communes))
    users.add("sup", PW, "supervisor", ["*"])
    users.add("sup-talant", PW, "supervisor", ["talant"])
    users.add("op", PW, "operator", ["*"])
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    audit = AuditLog(tmp_path / "audit.duckdb")
    async with contextlib.AsyncExitStack() as stack:
        service = AlarmService(cfg, small_register)
        await service.start(stack)
        app = create_app(
            cfg, small_register, LiveValues(), hist, users=users, alarms=service, audit=audit
        )
        server = HmiServer(app, "127.0.0.1", free_port(), threads=2)
        server.start()
        stack.callback(server.stop)
        url = server.url
        for name in ("op", "sup-talant"):  # no right; a right but not everywhere
            status, _ = post_callback(logged_in_opener(url, name, PW), url, _apply({"lo": 30.0}))
            assert status == 403, name
        sup = logged_in_opener(url, "sup", PW)
        status, body = post_callback(sup, url, _apply({"lolo": 10.0, "lo": 30.0}))
        assert status == 200
        said = body["response"]["rules-feedback"]["children"]
        assert said.startswith(f"Seuils de {RULE} modifiés par sup")
        row = next(r for r in body["response"]["rules-grid"]["rowData"] if r["rule"] == RULE)
        assert row["lo"] == 30.0 and "par sup : été sec" in row["changed"]
        status, body = post_callback(sup, url, _apply({"lolo": 30.0, "lo": 10.0}))
        assert "Refusé : limits must increase" in body["response"]["rules-feedback"]["children"]
        status, body = post_callback(sup, url, _apply({"lo": 5.0}, comment=" "))
        assert body["response"]["rules-feedback"]["children"] == "Un motif est obligatoire."
    df = audit.frame()
    audit.close()
    users.close()
    hist.close()
    changes = df[df.action == "alarm.rule_change"]
    assert list(changes.outcome) == ["ok", "refused"] and set(changes.user) == {"sup"}
    assert '"lo":30.0' in changes.detail.iloc[0] and '"before"' in changes.detail.iloc[0]
