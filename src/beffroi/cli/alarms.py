"""`beffroi alarms list|ack|shelve|unshelve|out-of-service|in-service|export|stats`.

While a gateway runs, commands go through its API (its engine holds the live states and its
journal file); otherwise they read the journal file and append to it themselves, rebuilding
each alarm from its journaled state, audited as the API audits them, with `source: cli`.
"""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

import pandas as pd
import typer

from beffroi.alerts.config import AlarmsSite, journal_place
from beffroi.alerts.journal import Journal, to_csv
from beffroi.alerts.performance import alarm_performance
from beffroi.alerts.state import Alarm, AlarmCommandError
from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.api.routes import Route
from beffroi.app.config import Config
from beffroi.cli.audit import offline_audit
from beffroi.cli.common import (
    RUN_FIRST,
    ConfigOpt,
    TimeOpt,
    fail,
    gateway_or_files,
    load,
    open_file,
)
from beffroi.control.audit import record_command
from beffroi.core.csv_safe import CRLF, safe_cell
from beffroi.core.model import utcnow
from beffroi.core.timeparse import parse_time

commands = typer.Typer(help="Alarms: list, acknowledge, shelve, export the journal, figures.")

UserOpt = Annotated[str, typer.Option(help="who does it (journaled)")]
CommentOpt = Annotated[str, typer.Option(help="why (journaled)")]
AlarmIdArg = Annotated[str, typer.Argument(help="alarm id")]
Multi = list[str] | None
T = TypeVar("T")
Apply = Callable[[Alarm, datetime], str]  # an operator command on one alarm, naming its event


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


def _print_table(rows: list[dict[str, Any]], tz: ZoneInfo) -> None:
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


def _journal(cfg: AlarmsSite, write: bool) -> Journal:
    """Open the journal file, or exit saying why not."""
    place = journal_place(cfg)
    return open_file(
        place,
        lambda: Journal(place, read_only=not write),
        missing=f"no alarm journal yet ({RUN_FIRST})",
    )


def gateway_or_journal(
    cfg: AlarmsSite,
    online: Callable[[GatewayClient], T],
    offline: Callable[[Journal], T],
    *,
    write: bool = False,
) -> T:
    """Ask the running gateway, or make the same answer with `offline(journal)`."""

    def on_file() -> T:
        journal = _journal(cfg, write)  # only commands append to it
        try:
            return offline(journal)
        finally:
            journal.close()

    return gateway_or_files(cfg, online, on_file)


def _offline_command(
    cfg: Config,
    journal: Journal,
    ids: list[str],
    apply: Apply,
    body: dict[str, Any],
    action: str,
    detail: dict[str, Any],
) -> list[dict[str, Any]]:
    """Apply a command to alarms rebuilt from the journal, append its events, audit it."""
    rows = {r["alarm_id"]: r for r in journal.current(include_normal=True)}
    user, comment = body["user"], body["comment"]
    targets = {i: rows[i]["commune"] if i in rows else "" for i in ids}
    fields = {"source": "cli", "comment": comment, **detail}  # as the API's records
    # Opened before anything changes: a command the audit log cannot take is not made.
    with offline_audit(cfg) as log:
        now, events = utcnow(), []
        try:
            for alarm_id in ids:
                if alarm_id not in rows:
                    why = "not in the journal (no transition recorded yet)"
                    raise AlarmCommandError(f"{alarm_id}: {why}")
                alarm = Alarm.from_row(rows[alarm_id])
                events.append(alarm.event(apply(alarm, now), now, user, comment))
        except AlarmCommandError as exc:  # nothing was appended: refused as a whole
            record_command(log, user, action, targets, "refused", reason=str(exc), **fields)
            raise fail([str(exc)], 1) from None
        journal.write(events)
        if not record_command(log, user, action, targets, **fields):
            raise fail([f"{action} done, but the audit log cannot record it"], 1)
    return [e.as_row() for e in events]


def command(
    cfg: Config,
    route: Route,
    body: dict[str, Any],
    ids: list[str],
    apply: Apply,
    action: str,
    **detail: Any,
) -> None:
    """Send a command through the gateway, or apply it to the journal audited as the API does
    (`action`, `detail`); print its events."""

    def offline(journal: Journal) -> dict[str, Any]:
        return {"events": _offline_command(cfg, journal, ids, apply, body, action, detail)}

    def online(gateway: GatewayClient) -> dict[str, Any]:
        answer: dict[str, Any] = gateway.json(route, body=body)
        return answer

    for r in gateway_or_journal(cfg, online, offline, write=True)["events"]:
        typer.echo(f"{r['alarm_id']}: {r['event']} → {r['state']}")


def _config_and_body(
    config: Path, user: str, comment: str, **fields: Any
) -> tuple[Config, dict[str, Any]]:
    """Load the config and build an operator command's body (user: the login by default)."""
    return load(config), {**fields, "user": user or _default_user(), "comment": comment}


@commands.command("list")
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
    cfg = load(config)
    communes, domains, states = commune or [], domain or [], state or []

    def offline(journal: Journal) -> dict[str, Any]:
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
    answer = gateway_or_journal(cfg, lambda g: g.json(routes.ALARMS, params), offline)
    rows = answer["alarms"]
    if fmt is ListFormat.json:
        typer.echo(json.dumps(rows, default=str))
    elif fmt is ListFormat.csv:
        # Comments, users and messages: no live formulas once opened in a spreadsheet.
        safe = [{k: safe_cell(v) for k, v in r.items()} for r in rows]
        # CRLF lines, so that a text's own CR is quoted too, not a row break before a formula.
        typer.echo(pd.DataFrame(safe).to_csv(index=False, lineterminator=CRLF), nl=False)
    else:
        _print_table(rows, ZoneInfo(cfg.metropolis.timezone))


@commands.command()
def ack(
    alarm_id: Annotated[list[str], typer.Argument(help="alarm ids, as `alarms list` shows them")],
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Acknowledge alarms."""
    cfg, body = _config_and_body(config, user, comment, ids=alarm_id)
    command(cfg, routes.ALARMS_ACK, body, alarm_id, lambda a, now: a.ack(), "alarm.ack")


@commands.command()
def shelve(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    minutes: Annotated[float | None, typer.Option(help="shelve this long")] = None,
    oneshot: Annotated[bool, typer.Option(help="until it returns to normal")] = False,
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Shelve an alarm for some minutes, or one-shot (until it returns to normal)."""
    cfg, body = _config_and_body(config, user, comment, id=alarm_id, minutes=minutes)
    if (minutes is None) == (not oneshot):
        raise fail(["give --minutes M or --oneshot"])
    limit = cfg.alarms.max_shelve_min
    if minutes is not None and not 0 < minutes <= limit:
        raise fail([f"--minutes: between 0 and {limit:g} (alarms.max_shelve_min)"])
    span = timedelta(minutes=limit if minutes is None else minutes)
    how_long = {"oneshot": True} if minutes is None else {"minutes": minutes}

    def apply(alarm: Alarm, now: datetime) -> str:
        return alarm.shelve(now + span, oneshot=oneshot)

    command(cfg, routes.ALARMS_SHELVE, body, [alarm_id], apply, "alarm.shelve", **how_long)


@commands.command()
def unshelve(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """End an alarm's shelving."""
    cfg, body = _config_and_body(config, user, comment, id=alarm_id)
    command(
        cfg,
        routes.ALARMS_UNSHELVE,
        body,
        [alarm_id],
        lambda a, now: a.unshelve(now),
        "alarm.unshelve",
    )


def _service(config: Path, alarm_id: str, out: bool, user: str, comment: str) -> None:
    cfg, body = _config_and_body(config, user, comment, id=alarm_id, out=out)
    action = "alarm.out_of_service" if out else "alarm.in_service"
    command(
        cfg,
        routes.ALARMS_SERVICE,
        body,
        [alarm_id],
        lambda a, now: a.set_out_of_service(out, now),
        action,
    )


@commands.command("out-of-service")
def out_of_service(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Take an alarm out of service (maintenance): no annunciation until put back."""
    _service(config, alarm_id, True, user, comment)


@commands.command("in-service")
def in_service(
    alarm_id: AlarmIdArg,
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Put an alarm back in service."""
    _service(config, alarm_id, False, user, comment)


def _period(start: str, end: str) -> tuple[datetime, datetime]:
    now = datetime.now(UTC)
    try:
        return parse_time(start, now), parse_time(end, now)
    except ValueError as exc:
        raise fail([str(exc)]) from None


@commands.command()
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
    cfg = load(config)
    t0, t1 = _period(start, end)
    communes, domains, states = commune or [], domain or [], state or []
    params = {"start": t0.isoformat(), "end": t1.isoformat(), "format": "csv",
              "commune": communes, "domain": domains, "state": states}  # fmt: skip

    def offline(journal: Journal) -> str:
        events = journal.events(t0, t1, communes=communes, domains=domains, states=states)
        return to_csv(events, cfg.metropolis.timezone)

    text = gateway_or_journal(cfg, lambda g: g.text(routes.ALARMS_EVENTS, params), offline)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{out}: {max(text.count(chr(10)) - 1, 0)} events", err=True)


@commands.command()
def stats(
    config: ConfigOpt = Path("config.toml"),
    start: TimeOpt = "-24h",
    end: TimeOpt = "now",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Print ISA-18.2 alarm-performance figures of a period from the journal."""
    cfg = load(config)
    t0, t1 = _period(start, end)
    ac = cfg.alarms

    def offline(journal: Journal) -> dict[str, Any]:
        return alarm_performance(journal, t0, t1, ac.chatter_count, ac.chatter_window_s)

    params = {"start": t0.isoformat(), "end": t1.isoformat()}
    figures = gateway_or_journal(cfg, lambda g: g.json(routes.ALARMS_STATS, params), offline)
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
