"""What every command shares: failing with a message, loading the config, the gateway rule."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from beffroi.api.client import GatewayClient, GatewayError, NoGateway
from beffroi.app.config import Config, load_config
from beffroi.core.errors import ConfigError
from beffroi.core.site import Site
from beffroi.state.config import Place, exists

T = TypeVar("T")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
TimeOpt = Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")]
RUN_FIRST = "run `beffroi demo` or `beffroi run` first"


def fail(lines: list[str], code: int = 2) -> typer.Exit:
    """Print the lines on stderr and return the exit to raise (2: usage or config, 1: failure)."""
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def load(path: Path) -> Config:
    """Load and check the config file, or exit 2 with one line per problem."""
    try:
        return load_config(path)
    except ConfigError as exc:
        raise fail(exc.lines) from None


def setup_logging(verbose: bool) -> None:
    """Log to stderr; quiet the libraries that repeat what the gateway says once."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # asyncua logs every reconnect attempt at length; our collector says it once, clearly.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    # pymodbus logs an error at every timeout of a silent device; the collector says it once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # APScheduler logs every run of every job at INFO: the 1 s alarm tick would fill the log.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def gateway_or_files(
    site: Site, online: Callable[[GatewayClient], T], offline: Callable[[], T]
) -> T:
    """Do it through the running gateway when one answers (see api/client.py), else on the files.

    `online` asks the gateway; `offline` opens the files itself and does the same work.
    """
    try:
        client = GatewayClient.find(site)
        result = online(client)
    except NoGateway:
        return offline()
    except GatewayError as exc:
        raise fail([str(exc)], 1) from None
    how = "sent" if client.sent else "read"
    typer.echo(f"({how} through the running gateway at {client.url})", err=True)
    return result


def open_file(path: Place, opener: Callable[[], T], *, missing: str | None = None) -> T:
    """Open one of the gateway's files, or exit 1 saying why not (absent, held, unreadable).

    `missing` says what an absent file means; without it, the opener may create the file.
    """
    if missing is not None and not exists(path):
        raise fail([f"{path}: {missing}"], 1)
    try:
        return opener()
    except Exception as exc:
        # DuckDB lets one process at a time write a file: a gateway that does not answer
        # (stopping, or started by another user) still holds it.
        if "lock" in str(exc).lower():
            raise fail(
                [f"{path} is in use by another process and no running gateway answers"], 1
            ) from None
        raise fail([f"{path}: cannot open: {exc}"], 1) from None
