"""Browser fixtures for the web UI tests: Playwright driving Debian's Chromium (never a
downloaded browser), a logged-in page per server, a console-error collector, screenshots.

- ``browser`` (session): headless ``/usr/bin/chromium``.
- ``page_for(url, token=TOKEN)`` → a Page in a fresh context (own cookies), at ``url``, logged
  in through the login form (controller mode) or straight in (``tickrun ui``). Every console
  error and uncaught page error of that page fails the test at teardown; ``errors_of(page)``
  gives the list so far (assert on it mid-test too).
- ``wait_js(page, "js function", arg)`` polls a JS predicate through page.evaluate: the UI's CSP
  (``script-src 'self'``, no eval) blocks Playwright's own ``wait_for_function``.
- ``shot(page, name)`` writes a full-page PNG to ``$TICKRUN_ARTIFACTS_DIR/ui-screenshots/``
  (default ``build/ui-screenshots/``, which CI keeps) and returns its path.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, sync_playwright

from tests.integration.test_controller_harness import TOKEN

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REPO_ROOT = Path(__file__).resolve().parents[3]
NAV_TIMEOUT_MS = 20_000
_ERRORS_ATTR = "_tickrun_console_errors"


def screenshot_dir() -> Path:
    base = os.environ.get("TICKRUN_ARTIFACTS_DIR")
    root = Path(base) if base else REPO_ROOT / "build"
    out = root / "ui-screenshots"
    out.mkdir(parents=True, exist_ok=True)
    return out


# Per module, not per session: Playwright's sync API keeps its event loop marked running in the
# main thread while it is started, so every asyncio test after it in the session would fail.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} missing: apt-get install -y --no-install-recommends chromium",
            pytrace=False,
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _expected(msg: ConsoleMessage) -> bool:
    """The one console error a correct page produces: before logging in, ``GET /ui/session``
    answers 401 and Chromium logs every failed fetch as an error."""
    url = (msg.location or {}).get("url", "")
    return url.endswith("/ui/session") and "401" in msg.text


def errors_of(page: Page) -> list[str]:
    errs: list[str] = getattr(page, _ERRORS_ATTR)
    return errs


def _collect(page: Page) -> list[str]:
    errors: list[str] = []

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and not _expected(msg):
            where = (msg.location or {}).get("url", "")
            errors.append(f"console: {msg.text} ({where})")

    def on_page_error(err: Error) -> None:
        errors.append(f"page error: {err.message}\n{err.stack or ''}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    setattr(page, _ERRORS_ATTR, errors)
    return errors


def login(page: Page, url: str, token: str = TOKEN) -> None:
    """Open the UI at ``url`` and log in through the form if it asks."""
    page.goto(url, wait_until="domcontentloaded")
    page.wait_for_selector("form#login, #nav a", timeout=NAV_TIMEOUT_MS)
    if page.locator("form#login").count():
        page.fill("#token", token)
        page.click("form#login button[type=submit]")
    page.wait_for_selector("#nav a", timeout=NAV_TIMEOUT_MS)
    page.wait_for_selector("main.page h1", timeout=NAV_TIMEOUT_MS)


def wait_js(page: Page, fn: str, arg: Any = None, timeout_s: float = NAV_TIMEOUT_MS / 1000) -> Any:
    """Poll the JS function ``fn`` (e.g. ``"n => document.querySelectorAll('tr').length === n"``)
    until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = page.evaluate(fn, arg)
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {fn} (last: {last!r})")


@pytest.fixture
def page_for(browser: Browser) -> Iterator[Callable[..., Page]]:
    opened: list[tuple[Any, list[str]]] = []

    def open_page(url: str, token: str = TOKEN) -> Page:
        context = browser.new_context(viewport={"width": 1440, "height": 900})
        context.set_default_timeout(NAV_TIMEOUT_MS)
        page = context.new_page()
        errors = _collect(page)
        opened.append((context, errors))
        login(page, url, token)
        return page

    yield open_page
    found: list[str] = []
    for context, errors in opened:
        found.extend(errors)
        context.close()
    if found:
        pytest.fail("browser errors:\n" + "\n".join(found), pytrace=False)


@pytest.fixture
def shot() -> Callable[[Page, str], Path]:
    def take(page: Page, name: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "page"
        path = screenshot_dir() / f"{safe}.png"
        # Let charts and late fetches settle before the picture.
        page.wait_for_load_state("networkidle")
        # From the top: a full-page picture taken while scrolled down draws the sticky header
        # where the viewport was, over the middle of the page.
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
