"""MQTT.js in Node, over WebSocket, exchanging messages with a TCP client (paho)."""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from tests.conftest import BrokerThread
from tests.wire.paho_client import PahoClient

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "e2e" / "mqttjs_echo.js"
TIMEOUT = 10.0


def require_mqttjs() -> str:
    """The node binary, if MQTT.js is installed; in CI a missing one fails the test."""
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "mqtt" / "package.json").is_file():
        reason = "node or node_modules/mqtt missing (run 'npm ci', as make test does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return node


@pytest.mark.parametrize("version", [4, 5], ids=["3.1.1", "5"])
def test_mqttjs_over_websocket(ws_broker: BrokerThread, version: int) -> None:
    node = require_mqttjs()
    tcp_port, ws_port = ws_broker.ports
    process = subprocess.Popen(
        [node, str(SCRIPT), f"ws://127.0.0.1:{ws_port}/mqtt", str(version)], cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()
    device = PahoClient(tcp_port, "device")
    try:
        device.subscribe("mqttjs/out", qos=1)
        assert lines.get(timeout=TIMEOUT) == "ready 1"
        device.publish("mqttjs/in", b"hello", qos=1)
        assert device.expect(timeout=TIMEOUT)[0].payload == b"echo:hello"
        assert lines.get(timeout=TIMEOUT) == "done"
        assert process.wait(TIMEOUT) == 0
    finally:
        device.disconnect()
        if process.poll() is None:
            process.kill()
            process.wait()
