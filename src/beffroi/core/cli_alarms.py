"""`beffroi alarms list|ack|shelve|unshelve|out-of-service|in-service|export|stats`.

While a gateway runs, commands go through its HTTP API (its engine holds the live state and
its journal file); otherwise they read and append to the journal file directly.
"""

from __future__ import annotations

import getpass
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from beffroi.core.alarm_config import journal_path
from beffroi.core.config import Config
from beffroi.core.plugins import load

alarms_app = typer.Typer(help="Alarms: list, acknowledge, shelve, export the journal, figures.")

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
UserOpt = Annotated[str, typer.Option(help="who does it (journaled)")]
CommentOpt = Annotated[str, typer.Option(help="why (journaled)")]
Multi = list[str] | None
Journaled = Callable[[Any], Any]  # the gateway's answer, made from the journal file instead
Apply = Callable[[Any, datetime], str]  # an operator command on one alarm, naming its event


class ListFormat(StrEnum):
    """Formats of `beffroi alarms list`."""

    table = "table"
    csv = "csv"
    json = "json"


class _NoGateway(Exception):
    """No running gateway answers: use the journal file."""


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def _call(cfg: Config, method: str, path: str, params: Any = None, body: Any = None) -> Any:
    """Ask the running gateway's alarm API; raise _NoGateway when none answers."""
    from beffroi.core.cli import _fail
    from beffroi.core.runtime import gateway_file_path

    try:
        info = json.loads(gateway_file_path(cfg).read_text())
        base, token = info["url"], info["token"]
    except (OSError, ValueError, KeyError, TypeError):
        raise _NoGateway from None
    url = f"{base.rstrip('/')}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params, doseq=True)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            raw = resp.read()
            kind = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        verb = "refused" if exc.code < 500 else "failed"
        raise _fail([f"the gateway {verb}: {_error_of(exc)}"], 1) from None
    except OSError:
        raise _NoGateway from None  # a stale gateway.json: the journal file is free
    typer.echo(f"(through the running gateway at {base})", err=True)
    return raw.decode() if kind.startswith("text/csv") else json.loads(raw)


def _error_of(exc: urllib.error.HTTPError) -> str:
    """Return the error a gateway's JSON answer names, else the HTTP reason."""
    try:
        return str(json.loads(exc.read() or b"{}").get("error", exc.reason))
    except (OSError, ValueError, AttributeError):
        return str(exc.reason)


def _journal(cfg: Config, write: bool = False):  # type: ignore[no-untyped-def]
    """Open the journal file, or fail with a clear message."""
    from beffroi.core.cli import _fail

    journal_cls = load("alerts", "journal")
    path = journal_path(cfg)
    if not path.exists():
        raise _fail(
            [f"{path}: no alarm journal yet (run `beffroi demo` or `beffroi run` first)"], 1
        )
    try:
        return journal_cls(path, read_only=not write)
    except Exception as exc:
        if "lock" in str(exc).lower():
            raise _fail(
                [f"{path} is in use by another process and no running gateway answers"], 1
            ) from None
        raise _fail([f"{path}: cannot open: {exc}"], 1) from None


def _gateway_or_journal(
    cfg: Config, path: str, offline: Journaled, *, params: Any = None, body: Any = None
) -> Any:
    """GET path (POST body) from the running gateway, or offline(journal): the same answer."""
    try:
        return _call(cfg, "GET" if body is None else "POST", path, params, body)
    except _NoGateway:
        journal = _journal(cfg, write=body is not None)  # only commands append to it
        try:
            return offline(journal)
        finally:
            journal.close()


def _offline_command(
    journal: Any, alarm_ids: list[str], apply: Apply, user: str, comment: str
) -> list[dict[str, Any]]:
    """Apply a command to alarms rebuilt from the journal and append the resulting events."""
    from beffroi.core.cli import _fail
    from beffroi.core.model import utcnow

    alarm_cls, command_error = load("alerts", "alarm"), load("alerts", "command_error")
    rows = {r["alarm_id"]: r for r in journal.current(include_normal=True)}
    now, events = utcnow(), []
    for alarm_id in alarm_ids:
        if alarm_id not in rows:
            raise _fail([f"{alarm_id}: not in the journal (no transition recorded yet)"], 1)
        alarm = alarm_cls.from_row(rows[alarm_id])
        try:
            name = apply(alarm, now)
        except command_error as exc:
            raise _fail([str(exc)], 1) from None
        events.append(alarm.event(name, now, user, comment))
    journal.write(events)
    return [e.as_row() for e in events]


def _command(cfg: Config, name: str, body: dict[str, Any], ids: list[str], apply: Apply) -> None:
    """Send a command to /api/v1/alarms/<name>, or apply it to the journal; print its events."""
    user, comment = body["user"], body["comment"]
    rows = _gateway_or_journal(
        cfg,
        f"/api/v1/alarms/{name}",
        lambda journal: {"events": _offline_command(journal, ids, apply, user, comment)},
        body=body,
    )["events"]
    _echo_events(rows)


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


def _echo_events(rows: list[dict]) -> None:
    for r in rows:
        typer.echo(f"{r['alarm_id']}: {r['event']} → {r['state']}")


def register(app: typer.Typer) -> None:
    """Add the `alarms` command group to the CLI."""
    app.add_typer(alarms_app, name="alarms")


def _load(config: Path) -> Config:
    from beffroi.core.cli import _load as load

    return load(config)


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
    rows = _gateway_or_journal(cfg, "/api/v1/alarms", offline, params=params)["alarms"]
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
    cfg, user = _load(config), user or _default_user()
    body = {"ids": alarm_id, "user": user, "comment": comment}
    _command(cfg, "ack", body, alarm_id, lambda a, now: a.ack())


@alarms_app.command()
def shelve(
    alarm_id: Annotated[str, typer.Argument(help="alarm id")],
    config: ConfigOpt = Path("config.toml"),
    minutes: Annotated[float | None, typer.Option(help="shelve this long")] = None,
    oneshot: Annotated[bool, typer.Option(help="until it returns to normal")] = False,
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Shelve an alarm for some minutes, or one-shot (until it returns to normal)."""
    from beffroi.core.cli import _fail

    cfg, user = _load(config), user or _default_user()
    if (minutes is None) == (not oneshot):
        raise _fail(["give --minutes M or --oneshot"])
    limit = cfg.alarms.max_shelve_min
    if minutes is not None and not 0 < minutes <= limit:
        raise _fail([f"--minutes: between 0 and {limit:g} (alarms.max_shelve_min)"])
    span = timedelta(minutes=limit if minutes is None else minutes)
    body = {"id": alarm_id, "user": user, "comment": comment, "minutes": minutes}
    _command(cfg, "shelve", body, [alarm_id], lambda a, now: a.shelve(now + span, oneshot=oneshot))


@alarms_app.command()
def unshelve(
    alarm_id: Annotated[str, typer.Argument(help="alarm id")],
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """End an alarm's shelving."""
    cfg, user = _load(config), user or _default_user()
    body = {"id": alarm_id, "user": user, "comment": comment}
    _command(cfg, "unshelve", body, [alarm_id], lambda a, now: a.unshelve(now))


def _service(config: Path, alarm_id: str, out: bool, user: str, comment: str) -> None:
    cfg, user = _load(config), user or _default_user()
    body = {"id": alarm_id, "user": user, "comment": comment, "out": out}
    _command(cfg, "service", body, [alarm_id], lambda a, now: a.set_out_of_service(out, now))


@alarms_app.command("out-of-service")
def out_of_service(
    alarm_id: Annotated[str, typer.Argument(help="alarm id")],
    config: ConfigOpt = Path("config.toml"),
    user: UserOpt = "",
    comment: CommentOpt = "",
) -> None:
    """Take an alarm out of service (maintenance): no annunciation until put back."""
    _service(config, alarm_id, True, user, comment)


@alarms_app.command("in-service")
def in_service(
    alarm_id: Annotated[str, typer.Argument(help="alarm id")],
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
    start: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "-24h",
    end: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "now",
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

    text = _gateway_or_journal(cfg, "/api/v1/alarms/events", offline, params=params)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.write_text(text, encoding="utf-8")
        typer.echo(f"{out}: {max(text.count(chr(10)) - 1, 0)} events", err=True)


@alarms_app.command()
def stats(
    config: ConfigOpt = Path("config.toml"),
    start: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "-24h",
    end: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "now",
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
    figures = _gateway_or_journal(cfg, "/api/v1/alarms/stats", offline, params=params)
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
