"""The gateway's small stores on a real PostgreSQL (Debian's, a temporary cluster) and on DuckDB
files, through the same contract: what one gateway wrote, the other of a pair reads; two writers
keep one journal, one audit chain and one numbering of the outboxes; a lost server is a clear
error, and the store carries on once it is back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import pandas as pd
import psycopg
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from beffroi.alerts.config import journal_path
from beffroi.alerts.journal import Journal
from beffroi.alerts.notifiers.outbox import Outbox
from beffroi.alerts.state import AlarmEvent, AlarmState
from beffroi.app.config import load_config
from beffroi.cli import app
from beffroi.control.audit import AuditLog
from beffroi.control.config import audit_path
from beffroi.control.mail import ControlOutbox
from beffroi.control.runs import RunStore
from beffroi.core.errors import MissingCredentials
from beffroi.core.model import Asset
from beffroi.hmi.users import UserStore
from beffroi.interventions.config import interventions_path
from beffroi.interventions.model import State
from beffroi.interventions.store import InterventionStore
from beffroi.inventory.config import store_path
from beffroi.inventory.store import InventoryStore
from beffroi.kpi.config import kpi_store_path
from beffroi.kpi.store import KpiStore
from beffroi.state import open_store
from beffroi.state.config import PgPlace, Place, StateConfig
from beffroi.state.postgres import StoreUnavailable
from tests.conftest import ROOT
from tests.servers_db import PostgresServer

T0 = datetime(2026, 3, 1, 9, 0)  # naive UTC, as stored
LOG = (
    "CREATE TABLE IF NOT EXISTS log (seq BIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, "
    "who VARCHAR NOT NULL, n INTEGER, x DOUBLE PRECISION, ok BOOLEAN)",
)


@pytest.fixture(params=["duckdb", "postgres"])
def where(request, tmp_path: Path) -> Place:
    """Where a store lives, for each back end: a file, or a schema in a fresh database."""
    if request.param == "duckdb":
        return tmp_path / "store.duckdb"
    return PgPlace(request.getfixturevalue("pg_url"), "test")


def _event(i: int, alarm: str, state: str = "unack_active", ts: datetime | None = None):
    return AlarmEvent(
        ts=ts or datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(seconds=i),
        alarm_id=alarm, rule="fault", kind="discrete", event="activate",
        state=AlarmState(state), tag=f"dijon/{alarm}/fault", asset=alarm, commune="dijon",
        domain="lighting", severity=3, level="", value=1.0, limit=None, user="", comment="",
        active=state != "normal", acked=False, shelved_until=None, oneshot=False,
        since=None, message=f"fault {i}",
    )  # fmt: skip


def test_the_contract_holds_on_both_back_ends(where: Place) -> None:
    """Views (DataFrame and Arrow), filters, rollback, dtypes: the same answers on either."""
    store = open_store(where, LOG, what="test log")
    rows = pd.DataFrame(
        {
            "seq": [1, 2, 3],
            "ts": [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)],
            "who": ["ana", "bob", "ana"],
            "n": [1, None, 3],
            "x": [0.5, 1.5, None],
            "ok": [True, False, True],
        }
    ).astype({"n": "Int64"})
    store.run("INSERT INTO log SELECT * FROM incoming", views={"incoming": rows})
    arrow = pa.table(
        {"seq": [4], "ts": pa.array([T0 + timedelta(hours=3)], pa.timestamp("us")),
         "who": ["cy%"], "n": pa.array([None], pa.int64()), "x": [2.0], "ok": [None]}
    )  # fmt: skip
    store.run("INSERT INTO log SELECT * FROM incoming", views={"incoming": arrow})
    df = store.events("log", "seq", "ts", T0 + timedelta(hours=1), None, {"who": ["bob", "cy%"]})
    assert list(df.seq) == [2, 4]
    assert str(df.ts.dtype).startswith("datetime64")
    assert store.one("SELECT count(*) FROM log WHERE who LIKE 'cy%'") == 1  # a literal %
    assert list(store.events("log", "seq", "ts", limit=2).seq) == [3, 4]
    with pytest.raises(store.errors), store.transaction():
        store.run("INSERT INTO log (seq, ts, who) VALUES (?, ?, ?)", [9, T0, "dan"])
        store.run("INSERT INTO log (seq, ts, who) VALUES (?, ?, ?)", [1, T0, "dup"])
    assert store.one("SELECT count(*) FROM log WHERE seq = 9") == 0  # rolled back, both
    sums = store.frame("SELECT who, sum(n) AS n, avg(x) AS x FROM log GROUP BY who ORDER BY who")
    assert sums.x.dtype == float and sums.n.iloc[0] == 4
    store.close()
    # Reopened: the schema's version is recorded once, not applied again.
    again = open_store(where, (*LOG, "ALTER TABLE log ADD COLUMN note VARCHAR"), what="test log")
    assert again.rows("SELECT version FROM schema_migrations ORDER BY version") == [(1,), (2,)]
    assert again.one("SELECT count(*) FROM log") == 4
    again.close()


def test_two_gateways_keep_one_journal_and_one_outbox_numbering(pg_url: str) -> None:
    """Two writers of a pair: every event once, numbered without gap; e-mails numbered apart."""
    a, b = (Journal(PgPlace(pg_url, "journal")) for _ in range(2))
    errors: list[BaseException] = []

    def write(journal: Journal, name: str) -> None:
        try:
            for i in range(40):
                journal.write([_event(i, f"{name}{i % 5}")])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(j, n)) for j, n in ((a, "A"), (b, "B"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    seqs = list(a.events().seq)
    assert seqs == list(range(1, 81)) and b.count() == 80
    assert {r["alarm_id"] for r in b.current()} == {f"{n}{i}" for n in "AB" for i in range(5)}
    outboxes = [Outbox(a), Outbox(b)]
    ids = []
    for i in range(6):
        msg = EmailMessage()
        msg["Subject"], msg["Message-ID"] = "fault", f"<{i}@beffroi>"
        msg.set_content("x")
        ids.append(outboxes[i % 2].put(msg, ["a@b.c"], "alarm", "team", ["A0"]))
    assert ids == [1, 2, 3, 4, 5, 6]
    assert outboxes[1].escalated("A0", datetime(2000, 1, 1, tzinfo=UTC)) is False
    a.close()
    b.close()


def test_two_writers_keep_one_audit_chain(pg_url: str) -> None:
    """Both nodes append at once: one chain, every record once, `verify` passes."""
    logs = [AuditLog(PgPlace(pg_url, "audit")) for _ in range(2)]

    def append(log: AuditLog, node: str) -> None:
        for i in range(60):
            if i % 3:
                log.record(f"op-{node}", "setpoint", target=f"t{i}", commune="dijon", value=i)
            else:
                log.record_many(
                    [(f"op-{node}", "batch", f"b{i}-{k}", "dijon", "ok", {}) for k in range(20)]
                )

    threads = [
        threading.Thread(target=append, args=(log, n)) for log, n in zip(logs, "ab", strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = logs[0].verify(anchor=False)
    assert result.ok, result.problem
    assert result.count == 2 * (40 + 20 * 20)
    users = set(logs[1].frame().user)
    assert users == {"op-a", "op-b"}
    for log in logs:
        log.close()


def test_a_session_opened_on_one_node_is_valid_on_the_other(pg_url: str) -> None:
    """Users and sessions are shared: a supervisor stays logged in across a failover."""
    node_a = UserStore(PgPlace(pg_url, "users"), {"dijon"})
    node_a.add("sylvie", "un mot de passe long", "supervisor", ["dijon"])
    token = node_a.open_session("sylvie", browser="b1")
    node_b = UserStore(PgPlace(pg_url, "users"), {"dijon"})
    session = node_b.session(token)
    assert session is not None and session.user.name == "sylvie"
    assert session.user.communes == ("dijon",)
    assert node_b.verify("sylvie", "un mot de passe long") is not None
    assert node_b.end_session(token, "logout") and node_a.session(token) is None
    node_a.close()
    node_b.close()


def test_kpi_and_inventory_stores_on_postgres(pg_url: str) -> None:
    """Cells replaced and summed, hour states upserted, changes logged; asset records kept."""
    kpi = KpiStore(PgPlace(pg_url, "kpi"))
    hour = datetime(2026, 3, 1, 9, tzinfo=UTC)
    cells = pd.DataFrame(
        {"component": ["energy", "energy"], "scope": ["dijon", "quetigny"],
         "hour": [hour.replace(tzinfo=None)] * 2, "value": [1.5, 2.5], "covered": [1.0, 1.0],
         "expected": [1.0, 1.0], "filled": [False, True]}
    )  # fmt: skip
    kpi.replace_cells(hour, hour + timedelta(hours=1), cells)
    kpi.replace_cells(hour, hour + timedelta(hours=1), cells)  # replaced, not added twice
    sums = kpi.sums(hour, hour + timedelta(hours=1)).set_index("scope")
    assert sums.loc["dijon", "value"] == 1.5 and bool(sums.loc["quetigny", "filled"])
    assert list(kpi.hourly(hour, hour + timedelta(hours=1), ["energy"]).value) == [1.5, 2.5]
    for final in (False, True):
        state = {"hour": [hour.replace(tzinfo=None)], "computed_at": [T0], "final": [final]}
        fingerprint = {"fp_n": [1.0], "fp_sum": [2.0], "fp_nan": [0], "fp_events": [0]}
        kpi.mark_hours(pd.DataFrame(state | fingerprint))
    states = kpi.hour_states(hour, hour + timedelta(hours=1))
    assert len(states) == 1 and bool(states.final.iloc[0])
    assert kpi.last_hour() == hour
    kpi.close()
    inventory = InventoryStore(PgPlace(pg_url, "inventory"))
    asset = Asset("EP-1", "streetlight_cabinet", "dijon", 47.32, 5.04, "lighting", source="file")
    assert inventory.save([asset]) == 1
    inventory.log([("ana", "file", "add", "EP-1", "dijon", {"why": "import"})])
    assert [r["id"] for r in inventory.records()] == ["EP-1"]
    assert list(inventory.changes().asset) == ["EP-1"]
    inventory.close()


def test_postgres_without_its_url_is_a_clear_error(monkeypatch) -> None:
    """`[state] backend = "postgres"` names the variable that is missing, not a traceback."""
    monkeypatch.delenv("BEFFROI_STATE_URL", raising=False)
    with pytest.raises(MissingCredentials, match="BEFFROI_STATE_URL"):
        StateConfig(backend="postgres").place(Path("x.duckdb"), "journal")


def test_a_lost_server_fails_clearly_and_the_store_reconnects(
    postgres: PostgresServer, pg_url: str
) -> None:
    """PostgreSQL down: a statement fails with the driver's error (nothing half done); back up,
    the same store carries on on a new connection, its data intact."""
    journal = Journal(PgPlace(pg_url, "journal"))
    journal.write([_event(1, "A1")])
    postgres.kill()
    try:
        with pytest.raises(psycopg.Error):
            journal.write([_event(2, "A1")])
        with pytest.raises(StoreUnavailable, match="postgresql schema journal"):
            journal.count()
    finally:
        postgres.start()
    journal.write([_event(3, "A2")])
    assert list(journal.events().seq) == [1, 2]
    journal.close()


def test_an_embedded_site_moves_to_postgres_without_loss(tmp_path: Path, pg_url: str) -> None:
    """`beffroi state migrate`: every row of every file, the audit chain verified at the same
    head, a user's password and session still good, ids numbered on after; a second run refuses
    to merge."""
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "h.duckdb"}"')
    text = text.replace("port = 8050", f'port = 8050\nusers_db = "{tmp_path / "users.duckdb"}"')
    config = tmp_path / "config.toml"
    config.write_text(text)
    cfg = load_config(config)
    journal = Journal(journal_path(cfg))
    journal.write([_event(i, f"A{i % 7}") for i in range(300)])
    audit = AuditLog(audit_path(cfg))
    for i in range(50):
        audit.record_many(
            [("ana", "operate", f"t{i}-{k}", "dijon", "sent", {"v": k}) for k in range(20)]
        )
    head = audit.head
    ControlOutbox(audit)
    RunStore(audit)
    audit.execute(
        "INSERT INTO control_outbox VALUES (1, '<1@b>', ?, 'run-1', 'a@b.c', 's', 'm', 'sent', 1, "
        "'', NULL)",
        [T0],
    )
    users = UserStore(cfg.resolve(cfg.hmi.users_db), {"dijon"})
    users.add("sylvie", "un mot de passe long", "supervisor", ["dijon"])
    token = users.open_session("sylvie")
    kpi = KpiStore(kpi_store_path(cfg))
    change = {"detected_at": T0, "kpi": "energy", "resolution": "day", "scope": "dijon",
              "period_start": T0, "old_value": 1.0, "new_value": 2.0, "old_coverage": 1.0,
              "new_coverage": 1.0, "reason": "late data"}  # fmt: skip
    kpi.record_changes(pd.DataFrame([change, change]))
    inventory = InventoryStore(store_path(cfg))
    inventory.save([Asset("EP-1", "streetlight_cabinet", "dijon", 47.3, 5.0, "lighting")])
    works = InterventionStore(interventions_path(cfg))
    row = {"title": "Rue sombre", "commune": "dijon", "domain": "lighting", "lat": 47.3,
           "lon": 5.0, "assets": ["EP-1"], "priority": 2, "team": "eclairage",
           "state": State.ASSIGNED, "origin": "alarm"}  # fmt: skip
    works.insert(row)
    works.add_report({"category": "dark_street", "commune": "dijon", "lat": 47.3, "lon": 5.0,
                      "address": "", "text": "Noir", "duplicate_of": None,
                      "matches": "{}"}, "a@example.org")  # fmt: skip
    for store in (journal, audit, users, kpi, inventory, works):
        store.close()

    env = {"BEFFROI_STATE_URL": pg_url}
    result = CliRunner().invoke(app, ["state", "migrate", "-c", str(config)], env=env)
    assert result.exit_code == 0, result.output
    assert "alarm_events 300" in result.output and "audit 1000" in result.output
    assert "audit chain verified: 1000 records" in result.output

    moved = AuditLog(PgPlace(pg_url, "audit"))
    assert moved.verify(anchor=False).ok and moved.head == head
    assert moved.fetch("SELECT count(*) AS n FROM control_outbox")[0]["n"] == 1
    moved.close()
    pg_journal = Journal(PgPlace(pg_url, "journal"))
    assert pg_journal.count() == 300 and pg_journal.last_seq() == 300
    pg_journal.write([_event(1, "B1")])
    assert pg_journal.last_seq() == 301
    pg_journal.close()
    pg_users = UserStore(PgPlace(pg_url, "users"), {"dijon"})
    assert pg_users.verify("sylvie", "un mot de passe long") is not None
    session = pg_users.session(token)
    assert session is not None and session.user.communes == ("dijon",)
    pg_users.close()
    pg_kpi = KpiStore(PgPlace(pg_url, "kpi"))
    pg_kpi.record_changes(pd.DataFrame([change]))
    assert list(pg_kpi.changes().id) == [1, 2, 3]
    pg_kpi.close()
    pg_inventory = InventoryStore(PgPlace(pg_url, "inventory"))
    assert [r["id"] for r in pg_inventory.records()] == ["EP-1"]
    pg_inventory.close()
    pg_works = InterventionStore(PgPlace(pg_url, "interventions"))
    assert pg_works.insert(row) == 2 and pg_works.contact(1) == "a@example.org"
    pg_works.close()

    again = CliRunner().invoke(app, ["state", "migrate", "-c", str(config)], env=env)
    assert (
        again.exit_code == 1 and "already holds" in again.output and "never merges" in again.output
    )


def test_two_senders_never_take_the_same_email(pg_url: str) -> None:
    """The outbox on PostgreSQL is claimed row by row (FOR UPDATE SKIP LOCKED): two senders
    reading at once get disjoint e-mails; what one claimed and did not try goes back."""
    a, b = (Journal(PgPlace(pg_url, "journal")) for _ in range(2))
    outbox_a, outbox_b = Outbox(a), Outbox(b)
    for i in range(40):
        msg = EmailMessage()
        msg["Subject"], msg["Message-ID"] = "fault", f"<{i}@beffroi>"
        msg.set_content("x")
        outbox_a.put(msg, ["a@b.c"], "alarm", "team", [f"A{i}"])
    got: list[list[int]] = [[], []]

    def take(outbox: Outbox, into: list[int]) -> None:
        while rows := outbox.due(limit=3):
            into.extend(int(r["id"]) for r in rows)
            for r in rows:
                outbox.mark_sent(int(r["id"]))

    threads = [
        threading.Thread(target=take, args=(o, g))
        for o, g in zip((outbox_a, outbox_b), got, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got[0]) & set(got[1]) and sorted(got[0] + got[1]) == list(range(1, 41))
    msg = EmailMessage()
    msg["Subject"], msg["Message-ID"] = "fault", "<late@beffroi>"
    msg.set_content("x")
    late = outbox_a.put(msg, ["a@b.c"], "alarm", "team", ["A0"])
    assert [r["id"] for r in outbox_b.due()] == [late]
    assert outbox_a.due() == []  # claimed by b: not given twice
    outbox_a.release()  # b died with it: the node taking over gives it back
    assert [r["id"] for r in outbox_a.due()] == [late]
    a.close()
    b.close()
