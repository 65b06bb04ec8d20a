"""The Collector contract: validated at construction, connected in start(stack)."""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from beffroi.core.model import Quality, Sample, TagSpec, Value, WriteResult, WriteStatus, utcnow

Sink = Callable[[Sequence[Sample]], None]


class Collector(ABC):
    """Reads a set of tags from one source and pushes Sample batches to a sink."""

    protocol: str = "collector"

    def __init__(self, name: str, tags: Sequence[TagSpec], sink: Sink):
        self.name = name
        self.tags = {t.name: t for t in tags}
        self.sink = sink
        self.connected = False
        self.last_error = ""
        self.samples_received = 0

    @property
    def status_tag(self) -> str:
        """Return the tag that records whether this collector is connected."""
        return f"_system/collector/{self.name}/connected"

    def _publish_status(self, connected: bool, error: str = "") -> None:
        self.connected = connected
        if error:
            self.last_error = error
        self.sink([Sample(self.status_tag, utcnow(), connected, Quality.GOOD)])

    def _mark_comm_loss(self) -> None:
        """Give every tag of this collector CommLoss quality, once per outage."""
        now = utcnow()
        self.sink([Sample(t, now, float("nan"), Quality.COMM_LOSS) for t in self.tags])

    def check_write(self, tag: str, value: Value) -> WriteResult | None:
        """Refuse a write to an unknown, read-only or out-of-range tag before sending anything."""
        spec = self.tags.get(tag)
        if spec is None:
            return WriteResult(
                tag, WriteStatus.REFUSED, value, f"{tag} is not served by {self.name}"
            )
        if not spec.writable:
            return WriteResult(tag, WriteStatus.REFUSED, value, f"{tag} is not writable")
        if spec.kind == "float":
            with contextlib.suppress(TypeError, ValueError):
                number = float(value)
                if spec.low is not None and number < spec.low:
                    return WriteResult(tag, WriteStatus.REFUSED, value, f"below {spec.low}")
                if spec.high is not None and number > spec.high:
                    return WriteResult(tag, WriteStatus.REFUSED, value, f"above {spec.high}")
                return None
            return WriteResult(tag, WriteStatus.REFUSED, value, "not a number")
        if spec.kind == "bool" and not isinstance(value, bool):
            return WriteResult(tag, WriteStatus.REFUSED, value, "not a boolean")
        if spec.kind == "str" and not isinstance(value, str):
            return WriteResult(tag, WriteStatus.REFUSED, value, "not text")
        return None

    def status(self) -> dict:
        """Return the collector's state for the HMI and /healthz."""
        return {
            "name": self.name,
            "protocol": self.protocol,
            "connected": self.connected,
            "tags": len(self.tags),
            "samples_received": self.samples_received,
            "last_error": self.last_error,
        }

    @abstractmethod
    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect and subscribe in the background; register cleanup on the stack."""

    @abstractmethod
    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a setpoint and confirm it by reading it back."""
