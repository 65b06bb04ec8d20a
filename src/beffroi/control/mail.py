"""E-mails of playbook steps: a durable outbox beside the audit log, sent by the alarm sender.

They go through the SMTP server of `[alarms.email]` (host, port, security, credentials,
sender) with the same `SmtpSender`, whether or not alarm e-mails are enabled: one relay per
gateway. An e-mail is stored before it is sent; one that cannot be sent now waits and is retried.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid

from beffroi.control.audit import AuditLog
from beffroi.control.config import ControlSite
from beffroi.core.model import naive_utc, utcnow
from beffroi.i18n import _
from beffroi.mail.smtp import SmtpSender
from beffroi.state.sql import due_query, release_query

log = logging.getLogger(__name__)


_naive = naive_utc


class ControlOutbox:
    """Playbook e-mails waiting for the SMTP server, in order (the shape SmtpSender delivers)."""

    def __init__(self, audit: AuditLog, clock: Callable[[], datetime] = utcnow):
        self.audit, self.clock = audit, clock

    def _now(self) -> datetime:
        return _naive(self.clock())

    def put(self, msg: EmailMessage, recipients: Sequence[str], run_id: str) -> int:
        """Store an e-mail to send; return its id."""
        # Numbered by the store, not a counter in memory: the other gateway of a pair adds too.
        with self.audit.exclusive("control outbox"):
            rows = self.audit.fetch(
                "INSERT INTO control_outbox VALUES "
                "((SELECT coalesce(max(id), 0) + 1 FROM control_outbox), "
                "?, ?, ?, ?, ?, ?, 'pending', 0, '', NULL) RETURNING id",
                [
                    msg["Message-ID"],
                    self._now(),
                    run_id,
                    ",".join(recipients),
                    msg["Subject"],
                    msg.as_string(policy=SMTP_POLICY),
                ],
            )
        return int(rows[0]["id"])

    def due(self, limit: int = 200) -> list[dict]:
        """Return pending e-mails, oldest first."""
        rows = self.audit.fetch(due_query("control_outbox", limit, self.audit.shared))
        return sorted(rows, key=lambda r: int(r["id"]))

    def release(self, ids: Sequence[int] | None = None) -> None:
        """Give back what a sender claimed and never settled (these, or all: at a take-over,
        what a dead node had claimed)."""
        self.audit.execute(release_query("control_outbox", ids))

    def mark_sent(self, oid: int) -> None:
        """Record that the server accepted an e-mail."""
        self.audit.execute(
            "UPDATE control_outbox SET status = 'sent', sent_at = ?, attempts = attempts + 1 "
            "WHERE id = ?",
            [self._now(), oid],
        )

    def mark_attempt(self, oid: int, error: str, failed: bool = False) -> None:
        """Record a failed attempt; a permanent refusal stops retries of that e-mail."""
        self.audit.execute(
            "UPDATE control_outbox SET attempts = attempts + 1, last_error = ?, status = ? "
            "WHERE id = ?",
            [error[:500], "failed" if failed else "pending", oid],
        )

    def state(self, oid: int) -> tuple[str, str]:
        """Return an e-mail's status and last error."""
        rows = self.audit.fetch("SELECT status, last_error FROM control_outbox WHERE id = ?", [oid])
        return (rows[0]["status"], rows[0]["last_error"] or "") if rows else ("unknown", "")

    def pending(self) -> int:
        """Return how many e-mails wait."""
        rows = self.audit.fetch(
            "SELECT count(*) AS n FROM control_outbox WHERE status IN ('pending', 'sending')"
        )
        return int(rows[0]["n"])


class Mailer:
    """Compose playbook e-mails and send them now, or keep them for the retry job."""

    def __init__(self, cfg: ControlSite, audit: AuditLog, clock: Callable[[], datetime] = utcnow):
        email = cfg.alarms.email
        if email.ca_file:
            email = email.model_copy(update={"ca_file": str(cfg.resolve(email.ca_file))})
        self.cfg = email
        self.sender = SmtpSender(email, clock)
        self.outbox = ControlOutbox(audit, clock)
        self.clock = clock
        self._deliver_lock = threading.Lock()

    def compose(self, to: Sequence[str], subject: str, body: str) -> EmailMessage:
        """Build a plain-text e-mail from the gateway's sender address."""
        msg = EmailMessage()
        msg["From"] = self.cfg.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(self.clock())
        msg["Message-ID"] = make_msgid("beffroi-control", self.cfg.sender.split("@", 1)[-1])
        msg.set_content(body)
        return msg

    def _deliver(self) -> int:
        # One delivery at a time: the step and the retry job must not send an e-mail twice.
        with self._deliver_lock:
            return self.sender.deliver(self.outbox)

    async def send(
        self, to: Sequence[str], subject: str, body: str, run_id: str
    ) -> tuple[str, str]:
        """Store and try to send an e-mail; return ("sent" | "queued" | "failed", detail)."""
        msg = self.compose(to, subject, body)
        oid = await asyncio.to_thread(self.outbox.put, msg, to, run_id)
        await asyncio.to_thread(self._deliver)
        status, error = await asyncio.to_thread(self.outbox.state, oid)
        # The detail is kept with the run and shown on the Control page: written in the
        # locale of this moment (French in the playbook's job, as the e-mail itself).
        if status == "sent":
            return "sent", _("accepted by %(server)s for %(to)s") % {
                "server": f"{self.cfg.host}:{self.cfg.port}",
                "to": ", ".join(to),
            }
        if status == "failed":
            return "failed", error
        return "queued", _("waiting in the outbox, retried: %(error)s") % {
            "error": error or self.sender.last_error
        }

    async def retry(self) -> None:
        """Send what waits (the scheduler's job)."""
        if await asyncio.to_thread(self.outbox.pending):
            sent = await asyncio.to_thread(self._deliver)
            if sent:
                log.info("sent %d queued playbook e-mail(s)", sent)
