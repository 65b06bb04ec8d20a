"""The lease that makes one gateway of a pair the active one, kept in PostgreSQL.

One row per pair: its holder, an epoch counted up at every change of holder (the fencing token),
and when it runs out by PostgreSQL's clock, so that the two machines' clocks never compare.
The holder renews it; anyone takes it once it has run out. Beside it, each node's heartbeat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beffroi.state.config import PgPlace
from beffroi.state.postgres import PgStore

SCHEMA = """
CREATE TABLE IF NOT EXISTS lease (
    name VARCHAR PRIMARY KEY, holder VARCHAR NOT NULL, epoch BIGINT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL, expires_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    node VARCHAR PRIMARY KEY, url VARCHAR NOT NULL, role VARCHAR NOT NULL,
    started_at TIMESTAMPTZ NOT NULL, seen_at TIMESTAMPTZ NOT NULL, live_tags BIGINT,
    newest_sample TIMESTAMPTZ
);
"""
MIGRATIONS = (SCHEMA,)
LEASE = "central"

# Renew what is ours, or take what has run out; the epoch moves only when the holder changes.
# One statement, so one round trip holds the row: a node cut off between two statements of a
# transaction would leave the row locked for the other until the server noticed.
CLAIM = """
WITH claimed AS (
    INSERT INTO lease AS l (name, holder, epoch, acquired_at, expires_at)
    VALUES (?, ?, 1, now(), now() + ? * interval '1 second')
    ON CONFLICT (name) DO UPDATE SET
        holder = excluded.holder,
        epoch = CASE WHEN l.holder = excluded.holder THEN l.epoch ELSE l.epoch + 1 END,
        acquired_at = CASE WHEN l.holder = excluded.holder THEN l.acquired_at ELSE now() END,
        expires_at = excluded.expires_at
    WHERE l.holder = excluded.holder OR l.expires_at < now()
    RETURNING holder, epoch, expires_at
)
SELECT holder, epoch, extract(epoch FROM expires_at - now()), true FROM claimed
UNION ALL
SELECT holder, epoch, extract(epoch FROM expires_at - now()), false FROM lease
WHERE name = ? AND NOT EXISTS (SELECT 1 FROM claimed)
"""


@dataclass(frozen=True, slots=True)
class LeaseState:
    """The lease as a claim found it: who holds it, its epoch, how long it has left."""

    holder: str
    epoch: int
    left_s: float
    mine: bool


class Lease:
    """One node's view of its pair's lease and heartbeats (its own connection)."""

    def __init__(self, url: str, node: str, lease_s: float):
        self.node, self.lease_s = node, lease_s
        self._db = PgStore(PgPlace(url, "pair"), MIGRATIONS, what="pair lease")

    def claim(self) -> LeaseState:
        """Renew the lease if ours, take it if it ran out; return it as it stands after."""
        [(holder, epoch, left, won)] = self._db.rows(CLAIM, [LEASE, self.node, self.lease_s, LEASE])
        return LeaseState(str(holder), int(epoch), float(left), bool(won) and holder == self.node)

    def release(self) -> None:
        """Give the lease up now (a clean stop): the standby need not wait for it to run out."""
        self._db.run(
            "UPDATE lease SET expires_at = now() - interval '1 second' "
            "WHERE name = ? AND holder = ?",
            [LEASE, self.node],
        )

    def beat(self, role: str, url: str, live_tags: int, newest_sample: Any) -> None:
        """Record that this node is alive, in which role, and how fresh its live values are."""
        self._db.run(
            "INSERT INTO nodes VALUES (?, ?, ?, now(), now(), ?, ?) ON CONFLICT (node) DO UPDATE "
            "SET url = excluded.url, role = excluded.role, seen_at = excluded.seen_at, "
            "live_tags = excluded.live_tags, newest_sample = excluded.newest_sample",
            [self.node, url, role, live_tags, newest_sample],
        )

    def nodes(self) -> list[dict[str, Any]]:
        """Return every node's heartbeat, with its age in seconds by PostgreSQL's clock."""
        return self._db.fetch(
            "SELECT node, url, role, live_tags, newest_sample, "
            "extract(epoch FROM now() - seen_at) AS age_s FROM nodes ORDER BY node"
        )

    def close(self) -> None:
        """Close the connection."""
        self._db.close()
