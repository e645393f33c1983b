"""The docs page in a real browser (Debian's headless Chromium), with every request that is
not to the service itself blocked: Swagger UI must render from the service's own assets and
"Try it out" on /jacobian must get a 200 for the seed example."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from playwright.sync_api import Route, sync_playwright

from tests.support.servers import LiveServer

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def page(live_server: LiveServer, tmp_path: Path):
    assert Path(CHROMIUM).exists(), "Chromium is installed by `make test` (Debian package chromium)"
    blocked: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        own = urlparse(live_server.url).netloc

        def offline(route: Route) -> None:
            if urlparse(route.request.url).netloc == own:
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        page.route("**/*", offline)
        page.blocked = blocked  # type: ignore[attr-defined]
        yield page
        browser.close()


def test_swagger_ui_renders_offline_and_try_it_out_works(page, live_server: LiveServer, tmp_path: Path) -> None:
    page.goto(live_server.url + "/docs")
    page.wait_for_selector("#operations-default-jacobian_jacobian_post", timeout=30_000)
    for op in ("hessian_hessian_post", "hvp_hvp_post"):
        assert page.locator(f"#operations-default-{op}").count() == 1
    # The Open Inference Protocol's routes, in a section of their own.
    assert page.locator("h3.opblock-tag", has_text="Open Inference Protocol (KServe V2)").count() == 1
    operation = page.locator("#operations-default-jacobian_jacobian_post")
    operation.locator(".opblock-summary").click()
    operation.locator("button.try-out__btn").click()
    assert "0.1" in operation.locator("textarea.body-param__text").input_value()  # the seed example
    operation.locator("button.execute").click()
    status = operation.locator(".live-responses-table .response .response-col_status").first
    status.wait_for(timeout=30_000)
    assert status.inner_text().strip().startswith("200")
    assert '"J"' in operation.locator(".live-responses-table pre.microlight").first.inner_text()
    page.screenshot(path=str(tmp_path / "docs.png"), full_page=True)
    assert (tmp_path / "docs.png").stat().st_size > 10_000
    assert page.blocked == []  # type: ignore[attr-defined]  # nothing fetched from elsewhere


def test_redoc_renders_offline(page, live_server: LiveServer) -> None:
    page.goto(live_server.url + "/redoc")
    page.wait_for_selector("text=/jacobian", timeout=30_000)
    assert page.locator("text=W = log_softmax(X·Y) and its full Jacobian").count() >= 1
    # ReDoc's bundle links its "powered by" logo from its CDN; blocked, the page is complete anyway.
    assert [u for u in page.blocked if not u.endswith("/logo-mini.svg")] == []  # type: ignore[attr-defined]
