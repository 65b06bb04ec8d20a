"""Config of `[pair]`: this gateway's name in its pair, and the lease that elects the active one."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from beffroi.core.config import Slug, Strict
from beffroi.state.config import StateSite


class PairConfig(Strict):
    """Two central gateways sharing PostgreSQL: the one holding the lease acts, the other waits."""

    enabled: bool = False
    # This gateway's name in the pair (`beffroi run --node` sets it): unique, kept across starts.
    node: Slug | None = None
    # The active node renews the lease every `renew_s`; the standby takes it once it has run out
    # (`lease_s` after the last renewal). A node that cannot renew stops acting before that.
    lease_s: float = Field(default=5.0, ge=1.0, le=120.0)
    renew_s: float = Field(default=1.0, gt=0.0, le=30.0)
    # Where this node's HMI answers for users of the other node (its banner links here, and the
    # standby sends its users' commands here through the token API).
    url: str = ""
    # The environment variable holding the token both nodes' APIs share (the standby's commands
    # go through the active node's API with it).
    token_env: str = Field(default="BEFFROI_PAIR_TOKEN", min_length=1)


class PairSite(StateSite, Protocol):
    """What the pair reads of the config."""

    @property
    def pair(self) -> PairConfig: ...


def pair_problems(site: PairSite) -> list[str]:
    """Check what a pair needs beyond its own section: state in PostgreSQL, a sane lease."""
    pair = site.pair
    if not pair.enabled:
        return []
    problems = []
    if site.state.backend != "postgres":
        problems.append(
            "pair.enabled: the two gateways of a pair share their state: set [state] backend = "
            '"postgres"'
        )
    if pair.renew_s * 2 > pair.lease_s:
        problems.append(
            f"pair.renew_s: {pair.renew_s:g} s must be at most half of pair.lease_s "
            f"({pair.lease_s:g} s), so that one missed renewal does not lose the lease"
        )
    return problems
