"""The broker as a user runs it: `python -m mqttish`, its config errors, signals and logs."""

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mqttish.config import DEFAULT_CONFIG_PATH, load_config
from tests.e2e.broker_process import ROOT, BrokerProcess, free_port


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mqttish", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=30)


def test_default_config_file_loads() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    assert config.listeners[0].port == 1883


@pytest.mark.parametrize(("yaml", "message"), [
    ("listeners:\n  - port: abc\n", "listeners[0].port: expected integer, got 'abc'"),
    ("listeners:\n  - prot: 1883\n", "listeners[0].prot: unknown key (did you mean 'port'?)"),
    ("max_qos: 3\n", "max_qos: expected one of 0, 1, 2, got 3"),
    ("max_inflight_messages: 0\n", "max_inflight_messages: must be at least 1"),
    ("listeners:\n  - bind: 0.0.0.0\n", "listeners[0].bind: listening on 0.0.0.0 without"),
    ("listeners: [\n", "invalid YAML"),
])
def test_bad_config_names_the_key(tmp_path: Path, yaml: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml)
    result = run_cli("-c", str(path))
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_config_file() -> None:
    result = run_cli("-c", "/nonexistent/mqttish.yaml")
    assert result.returncode == 2
    assert "cannot read /nonexistent/mqttish.yaml" in result.stderr


def test_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("-p", str(port))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"mqttish: cannot listen on 127.0.0.1:{port}: address already in use"]


def default_config_on_free_ports(tmp_path: Path) -> tuple[Path, int]:
    """config/mqttish.yaml with its TCP and WebSocket ports moved to free ones,
    so that the test does not collide with a broker started by `make run`."""
    tcp, websocket = free_port(), free_port()
    text = DEFAULT_CONFIG_PATH.read_text()
    assert "port: 1883" in text and "port: 8083" in text
    path = tmp_path / "mqttish.yaml"
    path.write_text(text.replace("port: 1883", f"port: {tcp}")
                    .replace("port: 8083", f"port: {websocket}"))
    return path, tcp


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_shuts_down_cleanly(signum: signal.Signals, tmp_path: Path) -> None:
    config, port = default_config_on_free_ports(tmp_path)
    broker = BrokerProcess("-c", str(config))
    line = broker.wait_for("listening on")
    assert f"127.0.0.1:{port}" in line
    broker.wait_for("loopback only")
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1")
        assert client.recv(4) == b"\x20\x02\x00\x00"
        broker.wait_for("connected from")
        broker.process.send_signal(signum)
        assert broker.wait() == 0
        assert client.recv(10) == b""  # the broker closed our connection on its way out
    assert "stopped" in broker.text()
    assert "Traceback" not in broker.text()


def test_verbose_logs_debug(tmp_path: Path) -> None:
    config, port = default_config_on_free_ports(tmp_path)
    broker = BrokerProcess("-c", str(config), "-v")
    broker.wait_for("listening on")
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1\x40\x02\x00\x07")
        client.recv(4)
        broker.wait_for("DEBUG")
    broker.process.send_signal(signal.SIGTERM)
    assert broker.wait() == 0
