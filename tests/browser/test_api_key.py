"""The page on a service that needs an API key: it asks for the key and sends it with every request."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ARTIFACTS, PageLog, checked_page
from tests.realserver import running

KEY = "page-test-key-0123456789"
API = ("/models", "/predict", "/featuremaps", "/gradcam")


@pytest.fixture(scope="module")
def keyed_url():
    with running({"EXPLAIN_API_KEYS": KEY}, models="alexnet:none") as server:
        yield server.base


def test_the_page_asks_for_the_key_and_sends_it(browser, keyed_url):
    log = PageLog(keyed_url)
    log.expect_console_error(r"status of 401")  # Chromium logs each refused fetch
    with checked_page(browser, log) as page:
        calls: list[tuple[str, str | None]] = []

        def record(request) -> None:
            path = urlsplit(request.url).path
            if path.startswith(API):
                calls.append((path, request.headers.get("authorization")))

        page.on("request", record)
        page.goto("/")  # the page's own files need no key
        form = page.locator("#key-form")
        expect(form).to_be_visible()
        expect(page.locator("#banner")).to_have_text(
            "This service needs an API key. Enter it below."
        )
        page.get_by_label("This service needs an API key").fill("not-the-key")
        page.get_by_role("button", name="Use key").click()
        expect(page.locator("#banner")).to_have_text(
            "The service did not accept this API key. Enter another one."
        )
        page.screenshot(path=str(ARTIFACTS / "11-api-key-refused.png"))
        page.get_by_label("This service needs an API key").fill(KEY)
        page.keyboard.press("Enter")
        expect(form).to_be_hidden()
        expect(page.locator("#method option[value=gradcam]")).to_be_attached()
        page.get_by_role("button", name="Example: Chelsea the cat").click()
        expect(page.locator("#classes .class-row")).to_have_count(5)
        expect(page.locator("#cam")).to_be_visible()
        log.wait_until_settled(page)
    assert calls[0] == ("/models", None)
    assert calls[1] == ("/models", "Bearer not-the-key")
    accepted = calls[2:]
    assert {path for path, _ in accepted} >= {"/models", "/gradcam", "/featuremaps"}
    assert {header for _, header in accepted} == {f"Bearer {KEY}"}
