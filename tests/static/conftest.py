"""Fixtures for the browser player tests: headless Debian Chromium through Playwright.

`playwright install` cannot download browsers here, so the system Chromium is launched by
path. `static_url` serves the repository's `static/` folder from a stdlib HTTP server, for
tests of the player's pure JavaScript modules that need no streamgen server.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Keep timers and media running in a page nobody looks at (headless, or a second tab).
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
REPO = Path(__file__).resolve().parents[2]


# Package scope, not session: Playwright's sync API keeps an event loop running on the main
# thread while it is open, and other packages' tests call asyncio.run().
@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    """One headless Chromium for the player tests."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"the player tests need Debian chromium at {CHROMIUM} (apt-get install)")
    from playwright import sync_api

    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    """A fresh page (own context: no shared storage) that collects console errors."""
    context = browser.new_context(accept_downloads=True)  # type: ignore[attr-defined]
    new_page = context.new_page()
    new_page.console_errors = []  # type: ignore[attr-defined]
    new_page.on(
        "console",
        lambda msg: msg.type == "error" and new_page.console_errors.append(msg.text),
    )
    new_page.on("pageerror", lambda exc: new_page.console_errors.append(str(exc)))
    yield new_page
    context.close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="session")
def static_url() -> Iterator[str]:
    """Base URL of a plain HTTP server for the repository root (so `/static/...` works)."""
    handler = partial(_QuietHandler, directory=str(REPO))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()
