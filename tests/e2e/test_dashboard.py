"""The live dashboard in headless Chromium: values published over TCP show up within a second.

Chromium is Debian's (`apt-get install chromium`, done by .ci/run), driven by
Playwright with `executable_path`; Playwright's own browser downloads are never
used. In CI (`CI` set) a missing browser or library fails the test; elsewhere
it is skipped with the reason. The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mqttish.bridge.config import BridgeConfig, BridgeTopic
from tests.conftest import BrokerThread, websocket_listeners
from tests.e2e.browser import ROOT, chromium_page
from tests.wire.paho_client import PahoClient

ARTIFACTS = ROOT / "test-artifacts"
LIVE_WITHIN_MS = 1000


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh page in headless Chromium, with its JavaScript errors collected."""
    with chromium_page(viewport={"width": 1400, "height": 900}) as page:
        yield page


def test_dashboard_shows_values_published_over_tcp(ws_broker: BrokerThread, page: Any) -> None:
    tcp_port, ws_port = ws_broker.ports
    device = PahoClient(tcp_port, "device")
    try:
        device.subscribe("lab/from-browser", qos=1)
        page.goto(f"http://127.0.0.1:{ws_port}/")
        # Chart a filter the way a user does: type it, press the button.
        page.fill("#chart-filter", "lab/+/temperature")
        page.click("#chart-form button")
        page.wait_for_selector('#chart-filters li[data-filter="lab/+/temperature"]')
        page.wait_for_selector("body[data-state=live]", timeout=10_000)  # subscribed

        topic = "lab/kitchen/temperature"
        reading = {"value": 21.5, "unit": "C", "timestamp": time.time()}
        device.publish(topic, json.dumps(reading), qos=1)
        deadline = time.monotonic() + LIVE_WITHIN_MS / 1000

        def remaining_ms() -> float:
            return max(1.0, (deadline - time.monotonic()) * 1000)

        node = page.wait_for_selector(f'li.has-value[data-topic="{topic}"]',
                                      timeout=remaining_ms())
        assert '"value": 21.5' in node.inner_text()
        page.wait_for_function(
            """(topic) => {
                const set = window.mqttishDashboard.chart.data.datasets
                    .find((d) => d.label === topic);
                return set !== undefined && set.data.length > 0
                    && set.data[set.data.length - 1].y === 21.5;
            }""", arg=topic, timeout=remaining_ms())
        row = page.wait_for_selector(f'#series tr[data-topic="{topic}"]', timeout=remaining_ms())
        assert row.query_selector(".last").inner_text() == "21.5 C"
        # A fresh page's first point fills the chart: the time axis starts near it
        # (10 s at least) rather than 5 minutes back, the window chosen by default.
        assert page.input_value("#chart-window") == "300"
        page.wait_for_function(
            """(topic) => {
                const chart = window.mqttishDashboard.chart;
                const x = chart.options.scales.x;
                const first = chart.data.datasets.find((d) => d.label === topic).data[0].x;
                return x.max - x.min <= 15000 && x.min <= first && first <= x.max;
            }""", arg=topic, timeout=2000)

        # Plain numbers chart too; topics outside the filter do not.
        device.publish("lab/hall/temperature", b"19.25", qos=1)
        device.publish("lab/hall/humidity", b"40", qos=1)
        page.wait_for_selector('#series tr[data-topic="lab/hall/temperature"]', timeout=2000)
        page.wait_for_selector('li.has-value[data-topic="lab/hall/humidity"]', timeout=2000)
        assert page.query_selector('#series tr[data-topic="lab/hall/humidity"]') is None

        # $SYS statistics fill the cards (the tree published when the broker started).
        page.wait_for_function(
            "document.querySelector('#card-clients .card-value').textContent !== '\\u2013'",
            timeout=5000)
        assert page.inner_text("#version") == "mqttish version 0.1.0"

        # A test message published from the page reaches the TCP client.
        page.fill("#publish-topic", "lab/from-browser")
        page.fill("#publish-payload", "hello from the dashboard")
        page.click("#publish-form button")
        assert device.expect()[0].payload == b"hello from the dashboard"
        page.wait_for_selector("#publish-result.ok")

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        assert page.errors == []
    finally:
        device.disconnect()


def test_dashboard_without_libraries_says_how_to_install_them(
        ws_broker: BrokerThread, page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """If node_modules is missing, '/' explains instead of failing (checked in the browser)."""
    from mqttish.dashboard import DashboardAssets

    server = ws_broker.server
    assert server is not None and server._site is not None
    monkeypatch.setattr(server._site, "assets", DashboardAssets(None))
    response = page.goto(f"http://127.0.0.1:{ws_broker.ports[1]}/")
    assert response.status == 503
    assert "npm ci" in page.inner_text("body")


def test_dashboard_shows_bridges(start_broker: Callable[..., BrokerThread],
                                 start_mosquitto: Callable[..., Any], page: Any) -> None:
    remote = start_mosquitto()
    broker = start_broker(listeners=websocket_listeners(), sys_interval=0.2, bridges=(
        BridgeConfig("cloud", (f"127.0.0.1:{remote.port}",), (BridgeTopic("out/#", "out", 1),),
                     remote_clientid="mqttish-cloud", restart_timeout=(0.2, 1.0)),))
    tcp_port, ws_port = broker.ports
    page.goto(f"http://127.0.0.1:{ws_port}/")
    row = '#bridges tr[data-bridge="cloud"]'
    page.wait_for_selector(f'{row} .bridge-state[data-up="1"]', timeout=10_000)
    device = PahoClient(tcp_port, "device")
    try:
        device.publish("out/reading", b"1", qos=1)
        page.wait_for_function(  # the messages sent to the remote broker
            "(cell) => document.querySelector(cell)?.textContent === '1'",
            arg=f"{row} td:nth-child(4)", timeout=5000)
        assert page.inner_text(f"{row} td:nth-child(3)") == f"127.0.0.1:{remote.port}"
        assert page.errors == []
    finally:
        device.disconnect()
