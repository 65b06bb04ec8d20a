"""The residents' report page and the crews' field page: phone-first HTML, no login.

`/public/signaler` (a form) and `/public/api/reports` (JSON) take a resident's report,
rate-limited per client address; `/public/confidentialite` says what is kept and for how long.
`/field/<token>` opens one intervention to its crew through a signed link (`links.py`): the
equipment's live values, its alarms, its history, and the moves a crew makes (en route, on
site, done) and notes. Every page is plain HTML that works without JavaScript; the one script
(the "use my position" button) and the style sheet are inline, allowed by their hashes in the
Content-Security-Policy, so nothing is fetched from anywhere else.
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
from beffroi.interventions.links import LinkRefused
from beffroi.interventions.model import (
    CATEGORIES,
    CLOSED,
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

QUALITY_WORDS = {
    Quality.UNCERTAIN: "incertaine",
    Quality.BAD: "mauvaise",
    Quality.COMM_LOSS: "liaison perdue",
}
ALARM_STATES = {
    "unack_active": "active, non acquittée",
    "ack_active": "active, acquittée",
    "unack_rtn": "revenue à la normale, non acquittée",
    "shelved": "mise de côté",
    "suppressed": "supprimée",
    "out_of_service": "hors service",
}
EVENT_KINDS = {
    "created": "Création",
    "state": "Changement d'état",
    "note": "Note",
    "assign": "Affectation",
    "merge": "Fusion",
    "link": "Rattachement",
}
PRIORITIES = {1: "P1 — très urgente", 2: "P2 — urgente", 3: "P3 — normale", 4: "P4 — basse"}
ROLE_LABELS = {
    "viewer": "lecteur",
    "operator": "opérateur",
    "supervisor": "superviseur",
    "auditor": "auditeur",
    "admin": "administrateur",
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
  if (!("geolocation" in navigator) || !window.isSecureContext) {
    status.textContent = "La localisation n'est pas disponible ici : saisissez la latitude " +
      "et la longitude.";
    return;
  }
  button.hidden = false;
  button.addEventListener("click", function () {
    status.textContent = "Recherche de votre position…";
    navigator.geolocation.getCurrentPosition(function (pos) {
      document.getElementById("lat").value = pos.coords.latitude.toFixed(6);
      document.getElementById("lon").value = pos.coords.longitude.toFixed(6);
      status.textContent = "Position trouvée (à " + Math.round(pos.coords.accuracy) +
        " m près).";
    }, function (err) {
      status.textContent = err.code === 1
        ? "Localisation refusée : saisissez la latitude et la longitude."
        : "Position introuvable : saisissez la latitude et la longitude.";
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
<html lang="fr"><head><meta charset="utf-8">
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
<p>Un lampadaire éteint, un feu en panne, une fuite ? Dites-le aux services de la métropole.
Les champs marqués * sont obligatoires.</p>
{% if email_again %}<p class="hint">Pour être prévenu, saisissez de nouveau votre adresse
e-mail.</p>{% endif %}
<form method="post" id="report-form">
<label for="category">Type de problème *</label>
<select id="category" name="category" required>
<option value="">— Choisissez —</option>
{% for c in categories %}
<option value="{{ c.id }}"{% if c.id == v.category %} selected{% endif %}>{{ c.label }}</option>
{% endfor %}
</select>
<fieldset>
<legend>Lieu *</legend>
<button type="button" id="locate" class="secondary" hidden>Utiliser ma position</button>
<p id="locate-status" class="hint" role="status" aria-live="polite"></p>
<div class="pair">
<div><label for="lat">Latitude</label>
<input id="lat" name="lat" inputmode="decimal" autocomplete="off" value="{{ v.lat }}"
 required aria-describedby="place-hint" placeholder="47.3220"></div>
<div><label for="lon">Longitude</label>
<input id="lon" name="lon" inputmode="decimal" autocomplete="off" value="{{ v.lon }}"
 required aria-describedby="place-hint" placeholder="5.0415"></div>
</div>
<p id="place-hint" class="hint">En degrés décimaux, comme sur une carte (virgule ou point).</p>
<label for="address">Adresse ou repère (facultatif)</label>
<input id="address" name="address" maxlength="{{ address_max }}" autocomplete="street-address"
 value="{{ v.address }}">
</fieldset>
<label for="text">Description *</label>
<textarea id="text" name="text" required maxlength="{{ text_max }}"
 aria-describedby="text-hint">{{ v.text }}</textarea>
<p id="text-hint" class="hint">{{ text_max }} caractères au plus. N'indiquez pas de données
personnelles.</p>
{% if email_enabled %}
<fieldset>
<legend>Être prévenu (facultatif)</legend>
<label for="email">Adresse e-mail</label>
<input id="email" name="email" type="email" maxlength="{{ email_max }}" autocomplete="email"
 aria-describedby="email-hint">
<label class="check" for="consent"><input type="checkbox" id="consent" name="consent"
 value="1"> Me prévenir par e-mail quand c'est réglé</label>
<p id="email-hint" class="hint">Votre adresse n'est gardée que si la case est cochée, à part du
signalement, et elle est effacée {{ retention }}.</p>
</fieldset>
{% endif %}
<p><a href="confidentialite">Vos données : ce que nous gardons et pourquoi</a></p>
<button type="submit">Envoyer le signalement</button>
</form>
{% endblock %}
{% block script %}<script>{{ script }}</script>{% endblock %}
"""

REPORT_DONE = """{% extends "base.html" %}
{% block content %}
<p class="ok" role="status">Votre signalement est enregistré sous le numéro
<strong id="report-number">{{ result.id }}</strong>.</p>
{% if result.duplicate_of %}
<p>Le même problème a déjà été signalé tout près (signalement n° {{ result.duplicate_of }}) :
le vôtre y est rattaché.</p>
{% elif result.known_problem %}
<p>Les services de la métropole connaissent déjà ce problème.</p>
{% endif %}
{% if told %}<p>Vous recevrez un e-mail quand ce sera réglé.</p>{% endif %}
<p>Merci de votre aide.</p>
<p><a class="button" href="signaler">Faire un autre signalement</a></p>
{% endblock %}
"""

PRIVACY = """{% extends "base.html" %}
{% block content %}
<h2>Ce qu'un signalement garde</h2>
<p>Le type de problème, le lieu (coordonnées et adresse ou repère si vous l'indiquez), votre
description et l'heure d'envoi. Ces informations servent à organiser les interventions des
services de {{ metropolis }} et à en suivre la qualité.</p>
<h2>Votre adresse e-mail</h2>
{% if email_enabled %}
<p>Elle est facultative et n'est gardée que si vous cochez « Me prévenir par e-mail quand c'est
réglé », pour une seule raison : vous prévenir quand le problème est traité.</p>
{% else %}
<p>Ce service ne demande pas d'adresse e-mail pour le moment. Quand il la propose, elle est
facultative et n'est gardée qu'avec votre accord, pour vous prévenir quand c'est réglé.</p>
{% endif %}
<ul>
<li>Elle est conservée à part du signalement.</li>
{% if roles %}
<li>Seuls les agents ayant le rôle {{ roles }} peuvent la lire.</li>
{% else %}
<li>Aucun agent ne peut la lire : elle sert seulement à vous envoyer l'avis.</li>
{% endif %}
<li>Elle n'est jamais publiée, ni exportée, ni transmise à des tiers.</li>
<li id="retention">Elle est effacée {{ retention }}.</li>
</ul>
<h2>Ce qui n'est pas gardé</h2>
<p>L'adresse réseau de votre appareil sert seulement, en mémoire, à limiter les envois abusifs ;
elle n'est pas enregistrée avec le signalement.</p>
<h2>Vos droits</h2>
<p>Vous pouvez demander à {{ metropolis }} l'accès à vos données, leur rectification ou leur
effacement, en indiquant le numéro de votre signalement.</p>
<p><a class="button" href="signaler">Faire un signalement</a></p>
{% endblock %}
"""

FIELD = """{% extends "base.html" %}
{% block content %}
<p id="title"><strong>{{ item.title }}</strong></p>
<dl>
<dt>Numéro</dt><dd id="number">{{ item.id }}</dd>
<dt>État</dt><dd id="state">{{ state }}</dd>
<dt>Priorité</dt><dd>{{ priority }}</dd>
<dt>Équipe</dt><dd>{{ item.team or "aucune" }}</dd>
<dt>Commune</dt><dd>{{ commune }}</dd>
</dl>
<h2>Lieu</h2>
{% if item.lat is not none and item.lon is not none %}
<p>{{ "%.6f"|format(item.lat) }}, {{ "%.6f"|format(item.lon) }}</p>
<p><a class="button" id="map-link" href="{{ geo }}">Ouvrir dans l'application de cartes</a></p>
{% else %}<p>Pas de coordonnées.</p>{% endif %}
{% for a in assets %}
<h2>{{ a.id }}{% if a.label %} — {{ a.label }}{% endif %}</h2>
{% if a.place %}<p>{{ a.place }}</p>{% endif %}
{% if a.missing %}<p class="hint">Équipement absent du registre.</p>{% endif %}
{% if a.rows %}
<table><caption class="hint">Valeurs en direct</caption>
<thead><tr><th scope="col">Signal</th><th scope="col">Valeur</th><th scope="col">Heure</th></tr>
</thead><tbody>
{% for r in a.rows %}
<tr><th scope="row">{{ r.signal }}</th><td{% if r.poor %} class="poor"{% endif %}>{{ r.value }}
{% if r.poor %}({{ r.poor }}){% endif %}</td><td>{{ r.time }}</td></tr>
{% endfor %}
</tbody></table>
{% endif %}
{% endfor %}
<h2>Alarmes en cours</h2>
{% if alarms is none %}<p class="hint">Alarmes indisponibles.</p>
{% elif not alarms %}<p>Aucune.</p>
{% else %}<ul id="alarms">
{% for a in alarms %}<li>P{{ a.severity }} — {{ a.message }} ({{ a.asset }}, {{ a.state }})</li>
{% endfor %}</ul>{% endif %}
{% if item.open %}
<h2>Mettre à jour</h2>
{% if not item.team %}
<p class="hint">Cette intervention n'est affectée à aucune équipe : le poste de commande doit
l'affecter avant tout changement d'état.</p>
{% else %}
{% if moves %}<p class="hint">Passer l'intervention à l'état :</p>{% endif %}
{% for m in moves if m.state != "done" %}
<form method="post"><input type="hidden" name="action" value="{{ m.state }}">
<button type="submit">{{ m.label }}</button></form>
{% endfor %}
{% for m in moves if m.state == "done" %}
<form method="post"><input type="hidden" name="action" value="done">
<label for="done-note">Compte rendu (facultatif)</label>
<textarea id="done-note" name="note" maxlength="{{ note_max }}"></textarea>
<label class="check" for="confirm"><input type="checkbox" id="confirm" name="confirm" value="1"
 required> Je confirme que l'intervention est terminée</label>
<button type="submit" class="done">{{ m.label }}</button></form>
{% endfor %}
{% endif %}
<form method="post"><input type="hidden" name="action" value="note">
<label for="note">Ajouter une note</label>
<textarea id="note" name="note" required maxlength="{{ note_max }}"></textarea>
<button type="submit" class="secondary">Enregistrer la note</button></form>
{% endif %}
<h2>Historique</h2>
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
)


class _Refused(ValueError):
    """Input the web layer refuses before the service sees it (a French message)."""


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
        return "dès la clôture du signalement"
    unit = "jour" if days <= 1 else "jours"
    return f"{_number(days)} {unit} après la clôture du signalement"


def _clean(value: object) -> str:
    """Return a form or JSON text without NUL characters (PostgreSQL refuses them)."""
    return value.replace("\x00", "") if isinstance(value, str) else ""


def _coordinate(text: str, what: str, low: float, high: float) -> float:
    """Parse a typed latitude or longitude (a decimal comma is French usage)."""
    try:
        value = float(text.strip().replace(",", "."))
    except ValueError:
        raise _Refused(f"{what} invalide : un nombre en degrés décimaux est attendu") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise _Refused(f"{what} invalide : entre {low:g} et {high:g} degrés")
    return value


def _client() -> str:
    """Return the key a client is rate-limited under.

    The socket's address (waitress gives what a configured trusted proxy reports), never
    X-Forwarded-For, which any client writes; an IPv6 client counts as its /64, which it may
    pick addresses from freely.
    """
    return address_key(request.remote_addr or "?")


def _local(ts: datetime, tz: ZoneInfo) -> str:
    """Return a time as the metropolis reads it (naive times are UTC, as stored)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(tz).strftime("%d/%m/%Y %H:%M")


def _number(value: float) -> str:
    """Return a number the French way, at most two decimals."""
    text = f"{value:.2f}".rstrip("0").rstrip(".").replace(".", ",")
    return "0" if text == "-0" else text


def _value(sample: Sample | None, unit: str) -> tuple[str, str]:
    """Return a live value as shown, and a quality word when it cannot be trusted."""
    if sample is None:
        return "—", "pas de valeur"
    if sample.quality is not Quality.GOOD:
        return "—", QUALITY_WORDS.get(sample.quality, "mauvaise")
    v = sample.value
    if isinstance(v, bool):
        return ("oui" if v else "non"), ""
    if isinstance(v, int | float):
        if not math.isfinite(v):
            return "—", "mauvaise"
        return (f"{_number(v)} {unit}".strip()), ""
    return str(v), ""


def _actor(actor: str) -> str:
    """Return who made a change, in words a crew reads."""
    if actor == "system":
        return "Beffroi"
    if actor == "public":
        return "habitant"
    if actor.startswith("field:"):
        return f"équipe {actor.removeprefix('field:')}"
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
            "Signaler un problème",
            status,
            error=error,
            v=values,
            categories=categories,
            email_enabled=email_enabled,
            email_again=email_again and email_enabled,
            retention=_retention(days),
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
                "Signalement trop long",
                413,
                paragraphs=["Le formulaire envoyé est trop long : raccourcissez la description."],
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
                f"trop d'envois depuis votre connexion : réessayez dans {math.ceil(wait)} s",
                429,
                email_again=bool(email),
            )
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        try:
            if not values["lat"].strip() or not values["lon"].strip():
                raise _Refused(
                    "indiquez le lieu : touchez « Utiliser ma position » ou saisissez la "
                    "latitude et la longitude"
                )
            if email and not email_enabled:
                raise _Refused("les avis par e-mail ne sont pas proposés")
            result = service.report(
                values["category"],
                _coordinate(values["lat"], "latitude", -90, 90),
                _coordinate(values["lon"], "longitude", -180, 180),
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
            "Signalement envoyé",
            result=result,
            told=bool(email) and consent,
        )

    def report_api() -> Response:
        request.max_content_length = rc.max_body_bytes
        wait = limit.retry_after(_client())
        if wait > 0:
            resp = _json({"error": "trop d'envois depuis cette adresse : réessayez plus tard"}, 429)
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        try:
            raw = request.get_data(cache=False)
        except RequestEntityTooLarge:
            return _json({"error": f"corps trop long (au plus {rc.max_body_bytes} octets)"}, 413)
        try:
            if not request.is_json:
                raise _Refused("le corps doit être du JSON (Content-Type: application/json)")
            try:
                body = json.loads(raw)
            except ValueError:  # includes bytes that are not UTF-8
                raise _Refused("le corps n'est pas du JSON valide") from None
            result = service.report(**_report_args(body, email_enabled))
        except (_Refused, InterventionError) as exc:
            return _json({"error": str(exc)}, 400)
        out = {k: result[k] for k in ("id", "duplicate_of", "known_problem")}
        return _json(out, 201)

    def privacy() -> Response:
        roles = [ROLE_LABELS.get(r, r) for r in service.ic.contact_roles]
        return _page(
            service,
            "privacy.html",
            "Signalements : vos données",
            roles=" ou ".join(roles),
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
        raise _Refused("le corps doit être un objet JSON")
    unknown = sorted(set(body) - JSON_KEYS)
    if unknown:
        raise _Refused(f"champ inconnu : {', '.join(unknown)[:100]}")
    for key in ("category", "lat", "lon", "text"):
        if key not in body:
            raise _Refused(f"champ manquant : {key}")
    if not isinstance(body["category"], str):
        raise _Refused("catégorie inconnue")
    place: list[float] = []
    for key, what in (("lat", "latitude"), ("lon", "longitude")):
        value = body[key]
        # bool is an int to Python; true is not a latitude.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Refused(f"{what} invalide : un nombre est attendu")
        try:
            place.append(float(value))
        except OverflowError:
            raise _Refused(f"{what} invalide") from None
    for key in ("text", "address", "email"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise _Refused(f"{key} doit être du texte")
    consent = body.get("consent", False)
    if not isinstance(consent, bool):
        raise _Refused("consent doit valoir true ou false")
    email = _clean(body.get("email") or "").strip()
    if email and not email_enabled:
        raise _Refused("les avis par e-mail ne sont pas proposés")
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
            "Lien refusé",
            403,
            paragraphs=[_sentence(reason), "Demandez un nouveau lien au poste de commande."],
        )

    def opened(token: str) -> int:
        if len(token) > TOKEN_MAX:
            raise LinkRefused("lien invalide")
        return service.links.check(token)

    def closed_page(item: Intervention) -> Response:
        # Its links are revoked now: this page is the crew's last view of it.
        return _page(
            service,
            "message.html",
            "Intervention close, merci",
            paragraphs=[
                f"L'intervention n° {item.id} est {STATE_LABELS[item.state].lower()}.",
                "Merci. Ce lien ne fonctionne plus.",
            ],
        )

    def field_page(item: Intervention, error: str = "", status: int = 200) -> Response:
        return _page(
            service,
            "field.html",
            f"Intervention n° {item.id}",
            status,
            error=error,
            **_field_view(service, live, item, tz),
        )

    def field_get(token: str) -> Response:
        try:
            item = service.get(opened(token))
        except (LinkRefused, InterventionError) as exc:
            return refused(str(exc) if isinstance(exc, LinkRefused) else "intervention inconnue")
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
            return field_page(service.get(iid), "note trop longue", 413)
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
                        return field_page(item, "la note est vide", 400)
                    service.note(iid, note, actor, Via.FIELD)
                elif action in {str(s) for s in FIELD_MOVES}:
                    target = State(action)
                    if _reached(item.state, target):
                        # Sent twice (a double tap, the back button): already done, no error.
                        return _back()
                    if not item.team:
                        return field_page(
                            item, "cette intervention n'est affectée à aucune équipe", 409
                        )
                    if target is State.DONE and form.get("confirm") != "1":
                        return field_page(
                            item, "cochez la case pour confirmer la fin de l'intervention", 400
                        )
                    item = service.move(iid, target, actor=actor, via=Via.FIELD, note=note)
                else:
                    return field_page(item, "action inconnue", 400)
            except InterventionError:
                log.warning("field change %r of intervention %d refused", action, iid)
                return field_page(
                    service.get(iid), "l'intervention a changé entre-temps : page mise à jour", 409
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
                "label": cls.label if cls is not None else asset.asset_class,
                "place": place,
                "missing": False,
                "rows": rows,
            }
        )
    events = []
    for e in item.events:
        state = ""
        if e.get("state") and e["state"] in {str(s) for s in State}:
            state = STATE_LABELS[State(e["state"])]
        events.append(
            {
                "time": _local(e["ts"], tz),
                "kind": EVENT_KINDS.get(str(e["kind"]), str(e["kind"])),
                "state": state,
                "actor": _actor(str(e["actor"])),
                "text": e.get("text") or "",
            }
        )
    moves = [
        {"state": str(s), "label": STATE_LABELS[s]} for s in FIELD_MOVES if can_move(item.state, s)
    ]
    geo = ""
    if item.lat is not None and item.lon is not None:
        # geo: (RFC 5870) opens the phone's map application; q= drops a pin there on Android.
        geo = f"geo:{item.lat:.6f},{item.lon:.6f}?q={item.lat:.6f},{item.lon:.6f}"
    return {
        "item": item,
        "state": STATE_LABELS[item.state],
        "priority": PRIORITIES.get(item.priority, str(item.priority)),
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
            "state": ALARM_STATES.get(str(v.get("state")), str(v.get("state"))),
        }
        for v in views
        if (v.get("asset") in wanted or v.get("alarm_id") in linked) and v.get("state") != "normal"
    ]
