"""`beffroi alarms list|ack|shelve|unshelve|out-of-service|in-service|export|stats`.

While a gateway runs, commands go through its HTTP API (its engine holds the live state and
its journal file); otherwise they read and append to the journal file directly, audited
(`core/alarm_client.py`).
"""

from __future__ import annotations

import getpass
import json
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from beffroi.app.config import Config
from beffroi.core.alarm_client import command, gateway_or_journal
from beffroi.core.plugins import load

alarms_app = typer.Typer(help="Alarms: list, acknowledge, shelve, export the journal, figures.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
UserOpt = Annotated[str, typer.Option(help="who does it (journaled)")]
CommentOpt = Annotated[str, typer.Option(help="why (journaled)")]
AlarmIdArg = Annotated[str, typer.Argument(help="alarm id")]
TimeOpt = Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")]
Multi = list[str] | None


class ListFormat(StrEnum):
    """Formats of `beffroi alarms list`."""

    table = "table"
    csv = "csv"
    json = "json"


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _local(ts: Any, tz: ZoneInfo) -> str:
    if not ts:
        return ""
    t = datetime.fromisoformat(ts) if isinstance(ts, str) else ts
    return t.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S")


def _print_table(rows: list[dict], tz: ZoneInfo) -> None:
    if not rows:
        typer.echo("no alarm needs attention")
        return
    for r in rows:
        value = "" if r.get("value") is None else f" value={r['value']}"
        limit = "" if r.get("limit") is None else f" limit={r['limit']}"
        level = f" {r['level']}" if r.get("level") not in (None, "", "ON") else ""
        typer.echo(
            f"P{r['severity']}  {r['state']:<14} {_local(r.get('since'), tz):<19}  "
            f"{r['commune']:<22} {r['asset']:<10} {r['message']}{level}{value}{limit}  "
            f"[{r['alarm_id']}]"
        )


def register(app: typer.Typer) -> None:
    """Add the `alarms` command group to the CLI."""
    app.add_typer(alarms_app, name="alarms")


def _load(config: Path) -> Config:
    from beffroi.core.cli import _load as load

    return load(config)


def _config_and_body(config: Path, user: str, comment: str, **fields: Any) -> tuple[Config, dict]:
    """Load the config and build an operator command's body (user: the login by default)."""
    return _load(config), {**fields, "user": user or _default_user(), "comment": comment}


@alarms_app.command("list")
def list_alarms(
    config: ConfigOpt = Path("config.toml"),
    commune: Annotated[Multi, typer.Option(help="only these communes")] = None,
    domain: Annotated[Multi, typer.Option(help="only these domains")] = None,
    state: Annotated[
        Multi, typer.Option(help="unack_active, ack_active, unack_rtn, shelved…")
    ] = None,
    fmt: Annotated[ListFormat, typer.Option("--format")] = ListFormat.table,
) -> None:
    """List the alarms needing attention, most urgent first."""
    cfg = _load(config)
    communes, domains, states = commune or [], domain or [], state or []

    def offline(journal: Any) -> dict[str, Any]:
        rows = [
            {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()}
            for r in journal.current()
            if (not communes or r["commune"] in communes)
            and (not domains or r["domain"] in domains)
            and (not states or r["state"] in states)
        ]
        rows.sort(key=lambda r: (r["severity"], r["since"] or "", r["alarm_id"]))
        return {"alarms": rows}

    params = {"commune": communes, "domain": domains, "state": states}
    rows = gateway_or_journal(cfg, "/api/v1/alarms", offline, params=params)["alarms"]
    if fmt is ListFormat.json:
        typer.echo(json.dumps(rows, default=str))
    elif fmt is ListFormat.csv:
        import pandas as pd

        typer.echo(pd.DataFrame(rows).to_csv(index=False), nl=False)
    else:
        _print_table(rows, ZoneInfo(cfg.metropolis.timezone))


@alarms_app.command()
def ack(
    alarm_id: Annotated[list[str], typer.Argument(help="alarm ids, as `alarms list` shows them")],
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Acknowledge alarms."""
    cfg, body = _config_and_body(config, user, comment, ids=alarm_id)
    command(cfg, "ack", body, alarm_id, lambda a, now: a.ack(), "alarm.ack")


@alarms_app.command()
def shelve(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    minutes: Annotated[float | None, typer.Option(help="shelve this long")] = None,
    oneshot: Annotated[bool, typer.Option(help="until it returns to normal")] = False,
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Shelve an alarm for some minutes, or one-shot (until it returns to normal)."""
    from beffroi.core.cli import _fail

    cfg, body = _config_and_body(config, user, comment, id=alarm_id, minutes=minutes)
    if (minutes is None) == (not oneshot):
        raise _fail(["give --minutes M or --oneshot"])
    limit = cfg.alarms.max_shelve_min
    if minutes is not None and not 0 < minutes <= limit:
        raise _fail([f"--minutes: between 0 and {limit:g} (alarms.max_shelve_min)"])
    span = timedelta(minutes=limit if minutes is None else minutes)
    how_long = {"oneshot": True} if minutes is None else {"minutes": minutes}

    def apply(alarm: Any, now: datetime) -> str:
        return alarm.shelve(now + span, oneshot=oneshot)

    command(cfg, "shelve", body, [alarm_id], apply, "alarm.shelve", **how_long)


@alarms_app.command()
def unshelve(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """End an alarm's shelving."""
    cfg, body = _config_and_body(config, user, comment, id=alarm_id)
    command(cfg, "unshelve", body, [alarm_id], lambda a, now: a.unshelve(now), "alarm.unshelve")


def _service(config: Path, alarm_id: str, out: bool, user: str, comment: str) -> None:
    cfg, body = _config_and_body(config, user, comment, id=alarm_id, out=out)
    action = "alarm.out_of_service" if out else "alarm.in_service"
    command(cfg, "service", body, [alarm_id], lambda a, now: a.set_out_of_service(out, now), action)


@alarms_app.command("out-of-service")
def out_of_service(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Take an alarm out of service (maintenance): no annunciation until put back."""
    _service(config, alarm_id, True, user, comment)


@alarms_app.command("in-service")
def in_service(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Put an alarm back in service."""
    _service(config, alarm_id, False, user, comment)


def _period(start: str, end: str) -> tuple[datetime, datetime]:
    from beffroi.core.cli import _fail
    from beffroi.core.timeparse import parse_time

    now = datetime.now(UTC)
    try:
        return parse_time(start, now), parse_time(end, now)
    except ValueError as exc:
        raise _fail([str(exc)]) from None


@alarms_app.command()
def export(
    config: ConfigOpt = Path("config.toml"),
    start: TimeOpt = "-24h",
    end: TimeOpt = "now",
    commune: Annotated[Multi, typer.Option(help="only these communes")] = None,
    domain: Annotated[Multi, typer.Option(help="only these domains")] = None,
    state: Annotated[
        Multi, typer.Option(help="only events leaving the alarm in these states")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="write to this file (default: stdout)")] = None,
) -> None:
    """Export journaled transitions as CSV (local times with their offset)."""
    to_csv = load("alerts", "to_csv")
    cfg = _load(config)
    t0, t1 = _period(start, end)
    filters = {"communes": commune or [], "domains": domain or [], "states": state or []}
    params = {"start": t0.isoformat(), "end": t1.isoformat(), "format": "csv",
              "commune": filters["communes"], "domain": filters["domains"],
              "state": filters["states"]}  # fmt: skip

    def offline(journal: Any) -> str:
        return to_csv(journal.events(start=t0, end=t1, **filters), cfg.metropolis.timezone)

    text = gateway_or_journal(cfg, "/api/v1/alarms/events", offline, params=params)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{out}: {max(text.count(chr(10)) - 1, 0)} events", err=True)


@alarms_app.command()
def stats(
    config: ConfigOpt = Path("config.toml"),
    start: TimeOpt = "-24h",
    end: TimeOpt = "now",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print ISA-18.2 alarm-performance figures of a period from the journal."""
    alarm_performance = load("alerts", "performance")
    cfg = _load(config)
    t0, t1 = _period(start, end)
    ac = cfg.alarms

    def offline(journal: Any) -> dict[str, Any]:
        return alarm_performance(journal, t0, t1, ac.chatter_count, ac.chatter_window_s)

    params = {"start": t0.isoformat(), "end": t1.isoformat()}
    figures = gateway_or_journal(cfg, "/api/v1/alarms/stats", offline, params=params)
    if as_json:
        typer.echo(json.dumps(figures))
        return
    mtta = figures["mean_time_to_ack_s"]
    typer.echo(f"period: {figures['start']} → {figures['end']} ({figures['hours']} h)")
    typer.echo(f"activations: {figures['activations']} ({figures['per_hour']}/h, "
               f"peak {figures['peak_per_10min']} in 10 min) {figures['by_severity']}")  # fmt: skip
    typer.echo(f"standing: {figures['standing']}")
    typer.echo(f"acknowledged: {figures['acknowledged']}, mean time to ack: "
               f"{'—' if mtta is None else f'{mtta:g} s'}")  # fmt: skip
    typer.echo(f"chattering (≥{cfg.alarms.chatter_count} in {cfg.alarms.chatter_window_s:g} s): "
               f"{len(figures['chattering'])}")  # fmt: skip
    for c in figures["chattering"]:
        typer.echo(
            f"  {c['alarm_id']}: {c['max_in_window']} in a window, {c['activations']} in all"
        )
    typer.echo("top 10:")
    for t in figures["top10"]:
        typer.echo(f"  {t['activations']:>5}  {t['alarm_id']}")
