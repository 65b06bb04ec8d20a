"""French first: every message translated, no text left outside the catalogue, French formats.

The catalogue test reads the messages the code marks (`_`, `N_`, `ngettext`) with babel's own
extractor; the finder reads the HMI's code for words handed to Dash components unmarked; the
browser test walks the command post as a French user and reads what is on the screen.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from babel.messages.extract import extract_from_dir

from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.model import Sample, utcnow
from beffroi.core.register import build_register
from beffroi.hmi.users import UserError, UserStore
from beffroi.i18n import (
    LOCALES,
    catalogue,
    fmt_date,
    fmt_datetime,
    fmt_number,
    fmt_percent,
    fmt_quantity,
    in_locale,
)
from tests.browser import artifact, chromium, require_chromium
from tests.conftest import free_port
from tests.test_hmi_pages import PAGES

SRC = Path(__file__).resolve().parent.parent / "src" / "beffroi"
HMI = SRC / "hmi"
KEYWORDS = {"_": None, "N_": None, "gettext": None, "ngettext": (1, 2)}
PLACEHOLDER = re.compile(r"%\((\w+)\)[sdfr]")


def _messages() -> Iterator[tuple[str, int, str | tuple[str, ...]]]:
    """Yield (file, line, msgid) of every marked message of the package."""
    for filename, lineno, message, _comments, _context in extract_from_dir(
        str(SRC), method_map=[("**.py", "python")], keywords=KEYWORDS
    ):
        yield filename, lineno, message


def test_every_marked_message_has_a_french_translation() -> None:
    """Each `_`/`N_`/`ngettext` message of the code is in the French catalogue."""
    fr = catalogue("fr")
    messages = list(_messages())
    assert len(messages) > 200, "the extractor found too few messages: is it reading the code?"
    missing = sorted(
        f"{file}:{line}: {msg!r}"
        for file, line, msg in messages
        if (tuple(msg) if isinstance(msg, list | tuple) else msg) not in fr
    )
    assert missing == [], "no French translation in i18n/catalogues/fr/*.po for:\n" + "\n".join(
        missing
    )


def test_translations_keep_their_placeholders() -> None:
    """A translation names the same %(name)s placeholders as its English message."""
    wrong = []
    for msgid, text in catalogue("fr").items():
        if isinstance(msgid, tuple):
            for i, form in enumerate(text if isinstance(text, tuple) else (text,)):
                english = msgid[min(i, 1)]
                if set(PLACEHOLDER.findall(form)) != set(PLACEHOLDER.findall(english)):
                    wrong.append(f"{english!r} -> {form!r}")
        elif set(PLACEHOLDER.findall(str(text))) != set(PLACEHOLDER.findall(msgid)):
            wrong.append(f"{msgid!r} -> {text!r}")
    assert wrong == []


# --- the finder of words handed to Dash without the catalogue ------------------------------

# Modules whose calls build Dash components.
COMPONENT_MODULES = {"html", "dcc", "dag", "dl", "dbc"}
# Keyword arguments, and keys of dicts given to components, that users read.
SHOWN = {"children", "label", "placeholder", "title", "headerName"}
# Words that are the same in every language: the product's name, symbols and units.
ALLOWED = {
    "Beffroi",  # the product's name
    "P",  # priority, as ISA-18.2 writes it (P1…P4)
    "kW",
    "kWh",
    "MWh",
    "km/h",
    "OK",
}
LETTER = re.compile(r"[^\W\d_]")
# Ids and CSS classes ("shell-alarms shell-alarms-none"): every word joined by - or _.
IDENTIFIERS = re.compile(r"^\s*[\w.]*[-_][\w.-]*(\s+[\w.]*[-_][\w.-]*)*\s*$")


def _words(node: ast.AST) -> Iterator[tuple[int, str]]:
    """Yield the literal texts with letters a node shows as it is (lists and f-strings too)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        text = node.value.strip()
        if LETTER.search(text) and text not in ALLOWED and not IDENTIFIERS.match(text):
            yield node.lineno, node.value
    elif isinstance(node, ast.JoinedStr):
        for part in node.values:
            yield from _words(part)
    elif isinstance(node, ast.List | ast.Tuple):
        for element in node.elts:
            yield from _words(element)
    elif isinstance(node, ast.IfExp):
        yield from _words(node.body)
        yield from _words(node.orelse)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield from _words(node.left)
        yield from _words(node.right)


def _is_component(call: ast.Call) -> bool:
    f = call.func
    return (
        isinstance(f, ast.Attribute)
        and isinstance(f.value, ast.Name)
        and f.value.id in COMPONENT_MODULES
    )


def _is_callback(fn: ast.FunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
        if name == "callback":
            return True
    return False


def untranslated(path: Path) -> list[str]:
    """Return `line: text` for each literal shown to users without `_()` in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _is_component(node):
            if node.args:
                found += _words(node.args[0])
            found += [w for k in node.keywords if k.arg in SHOWN for w in _words(k.value)]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "register_page":
            # The browser's title bar: a literal here is fixed when the module is imported.
            found += [w for k in node.keywords if k.arg == "title" for w in _words(k.value)]
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value in SHOWN and value is not None:
                    found += _words(value)
        elif isinstance(node, ast.FunctionDef) and _is_callback(node):
            # What a callback returns lands on the page: messages, feedback, labels.
            for sub in ast.walk(node):
                if isinstance(sub, ast.Return) and sub.value is not None:
                    found += _words(sub.value)
    shown = path.relative_to(SRC.parent) if path.is_relative_to(SRC.parent) else path
    return [f"{shown}:{line}: {text!r}" for line, text in sorted(set(found))]


HMI_FILES = sorted(p for p in HMI.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", HMI_FILES, ids=lambda p: str(p.relative_to(HMI)))
def test_no_word_shown_without_the_catalogue(path: Path) -> None:
    """No text reaches a Dash component (or a callback's answer) unless it goes through `_()`."""
    assert untranslated(path) == []


def test_the_finder_finds_forgotten_words(tmp_path: Path) -> None:
    """The finder flags children, placeholders, grid headers and callback answers left bare."""
    module = tmp_path / "page.py"
    module.write_text(
        "from dash import callback, dcc, html\n"
        "from beffroi.i18n import _\n"
        "def layout():\n"
        "    return html.Div([html.H2('Gateway'), html.P(_('Fine')), html.Span('—')],\n"
        "        title='Hover text')\n"
        "COLUMNS = [{'field': 'x', 'headerName': 'Since'}]\n"
        "x = dcc.Input(placeholder='name')\n"
        "@callback()\n"
        "def act():\n"
        "    return f'Refused: {1}'\n"
    )
    texts = [f.split(": ", 1)[1] for f in untranslated(module)]
    assert texts == ["'Gateway'", "'Hover text'", "'Since'", "'name'", "'Refused: '"]


# --- formats ---------------------------------------------------------------------------------


def test_numbers_and_dates_follow_the_language() -> None:
    """French writes 1 234,5 and 08/12/2026 14:05; English 1,234.5 and 12/8/26, 2:05 PM."""
    at = datetime(2026, 12, 8, 13, 5, 9, tzinfo=UTC)
    paris = ZoneInfo("Europe/Paris")
    with in_locale("fr"):
        assert fmt_number(1234.5, 1) == "1\u202f234,5"
        assert fmt_number(None) == "—"
        assert fmt_percent(65) == "65\u202f%"
        assert fmt_quantity(12.5, "kW", 1) == "12,5\u00a0kW"
        assert fmt_datetime(at, paris) == "08/12/2026 14:05"
        assert fmt_datetime(at, paris, seconds=True) == "08/12/2026 14:05:09"
        assert fmt_date(at, paris, long=True) == "8 décembre 2026"
    with in_locale("en"):
        assert fmt_number(1234.5, 1) == "1,234.5"
        assert fmt_percent(65) == "65%"
        assert fmt_datetime(at, paris) == "12/8/26 2:05\u202fPM"


def test_users_keep_a_language(tmp_path: Path) -> None:
    """A user is French unless told otherwise; English can be chosen; others are refused."""
    store = UserStore(tmp_path / "users.duckdb")
    try:
        assert store.add("camille", "correct horse battery", "viewer", ["*"]).language == "fr"
        store.add("sam", "correct horse battery", "viewer", ["*"], language="en")
        assert store.set_language("camille", "en").language == "en"
        assert {u.name: u.language for u in store.all()} == {"camille": "en", "sam": "en"}
        with pytest.raises(UserError, match="langue inconnue 'de'"):
            store.set_language("sam", "de")
        assert store.get("sam") is not None and store.get("sam").language == "en"  # type: ignore[union-attr]
    finally:
        store.close()


def test_existing_users_files_speak_french(tmp_path: Path) -> None:
    """A users file from before languages gains the column, every user in French."""
    import duckdb

    from beffroi.hmi.users import SCHEMA

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute(SCHEMA)
    con.execute(
        "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at TIMESTAMP)"
    )
    con.execute("INSERT INTO schema_migrations VALUES (1, now())")
    con.execute(
        "INSERT INTO users (name, hash, role, communes) VALUES ('old', 'x', 'admin', ['*'])"
    )
    con.close()
    store = UserStore(path)
    try:
        old = store.get("old")
        assert old is not None and old.language == "fr" and old.role == "admin"
    finally:
        store.close()


# --- in the browser --------------------------------------------------------------------------

COLLECT_TEXT = """() => {
  const out = new Set();
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    const text = n.textContent.trim();
    // Codes (audit action names, hashes) are identifiers, the same in every language.
    if (el && el.closest('.beffroi-code')) continue;
    if (text && el && el.checkVisibility && el.checkVisibility()) out.add(text);
  }
  for (const el of document.querySelectorAll('[placeholder], [title]')) {
    for (const a of ['placeholder', 'title']) {
      if (el.getAttribute(a)) out.add(el.getAttribute(a).trim());
    }
  }
  return [...out];
}"""
FRENCH_DATE = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}:\d{2}$")


def _english_words() -> set[str]:
    """Return the English messages whose French differs (shown as they are: a forgotten `_`).

    A word that is also the French of another message ("Parking": the French of "Car park",
    the English of "Stationnement") proves nothing either way: left out.
    """
    fr = catalogue("fr")
    french = {t for t in fr.values() if isinstance(t, str)}
    return {
        m
        for m, t in fr.items()
        if isinstance(m, str) and t != m and "%(" not in m and m not in french
    }


def _walk_in_french(url: str, password: str, tag: str, n_assets: int) -> dict[str, object]:
    """Walk every page as the French admin, then switch to English; return what was seen."""
    english = _english_words()
    seen: dict[str, object] = {}
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900}, locale="en-US")
        page.goto(url + "login")
        # An English browser gets an English login form; the user's own language comes after.
        seen["login"] = page.inner_text("#login-submit")
        page.fill("#username", "admin")
        page.fill("#password", password)
        page.click("#login-submit")
        page.wait_for_selector("#shell-user-name", timeout=30_000)
        seen["lang"] = page.get_attribute("html", "lang")
        leftovers: dict[str, list[str]] = {}
        for path, name, drawn in PAGES:
            page.goto(url + path.format(tag=tag).lstrip("/"))
            with contextlib.suppress(Exception):  # drawn or not, its text is read
                page.wait_for_function(drawn.replace("{n_assets}", str(n_assets)), timeout=20_000)
            page.wait_for_function(
                "document.getElementById('shell-strip')?.innerText.includes('en direct')",
                timeout=30_000,
            )
            page.wait_for_timeout(500)  # the grids fill a moment after their callbacks
            texts = set(page.evaluate(COLLECT_TEXT))
            left = sorted(texts & english)
            if left:
                leftovers[name] = left
            if name == "alarms":
                page.wait_for_selector("#alarms-active .ag-row", timeout=20_000)
                seen["since"] = page.inner_text(
                    "#alarms-active .ag-row [col-id='since']", timeout=20_000
                )
                seen["nav"] = page.inner_text("#shell-nav-alarms")
                page.screenshot(path=artifact("i18n-alarms-fr.png"))
        seen["leftovers"] = leftovers
        page.goto(url + "system")
        page.click("#shell-language-en")
        page.wait_for_function("document.documentElement.lang === 'en'", timeout=20_000)
        page.wait_for_selector("#system-collectors table", timeout=20_000)
        seen["en_lang"] = page.get_attribute("html", "lang")
        seen["en_url"] = page.url
        seen["en_heading"] = page.inner_text(".system-page h2")
        seen["en_nav"] = page.inner_text("#shell-nav-alarms")
        seen["en_logout"] = page.inner_text("#shell-logout")
        page.screenshot(path=artifact("i18n-system-en.png"))
    return seen


async def test_a_french_user_sees_french_everywhere(demo_config_fixture, tmp_path: Path) -> None:
    """The French admin walks every page: no English message left, French dates; then English."""
    require_chromium()
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    register = build_register(cfg, assets=60)
    runtime = Runtime(cfg, register, simulator=True, hmi=True, demo=True)
    tag = next(t for t in register.tags if t.endswith("/power_kw"))
    cabinet = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        async with asyncio.timeout(30):
            await runtime.collectors[0].wait_connected()
        assert runtime.alarms is not None and runtime.hmi_server is not None
        # One alarm to acknowledge, so that the console shows a date.
        runtime.alarms.process([Sample(cabinet.tag("fault"), utcnow(), True)])
        seen = await asyncio.to_thread(
            _walk_in_french,
            runtime.hmi_server.url,
            runtime.demo_passwords["admin"],
            tag,
            len(register.assets),
        )
        assert runtime.users is not None
        admin = runtime.users.get("admin")
        assert admin is not None and admin.language == "en"
    assert seen["login"] == "Log in"
    assert seen["lang"] == "fr"
    assert seen["nav"] == "Alarmes"
    assert FRENCH_DATE.match(str(seen["since"])), seen["since"]
    assert seen["en_lang"] == "en" and str(seen["en_url"]).endswith("/system")
    assert (seen["en_heading"], seen["en_nav"], seen["en_logout"]) == (
        "Gateway",
        "Alarms",
        "Log out",
    )
    # Last: the pages of the command post, each with the English words still on it.
    assert seen["leftovers"] == {}


def test_every_locale_has_a_catalogue_or_is_the_source() -> None:
    """Each offered language is English (the messages themselves) or has a catalogue."""
    assert set(LOCALES) == {"fr", "en"}
    assert len(catalogue("fr")) > 200
