"""The live dashboard in headless Chromium: values published over TCP show up within a second.

Chromium is Debian's (`apt-get install chromium`, done by .ci/run), driven by
Playwright with `executable_path`; Playwright's own browser downloads are never
used. In CI (`CI` set) a missing browser or library fails the test; elsewhere
it is skipped with the reason. The screenshot lands in test-artifacts/.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BrokerThread, missing
from tests.wire.paho_client import PahoClient

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]
LIVE_WITHIN_MS = 1000


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh page in headless Chromium, with its JavaScript errors collected."""
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
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("console", lambda message: message.type == "error"
                    and page.errors.append(message.text))
            yield page
        finally:
            browser.close()


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
