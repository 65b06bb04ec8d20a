"""Durable on-disk spool: batches the back end could not take, replayed in order."""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc

from beffroi.core.model import Quality, Sample

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d{12})-(\d+)\.arrow$")
_KIND_FLOAT, _KIND_BOOL, _KIND_STR = 0, 1, 2
SCHEMA = pa.schema(
    [
        ("tag", pa.string()),
        ("ts", pa.timestamp("us", tz="UTC")),
        ("kind", pa.uint8()),
        ("num", pa.float64()),
        ("text", pa.string()),
        ("quality", pa.uint8()),
        ("server_ts", pa.timestamp("us", tz="UTC")),
        ("status", pa.uint32()),
    ]
)


def _to_table(batch: Sequence[Sample]) -> pa.Table:
    kinds: list[int] = []
    nums: list[float | None] = []
    texts: list[str | None] = []
    for s in batch:
        v = s.value
        if isinstance(v, str):
            kinds.append(_KIND_STR)
            nums.append(None)
            texts.append(v)
        else:
            kinds.append(_KIND_BOOL if isinstance(v, bool) else _KIND_FLOAT)
            nums.append(None if v is None else float(v))
            texts.append(None)
    return pa.table(
        [
            [s.tag for s in batch],
            [s.ts for s in batch],
            kinds,
            nums,
            texts,
            [int(s.quality) for s in batch],
            [s.server_ts for s in batch],
            [s.status for s in batch],
        ],
        schema=SCHEMA,
    )


def _from_table(table: pa.Table) -> list[Sample]:
    cols = table.to_pydict()
    # Segments written before status codes were spooled have none: plain Good.
    status = cols.get("status") or [0] * table.num_rows
    out = []
    for tag, ts, kind, num, text, quality, server_ts, code in zip(
        cols["tag"],
        cols["ts"],
        cols["kind"],
        cols["num"],
        cols["text"],
        cols["quality"],
        cols["server_ts"],
        status,
        strict=True,
    ):
        if kind == _KIND_STR:
            value = text
        elif kind == _KIND_BOOL:
            value = bool(num)
        else:
            value = float("nan") if num is None else num
        out.append(Sample(tag, ts.astimezone(UTC), value, Quality(quality), server_ts, code))
    return out


class Spool:
    """A folder of Arrow IPC segments, one per batch, named by sequence and size.

    Each segment is written to a temporary name, fsynced and renamed, so a crash leaves
    either a whole segment or none. When the folder passes `max_bytes`, the oldest segments
    are dropped and their samples counted in `dropped`.
    """

    def __init__(self, folder: str | Path, max_bytes: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.dropped = 0
        self._lock = threading.Lock()
        for stale in self.folder.glob("*.tmp"):
            stale.unlink()  # a segment whose write did not finish was never acknowledged
        self._segments: list[tuple[int, int, int]] = []  # (seq, samples, bytes)
        for p in self.folder.iterdir():
            m = _NAME.match(p.name)
            if m:
                self._segments.append((int(m.group(1)), int(m.group(2)), p.stat().st_size))
        self._segments.sort()
        self._next = self._segments[-1][0] + 1 if self._segments else 1
        if self._segments:
            log.info("spool holds %d samples from a previous run", self.pending)

    def _path(self, seq: int, n: int) -> Path:
        return self.folder / f"{seq:012d}-{n}.arrow"

    @property
    def pending(self) -> int:
        """Return the number of samples waiting in the spool."""
        return sum(n for _, n, _ in self._segments)

    @property
    def bytes(self) -> int:
        """Return the spool's size on disk."""
        return sum(b for _, _, b in self._segments)

    def __bool__(self) -> bool:
        return bool(self._segments)

    def append(self, batch: Sequence[Sample]) -> None:
        """Write a batch durably as the newest segment; drop the oldest ones if over size."""
        if not batch:
            return
        table = _to_table(batch)
        with self._lock:
            seq = self._next
            self._next += 1
            final = self._path(seq, len(batch))
            tmp = final.with_suffix(".tmp")
            with open(tmp, "wb") as f:
                with ipc.new_file(f, SCHEMA) as writer:
                    writer.write_table(table)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(self.folder)
            self._segments.append((seq, len(batch), final.stat().st_size))
            while self.bytes > self.max_bytes and len(self._segments) > 1:
                old_seq, old_n, _ = self._segments.pop(0)
                self._path(old_seq, old_n).unlink(missing_ok=True)
                self.dropped += old_n
                log.error("spool full (%d bytes): dropped %d oldest samples", self.max_bytes, old_n)

    def peek(self) -> tuple[int, list[Sample]] | None:
        """Return the oldest segment's id and samples, without removing it."""
        with self._lock:
            if not self._segments:
                return None
            seq, n, _ = self._segments[0]
            path = self._path(seq, n)
        with ipc.open_file(path) as reader:
            return seq, _from_table(reader.read_all())

    def remove(self, seq: int) -> None:
        """Forget a segment once the back end has stored it."""
        with self._lock:
            for i, (s, n, _) in enumerate(self._segments):
                if s == seq:
                    self._segments.pop(i)
                    self._path(s, n).unlink(missing_ok=True)
                    return


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable: fsync the folder that holds it."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
