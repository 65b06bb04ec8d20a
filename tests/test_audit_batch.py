"""Audit records in batches: one chain with single records, all or nothing, and the group commit
that lighting and playbooks go through (no audit record, no command)."""

from __future__ import annotations

import asyncio
import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from beffroi.control.audit import GENESIS, AuditError, AuditLog, record_command
from beffroi.control.audit_queue import AuditQueue
from beffroi.control.model import SYSTEM
from beffroi.core.model import WriteStatus
from tests.test_audit import _cli, _config_file
from tests.test_control_helpers import Clock, running_scene, scene_config


def _lighting(n: int, first: int = 0) -> list[tuple]:
    """Return n lighting records (operate, result, …) as record_many takes them."""
    out = []
    for i in range(first, first + n):
        tag = f"dijon/LC-{i // 2:04d}/dimming_pct"
        action, outcome = ("operate", "sent") if i % 2 == 0 else ("result", "confirmed")
        out.append(("system", action, tag, "dijon", outcome, {"value": 50.0, "reason": "nuit"}))
    return out


def _plant(log: AuditLog, seq: int) -> None:
    """Put a row at `seq` behind the log's back, so that an append reaching it fails."""
    log.execute(
        "INSERT INTO audit VALUES (?, ?, 'x', 'x', 'x', 'x', 'x', '{}', 'x', 'x')",
        [seq, datetime(2026, 1, 1)],
    )


def test_a_batch_writes_a_chain_that_verifies(tmp_path: Path) -> None:
    """`beffroi audit verify` accepts a batch's chain, and still finds an edit inside it."""
    config = _config_file(tmp_path)
    path = tmp_path / "audit.duckdb"
    log = AuditLog(path)
    records = log.record_many(_lighting(1000))
    assert [r.seq for r in records] == list(range(1, 1001))
    assert len(log) == 1000 and log.head == records[-1].hash
    df = log.frame()
    assert df.prev_hash.iloc[0] == GENESIS and list(df.hash) == [r.hash for r in records]
    assert list(df.prev_hash.iloc[1:]) == list(df.hash.iloc[:-1])
    assert json.loads(df.detail.iloc[1]) == {"reason": "nuit", "value": 50.0}
    assert (df.action.iloc[0], df.outcome.iloc[1]) == ("operate", "confirmed")
    assert log.record_many([]) == [] and len(log) == 1000
    log.close()

    ok = _cli("audit", "verify", "-c", str(config))
    assert ok.exit_code == 0 and "OK, 1000 records chained" in ok.output, ok.output

    con = duckdb.connect(str(path))
    con.execute("UPDATE audit SET outcome = 'rejected' WHERE seq = 500").fetchall()
    con.close()
    edited = _cli("audit", "verify", "-c", str(config))
    assert edited.exit_code == 1 and "BROKEN at record 500" in edited.output


def test_batches_and_single_records_from_threads_keep_one_chain(tmp_path: Path) -> None:
    """Batches and single records from several threads make one chain; a batch stays together."""
    path = tmp_path / "audit.duckdb"
    log = AuditLog(path)
    log.record("claire", "login", address="127.0.0.1")
    batches: list[list[int]] = []

    def batch_writer(k: int) -> None:
        for j in range(5):
            batches.append([r.seq for r in log.record_many(_lighting(40, (k * 5 + j) * 40))])

    def single_writer(user: str) -> None:
        for _ in range(30):
            log.record(user, "select", target="dijon/TC-0001/plan", commune="dijon")

    threads = [threading.Thread(target=batch_writer, args=(k,)) for k in range(2)]
    threads += [threading.Thread(target=single_writer, args=(u,)) for u in ("marc", "lea")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(log) == 1 + 2 * 5 * 40 + 2 * 30
    for seqs in batches:  # nothing slipped between a batch's records
        assert seqs == list(range(seqs[0], seqs[0] + 40))
    result = log.verify()
    assert result.ok and result.count == len(log), result.problem
    log.close()
    reopened = AuditLog(path)  # the chain carries on after a batch, across a restart
    reopened.record_many(_lighting(2))
    reopened.record("claire", "logout")
    assert reopened.verify().ok and len(reopened) == 464
    reopened.close()


def test_a_failing_batch_records_nothing_and_the_chain_carries_on(tmp_path: Path) -> None:
    """A batch that fails on one of its records writes none of them, whether it goes in as bound
    values (a few records) or as a DataFrame (many); the next append follows the chain."""
    log = AuditLog(tmp_path / "audit.duckdb")
    log.record_many(_lighting(3))
    head = log.head
    for size in (5, 40):
        _plant(log, 3 + size - 1)  # the others would go in first, were it not one transaction
        with pytest.raises(AuditError, match="cannot record operate, result"):
            log.record_many(_lighting(size, 3))
        seqs = [r["seq"] for r in log.fetch("SELECT seq FROM audit ORDER BY seq")]
        assert seqs == [1, 2, 3, 3 + size - 1]
        assert log.head == head and len(log) == 3
        log.execute("DELETE FROM audit WHERE seq = ?", [3 + size - 1])
    _plant(log, 5)
    assert not record_command(log, "marc", "alarm.ack", {"a/1": "dijon", "a/2": "dijon",
                                                          "a/3": "dijon"})  # fmt: skip
    assert len(log.fetch("SELECT seq FROM audit WHERE action = 'alarm.ack'")) == 0
    log.execute("DELETE FROM audit WHERE seq = 5")
    log.record_many(_lighting(40, 3))
    assert record_command(log, "marc", "alarm.ack", {"a/1": "dijon", "a/2": "dijon"})
    result = log.verify()
    assert result.ok and result.count == 45 == len(log), result.problem
    log.close()


async def test_concurrent_records_share_a_transaction_or_all_fail(tmp_path: Path) -> None:
    """Records awaited together are committed together, in the order asked; a failing group
    tells every caller, writes none of them, and the next group follows the chain."""
    log = AuditLog(tmp_path / "audit.duckdb")
    queue = AuditQueue(log)
    records = await asyncio.gather(
        *(queue.record("system", "operate", target=f"t/{i}", i=i) for i in range(200))
    )
    assert [r.seq for r in records] == list(range(1, 201))
    assert [r.target for r in records] == [f"t/{i}" for i in range(200)]
    assert queue.batches == 1 and log.verify().ok

    _plant(log, 205)
    outcomes = await asyncio.gather(
        *(queue.record("system", "operate", target=f"u/{i}") for i in range(10)),
        return_exceptions=True,
    )
    assert all(isinstance(o, AuditError) for o in outcomes)
    assert log.fetch("SELECT count(*) AS n FROM audit")[0]["n"] == 201  # the 200, and the plant
    log.execute("DELETE FROM audit WHERE seq = 205")
    _plant(log, 201)
    assert not await queue.record_quietly("system", "result", target="u/0")
    log.execute("DELETE FROM audit WHERE seq = 201")
    assert await queue.record_quietly("system", "result", target="u/0")
    assert log.verify().ok and len(log) == 201
    log.close()


async def test_commands_sent_together_are_audited_together_or_not_sent(
    demo_config, tmp_path
) -> None:
    """The cabinets commanded at once (as lighting does) reach the equipment only once their
    operate records are committed, in one transaction; with the log failing none is sent."""
    clock = Clock(datetime(2025, 3, 3, 9, 0, tzinfo=UTC))
    async with running_scene(scene_config(demo_config, tmp_path, classes={}), clock) as scene:
        setpoints, audit = scene.control.setpoints, scene.control.audit
        cabinets = ["LC-T1", "LC-T2", "LC-T3", "LC-T4"]
        before = {c: scene.value(c, "dimming_pct") for c in cabinets}

        async def command_all(value: float):  # type: ignore[no-untyped-def]
            return await asyncio.gather(
                *(
                    setpoints.command(
                        SYSTEM, scene.tag(c, "dimming_pct"), value, "test", source="lighting"
                    )
                    for c in cabinets
                )
            )

        _plant(audit, len(audit) + 2)
        refused = await command_all(40.0)
        assert [r.status for r in refused] == [WriteStatus.REFUSED] * 4
        assert all(r.rule == "audit" for r in refused)
        assert {c: scene.value(c, "dimming_pct") for c in cabinets} == before
        audit.execute("DELETE FROM audit WHERE seq = ?", [len(audit) + 2])

        groups = setpoints.queue.batches
        results = await command_all(40.0)
        assert [r.status for r in results] == [WriteStatus.CONFIRMED] * 4
        assert {scene.value(c, "dimming_pct") for c in cabinets} == {40.0}
        operate = audit.frame(actions=["operate"])
        assert list(operate.outcome) == ["sent"] * 4 and operate.ts.nunique() == 1
        assert set(operate.seq) == set(range(operate.seq.min(), operate.seq.min() + 4))
        assert len(audit.frame(actions=["result"])) == 4
        assert setpoints.queue.batches - groups <= 3  # operates in one, results in one or two
        assert audit.verify().ok
