"""The alarm journal: every transition in a DuckDB file of its own, queried and exported."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import pyarrow as pa

from beffroi.alerts.state import AlarmEvent
from beffroi.core.csv_safe import CRLF, safe_cell
from beffroi.core.model import aware_utc, naive_utc
from beffroi.core.seams import SmallStore
from beffroi.i18n import N_, _
from beffroi.state import open_store
from beffroi.state.config import Place

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS alarm_events (
    seq BIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, alarm_id VARCHAR NOT NULL, rule VARCHAR,
    kind VARCHAR, event VARCHAR NOT NULL, state VARCHAR NOT NULL, tag VARCHAR, asset VARCHAR,
    commune VARCHAR, domain VARCHAR, severity SMALLINT, level VARCHAR, value DOUBLE PRECISION,
    limit_value DOUBLE PRECISION, user_name VARCHAR, comment VARCHAR, active BOOLEAN, acked BOOLEAN,
    shelved_until TIMESTAMP, oneshot BOOLEAN, since TIMESTAMP, message VARCHAR,
    annunciated BOOLEAN
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGINT PRIMARY KEY, message_id VARCHAR NOT NULL UNIQUE, created TIMESTAMP NOT NULL,
    kind VARCHAR, team VARCHAR, recipients VARCHAR NOT NULL, subject VARCHAR,
    message VARCHAR NOT NULL, alarm_ids VARCHAR, status VARCHAR NOT NULL, attempts INTEGER,
    next_try TIMESTAMP, last_error VARCHAR, sent_at TIMESTAMP
);
-- Limit rules changed at runtime (alerts/rule_changes.py).
CREATE TABLE IF NOT EXISTS rule_changes (
    ts TIMESTAMP NOT NULL, rule VARCHAR NOT NULL, params VARCHAR NOT NULL,
    user_name VARCHAR NOT NULL, comment VARCHAR
);
"""
MIGRATIONS = (SCHEMA,)
COLUMNS = [
    "seq", "ts", "alarm_id", "rule", "kind", "event", "state", "tag", "asset", "commune",
    "domain", "severity", "level", "value", "limit_value", "user_name", "comment", "active",
    "acked", "shelved_until", "oneshot", "since", "message", "annunciated",
]  # fmt: skip
_TIMES = ("ts", "shelved_until", "since")
_TYPES = {
    "seq": pa.int64(), "severity": pa.int8(), "value": pa.float64(), "limit_value": pa.float64(),
    "active": pa.bool_(), "acked": pa.bool_(), "oneshot": pa.bool_(), "annunciated": pa.bool_(),
    **dict.fromkeys(_TIMES, pa.timestamp("us")),
}  # fmt: skip
EXPORT_ORDER = [
    "time", "alarm_id", "tag", "asset", "commune", "domain", "severity", "event", "state",
    "level", "value", "limit", "user", "comment", "message", "since",
]  # fmt: skip
# The export's column headers as people read them, in the exporter's language (event and
# state codes stay codes, like the JSON's; `to_csv(..., labels=False)` keeps the keys).
EXPORT_LABELS = {
    "time": N_("time"),
    "alarm_id": N_("alarm id"),
    "tag": N_("tag"),
    "asset": N_("asset"),
    "commune": N_("commune"),
    "domain": N_("domain"),
    "severity": N_("severity"),
    "event": N_("event"),
    "state": N_("state"),
    "level": N_("level"),
    "value": N_("value"),
    "limit": N_("limit"),
    "user": N_("user"),
    "comment": N_("comment"),
    "message": N_("message"),
    "since": N_("since"),
    "rule": N_("rule"),
    "kind": N_("kind"),
    "active": N_("active"),
    "acked": N_("acknowledged"),
    "shelved_until": N_("shelved until"),
    "oneshot": N_("one-shot"),
    "annunciated": N_("annunciated"),
}
_LAST_SEQ = "SELECT coalesce(max(seq), 0) FROM alarm_events"
# The names users see (CSV, API) for the columns whose SQL names are reserved words.
PUBLIC = {"limit_value": "limit", "user_name": "user"}


class Journal:
    """Append-only alarm events and the e-mail outbox in one DuckDB file, safe across threads."""

    def __init__(self, where: Place | str, read_only: bool = False):
        self._db: SmallStore = open_store(
            where, MIGRATIONS, read_only=read_only, what="alarm journal"
        )
        self.path = self._db.path
        self._next_seq = int(self._db.one(_LAST_SEQ)) + 1
        self.last_written = 0  # the seq of the newest event this process wrote
        # Set by a node of a redundant pair (pair/node.py PairNode.fence).
        self.fence: Callable[[SmallStore], None] | None = None

    def run(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Execute one statement (for the outbox)."""
        self._db.run(sql, params)

    def check_fence(self) -> None:
        """Raise unless this node may write as the acting one (inside `exclusive`): in a pair,
        the lease it acts under must still be its own by PostgreSQL's clock, so that a node
        that stalled past its lease writes nothing the other one does not see."""
        if self.fence is not None:
            self.fence(self._db)

    @property
    def shared(self) -> bool:
        """True when another process writes the same tables (PostgreSQL, a pair)."""
        return self._db.shared

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A transaction every other writer of `name` waits for (see SmallStore.exclusive)."""
        return self._db.exclusive(name)

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return the rows of a query as dicts."""
        return self._db.fetch(sql, params)

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Return the result of a query as a DataFrame."""
        return self._db.frame(sql, params)

    def write(self, events: Sequence[AlarmEvent]) -> int:
        """Append events in one transaction, in order; return how many."""
        if not events:
            return 0
        rows = [e.as_row() for e in events]
        cols: dict[str, list] = {c: [] for c in COLUMNS}
        with self._db.exclusive("alarm journal"):
            self.check_fence()
            if self._db.shared:  # the other gateway of a pair may have written since
                self._next_seq = int(self._db.one(_LAST_SEQ)) + 1
            seq = self._next_seq
            for i, r in enumerate(rows):
                cols["seq"].append(seq + i)
                for c in COLUMNS[1:]:
                    v = r[PUBLIC.get(c, c)]
                    cols[c].append(naive_utc(v) if c in _TIMES else v)
            table = pa.table(
                {c: pa.array(cols[c], type=_TYPES.get(c, pa.string())) for c in COLUMNS}
            )
            self._db.run(
                "INSERT INTO alarm_events SELECT * FROM _new_events", views={"_new_events": table}
            )
            self._next_seq = seq + len(rows)
            self.last_written = self._next_seq - 1
        return len(rows)

    def events(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        communes: Sequence[str] = (),
        domains: Sequence[str] = (),
        states: Sequence[str] = (),
        alarm_ids: Sequence[str] = (),
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Return events in [start, end) matching the filters, oldest first (ts aware UTC)."""
        matching = {"commune": communes, "domain": domains, "state": states, "alarm_id": alarm_ids}
        df = self._db.events(
            "alarm_events", "seq", "ts", start, end, matching, limit=limit, aware=_TIMES
        )
        return df.rename(columns=PUBLIC)

    def current(self, include_normal: bool = False) -> list[dict[str, Any]]:
        """Return the last event of each alarm (its state now), as restore() wants it."""
        sql = (
            "SELECT * FROM alarm_events "
            "WHERE seq IN (SELECT max(seq) FROM alarm_events GROUP BY alarm_id)"
        )
        if not include_normal:
            sql += " AND (state <> 'normal' OR active)"
        return _restorable(self.fetch(sql + " ORDER BY seq"))

    def after(self, seq: int, limit: int = 10_000) -> list[dict[str, Any]]:
        """Return the events journaled after `seq`, oldest first, as restore() wants them."""
        return _restorable(
            self.fetch(
                f"SELECT * FROM alarm_events WHERE seq > ? ORDER BY seq LIMIT {int(limit)}", [seq]
            )
        )

    def told(self, since: datetime) -> list[dict[str, Any]]:
        """Return the transitions since a time that e-mails tell (annunciations, returns)."""
        return _restorable(
            self.fetch(
                "SELECT * FROM alarm_events WHERE ts >= ? AND (annunciated OR event = 'clear') "
                "ORDER BY seq",
                [naive_utc(since)],
            )
        )

    def last_seq(self) -> int:
        """Return the number of the newest event (0 for an empty journal)."""
        return int(self._db.one(_LAST_SEQ))

    def count(self) -> int:
        """Return the number of journaled events."""
        return int(self._db.one("SELECT count(*) FROM alarm_events"))

    def close(self) -> None:
        """Checkpoint and close the file."""
        self._db.close()


def _restorable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return journal rows with aware times and public names, as the engine restores them."""
    for r in rows:
        for c in _TIMES:
            r[c] = aware_utc(r[c])
        for c, public in PUBLIC.items():
            r[public] = r.pop(c)
    return rows


def to_csv(df: pd.DataFrame, timezone: str = "Europe/Paris", labels: bool = True) -> str:
    """Return events as CSV, times in local time with their offset (an export is an edge);
    headers in the current language, or the keys with `labels=False`."""
    out = df.drop(columns=["seq"], errors="ignore").copy()
    for c in _TIMES:
        if c in out:
            local = pd.to_datetime(out[c], utc=True).dt.tz_convert(timezone)
            out[c] = local.map(lambda t: "" if pd.isna(t) else t.isoformat())
    out = out.rename(columns={"ts": "time"})
    # Comments, users, messages come from people and equipment: a spreadsheet must not run
    # them (`core.csv_safe`). Numbers are not text cells, so a negative value stays a number.
    for c in out.select_dtypes(include=["object", "string"]).columns:
        out[c] = out[c].map(safe_cell)
    first = [c for c in EXPORT_ORDER if c in out]
    # CRLF lines, so that a text's own CR is quoted too, not a row break before a formula.
    out = out[first + [c for c in out if c not in first]]
    if labels:
        out = out.rename(columns={c: _(EXPORT_LABELS[c]) for c in out if c in EXPORT_LABELS})
    return out.to_csv(index=False, lineterminator=CRLF)
