"""The dashboard over HTTPS and wss in headless Chromium (Debian's, as test_dashboard.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqttish.config import ListenerConfig
from tests.conftest import BrokerThread
from tests.e2e.test_dashboard import CHROMIUM, CHROMIUM_ARGS, ROOT, missing
from tests.wire.paho_client import PahoClient
from tests.wire.tls_certs import make_certificates


@pytest.fixture
def tls_page() -> Iterator[Any]:
    """A page in Chromium that accepts our test CA's certificates."""
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
            page = browser.new_page(ignore_https_errors=True)
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            yield page
        finally:
            browser.close()


def test_dashboard_over_wss(start_broker: Callable[..., BrokerThread], tls_page: Any,
                            tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    wss = ListenerConfig(port=0, protocol="websocket", certfile=certs.server_cert,
                         keyfile=certs.server_key)
    broker = start_broker(listeners=(ListenerConfig(port=0), wss))
    tcp_port, wss_port = broker.ports
    device = PahoClient(tcp_port, "device")
    try:
        tls_page.goto(f"https://localhost:{wss_port}/")
        tls_page.wait_for_selector("body[data-state=live]", timeout=10_000)
        device.publish("lab/secure/temperature", b"22.5", qos=1)
        node = tls_page.wait_for_selector('li.has-value[data-topic="lab/secure/temperature"]',
                                          timeout=5000)
        assert "22.5" in node.inner_text()
        assert tls_page.evaluate("location.protocol") == "https:"
        assert tls_page.errors == []
    finally:
        device.disconnect()
