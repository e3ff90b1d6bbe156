"""The dashboard over HTTPS and wss in headless Chromium (Debian's, as test_dashboard.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mqttish.config import ListenerConfig
from tests.conftest import BrokerThread
from tests.e2e.browser import chromium_page
from tests.wire.paho_client import PahoClient
from tests.wire.tls_certs import make_certificates


@pytest.fixture
def tls_page() -> Iterator[Any]:
    """A page in Chromium that accepts our test CA's certificates."""
    with chromium_page(ignore_https_errors=True) as page:
        yield page


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
