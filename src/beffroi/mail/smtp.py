"""Deliver a durable outbox over SMTP (plain, STARTTLS or SMTPS), with backoff while it fails.

Every feature that e-mails (alarm notifications, playbook steps) keeps its own outbox, stored
before any attempt and marked sent only after the server accepted a message; this sender
delivers any of them, one relay per gateway.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.parser import Parser
from email.policy import SMTP as SMTP_POLICY
from typing import Any, Protocol

from beffroi.core.errors import MissingCredentials
from beffroi.core.model import utcnow
from beffroi.mail.config import SmtpConfig

log = logging.getLogger(__name__)


class MailQueue(Protocol):
    """A durable outbox: e-mails due, and how their attempts went."""

    def due(self, limit: int = 200) -> list[dict[str, Any]]:
        """Return pending e-mails (id, message_id, recipients, message, attempts), oldest first."""
        ...

    def mark_sent(self, oid: int) -> None:
        """Record that the server accepted an e-mail."""
        ...

    def mark_attempt(self, oid: int, error: str, failed: bool = False) -> None:
        """Record a failed attempt; a permanent refusal stops retries of that e-mail."""
        ...

    def release(self, ids: Sequence[int] | None = None) -> None:
        """Give back to pending what `due` claimed and was not tried (all claimed: None)."""
        ...


class SmtpSender:
    """Deliver the outbox over SMTP (plain, STARTTLS or SMTPS) with backoff while it fails."""

    def __init__(self, cfg: SmtpConfig, clock: Callable[[], datetime] = utcnow):
        self.cfg, self.clock = cfg, clock
        self.failures = 0
        self.sent = 0
        self.last_error = ""
        self._retry_at: datetime | None = None
        self._warned = False
        # Whether this gateway may send (the active node of a pair): asked before each e-mail,
        # so a node that loses its lease in the middle of a long round stops there.
        self.acting: Callable[[], bool] = lambda: True

    def _credentials(self) -> tuple[str, str] | None:
        try:
            return self.cfg.login()
        except MissingCredentials as exc:  # an SMTP failure: said once, retried with backoff
            raise smtplib.SMTPException(f"{exc}: it must hold the SMTP user or password") from None

    def _connect(self) -> smtplib.SMTP:
        cfg = self.cfg
        # A private CA (ca_file) for a metropolis' own relay; the system's CAs otherwise.
        context = ssl.create_default_context(cafile=cfg.ca_file or None)
        smtp: smtplib.SMTP
        if cfg.security == "ssl":
            smtp = smtplib.SMTP_SSL(cfg.host, cfg.port, timeout=cfg.timeout_s, context=context)
        else:
            smtp = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout_s)
            if cfg.security == "starttls":
                smtp.starttls(context=context)
        creds = self._credentials()
        if creds is not None:
            smtp.login(*creds)
        return smtp

    def deliver(self, outbox: MailQueue) -> int:
        """Send what is due (blocking: run it in a worker thread); return how many were sent."""
        now = self.clock()
        if self._retry_at is not None and now < self._retry_at:
            return 0
        rows = outbox.due()
        if not rows:
            return 0
        settled: set[int] = set()
        try:
            return self._send(outbox, rows, settled)
        finally:
            # Claimed (a pair's outbox) but not tried: back to pending for the next round.
            rest = [r["id"] for r in rows if r["id"] not in settled]
            if rest:
                outbox.release(rest)

    def _send(self, outbox: MailQueue, rows: list[dict[str, Any]], settled: set[int]) -> int:
        """Send rows over one SMTP connection; record each outcome; return how many went."""
        sent = 0
        try:
            smtp = self._connect()
        except (OSError, smtplib.SMTPException) as exc:
            settled.add(rows[0]["id"])
            self._down(outbox, rows[0]["id"], exc)
            return 0
        try:
            for row in rows:
                if not self.acting():
                    break
                recipients = [r for r in row["recipients"].split(",") if r]
                msg = Parser(policy=SMTP_POLICY).parsestr(row["message"])
                try:
                    refused = smtp.send_message(msg, self.cfg.sender, recipients)
                except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused) as exc:
                    log.error("SMTP refused e-mail %s for good: %s", row["message_id"], exc)
                    settled.add(row["id"])
                    outbox.mark_attempt(row["id"], str(exc), failed=True)
                    continue
                except smtplib.SMTPResponseException as exc:
                    if exc.smtp_code >= 500:
                        log.error("SMTP refused e-mail %s for good: %s", row["message_id"], exc)
                        settled.add(row["id"])
                        outbox.mark_attempt(row["id"], str(exc), failed=True)
                        continue
                    raise
                settled.add(row["id"])
                outbox.mark_sent(row["id"])
                sent += 1
                if refused:
                    log.warning(
                        "SMTP refused some recipients of %s: %s", row["message_id"], refused
                    )
            with_quit(smtp)
        except (OSError, smtplib.SMTPException) as exc:
            settled.add(row["id"])
            self._down(outbox, row["id"], exc)
        if sent:
            if self.failures:
                log.info("SMTP server %s:%d answers again", self.cfg.host, self.cfg.port)
            self.failures, self._retry_at, self._warned = 0, None, False
            self.sent += sent
        return sent

    def _down(self, outbox: MailQueue, oid: int, exc: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        outbox.mark_attempt(oid, self.last_error)
        delay = min(self.cfg.retry_max_s, self.cfg.retry_min_s * 2 ** (self.failures - 1))
        self._retry_at = self.clock() + timedelta(seconds=delay)
        # Said once per outage: a down mail server must not flood the log either.
        if not self._warned:
            log.warning(
                "cannot send e-mails through %s:%d (%s); they wait in the outbox",
                self.cfg.host,
                self.cfg.port,
                self.last_error,
            )
            self._warned = True


def with_quit(smtp: smtplib.SMTP) -> None:
    """Say QUIT, ignoring a server that already hung up (everything was accepted before)."""
    try:
        smtp.quit()
    except (OSError, smtplib.SMTPException):
        smtp.close()
