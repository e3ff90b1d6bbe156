"""SIGHUP on a broker process: a garbage ACL file leaves the old rules in force, a fixed
one applies from the next message; and `mqttish pub`/`sub` over (mutual) TLS."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.broker_process import ROOT, BrokerProcess, free_port
from tests.wire.paho_client import V5, PahoClient
from tests.wire.tls_certs import make_certificates

OLD_RULES = "user alice\ntopic write old/#\n"
NEW_RULES = "user alice\ntopic write new/#\n"


def write_config(directory: Path, text: str) -> str:
    path = directory / "mqttish.yaml"
    path.write_text(text)
    return str(path)


@pytest.fixture
def secured_broker(tmp_path: Path) -> tuple[BrokerProcess, int, Path]:
    port = free_port()
    passwd = tmp_path / "passwd"
    subprocess.run([sys.executable, "-m", "mqttish", "passwd", "-c", "-H", "sha512-pbkdf2",
                    "-b", str(passwd), "alice", "pw"], check=True, cwd=ROOT)
    acl = tmp_path / "acl"
    acl.write_text(OLD_RULES)
    config = write_config(tmp_path, f"listeners:\n  - port: {port}\n"
                          f"password_file: {passwd}\nacl_file: {acl}\nsys_interval: 0\n")
    broker = BrokerProcess("-c", config)
    broker.wait_for("listening on")
    yield broker, port, acl
    broker.process.send_signal(signal.SIGTERM)
    broker.wait()


def test_sighup_never_fails_open(secured_broker: tuple[BrokerProcess, int, Path]) -> None:
    broker, port, acl = secured_broker
    alice = PahoClient(port, "alice", protocol=V5, connect=False)
    alice.client.username_pw_set("alice", "pw")
    alice.connect()
    assert alice.publish("old/x", "1", qos=1).value < 0x80
    assert alice.publish("new/x", "1", qos=1).value == 0x87

    acl.write_text("user alice\ntopic write new/#\n%%% garbage %%%\n")
    broker.process.send_signal(signal.SIGHUP)
    error = broker.wait_for("keeping the old password and ACL rules")
    assert f"{acl}:3:" in error  # names the line
    assert alice.publish("old/x", "2", qos=1).value < 0x80  # the old rules still hold
    assert alice.publish("new/x", "2", qos=1).value == 0x87

    acl.write_text(NEW_RULES)
    broker.process.send_signal(signal.SIGHUP)
    broker.wait_for("reloaded certificates, password and ACL files")
    assert alice.publish("new/x", "3", qos=1).value < 0x80  # same connection, new rules
    assert alice.publish("old/x", "3", qos=1).value == 0x87
    alice.disconnect()


def test_mqttish_pub_and_sub_over_mutual_tls(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    port = free_port()
    config = write_config(tmp_path, f"""\
listeners:
  - port: {port}
    certfile: {certs.server_cert}
    keyfile: {certs.server_key}
    cafile: {certs.ca}
    require_certificate: true
    use_identity_as_username: true
""")
    broker = BrokerProcess("-c", config)
    try:
        broker.wait_for("listening on")
        tls = ["-p", str(port), "--cafile", certs.ca, "--cert", certs.client_cert,
               "--key", certs.client_key]
        pub = subprocess.run(
            [sys.executable, "-m", "mqttish", "pub", *tls, "-h", "127.0.0.1", "--insecure",
             "-t", "m/1", "-m", "over tls", "-q", "1", "-r"], capture_output=True, text=True,
            cwd=ROOT, timeout=20)
        assert pub.returncode == 0, pub.stderr
        sub = subprocess.run(
            [sys.executable, "-m", "mqttish", "sub", *tls, "-h", "localhost", "-t", "m/#",
             "-C", "1", "-W", "20", "-v"], capture_output=True, text=True, cwd=ROOT,
            timeout=30)
        assert sub.stdout == "m/1 over tls\n", sub.stderr
        without_certificate = subprocess.run(
            [sys.executable, "-m", "mqttish", "pub", "-p", str(port), "--cafile", certs.ca,
             "-t", "m/1", "-m", "x"], capture_output=True, text=True, cwd=ROOT, timeout=20)
        assert without_certificate.returncode == 1
        assert "mqttish pub:" in without_certificate.stderr
    finally:
        broker.process.send_signal(signal.SIGTERM)
        broker.wait()
