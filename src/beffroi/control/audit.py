"""The audit log: append-only records in a DuckDB file of their own, chained by SHA-256.

Each record's hash covers a canonical serialisation of its fields and the previous record's
hash, so editing or deleting any record (but the newest ones, which nothing follows yet)
breaks the chain where it happened. Deleting the newest ones shows against the anchors
(control/audit_anchor.py): signed checkpoints of the head kept outside the file, which name
records the log must still hold. The head hash is also logged at open and close.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from beffroi.control.audit_anchor import Anchor, AnchorBook, AnchorError, AnchorScan
from beffroi.core.csv_safe import safe_cell
from beffroi.core.model import utcnow
from beffroi.core.seams import SmallStore
from beffroi.state import open_store
from beffroi.state.config import Place

log = logging.getLogger(__name__)

GENESIS = "0" * 64
# What record_many takes, one per record: user, action, target, commune, outcome, detail.
Entry = tuple[str, str, str, str, str, Mapping[str, Any]]
# Up to this many rows an INSERT of bound values is quicker than registering a DataFrame.
SMALL_BATCH = 16
COLUMNS = ("seq", "ts", "user_name", "action", "target", "commune", "outcome", "detail")
SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, user_name VARCHAR NOT NULL,
    action VARCHAR NOT NULL, target VARCHAR NOT NULL, commune VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL, detail VARCHAR NOT NULL, prev_hash VARCHAR NOT NULL,
    hash VARCHAR NOT NULL
);
"""
# Version 2: the tables control keeps beside the log (control/mail.py, control/runs.py).
CONTROL_TABLES = """
CREATE TABLE IF NOT EXISTS control_outbox (
    id BIGINT PRIMARY KEY, message_id VARCHAR NOT NULL, created TIMESTAMP NOT NULL,
    run_id VARCHAR, recipients VARCHAR NOT NULL, subject VARCHAR, message VARCHAR NOT NULL,
    status VARCHAR NOT NULL, attempts INTEGER NOT NULL, last_error VARCHAR, sent_at TIMESTAMP
);
CREATE TABLE IF NOT EXISTS playbook_runs (
    id VARCHAR PRIMARY KEY, updated TIMESTAMP NOT NULL, state VARCHAR NOT NULL,
    body VARCHAR NOT NULL
);
"""
MIGRATIONS = (SCHEMA, CONTROL_TABLES)
_HEAD = "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1"
EXPORT_COLUMNS = [
    "seq",
    "time",
    "utc",
    "user",
    "action",
    "target",
    "commune",
    "outcome",
    "detail",
    "prev_hash",
    "hash",
]


class AuditError(RuntimeError):
    """The audit log could not record something (no record, no command)."""


def _json_default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.astimezone(UTC).isoformat()
    return str(v)


def canonical_detail(detail: dict[str, Any]) -> str:
    """Serialise details canonically: sorted keys, compact, UTF-8 as is."""
    return json.dumps(
        detail, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_json_default
    )


def _ts_text(ts: datetime) -> str:
    """Return the canonical text of a stored time: naive UTC to the microsecond, with Z."""
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_hash(row: Sequence[Any], prev_hash: str) -> str:
    """Return the SHA-256 of a record (COLUMNS order, ts naive UTC) chained to prev_hash."""
    seq, ts, user, action, target, commune, outcome, detail = row
    body = {
        "seq": int(seq),
        "ts": _ts_text(ts),
        "user": user,
        "action": action,
        "target": target,
        "commune": commune,
        "outcome": outcome,
        "detail": detail,
        "prev": prev_hash,
    }
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One record as appended."""

    seq: int
    ts: datetime
    user: str
    action: str
    target: str
    commune: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    hash: str = ""


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What a check found: ok, how many records, the head, or the first broken one (None when
    only an anchor fails), and the newest anchor the log matches (records up to it are all there).
    """

    ok: bool
    count: int
    head: str
    broken_seq: int | None = None
    problem: str = ""
    anchored_seq: int = 0
    anchored_at: str = ""
    note: str = ""


class AuditLog:
    """The hash-chained audit log; append and read only, safe across threads."""

    def __init__(
        self,
        where: Place | str,
        read_only: bool = False,
        clock: Callable[[], datetime] = utcnow,
        anchors: AnchorBook | None = None,
    ):
        self._db: SmallStore = open_store(where, MIGRATIONS, read_only=read_only, what="audit log")
        self.path = self._db.path
        self.clock, self.read_only, self.anchors = clock, read_only, anchors
        # The node of a redundant pair writing here: every record it appends names it.
        self.node: str | None = None
        self._next, self._head = self._read_head()
        log.info("audit log %s: %d records, head %s", self.path, self._next - 1, self._head)

    def _read_head(self) -> tuple[int, str]:
        """Return the next seq and the head hash as stored."""
        last = self._db.rows(_HEAD)
        return (int(last[0][0]) + 1, str(last[0][1])) if last else (1, GENESIS)

    @property
    def head(self) -> str:
        """Return the hash of the newest record (GENESIS when empty)."""
        return self._head

    def __len__(self) -> int:
        return self._next - 1

    def record(
        self,
        user: str,
        action: str,
        *,
        target: str = "",
        commune: str = "",
        outcome: str = "ok",
        **detail: Any,
    ) -> AuditRecord:
        """Append one record, chained to the previous one; raise AuditError if it cannot."""
        return self.record_many([(user, action, target, commune, outcome, detail)])[0]

    def record_many(self, entries: Sequence[Entry]) -> list[AuditRecord]:
        """Append records in order as one transaction: all chained and durable, or none."""
        if not entries:
            return []
        node = {"node": self.node} if self.node else {}
        texts = [canonical_detail({**e[5], **node}) for e in entries]
        now = self.clock().astimezone(UTC).replace(tzinfo=None)
        try:
            with self._db.exclusive("audit chain"):
                rows, seq, head = self._chain(entries, texts, now)
        except self._db.errors as exc:
            # One transaction: the store rolled all of it back, so the chain it holds still
            # ends at its head, and the next append carries on from there.
            log.error("audit log %s cannot append %d: %s", self.path, len(entries), exc)
            actions = ", ".join(sorted({e[1] for e in entries}))
            raise AuditError(f"the audit log cannot record {actions}: {exc}") from exc
        self._next, self._head = seq, head  # committed: the chain goes on from here
        stamp = now.replace(tzinfo=UTC)
        return [
            AuditRecord(r[0], stamp, r[2], e[1], e[2], e[3], e[4], dict(e[5]), r[9])
            for r, e in zip(rows, entries, strict=True)
        ]

    def _chain(
        self, entries: Sequence[Entry], texts: list[str], now: datetime
    ) -> tuple[list[tuple], int, str]:
        """Chain and append records to the head (inside `exclusive`): rows, next seq, head."""
        seq, head = self._read_head() if self._db.shared else (self._next, self._head)
        # Shared: one chain for every writer; the other gateway of a pair may have appended.
        rows = []
        for (user, action, target, commune, outcome, _), text in zip(entries, texts, strict=True):
            row = (seq, now, user or "?", action, target, commune, outcome, text)
            digest = record_hash(row, head)
            rows.append((*row, head, digest))
            seq, head = seq + 1, digest
        self._append(rows)
        return rows, seq, head

    def _append(self, rows: list[tuple]) -> None:
        """Insert rows in one statement (DuckDB commits it on its own, with one WAL sync)."""
        if len(rows) <= SMALL_BATCH:
            values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(rows))
            self._db.run(f"INSERT INTO audit VALUES {values}", [v for r in rows for v in r])
            return
        # Bound parameters grow costly by the hundred and executemany costs about as much per
        # row as a record of its own; a DataFrame goes in as one columnar scan.
        batch = pd.DataFrame(rows, columns=[*COLUMNS, "prev_hash", "hash"])
        self._db.run("INSERT INTO audit SELECT * FROM audit_batch", views={"audit_batch": batch})

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """Run a statement on the file's other tables (outbox, playbook runs)."""
        self._db.run(sql, params)

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

    def _rows(self, chunk: int = 10_000) -> Iterator[tuple]:
        """Yield (COLUMNS…, prev_hash, hash) in seq order, a chunk at a time."""
        after = 0
        while True:
            rows = self._db.rows(
                f"SELECT {', '.join(COLUMNS)}, prev_hash, hash FROM audit "
                f"WHERE seq > ? ORDER BY seq LIMIT {int(chunk)}",
                [after],
            )
            if not rows:
                return
            yield from rows
            after = rows[-1][0]

    def verify(self, anchor: bool = True) -> VerifyResult:
        """Check the chain and the anchors: numbering, links, hashes, every anchored record
        still there with its hash; name the first broken record. When all holds, anchor the
        head (unless told not to, or no key is at hand).
        """
        # Read before the walk: an anchor written meanwhile names a record the walk still sees.
        scan = self.anchors.scan() if self.anchors is not None else None
        want = scan.anchors if scan is not None else {}
        prev, expected, count = GENESIS, 1, 0
        matched: Anchor | None = None  # the newest anchor the walk found its record for
        rewritten: tuple[Anchor, str, int] | None = None  # anchor, the log's hash, last match
        for r in self._rows():
            seq, stored_prev, stored = r[0], r[8], r[9]
            if seq != expected:
                return VerifyResult(
                    False, count, prev, expected, f"record {expected} is missing (found {seq})"
                )
            if stored_prev != prev:
                return VerifyResult(
                    False, count, prev, seq, f"record {seq} does not follow record {seq - 1}"
                )
            if record_hash(r[:8], prev) != stored:
                return VerifyResult(
                    False, count, prev, seq, f"record {seq} was altered (hash mismatch)"
                )
            for a in want.get(seq, {}).values():
                if a.hash == stored:
                    matched = a
                elif rewritten is None:
                    rewritten = (a, stored, matched.seq if matched is not None else 0)
            prev, expected, count = stored, expected + 1, count + 1
        if scan is None:
            return VerifyResult(True, count, prev)
        return self._anchored(scan, count, prev, matched, rewritten, anchor)

    def _anchored(
        self,
        scan: AnchorScan,
        count: int,
        head: str,
        matched: Anchor | None,
        rewritten: tuple[Anchor, str, int] | None,
        anchor: bool,
    ) -> VerifyResult:
        """Judge an intact chain against the anchors; anchor its head when all holds."""
        assert self.anchors is not None
        problems, broken = [], None
        if rewritten is not None:
            a, found, before = rewritten
            since = f"records after {before} were" if before else "the log was"
            problems.append(
                f"the anchor of {a.time} names record {a.seq} with hash {a.hash[:16]}…; the "
                f"log's record {a.seq} has hash {found[:16]}…: {since} replaced"
            )
            broken = before + 1
        newest = scan.newest
        if newest is not None and newest.seq > count:
            ends = f"the log ends at {count}" if count else "the log holds no record"
            gone = f"{count + 1}" if newest.seq == count + 1 else f"{count + 1} to {newest.seq}"
            problems.append(
                f"the anchor of {newest.time} names record {newest.seq}; {ends} "
                f"(record{'s' if newest.seq > count + 1 else ''} {gone} deleted)"
            )
            broken = min(broken or count + 1, count + 1)
        problems += scan.problems()
        notes = scan.notes()
        notes += [f"no anchor file {p}" for p in scan.absent if scan.anchors]
        last = matched.seq if matched is not None else 0
        if problems:
            return VerifyResult(
                False,
                broken - 1 if broken is not None else count,
                head,
                broken,
                "; ".join(problems),
                last,
                matched.time if matched is not None else "",
                "; ".join(notes),
            )
        if not scan.anchors and count:
            notes.append(
                f"no anchor in {self.anchors.describe()}: the log's end is not checked "
                "(deleting its newest records would not show)"
            )
        elif last < count:
            newer = (
                f"records {last + 1} to {count} are" if count > last + 1 else f"record {count} is"
            )
            notes.append(f"{newer} newer than the newest anchor")
        if anchor and count > last:
            try:  # a key is never made here: one the gateway does not know would fail later
                matched = self.anchors.write(count, head, "verify")
                last = count
                notes.append(f"record {count} anchored now")
            except AnchorError as exc:
                notes.append(f"not anchored now: {exc}")
        return VerifyResult(
            True,
            count,
            head,
            anchored_seq=last,
            anchored_at=matched.time if matched is not None else "",
            note="; ".join(notes),
        )

    def anchor(self, why: str) -> Anchor | None:
        """Write a signed checkpoint of the head to the anchor places (None: nothing new)."""
        if self.anchors is None:
            return None
        with self._db.locked():
            following, head = self._read_head() if self._db.shared else (self._next, self._head)
        seq = following - 1
        last = self.anchors.last
        if seq == 0 or (last is not None and last.seq >= seq):
            return None
        return self.anchors.write(seq, head, why)

    def frame(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        *,
        users: Sequence[str] = (),
        actions: Sequence[str] = (),
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Return records in [start, end) matching filters, oldest first (ts aware UTC)."""
        matching = {"user_name": users, "action": actions}
        df = self._db.events("audit", "seq", "ts", start, end, matching, limit=limit, aware=("ts",))
        return df.rename(columns={"user_name": "user"})

    def close(self) -> None:
        """Anchor the head (a writable log), checkpoint and close the file, logging the head."""
        if not self.read_only:
            try:
                self.anchor("stop")
            except AnchorError as exc:  # the records are safe; only this checkpoint is lost
                log.error("audit log %s: the head is not anchored at close: %s", self.path, exc)
        with self._db.locked():
            log.info("audit log %s closed: %d records, head %s", self.path, len(self), self._head)
            self._db.close()


def record_command(
    audit: AuditLog | None,
    user: str,
    action: str,
    targets: Mapping[str, str],
    outcome: str = "ok",
    **detail: Any,
) -> bool:
    """Record a command once per target (target → its commune), all or none; False if not."""
    if audit is None:  # control off: no audit log runs
        return True
    try:
        audit.record_many(
            [
                (user, action, target, commune, outcome, detail)
                for target, commune in targets.items()
            ]
        )
    except AuditError:
        return False  # the audit log has logged why
    return True


def to_csv(df: pd.DataFrame, timezone: str = "Europe/Paris") -> str:
    """Return records as CSV: local time with offset (an export is an edge), UTC, both hashes."""
    tz = ZoneInfo(timezone)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(EXPORT_COLUMNS)
    for r, ts in zip(df.itertuples(index=False), df["ts"].dt.to_pydatetime(), strict=True):
        writer.writerow(
            [
                r.seq,
                ts.astimezone(tz).isoformat(),
                _ts_text(ts.replace(tzinfo=None)),
                # Text that people typed (targets, details) is written safe for spreadsheets;
                # the hashes cover the text as stored (see the README on verifying an export).
                safe_cell(r.user),
                safe_cell(r.action),
                safe_cell(r.target),
                safe_cell(r.commune),
                safe_cell(r.outcome),
                safe_cell(r.detail),
                r.prev_hash,
                r.hash,
            ]
        )
    return out.getvalue()
