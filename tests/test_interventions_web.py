"""The residents' report page and the crews' field page, through Flask's test client on a
real service and DuckDB store: reports kept without their authors' addresses, bad input refused
in French, the rate limit, field links opened, moved, closed, and refused once tampered,
expired or revoked."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import flask
import pytest

from beffroi.alerts.config import RouteConfig, TeamConfig
from beffroi.app.config import Config
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register
from beffroi.hmi.public import register_public
from beffroi.interventions.model import State, Via
from beffroi.interventions.service import InterventionService
from beffroi.interventions.store import InterventionStore
from beffroi.interventions.web import register_intervention_pages
from tests.test_alarm_email import SmtpServer

RESIDENT = "riveraine.du.parc@example.org"
FORM = "/public/signaler"
API = "/public/api/reports"


def _config(demo_config: Config, smtp_port: int, email: bool = True, **reports: Any) -> Config:
    """The demo config with a lighting team, e-mails to a local server, and report limits."""
    alarms = demo_config.alarms.model_copy(
        update={
            "teams": [TeamConfig(name="eclairage", addresses=["eclairage@example.org"])],
            "routes": [RouteConfig(team="eclairage", domains=["lighting"])],
            "email": demo_config.alarms.email.model_copy(
                update={"enabled": email, "port": smtp_port, "security": "none"}
            ),
        }
    )
    ic = demo_config.interventions
    interventions = ic.model_copy(
        update={"reports": ic.reports.model_copy(update={"per_min": 1000, **reports})}
    )
    cfg = demo_config.model_copy(update={"alarms": alarms, "interventions": interventions})
    cfg._source = demo_config.source
    return cfg


class Site:
    """A service on a DuckDB file, its Flask app, live values and the alarms the test says."""

    def __init__(self, cfg: Config, register: Register, tmp_path: Path):
        self.store = InterventionStore(tmp_path / "i.duckdb")
        self.active: list[dict[str, Any]] = []
        self.service = InterventionService(
            cfg, register, self.store, b"k" * 32, alarms=lambda: list(self.active)
        )
        self.register = register
        self.live = LiveValues()
        self.app = flask.Flask(__name__)
        register_intervention_pages(self.app, self.service, self.live)
        self.client = self.app.test_client()

    def cabinet(self, n: int = 0) -> Asset:
        cabs = sorted(
            (a for a in self.register.assets.values() if a.asset_class == "streetlight_cabinet"),
            key=lambda a: a.id,
        )
        return cabs[n]

    def intervention(self, asset: Asset, title: str = "Armoire en défaut", team: str = "") -> int:
        return self.service.create(
            "op",
            Via.HMI,
            title=title,
            commune=asset.commune,
            domain=asset.domain,
            assets=[asset.id],
            team=team,
        )

    def reports(self) -> list[dict[str, Any]]:
        frame = self.service.reports(("new", "linked", "rejected", "closed"))
        return frame.to_dict("records")  # type: ignore[return-value]


@pytest.fixture
def smtp():
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def make_site(demo_config: Config, small_register: Register, smtp: SmtpServer, tmp_path: Path):
    """Build a site, with report settings changed when a test needs it."""
    sites: list[Site] = []

    def make(email: bool = True, **reports: Any) -> Site:
        where = tmp_path / str(len(sites))
        where.mkdir()
        site = Site(_config(demo_config, smtp.port, email, **reports), small_register, where)
        sites.append(site)
        return site

    yield make
    for s in sites:
        s.store.close()


@pytest.fixture
def site(make_site) -> Site:
    return make_site()


def _form(asset: Asset, **fields: str) -> dict[str, str]:
    data = {
        "category": "dark_street",
        "lat": f"{asset.lat:.6f}".replace(".", ","),  # French decimal comma, as typed
        "lon": f"{asset.lon:.6f}",
        "address": "Rue des Lampes",
        "text": "Toute la rue est éteinte depuis hier soir",
    }
    return {**data, **fields}


def _body(asset: Asset, **fields: Any) -> dict[str, Any]:
    return {
        "category": "dark_street",
        "lat": asset.lat,
        "lon": asset.lon,
        "text": "Lampadaire éteint devant l'école",
        **fields,
    }


def _text(resp: Any) -> str:
    """Return a page's text as a reader sees it (entities such as &#39; decoded)."""
    return html.unescape(resp.get_data(as_text=True))


def _field_path(site: Site, iid: int) -> str:
    return "/field/" + site.service.field_link(iid, "op").token


# --- residents' reports ---


def test_the_report_form_is_a_phone_page_with_labels_and_its_one_script_allowed(site):
    resp = site.client.get(FORM)
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200 and resp.mimetype == "text/html"
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in page
    assert 'lang="fr"' in page and "Dijon Métropole" in page
    for field in ("category", "lat", "lon", "address", "text", "email", "consent"):
        assert f'for="{field}"' in page and f'id="{field}"' in page
    assert "Rue éteinte / lampadaire en panne" in page and 'value="water_leak"' in page
    assert "Utiliser ma position" in page and "Me prévenir par e-mail quand c" in page
    assert 'maxlength="1000"' in page and "30 jours après la clôture" in page
    assert 'href="confidentialite"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    # The inline script and style run because the policy names their exact hashes.
    csp = resp.headers["Content-Security-Policy"]
    for tag in ("script", "style"):
        [inline] = re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S)
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and resp.headers["X-Content-Type-Options"] == "nosniff"


def test_a_report_by_form_is_kept_with_its_commune_and_matches_and_the_address_apart(site):
    cab = site.cabinet()
    resp = site.client.post(FORM, data=_form(cab, email=RESIDENT, consent="1"))
    page = _text(resp)
    assert resp.status_code == 200, page
    number = re.search(r'id="report-number">(\d+)<', page)
    assert number is not None and "Vous recevrez un e-mail" in page
    assert RESIDENT not in page
    [row] = site.reports()
    assert row["id"] == int(number.group(1))
    assert (row["commune"], row["category"], row["state"]) == (cab.commune, "dark_street", "new")
    assert row["lat"] == pytest.approx(cab.lat) and row["address"] == "Rue des Lampes"
    assert cab.id in json.loads(row["matches"])["assets"]
    assert all(RESIDENT not in str(v) for v in row.values())
    assert site.store.contact(row["id"]) == RESIDENT


def test_a_report_by_json_answers_its_number_and_keeps_the_address_only_with_consent(site):
    cab = site.cabinet()
    first = site.client.post(API, json=_body(cab))
    assert first.status_code == 201
    doc = first.get_json()
    assert doc == {"id": doc["id"], "duplicate_of": None, "known_problem": False}
    assert site.store.contact(doc["id"]) is None
    # Nearby and of the same kind: a duplicate of the first.
    second = site.client.post(
        API, json=_body(cab, email=RESIDENT, consent=True, address="Place du Marché")
    )
    assert second.status_code == 201 and RESIDENT not in _text(second)
    assert second.get_json()["duplicate_of"] == doc["id"]
    assert second.get_json()["known_problem"] is True
    assert site.store.contact(second.get_json()["id"]) == RESIDENT
    refused = site.client.post(API, json=_body(cab, email=RESIDENT))  # no consent
    assert refused.status_code == 400
    assert refused.get_json() == {"error": "une adresse e-mail n'est gardée qu'avec votre accord"}
    rows = site.reports()
    assert len(rows) == 2
    assert {r["commune"] for r in rows} == {cab.commune}
    assert all(RESIDENT not in str(v) for r in rows for v in r.values())


def test_an_address_without_consent_on_the_form_is_refused_and_never_echoed(site):
    cab = site.cabinet()
    resp = site.client.post(FORM, data=_form(cab, email=RESIDENT))
    page = _text(resp)
    assert resp.status_code == 400
    assert "Une adresse e-mail n'est gardée qu'avec votre accord." in page
    assert RESIDENT not in page and "saisissez de nouveau votre adresse" in page
    assert "Toute la rue est éteinte depuis hier soir" in page  # the rest comes back as typed
    assert site.reports() == []


def test_no_address_is_asked_for_when_the_gateway_sends_no_e_mail(make_site):
    site = make_site(email=False)
    page = _text(site.client.get(FORM))
    assert 'id="email"' not in page and 'id="consent"' not in page
    notice = _text(site.client.get("/public/confidentialite"))
    assert "ne demande pas d'adresse e-mail" in notice
    cab = site.cabinet()
    resp = site.client.post(API, json=_body(cab, email=RESIDENT, consent=True))
    assert resp.status_code == 400
    assert resp.get_json() == {"error": "les avis par e-mail ne sont pas proposés"}
    form = site.client.post(FORM, data=_form(cab, email=RESIDENT, consent="1"))
    assert form.status_code == 400 and RESIDENT not in _text(form)
    assert site.reports() == []


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{pas du json", "application/json", "le corps n'est pas du JSON valide"),
        (b"\xff\xfe", "application/json", "le corps n'est pas du JSON valide"),
        (b"[1, 2]", "application/json", "le corps doit être un objet JSON"),
        (b'{"category": "dark_street"}', "text/plain", "Content-Type: application/json"),
        ({"category": "fontaine"}, None, "catégorie inconnue"),
        ({"text": "x" * 1001}, None, "une description de 1 à 1000 caractères est requise"),
        ({"text": "   "}, None, "une description de 1 à 1000 caractères est requise"),
        ({"lat": 48.8566, "lon": 2.3522}, None, "ce lieu n'est pas dans la métropole"),
        ({"lat": True}, None, "latitude invalide"),
        ({"lon": "5,04"}, None, "longitude invalide"),
        ({"lat": 10**400}, None, "latitude invalide"),
        ({"mail": RESIDENT}, None, "champ inconnu : mail"),
        ({"consent": "oui"}, None, "consent doit valoir true ou false"),
        ({"email": "pas-une-adresse", "consent": True}, None, "adresse e-mail invalide"),
    ],
)
def test_bad_json_reports_are_refused_in_french(site, body, content_type, message):
    cab = site.cabinet()
    if isinstance(body, dict):
        resp = site.client.post(API, json=_body(cab, **body))
    else:
        resp = site.client.post(API, data=body, content_type=content_type)
    assert resp.status_code == 400
    assert message in resp.get_json()["error"]
    assert site.reports() == []


def test_a_missing_field_is_named(site):
    body = _body(site.cabinet())
    del body["lon"]
    resp = site.client.post(API, json=body)
    assert resp.status_code == 400 and resp.get_json() == {"error": "champ manquant : lon"}


def test_a_body_over_the_size_limit_is_refused_unread(site):
    cab = site.cabinet()
    big = json.dumps(_body(cab, address="a" * 20_000))
    resp = site.client.post(API, data=big, content_type="application/json")
    assert resp.status_code == 413 and "16384 octets" in resp.get_json()["error"]
    form = site.client.post(FORM, data=_form(cab, address="a" * 20_000))
    assert form.status_code == 413 and "trop long" in _text(form)
    assert site.reports() == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lat": "48,8566", "lon": "2,3522"}, "Ce lieu n'est pas dans la métropole."),
        ({"lat": "", "lon": ""}, "Indiquez le lieu"),
        ({"lat": "nord"}, "Latitude invalide"),
        ({"lon": "200"}, "Longitude invalide : entre -180 et 180 degrés."),
        ({"category": ""}, "Catégorie inconnue."),
        ({"text": "y" * 1001}, "Une description de 1 à 1000 caractères est requise."),
    ],
)
def test_bad_form_reports_come_back_with_the_message_in_french(site, fields, message):
    resp = site.client.post(FORM, data=_form(site.cabinet(), **fields))
    page = _text(resp)
    assert resp.status_code == 400 and message in page
    assert 'role="alert"' in page and 'id="report-form"' in page
    assert site.reports() == []


def test_reports_are_rate_limited_per_client_address_not_per_forwarded_header(make_site):
    site = make_site(per_min=2)
    cab = site.cabinet()
    one = {"REMOTE_ADDR": "203.0.113.7"}
    assert site.client.post(API, json=_body(cab), environ_base=one).status_code == 201
    # A form post counts in the same window; a refused report counts too.
    assert site.client.post(FORM, data={}, environ_base=one).status_code == 400
    spoofed = site.client.post(
        API, json=_body(cab), environ_base=one, headers={"X-Forwarded-For": "198.51.100.1"}
    )
    assert spoofed.status_code == 429
    assert 0 < int(spoofed.headers["Retry-After"]) <= 60
    assert "réessayez" in spoofed.get_json()["error"]
    form = site.client.post(FORM, data=_form(cab), environ_base=one)
    assert form.status_code == 429 and "Retry-After" in form.headers
    assert "Toute la rue est éteinte" in _text(form)  # kept for a retry
    other = {"REMOTE_ADDR": "203.0.113.8"}
    assert site.client.post(API, json=_body(cab), environ_base=other).status_code == 201
    assert len(site.reports()) == 2


def test_the_privacy_notice_says_what_is_kept_who_reads_it_and_for_how_long(make_site):
    site = make_site()
    page = _text(site.client.get("/public/confidentialite"))
    assert "Dijon Métropole" in page
    assert "30 jours après la clôture du signalement" in page
    assert "superviseur ou administrateur" in page
    assert "jamais publiée, ni exportée" in page
    for kept in ("type de problème", "lieu", "description", "heure"):
        assert kept in page


def test_public_routes_answer_beside_the_feeds_catch_all_and_go_when_disabled(
    demo_config, small_register, make_site
):
    site = make_site()
    app = flask.Flask(__name__)
    register_public(app, demo_config, small_register, site.live)  # its /public/<path> 404
    register_intervention_pages(app, site.service, site.live)
    client = app.test_client()
    assert client.get(FORM).status_code == 200
    assert client.get("/public/confidentialite").status_code == 200
    assert client.post(API, json=_body(site.cabinet())).status_code == 201
    assert client.get("/public/autre").status_code == 404
    off = make_site(enabled=False)
    for path in (FORM, "/public/confidentialite"):
        assert off.client.get(path).status_code == 404
    assert off.client.post(API, json=_body(site.cabinet())).status_code == 404
    iid = off.intervention(site.cabinet(), team="eclairage")
    assert off.client.get(_field_path(off, iid)).status_code == 200  # crews still served


# --- the crews' field page ---


def test_the_field_page_shows_the_work_its_equipment_live_and_its_alarms(site):
    cab = site.cabinet()
    now = utcnow()
    site.live.update(
        [
            Sample(cab.tag("power_kw"), now, 3.456),
            Sample(cab.tag("lit"), now, True),
            Sample(cab.tag("dimming_pct"), now, float("nan"), Quality.COMM_LOSS),
        ]
    )
    site.active.append(
        {
            "alarm_id": f"{cab.tag('fault')}#fault",
            "asset": cab.id,
            "message": "Défaut armoire",
            "severity": 1,
            "state": "unack_active",
        }
    )
    site.active.append(
        {"alarm_id": "x", "asset": "ailleurs", "message": "Autre", "severity": 2, "state": "x"}
    )
    iid = site.intervention(cab, team="eclairage")
    resp = site.client.get(_field_path(site, iid))
    page = _text(resp)
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert '<meta name="viewport"' in page
    assert f'id="number">{iid}<' in page and "Armoire en défaut" in page
    assert 'id="state">Affectée<' in page and "P3 — normale" in page and "eclairage" in page
    assert "<dd>Dijon</dd>" in page
    assert f'href="geo:{cab.lat:.6f},{cab.lon:.6f}?q={cab.lat:.6f},{cab.lon:.6f}"' in page
    assert "3,46 kW" in page and "oui" in page and "liaison perdue" in page
    assert "pas de valeur" in page  # energy_kwh: never received
    assert "Défaut armoire" in page and "active, non acquittée" in page
    assert "Autre" not in page  # another asset's alarm
    for label in ("En route", "Sur place", "Terminée"):
        assert f">{label}</button>" in page
    assert 'value="cancelled"' not in page and "Annulée" not in page
    assert 'name="action" value="note"' in page


def test_a_crew_moves_notes_and_closes_from_its_link(site):
    cab = site.cabinet()
    iid = site.intervention(cab, team="eclairage")
    path = _field_path(site, iid)
    for action, state in (("en_route", State.EN_ROUTE), ("on_site", State.ON_SITE)):
        resp = site.client.post(path, data={"action": action})
        assert resp.status_code == 303 and resp.headers["Location"].endswith(path)
        item = site.service.get(iid)
        assert item.state is state and str(state) in item.times
    again = site.client.post(path, data={"action": "en_route"})  # the back button, a double tap
    assert again.status_code == 303 and site.service.get(iid).state is State.ON_SITE
    assert site.client.post(path, data={"action": "note", "note": "Fusible HS"}).status_code == 303
    empty = site.client.post(path, data={"action": "note", "note": "  "})
    assert empty.status_code == 400 and "La note est vide." in _text(empty)
    unknown = site.client.post(path, data={"action": "cancelled"})
    assert unknown.status_code == 400 and site.service.get(iid).state is State.ON_SITE
    page = _text(site.client.get(path))
    assert "Fusible HS" in page and "équipe eclairage" in page
    assert ">En route</button>" not in page and ">Terminée</button>" in page
    unconfirmed = site.client.post(path, data={"action": "done"})
    assert unconfirmed.status_code == 400 and "confirmer" in _text(unconfirmed)
    assert site.service.get(iid).state is State.ON_SITE
    done = site.client.post(
        path, data={"action": "done", "confirm": "1", "note": "Fusible remplacé"}
    )
    assert done.status_code == 200
    assert "Intervention close, merci" in _text(done)
    item = site.service.get(iid)
    assert item.state is State.DONE and "done" in item.times
    field = [e for e in item.events if e["via"] == "field"]
    assert [(e["kind"], e["state"]) for e in field] == [
        ("state", "en_route"),
        ("state", "on_site"),
        ("note", None),
        ("state", "done"),
    ]
    assert {e["actor"] for e in field} == {"field:eclairage"}
    assert field[-1]["text"] == "Fusible remplacé"
    after = site.client.get(path)
    assert after.status_code == 403 and "Lien révoqué." in _text(after)


def test_the_resident_who_asked_is_told_when_the_crew_closes(site, smtp):
    cab = site.cabinet()
    rid = site.client.post(API, json=_body(cab, email=RESIDENT, consent=True)).get_json()["id"]
    iid = site.service.report_to(rid, None, "op")
    site.service.assign(iid, "eclairage", "op")
    path = _field_path(site, iid)
    assert site.client.post(path, data={"action": "done", "confirm": "1"}).status_code == 200
    [told] = smtp.to(RESIDENT)  # sent at once, not at the retry job's next round
    assert f"signalement n° {rid} a été traité" in told.message.get_content()


def test_a_double_tap_on_done_closes_once_and_tells_the_resident_once(site, smtp):
    cab = site.cabinet()
    rid = site.client.post(API, json=_body(cab, email=RESIDENT, consent=True)).get_json()["id"]
    iid = site.service.report_to(rid, None, "op")
    site.service.assign(iid, "eclairage", "op")
    path = _field_path(site, iid)
    statuses: list[int] = []

    def tap() -> None:
        client = site.app.test_client()
        statuses.append(client.post(path, data={"action": "done", "confirm": "1"}).status_code)

    taps = [threading.Thread(target=tap) for _ in range(2)]
    for t in taps:
        t.start()
    for t in taps:
        t.join()
    # The second sees the first's work: the same thanks, or the link already revoked.
    assert sorted(statuses) in ([200, 200], [200, 403])
    item = site.service.get(iid)
    assert [e["state"] for e in item.events if e["kind"] == "state"] == ["done"]
    assert len(smtp.to(RESIDENT)) == 1


def test_an_unassigned_intervention_shows_no_moves_and_refuses_them(site):
    iid = site.intervention(site.cabinet())
    path = _field_path(site, iid)
    page = _text(site.client.get(path))
    assert "affectée à aucune équipe" in page and ">En route</button>" not in page
    resp = site.client.post(path, data={"action": "en_route"})
    assert resp.status_code == 409 and site.service.get(iid).state is State.NEW


def _tampered(token: str) -> str:
    i = 5  # inside the signed payload: any change breaks the signature
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]


def test_tampered_expired_and_revoked_links_are_refused_with_nothing_shown(site):
    cab = site.cabinet()
    iid = site.intervention(cab, title="Armoire rue Secrète", team="eclairage")
    token = site.service.field_link(iid, "op").token

    def refused(path: str, reason: str) -> None:
        for resp in (site.client.get(path), site.client.post(path, data={"action": "en_route"})):
            page = _text(resp)
            assert resp.status_code == 403 and reason in page
            assert "Secrète" not in page and cab.id not in page
            assert resp.headers["Cache-Control"] == "no-store"

    refused("/field/" + _tampered(token), "Lien invalide ou expiré.")
    refused("/field/" + "x" * 600, "Lien invalide.")
    real_clock = site.store.clock
    site.store.clock = lambda: real_clock() + timedelta(hours=73)
    refused("/field/" + token, "Lien expiré.")
    site.store.clock = real_clock
    assert site.client.get("/field/" + token).status_code == 200
    assert site.service.revoke(iid, "op") == 2  # the team's e-mailed link and this one
    refused("/field/" + token, "Lien révoqué.")
    assert site.service.get(iid).state is State.ASSIGNED


def test_the_field_page_escapes_what_it_shows(site):
    cab = site.cabinet()
    iid = site.intervention(cab, title='<script>alert("x")</script>', team="eclairage")
    path = _field_path(site, iid)
    site.client.post(path, data={"action": "note", "note": "<img src=x onerror=alert(1)>"})
    page = site.client.get(path).get_data(as_text=True)
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page


# --- languages ---

TEMPLATE_MESSAGE = re.compile(r"""\b_\("((?:[^"\\]|\\.)*)"[,)]""")


def test_every_message_of_the_pages_templates_has_a_french_translation():
    """The templates' `_()` messages (which the code's extractor does not read) are catalogued."""
    from beffroi.i18n import catalogue
    from beffroi.interventions import web

    templates = [web.BASE, web.REPORT_FORM, web.REPORT_DONE, web.PRIVACY, web.FIELD, web.MESSAGE]
    found = {m for t in templates for m in TEMPLATE_MESSAGE.findall(t)}
    assert len(found) > 60, "the templates' messages were not found"
    assert sorted(found - set(catalogue("fr"))) == []


def test_an_english_browser_gets_the_report_form_the_notice_and_the_field_page_in_english(site):
    """In an English request the pages, their refusals and the field page speak English."""
    from beffroi.i18n import in_locale

    cab = site.cabinet()
    iid = site.intervention(cab, team="eclairage")
    with in_locale("en"):
        form = _text(site.client.get(FORM))
        refused = _text(site.client.post(FORM, data=_form(cab, lat="nord")))
        notice = _text(site.client.get("/public/confidentialite"))
        field = _text(site.client.get(_field_path(site, iid)))
        api = site.client.post(API, json=_body(cab, category="ufo")).get_json()
    assert 'lang="en"' in form and "Report a problem" in form and "Use my position" in form
    assert "Dark street / broken street light" in form and "Tell me by e-mail when" in form
    assert 'data-searching="Looking for your position…"' in form
    assert "30 days after the report is closed" in form and "Signaler" not in form
    assert "Invalid latitude: a number in decimal degrees is expected." in refused
    assert "supervisor or administrator" in notice and "It is never published" in notice
    assert 'id="state">Assigned<' in field and "P3 — normal" in field
    assert ">En route</button>" in field and ">On site</button>" in field
    assert "Save the note" in field and "Historique" not in field
    assert api == {"error": "unknown category"}
    # Without a choice, the same pages are French.
    assert 'lang="fr"' in _text(site.client.get(FORM))
