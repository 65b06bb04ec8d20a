"""A dark street from a resident's phone to a closed job, in Chromium.

A cabinet's alarm has opened the lighting team's intervention. A resident reports the dark
street on a phone (the public page, no login), leaving an address with consent; a supervisor
triages it in the HMI (a new intervention from the report, merged with the alarm's), assigns
the team, which gets an e-mail (aiosmtpd) with its field link; the crew opens it on a phone,
goes en route, on site, closes it; the resident is told by e-mail. A tampered or expired link
is refused; the retention job then deletes the resident's address from every store.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from beffroi.app.config import Config
from beffroi.control.audit import AuditLog
from beffroi.core.model import utcnow
from beffroi.core.register import build_register
from beffroi.interventions.model import State, Via
from tests.browser import artifact, chromium, log_in, require_chromium
from tests.test_alarm_email import SmtpServer
from tests.test_hmi_interventions import PW, Site, _click_row, _config, _served

RESIDENT = "voisine.rue-monge@example.org"
# A French phone: the public and field pages speak the language the browser asks for.
PHONE = {
    "viewport": {"width": 390, "height": 844},
    "is_mobile": True,
    "has_touch": True,
    "locale": "fr-FR",
}
TABLES = ("interventions", "intervention_events", "intervention_links", "field_links",
          "reports", "report_contacts", "mail_outbox")  # fmt: skip


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def site(tmp_path: Path, demo_config: Config, smtp: SmtpServer) -> Iterator[Site]:
    cfg = _config(demo_config, smtp.port, tmp_path)
    register = build_register(cfg, assets=60)
    audit = AuditLog(tmp_path / "audit.duckdb")
    with _served(tmp_path, cfg, register, audit, smtp) as s:
        yield s
    audit.close()


def _field_url(site: Site, team_mail: int) -> str:
    """Return the field link of the team's n-th e-mail, on this test's server."""
    text = site.smtp.to("eclairage@example.org")[team_mail].message.get_content()
    link = next(w for w in text.split() if w.startswith("https://beffroi.example.org/field/"))
    return site.url + link.split("/", 3)[3]


def _resident_reports(browser: Any, url: str, lat: float, lon: float) -> str:
    page = browser.new_page(**PHONE)
    page.goto(url + "public/signaler")
    page.select_option("#category", "dark_street")
    page.fill("#lat", f"{lat:.6f}".replace(".", ","))  # a French phone's decimal comma
    page.fill("#lon", f"{lon:.6f}")
    page.fill("#address", "12 rue Monge")
    page.fill("#text", "Toute la rue est noire depuis hier soir.")
    page.fill("#email", RESIDENT)
    page.check("#consent")
    page.click("button[type=submit]")
    page.wait_for_selector("#report-number")
    page.screenshot(path=artifact("phone-report.png"), full_page=True)
    number = page.inner_text("#report-number")
    page.close()
    return number


def _supervisor_triages(browser: Any, url: str, rid: int, alarm_iid: int) -> dict[str, str]:
    seen: dict[str, str] = {}
    page = browser.new_page(viewport={"width": 1500, "height": 1400})
    log_in(page, url, "sup", PW)
    page.goto(url + "interventions")
    _click_row(page, "iv-reports", rid)
    page.wait_for_selector(f"#iv-report-{rid}")
    page.click("#iv-create")
    page.wait_for_function(
        "document.querySelector('#iv-report-feedback')?.innerText.startsWith('Intervention')"
    )
    seen["created"] = page.inner_text("#iv-report-feedback")
    new_iid = alarm_iid + 1
    for iid in (alarm_iid, new_iid):  # both rows ticked: one merge
        row = page.locator(f"#iv-grid .ag-center-cols-container .ag-row[row-id='{iid}']")
        row.wait_for(timeout=20_000)
        row.locator(".ag-selection-checkbox input, .ag-checkbox-input").first.click()
    page.click("#iv-merge")
    page.wait_for_function(
        "document.querySelector('#iv-grid-feedback')?.innerText.includes('usionn')"
    )
    seen["merged"] = page.inner_text("#iv-grid-feedback")
    page.wait_for_function(
        f"document.querySelector(\"#iv-grid .ag-row[row-id='{new_iid}']\") === null"
    )
    row = page.locator(f"#iv-grid .ag-center-cols-container .ag-row[row-id='{alarm_iid}']")
    row.wait_for(timeout=20_000)
    box = row.locator(".ag-selection-checkbox input, .ag-checkbox-input").first
    if not box.is_checked():
        box.click()
    page.click("#iv-team")
    page.get_by_role("option", name="eclairage").click()
    page.click("#iv-assign")
    page.wait_for_function(
        "document.querySelector('#iv-grid-feedback')?.innerText.includes('eclairage')"
    )
    seen["assigned"] = page.inner_text("#iv-grid-feedback")
    page.screenshot(path=artifact("hmi-interventions-merged.png"), full_page=True)
    page.close()
    return seen


def _crew_closes(browser: Any, link: str) -> dict[str, str]:
    seen: dict[str, str] = {}
    page = browser.new_page(**PHONE)
    page.goto(link)
    seen["opened"] = page.inner_text("body")
    for label in ("En route", "Sur place"):
        page.click(f"button:text-is('{label}')")
        page.wait_for_function(f"document.querySelector('#state')?.innerText === '{label}'")
    page.fill("#note", "Disjoncteur réarmé, câble à reprendre.")
    page.click("button:text-is('Enregistrer la note')")
    page.wait_for_selector("#history >> text=Disjoncteur réarmé")
    page.screenshot(path=artifact("phone-field.png"), full_page=True)
    page.check("#confirm")
    page.click("button.done")
    page.wait_for_selector("text=Intervention close")
    seen["closed"] = page.inner_text("body")
    tampered = link[:-3] + ("AAA" if not link.endswith("AAA") else "BBB")
    seen["tampered"] = str(page.goto(tampered).status) + " " + page.inner_text("body")
    seen["after_close"] = str(page.goto(link).status) + " " + page.inner_text("body")
    page.close()
    return seen


def _opens(browser: Any, link: str) -> str:
    page = browser.new_page(**PHONE)
    answer = page.goto(link)
    text = f"{answer.status} {page.inner_text('body')}"
    page.close()
    return text


def _holding(site: Site, needle: str) -> list[str]:
    store = site.service.store
    found = [
        t
        for t in TABLES
        if any(needle in str(v) for row in store.db.rows(f"SELECT * FROM {t}") for v in row)
    ]
    if needle in site.audit.frame().astype(str).to_csv():
        found.append("audit")
    return found


def test_a_dark_street_from_a_residents_phone_to_a_closed_job(site: Site) -> None:
    require_chromium()
    svc = site.service
    cab = site.cabinet("dijon")
    alarm_id = f"{cab.tags[0].name}#cabinet-fault"
    views = [{"alarm_id": alarm_id, "state": "unack_active", "severity": 3,
              "rule": "cabinet-fault", "asset": cab.id, "commune": cab.commune,
              "domain": cab.domain, "message": "Cabinet fault",
              "since": (utcnow() - timedelta(minutes=20)).isoformat()}]  # fmt: skip
    svc.alarms = lambda: list(views)
    [alarm_iid] = svc.route_alarms()  # what the duty job does every 5 s
    svc.deliver()
    assert len(site.smtp.to("eclairage@example.org")) == 1

    with chromium() as browser:
        number = _resident_reports(browser, site.url, cab.lat + 0.0004, cab.lon)
        rid = int(number)
        report = svc.store.report(rid)
        assert report is not None and report["commune"] == cab.commune
        assert RESIDENT not in str(report)
        seen = _supervisor_triages(browser, site.url, rid, alarm_iid)
        item = svc.get(alarm_iid)
        assert item.reports == [rid] and item.alarms == [alarm_id]
        assert svc.get(alarm_iid + 1).merged_into == alarm_iid
        assert item.team == "eclairage" and item.state is State.ASSIGNED
        assert len(site.smtp.to("eclairage@example.org")) == 2  # the assignment's e-mail
        link = _field_url(site, 1)
        crew = _crew_closes(browser, link)
        # An expired link: one issued now, opened 73 h later (links last 72 h).
        later = svc.create("sup", Via.HMI, title="Contrôle", commune=cab.commune,
                           domain="lighting", assets=[cab.id], team="eclairage")  # fmt: skip
        expiring = svc.field_link(later, "sup")
        svc.store.clock = lambda: utcnow() + timedelta(hours=73)
        expired = _opens(browser, site.url + f"field/{expiring.token}")
        svc.store.clock = utcnow

    assert seen["created"].startswith("Intervention n° ")
    assert "eclairage" in seen["assigned"]
    assert "Cabinet fault" in crew["opened"] and cab.id in crew["opened"]
    assert "Intervention close" in crew["closed"]
    assert crew["tampered"].startswith("403") and "invalide" in crew["tampered"]
    assert crew["after_close"].startswith("403") and "révoqué" in crew["after_close"]
    assert expired.startswith("403") and "expiré" in expired
    done = svc.get(alarm_iid)
    assert done.state is State.DONE
    assert set(done.times) >= {"assigned", "en_route", "on_site", "done"}
    field_moves = site.audit.frame(actions=["intervention.state"])
    assert {u for u in field_moves.user} == {"field:eclairage"}
    [told] = site.smtp.to(RESIDENT)
    assert f"signalement n° {rid} a été traité" in told.message.get_content()

    assert _holding(site, RESIDENT) == ["report_contacts", "mail_outbox"]
    svc.clock = lambda: utcnow() + timedelta(days=31)
    assert svc.forget_contacts() == 1
    assert _holding(site, RESIDENT) == []
    assert site.audit.verify().ok
