"""Field links: a signed, expiring, revocable token that opens one intervention, no login.

The token (itsdangerous, HMAC-SHA1 over the payload and its time) carries the intervention id
and a random link id; the store keeps each link's expiry and revocation, so a link can be
refused before it expires, and a token naming another intervention than its record is refused.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadData, URLSafeTimedSerializer

from beffroi.i18n import _
from beffroi.interventions.store import InterventionStore

SALT = "beffroi.field-link"


class LinkRefused(ValueError):
    """A field link that is tampered with, expired, revoked or unknown."""


@dataclass(frozen=True)
class FieldLink:
    """A link issued: its token and until when it opens the intervention."""

    token: str
    intervention: int
    expires: datetime


class FieldLinks:
    """Issue and check field links."""

    def __init__(self, store: InterventionStore, secret: bytes, hours: float):
        self.store, self.hours = store, hours
        self._signer = URLSafeTimedSerializer(secret, salt=SALT)

    def issue(self, iid: int, by: str) -> FieldLink:
        """Make a link to one intervention, valid `hours`."""
        jti = secrets.token_urlsafe(12)
        expires = self.store.clock() + timedelta(hours=self.hours)
        self.store.add_link(jti, iid, expires, by)
        return FieldLink(self._signer.dumps({"i": iid, "j": jti}), iid, expires)

    def check(self, token: str) -> int:
        """Return the intervention a token opens; raise LinkRefused with the reason."""
        try:
            data = self._signer.loads(token, max_age=int(self.hours * 3600) + 60)
            iid, jti = int(data["i"]), str(data["j"])
        except (BadData, KeyError, TypeError, ValueError):
            raise LinkRefused(_("invalid or expired link")) from None
        row = self.store.link_row(jti)
        if row is None or int(row["intervention"]) != iid:
            raise LinkRefused(_("unknown link"))
        if row["revoked"] is not None:
            raise LinkRefused(_("revoked link"))
        if row["expires"] <= self.store.now():
            raise LinkRefused(_("expired link"))
        return iid
