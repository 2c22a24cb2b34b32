"""Debian's Chromium, headless, for the tests of the pages the gateway serves (the API explorer,
the proof-of-collateral page), and a browser context that may reach 127.0.0.1 only: those pages
must work in a network without internet. The ``browser`` fixture (``tests/conftest.py``)
launches it; Playwright drives it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"
"""Where the browser tests keep their screenshots (gitignored)."""


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched Chromium (Playwright's ``Browser``): skips the calling test when it is not
    installed, fails it in CI (``ops/setup`` installs it)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: run ops/setup")
        pytest.skip(f"{CHROMIUM} is missing: run ops/setup")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        # Debian's browser, never one Playwright would download.
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Offline:
    """A browser context that lets requests reach 127.0.0.1 only: what it let through
    (``asked``), what it refused (``outside``), and the answers of 400 or more its pages got
    (``failed``)."""

    context: Any
    asked: list[str] = field(default_factory=list)
    outside: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    def only_localhost(self, route: Any) -> None:
        url = route.request.url
        if urlsplit(url).hostname == "127.0.0.1":
            self.asked.append(url)
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def page(self) -> Any:
        page = self.context.new_page()

        def response(r: Any) -> None:
            if r.status >= 400:
                self.failed.append(f"{r.status} {r.url}")

        page.on("response", response)
        return page


@contextmanager
def localhost_only(browser: Any) -> Iterator[Offline]:
    """A new context of ``browser`` (1280x900) that reaches 127.0.0.1 only; closed after."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watched = Offline(context)
    context.route("**/*", watched.only_localhost)
    try:
        yield watched
    finally:
        context.close()
