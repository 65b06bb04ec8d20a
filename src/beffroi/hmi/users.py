"""HMI users: argon2-hashed passwords, a role, and the communes each one may see."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from beffroi.core.seams import SmallStore
from beffroi.state.duckdb import SideStore

log = logging.getLogger(__name__)

ALL = "*"
ROLES = ("viewer", "operator", "supervisor", "auditor", "admin")
# What each role may do beyond looking; a role does not inherit another's rights by name.
RIGHTS: dict[str, frozenset[str]] = {
    "viewer": frozenset(),
    "operator": frozenset({"ack", "shelve", "setpoint"}),
    "supervisor": frozenset({"ack", "shelve", "setpoint", "playbook", "rules"}),
    "auditor": frozenset({"export", "audit"}),
    "admin": frozenset(
        {"ack", "shelve", "setpoint", "playbook", "rules", "export", "audit", "users"}
    ),
}
MIN_PASSWORD = 10

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name VARCHAR PRIMARY KEY,
    hash VARCHAR NOT NULL,
    role VARCHAR NOT NULL,
    communes VARCHAR[] NOT NULL,
    created TIMESTAMPTZ NOT NULL DEFAULT now(),
    disabled BOOLEAN NOT NULL DEFAULT false
);
"""


@dataclass(frozen=True, slots=True)
class User:
    """A user as the HMI sees it: name, role and commune scope (`*` for the metropolis)."""

    name: str
    role: str
    communes: tuple[str, ...]

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


class UserError(ValueError):
    """A user operation that cannot be done, with the reason."""


class UserStore:
    """Users in a DuckDB file; passwords only as argon2id hashes."""

    def __init__(self, path: str | Path, known_communes: set[str] | None = None):
        # A file a running gateway holds raises StoreLocked, naming it.
        self._db: SmallStore = SideStore(path, SCHEMA, what="users file")
        self.path = self._db.path
        self._hasher = PasswordHasher()
        self.known_communes = known_communes
        _dummy_hash()  # made now, so that no login, even the first, times differently

    def _check(self, role: str, communes: list[str], password: str | None) -> None:
        if role not in ROLES:
            raise UserError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        if not communes:
            raise UserError(f"give at least one commune, or {ALL!r} for the whole metropolis")
        if self.known_communes is not None:
            unknown = [c for c in communes if c != ALL and c not in self.known_communes]
            if unknown:
                raise UserError(f"unknown commune(s): {', '.join(unknown)}")
        if password is not None and len(password) < MIN_PASSWORD:
            raise UserError(f"password too short: at least {MIN_PASSWORD} characters")

    def add(self, name: str, password: str, role: str, communes: list[str]) -> User:
        """Create a user; refuses an existing name."""
        self._check(role, communes, password)
        digest = self._hasher.hash(password)
        with self._db.locked():
            if self._db.one("SELECT 1 FROM users WHERE name = ?", [name]):
                raise UserError(f"user {name!r} exists already")
            self._db.run(
                "INSERT INTO users (name, hash, role, communes) VALUES (?, ?, ?, ?)",
                [name, digest, role, communes],
            )
        return User(name, role, tuple(communes))

    def upsert(self, name: str, password: str, role: str, communes: list[str]) -> User:
        """Create or reset a user (used for the demo's users)."""
        self._check(role, communes, password)
        self._db.run(
            "INSERT OR REPLACE INTO users (name, hash, role, communes) VALUES (?, ?, ?, ?)",
            [name, self._hasher.hash(password), role, communes],
        )
        return User(name, role, tuple(communes))

    def set_password(self, name: str, password: str) -> None:
        """Replace a user's password."""
        self._check("viewer", [ALL], password)
        digest = self._hasher.hash(password)
        with self._db.locked():
            if self.get(name) is None:
                raise UserError(f"no user {name!r}")
            self._db.run("UPDATE users SET hash = ? WHERE name = ?", [digest, name])

    def update(self, name: str, role: str, communes: list[str]) -> User:
        """Change a user's role and communes (the password stays)."""
        self._check(role, communes, None)
        with self._db.locked():
            if self.get(name) is None:
                raise UserError(f"no user {name!r}")
            self._db.run(
                "UPDATE users SET role = ?, communes = ? WHERE name = ?", [role, communes, name]
            )
        return User(name, role, tuple(communes))

    def remove(self, name: str) -> None:
        """Delete a user."""
        with self._db.locked():
            if self.get(name) is None:
                raise UserError(f"no user {name!r}")
            self._db.run("DELETE FROM users WHERE name = ?", [name])

    def get(self, name: str) -> User | None:
        """Return an enabled user by name."""
        rows = self._db.rows(
            "SELECT name, role, communes FROM users WHERE name = ? AND NOT disabled", [name]
        )
        return User(rows[0][0], rows[0][1], tuple(rows[0][2])) if rows else None

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
        rows = self._db.rows("SELECT name, role, communes FROM users ORDER BY name")
        return [User(r[0], r[1], tuple(r[2])) for r in rows]

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
