"""A page in Debian's headless Chromium, driven by Playwright (never a browser download).

In CI (`CI` set) a missing browser or library fails the test; elsewhere it is
skipped with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import missing

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@contextlib.contextmanager
def chromium_page(**options: Any) -> Iterator[Any]:
    """A fresh page (Playwright's `new_page(**options)`) whose JavaScript errors and
    console errors are collected in `page.errors`."""
    if not CHROMIUM.exists():
        missing(f"{CHROMIUM} not found: apt-get install chromium")
    if not (ROOT / "node_modules" / "mqtt" / "dist" / "mqtt.min.js").is_file():
        missing("node_modules missing: run 'npm ci' (make test does)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed: pip install -e '.[dev]'")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(**options)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("console", lambda message: message.type == "error"
                    and page.errors.append(message.text))
            yield page
        finally:
            browser.close()
