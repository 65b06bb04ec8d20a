"""The audit log's anchors: signed checkpoints of its head kept outside its file, so that deleting
the newest records (which leaves a shorter chain, intact) fails `beffroi audit verify`, and so
does an edited or forged checkpoint; the running control service writes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from beffroi.app.config import Config, load_config
from beffroi.control.audit import AuditLog
from beffroi.control.audit_anchor import AnchorBook, key_id, signature
from beffroi.control.config import audit_anchor_key_path, audit_path
from beffroi.core.errors import ConfigError
from tests.conftest import eventually
from tests.test_alarm_email import SmtpServer
from tests.test_audit import _cli, _config_file, _fill
from tests.test_control_helpers import running_scene, scene_config

AUDITORS = "audit-interne@dijon-metropole.fr"


def _config(tmp_path: Path, **control: object) -> tuple[Path, Config]:
    """Write the demo config (data in tmp_path) with these `[control]` keys; return it loaded."""
    path = _config_file(tmp_path)
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in control.items())
    text = path.read_text().replace(
        "[control]\nenabled = true\n", f"[control]\nenabled = true\n{keys}"
    )
    path.write_text(text)
    return path, load_config(path)


def _open(cfg: Config, read_only: bool = False) -> AuditLog:
    """Open the audit log as the gateway does: with the anchor places and key of the config."""
    return AuditLog(audit_path(cfg), read_only, anchors=AnchorBook.from_config(cfg))


def _lines(place: Path) -> list[dict]:
    return [json.loads(line) for line in place.read_text().splitlines() if line.strip()]


def _delete(path: Path, where: str) -> None:
    """Delete records with DuckDB itself, as someone with access to the file can."""
    con = duckdb.connect(str(path))
    con.execute(f"DELETE FROM audit WHERE {where}").fetchall()
    con.close()


def test_deleting_the_newest_records_fails_verify(tmp_path: Path) -> None:
    """The chain left is intact, but the anchor names a record the log no longer holds; records
    written in their place after it do not hide it either."""
    witness = tmp_path / "witness" / "audit-anchor.jsonl"  # another disk, in production
    witness.parent.mkdir()
    config, cfg = _config(tmp_path, audit_anchor=[str(witness)])
    log = _open(cfg)
    log.anchors.key(create=True)
    _fill(log)  # records 1–4
    assert log.anchor("job").seq == 4
    log.record("marc", "operate", target="dijon/BO-0001/raised", commune="dijon", value=True)
    log.record("marc", "result", target="dijon/BO-0001/raised", outcome="confirmed")
    log.close()  # anchors record 6 at close
    assert [(a["seq"], a["why"]) for a in _lines(witness)] == [(4, "job"), (6, "stop")]
    assert not (tmp_path / "audit-anchor.jsonl").exists()  # only where configured

    path = audit_path(cfg)
    _delete(path, "seq >= 5")
    plain = AuditLog(path, read_only=True)  # the chain alone finds nothing: 4 records, intact
    assert plain.verify().ok and len(plain) == 4
    plain.close()

    log = _open(cfg, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq == 5 and result.count == 4
    assert re.search(r"the anchor of \S+Z names record 6; the log ends at 4", result.problem)
    assert "records 5 to 6 deleted" in result.problem
    assert result.anchored_seq == 4  # records up to 4 are all there

    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 1, cli.output
    assert "BROKEN at record 5" in cli.output and "names record 6; the log ends at 4" in cli.output
    assert len(_lines(witness)) == 2  # a failed check anchors nothing

    # Records written after the cut (the chain carries on from record 4) pass record 6 again:
    # the anchor still names record 6 with the hash it had.
    log = AuditLog(path)
    for _ in range(3):
        log.record("claire", "login", address="127.0.0.1")
    log.close()
    log = _open(cfg, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq == 5
    assert "names record 6 with hash" in result.problem
    assert "records after 4 were replaced" in result.problem

    everything = _lines(witness)
    _delete(path, "seq >= 2")  # and a cut below every anchor
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 1 and "the log ends at 1" in cli.output
    assert _lines(witness) == everything


def test_an_intact_log_with_anchors_verifies_and_verify_anchors_its_head(tmp_path: Path) -> None:
    """Anchors that all match pass; records after the newest one are named, and a check that
    passes anchors them (its own checkpoint); anchors carry on across restarts."""
    config, cfg = _config(tmp_path)  # the default place: audit-anchor.jsonl in the data folder
    place = tmp_path / "audit-anchor.jsonl"
    log = _open(cfg)
    assert log.verify().note == ""  # empty: nothing to anchor, nothing missing
    log.anchors.key(create=True)
    assert audit_anchor_key_path(cfg).stat().st_mode & 0o777 == 0o600
    _fill(log)
    log.anchor("job")
    assert log.anchor("job") is None  # nothing new since
    log.record("claire", "logout")
    result = log.verify(anchor=False)
    assert result.ok and result.count == 5 and result.anchored_seq == 4
    assert result.anchored_at and "record 5 is newer than the newest anchor" in result.note
    log.close()
    assert [(a["seq"], a["why"]) for a in _lines(place)] == [(4, "job"), (5, "stop")]

    log = _open(cfg)  # the chain and its anchors carry on
    log.record("lea", "login", address="127.0.0.1")
    log.close()
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 0, cli.output
    assert "OK, 6 records chained" in cli.output and "anchored up to record 6" in cli.output
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 0 and "note" not in cli.output, cli.output
    assert [a["seq"] for a in _lines(place)] == [4, 5, 6]  # nothing new to anchor twice

    log = AuditLog(audit_path(cfg))  # a record written by something that does not anchor
    log.record("lea", "logout")
    log.close()
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 0 and "record 7 anchored now" in cli.output, cli.output
    assert _lines(place)[-1]["seq"] == 7 and _lines(place)[-1]["why"] == "verify"


def test_a_place_that_fails_is_reported_and_the_others_still_anchor(tmp_path: Path) -> None:
    """An anchor goes to every place that takes it; a place whose folder is missing (a disk not
    mounted) is an error in the status, never a folder made on the wrong disk."""
    unmounted = tmp_path / "mnt" / "witness" / "audit-anchor.jsonl"
    _, cfg = _config(tmp_path, audit_anchor=["audit-anchor.jsonl", str(unmounted)])
    log = _open(cfg)
    log.anchors.key(create=True)
    _fill(log)
    assert log.anchor("job").seq == 4
    assert "mnt/witness/audit-anchor.jsonl: No such file or directory" in log.anchors.error
    assert log.anchors.status()["seq"] == 4 and not unmounted.parent.exists()
    assert [a["seq"] for a in _lines(tmp_path / "audit-anchor.jsonl")] == [4]
    result = log.verify(anchor=False)
    assert result.ok and result.anchored_seq == 4 and f"no anchor file {unmounted}" in result.note
    log.close()


def test_a_log_never_anchored_verifies_with_a_warning(tmp_path: Path) -> None:
    """A log from before anchors (or whose anchors are gone) passes, saying its end is unchecked;
    the command line makes no key of its own to anchor it."""
    config, cfg = _config(tmp_path)
    log = AuditLog(audit_path(cfg))
    _fill(log)
    log.close()
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 0 and "OK, 4 records chained" in cli.output
    assert "no anchor in" in cli.output and "end is not checked" in cli.output
    assert "not anchored now: no anchor key" in cli.output
    assert not audit_anchor_key_path(cfg).exists()


def test_an_edited_or_forged_anchor_is_reported(tmp_path: Path) -> None:
    """An anchor whose signature does not verify fails the check, saying whether it names
    another key; a torn line (no JSON) is skipped with a note."""
    config, cfg = _config(tmp_path)
    place = tmp_path / "audit-anchor.jsonl"
    log = _open(cfg)
    key = log.anchors.key(create=True)
    _fill(log)
    log.close()
    good = place.read_text()

    # Moving the anchor down to record 2, so that deleting 3 and 4 would pass.
    edited = {**json.loads(good), "seq": 2}
    place.write_text(json.dumps(edited) + "\n")
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 1, cli.output
    assert "ANCHOR FAILED" in cli.output and "(record 2," in cli.output
    assert "signature that does not verify (edited or forged)" in cli.output

    # An anchor naming a record that never was, signed with a key of the forger's own.
    other = b"not the gateway's key, long enough"
    forged = {"v": 1, "seq": 99, "hash": "f" * 64, "time": "2025-01-01T00:00:00Z",
              "why": "job", "kid": key_id(other)}  # fmt: skip
    forged["sig"] = signature(forged, other)
    place.write_text(good + json.dumps(forged) + "\n" + '{"v": 1, "seq": 5, "ha')
    log = _open(cfg, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq is None and result.count == 4
    assert f"it names key {key_id(other)}, this key is {key_id(key)}" in result.problem
    assert "names record 99" not in result.problem  # it is not taken for an anchor
    assert result.anchored_seq == 4 and "skipped lines that are no anchor" in result.note

    place.write_text(good + '{"v": 1, "seq": 5, "ha')  # torn: skipped, the rest holds
    log = _open(cfg)
    assert log.verify(anchor=False).ok
    log.record("marc", "logout")
    log.close()  # the next anchor starts on a line of its own
    log = _open(cfg, read_only=True)
    result = log.verify()
    log.close()
    assert result.ok and result.anchored_seq == 5, result


def test_a_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With audit_anchor_key_env, no key file is made; without the variable nothing is anchored
    or checked; an anchor file that is the audit file is a config error."""
    config, cfg = _config(tmp_path, audit_anchor_key_env="AUDIT_ANCHOR_KEY")
    monkeypatch.delenv("AUDIT_ANCHOR_KEY", raising=False)
    book = AnchorBook.from_config(cfg)
    with pytest.raises(Exception, match=r"\$AUDIT_ANCHOR_KEY is not set"):
        book.key(create=True)
    monkeypatch.setenv("AUDIT_ANCHOR_KEY", "short")
    with pytest.raises(Exception, match="too short"):
        book.key(create=True)
    monkeypatch.setenv("AUDIT_ANCHOR_KEY", "a key the gateway's host does not keep")
    log = _open(cfg)
    log.anchors.key(create=True)
    _fill(log)
    log.close()
    assert not audit_anchor_key_path(cfg).exists()
    env = {"AUDIT_ANCHOR_KEY": "a key the gateway's host does not keep"}
    assert _cli("audit", "verify", "-c", str(config), env=env).exit_code == 0

    monkeypatch.delenv("AUDIT_ANCHOR_KEY")
    cli = _cli("audit", "verify", "-c", str(config))
    assert cli.exit_code == 1, cli.output
    assert "signatures could not be checked: $AUDIT_ANCHOR_KEY is not set" in cli.output

    text = config.read_text().replace(
        "[control]\n", f'[control]\naudit_anchor = "{audit_path(cfg)}"\n', 1
    )
    config.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert "control.audit_anchor[0]: must be another file than the audit log" in str(err.value)


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


async def test_the_control_service_anchors_on_its_job_and_at_stop(
    demo_config, tmp_path, smtp
) -> None:
    """The running service anchors the head when records came, e-mails it to the auditors, and
    anchors the last record (control.stop) when it stops; the log then verifies anchored to its
    end, and deleting that last record fails the check."""
    cfg = scene_config(
        demo_config,
        tmp_path,
        smtp_port=smtp.port,
        audit_anchor_every_s=1.0,
        audit_anchor_email=[AUDITORS],
        # No lighting commands: the test counts the records.
        lighting=demo_config.control.lighting.model_copy(update={"enabled": False}),
    )
    place = tmp_path / "audit-anchor.jsonl"
    async with running_scene(cfg, with_jobs=True) as scene:
        audit = scene.control.audit
        assert audit is not None and audit_anchor_key_path(cfg).exists()
        started = len(audit)  # control.start
        await eventually(lambda: place.exists() and _lines(place)[-1]["seq"] == started)
        assert _lines(place)[-1]["why"] == "job"
        await eventually(lambda: len(smtp.received) == 1)
        mail = smtp.received[0]
        assert mail.rcpt_tos == [AUDITORS]
        assert mail.message["Subject"] == f"Beffroi — audit log checkpoint: record {started}"
        assert audit.head in mail.text and _lines(place)[-1]["sig"] in mail.text

        audit.record("marc", "login", address="127.0.0.1")
        await eventually(lambda: _lines(place)[-1]["seq"] == started + 1)
        assert scene.control.status()["audit_anchor"]["seq"] == started + 1
        assert len(smtp.received) == 1  # at most one e-mail a day
    last = _lines(place)[-1]
    assert last["why"] == "stop" and last["seq"] == started + 2  # control.stop

    log = _open(cfg, read_only=True)
    result = log.verify(anchor=False)
    log.close()
    assert result.ok and result.count == result.anchored_seq == started + 2, result

    _delete(audit_path(cfg), f"seq = {started + 2}")
    log = _open(cfg, read_only=True)
    result = log.verify()
    log.close()
    assert not result.ok and result.broken_seq == started + 2
    assert f"names record {started + 2}; the log ends at {started + 1}" in result.problem
