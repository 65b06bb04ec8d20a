"""Pure renderings of the control page: a selection, a command's result, a playbook run."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from dash import html

from beffroi.core.model import Quality
from beffroi.hmi.figures import DISPLAY_TZ, quality_name
from beffroi.i18n import N_, _, fmt_exact, fmt_number, fmt_quantity, fmt_time

# Status codes of commands and steps, and states of runs, translated where shown.
STATUS_LABELS = {
    "pending": N_("pending"),
    "sending": N_("sending…"),
    "running": N_("running…"),
    "confirmed": N_("confirmed"),
    "restored": N_("restored"),
    "kept": N_("kept"),
    "sent": N_("sent"),
    "queued": N_("queued"),
    "partial": N_("partly done"),
    "failed": N_("failed"),
    "rejected": N_("rejected"),
    "unconfirmed": N_("unconfirmed"),
    "refused": N_("refused"),
    "skipped": N_("skipped"),
}
RUN_STATES = {
    "preview": N_("preview"),
    "running": N_("in progress"),
    "done": N_("finished"),
    "stopped": N_("interrupted"),
    "discarded": N_("discarded"),
    "rolling_back": N_("rolling back"),
    "rolled_back": N_("rolled back"),
    "rollback_failed": N_("rollback failed"),
}
# The selection names a quality by its stored label ("CommLoss"); operators read it translated.
QUALITY_CODES = {q.label: int(q) for q in Quality}
COMMAND_HEADERS = (
    N_("asset"),
    N_("commune"),
    N_("distance"),
    N_("value"),
    N_("before"),
    N_("result"),
    N_("detail"),
)


def status_text(status: str) -> str:
    """Name a command's or a step's status in the user's language."""
    label = STATUS_LABELS.get(status)
    return _(label) if label is not None else status


def run_state_text(state: str) -> str:
    """Name a playbook run's state in the user's language."""
    label = RUN_STATES.get(state)
    return _(label) if label is not None else state.replace("_", " ")


def local_time(ts: datetime | str | None, fmt: str = "%H:%M:%S") -> str:
    """Show a UTC time in local time."""
    if ts is None:
        return "—"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if fmt == "%H:%M:%S":
        return fmt_time(ts, ZoneInfo(DISPLAY_TZ), seconds=True)
    return ts.astimezone(ZoneInfo(DISPLAY_TZ)).strftime(fmt)


def show(value: Any, unit: str = "") -> str:
    """Format a setpoint value with its unit."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, float):
        # Up to six decimals, the locale's separators: what the operator may type back.
        value = fmt_exact(value)
    return f"{value} {unit}".strip() if unit else str(value)


def selection_view(sel: dict[str, Any]) -> html.Div:
    """Show what a selection found: value, range, interlocks, other users, expiry."""
    rng = _("any value")
    if sel["kind"] == "float":
        rng = f"{show(sel['low'])} … {show(sel['high'])} {sel['unit']}".strip()
        if sel["step"]:
            rng += ", " + _("step %(step)s") % {"step": show(sel["step"])}
    elif sel["kind"] == "bool":
        rng = _("yes or no")
    else:
        rng = _("text, %(n)s characters at most") % {"n": fmt_number(200)}
    locks = [
        html.Li(
            f"{i['rule']}: {i['message']} — "
            + (
                _("BLOCKING now (%(why)s)") % {"why": i["why"]}
                if i["blocking"]
                else _("not blocking now")
            ),
            className="control-interlock-on" if i["blocking"] else "control-interlock-off",
        )
        for i in sel["interlocks"]
    ]
    others = ", ".join(sel["others"]) if sel["others"] else _("nobody else")
    code = QUALITY_CODES.get(sel["quality"])
    quality = quality_name(code) if code is not None else sel["quality"]
    current = _("Current value: %(value)s (%(quality)s, at %(time)s)") % {
        "value": show(sel["current"], sel["unit"]),
        "quality": quality,
        "time": local_time(sel["current_ts"]),
    }
    expires = _("Selected until %(time)s: operate before, with a reason.") % {
        "time": local_time(sel["expires_at"])
    }
    return html.Div(
        className="control-selection",
        children=[
            html.Div(html.B(sel["tag"]), id="control-selected-tag"),
            html.Div(current, id="control-current"),
            html.Div(_("Allowed: %(range)s") % {"range": rng}, id="control-range"),
            html.Div(
                [_("Interlocks:") + " ", html.Ul(locks) if locks else _("none")],
                id="control-locks",
            ),
            html.Div(_("Also selected by: %(users)s") % {"users": others}, id="control-others"),
            html.Div(expires, id="control-expires"),
        ],
    )


def result_view(result: dict[str, Any]) -> html.Div:
    """Show a command's outcome, coloured by status."""
    status = result["status"]
    text = _("%(status)s: %(tag)s = %(value)s") % {
        "status": status_text(status).upper(),
        "tag": result["tag"],
        "value": show(result["value"]),
    }
    if result.get("previous") is not None:
        text += " " + _("(was %(value)s)") % {"value": show(result["previous"])}
    if result.get("detail"):
        text += f" — {result['detail']}"
    return html.Div(text, className=f"control-result control-result-{status}", id="control-outcome")


def _command_row(c: dict[str, Any], rolled: bool) -> html.Tr:
    cells = [
        html.Td(c["asset"]),
        html.Td(c["commune"]),
        html.Td(fmt_quantity(c["distance_m"], "m"), className="num"),
        html.Td(show(c["value"])),
        html.Td(show(c["previous"])),
        html.Td(status_text(c["status"]), className=f"st-{c['status']}"),
        html.Td(c["detail"]),
    ]
    if rolled:
        st = c["rollback_status"] or "pending"
        cells.append(html.Td(status_text(st), className=f"st-{st}"))
    return html.Tr(cells, className="control-command")


def run_view(run: dict[str, Any]) -> html.Div:
    """Show a run: its steps and every command, their results and their rollback."""
    state = run["state"]
    rolled = state in ("rolling_back", "rolled_back", "rollback_failed")
    where = run["place"] or f"{fmt_number(run['lat'], 5)} ; {fmt_number(run['lon'], 5)}"
    head = html.Div(
        [
            html.B(_(run["label"])),  # config text, catalogued
            " "
            + _("at %(place)s, %(radius)s m, by %(user)s")
            % {"place": where, "radius": fmt_number(run["radius_m"]), "user": run["user"]}
            + " — ",
            html.Span(
                run_state_text(state), id="control-run-state", className=f"control-state-{state}"
            ),
        ],
        className="control-run-head",
    )
    steps = []
    for s in run["steps"]:
        st = s["rollback_status"] if rolled and s["rollback_status"] else s["status"]
        title = f"{s['index'] + 1}. {s['title']} — {status_text(st)}"
        body: list[Any] = []
        if s["action"] == "email":
            said = _("E-mail to %(to)s: « %(subject)s »")
            body.append(html.Div(said % {"to": ", ".join(s["to"]), "subject": s["subject"]}))
            if s["detail"] or s["rollback_detail"]:
                body.append(html.Div(s["rollback_detail"] if rolled else s["detail"]))
        elif s["commands"]:
            header = [_(h) for h in COMMAND_HEADERS]
            header += [_("rollback")] if rolled else []
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
