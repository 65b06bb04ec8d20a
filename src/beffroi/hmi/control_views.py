"""Pure renderings of the control page: a selection, a command's result, a playbook run."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import html

from beffroi.hmi.figures import DISPLAY_TZ

STATUS_LABELS = {
    "pending": "pending",
    "sending": "sending…",
    "running": "running…",
    "confirmed": "confirmed",
    "restored": "restored",
    "kept": "kept",
    "sent": "sent",
    "queued": "queued",
    "partial": "partly done",
    "failed": "failed",
    "rejected": "rejected",
    "unconfirmed": "unconfirmed",
    "refused": "refused",
    "skipped": "skipped",
}


def local_time(ts: datetime | str | None, fmt: str = "%H:%M:%S") -> str:
    """Show a UTC time in local time."""
    if ts is None:
        return "—"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    return ts.astimezone(ZoneInfo(DISPLAY_TZ)).strftime(fmt)


def show(value: Any, unit: str = "") -> str:
    """Format a setpoint value with its unit."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        value = f"{value:g}"
    return f"{value} {unit}".strip() if unit else str(value)


def selection_view(sel: dict[str, Any]) -> html.Div:
    """Show what a selection found: value, range, interlocks, other users, expiry."""
    rng = "any value"
    if sel["kind"] == "float":
        rng = f"{show(sel['low'])} … {show(sel['high'])} {sel['unit']}".strip()
        if sel["step"]:
            rng += f", step {show(sel['step'])}"
    elif sel["kind"] == "bool":
        rng = "true or false"
    else:
        rng = "text, 200 characters at most"
    locks = [
        html.Li(
            f"{i['rule']}: {i['message']} — "
            + (f"BLOCKING now ({i['why']})" if i["blocking"] else "not blocking now"),
            className="control-interlock-on" if i["blocking"] else "control-interlock-off",
        )
        for i in sel["interlocks"]
    ]
    others = ", ".join(sel["others"]) if sel["others"] else "nobody else"
    return html.Div(
        className="control-selection",
        children=[
            html.Div(html.B(sel["tag"]), id="control-selected-tag"),
            html.Div(
                f"Current value: {show(sel['current'], sel['unit'])} "
                f"({sel['quality']}, at {local_time(sel['current_ts'])})",
                id="control-current",
            ),
            html.Div(f"Allowed: {rng}", id="control-range"),
            html.Div(["Interlocks: ", html.Ul(locks) if locks else "none"], id="control-locks"),
            html.Div(f"Also selected by: {others}", id="control-others"),
            html.Div(
                f"Selected until {local_time(sel['expires_at'])}: operate before, with a reason.",
                id="control-expires",
            ),
        ],
    )


def result_view(result: dict[str, Any]) -> html.Div:
    """Show a command's outcome, coloured by status."""
    status = result["status"]
    text = f"{status.upper()}: {result['tag']} = {show(result['value'])}"
    if result.get("previous") is not None:
        text += f" (was {show(result['previous'])})"
    if result.get("detail"):
        text += f" — {result['detail']}"
    return html.Div(text, className=f"control-result control-result-{status}", id="control-outcome")


def _command_row(c: dict[str, Any], rolled: bool) -> html.Tr:
    cells = [
        html.Td(c["asset"]),
        html.Td(c["commune"]),
        html.Td(f"{c['distance_m']:.0f} m", className="num"),
        html.Td(show(c["value"])),
        html.Td(show(c["previous"])),
        html.Td(STATUS_LABELS.get(c["status"], c["status"]), className=f"st-{c['status']}"),
        html.Td(c["detail"]),
    ]
    if rolled:
        st = c["rollback_status"] or "pending"
        cells.append(html.Td(STATUS_LABELS.get(st, st), className=f"st-{st}"))
    return html.Tr(cells, className="control-command")


def run_view(run: dict[str, Any]) -> html.Div:
    """Show a run: its steps and every command, their results and their rollback."""
    state = run["state"]
    rolled = state in ("rolling_back", "rolled_back", "rollback_failed")
    where = run["place"] or f"{run['lat']:.5f}, {run['lon']:.5f}"
    head = html.Div(
        [
            html.B(run["label"]),
            f" at {where}, {run['radius_m']:.0f} m, by {run['user']} — ",
            html.Span(
                state.replace("_", " "), id="control-run-state", className=f"control-state-{state}"
            ),
        ],
        className="control-run-head",
    )
    steps = []
    for s in run["steps"]:
        st = s["rollback_status"] if rolled and s["rollback_status"] else s["status"]
        title = f"{s['index'] + 1}. {s['title']} — {STATUS_LABELS.get(st, st)}"
        body: list[Any] = []
        if s["action"] == "email":
            body.append(html.Div(f"E-mail to {', '.join(s['to'])}: « {s['subject']} »"))
            if s["detail"] or s["rollback_detail"]:
                body.append(html.Div(s["rollback_detail"] if rolled else s["detail"]))
        elif s["commands"]:
            header = ["asset", "commune", "distance", "value", "before", "result", "detail"]
            header += ["rollback"] if rolled else []
            body.append(
                html.Table(
                    [
                        html.Thead(html.Tr([html.Th(h) for h in header])),
                        html.Tbody([_command_row(c, rolled) for c in s["commands"]]),
                    ],
                    className="control-commands",
                )
            )
        if s["note"]:
            body.append(html.Div(s["note"], className="control-note"))
        steps.append(
            html.Div(
                [html.Div(title, className=f"control-step-title st-{st}"), *body],
                className="control-step",
                id=f"control-step-{s['index'] + 1}",
            )
        )
    return html.Div([head, *steps], className="control-run", id=f"control-run-{run['id']}")
