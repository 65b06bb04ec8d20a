"""Shared fixtures: the demo config, a small register, free ports."""

from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path

# dash sets a context variable when first imported, which its page registry reads: imported
# here, in the main context, not first by a test importing the runtime inside its own
# event-loop task (whose context the next tests would not share).
import dash  # noqa: F401
import pytest

from beffroi.app.config import Config, load_config
from beffroi.core.register import Register, build_register
from tests.browser import chromium

ROOT = Path(__file__).resolve().parents[1]

# Real database servers (influxd, VictoriaMetrics) and their fixtures.
pytest_plugins = ["tests.servers_db", "tests.sparkplug_site"]


async def eventually(predicate, within: float = 10.0, every: float = 0.05) -> None:
    """Wait until predicate() is true; fail with a timeout after `within` seconds."""
    async with asyncio.timeout(within):
        while True:
            if predicate():
                return
            await asyncio.sleep(every)


_GIVEN: set[int] = set()


def free_port() -> int:
    """Return a TCP port free on the loopback interface, below the kernel's ephemeral range.

    A port the kernel hands out for `bind(0)` comes from the range it also gives outgoing
    connections: between the choice and the server's bind, one of the gateway's own client
    connections (OPC UA, PostgreSQL, SMTP) could take it. Ports below that range it never
    picks by itself.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(20_000, low)
        if port in _GIVEN:  # two picks of one test must differ before either is bound
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            _GIVEN.add(port)
            return port
    raise RuntimeError(f"no free TCP port found in 20000..{low}")


def _ephemeral_low() -> int:
    """Return the first port of the kernel's ephemeral range (32768 when unknown)."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768
    return max(low, 20_100)


@pytest.fixture(scope="session")
def demo_config() -> Config:
    """Return the repository's config.toml, validated, without its demo inventory file.

    Tests build registers of their own size; the demo's file (321 assets of the full demo
    register) would add its assets to each. test_inventory_files.py tests that file and that
    the repository's config imports it.
    """
    cfg = load_config(ROOT / "config.toml")
    out = cfg.model_copy(
        update={
            "inventory": cfg.inventory.model_copy(update={"files": []}),
            # No month of simulated past: tests that want one ask for it (test_demo_history.py).
            "simulator": cfg.simulator.model_copy(update={"history_days": 0}),
        }
    )
    out._source = cfg.source
    return out


@pytest.fixture(scope="session")
def demo_config_fixture(demo_config: Config) -> Config:
    """Alias of demo_config for modules that import the demo_config function."""
    return demo_config


@pytest.fixture(scope="session")
def small_register(demo_config: Config) -> Register:
    """Return a register of 60 assets: every class, several communes."""
    return build_register(demo_config, assets=60)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium, one per test module."""
    with chromium() as b:
        yield b
