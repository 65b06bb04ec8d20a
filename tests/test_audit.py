"""The audit log: a SHA-256 chain that `beffroi audit verify` checks, an edit or a deletion found
where it happened, CSV export, and the events hooked in (logins, alarm commands, users)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import duckdb
import pytest

from beffroi.alerts.service import AlarmService
from beffroi.api.gateway_file import gateway_file_path, new_token, write_gateway_file
from beffroi.app.config import demo_config, load_config
from beffroi.control.audit import GENESIS, AuditLog
from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.conftest import ROOT, eventually, free_port
from tests.test_control_helpers import dash_request, post_callback

PW = "correct horse battery"


def _config_file(tmp_path: Path) -> Path:
    """Write the demo config with its data (historian, users, audit) in tmp_path."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "h.duckdb"}"')
    text = text.replace("port = 8050", f'port = 8050\nusers_db = "{tmp_path / "users.duckdb"}"')
    out = tmp_path / "config.toml"
    out.write_text(text)
    return out


def _cli(*args: str, env: dict | None = None):  # type: ignore[no-untyped-def]
    """Run the command line in this process (quicker than a subprocess, same code)."""
    from typer.testing import CliRunner

    from beffroi.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def _beffroi(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beffroi", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def _fill(log: AuditLog) -> None:
    log.record("marc", "select", target="dijon/TC-0001/plan", commune="dijon", current=2.0)
    log.record("marc", "operate", target="dijon/TC-0001/plan", commune="dijon", outcome="sent",
               value=5.0, reason="déviation rue de la Liberté")  # fmt: skip
    log.record("marc", "result", target="dijon/TC-0001/plan", commune="dijon",
               outcome="confirmed", value=5.0)  # fmt: skip
    log.record("claire", "login", address="127.0.0.1", role="supervisor")


def test_chain_verifies_and_an_edit_or_a_deletion_is_found(tmp_path: Path) -> None:
    """`beffroi audit verify` exits 0 on the intact chain and 1 naming the first broken record."""
    config = _config_file(tmp_path)
    path = tmp_path / "audit.duckdb"  # beside the historian: the default
    log = AuditLog(path)
    _fill(log)
    assert len(log) == 4 and log.verify().ok and log.verify().count == 4
    first = log.frame().iloc[0]
    assert first.prev_hash == GENESIS
    head = log.head
    log.close()
    reopened = AuditLog(path)  # the chain carries on across restarts
    assert reopened.head == head
    reopened.record("claire", "logout")
    assert reopened.verify().ok and len(reopened) == 5
    reopened.close()

    ok = _beffroi("audit", "verify", "-c", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "OK, 5 records chained" in ok.stdout

    exported = _cli("audit", "export", "-c", str(config), "--from", "-1h", "--to", "now",
                    "--out", str(tmp_path / "audit.csv"))  # fmt: skip
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO((tmp_path / "audit.csv").read_text())))
    assert [r["action"] for r in rows] == ["select", "operate", "result", "login", "logout"]
    assert rows[1]["time"].endswith(("+01:00", "+02:00")) and rows[1]["utc"].endswith("Z")
    assert "déviation rue de la Liberté" in rows[1]["detail"]

    # Someone with access to the file changes the reason of record 2.
    con = duckdb.connect(str(path))
    con.execute(
        "UPDATE audit SET detail = replace(detail, 'Liberté', 'Paix') WHERE seq = 2"
    ).fetchall()
    con.close()
    edited = _beffroi("audit", "verify", "-c", str(config))
    assert edited.returncode == 1
    assert "BROKEN at record 2" in edited.stderr and "altered" in edited.stderr

    # Recomputing that record's hash does not help: the next record no longer follows it.
    con = duckdb.connect(str(path))
    row = con.execute(
        "SELECT seq, ts, user_name, action, target, commune, outcome, detail FROM audit "
        "WHERE seq = 2"
    ).fetchone()
    from beffroi.control.audit import record_hash

    prev = con.execute("SELECT hash FROM audit WHERE seq = 1").fetchone()[0]
    con.execute("UPDATE audit SET hash = ? WHERE seq = 2", [record_hash(row, prev)]).fetchall()
    con.execute("DELETE FROM audit WHERE seq = 4").fetchall()
    con.close()
    log = AuditLog(path, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq == 3 and "does not follow" in result.problem


def test_a_deleted_record_is_found(tmp_path: Path) -> None:
    """Deleting a record in the middle leaves a hole the check names."""
    path = tmp_path / "audit.duckdb"
    log = AuditLog(path)
    _fill(log)
    log.close()
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM audit WHERE seq = 3").fetchall()
    con.close()
    log = AuditLog(path, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq == 3 and "missing" in result.problem


def test_user_changes_from_the_cli_are_audited(tmp_path: Path) -> None:
    """`beffroi user add|passwd|remove` leave records naming who ran them."""
    config = _config_file(tmp_path)
    env = {"PW": "a-long-enough-password"}
    for args in (
        ("add", "marie", "--role", "operator", "--commune", "talant", "--password-env", "PW"),
        ("passwd", "marie", "--password-env", "PW"),
        ("remove", "marie"),
    ):
        done = _cli("user", *args, "-c", str(config), env=env)
        assert done.exit_code == 0, done.output
    log = AuditLog(tmp_path / "audit.duckdb", read_only=True)
    df = log.frame()
    log.close()
    assert list(df.action) == ["user.add", "user.passwd", "user.remove"]
    assert set(df.target) == {"marie"} and df.user.str.endswith("@cli").all()
    assert '"role":"operator"' in df.detail.iloc[0] and "a-long-enough" not in "".join(df.detail)


def test_a_user_change_the_audit_log_cannot_take_is_not_made(tmp_path: Path) -> None:
    """With the audit file held by another process, `beffroi user add` changes nothing."""
    config = _config_file(tmp_path)
    held = AuditLog(tmp_path / "audit.duckdb")  # as a running gateway holds it
    try:
        args = ("add", "marie", "--role", "operator", "--commune", "talant", "--password-env", "PW")
        done = _beffroi("user", *args, "-c", str(config), env={"PW": "a-long-enough-password"})
    finally:
        held.close()
    assert done.returncode == 1
    assert "audit.duckdb is in use by a running gateway; stop it first" in done.stderr
    assert "Traceback" not in done.stderr
    listed = _cli("user", "list", "-c", str(config))
    assert listed.exit_code == 0 and "marie" not in listed.output


def _login(base: str, name: str, password: str = PW):  # type: ignore[no-untyped-def]
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    with contextlib.suppress(urllib.error.HTTPError):
        opener.open(base + "login", data=form, timeout=10).read()
    return opener


def _ack(alarm_id: str, commune: str, shelve: bool = False) -> dict:
    return dash_request(
        ["alarms-feedback.children", "alarms-comment.value"],
        {"alarms-ack.n_clicks": 0 if shelve else 1, "alarms-shelve.n_clicks": 1 if shelve else 0},
        {
            "alarms-active.selectedRows": [{"alarm_id": alarm_id, "commune": commune}],
            "alarms-comment.value": "lampe changée",
        },
    ) | {"changedPropIds": ["alarms-shelve.n_clicks" if shelve else "alarms-ack.n_clicks"]}


async def test_logins_alarm_commands_and_the_audit_page(
    tmp_path: Path, demo_config_fixture, small_register
) -> None:
    """Logins (good, bad), logouts and alarm ack/shelve are audited; auditors browse, verify
    and export the log in the HMI; others get 403."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=None)
    service = AlarmService(cfg, small_register)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb", set(small_register.communes))
    users.add("sup", PW, "supervisor", ["*"])
    users.add("aud", PW, "auditor", ["*"])
    audit = AuditLog(tmp_path / "audit.duckdb")
    cabinet = next(a for a in small_register.assets.values()
                   if a.asset_class == "streetlight_cabinet")  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        await service.start(stack)
        app = create_app(cfg, small_register, LiveValues(), hist, users=users, alarms=service,
                         audit=audit)  # fmt: skip
        server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
        server.start()
        stack.callback(server.stop)
        service.process([Sample(cabinet.tag("fault"), utcnow(), True)])
        alarm_id = f"{cabinet.tag('fault')}#cabinet-fault"
        await eventually(lambda: len(service.alarms()) == 1)

        _login(server.url, "sup", "wrong password!")
        sup = _login(server.url, "sup")
        assert post_callback(sup, server.url, _ack(alarm_id, cabinet.commune))[0] == 200
        assert post_callback(sup, server.url, _ack(alarm_id, cabinet.commune, True))[0] == 200
        status, body = post_callback(sup, server.url, _ack(alarm_id, cabinet.commune))
        said = body["response"]["alarms-feedback"]["children"]
        assert status == 200 and said.startswith("0 alarme acquittée par sup. Refusé : ")
        assert "nothing to acknowledge" in said  # shelving acknowledged it
        sup.open(server.url + "logout", timeout=10).read()

        df = audit.frame()
        assert list(df.action) == ["login.failed", "login", "alarm.ack", "alarm.shelve",
                                   "alarm.ack", "logout"]  # fmt: skip
        assert list(df.outcome) == ["refused", "ok", "ok", "ok", "refused", "ok"]
        assert set(df.user) == {"sup"} and list(df.target)[2:5] == [alarm_id] * 3
        assert set(df.commune[2:5]) == {cabinet.commune}
        detail = [json.loads(d) for d in df.detail[2:5]]
        assert detail[0] == {"comment": "lampe changée", "source": "hmi"}  # as from the API
        assert detail[1] == {"comment": "lampe changée", "minutes": 60, "source": "hmi"}
        assert detail[2]["source"] == "hmi" and "nothing to acknowledge" in detail[2]["reason"]

        rows = dash_request(
            ["audit-grid.rowData"],
            {"audit-range.value": "24h", "audit-user.value": None,
             "audit-action.value": None, "audit-refresh.n_clicks": 0},
        )  # fmt: skip
        sup = _login(server.url, "sup")
        assert post_callback(sup, server.url, rows)[0] == 403  # supervisors do not audit
        aud = _login(server.url, "aud")
        status, body = post_callback(aud, server.url, rows)
        assert status == 200
        shown = body["response"]["audit-grid"]["rowData"]
        assert [r["action"] for r in shown][:3] == ["login", "login", "logout"]  # newest first
        sources = [(r["action"], r["outcome"], r["source"]) for r in shown[3:6]]
        # Outcomes read in the auditor's language; the action codes stay as recorded.
        assert sources == [("alarm.ack", "refusé", "hmi"), ("alarm.shelve", "fait", "hmi"),
                           ("alarm.ack", "fait", "hmi")]  # fmt: skip
        verify = dash_request(["audit-feedback.children"], {"audit-verify.n_clicks": 1})
        status, body = post_callback(aud, server.url, verify)
        assert body["response"]["audit-feedback"]["children"].startswith(
            "Chaîne intacte : 8 enregistrements"
        )
        export = dash_request(
            ["audit-download.data"],
            {"audit-export.n_clicks": 1},
            {"audit-range.value": "24h", "audit-user.value": "sup", "audit-action.value": None},
        )
        status, body = post_callback(aud, server.url, export)
        content = body["response"]["audit-download"]["data"]["content"]
        assert content.splitlines()[0].startswith("seq,time,utc,user,action")
        assert sum(1 for line in content.splitlines()[1:] if ",sup," in line) == 7
    assert audit.verify().ok
    audit.close()
    users.close()
    hist.close()


def _alarm_commands(config: Path, alarm_id: str, unknown: str) -> list:
    """Run `beffroi alarms` ack, ack again, shelve an unknown alarm, out-of-service."""
    c = ["-c", str(config)]
    return [
        _cli("alarms", "ack", alarm_id, *c, "--user", "léa", "--comment", "lampe changée"),
        _cli("alarms", "ack", alarm_id, *c, "--user", "léa", "--comment", "encore"),
        _cli("alarms", "shelve", unknown, *c, "--minutes", "30", "--user", "paul"),
        _cli("alarms", "out-of-service", alarm_id, *c, "--user", "léa", "--comment", "travaux"),
    ]


def _check_alarm_records(  # type: ignore[no-untyped-def]
    df, results: list, alarm_id: str, unknown: str, commune: str, source: str
) -> None:
    """Check each command left its record: user, alarm, comment, source; refused ones with why."""
    assert [r.exit_code for r in results] == [0, 1, 1, 0], [r.output for r in results]
    assert list(df.action) == ["alarm.ack", "alarm.ack", "alarm.shelve", "alarm.out_of_service"]
    assert list(df.outcome) == ["ok", "refused", "refused", "ok"]
    assert list(df.user) == ["léa", "léa", "paul", "léa"]
    assert list(df.target) == [alarm_id, alarm_id, unknown, alarm_id]
    assert list(df.commune) == [commune, commune, "", commune]
    detail = [json.loads(d) for d in df.detail]
    assert detail[0] == {"comment": "lampe changée", "source": source}
    assert detail[1]["comment"] == "encore" and "nothing to acknowledge" in detail[1]["reason"]
    assert "nothing to acknowledge" in results[1].stderr
    assert detail[2]["minutes"] == 30 and detail[2]["reason"] in results[2].stderr
    assert detail[3] == {"comment": "travaux", "source": source}


async def test_alarm_commands_through_the_gateway_api_are_audited(
    tmp_path: Path, demo_config_fixture, small_register
) -> None:
    """`beffroi alarms` through the gateway's API leaves records naming the user, the alarm and
    the comment, refused commands included (marked refused, with why); the chain verifies."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=None, opcua_port=None)
    config = _config_file(tmp_path)  # same data folder: the CLI finds gateway.json there
    service = AlarmService(cfg, small_register)
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb", set(small_register.communes))
    audit = AuditLog(tmp_path / "audit.duckdb")
    cabinet = next(a for a in small_register.assets.values()
                   if a.asset_class == "streetlight_cabinet")  # fmt: skip
    alarm_id, unknown = f"{cabinet.tag('fault')}#cabinet-fault", f"{cabinet.tag('fault')}#nope"
    async with contextlib.AsyncExitStack() as stack:
        await service.start(stack)
        token = new_token()
        app = create_app(cfg, small_register, LiveValues(), hist, api_token=token, users=users,
                         alarms=service, audit=audit)  # fmt: skip
        server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
        server.start()
        stack.callback(server.stop)
        write_gateway_file(gateway_file_path(cfg), server.url, token)
        service.process([Sample(cabinet.tag("fault"), utcnow(), True)])
        await eventually(lambda: len(service.alarms()) == 1)

        results = _alarm_commands(config, alarm_id, unknown)
        assert "through the running gateway" in results[0].stderr
        assert service.alarms()[0]["state"] == "out_of_service"
        _check_alarm_records(audit.frame(), results, alarm_id, unknown, cabinet.commune, "api")
        assert "no such alarm" in results[2].stderr
        assert audit.verify().ok and audit.verify().count == 4

        # An audit log that cannot write: the command is done, and the operator is told so.
        audit.close()
        back = _cli("alarms", "in-service", alarm_id, "-c", str(config), "--user", "léa")
        assert back.exit_code == 1 and "the gateway failed" in back.stderr
        assert "audit log cannot record it" in back.stderr
        states = {r["alarm_id"]: r["state"] for r in service.alarms(include_normal=True)}
        assert states[alarm_id] == "unack_active"  # back in service, active: annunciated again
    users.close()
    hist.close()


async def test_alarm_commands_without_a_gateway_are_audited(tmp_path: Path, small_register) -> None:
    """With no gateway running, `beffroi alarms` on the journal file leaves the records the API
    would, marked `source: cli`, refused commands included; the chain verifies."""
    config = _config_file(tmp_path)
    cfg = load_config(config)
    cabinet = next(a for a in small_register.assets.values()
                   if a.asset_class == "streetlight_cabinet")  # fmt: skip
    alarm_id, unknown = f"{cabinet.tag('fault')}#cabinet-fault", f"{cabinet.tag('fault')}#nope"
    async with contextlib.AsyncExitStack() as stack:  # a gateway that ran, and stopped
        service = AlarmService(cfg, small_register)
        await service.start(stack)
        service.process([Sample(cabinet.tag("fault"), utcnow(), True)])

    results = _alarm_commands(config, alarm_id, unknown)
    assert "through the running gateway" not in results[0].stderr
    listed = _cli("alarms", "list", "-c", str(config), "--format", "json")
    assert [(r["alarm_id"], r["state"]) for r in json.loads(listed.stdout)] == [
        (alarm_id, "out_of_service")
    ]
    log = AuditLog(tmp_path / "audit.duckdb", read_only=True)
    df, result = log.frame(), log.verify()
    log.close()
    _check_alarm_records(df, results, alarm_id, unknown, cabinet.commune, "cli")
    assert "not in the journal" in results[2].stderr
    assert result.ok and result.count == 4


@pytest.mark.parametrize("action", ["verify", "export"])
def test_audit_cli_without_a_log_says_so(tmp_path: Path, action: str) -> None:
    """Before any gateway ran, the commands say there is no audit log yet (exit 1)."""
    done = _cli("audit", action, "-c", str(_config_file(tmp_path)))
    assert done.exit_code == 1 and "no audit log yet" in done.output


async def test_cli_goes_through_the_running_gateway(tmp_path: Path, demo_config_fixture) -> None:
    """While the gateway holds the audit file, `beffroi audit` asks its API; the gateway also
    serves the public feed and has audited its own start."""
    import asyncio
    import json

    from beffroi.app.runtime import Runtime
    from beffroi.core.register import build_register

    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg_file = _config_file(tmp_path)  # same data folder: the CLI finds gateway.json there
    runtime = Runtime(cfg, build_register(cfg, assets=60), simulator=True)
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        assert (
            runtime.control is not None
            and runtime.collector_for(next(iter(runtime.register.tags))) is runtime.collectors[0]
        )
        # Another process: DuckDB refuses it the file while the gateway holds it.
        done = await asyncio.to_thread(_beffroi, "audit", "verify", "-c", str(cfg_file))
        assert done.returncode == 0, done.stderr
        assert "through the running gateway" in done.stderr and "OK, " in done.stdout
        done = await asyncio.to_thread(_beffroi, "audit", "export", "-c", str(cfg_file))
        assert done.returncode == 0 and ",system,control.start," in done.stdout
        url = runtime.hmi_server.url + "public/parking.json"
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=10).read())
        parks = [a for a in runtime.register.assets.values() if a.asset_class == "car_park"]
        assert len(json.loads(body)["car_parks"]) == len(parks)
