"""The API explorer at ``/schema`` works in a network without internet: Debian's Chromium loads
each explorer page with every request outside 127.0.0.1 refused, and the operations render,
from the scripts and styles the gateway serves itself (``ops/setup-explorer`` vendors them).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.api import explorer
from gateway.api.app import create_app
from gateway.config import load_settings
from gateway.messaging.serving import serve_in_thread
from tests.support.browser import ARTIFACTS, Offline, localhost_only
from tests.support.databases import migrated_engine

MINT = "Mint stablecoins against DT"
"""An operation's summary, as each explorer shows it once it rendered the document."""


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not any(explorer.ASSET_DIR.glob("*.js")):
        if os.environ.get("CI"):
            pytest.fail(f"{explorer.ASSET_DIR} is empty: run ops/setup")
        pytest.skip(f"{explorer.ASSET_DIR} is empty: run ops/setup")
    url = f"sqlite:///{tmp_path_factory.mktemp('explorer') / 'gateway.db'}"
    engine = migrated_engine(url)
    settings = load_settings(environ={}, database={"url": url})
    with serve_in_thread(create_app(settings, engine)) as base:
        yield base
    engine.dispose()


@pytest.fixture
def offline(browser: Any) -> Iterator[Offline]:
    with localhost_only(browser) as watched:
        yield watched


def _shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"explorer-{name}.png"))


@pytest.mark.parametrize(
    ("name", "path", "group", "rendered"),
    [
        ("redoc", "/schema", None, f"h2:has-text('{MINT}')"),
        ("redoc-path", "/schema/redoc", None, f"h2:has-text('{MINT}')"),
        ("swagger", "/schema/swagger", None, f".opblock-summary-description:has-text('{MINT}')"),
        # Elements lists the operations by tag, folded: open the stablecoin's.
        ("elements", "/schema/elements", "text='stablecoin'", f"text={MINT}"),
        ("rapidoc", "/schema/rapidoc", None, f"text={MINT}"),
    ],
)
def test_explorer_renders_the_operations_with_the_network_blocked_but_for_the_gateway(
    gateway_url: str, offline: Offline, name: str, path: str, group: str | None, rendered: str
) -> None:
    page = offline.page()
    page.goto(gateway_url + path, wait_until="load")
    if group is not None:
        page.locator(group).first.click(timeout=30_000)
    page.locator(rendered).first.wait_for(state="visible", timeout=30_000)
    _shot(page, name)
    assert offline.outside == [], f"{name} asked for files outside the gateway"
    assert offline.failed == [], f"{name}: answers that failed"


def test_redoc_shows_the_webhooks_and_the_examples(gateway_url: str, offline: Offline) -> None:
    page = offline.page()
    page.goto(gateway_url + "/schema", wait_until="load")
    page.locator("text=mint.minted").first.wait_for(state="attached", timeout=30_000)
    assert page.locator("text=X-DT-Signature").count() > 0
    assert offline.outside == []


def test_explorer_files_are_served_with_their_media_types(gateway_url: str) -> None:
    with httpx.Client(base_url=gateway_url, timeout=30) as client:
        js = client.get("/schema/assets/redoc.standalone.js")
        css = client.get("/schema/assets/swagger-ui.css")
        licence = client.get("/schema/assets/redoc.LICENSE.txt")
        unknown = client.get("/schema/assets/..%2Fexplorer.py")
        other = client.get("/schema/assets/nothing.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert licence.status_code == 200 and "MIT" in licence.text
    assert unknown.status_code == 404 and other.status_code == 404
    assert "max-age" in js.headers["cache-control"]


def test_explorer_page_says_what_is_missing_when_the_files_were_not_vendored(
    gateway_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(explorer, "ASSET_DIR", tmp_path / "nothing-vendored")
    answer = httpx.get(gateway_url + "/schema/swagger", timeout=30)
    assert answer.status_code == 200
    assert "not installed" in answer.text and "swagger-ui-bundle.js" in answer.text
    assert "cdn" not in answer.text.lower()


def test_no_explorer_page_names_a_public_cdn(gateway_url: str) -> None:
    for path in (
        "/schema",
        "/schema/redoc",
        "/schema/swagger",
        "/schema/elements",
        "/schema/rapidoc",
    ):
        page = httpx.get(gateway_url + path, timeout=30).text
        for host in ("unpkg.com", "jsdelivr", "cdn.redoc.ly", "googleapis", "gstatic"):
            assert host not in page, (path, host)
