"""One real server and one real browser (Debian's Chromium, driven by Playwright) for the page tests.

The server is ``python -m service`` in a subprocess, as users start it: its settings come from the
environment like in production, it owns its torch threads, and it runs no event loop in the test
process, where Playwright's synchronous API runs its own. Each test gets a fresh browser context (own
cache and storage) in which every request is checked to go to that server only, and every console
error or uncaught exception fails the test.

The browser and the server live as long as the tests of this package: one of each for all of them.
Not the whole session: while Playwright's synchronous API is open, its event loop counts as running
in the main thread, and the service tests' own loop (anyio) could not start.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.realserver import running

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
SCORECAM_CHANNELS = 64
"""Score-CAM then runs 65 forward passes per image: a few seconds, long enough to cancel."""


@pytest.fixture(scope="package")
def base_url() -> Iterator[str]:
    settings = {
        "EXPLAIN_MODELS": "efficientnet_lite0",
        "EXPLAIN_SCORECAM_MAX_CHANNELS": str(SCORECAM_CHANNELS),
        "EXPLAIN_MAX_BATCH_WAIT_MS": "1",
    }
    with running(settings, models=None) as server:
        yield server.base
        server.stop()
        output = server.output()
    assert "Traceback" not in output, output


@pytest.fixture(scope="package")
def browser():
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), (
        f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium); "
        ".ci/run does"
    )
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        # Playwright gives every launch a new, empty --user-data-dir of its own.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class PageLog:
    """What one page did: requests by URL, and the problems that fail a test."""

    base_url: str
    requests: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    expected: list[re.Pattern[str]] = field(default_factory=list)

    def calls(self, path: str) -> list[str]:
        """The requests made so far to ``path`` (e.g. ``/gradcam``), query strings included."""
        prefix = self.base_url + path
        return [url for url in self.requests if url == prefix or url.startswith(prefix + "?")]

    def wait_until_settled(self, page, timeout: float = 30.0) -> None:
        """Wait until every request made so far has been answered, has failed or was aborted."""
        deadline = time.monotonic() + timeout
        while sorted(self.settled) != sorted(self.requests):
            assert time.monotonic() < deadline, set(self.requests) - set(self.settled)
            page.wait_for_timeout(50)

    def expect_console_error(self, pattern: str) -> None:
        """A console error matching ``pattern`` is part of what the test provokes."""
        self.expected.append(re.compile(pattern))


@pytest.fixture
def page_log(base_url) -> PageLog:
    return PageLog(base_url)


@contextmanager
def checked_page(browser, page_log: PageLog) -> Iterator:
    """A page in a fresh context on ``page_log.base_url``; afterwards: no request left that
    server, no console error."""
    base_url = page_log.base_url
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=base_url, accept_downloads=True
    )

    def route(route):
        url = route.request.url
        if url.startswith(base_url + "/"):
            route.continue_()
        else:
            page_log.foreign.append(url)
            route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda r: page_log.requests.append(r.url))
    page.on("requestfinished", lambda r: page_log.settled.append(r.url))
    page.on("requestfailed", lambda r: page_log.settled.append(r.url))
    page.on(
        "console",
        lambda message: message.type == "error" and page_log.errors.append(message.text),
    )
    page.on("pageerror", lambda error: page_log.errors.append(f"uncaught: {error}"))
    page.set_default_timeout(30_000)
    yield page
    context.close()
    assert page_log.foreign == [], "the page asked another host"
    unexpected = [
        text for text in page_log.errors if not any(p.search(text) for p in page_log.expected)
    ]
    assert unexpected == [], "console errors"


@pytest.fixture
def page(browser, page_log):
    """A page on the package's server, checked as :func:`checked_page` says."""
    with checked_page(browser, page_log) as page:
        yield page


@pytest.fixture
def screenshot(page):
    """Save the page as ``tests/browser/artifacts/NAME.png`` (git-ignored; CI keeps it)."""

    def save(name: str, *, full_page: bool = True) -> Path:
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        return path

    return save
