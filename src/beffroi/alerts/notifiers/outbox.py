"""The durable outbox of alarm e-mails, in the journal file; `mail/smtp.py` delivers it.

An e-mail is stored before any attempt and marked sent only after the server accepted it, so
an SMTP outage loses nothing; each keeps its Message-ID across retries, so a receiver can drop
the one duplicate a crash between acceptance and marking could cause.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY

from beffroi.alerts.journal import Journal
from beffroi.core.model import aware_utc, naive_utc, utcnow
from beffroi.state.sql import due_query, release_query


class Outbox:
    """E-mails waiting for the SMTP server, in the order they were composed."""

    def __init__(self, journal: Journal, clock: Callable[[], datetime] = utcnow):
        self.journal, self.clock = journal, clock

    def put(
        self,
        msg: EmailMessage,
        recipients: Sequence[str],
        kind: str,
        team: str,
        alarm_ids: Sequence[str],
    ) -> int:
        """Store an e-mail to send; return its id."""
        # Numbered by the store, not a counter in memory: the other gateway of a pair adds too.
        with self.journal.exclusive("outbox"):
            self.journal.check_fence()
            rows = self.journal.fetch(
                "INSERT INTO outbox VALUES ((SELECT coalesce(max(id), 0) + 1 FROM outbox), "
                "?, ?, ?, ?, ?, ?, ?, ?, 'pending', 0, ?, '', NULL) RETURNING id",
                [
                    msg["Message-ID"],
                    naive_utc(self.clock()),
                    kind,
                    team,
                    ",".join(recipients),
                    msg["Subject"],
                    msg.as_string(policy=SMTP_POLICY),
                    "|" + "|".join(alarm_ids) + "|",
                    naive_utc(self.clock()),
                ],
            )
        return int(rows[0]["id"])

    def due(self, limit: int = 200) -> list[dict]:
        """Return pending e-mails, oldest first (claimed for this sender in a pair)."""
        rows = self.journal.fetch(due_query("outbox", limit, self.journal.shared))
        return sorted(rows, key=lambda r: int(r["id"]))

    def release(self, ids: Sequence[int] | None = None) -> None:
        """Give back what a sender claimed and never settled (these, or all: at a take-over,
        what a dead node had claimed)."""
        self.journal.run(release_query("outbox", ids))

    def mark_sent(self, oid: int) -> None:
        """Record that the server accepted an e-mail."""
        self.journal.run(
            "UPDATE outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1 WHERE id = ?",
            [naive_utc(self.clock()), oid],
        )

    def mark_attempt(self, oid: int, error: str, failed: bool = False) -> None:
        """Record a failed attempt; a permanent refusal stops retries of that e-mail."""
        self.journal.run(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, status = ? WHERE id = ?",
            [error[:500], "failed" if failed else "pending", oid],
        )

    def pending(self) -> int:
        """Return how many e-mails wait."""
        rows = self.journal.fetch(
            "SELECT count(*) AS n FROM outbox WHERE status IN ('pending', 'sending')"
        )
        return int(rows[0]["n"])

    def named_since(self, since: datetime) -> dict[str, datetime]:
        """Return every alarm an e-mail composed since a time names, with the newest such
        e-mail's time (aware UTC)."""
        rows = self.journal.fetch(
            "SELECT alarm_ids, created FROM outbox WHERE created >= ? ORDER BY created",
            [naive_utc(since)],
        )
        named: dict[str, datetime] = {}
        for r in rows:
            for alarm_id in (r["alarm_ids"] or "").strip("|").split("|"):
                if alarm_id:
                    named[alarm_id] = aware_utc(r["created"])
        return named

    def escalated(self, alarm_id: str, since: datetime) -> bool:
        """Tell whether an escalation e-mail for this alarm was composed after `since`."""
        rows = self.journal.fetch(
            "SELECT count(*) AS n FROM outbox WHERE kind = 'escalation' AND created >= ? "
            "AND strpos(alarm_ids, ?) > 0",
            [naive_utc(since), f"|{alarm_id}|"],
        )
        return int(rows[0]["n"]) > 0
