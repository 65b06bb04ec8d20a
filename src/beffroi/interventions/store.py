"""Where interventions, residents' reports, field links and their e-mails are kept.

One store (a DuckDB file, or the `interventions` schema in PostgreSQL). A resident's e-mail
address lives in `report_contacts` only (and in the outcome e-mail while it waits to be sent):
the retention job deletes both, and nothing else ever copies it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import pandas as pd

from beffroi.core.model import naive_utc, utcnow
from beffroi.core.seams import SmallStore
from beffroi.interventions.model import Intervention, State
from beffroi.state import open_store
from beffroi.state.config import Place
from beffroi.state.sql import Migrations, due_query, release_query

SCHEMA = """
CREATE TABLE IF NOT EXISTS interventions (
    id BIGINT PRIMARY KEY, created TIMESTAMP NOT NULL, title VARCHAR NOT NULL,
    commune VARCHAR NOT NULL, domain VARCHAR NOT NULL, lat DOUBLE PRECISION,
    lon DOUBLE PRECISION,
    assets VARCHAR NOT NULL, priority INTEGER NOT NULL, team VARCHAR NOT NULL,
    state VARCHAR NOT NULL, origin VARCHAR NOT NULL, updated TIMESTAMP NOT NULL,
    merged_into BIGINT, assigned_at TIMESTAMP, en_route_at TIMESTAMP, on_site_at TIMESTAMP,
    done_at TIMESTAMP, cancelled_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS interventions_state ON interventions (state);
CREATE TABLE IF NOT EXISTS intervention_events (
    id BIGINT PRIMARY KEY, intervention BIGINT NOT NULL, ts TIMESTAMP NOT NULL,
    actor VARCHAR NOT NULL, via VARCHAR NOT NULL, kind VARCHAR NOT NULL, state VARCHAR,
    text VARCHAR
);
CREATE INDEX IF NOT EXISTS intervention_events_of ON intervention_events (intervention);
CREATE TABLE IF NOT EXISTS intervention_links (
    intervention BIGINT NOT NULL, kind VARCHAR NOT NULL, ref VARCHAR NOT NULL,
    linked TIMESTAMP NOT NULL, PRIMARY KEY (intervention, kind, ref)
);
CREATE TABLE IF NOT EXISTS field_links (
    jti VARCHAR PRIMARY KEY, intervention BIGINT NOT NULL, created TIMESTAMP NOT NULL,
    expires TIMESTAMP NOT NULL, revoked TIMESTAMP, created_by VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS reports (
    id BIGINT PRIMARY KEY, created TIMESTAMP NOT NULL, category VARCHAR NOT NULL,
    commune VARCHAR NOT NULL, lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL,
    address VARCHAR,
    text VARCHAR NOT NULL, state VARCHAR NOT NULL, intervention BIGINT, duplicate_of BIGINT,
    matches VARCHAR NOT NULL, closed_at TIMESTAMP, wants_news BOOLEAN NOT NULL,
    told_at TIMESTAMP
);
CREATE INDEX IF NOT EXISTS reports_state ON reports (state);
CREATE TABLE IF NOT EXISTS report_contacts (
    report BIGINT PRIMARY KEY, email VARCHAR NOT NULL, consent_at TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS mail_outbox (
    id BIGINT PRIMARY KEY, message_id VARCHAR NOT NULL, created TIMESTAMP NOT NULL,
    about VARCHAR NOT NULL, recipients VARCHAR NOT NULL, subject VARCHAR, message VARCHAR NOT NULL,
    status VARCHAR NOT NULL, attempts INTEGER NOT NULL, last_error VARCHAR, sent_at TIMESTAMP
);
"""
MIGRATIONS: Migrations = (SCHEMA,)
STATE_COLUMNS = {
    State.ASSIGNED: "assigned_at",
    State.EN_ROUTE: "en_route_at",
    State.ON_SITE: "on_site_at",
    State.DONE: "done_at",
    State.CANCELLED: "cancelled_at",
}


def _naive(ts: datetime) -> datetime:
    return naive_utc(ts)


class InterventionStore:
    """Interventions, their events and links, reports, contacts, field links, e-mails."""

    def __init__(self, where: Place | str, clock: Callable[[], datetime] = utcnow):
        self.db: SmallStore = open_store(where, MIGRATIONS, what="interventions store")
        self.clock = clock
        self._local = threading.local()

    @contextmanager
    def tx(self) -> Iterator[None]:
        """One transaction under the store's lock, however deep the calls nest: a change and
        its history, links and ids (max + 1: two nodes of a pair write too) commit together."""
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self.db.exclusive("interventions"):
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0

    def now(self) -> datetime:
        """Return the time as stored (naive UTC)."""
        return _naive(self.clock())

    def next_id(self, table: str) -> int:
        """Return the next id of a table (inside `tx()`)."""
        return int(self.db.one(f"SELECT coalesce(max(id), 0) + 1 FROM {table}"))

    # --- interventions ---

    def insert(self, row: dict[str, Any]) -> int:
        """Add an intervention (its id chosen here); return the id."""
        with self.tx():
            iid = self.next_id("interventions")
            now = self.now()
            self.db.run(
                "INSERT INTO interventions (id, created, title, commune, domain, lat, lon, "
                "assets, priority, team, state, origin, updated, assigned_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    iid,
                    now,
                    row["title"],
                    row["commune"],
                    row["domain"],
                    row["lat"],
                    row["lon"],
                    ",".join(row["assets"]),
                    row["priority"],
                    row["team"],
                    str(row["state"]),
                    row["origin"],
                    now,
                    now if row["state"] is State.ASSIGNED else None,
                ],
            )
        return iid

    def set_state(self, iid: int, state: State) -> None:
        """Record a new state and the time it was reached."""
        now = self.now()
        column = STATE_COLUMNS.get(state)
        extra = f", {column} = coalesce({column}, ?)" if column else ""
        self.db.run(
            f"UPDATE interventions SET state = ?, updated = ?{extra} WHERE id = ?",
            [str(state), now, *([now] if column else []), iid],
        )

    def update(self, iid: int, **fields: Any) -> None:
        """Change some columns of an intervention (team, priority, merged_into…)."""
        names = sorted(fields)
        sets = ", ".join(f"{n} = ?" for n in names)
        self.db.run(
            f"UPDATE interventions SET {sets}, updated = ? WHERE id = ?",
            [*(fields[n] for n in names), self.now(), iid],
        )

    def event(
        self, iid: int, actor: str, via: str, kind: str, state: str | None, text: str = ""
    ) -> None:
        """Add a line to an intervention's history."""
        with self.tx():
            eid = self.next_id("intervention_events")
            self.db.run(
                "INSERT INTO intervention_events VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [eid, iid, self.now(), actor, via, kind, state, text],
            )

    def link(self, iid: int, kind: str, ref: str, at: datetime) -> None:
        """Link an alarm or a report to an intervention (once), with the time it began."""
        self.db.run(
            "INSERT INTO intervention_links VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [iid, kind, ref, _naive(at)],
        )

    def reports_of(self, iid: int) -> list[int]:
        """Return the reports linked to an intervention."""
        return [
            int(r[0])
            for r in self.db.rows(
                "SELECT id FROM reports WHERE intervention = ? ORDER BY id", [iid]
            )
        ]

    def move_links(self, src: int, dst: int) -> None:
        """Move every link of one intervention to another (a merge)."""
        self.db.run(
            "INSERT INTO intervention_links SELECT ?, kind, ref, linked FROM intervention_links "
            "WHERE intervention = ? ON CONFLICT DO NOTHING",
            [dst, src],
        )
        self.db.run("DELETE FROM intervention_links WHERE intervention = ?", [src])
        self.db.run("UPDATE reports SET intervention = ? WHERE intervention = ?", [dst, src])

    def get(self, iid: int) -> Intervention | None:
        """Return one intervention with its history and links."""
        rows = self.db.fetch("SELECT * FROM interventions WHERE id = ?", [iid])
        if not rows:
            return None
        item = _intervention(rows[0])
        for link in self.db.fetch(
            "SELECT kind, ref FROM intervention_links WHERE intervention = ? ORDER BY linked, ref",
            [iid],
        ):
            if link["kind"] == "alarm":
                item.alarms.append(link["ref"])
            else:
                item.reports.append(int(link["ref"]))
        item.events = self.db.fetch(
            "SELECT ts, actor, via, kind, state, text FROM intervention_events "
            "WHERE intervention = ? ORDER BY id",
            [iid],
        )
        return item

    def open_for(self, *, alarm: str | None = None, asset: str | None = None) -> int | None:
        """Return the open intervention linked to an alarm or naming an asset, if any."""
        if alarm is not None:
            found = self.db.one(
                "SELECT i.id FROM interventions i JOIN intervention_links l "
                "ON l.intervention = i.id WHERE l.kind = 'alarm' AND l.ref = ? "
                "AND i.state NOT IN ('done', 'cancelled') ORDER BY i.id LIMIT 1",
                [alarm],
            )
            if found is not None:
                return int(found)
        if asset is not None:
            found = self.db.one(
                "SELECT id FROM interventions WHERE state NOT IN ('done', 'cancelled') "
                "AND strpos(',' || assets || ',', ?) > 0 ORDER BY id LIMIT 1",
                [f",{asset},"],
            )
            if found is not None:
                return int(found)
        return None

    def table(
        self,
        *,
        open_only: bool = True,
        communes: Sequence[str] | None = None,
        team: str | None = None,
        limit: int = 10_000,
    ) -> pd.DataFrame:
        """Return interventions, most urgent first and newest first within a priority (at most
        `limit`), with the counts of their links."""
        where: list[str] = ["TRUE"]
        params: list[Any] = []
        if open_only:
            where.append("i.state NOT IN ('done', 'cancelled')")
        if communes is not None:
            where.append(f"i.commune IN ({', '.join('?' * len(communes)) or 'NULL'})")
            params.extend(communes)
        if team is not None:
            where.append("i.team = ?")
            params.append(team)
        return self.db.frame(
            "SELECT i.*, "
            "(SELECT count(*) FROM intervention_links l WHERE l.intervention = i.id "
            " AND l.kind = 'alarm') AS n_alarms, "
            "(SELECT count(*) FROM intervention_links l WHERE l.intervention = i.id "
            " AND l.kind = 'report') AS n_reports "
            f"FROM interventions i WHERE {' AND '.join(where)} ORDER BY i.priority, i.id DESC "
            f"LIMIT {int(limit)}",
            params,
        )

    def between(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Return the interventions created in [start, end) (for KPIs and exports)."""
        return self.db.frame(
            "SELECT * FROM interventions WHERE created >= ? AND created < ? ORDER BY id",
            [_naive(start), _naive(end)],
        )

    # --- reports ---

    def add_report(self, row: dict[str, Any], email: str | None) -> int:
        """Store a report, and its author's address apart when given; return its id."""
        with self.tx():
            rid = self.next_id("reports")
            now = self.now()
            self.db.run(
                "INSERT INTO reports VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'new', NULL, ?, ?, NULL, ?, "
                "NULL)",
                [
                    rid,
                    now,
                    row["category"],
                    row["commune"],
                    row["lat"],
                    row["lon"],
                    row["address"],
                    row["text"],
                    row["duplicate_of"],
                    row["matches"],
                    email is not None,
                ],
            )
            if email is not None:
                self.db.run("INSERT INTO report_contacts VALUES (?, ?, ?)", [rid, email, now])
        return rid

    def report(self, rid: int) -> dict[str, Any] | None:
        """Return one report (without its author's address)."""
        rows = self.db.fetch("SELECT * FROM reports WHERE id = ?", [rid])
        return rows[0] if rows else None

    def reports(
        self,
        states: Sequence[str] = ("new",),
        limit: int = 5000,
        communes: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Return reports in some states (of some communes), newest first, never their
        authors' addresses."""
        where = f"state IN ({', '.join('?' * len(states))})"
        params: list[Any] = list(states)
        if communes is not None:
            where += f" AND commune IN ({', '.join('?' * len(communes)) or 'NULL'})"
            params.extend(communes)
        return self.db.frame(
            f"SELECT * FROM reports WHERE {where} ORDER BY id DESC LIMIT {int(limit)}", params
        )

    def open_reports_near(self, category: str, since: datetime) -> list[dict[str, Any]]:
        """Return the open reports of a category since a time (duplicate candidates)."""
        return self.db.fetch(
            "SELECT id, lat, lon, intervention FROM reports WHERE category = ? "
            "AND state IN ('new', 'linked') AND created >= ? ORDER BY id",
            [category, _naive(since)],
        )

    def set_report(self, rid: int, **fields: Any) -> None:
        """Change some columns of a report."""
        names = sorted(fields)
        self.db.run(
            f"UPDATE reports SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
            [*(fields[n] for n in names), rid],
        )

    def contact(self, rid: int) -> str | None:
        """Return a report author's address (for the roles that need it, and the outcome)."""
        value = self.db.one("SELECT email FROM report_contacts WHERE report = ?", [rid])
        return None if value is None else str(value)

    def expired_contacts(self, before: datetime) -> list[int]:
        """Return the reports closed before a time whose author's address is still kept."""
        return [
            int(r[0])
            for r in self.db.rows(
                "SELECT c.report FROM report_contacts c JOIN reports r ON r.id = c.report "
                "WHERE r.closed_at IS NOT NULL AND r.closed_at < ? ORDER BY c.report",
                [_naive(before)],
            )
        ]

    def forget_contacts(self, reports: Sequence[int]) -> None:
        """Delete these authors' addresses and every e-mail to them (sent or not)."""
        if not reports:
            return
        marks = ", ".join("?" * len(reports))
        with self.tx():
            self.db.run(f"DELETE FROM report_contacts WHERE report IN ({marks})", list(reports))
            self.db.run(
                f"DELETE FROM mail_outbox WHERE about IN ({marks})",
                [f"report:{r}" for r in reports],
            )

    # --- field links ---

    def add_link(self, jti: str, iid: int, expires: datetime, by: str) -> None:
        """Record a field link issued."""
        self.db.run(
            "INSERT INTO field_links VALUES (?, ?, ?, ?, NULL, ?)",
            [jti, iid, self.now(), _naive(expires), by],
        )

    def link_row(self, jti: str) -> dict[str, Any] | None:
        """Return a field link's record."""
        rows = self.db.fetch("SELECT * FROM field_links WHERE jti = ?", [jti])
        return rows[0] if rows else None

    def revoke_links(self, iid: int) -> int:
        """Revoke every field link of an intervention; return how many were live."""
        n = int(
            self.db.one(
                "SELECT count(*) FROM field_links WHERE intervention = ? AND revoked IS NULL",
                [iid],
            )
        )
        self.db.run(
            "UPDATE field_links SET revoked = ? WHERE intervention = ? AND revoked IS NULL",
            [self.now(), iid],
        )
        return n

    # --- e-mails (the shape SmtpSender delivers) ---

    def put_mail(
        self, message_id: str, about: str, recipients: Sequence[str], subject: str, message: str
    ) -> int:
        """Store an e-mail to send; return its id."""
        with self.tx():
            oid = self.next_id("mail_outbox")
            self.db.run(
                "INSERT INTO mail_outbox VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', 0, '', NULL)",
                [oid, message_id, self.now(), about, ",".join(recipients), subject, message],
            )
        return oid

    def due(self, limit: int = 200) -> list[dict[str, Any]]:
        """Return pending e-mails, oldest first."""
        rows = self.db.fetch(due_query("mail_outbox", limit, self.db.shared))
        return sorted(rows, key=lambda r: int(r["id"]))

    def release(self, ids: Sequence[int] | None = None) -> None:
        """Give back what a sender claimed and never settled."""
        self.db.run(release_query("mail_outbox", ids))

    def mark_sent(self, oid: int) -> None:
        """Record that the server accepted an e-mail."""
        self.db.run(
            "UPDATE mail_outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1 "
            "WHERE id = ?",
            [self.now(), oid],
        )

    def mark_attempt(self, oid: int, error: str, failed: bool = False) -> None:
        """Record a failed attempt; a permanent refusal stops retries of that e-mail."""
        self.db.run(
            "UPDATE mail_outbox SET attempts = attempts + 1, last_error = ?, status = ? "
            "WHERE id = ?",
            [error[:500], "failed" if failed else "pending", oid],
        )

    def pending_mail(self) -> int:
        """Return how many e-mails wait."""
        return int(
            self.db.one("SELECT count(*) FROM mail_outbox WHERE status IN ('pending', 'sending')")
        )

    def close(self) -> None:
        """Close the store."""
        self.db.close()


def _intervention(row: dict[str, Any]) -> Intervention:
    times = {
        str(state): row[column]
        for state, column in STATE_COLUMNS.items()
        if row[column] is not None
    }
    times[str(State.NEW)] = row["created"]
    return Intervention(
        id=int(row["id"]),
        created=row["created"],
        title=row["title"],
        commune=row["commune"],
        domain=row["domain"],
        lat=row["lat"],
        lon=row["lon"],
        assets=[a for a in row["assets"].split(",") if a],
        priority=int(row["priority"]),
        team=row["team"],
        state=State(row["state"]),
        origin=row["origin"],
        updated=row["updated"],
        merged_into=row["merged_into"],
        times=times,
    )
