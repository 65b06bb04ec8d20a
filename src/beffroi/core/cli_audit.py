"""`beffroi audit verify|export`: check the audit log's hash chain, export its records as CSV.

While a gateway runs it holds the audit file (DuckDB locks it), so both commands then go
through its token-protected API (`/api/v1/audit/…`), as `beffroi alarms` does.
"""

from __future__ import annotations

import getpass
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from beffroi.app.config import Config
from beffroi.control.config import audit_path
from beffroi.core.plugins import load
from beffroi.core.timeparse import parse_time

audit_app = typer.Typer(
    help="The audit log of commands, logins and user changes: verify its chain, export it.",
    no_args_is_help=True,
)
ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]


class _Locked(Exception):
    """The audit file is held by another process (a running gateway)."""


def register(app: typer.Typer) -> None:
    """Add the `audit` command group to the CLI."""
    app.add_typer(audit_app, name="audit")


def _open(cfg: Config, write: bool = False) -> Any:
    """Open the audit file; raise _Locked when a running gateway holds it."""
    from beffroi.core.cli import _fail

    path = audit_path(cfg)
    if not write and not path.exists():
        raise _fail([f"{path}: no audit log yet (run `beffroi demo` or `beffroi run` first)"], 1)
    try:
        return load("control", "audit")(path, read_only=not write)
    except Exception as exc:
        if "lock" in str(exc).lower():
            raise _Locked from None
        raise _fail([f"{path}: cannot open: {exc}"], 1) from None


def _gateway(cfg: Config, path: str, params: dict[str, str]) -> tuple[str, str]:
    """GET from the running gateway's audit API; return (content type, body)."""
    from beffroi.core.cli import _fail
    from beffroi.core.runtime import gateway_file_path

    where = audit_path(cfg)
    try:
        info = json.loads(gateway_file_path(cfg).read_text())
    except (OSError, ValueError):
        raise _fail(
            [f"{where} is in use by another process and no running gateway answers"], 1
        ) from None
    url = f"{info['url'].rstrip('/')}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {info['token']}"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            body, kind = resp.read().decode(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raise _fail(
            [f"the gateway refused: {exc.read().decode()[:200] or exc.reason}"], 1
        ) from None
    except OSError:
        raise _fail(
            [f"{where} is in use by another process and no running gateway answers"], 1
        ) from None
    typer.echo(f"(through the running gateway at {info['url']})", err=True)
    return kind, body


@audit_app.command("verify")
def verify(config: ConfigOpt = Path("config.toml")) -> None:
    """Check the hash chain: exit 0 if intact, 1 naming the first broken record."""
    from beffroi.core.cli import _load

    cfg = _load(config)
    path = audit_path(cfg)
    try:
        log = _open(cfg)
    except _Locked:
        result = json.loads(_gateway(cfg, "/api/v1/audit/verify", {})[1])
    else:
        try:
            r = log.verify()
        finally:
            log.close()
        result = {
            "ok": r.ok,
            "count": r.count,
            "head": r.head,
            "broken_seq": r.broken_seq,
            "problem": r.problem,
        }
    if result["ok"]:
        typer.echo(f"{path}: OK, {result['count']} records chained, head {result['head']}")
        return
    typer.echo(
        f"{path}: BROKEN at record {result['broken_seq']}: {result['problem']} "
        f"({result['count']} records intact before it)",
        err=True,
    )
    raise typer.Exit(1)


@audit_app.command("export")
def export(
    config: ConfigOpt = Path("config.toml"),
    start: Annotated[str, typer.Option("--from", help="now, -24h, -7d or ISO 8601")] = "-24h",
    end: Annotated[str, typer.Option("--to", help="now, -1h or ISO 8601")] = "now",
    out: Annotated[Path | None, typer.Option("--out", help="CSV file (default: stdout)")] = None,
) -> None:
    """Export records in [from, to) as CSV: local time, UTC, user, action, …, both hashes."""
    from beffroi.core.cli import _fail, _load

    cfg = _load(config)
    try:
        t0, t1 = parse_time(start), parse_time(end)
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    try:
        log = _open(cfg)
    except _Locked:
        params = {"start": t0.isoformat(), "end": t1.isoformat()}
        text = _gateway(cfg, "/api/v1/audit/export", params)[1]
    else:
        try:
            text = load("control", "audit_csv")(log.frame(t0, t1), cfg.metropolis.timezone)
        finally:
            log.close()
    rows = max(text.count("\n") - 1, 0)
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{rows} records written to {out}", err=True)


@contextmanager
def offline_audit(cfg: Config) -> Iterator[Any]:
    """Open the audit file for a command made without a gateway (None when control is off)."""
    from beffroi.core.cli import _fail

    if not cfg.control.enabled:
        yield None
        return
    try:
        log = _open(cfg, write=True)
    except _Locked:
        raise _fail(
            [f"{audit_path(cfg)} is in use by a running gateway; stop it first"], 1
        ) from None
    try:
        yield log
    finally:
        log.close()


@contextmanager
def audited_offline(config: Path) -> Iterator[Any]:
    """Open the audit log before a change made from the command line (user changes).

    Yields `audit(action, target, **detail)`, which records the change as the system user
    running the command. The log is opened first, so a change is refused before it is made
    when the log cannot be opened (a running gateway holds it); an append that fails after
    the change is reported as such, with exit code 1.
    """
    from beffroi.core.cli import _fail, _load

    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "?"
    record = load("control", "record_command")
    with offline_audit(_load(config)) as log:

        def audit(action: str, target: str, **detail: Any) -> None:
            if not record(log, f"{who}@cli", action, {target: ""}, **detail):
                raise _fail([f"{action} done, but the audit log cannot record it"], 1)

        yield audit
