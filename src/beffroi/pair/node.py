"""This gateway's place in its pair: it acts while it holds the lease, stops at once when not.

Fencing is local and needs no answer from anyone: the node measures, on its own monotonic
clock, from *before* each claim it sent; its right to act ends `lease_s - margin` after the
last claim PostgreSQL granted. PostgreSQL's lease runs out `lease_s` after it granted that
claim, which is later; so the standby can only take over once the old active has stopped, even
when the old active lost its network, its database, or its event loop stalled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from beffroi.core.errors import BeffroiError
from beffroi.core.seams import SmallStore
from beffroi.pair.config import PairConfig
from beffroi.pair.lease import LEASE, Lease, LeaseState

log = logging.getLogger(__name__)

# Kept off the end of a granted lease: clock rates differ a little, and a call takes time.
MARGIN_S = 0.5
# A node seen within this many renewals is there (the other's heartbeat, for "no standby").
SEEN_RENEWALS = 5

Hook = Callable[[], Awaitable[None]]


class LeaseLost(BeffroiError):
    """This node wrote as the active one of its pair, and the lease is no longer its own."""


class PairNode:
    """One node of a pair: its role, the hooks run when it becomes active or stops being so."""

    def __init__(
        self,
        cfg: PairConfig,
        node: str,
        url: str,
        lease: Lease,
        live: Callable[[], tuple[int, Any]] = lambda: (0, None),
    ):
        self.cfg, self.node, self.url, self.lease = cfg, node, url, lease
        self.live = live  # (live tags, newest sample time): how warm this node is
        self.on_active: list[Hook] = []
        self.on_standby: list[Hook] = []
        self.epoch = 0
        self.holder: str | None = None
        self.peers: list[dict[str, Any]] = []
        self.promotions = 0
        self.last_error = ""
        self._active = False
        self._valid_until = 0.0
        self._state: LeaseState | None = None
        self._task: asyncio.Task[None] | None = None
        self._claiming: asyncio.Future[LeaseState] | None = None
        self._claim_sent = 0.0
        self._hooks: asyncio.Future[None] | None = None

    # -- what every acting part asks ----------------------------------------------------------

    def acting(self) -> bool:
        """Tell whether this node may act now: it holds the lease, renewed recently enough."""
        return self._active and time.monotonic() < self._valid_until

    @property
    def role(self) -> str:
        """Return "active" or "standby" (as of now, fencing included)."""
        return "active" if self.acting() else "standby"

    def active_url(self) -> str:
        """Return where the active node's HMI answers ("" when unknown or this node)."""
        for p in self.peers:
            if p["node"] == self.holder and p["node"] != self.node:
                return str(p["url"])
        return ""

    def standby(self) -> str | None:
        """Return the name of a live standby node, if the pair has one."""
        fresh = self.cfg.renew_s * SEEN_RENEWALS
        for p in self.peers:
            if p["node"] != self.node and p["role"] == "standby" and float(p["age_s"]) < fresh:
                return str(p["node"])
        return None

    # -- the loop -----------------------------------------------------------------------------

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Claim the lease once (so the first role is known), then keep claiming every renew_s."""
        await self._round()
        self._task = asyncio.create_task(self._run(), name="beffroi-pair")
        stack.push_async_callback(self._stop)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.renew_s)
            await self._round()

    async def _round(self) -> None:
        """One claim: act on what it says, then record this node's heartbeat."""
        sent = time.monotonic()
        if self._claiming is None or self._claiming.done():
            self._claiming = asyncio.ensure_future(asyncio.to_thread(self.lease.claim))
        else:  # a claim still hangs on a silent network: no second one behind it
            sent = self._claim_sent
        self._claim_sent = sent
        try:
            # Shielded: a claim cut short here goes on in its thread, and is awaited again.
            state = await asyncio.wait_for(asyncio.shield(self._claiming), self.cfg.lease_s)
        except Exception as exc:  # PostgreSQL unreachable: the lease is not ours to count on
            self.last_error = str(exc) or type(exc).__name__
            log.warning("pair: node %s cannot claim the lease: %s", self.node, self.last_error)
            if self._active and not self.acting():
                self._become_standby("the lease could not be renewed in time")
            return
        self.last_error = ""
        self._state, self.holder = state, state.holder
        # A claim granted so late that its time has passed already grants nothing.
        if state.mine and time.monotonic() < sent + self.cfg.lease_s - MARGIN_S:
            self._valid_until = sent + self.cfg.lease_s - MARGIN_S
            if not self._active or state.epoch != self.epoch:
                self.epoch = state.epoch
                self._become_active()
        elif self._active:
            why = "its claim came back too late" if state.mine else f"{state.holder} holds it"
            self._become_standby(f"the lease is lost: {why}")
        try:
            tags, newest = self.live()
            await asyncio.to_thread(self.lease.beat, self.role, self.url, tags, newest)
            self.peers = await asyncio.to_thread(self.lease.nodes)
        except Exception as exc:
            self.last_error = str(exc)

    def _become_active(self) -> None:
        log.warning("pair: node %s is now ACTIVE (epoch %d)", self.node, self.epoch)
        self._active = True
        self.promotions += 1
        self._transition(self.on_active, "take over")

    def _become_standby(self, why: str) -> None:
        log.warning("pair: node %s is now STANDBY: %s", self.node, why)
        self._active = False
        self._transition(self.on_standby, "stand by")

    def _transition(self, hooks: list[Hook], what: str) -> None:
        """Run the parts' hooks of a change of role after those of the previous change, in a
        task of their own: the lease goes on being renewed meanwhile (a long take-over must
        not lose it)."""
        before = self._hooks

        async def run() -> None:
            if before is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await before
            for hook in hooks:
                try:
                    await hook()
                except Exception:  # a part that failed must not stop the others
                    log.exception("pair: a part failed to %s on node %s", what, self.node)

        self._hooks = asyncio.ensure_future(run())

    async def settled(self) -> None:
        """Wait until the hooks of the last change of role have run."""
        while self._hooks is not None and not self._hooks.done():
            await asyncio.wait({self._hooks})

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._hooks is not None and not self._hooks.done():
            self._hooks.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._hooks
        was_active = self._active
        self._active = False
        if was_active:  # the standby takes over at its next claim, not when the lease runs out
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.lease.release)
        await asyncio.to_thread(self.lease.close)

    def fence(self, store: SmallStore) -> None:
        """Raise LeaseLost unless this node holds the lease of its epoch now, by PostgreSQL's
        clock: called inside the transaction of a write only the active node makes."""
        held = store.one(
            "SELECT count(*) FROM pair.lease WHERE name = ? AND holder = ? AND epoch = ? "
            "AND expires_at > now()",
            [LEASE, self.node, self.epoch],
        )
        if not held:
            raise LeaseLost(f"node {self.node} no longer holds the lease of epoch {self.epoch}")

    def live_lag_s(self) -> float | None:
        """Return how far this node's newest live value is behind the pair's newest (None:
        nothing to compare yet): the replication lag of live values, over both collections."""
        mine = self.live()[1]
        theirs = [p["newest_sample"] for p in self.peers if p["newest_sample"] is not None]
        if mine is None or not theirs:
            return None
        return max(0.0, (max(theirs) - mine).total_seconds())

    def status(self) -> dict[str, Any]:
        """Return the pair as this node sees it, for /healthz, /metrics and the HMI."""
        left = self._valid_until - time.monotonic() if self.acting() else 0.0
        lag = self.live_lag_s()
        return {
            "node": self.node,
            "role": self.role,
            "holder": self.holder,
            "epoch": self.epoch,
            "lease_left_s": round(max(left, 0.0), 2),
            "standby": self.standby() if self.acting() else None,
            "promotions": self.promotions,
            "live_lag_s": round(lag, 3) if lag is not None else None,
            "peers": [
                {
                    "node": p["node"],
                    "role": p["role"],
                    "url": p["url"],
                    "seen_s_ago": round(float(p["age_s"]), 1),
                    "live_tags": p["live_tags"],
                    "newest_sample": p["newest_sample"].isoformat() if p["newest_sample"] else None,
                }
                for p in self.peers
            ],
            "last_error": self.last_error,
        }
