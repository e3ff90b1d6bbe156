"""The broker as a user runs it: `python -m mqttish`, its config errors, signals and logs."""

import re
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


def test_verbose_logs_every_packet_as_mosquitto_does(tmp_path: Path) -> None:
    config, port = default_config_on_free_ports(tmp_path)
    broker = BrokerProcess("-c", str(config), "-v")
    broker.wait_for("listening on")
    with socket.create_connection(("127.0.0.1", port)) as client:
        client.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1"  # CONNECT
                       b"\x32\x0a\x00\x03a/b\x00\x03hey")  # PUBLISH QoS 1, id 3, 'hey'
        assert client.recv(8) == b"\x20\x02\x00\x00\x40\x02\x00\x03"
        broker.wait_for("Sending PUBACK")
    # What one read brought is logged before what it made the broker send.
    packets = [line.split("mqttish.packets: ")[1] for line in broker.text().splitlines()
               if "mqttish.packets: " in line]
    assert packets[0].startswith("Received CONNECT from 127.0.0.1:")
    assert packets[0].endswith(" as 'c1' (p4, c1, k60)")
    assert packets[1:] == ["Received PUBLISH from 'c1' (d0, q1, r0, m3, 'a/b', ... (3 bytes))",
                           "Sending CONNACK to 'c1' (0, 0)", "Sending PUBACK to 'c1' (m3, rc0)"]
    broker.process.send_signal(signal.SIGTERM)
    assert broker.wait() == 0


def test_port_alone_opens_that_one_listener_on_loopback() -> None:
    """As `mosquitto -p`: one TCP listener, loopback only, and no WebSocket listener."""
    port = free_port()
    broker = BrokerProcess("-p", str(port))
    try:
        broker.wait_for("loopback only")
        assert "(websocket)" not in broker.text()
        assert f"listening on 127.0.0.1:{port} (mqtt)" in broker.text()
        assert len(re.findall(r"listening on \S+:\d+ \(", broker.text())) == 1
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(b"\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02c1")
            assert client.recv(4) == b"\x20\x02\x00\x00"
        broker.process.send_signal(signal.SIGTERM)
        assert broker.wait() == 0
    finally:
        broker.kill()


def test_two_ports_with_a_config_file_is_an_error(tmp_path: Path) -> None:
    config, _ = default_config_on_free_ports(tmp_path)
    result = run_cli("-c", str(config), "-p", "1", "-p", "2")
    assert result.returncode == 2
    assert "-p: with -c, one -p sets the port of the first listener" in result.stderr


def test_convert_prints_yaml(tmp_path: Path) -> None:
    conf = tmp_path / "mosquitto.conf"
    conf.write_text("listener 1884\nallow_anonymous true\nauth_plugin /x.so\n")
    refused = run_cli("convert", str(conf))
    assert refused.returncode == 2
    assert f"{conf}:3: auth_plugin: mqttish cannot load" in refused.stderr
    conf.write_text("listener 1884\nallow_anonymous true\n")
    result = run_cli("convert", str(conf))
    assert result.returncode == 0
    assert "listeners:\n- port: 1884\n  bind: 0.0.0.0\nallow_anonymous: true\n" in result.stdout
