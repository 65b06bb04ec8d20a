"""HMI users: argon2-hashed passwords, a role, and the communes each one may see."""

from __future__ import annotations

import functools
import hashlib
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from beffroi.core.limits import PASSWORD_MAX, check_user_name
from beffroi.core.model import naive_utc, utcnow
from beffroi.core.seams import SmallStore
from beffroi.i18n import DEFAULT_LOCALE, LOCALES, N_, _
from beffroi.state import open_store
from beffroi.state.config import Place

log = logging.getLogger(__name__)

ALL = "*"
ROLES = ("viewer", "operator", "supervisor", "auditor", "admin")
# What each role may do beyond looking; a role does not inherit another's rights by name.
RIGHTS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"ack", "shelve", "setpoint", "interventions"}),
    "supervisor": frozenset(
        {"ack", "shelve", "setpoint", "playbook", "rules", "inventory", "interventions"}
    ),
    "auditor": frozenset({"export", "audit"}),
    "admin": frozenset(
        {
            "ack",
            "shelve",
            "setpoint",
            "playbook",
            "rules",
            "inventory",
            "export",
            "audit",
            "users",
            "interventions",
        }
    ),
}
# Roles as users read them (the stored codes stay English).
ROLE_LABELS = {
    "viewer": N_("viewer"),
    "operator": N_("operator"),
    "supervisor": N_("supervisor"),
    "auditor": N_("auditor"),
    "admin": N_("administrator"),
}
MIN_PASSWORD = 10
# Ended sessions (and sessions nobody came back to) are kept this long for whoever looks at the
# file after an incident, then dropped at a login.
KEEP_SESSIONS = timedelta(days=30)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name VARCHAR PRIMARY KEY,
    hash VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    communes VARCHAR[] NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled BOOLEAN NOT NULL DEFAULT false
);
CREATE TABLE IF NOT EXISTS sessions (
    id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    created TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    ended TIMESTAMP,
    ended_why VARCHAR,
    browser VARCHAR
);
"""
# Each user's interface language; users made before it speak the default, French.
LANGUAGE = f"ALTER TABLE users ADD COLUMN language VARCHAR DEFAULT '{DEFAULT_LOCALE}'"
MIGRATIONS = (SCHEMA, LANGUAGE)
# sessions: one row per login. `id` is the SHA-256 of the token the browser's session cookie
# carries, `browser` that of the browser's id (see open_session), so the file holds no usable
# cookie; times are naive UTC; `ended` is set once, with why (logout, password, changed,
# removed, idle, lifetime, replaced).


@dataclass(frozen=True, slots=True)
class User:
    """A user as the HMI sees it: name, role, commune scope (`*` for the metropolis), language."""

    name: str
    role: str
    communes: tuple[str, ...]
    language: str = DEFAULT_LOCALE

    @property
    def everywhere(self) -> bool:
        """Return True when the user's scope is the whole metropolis."""
        return ALL in self.communes

    def sees(self, commune: str) -> bool:
        """Tell whether data of this commune may be shown to the user."""
        return self.everywhere or commune in self.communes

    def may(self, right: str) -> bool:
        """Tell whether the user's role grants a right (ack, setpoint, export, users…)."""
        return right in RIGHTS.get(self.role, frozenset())


@dataclass(frozen=True, slots=True)
class Session:
    """An open session as stored: whose, opened when, last used when (aware UTC)."""

    user: User
    created: datetime
    last_seen: datetime


class UserError(ValueError):
    """A user operation that cannot be done, with the reason."""


def _key(token: str) -> str:
    """Return what the file keeps of a session token: its SHA-256, useless as a cookie."""
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(ts: datetime) -> datetime:
    return ts.replace(tzinfo=UTC)


def check_language(language: str) -> str:
    """Return a known interface language, or refuse it naming the known ones."""
    if language not in LOCALES:
        raise UserError(
            _("unknown language %(language)s; expected one of %(known)s")
            % {"language": repr(language), "known": ", ".join(LOCALES)}
        )
    return language


def _user(name: str, role: str, communes: list[str], language: str | None) -> User:
    """Build a user from a row (a language missing or no longer offered reads as the default)."""
    return User(name, role, tuple(communes), language if language in LOCALES else DEFAULT_LOCALE)


class UserStore:
    """Users and their sessions in a DuckDB file; passwords only as argon2id hashes.

    Every change to a user's password, role or communes, and the user's removal, ends the
    user's sessions in the same transaction: whoever changes users (the Users page, `beffroi
    user`, the demo's reset) cannot forget to.
    """

    def __init__(
        self,
        where: Place | str,
        known_communes: set[str] | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        # A file a running gateway holds raises StoreLocked, naming it.
        self._db: SmallStore = open_store(where, MIGRATIONS, what="users file")
        self.path = self._db.path
        self.clock = clock
        self._hasher = PasswordHasher()
        self.known_communes = known_communes
        self._revision = 0
        _dummy_hash()  # made now, so that no login, even the first, times differently

    @property
    def revision(self) -> int:
        """Return a number that changes after any change of a user or end of a session.

        Readers that keep sessions in memory read them again when it moves. It moves while the
        change holds the file's lock, so a reader that sees the new number and then reads gets
        the new rows. A store shared by several processes must move it for the others' changes.
        """
        return self._revision

    def _changed(self) -> None:
        # Called with the file's lock held, after the statements of the change.
        self._revision += 1

    def _end_sessions(self, name: str, why: str) -> int:
        """End a user's open sessions (the caller holds the lock); return how many."""
        ended = self._db.rows(
            "UPDATE sessions SET ended = ?, ended_why = ? WHERE name = ? AND ended IS NULL "
            "RETURNING id",
            [naive_utc(self.clock()), why, name],
        )
        if ended:
            log.info("ended %d session(s) of %s: %s", len(ended), name, why)
        return len(ended)

    def _check(self, role: str, communes: list[str], password: str | None) -> None:
        if role not in ROLES:
            raise UserError(
                _("unknown role %(role)s; expected one of %(roles)s")
                % {"role": repr(role), "roles": ", ".join(ROLES)}
            )
        if not communes:
            raise UserError(
                _("give at least one commune, or %(all)s for the whole metropolis")
                % {"all": repr(ALL)}
            )
        if self.known_communes is not None:
            unknown = [c for c in communes if c != ALL and c not in self.known_communes]
            if unknown:
                raise UserError(
                    _("unknown commune(s): %(communes)s") % {"communes": ", ".join(unknown)}
                )
        if password is not None and len(password) < MIN_PASSWORD:
            raise UserError(
                _("password too short: at least %(n)d characters") % {"n": MIN_PASSWORD}
            )
        if password is not None and len(password) > PASSWORD_MAX:
            raise UserError(_("password too long: at most %(n)d characters") % {"n": PASSWORD_MAX})

    def add(
        self,
        name: str,
        password: str,
        role: str,
        communes: list[str],
        language: str = DEFAULT_LOCALE,
    ) -> User:
        """Create a user; refuses an existing name."""
        try:
            check_user_name(name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        self._check(role, communes, password)
        check_language(language)
        digest = self._hasher.hash(password)
        with self._db.transaction():
            if self._db.one("SELECT 1 FROM users WHERE name = ?", [name]):
                raise UserError(_("user %(name)s exists already") % {"name": repr(name)})
            self._db.run(
                "INSERT INTO users (name, hash, role, communes, language) VALUES (?, ?, ?, ?, ?)",
                [name, digest, role, communes, language],
            )
            # A name given again is a new account: nothing of an earlier one's may log it in.
            self._end_sessions(name, "removed")
            self._changed()
        return User(name, role, tuple(communes), language)

    def upsert(self, name: str, password: str, role: str, communes: list[str]) -> User:
        """Create or reset a user (used for the demo's users); ends the user's sessions."""
        self._check(role, communes, password)
        digest = self._hasher.hash(password)
        with self._db.transaction():
            self._db.run(
                "INSERT INTO users (name, hash, role, communes) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name) DO UPDATE SET hash = excluded.hash, role = excluded.role, "
                "communes = excluded.communes",
                [name, digest, role, communes],
            )
            self._end_sessions(name, "password")
            self._changed()
        got = self.get(name)
        return got if got is not None else User(name, role, tuple(communes))

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password and end the user's sessions."""
        self._check("viewer", [ALL], password)
        digest = self._hasher.hash(password)
        with self._db.transaction():
            if self.get(name) is None:
                raise UserError(_("no user %(name)s") % {"name": repr(name)})
            self._db.run("UPDATE users SET hash = ? WHERE name = ?", [digest, name])
            self._end_sessions(name, "password")
            self._changed()

    def update(self, name: str, role: str, communes: list[str]) -> User:
        """Change a user's role and communes (the password stays); a change ends the sessions."""
        self._check(role, communes, None)
        with self._db.transaction():
            before = self.get(name)
            if before is None:
                raise UserError(_("no user %(name)s") % {"name": repr(name)})
            self._db.run(
                "UPDATE users SET role = ?, communes = ? WHERE name = ?", [role, communes, name]
            )
            if (before.role, before.communes) != (role, tuple(communes)):
                self._end_sessions(name, "changed")
            self._changed()
        return User(name, role, tuple(communes), before.language)

    def set_language(self, name: str, language: str) -> User:
        """Change a user's interface language (the sessions stay: it changes no right)."""
        check_language(language)
        with self._db.transaction():
            before = self.get(name)
            if before is None:
                raise UserError(_("no user %(name)s") % {"name": repr(name)})
            self._db.run("UPDATE users SET language = ? WHERE name = ?", [language, name])
            # The sessions read the user again at their next request, in the new language.
            self._changed()
        return User(before.name, before.role, before.communes, language)

    def remove(self, name: str) -> None:
        """Delete a user and end the user's sessions."""
        with self._db.transaction():
            if self.get(name) is None:
                raise UserError(_("no user %(name)s") % {"name": repr(name)})
            self._db.run("DELETE FROM users WHERE name = ?", [name])
            self._end_sessions(name, "removed")
            self._changed()

    @property
    def shared(self) -> bool:
        """True when the users live in PostgreSQL, shared by the gateways of a pair."""
        return self._db.shared

    def get(self, name: str) -> User | None:
        """Return an enabled user by name."""
        rows = self._db.rows(
            "SELECT name, role, communes, language FROM users WHERE name = ? AND NOT disabled",
            [name],
        )
        return _user(*rows[0]) if rows else None

    def verify(self, name: str, password: str) -> User | None:
        """Return the user when the password matches, else None (same work either way)."""
        stored = self._db.one("SELECT hash FROM users WHERE name = ? AND NOT disabled", [name])
        # Hash something even for unknown names, so timing does not reveal which names exist.
        # Outside the file's lock: a slow hash must not hold up other logins.
        try:
            self._hasher.verify(stored or _dummy_hash(), password)
        except (VerificationError, InvalidHashError):
            return None
        return self.get(name) if stored else None

    def all(self) -> list[User]:
        """Return every user, sorted by name."""
        rows = self._db.rows("SELECT name, role, communes, language FROM users ORDER BY name")
        return [_user(*r) for r in rows]

    def open_session(self, name: str, browser: str | None = None) -> str:
        """Open a session for a user from a browser; return its token (the file keeps a hash).

        `browser` is the id the browser's cookie gives, if any: `knows_browser` answers from it.
        """
        token = secrets.token_urlsafe(32)
        now = naive_utc(self.clock())
        with self._db.transaction():
            # Old history goes at a login rather than on a timer: logins are few.
            self._db.run(
                "DELETE FROM sessions WHERE coalesce(ended, last_seen) < ?", [now - KEEP_SESSIONS]
            )
            self._db.run(
                "INSERT INTO sessions (id, name, created, last_seen, browser) "
                "VALUES (?, ?, ?, ?, ?)",
                [_key(token), name, now, now, _key(browser) if browser else None],
            )
        return token

    def knows_browser(self, name: str, browser: str) -> bool:
        """Tell whether a user has logged in from this browser (in the sessions kept)."""
        return bool(
            self._db.one(
                "SELECT 1 FROM sessions WHERE name = ? AND browser = ? LIMIT 1",
                [name, _key(browser)],
            )
        )

    def session(self, token: str) -> Session | None:
        """Return a token's session with its user as stored now; None if ended or unknown."""
        rows = self._db.rows(
            "SELECT u.name, u.role, u.communes, u.language, s.created, s.last_seen FROM sessions s "
            "JOIN users u ON u.name = s.name "
            "WHERE s.id = ? AND s.ended IS NULL AND NOT u.disabled",
            [_key(token)],
        )
        if not rows:
            return None
        name, role, communes, language, created, last_seen = rows[0]
        user = _user(name, role, communes, language)
        return Session(user, _aware(created), _aware(last_seen))

    def touch_session(self, token: str, at: datetime) -> None:
        """Record that a session was used at a time (kept for its idle lifetime)."""
        when = naive_utc(at)
        self._db.run(
            "UPDATE sessions SET last_seen = ? WHERE id = ? AND ended IS NULL AND last_seen < ?",
            [when, _key(token), when],
        )

    def end_session(self, token: str, why: str) -> bool:
        """End one session, saying why; return False if it was not open."""
        with self._db.locked():
            ended = self._db.rows(
                "UPDATE sessions SET ended = ?, ended_why = ? WHERE id = ? AND ended IS NULL "
                "RETURNING name",
                [naive_utc(self.clock()), why, _key(token)],
            )
            if ended:
                self._changed()
        return bool(ended)

    def close(self) -> None:
        """Close the file."""
        self._db.close()


@functools.cache
def _dummy_hash() -> str:
    """Return a hash to verify unknown names against (made once, at the first such login)."""
    return PasswordHasher().hash("not a password of anyone")


# The demo's users: one per kind of person who uses the command post.
DEMO_USERS = (
    ("superviseur", "supervisor", [ALL]),
    ("operateur-talant", "operator", ["talant"]),
    ("auditeur", "auditor", [ALL]),
    ("admin", "admin", [ALL]),
)


def reset_demo_users(store: UserStore) -> dict[str, str]:
    """Give each demo user a fresh random password; return name → password to show once."""
    import secrets

    out = {}
    for name, role, communes in DEMO_USERS:
        communes = [
            c for c in communes if c == ALL or not store.known_communes or c in store.known_communes
        ] or [ALL]
        password = secrets.token_urlsafe(9)
        store.upsert(name, password, role, communes)
        out[name] = password
    return out
