"""Where `beffroi alarms` goes: the running gateway's alarm API, else the journal file itself.

While a gateway runs, its engine holds the live state and its journal file; otherwise commands
rebuild their alarms from the journal, append the resulting events and audit them as the API
does, with `source: cli`.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from datetime import datetime
from typing import Any

import typer

from beffroi.alerts.config import journal_path
from beffroi.app.config import Config
from beffroi.core.plugins import load

Journaled = Callable[[Any], Any]  # the gateway's answer, made from the journal file instead
Apply = Callable[[Any, datetime], str]  # an operator command on one alarm, naming its event


class NoGateway(Exception):
    """No running gateway answers: use the journal file."""


def call(cfg: Config, method: str, path: str, params: Any = None, body: Any = None) -> Any:
    """Ask the running gateway's alarm API; raise NoGateway when none answers."""
    from beffroi.core.cli import _fail
    from beffroi.core.runtime import gateway_file_path

    try:
        info = json.loads(gateway_file_path(cfg).read_text())
        base, token = info["url"], info["token"]
    except (OSError, ValueError, KeyError, TypeError):
        raise NoGateway from None
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
        raise NoGateway from None  # a stale gateway.json: the journal file is free
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


def gateway_or_journal(
    cfg: Config, path: str, offline: Journaled, *, params: Any = None, body: Any = None
) -> Any:
    """GET path (POST body) from the running gateway, or offline(journal): the same answer."""
    try:
        return call(cfg, "GET" if body is None else "POST", path, params, body)
    except NoGateway:
        journal = _journal(cfg, write=body is not None)  # only commands append to it
        try:
            return offline(journal)
        finally:
            journal.close()


def _offline_command(
    cfg: Config,
    journal: Any,
    ids: list[str],
    apply: Apply,
    body: dict[str, Any],
    action: str,
    detail: dict[str, Any],
) -> list[dict[str, Any]]:
    """Apply a command to alarms rebuilt from the journal, append its events, audit it."""
    from beffroi.core.cli import _fail
    from beffroi.core.cli_audit import offline_audit
    from beffroi.core.model import utcnow

    alarm_cls, command_error = load("alerts", "alarm"), load("alerts", "command_error")
    record = load("control", "record_command")
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
                    raise command_error(f"{alarm_id}: {why}")
                alarm = alarm_cls.from_row(rows[alarm_id])
                events.append(alarm.event(apply(alarm, now), now, user, comment))
        except command_error as exc:  # nothing was appended: refused as a whole
            record(log, user, action, targets, "refused", reason=str(exc), **fields)
            raise _fail([str(exc)], 1) from None
        journal.write(events)
        if not record(log, user, action, targets, **fields):
            raise _fail([f"{action} done, but the audit log cannot record it"], 1)
    return [e.as_row() for e in events]


def command(
    cfg: Config,
    route: str,
    body: dict[str, Any],
    ids: list[str],
    apply: Apply,
    action: str,
    **detail: Any,
) -> None:
    """Send a command to the gateway's API, or apply it to the journal audited as the API does
    (`action`, `detail`); print its events."""

    def offline(journal: Any) -> dict[str, Any]:
        return {"events": _offline_command(cfg, journal, ids, apply, body, action, detail)}

    for r in gateway_or_journal(cfg, f"/api/v1/alarms/{route}", offline, body=body)["events"]:
        typer.echo(f"{r['alarm_id']}: {r['event']} → {r['state']}")
