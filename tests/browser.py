"""Debian's Chromium driven by Playwright, for the tests that use the HMI in a real browser."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


def require_chromium() -> None:
    """Fail in CI when Chromium is missing (a missing server is a failure there), else skip."""
    if Path(CHROMIUM).exists():
        return
    reason = f"{CHROMIUM} is missing: apt-get install chromium (make test installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator:
    """Launch headless Chromium for the thread that uses it (Playwright's sync API)."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def log_in(page, base: str, name: str, password: str) -> None:  # type: ignore[no-untyped-def]
    """Log in through the login form and wait for the shell to show the user."""
    page.goto(base + "login")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_selector("#shell-user-name", timeout=20_000)


def artifact(name: str) -> Path:
    """Return where to save a screenshot kept after the run (tests/artifacts, not committed)."""
    ARTIFACTS.mkdir(exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    return ARTIFACTS / name
