"""`beffroi audit verify|export`: check the audit log's chain and anchors, export it as CSV.

While a gateway runs it holds the audit file (DuckDB locks it), so both commands then go
through its API, as every command does (`api/client.py`).
"""

from __future__ import annotations

import dataclasses
import getpass
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.cli.common import RUN_FIRST, ConfigOpt, fail, gateway_or_files, load, open_file
from beffroi.control.audit import AuditLog, record_command, to_csv
from beffroi.control.audit_anchor import AnchorBook
from beffroi.control.config import ControlSite, audit_place
from beffroi.core.timeparse import parse_time

commands = typer.Typer(
    help="The audit log of commands, logins and user changes: verify its chain, export it.",
    no_args_is_help=True,
)

Audit = Callable[..., None]  # audit(action, target, **detail): record a change made here


def _open(cfg: ControlSite) -> AuditLog:
    """Open the audit file read-only, or exit saying why not."""
    place, anchors = audit_place(cfg), AnchorBook.from_config(cfg)
    return open_file(
        place,
        lambda: AuditLog(place, read_only=True, anchors=anchors),
        missing=f"no audit log yet ({RUN_FIRST})",
    )


@commands.command("verify")
def verify(config: ConfigOpt = Path("config.toml")) -> None:
    """Check the chain and the anchors: exit 0 if intact, 1 naming what is broken or missing."""
    cfg = load(config)
    path = audit_place(cfg)

    def offline() -> dict[str, Any]:
        log = _open(cfg)
        try:
            return dataclasses.asdict(log.verify())
        finally:
            log.close()

    def online(gateway: GatewayClient) -> dict[str, Any]:
        result: dict[str, Any] = gateway.json(routes.AUDIT_VERIFY)
        return result

    result = gateway_or_files(cfg, online, offline)
    anchored = result.get("anchored_seq") or 0  # a gateway of an older version says nothing
    if result["ok"]:
        at = f", anchored up to record {anchored} ({result.get('anchored_at')})" if anchored else ""
        typer.echo(f"{path}: OK, {result['count']} records chained, head {result['head']}{at}")
    elif result["broken_seq"] is None:  # the records hold together; an anchor does not verify
        typer.echo(f"{path}: ANCHOR FAILED: {result['problem']}", err=True)
    else:
        typer.echo(
            f"{path}: BROKEN at record {result['broken_seq']}: {result['problem']} "
            f"({result['count']} records intact before it)",
            err=True,
        )
    if result.get("note"):
        typer.echo(f"note: {result['note']}", err=True)
    if not result["ok"]:
        raise typer.Exit(1)


@commands.command("export")
def export(
    config: ConfigOpt = Path("config.toml"),
    start: Annotated[str, typer.Option("--from", help="now, -24h, -7d or ISO 8601")] = "-24h",
    end: Annotated[str, typer.Option("--to", help="now, -1h or ISO 8601")] = "now",
    out: Annotated[Path | None, typer.Option("--out", help="CSV file (default: stdout)")] = None,
) -> None:
    """Export records in [from, to) as CSV: local time, UTC, user, action, …, both hashes."""
    cfg = load(config)
    try:
        t0, t1 = parse_time(start), parse_time(end)
    except ValueError as exc:
        raise fail([str(exc)]) from None

    def offline() -> str:
        log = _open(cfg)
        try:
            return to_csv(log.frame(t0, t1), cfg.metropolis.timezone)
        finally:
            log.close()

    def online(gateway: GatewayClient) -> str:
        return gateway.text(routes.AUDIT_EXPORT, {"start": t0.isoformat(), "end": t1.isoformat()})

    text = gateway_or_files(cfg, online, offline)
    rows = max(text.count("\n") - 1, 0)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{rows} records written to {out}", err=True)


@contextmanager
def offline_audit(cfg: ControlSite) -> Iterator[AuditLog | None]:
    """Open the audit file for a change made here, without a gateway (None when control is off).

    Opened before the change, so that a change the log cannot take is refused, not made.
    """
    if not cfg.control.enabled:
        yield None
        return
    path = audit_place(cfg)
    try:
        # Anchored at close when the gateway's key is at hand; never a key made here.
        log = AuditLog(path, anchors=AnchorBook.from_config(cfg))
    except Exception as exc:
        if "lock" in str(exc).lower():
            raise fail([f"{path} is in use by a running gateway; stop it first"], 1) from None
        raise fail([f"{path}: cannot open: {exc}"], 1) from None
    try:
        yield log
    finally:
        log.close()


@contextmanager
def audited_offline(config: Path) -> Iterator[Audit]:
    """Open the audit log before a change made from the command line (user changes).

    Yields `audit(action, target, **detail)`, which records the change as the system user
    running the command; an append that fails after the change is reported, with exit code 1.
    """
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "?"
    with offline_audit(load(config)) as log:

        def audit(action: str, target: str, **detail: Any) -> None:
            if not record_command(log, f"{who}@cli", action, {target: ""}, **detail):
                raise fail([f"{action} done, but the audit log cannot record it"], 1)

        yield audit
