"""The explorer page in a real headless Debian chromium, driven by Playwright.

The browser verifies each event itself with WebCrypto (Ed25519 checkpoint signature, SHA-256
Merkle path, payload commitment); a tampered proof or payload must show the failed state.
chromium is the system one (``make chromium`` installs it); no browser is downloaded.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Route, sync_playwright

from tests.events.helpers import events_config, make_events
from tests.integration.logservers import ThreadedServer
from translog.core.signing import NoteSigner
from translog.formats.event_builder import encode_event
from translog.http.app import make_app
from translog.log.tokens import TokenStore
from translog.storage.memory import MemoryStorage

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("TRANSLOG_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[ThreadedServer, dict[str, str]]]:
    signer = NoteSigner.generate("events.example/log")
    tokens = TokenStore()
    names = {
        "submit": tokens.create("app", ("submit",)),
        "read": tokens.create("auditor", ("read",), tenants=("acme",)),
    }
    app = make_app(events_config(), storage=MemoryStorage(), signer=signer, tokens=tokens)
    server = ThreadedServer(app).start()
    events = make_events(60, seed=3)
    for event in events:
        server.run(server.log.append(encode_event(event)))
    server.run(server.log.publish())
    yield server, names
    server.stop()


@pytest.fixture(scope="module")
def browser_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make chromium` (apt-get install chromium)")
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile), executable_path=CHROMIUM, headless=True, args=FLAGS
        )
        page = context.new_page()
        yield page
        context.close()


def _search(page: Page, url: str, token: str, **fields: str) -> None:
    page.goto(url + "/explorer")
    page.wait_for_selector("#cp-status[data-state=verified]", timeout=15_000)
    page.fill("#token", token)
    page.fill("#tenant", "acme")
    for name, value in fields.items():
        if name == "outcome":
            page.select_option("#outcome", value)
        else:
            page.fill(f"#{name}", value)
    page.click("#search-button")
    page.wait_for_selector("#results tbody tr", timeout=15_000)


def _verdict(page: Page, row: int = 0) -> tuple[str, str]:
    page.locator("#results tbody tr button.verify").nth(row).click()
    page.wait_for_selector("#verdict[data-state=verified], #verdict[data-state=failed]")
    verdict = page.locator("#verdict")
    return str(verdict.get_attribute("data-state")), verdict.inner_text()


def test_explorer_verifies_events_in_the_browser(
    site: tuple[ThreadedServer, dict[str, str]], browser_page: Page
) -> None:
    server, tokens = site
    page = browser_page
    _search(page, server.url, tokens["read"], action="user.login")
    assert page.locator("#cp-size").inner_text() == str(server.log.published.size)
    rows = page.locator("#results tbody tr")
    assert rows.count() > 3
    assert all("user.login" in rows.nth(i).inner_text() for i in range(rows.count()))
    for i in (0, rows.count() - 1):
        state, text = _verdict(page, i)
        assert state == "verified", text
    checks = page.locator("#checks li").all_inner_texts()
    assert any("Ed25519" in c for c in checks) and any("commitment" in c for c in checks)


def _tamper(field: str) -> Any:
    def handle(route: Route) -> None:
        resp = route.fetch()
        body = json.loads(resp.text())
        first = body["results"][0]
        if field == "proof":
            raw = bytearray(base64.b64decode(first["inclusion_proof"][0]))
            raw[0] ^= 1
            first["inclusion_proof"][0] = base64.b64encode(bytes(raw)).decode()
        elif field == "event":
            first["event"]["actor"]["id"] = "mallory"
        else:
            note = body["checkpoint"].replace("\n", "\n", 1)
            lines = note.split("\n")
            lines[1] = str(int(lines[1]) + 1)
            body["checkpoint"] = "\n".join(lines)
        route.fulfill(response=resp, body=json.dumps(body))

    return handle


@pytest.mark.parametrize(
    ("field", "reason"),
    [
        ("proof", "does not lead to the checkpoint's root"),
        ("event", "not the committed payload"),
        ("checkpoint", "signature does not verify"),
    ],
)
def test_tampered_answers_show_failed(
    site: tuple[ThreadedServer, dict[str, str]], browser_page: Page, field: str, reason: str
) -> None:
    server, tokens = site
    page = browser_page
    page.route("**/events/search*", _tamper(field))
    try:
        _search(page, server.url, tokens["read"], outcome="failure")
        state, text = _verdict(page)
    finally:
        page.unroute("**/events/search*")
    assert state == "failed" and reason in text, text
