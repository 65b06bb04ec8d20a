"""Anchors of the audit log: signed checkpoints of its head, kept outside its file.

The hash chain shows an edited or deleted record wherever a record follows it, but deleting the
newest records leaves a shorter chain that is intact. An anchor {seq, hash, time} written
elsewhere, signed with HMAC-SHA256, names a record the log must still hold with that very hash:
a log that ends before it was cut, one that holds another record there was rewritten.

Anchors are JSON lines appended (and fsynced) to one or more files the operators choose, at
best on another disk or host; the key comes from an environment variable named in the config,
or from a file made at first use in the data folder (which protects less: whoever can rewrite
the audit file there can read it).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from beffroi.control.config import ControlSite, audit_anchor_key_path, audit_anchor_paths
from beffroi.core.errors import BeffroiError
from beffroi.core.model import utcnow

log = logging.getLogger(__name__)

VERSION = 1
MIN_KEY_BYTES = 16
# How many anchors that do not verify a report names one by one (then only a count).
NAMED = 3


class AnchorError(BeffroiError):
    """No anchor could be written or checked: no key, or no place took it."""


def _canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def key_id(key: bytes) -> str:
    """Return a short fingerprint of a key, to tell "another key" from "an edited line"."""
    return hashlib.sha256(b"beffroi audit anchor key\0" + key).hexdigest()[:16]


def signature(body: dict[str, Any], key: bytes) -> str:
    """Return the HMAC-SHA256 of an anchor's fields (canonical JSON), in hex."""
    return hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class Anchor:
    """A signed checkpoint: the log held record `seq` with hash `hash` at `time` (UTC)."""

    seq: int
    hash: str
    time: str
    why: str
    kid: str
    sig: str = ""
    where: str = field(default="", compare=False)  # file:line it was read from, not signed

    def body(self) -> dict[str, Any]:
        """Return the signed fields."""
        return {
            "v": VERSION,
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time,
            "why": self.why,
            "kid": self.kid,
        }

    def line(self) -> str:
        """Return the anchor as one JSON line (without the newline)."""
        return _canonical({**self.body(), "sig": self.sig}).decode()


def parse_anchor(text: str, where: str = "") -> tuple[Anchor, dict[str, Any]] | None:
    """Return an anchor and the fields its signature covers, or None if the line is not one."""
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("v") != VERSION:
        return None
    sig = raw.pop("sig", None)
    seq, digest = raw.get("seq"), raw.get("hash")
    if not isinstance(sig, str) or not isinstance(seq, int) or not isinstance(digest, str):
        return None
    time, why, kid = (str(raw.get(k, "")) for k in ("time", "why", "kid"))
    anchor = Anchor(seq, digest, time, why, kid, sig, where)
    # The signature covers every field of the line as read, so an added field breaks it too.
    return anchor, raw


def load_key(env_name: str, key_file: Path, *, create: bool) -> bytes:
    """Return the anchor key: from the environment variable, else the key file (made if asked)."""
    if env_name:
        value = os.environ.get(env_name, "")
        if not value:
            raise AnchorError(f"${env_name} is not set: it must hold the audit anchor key")
        if len(value.encode()) < MIN_KEY_BYTES:
            raise AnchorError(f"${env_name} is too short for a key (at least {MIN_KEY_BYTES})")
        return value.encode()
    try:
        key = key_file.read_bytes()
    except FileNotFoundError:
        if not create:
            raise AnchorError(f"no anchor key: {key_file} does not exist") from None
    except OSError as exc:
        raise AnchorError(f"cannot read the anchor key {key_file}: {exc.strerror}") from None
    else:
        if len(key) < MIN_KEY_BYTES:  # an emptied file would sign with an empty key
            raise AnchorError(f"the anchor key {key_file} is too short (at least {MIN_KEY_BYTES})")
        return key
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile by another process: use that one
        return key_file.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
        f.flush()
        os.fsync(f.fileno())
    log.warning(
        "audit anchors: made the key %s; a key on the gateway's disk protects less than one "
        "held elsewhere (set [control] audit_anchor_key_env)",
        key_file,
    )
    return key


def _fsync_dir(folder: Path) -> None:
    """Make a new file's name durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def append_line(path: Path, line: str) -> None:
    """Append a line to a file and fsync it; start on a new line after a torn last write.

    The folder is not made here: a missing one is an error operators see, not a new folder
    on the wrong disk.
    """
    data = line.encode() + b"\n"
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    if size == 0:
        _fsync_dir(path.parent)


@dataclass
class AnchorScan:
    """What the anchor places hold: the anchors to check the log with, and what is wrong."""

    anchors: dict[int, dict[str, Anchor]] = field(default_factory=dict)  # seq → hash → first
    bad: list[str] = field(default_factory=list)  # anchors whose signature does not verify
    bad_count: int = 0
    unreadable: list[str] = field(default_factory=list)  # file:line of lines that are no anchor
    absent: list[Path] = field(default_factory=list)
    key_problem: str = ""

    @property
    def newest(self) -> Anchor | None:
        """Return the anchor naming the highest record (None when there is none)."""
        if not self.anchors:
            return None
        return next(iter(self.anchors[max(self.anchors)].values()))

    def problems(self) -> list[str]:
        """Say what makes the anchors themselves fail the check."""
        out = []
        if self.bad_count:
            more = self.bad_count - len(self.bad)
            out.append("; ".join(self.bad) + (f"; and {more} more" if more > 0 else ""))
        if self.key_problem and self.anchors:
            out.append(f"the anchors' signatures could not be checked: {self.key_problem}")
        return out

    def notes(self) -> list[str]:
        """Say what the check could not use, without failing it."""
        out = []
        if self.unreadable:
            shown = ", ".join(self.unreadable[:NAMED])
            more = len(self.unreadable) - NAMED
            rest = f" and {more} more" if more > 0 else ""
            out.append(f"skipped lines that are no anchor: {shown}{rest}")
        return out


class AnchorBook:
    """The anchor places and key of one audit log: write checkpoints, read them back."""

    def __init__(
        self,
        places: Sequence[Path],
        key_env: str,
        key_file: Path,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.places, self.key_env, self.key_file = list(places), key_env, key_file
        self.clock = clock
        self.last: Anchor | None = None  # the newest this process wrote
        self.error = ""  # why the last write failed somewhere, "" when it went everywhere
        self._key: bytes | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, site: ControlSite, clock: Callable[[], datetime] = utcnow) -> AnchorBook:
        """Return the book `[control]` describes (places, key variable or key file)."""
        return cls(
            audit_anchor_paths(site),
            site.control.audit_anchor_key_env,
            audit_anchor_key_path(site),
            clock,
        )

    def status(self) -> dict[str, Any]:
        """Return the newest anchor written and why a place failed, for /healthz."""
        last = self.last
        return {
            "seq": last.seq if last else 0,
            "time": last.time if last else "",
            "places": [str(p) for p in self.places],
            "error": self.error,
        }

    def describe(self) -> str:
        """Return the places, for messages."""
        return ", ".join(str(p) for p in self.places)

    def key(self, create: bool = False) -> bytes:
        """Return the key (made in the key file if asked and none exists); raise AnchorError."""
        if self._key is None:
            self._key = load_key(self.key_env, self.key_file, create=create)
        return self._key

    def write(self, seq: int, digest: str, why: str) -> Anchor:
        """Sign a checkpoint and append it to every place; raise AnchorError if none took it."""
        key = self.key()
        stamp = self.clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        unsigned = Anchor(seq, digest, stamp, why, key_id(key))
        anchor = Anchor(seq, digest, stamp, why, unsigned.kid, signature(unsigned.body(), key))
        failed = []
        with self._lock:
            for place in self.places:
                try:
                    append_line(place, anchor.line())
                except OSError as exc:
                    failed.append(f"{place}: {exc.strerror or exc}")
            self.error = "; ".join(failed)
            if len(failed) == len(self.places):
                raise AnchorError(f"no anchor place took record {seq}: {self.error}")
            if self.last is None or seq >= self.last.seq:
                self.last = anchor
        if failed:
            log.error("audit anchor of record %d not written to %s", seq, self.error)
        return anchor

    def _lines(self, place: Path) -> Iterator[tuple[int, str]]:
        with place.open(encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                if text.strip():
                    yield number, text

    def scan(self) -> AnchorScan:
        """Read every place: signed anchors by record, and those that do not verify."""
        scan = AnchorScan()
        try:
            key: bytes | None = self.key()
        except AnchorError as exc:
            key, scan.key_problem = None, str(exc)
        kid = key_id(key) if key is not None else ""
        with self._lock:
            for place in self.places:
                if not place.exists():
                    scan.absent.append(place)
                    continue
                for number, text in self._lines(place):
                    where = f"{place}:{number}"
                    parsed = parse_anchor(text, where)
                    if parsed is None:
                        scan.unreadable.append(where)
                        continue
                    anchor, body = parsed
                    if key is not None and not hmac.compare_digest(
                        signature(body, key), anchor.sig
                    ):
                        scan.bad_count += 1
                        if len(scan.bad) < NAMED:
                            scan.bad.append(_unverified(anchor, kid))
                        continue
                    scan.anchors.setdefault(anchor.seq, {}).setdefault(anchor.hash, anchor)
        return scan


def _unverified(anchor: Anchor, kid: str) -> str:
    """Say that an anchor's signature does not verify, and whether it names another key."""
    why = (
        f"it names key {anchor.kid}, this key is {kid}: another key, or an edited line"
        if anchor.kid != kid
        else "edited or forged"
    )
    return (
        f"the anchor at {anchor.where} (record {anchor.seq}, {anchor.time or 'no time'}) has a "
        f"signature that does not verify ({why})"
    )


class AnchorMail:
    """When to e-mail the newest anchor to the auditors: a new one, at most every N hours."""

    def __init__(self, to: Sequence[str], every_h: float):
        self.to, self.every = list(to), timedelta(hours=every_h)
        self._seq = 0
        self._at: datetime | None = None

    def take(self, anchor: Anchor | None, now: datetime) -> tuple[str, str] | None:
        """Return the subject and body due now (and count them sent), or None."""
        if not self.to or anchor is None or anchor.seq <= self._seq:
            return None
        if self._at is not None and now - self._at < self.every:
            return None
        self._seq, self._at = anchor.seq, now
        return anchor_email(anchor)


def anchor_email(anchor: Anchor) -> tuple[str, str]:
    """Return the subject and body of an e-mail that keeps an anchor away from the gateway."""
    subject = f"Beffroi — audit log checkpoint: record {anchor.seq}"
    body = (
        f"The gateway's audit log held record {anchor.seq} with hash\n{anchor.hash}\n"
        f"on {anchor.time} (UTC).\n\n"
        "Keep this e-mail: it is a copy of the log's head outside the gateway, which someone who\n"
        "can change the gateway's files cannot take back. To check the log against it, the log\n"
        f"must not end before record {anchor.seq} (`beffroi audit verify` prints where it ends)\n"
        f"and record {anchor.seq} must carry this hash (`beffroi audit export` lists every\n"
        "record's hash).\n\n"
        "The signed anchor, as kept in the anchor files:\n"
        f"{anchor.line()}\n"
    )
    return subject, body
