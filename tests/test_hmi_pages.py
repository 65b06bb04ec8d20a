"""Every page of the command post, in Chromium, against the running demo gateway.

The gateway runs as `beffroi demo` does (simulator, collector, historian, alarms, KPIs, control,
HMI); an admin walks through each page of the navigation. No page may raise a server error or a
browser error, and each one is saved as a screenshot under tests/artifacts/, at a desktop's
size and at a phone's (`hmi-page-<name>.png`, `hmi-page-<name>-phone.png`). At both sizes no
page is wider than the window; at the desktop's the navigation is one line and the user's block
is in view; at the phone's every navigation link can be brought into view and tapped.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.register import build_register
from tests.browser import artifact, chromium, require_chromium
from tests.conftest import free_port
from tests.test_hmi import SHOWN_JS

DESKTOP = {"width": 1400, "height": 900}
PHONE = {"width": 390, "height": 844}
PLOT_DRAWN = "document.querySelector('{sel} .js-plotly-plot')?.data?.length > 0"
# Path, artifact name, and what shows that the page has drawn its live content.
PAGES = [
    ("/", "map", SHOWN_JS + " === {n_assets}"),
    (
        "/synoptic",
        "synoptic",
        "document.querySelector('#synoptic-graph .js-plotly-plot')?.layout?.shapes?.length > 0",
    ),
    ("/trends?tag={tag}", "trends", PLOT_DRAWN.format(sel="#trends-graph")),
    (
        "/alarms",
        "alarms",
        "(() => { try { return dash_ag_grid.getApi('alarms-active') !== undefined; }"
        " catch (e) { return false; } })()",
    ),
    ("/kpis", "kpis", "document.getElementById('kpis-status')?.innerText.length > 0"),
    ("/rules", "rules", "document.querySelector('#rules-grid .ag-row') !== null"),
    ("/users", "users", "document.querySelector('#users-grid .ag-row') !== null"),
    (
        "/inventory",
        "inventory",
        "document.getElementById('inventory-summary')?.innerText.length > 0",
    ),
    ("/control", "control", "document.getElementById('control-asset') !== null"),
    ("/audit", "audit", "document.querySelector('.audit-page .ag-row') !== null"),
    ("/system", "system", "document.getElementById('system-collectors')?.innerText.length > 0"),
    (
        "/interventions",
        "interventions",
        "document.querySelector('#iv-summary')?.innerText.length > 0",
    ),
]
# Whether the page is wider than the window (then the whole page scrolls sideways).
TOO_WIDE_JS = """() => {
  const wide = document.documentElement.scrollWidth;
  return wide > window.innerWidth ? `page ${wide} px wide in a ${window.innerWidth} px window` : '';
}"""
# At the desktop's size: the navigation on one line, each label on one line, the logout in view.
DESKTOP_HEADER_JS = """() => {
  const problems = [];
  const links = [...document.querySelectorAll('.shell-nav a')];
  const tops = new Set(links.map(a => Math.round(a.getBoundingClientRect().top)));
  const heights = new Set(links.map(a => Math.round(a.getBoundingClientRect().height)));
  if (tops.size !== 1) problems.push(`navigation on ${tops.size} lines`);
  if (heights.size !== 1) problems.push('a navigation label wraps');
  const nav = document.querySelector('.shell-nav');
  if (nav.scrollWidth > nav.clientWidth) problems.push('navigation wider than the header');
  const out = document.getElementById('shell-logout').getBoundingClientRect();
  if (out.left < 0 || out.right > window.innerWidth) problems.push('logout link out of view');
  return problems;
}"""
# At the phone's size: each navigation link, scrolled into view within the navigation, lies
# inside the navigation and the window, is at least 44 px high, and is what a tap there hits.
PHONE_NAV_JS = """() => {
  const nav = document.querySelector('.shell-nav');
  const problems = [];
  for (const a of nav.querySelectorAll('a')) {
    a.scrollIntoView({block: 'nearest', inline: 'nearest'});
    const r = a.getBoundingClientRect();
    const n = nav.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    if (r.left < Math.max(n.left, 0) - 1 || r.right > Math.min(n.right, window.innerWidth) + 1)
      problems.push(`${a.id} out of reach (${Math.round(r.left)}..${Math.round(r.right)})`);
    else if (window.scrollX > 0) problems.push(`${a.id} reached by scrolling the whole page`);
    else if (r.height < 44) problems.push(`${a.id} only ${Math.round(r.height)} px high`);
    else if (hit?.closest('a') !== a) problems.push(`${a.id} covered`);
  }
  nav.scrollLeft = 0;
  window.scrollTo(0, 0);
  return problems;
}"""


def _layout_problems(page, size: str, header_js: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Say what is out of place on the page at this size (nothing when all fits)."""
    problems = [page.evaluate(TOO_WIDE_JS), *page.evaluate(header_js)]
    return [f"{size}: {p}" for p in problems if p]


def _walk(url: str, password: str, n_assets: int, tag: str) -> dict[str, list[str]]:
    """Log in as admin and visit every page; return the errors and misplacements on each."""
    errors: dict[str, list[str]] = {}
    with chromium() as browser:
        page = browser.new_page(viewport=DESKTOP)
        current: list[str] = []
        page.on("pageerror", lambda exc: current.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: current.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda r: current.append(f"{r.status} {r.url}") if r.status >= 500 else None,
        )
        page.goto(url + "login")
        page.screenshot(path=artifact("hmi-page-login.png"))
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("#login-submit")
        page.wait_for_selector("#shell-user-name", timeout=30_000)
        for path, name, drawn in PAGES:
            current.clear()
            page.goto(url + path.format(tag=tag).lstrip("/"))
            try:
                page.wait_for_function(drawn.replace("{n_assets}", str(n_assets)), timeout=30_000)
            finally:
                page.screenshot(path=artifact(f"hmi-page-{name}.png"))
            # The banner and status strip are on every page, filled by their own callbacks.
            page.wait_for_function(
                "document.getElementById('shell-strip')?.innerText.includes('en direct')",
                timeout=30_000,
            )
            page.screenshot(path=artifact(f"hmi-page-{name}.png"))  # with the banner filled
            current.extend(_layout_problems(page, "desktop", DESKTOP_HEADER_JS))
            # The same page on a phone, as the on-call supervisor opens it.
            page.set_viewport_size(PHONE)
            page.wait_for_timeout(500)  # the map and grids resize on the window's resize event
            page.screenshot(path=artifact(f"hmi-page-{name}-phone.png"))
            current.extend(_layout_problems(page, "phone", PHONE_NAV_JS))
            page.set_viewport_size(DESKTOP)
            errors[name] = list(current)
    return errors


async def test_every_page_draws_without_errors(demo_config_fixture, tmp_path: Path) -> None:
    """An admin sees every page of the demo drawn with live data, with no error anywhere."""
    require_chromium()  # once, before the gateway starts
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    register = build_register(cfg, assets=60)
    runtime = Runtime(cfg, register, simulator=True, hmi=True, demo=True)
    tag = next(t for t in register.tags if t.endswith("/power_kw"))
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        async with asyncio.timeout(30):
            await runtime.collectors[0].wait_connected()
        errors = await asyncio.to_thread(
            _walk,
            runtime.hmi_server.url,
            runtime.demo_passwords["admin"],
            len(register.assets),
            tag,
        )
    assert list(errors) == [name for _, name, _ in PAGES]
    assert {name: e for name, e in errors.items() if e} == {}
