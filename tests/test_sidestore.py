"""The small DuckDB files beside the historian (alarm journal, KPI store, audit log, users):
time and list filters, threads sharing one file, transactions, and a file another process
holds."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
import pytest

from beffroi.alerts.journal import Journal
from beffroi.control.audit import AuditLog
from beffroi.core.errors import BeffroiError
from beffroi.kpi.store import KpiStore
from beffroi.state.duckdb import SideStore, StoreLocked

SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    seq BIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, who VARCHAR NOT NULL, n INTEGER
);
"""
PARIS = ZoneInfo("Europe/Paris")
T0 = datetime(2026, 3, 1, 9, 0)  # naive UTC, as stored


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SideStore]:
    """A side store with four rows an hour apart from 09:00 UTC: ana, bob, ana, bob."""
    s = SideStore(tmp_path / "side" / "log.duckdb", (SCHEMA,), what="test log")
    rows = pd.DataFrame(
        {
            "seq": [1, 2, 3, 4],
            "ts": [T0.replace(hour=h) for h in (9, 10, 11, 12)],
            "who": ["ana", "bob", "ana", "bob"],
            "n": [0, 0, 0, 0],
        }
    )
    s.run("INSERT INTO log SELECT * FROM _rows", views={"_rows": rows})
    yield s
    s.close()


def test_aware_bounds_select_by_utc_and_come_back_aware(store: SideStore) -> None:
    """Paris 11:00–12:00 in winter is 10:00–11:00 UTC: the one row stored at 10:00 UTC."""
    store.run("SET TimeZone = 'America/New_York'")  # a host set to its own local time
    start, end = datetime(2026, 3, 1, 11, tzinfo=PARIS), datetime(2026, 3, 1, 12, tzinfo=PARIS)
    df = store.events("log", "seq", "ts", start, end, aware=("ts",))
    assert list(df.seq) == [2]
    assert df.ts.iloc[0] == datetime(2026, 3, 1, 10, tzinfo=UTC)
    # A naive bound is taken as UTC, like the stored times.
    naive = store.events("log", "seq", "ts", T0.replace(hour=10), T0.replace(hour=11))
    assert list(naive.seq) == [2]


def test_lists_filter_and_an_empty_list_means_all(store: SideStore) -> None:
    """A list keeps the rows whose column is in it; an empty one (nothing chosen) keeps all."""
    assert list(store.events("log", "seq", "ts", matching={"who": ["ana"]}).seq) == [1, 3]
    assert list(store.events("log", "seq", "ts", matching={"who": []}).seq) == [1, 2, 3, 4]
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    both = store.events("log", "seq", "ts", start, matching={"who": ["bob", "cyd"]})
    assert list(both.seq) == [2, 4]


def test_limit_keeps_the_newest_oldest_first(store: SideStore) -> None:
    """A limit shows the latest rows, still in the order they were written."""
    assert list(store.events("log", "seq", "ts", limit=2).seq) == [3, 4]


def test_threads_sharing_the_file_each_get_their_own_answers(store: SideStore) -> None:
    """Writers and readers on many threads: numbering without gaps, every read its own rows."""

    def work(who: str) -> list[int]:
        seen = []
        for i in range(40):
            # Numbering from the stored maximum is safe only if nobody writes in between.
            with store.locked():
                seq = store.one("SELECT max(seq) FROM log") + 1
                store.run("INSERT INTO log VALUES (?, ?, ?, ?)", [seq, T0, who, i])
            rows = store.fetch("SELECT n FROM log WHERE who = ? ORDER BY seq", [who])
            seen.append(len(rows))
            assert [r["n"] for r in rows] == list(range(i + 1))
        return seen

    names = [f"t{k}" for k in range(6)]
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(work, names))
    assert results == [list(range(1, 41))] * len(names)
    seqs = [r[0] for r in store.rows("SELECT seq FROM log ORDER BY seq")]
    assert seqs == list(range(1, 4 + 40 * len(names) + 1))


def test_a_failed_transaction_leaves_the_file_as_it_was(store: SideStore) -> None:
    """Replacing rows is all or nothing, and the file is usable afterwards."""
    with pytest.raises(duckdb.ConstraintException), store.transaction():
        store.run("DELETE FROM log WHERE who = 'ana'")
        store.run("INSERT INTO log VALUES (2, ?, 'dup', 0)", [T0])  # seq 2 is taken
    assert store.one("SELECT count(*) FROM log") == 4
    with store.transaction():
        store.run("DELETE FROM log WHERE who = 'ana'")
    assert list(store.events("log", "seq", "ts").who) == ["bob", "bob"]


HOLD = "import sys, duckdb; c = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"


@pytest.fixture
def held(tmp_path: Path) -> Iterator[Path]:
    """A DuckDB file held open for writing by another process, as a running gateway does."""
    path = tmp_path / "held.duckdb"
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"held\n"
        yield path
    finally:
        proc.communicate(b"\n", timeout=30)


@pytest.mark.parametrize("read_only", [False, True])
def test_a_file_held_by_another_process_is_named_in_the_error(held: Path, read_only: bool) -> None:
    """The error names the file and says "locked", which the CLI looks for to ask the gateway."""
    with pytest.raises(StoreLocked) as err:
        SideStore(held, (SCHEMA,), read_only=read_only, what="test log")
    message = str(err.value)
    assert message.startswith(f"{held}: the test log is locked by another process (PID ")
    # Still what DuckDB raised before, and a message (not a traceback) for `beffroi run`.
    assert isinstance(err.value, duckdb.IOException)
    assert isinstance(err.value, BeffroiError)


@pytest.mark.parametrize(
    ("opener", "what"),
    [(Journal, "alarm journal"), (KpiStore, "KPI store"), (AuditLog, "audit log")],
)
def test_each_side_file_says_which_it_is_when_held(held: Path, opener: type, what: str) -> None:
    """`beffroi alarms`, `kpi` and `audit` open read-only; a gateway holding the file is told."""
    with pytest.raises(StoreLocked, match=f"the {what} is locked by another process"):
        opener(held, read_only=True)


def test_a_users_file_held_by_a_gateway_is_named_by_the_cli(held: Path, tmp_path: Path) -> None:
    """`beffroi user …` on a users file a gateway holds says which file and exits 1, no traceback;
    the HMI's store raises the same StoreLocked."""
    from typer.testing import CliRunner

    from beffroi.cli import app
    from beffroi.hmi.users import UserStore
    from tests.conftest import ROOT

    with pytest.raises(StoreLocked, match="the users file is locked by another process"):
        UserStore(held)
    config = tmp_path / "config.toml"
    text = (ROOT / "config.toml").read_text()
    config.write_text(text.replace("port = 8050", f'port = 8050\nusers_db = "{held}"'))
    done = CliRunner().invoke(app, ["user", "list", "-c", str(config)])
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.output
    assert f"{held}: the users file is locked by another process (PID " in done.stderr
