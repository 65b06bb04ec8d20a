"""The residents' report page and the crews' field page: phone-first HTML, no login.

`/public/signaler` (a form) and `/public/api/reports` (JSON) take a resident's report,
rate-limited per client address; `/public/confidentialite` says what is kept and for how long.
`/field/<token>` opens one intervention to its crew through a signed link (`links.py`): the
equipment's live values, its alarms, its history, and the moves a crew makes (en route, on
site, done) and notes. Every page is plain HTML that works without JavaScript; the one script
(the "use my position" button) and the style sheet are inline, allowed by their hashes in the
Content-Security-Policy, so nothing is fetched from anywhere else. The pages speak the
request's language (French unless the browser prefers English): templates call `_()` as they
render, and the script reads its messages from the page, so that its hash never changes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import threading
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from flask import Flask, Response, redirect, request
from jinja2 import DictLoader, Environment, StrictUndefined
from markupsafe import Markup
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.wrappers import Response as BaseResponse  # what flask.redirect returns

from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample
from beffroi.hmi.public import RateLimit
from beffroi.hmi.server import address_key
from beffroi.i18n import N_, _, current_locale, fmt_datetime, fmt_exact, ngettext
from beffroi.interventions.links import LinkRefused
from beffroi.interventions.model import (
    CATEGORIES,
    CLOSED,
    EVENT_LABELS,
    ORDER,
    STATE_LABELS,
    Intervention,
    State,
    Via,
    can_move,
)
from beffroi.interventions.service import NOTE_MAX, InterventionError, InterventionService

log = logging.getLogger(__name__)

# The moves a crew makes from its link; cancelling is the command post's decision.
FIELD_MOVES = (State.EN_ROUTE, State.ON_SITE, State.DONE)
# A field form carries a note of NOTE_MAX characters at most: 4 bytes each, URL-encoded.
FIELD_BODY_MAX = 64 * 1024
TOKEN_MAX = 512  # a token is ~100 characters; anything far longer is refused unread
ADDRESS_MAX = 200  # what the service keeps of an address
EMAIL_MAX = 254
JSON_KEYS = frozenset({"category", "lat", "lon", "text", "address", "email", "consent"})

# English message ids, translated where a page shows them.
QUALITY_WORDS = {
    Quality.UNCERTAIN: N_("uncertain"),
    Quality.BAD: N_("bad"),
    Quality.COMM_LOSS: N_("link lost"),
}
ALARM_STATES = {
    "unack_active": N_("active, unacknowledged"),
    "ack_active": N_("active, acknowledged"),
    "unack_rtn": N_("back to normal, unacknowledged"),
    "shelved": N_("shelved"),
    "suppressed": N_("suppressed"),
    "out_of_service": N_("out of service"),
}
PRIORITIES = {
    1: N_("P1 — very urgent"),
    2: N_("P2 — urgent"),
    3: N_("P3 — normal"),
    4: N_("P4 — low"),
}
ROLE_LABELS = {
    "viewer": N_("viewer"),
    "operator": N_("operator"),
    "supervisor": N_("supervisor"),
    "auditor": N_("auditor"),
    "admin": N_("administrator"),
}
# What the "use my position" script says: read from the page (data-*), in its language.
LOCATE_MESSAGES = {
    "unavailable": N_("Location is not available here: type in the latitude and the longitude."),
    "searching": N_("Looking for your position…"),
    "found": N_("Position found (to within %(metres)s m)."),
    "denied": N_("Location refused: type in the latitude and the longitude."),
    "failed": N_("Position not found: type in the latitude and the longitude."),
}

STYLE = """
*{box-sizing:border-box}
body{font:1.125rem/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
color:#111;background:#f4f6f8}
header{background:#1d2733;color:#fff;padding:.75rem 1rem}
header p{margin:0;font-weight:600}
main{max-width:40rem;margin:0 auto;padding:1rem}
h1{font-size:1.5rem;margin:.5rem 0 1rem}
h2{font-size:1.2rem;margin:1.75rem 0 .5rem}
label{display:block;font-weight:600;margin:1rem 0 .25rem}
input,select,textarea,button{font:inherit;width:100%;min-height:3rem;padding:.6rem .75rem;
border:2px solid #5b6b7c;border-radius:.5rem;background:#fff;color:#111}
textarea{min-height:7rem;resize:vertical}
.check{display:flex;align-items:center;gap:.75rem;font-weight:400}
.check input{width:1.75rem;height:1.75rem;min-height:0;flex:none;margin:0}
button{background:#0b5cc4;border-color:#0b5cc4;color:#fff;font-weight:700;margin-top:1rem;
cursor:pointer}
button.secondary{background:#fff;color:#0b5cc4}
button.done{background:#1b7a3a;border-color:#1b7a3a}
:focus-visible{outline:3px solid #f0a500;outline-offset:2px}
.hint{color:#46525e;font-size:.95rem;margin:.25rem 0}
.error{background:#fde8e8;border-left:.4rem solid #b3261e;padding:.75rem;color:#6d1510}
.ok{background:#e6f4ea;border-left:.4rem solid #1b7a3a;padding:.75rem}
fieldset{border:2px solid #c9d1da;border-radius:.5rem;margin:1rem 0;padding:.25rem 1rem 1rem}
legend{font-weight:700;padding:0 .25rem}
.pair{display:flex;gap:.75rem}.pair>div{flex:1}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.25rem 1rem;margin:0}
dt{font-weight:600}dd{margin:0;overflow-wrap:anywhere}
table{width:100%;border-collapse:collapse}
th,td{text-align:left;padding:.4rem .25rem;border-bottom:1px solid #d5dbe1;vertical-align:top}
ol{padding-left:1.25rem}li{margin:.35rem 0}
a{color:#0b5cc4}
a.button{display:block;text-align:center;padding:.75rem 1rem;border:2px solid #0b5cc4;
border-radius:.5rem;text-decoration:none;font-weight:700;margin:.75rem 0}
.poor{color:#8a4b00;font-weight:600}
"""

LOCATE_JS = """
(function () {
  var button = document.getElementById("locate");
  var status = document.getElementById("locate-status");
  if (!button || !status) { return; }
  var say = status.dataset;  // the page's messages, in its language
  if (!("geolocation" in navigator) || !window.isSecureContext) {
    status.textContent = say.unavailable;
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = say.searching;
    navigator.geolocation.getCurrentPosition(function (pos) {
      document.getElementById("lat").value = pos.coords.latitude.toFixed(6);
      document.getElementById("lon").value = pos.coords.longitude.toFixed(6);
      status.textContent = say.found.replace("%(metres)s", Math.round(pos.coords.accuracy));
    }, function (err) {
      status.textContent = err.code === 1 ? say.denied : say.failed;
    }, {enableHighAccuracy: true, timeout: 15000, maximumAge: 60000});
  });
})();
"""


def _source_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Only this style sheet and this script run (their hashes), forms post to this site only, and
# no page may be framed: an injected tag, if any ever slipped through, would do nothing.
CSP = (
    f"default-src 'none'; style-src {_source_hash(STYLE)}; script-src {_source_hash(LOCATE_JS)}; "
    "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)

BASE = """<!doctype html>
<html lang="{{ lang }}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{{ title }} — {{ metropolis }}</title>
<style>{{ style }}</style>
</head><body>
<header><p>{{ metropolis }}</p></header>
<main>
<h1>{{ title }}</h1>
{% if error %}<p class="error" role="alert" id="error">{{ error }}</p>{% endif %}
{% block content %}{% endblock %}
</main>
{% block script %}{% endblock %}
</body></html>
"""

REPORT_FORM = """{% extends "base.html" %}
{% block content %}
<p>{{ _("A street light out, a broken traffic light, a leak? Tell the metropolis's services. \
Fields marked * are required.") }}</p>
{% if email_again %}<p class="hint">{{ _("To be told, type in your e-mail address \
again.") }}</p>{% endif %}
<form method="post" id="report-form">
<label for="category">{{ _("Kind of problem") }} *</label>
<select id="category" name="category" required>
<option value="">— {{ _("Choose") }} —</option>
{% for c in categories %}
<option value="{{ c.id }}"{% if c.id == v.category %} selected{% endif %}>{{ _(c.label) }}</option>
{% endfor %}
</select>
<fieldset>
<legend>{{ _("Place") }} *</legend>
<button type="button" id="locate" class="secondary" hidden>{{ _("Use my position") }}</button>
<p id="locate-status" class="hint" role="status" aria-live="polite"
{% for key, text in locate.items() %} data-{{ key }}="{{ text }}"{% endfor %}></p>
<div class="pair">
<div><label for="lat">{{ _("Latitude") }}</label>
<input id="lat" name="lat" inputmode="decimal" autocomplete="off" value="{{ v.lat }}"
 required aria-describedby="place-hint" placeholder="47.3220"></div>
<div><label for="lon">{{ _("Longitude") }}</label>
<input id="lon" name="lon" inputmode="decimal" autocomplete="off" value="{{ v.lon }}"
 required aria-describedby="place-hint" placeholder="5.0415"></div>
</div>
<p id="place-hint" class="hint">{{ _("In decimal degrees, as on a map (comma or point).") }}</p>
<label for="address">{{ _("Address or landmark (optional)") }}</label>
<input id="address" name="address" maxlength="{{ address_max }}" autocomplete="street-address"
 value="{{ v.address }}">
</fieldset>
<label for="text">{{ _("Description") }} *</label>
<textarea id="text" name="text" required maxlength="{{ text_max }}"
 aria-describedby="text-hint">{{ v.text }}</textarea>
<p id="text-hint" class="hint">{{ _("%(max)s characters at most. Give no personal \
data.", max=text_max) }}</p>
{% if email_enabled %}
<fieldset>
<legend>{{ _("Be told (optional)") }}</legend>
<label for="email">{{ _("E-mail address") }}</label>
<input id="email" name="email" type="email" maxlength="{{ email_max }}" autocomplete="email"
 aria-describedby="email-hint">
<label class="check" for="consent"><input type="checkbox" id="consent" name="consent"
 value="1"> {{ _("Tell me by e-mail when it is fixed") }}</label>
<p id="email-hint" class="hint">{{ _("Your address is kept only if the box is ticked, apart \
from the report, and it is deleted %(when)s.", when=retention) }}</p>
</fieldset>
{% endif %}
<p><a href="confidentialite">{{ _("Your data: what we keep and why") }}</a></p>
<button type="submit">{{ _("Send the report") }}</button>
</form>
{% endblock %}
{% block script %}<script>{{ script }}</script>{% endblock %}
"""

REPORT_DONE = """{% extends "base.html" %}
{% block content %}
<p class="ok" role="status">{{ _("Your report is recorded under number %(number)s.", \
number=number) }}</p>
{% if result.duplicate_of %}
<p>{{ _("The same problem has already been reported close by (report no. %(id)s): yours is \
attached to it.", id=result.duplicate_of) }}</p>
{% elif result.known_problem %}
<p>{{ _("The metropolis's services already know of this problem.") }}</p>
{% endif %}
{% if told %}<p>{{ _("You will receive an e-mail when it is fixed.") }}</p>{% endif %}
<p>{{ _("Thank you for your help.") }}</p>
<p><a class="button" href="signaler">{{ _("Make another report") }}</a></p>
{% endblock %}
"""

PRIVACY = """{% extends "base.html" %}
{% block content %}
<h2>{{ _("What a report keeps") }}</h2>
<p>{{ _("The kind of problem, the place (coordinates, and address or landmark if you give \
one), your description and the time it was sent. This information serves to organise the \
interventions of the services of %(metropolis)s and to follow their quality.", \
metropolis=metropolis) }}</p>
<h2>{{ _("Your e-mail address") }}</h2>
{% if email_enabled %}
<p>{{ _("It is optional and kept only if you tick “%(consent)s”, for one reason only: to tell \
you when the problem is dealt with.", consent=_("Tell me by e-mail when it is fixed")) }}</p>
{% else %}
<p>{{ _("This service does not ask for an e-mail address for now. When it does, the address is \
optional and kept only with your consent, to tell you when it is fixed.") }}</p>
{% endif %}
<ul>
<li>{{ _("It is kept apart from the report.") }}</li>
{% if roles %}
<li>{{ _("Only agents with the role %(roles)s can read it.", roles=roles) }}</li>
{% else %}
<li>{{ _("No agent can read it: it only serves to send you the notice.") }}</li>
{% endif %}
<li>{{ _("It is never published, exported or passed on to third parties.") }}</li>
<li id="retention">{{ _("It is deleted %(when)s.", when=retention) }}</li>
</ul>
<h2>{{ _("What is not kept") }}</h2>
<p>{{ _("Your device's network address only serves, in memory, to limit abusive sending; it is \
not recorded with the report.") }}</p>
<h2>{{ _("Your rights") }}</h2>
<p>{{ _("You may ask %(metropolis)s for access to your data, its correction or its deletion, \
giving the number of your report.", metropolis=metropolis) }}</p>
<p><a class="button" href="signaler">{{ _("Make a report") }}</a></p>
{% endblock %}
"""

FIELD = """{% extends "base.html" %}
{% block content %}
<p id="title"><strong>{{ item.title }}</strong></p>
<dl>
<dt>{{ _("Number") }}</dt><dd id="number">{{ item.id }}</dd>
<dt>{{ _("State") }}</dt><dd id="state">{{ state }}</dd>
<dt>{{ _("Priority") }}</dt><dd>{{ priority }}</dd>
<dt>{{ _("Team") }}</dt><dd>{{ item.team or _("no team") }}</dd>
<dt>{{ _("Commune") }}</dt><dd>{{ commune }}</dd>
</dl>
<h2>{{ _("Place") }}</h2>
{% if item.lat is not none and item.lon is not none %}
<p>{{ "%.6f"|format(item.lat) }}, {{ "%.6f"|format(item.lon) }}</p>
<p><a class="button" id="map-link" href="{{ geo }}">{{ _("Open in the maps app") }}</a></p>
{% else %}<p>{{ _("No coordinates.") }}</p>{% endif %}
{% for a in assets %}
<h2>{{ a.id }}{% if a.label %} — {{ a.label }}{% endif %}</h2>
{% if a.place %}<p>{{ a.place }}</p>{% endif %}
{% if a.missing %}<p class="hint">{{ _("Asset missing from the register.") }}</p>{% endif %}
{% if a.rows %}
<table><caption class="hint">{{ _("Live values") }}</caption>
<thead><tr><th scope="col">{{ _("Signal") }}</th><th scope="col">{{ _("Value") }}</th>
<th scope="col">{{ _("Time") }}</th></tr>
</thead><tbody>
{% for r in a.rows %}
<tr><th scope="row">{{ r.signal }}</th><td{% if r.poor %} class="poor"{% endif %}>{{ r.value }}
{% if r.poor %}({{ r.poor }}){% endif %}</td><td>{{ r.time }}</td></tr>
{% endfor %}
</tbody></table>
{% endif %}
{% endfor %}
<h2>{{ _("Active alarms") }}</h2>
{% if alarms is none %}<p class="hint">{{ _("Alarms unavailable.") }}</p>
{% elif not alarms %}<p>{{ _("No active alarm.") }}</p>
{% else %}<ul id="alarms">
{% for a in alarms %}<li>P{{ a.severity }} — {{ a.message }} ({{ a.asset }}, {{ a.state }})</li>
{% endfor %}</ul>{% endif %}
{% if item.open %}
<h2>{{ _("Update") }}</h2>
{% if not item.team %}
<p class="hint">{{ _("This intervention is assigned to no team: the command post must assign \
it before any change of state.") }}</p>
{% else %}
{% if moves %}<p class="hint">{{ _("Move the intervention to the state:") }}</p>{% endif %}
{% for m in moves if m.state != "done" %}
<form method="post"><input type="hidden" name="action" value="{{ m.state }}">
<button type="submit">{{ m.label }}</button></form>
{% endfor %}
{% for m in moves if m.state == "done" %}
<form method="post"><input type="hidden" name="action" value="done">
<label for="done-note">{{ _("Report of the work (optional)") }}</label>
<textarea id="done-note" name="note" maxlength="{{ note_max }}"></textarea>
<label class="check" for="confirm"><input type="checkbox" id="confirm" name="confirm" value="1"
 required> {{ _("I confirm that the intervention is done") }}</label>
<button type="submit" class="done">{{ m.label }}</button></form>
{% endfor %}
{% endif %}
<form method="post"><input type="hidden" name="action" value="note">
<label for="note">{{ _("Add a note") }}</label>
<textarea id="note" name="note" required maxlength="{{ note_max }}"></textarea>
<button type="submit" class="secondary">{{ _("Save the note") }}</button></form>
{% endif %}
<h2>{{ _("History") }}</h2>
<ol id="history">
{% for e in events %}<li><strong>{{ e.time }}</strong> — {{ e.kind }}{% if e.state %} :
{{ e.state }}{% endif %} ({{ e.actor }}){% if e.text %}<br>{{ e.text }}{% endif %}</li>
{% endfor %}
</ol>
{% endblock %}
"""

MESSAGE = """{% extends "base.html" %}
{% block content %}{% for p in paragraphs %}<p>{{ p }}</p>{% endfor %}{% endblock %}
"""

# Autoescaping on: every value a template shows is escaped unless it is Markup (the constant
# style and script above); StrictUndefined makes a misspelt name an error, not an empty string.
_ENV = Environment(
    loader=DictLoader(
        {
            "base.html": BASE,
            "report.html": REPORT_FORM,
            "report_done.html": REPORT_DONE,
            "privacy.html": PRIVACY,
            "field.html": FIELD,
            "message.html": MESSAGE,
        }
    ),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    extensions=["jinja2.ext.i18n"],
)
# Templates translate as they render, in the request's language; `_("… %(x)s", x=…)` escapes x.
# (`install_gettext_callables` is what the i18n extension adds to the environment.)
_ENV.install_gettext_callables(_, ngettext, newstyle=True)  # type: ignore[attr-defined]


class _Refused(ValueError):
    """Input the web layer refuses before the service sees it (said in the request's language)."""


def _page(
    service: InterventionService,
    template: str,
    title: str,
    status: int = 200,
    *,
    error: str = "",
    **values: Any,
) -> Response:
    """Render one of the pages with its security headers."""
    body = _ENV.get_template(template).render(
        title=title,
        lang=current_locale(),
        metropolis=service.cfg.metropolis.name,
        style=Markup(STYLE),
        script=Markup(LOCATE_JS),
        error=_sentence(error) if error else "",
        **values,
    )
    return _secure(Response(body, status, mimetype="text/html"))


def _secure(resp: Response) -> Response:
    """Add the headers every page of this module carries."""
    # A field page's address is its key: never cached, never sent on as a Referer.
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Content-Security-Policy"] = CSP
    resp.headers["X-Frame-Options"] = "DENY"
    return resp


def _json(body: dict[str, Any], status: int) -> Response:
    resp = Response(json.dumps(body, ensure_ascii=False), status, mimetype="application/json")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def _sentence(text: str) -> str:
    """Return a message as a sentence: capital first, final stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def _retention(days: float) -> str:
    """Return when a resident's address is deleted, in words."""
    if days <= 0:
        return _("as soon as the report is closed")
    unit = _("day") if days <= 1 else _("days")
    return _("%(n)s %(unit)s after the report is closed") % {"n": _number(days), "unit": unit}


def _clean(value: object) -> str:
    """Return a form or JSON text without NUL characters (PostgreSQL refuses them)."""
    return value.replace("\x00", "") if isinstance(value, str) else ""


def _coordinate(text: str, what: str, low: float, high: float) -> float:
    """Parse a typed latitude or longitude (a decimal comma is French usage); `what` is its
    name, translated."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise _Refused(
            _("invalid %(what)s: a number in decimal degrees is expected") % {"what": what}
        ) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _Refused(
            _("invalid %(what)s: between %(low)s and %(high)s degrees")
            % {"what": what, "low": f"{low:g}", "high": f"{high:g}"}
        )
    return value


def _client() -> str:
    """Return the key a client is rate-limited under.

    The socket's address (waitress gives what a configured trusted proxy reports), never
    X-Forwarded-For, which any client writes; an IPv6 client counts as its /64, which it may
    pick addresses from freely.
    """
    return address_key(request.remote_addr or "?")


def _local(ts: datetime, tz: ZoneInfo) -> str:
    """Return a time in the metropolis's zone, the reader's way (naive times are UTC, as stored)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return fmt_datetime(ts, tz)


def _number(value: float) -> str:
    """Return a number the reader's way ("3,46" in French), at most two decimals."""
    rounded = round(value, 2)
    return fmt_exact(rounded if rounded != 0 else 0.0)  # never "-0"


def _value(sample: Sample | None, unit: str) -> tuple[str, str]:
    """Return a live value as shown, and a quality word when it cannot be trusted."""
    if sample is None:
        return "—", _("no value")
    if sample.quality is not Quality.GOOD:
        return "—", _(QUALITY_WORDS.get(sample.quality, N_("bad")))
    v = sample.value
    if isinstance(v, bool):
        return (_("yes") if v else _("no")), ""
    if isinstance(v, int | float):
        if not math.isfinite(v):
            return "—", _("bad")
        return (f"{_number(v)} {unit}".strip()), ""
    return str(v), ""


def _alarm_state(state: str) -> str:
    """Return an alarm's state in words (its code when unknown)."""
    return _(ALARM_STATES[state]) if state in ALARM_STATES else state


def _actor(actor: str) -> str:
    """Return who made a change, in words a crew reads."""
    if actor == "system":
        return "Beffroi"
    if actor == "public":
        return _("resident")
    if actor.startswith("field:"):
        return _("team %(team)s") % {"team": actor.removeprefix("field:")}
    return actor


def register_intervention_pages(
    server: Flask, service: InterventionService, live: LiveValues
) -> None:
    """Add /public/signaler, /public/api/reports and /field/<token>."""
    if service.ic.reports.enabled:
        _register_reports(server, service)
    _register_field(server, service, live)


# --- residents' reports ---


def _register_reports(server: Flask, service: InterventionService) -> None:
    """Add the report form, its JSON twin and the privacy notice."""
    rc = service.ic.reports
    # One window for both doors: a client cannot double its share by using the other one.
    limit = RateLimit(rc.per_min, rc.max_clients)
    days = service.ic.contact_retention_days
    # Offered only when e-mails go out: an address kept for a message never sent is kept for
    # nothing (and the consent would promise what the gateway cannot do).
    email_enabled = service.email.enabled
    categories = list(CATEGORIES.values())

    def form_page(
        values: dict[str, str], error: str = "", status: int = 200, email_again: bool = False
    ) -> Response:
        return _page(
            service,
            "report.html",
            _("Report a problem"),
            status,
            error=error,
            v=values,
            categories=categories,
            email_enabled=email_enabled,
            email_again=email_again and email_enabled,
            retention=_retention(days),
            locate={k: _(m) for k, m in LOCATE_MESSAGES.items()},
            text_max=rc.max_text_chars,
            address_max=ADDRESS_MAX,
            email_max=EMAIL_MAX,
        )

    def report_form() -> Response:
        return form_page({"category": "", "lat": "", "lon": "", "address": "", "text": ""})

    def report_post() -> Response:
        request.max_content_length = rc.max_body_bytes
        wait = limit.retry_after(_client())
        try:
            form = request.form
        except RequestEntityTooLarge:
            return _page(
                service,
                "message.html",
                _("Report too long"),
                413,
                paragraphs=[_("The form sent is too long: shorten the description.")],
            )
        values = {
            key: _clean(form.get(key)) for key in ("category", "lat", "lon", "address", "text")
        }
        email = _clean(form.get("email")).strip()
        consent = form.get("consent") == "1"
        if wait > 0:
            # The form comes back as typed: the resident sends it again a minute later.
            resp = form_page(
                values,
                _("too many sendings from your connection: try again in %(s)s s")
                % {"s": math.ceil(wait)},
                429,
                email_again=bool(email),
            )
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        try:
            if not values["lat"].strip() or not values["lon"].strip():
                raise _Refused(
                    _("give the place: tap “%(button)s” or type in the latitude and the longitude")
                    % {"button": _("Use my position")}
                )
            if email and not email_enabled:
                raise _Refused(_("e-mail notices are not offered"))
            result = service.report(
                values["category"],
                _coordinate(values["lat"], _("latitude"), -90, 90),
                _coordinate(values["lon"], _("longitude"), -180, 180),
                values["text"],
                address=values["address"],
                email=email,
                consent=consent,
            )
        except (_Refused, InterventionError) as exc:
            return form_page(values, str(exc), 400, email_again=bool(email))
        return _page(
            service,
            "report_done.html",
            _("Report sent"),
            result=result,
            number=Markup('<strong id="report-number">%s</strong>') % result["id"],
            told=bool(email) and consent,
        )

    def report_api() -> Response:
        request.max_content_length = rc.max_body_bytes
        wait = limit.retry_after(_client())
        if wait > 0:
            resp = _json({"error": _("too many sendings from this address: try again later")}, 429)
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        try:
            raw = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return _json(
                {"error": _("body too long (at most %(n)s bytes)") % {"n": rc.max_body_bytes}},
                413,
            )
        try:
            if not request.is_json:
                raise _Refused(_("the body must be JSON (Content-Type: application/json)"))
            try:
                body = json.loads(raw)
            except ValueError:  # includes bytes that are not UTF-8
                raise _Refused(_("the body is not valid JSON")) from None
            result = service.report(**_report_args(body, email_enabled))
        except (_Refused, InterventionError) as exc:
            return _json({"error": str(exc)}, 400)
        out = {k: result[k] for k in ("id", "duplicate_of", "known_problem")}
        return _json(out, 201)

    def privacy() -> Response:
        roles = [_(ROLE_LABELS[r]) if r in ROLE_LABELS else r for r in service.ic.contact_roles]
        return _page(
            service,
            "privacy.html",
            _("Reports: your data"),
            roles=_(" or ").join(roles),
            retention=_retention(days),
            email_enabled=email_enabled,
        )

    server.add_url_rule("/public/signaler", "interventions_report_form", report_form)
    server.add_url_rule(
        "/public/signaler", "interventions_report_post", report_post, methods=["POST"]
    )
    server.add_url_rule(
        "/public/api/reports", "interventions_report_api", report_api, methods=["POST"]
    )
    server.add_url_rule("/public/confidentialite", "interventions_privacy", privacy)


def _report_args(body: object, email_enabled: bool) -> dict[str, Any]:
    """Check a JSON report's fields and types; return the service's arguments."""
    if not isinstance(body, dict):
        raise _Refused(_("the body must be a JSON object"))
    unknown = sorted(set(body) - JSON_KEYS)
    if unknown:
        raise _Refused(_("unknown field: %(fields)s") % {"fields": ", ".join(unknown)[:100]})
    for key in ("category", "lat", "lon", "text"):
        if key not in body:
            raise _Refused(_("missing field: %(field)s") % {"field": key})
    if not isinstance(body["category"], str):
        raise _Refused(_("unknown category"))
    place: list[float] = []
    for key, what in (("lat", _("latitude")), ("lon", _("longitude"))):
        value = body[key]
        # bool is an int to Python; true is not a latitude.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Refused(_("invalid %(what)s: a number is expected") % {"what": what})
        try:
            place.append(float(value))
        except OverflowError:
            raise _Refused(_("invalid %(what)s") % {"what": what}) from None
    for key in ("text", "address", "email"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _Refused(_("%(field)s must be text") % {"field": key})
    consent = body.get("consent", False)
    if not isinstance(consent, bool):
        raise _Refused(_("consent must be true or false"))
    email = _clean(body.get("email") or "").strip()
    if email and not email_enabled:
        raise _Refused(_("e-mail notices are not offered"))
    return {
        "category": body["category"],
        "lat": place[0],
        "lon": place[1],
        "text": _clean(body["text"]),
        "address": _clean(body.get("address") or ""),
        "email": email,
        "consent": consent,
    }


# --- the crews' field page ---


def _register_field(server: Flask, service: InterventionService, live: LiveValues) -> None:
    """Add the field page a crew opens from its link."""
    tz = ZoneInfo(service.cfg.metropolis.timezone)
    # A double tap on "Terminée" sends two posts: one change at a time in this process, so the
    # second sees the first's state and gets the closed page, not a refusal (the service's
    # own lock keeps the store right across processes; this lock is for the crew's screen).
    changing = threading.Lock()

    def refused(reason: str) -> Response:
        return _page(
            service,
            "message.html",
            _("Link refused"),
            403,
            paragraphs=[_sentence(reason), _("Ask the command post for a new link.")],
        )

    def opened(token: str) -> int:
        if len(token) > TOKEN_MAX:
            raise LinkRefused(_("invalid link"))
        return service.links.check(token)

    def closed_page(item: Intervention) -> Response:
        # Its links are revoked now: this page is the crew's last view of it.
        return _page(
            service,
            "message.html",
            _("Intervention closed, thank you"),
            paragraphs=[
                _("Intervention no. %(id)s is %(state)s.")
                % {"id": item.id, "state": _(STATE_LABELS[item.state]).lower()},
                _("Thank you. This link no longer works."),
            ],
        )

    def field_page(item: Intervention, error: str = "", status: int = 200) -> Response:
        return _page(
            service,
            "field.html",
            _("Intervention no. %(id)s") % {"id": item.id},
            status,
            error=error,
            **_field_view(service, live, item, tz),
        )

    def field_get(token: str) -> Response:
        try:
            item = service.get(opened(token))
        except (LinkRefused, InterventionError) as exc:
            return refused(str(exc) if isinstance(exc, LinkRefused) else _("unknown intervention"))
        resp = field_page(item)
        resp.headers["X-Robots-Tag"] = "noindex"
        return resp

    def field_post(token: str) -> BaseResponse:
        request.max_content_length = FIELD_BODY_MAX
        try:
            iid = opened(token)
        except LinkRefused as exc:
            return refused(str(exc))
        try:
            form = request.form
        except RequestEntityTooLarge:
            return field_page(service.get(iid), _("note too long"), 413)
        action = form.get("action", "")
        note = _clean(form.get("note")).strip()
        with changing:
            item = service.get(iid)
            if not item.open:
                # Closed by the post just before this one (a double tap on "Terminée").
                return closed_page(item)
            actor = f"field:{item.team or 'équipe'}"
            try:
                if action == "note":
                    if not note:
                        return field_page(item, _("the note is empty"), 400)
                    service.note(iid, note, actor, Via.FIELD)
                elif action in {str(s) for s in FIELD_MOVES}:
                    target = State(action)
                    if _reached(item.state, target):
                        # Sent twice (a double tap, the back button): already done, no error.
                        return _back()
                    if not item.team:
                        return field_page(item, _("this intervention is assigned to no team"), 409)
                    if target is State.DONE and form.get("confirm") != "1":
                        return field_page(
                            item, _("tick the box to confirm the end of the intervention"), 400
                        )
                    item = service.move(iid, target, actor=actor, via=Via.FIELD, note=note)
                else:
                    return field_page(item, _("unknown action"), 400)
            except InterventionError:
                log.warning("field change %r of intervention %d refused", action, iid)
                return field_page(
                    service.get(iid),
                    _("the intervention changed meanwhile: page updated"),
                    409,
                )
        _deliver(service)
        return closed_page(item) if item.state in CLOSED else _back()

    server.add_url_rule("/field/<token>", "interventions_field", field_get)
    server.add_url_rule("/field/<token>", "interventions_field_post", field_post, methods=["POST"])


def _reached(current: State, target: State) -> bool:
    """Tell whether an open intervention already is at or past a state it is asked to reach."""
    return current not in CLOSED and ORDER.index(current) >= ORDER.index(target)


def _back() -> BaseResponse:
    """Redirect to the page just posted (303: the browser asks it with GET)."""
    resp = redirect(request.script_root + request.path, 303)
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["Referrer-Policy"] = "no-referrer"
    return resp


def _deliver(service: InterventionService) -> None:
    """Send what a change queued (the resident's outcome e-mail); the retry job does the rest."""
    try:
        service.deliver()
    except Exception:
        log.exception("e-mails after a field change not sent; the retry job will")


def _field_view(
    service: InterventionService, live: LiveValues, item: Intervention, tz: ZoneInfo
) -> dict[str, Any]:
    """Return what the field page shows of an intervention."""
    commune = service.register.communes.get(item.commune)
    assets = []
    for aid in item.assets:
        asset = service.register.assets.get(aid)
        if asset is None:
            assets.append({"id": aid, "label": "", "place": "", "missing": True, "rows": []})
            continue
        cls = service.cfg.asset_classes.get(asset.asset_class)
        rows = []
        for tag in asset.tags:
            sample = live.get(tag.name)
            shown, poor = _value(sample, tag.unit)
            time = _local(sample.ts, tz) if sample is not None else ""
            rows.append({"signal": tag.signal, "value": shown, "poor": poor, "time": time})
        place = ", ".join(p for p in (asset.name, asset.address) if p)
        assets.append(
            {
                "id": aid,
                "label": _(cls.label) if cls is not None else asset.asset_class,
                "place": place,
                "missing": False,
                "rows": rows,
            }
        )
    events = []
    for e in item.events:
        state = ""
        if e.get("state") and e["state"] in {str(s) for s in State}:
            state = _(STATE_LABELS[State(e["state"])])
        kind = str(e["kind"])
        events.append(
            {
                "time": _local(e["ts"], tz),
                "kind": _(EVENT_LABELS[kind]) if kind in EVENT_LABELS else kind,
                "state": state,
                "actor": _actor(str(e["actor"])),
                "text": e.get("text") or "",
            }
        )
    moves = [
        {"state": str(s), "label": _(STATE_LABELS[s])}
        for s in FIELD_MOVES
        if can_move(item.state, s)
    ]
    geo = ""
    if item.lat is not None and item.lon is not None:
        # geo: (RFC 5870) opens the phone's map application; q= drops a pin there on Android.
        geo = f"geo:{item.lat:.6f},{item.lon:.6f}?q={item.lat:.6f},{item.lon:.6f}"
    return {
        "item": item,
        "state": _(STATE_LABELS[item.state]),
        "priority": _(PRIORITIES[item.priority])
        if item.priority in PRIORITIES
        else str(item.priority),
        "commune": commune.name if commune is not None else item.commune,
        "geo": geo,
        "assets": assets,
        "alarms": _alarms_of(service, item),
        "events": events,
        "moves": moves,
        "note_max": NOTE_MAX,
    }


def _alarms_of(service: InterventionService, item: Intervention) -> list[dict[str, Any]] | None:
    """Return the alarms of an intervention's equipment needing attention (None: unknown)."""
    if service.alarms is None:
        return []
    try:
        views = service.alarms()
    except Exception:
        # The page still serves its purpose without them: say they are unavailable.
        log.exception("alarms unavailable for the field page")
        return None
    wanted, linked = set(item.assets), set(item.alarms)
    return [
        {
            "severity": v.get("severity", ""),
            "message": v.get("message") or v.get("rule") or "",
            "asset": v.get("asset", ""),
            "state": _alarm_state(str(v.get("state"))),
        }
        for v in views
        if (v.get("asset") in wanted or v.get("alarm_id") in linked) and v.get("state") != "normal"
    ]
