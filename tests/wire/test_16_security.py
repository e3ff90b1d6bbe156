"""Security with real clients: TLS (mosquitto_pub/sub, paho), password files made by
Debian's mosquitto_passwd, ACLs on publish, subscribe and delivery, per-listener
settings, reload, login throttling and connection limits."""

from __future__ import annotations

import contextlib
import logging
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

from mqttish.auth.passwd_cli import main as passwd
from mqttish.config import Config, ConfigError, ListenerConfig
from mqttish.protocol.packets import MQTT_5, ConnAck
from mqttish.protocol.packets import Connect as ConnectPacket
from mqttish.protocol.reason_codes import ReasonCode
from tests.conftest import BrokerThread
from tests.wire.paho_client import V5, V311, PahoClient
from tests.wire.raw_client import RawClient
from tests.wire.tls_certs import Certificates, make_certificates

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_passwd") is None or shutil.which("mosquitto_pub") is None,
    reason="Debian's mosquitto and mosquitto-clients are needed (CI installs them)")

ACL = """\
# anonymous clients may only read the weather
topic read weather/#

user alice
topic readwrite home/#
topic deny home/safe/#
topic write $SYS/broker/commands

user bob
topic read home/#
topic read devices/#

user device-7
topic write devices/device-7/#
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def passwords(tmp_path: Path) -> str:
    """alice ($7$, mosquitto_passwd's default) and bob ($6$, Mosquitto 1.6's)."""
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "alice-pw"], check=True)
    subprocess.run(["mosquitto_passwd", "-H", "sha512", "-b", str(path), "bob", "bob-pw"],
                   check=True)
    return str(path)


@pytest.fixture
def acl_file(tmp_path: Path) -> str:
    path = tmp_path / "acl"
    path.write_text(ACL)
    return str(path)


def tls_listener(certs: Certificates, **keys: object) -> ListenerConfig:
    return ListenerConfig(port=0, certfile=certs.server_cert, keyfile=certs.server_key,
                          **keys)  # type: ignore[arg-type]


def mosquitto(tool: str, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool, "-p", str(port), *args], capture_output=True, text=True,
                          timeout=15)


def sub_process(port: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(["mosquitto_sub", "-p", str(port), "-v", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def paho(port: int, client_id: str, *, protocol: int = V311, user: str | None = None,
         password: str | None = None, tls: ssl.SSLContext | None = None) -> PahoClient:
    client = PahoClient(port, client_id, protocol=protocol, connect=False)
    if user is not None:
        client.client.username_pw_set(user, password)
    if tls is not None:
        client.client.tls_set_context(tls)
    client.connect()
    return client


# ------------------------------------------------------------------ passwords


def test_mosquitto_clients_log_in_with_a_mosquitto_passwd_file(
        start_broker: Callable[..., BrokerThread], passwords: str) -> None:
    broker = start_broker(password_file=passwords)
    port = broker.port
    assert mosquitto("mosquitto_pub", port, "-u", "alice", "-P", "alice-pw", "-t", "ready",
                     "-m", "1", "-r").returncode == 0
    sub = sub_process(port, "-u", "bob", "-P", "bob-pw", "-t", "#", "-C", "2", "-W", "10")
    assert sub.stdout is not None
    assert sub.stdout.readline() == "ready 1\n"  # $6$ (bob) and $7$ (alice) both verify
    assert mosquitto("mosquitto_pub", port, "-u", "alice", "-P", "alice-pw", "-t", "t",
                     "-m", "hello", "-q", "1").returncode == 0
    assert sub.stdout.readline() == "t hello\n"
    assert sub.wait(10) == 0

    wrong = mosquitto("mosquitto_pub", port, "-u", "alice", "-P", "bob-pw", "-t", "t", "-m", "x")
    assert wrong.returncode != 0
    assert "bad user name or password" in wrong.stderr.lower()  # 3.1.1: CONNACK 4
    wrong_v5 = mosquitto("mosquitto_pub", port, "-V", "mqttv5", "-u", "nobody", "-P", "x",
                         "-t", "t", "-m", "x")
    assert "Bad User Name or Password" in wrong_v5.stderr  # MQTT 5: CONNACK 0x86
    anonymous = mosquitto("mosquitto_pub", port, "-t", "t", "-m", "x")
    assert "not authorised" in anonymous.stderr  # a password file: no anonymous by default


def test_bad_logins_return_the_right_codes(start_broker: Callable[..., BrokerThread],
                                          passwords: str) -> None:
    broker = start_broker(password_file=passwords)
    v5 = RawClient(broker.port, MQTT_5)
    assert v5.connect("c5", username="alice", password=b"nope").reason_code == \
        ReasonCode.BAD_USER_NAME_OR_PASSWORD
    v3 = RawClient(broker.port)  # our decoder reads 3.1.1's code 4 as 0x86
    assert v3.connect("c3", username="alice", password=b"nope").reason_code == \
        ReasonCode.BAD_USER_NAME_OR_PASSWORD
    assert broker.broker.metrics.logins_failed == 2


def test_repeated_failures_from_one_address_are_slowed_and_counted(
        start_broker: Callable[..., BrokerThread], passwords: str) -> None:
    broker = start_broker(password_file=passwords)
    for attempt in range(5):
        refused = RawClient(broker.port).connect(f"guess{attempt}", username="alice",
                                                 password=b"guess")
        assert refused.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD
    metrics = broker.broker.metrics
    assert metrics.logins_failed == 5
    assert metrics.logins_delayed == 1  # the fifth waited its turn
    # The right password still works from there (after its turn), and clears the record.
    assert RawClient(broker.port).connect("ok", username="alice",
                                          password=b"alice-pw").reason_code == 0


def test_wrong_passwords_do_not_stall_other_clients(
        start_broker: Callable[..., BrokerThread], passwords: str) -> None:
    assert passwd(["-b", passwords, "carol", "carol-pw"]) == 0  # argon2id: slow to check
    broker = start_broker(password_file=passwords)
    healthy = paho(broker.port, "healthy", user="bob", password="bob-pw")
    healthy.subscribe("home/echo")
    sender = paho(broker.port, "sender", user="alice", password="alice-pw")
    attackers = [RawClient(broker.port) for _ in range(20)]
    for index, attacker in enumerate(attackers):
        attacker.send(ConnectPacket(f"a{index}", username="carol", password=b"x"))
    for round_trip in range(10):
        sender.publish("home/echo", str(round_trip))
        assert healthy.expect()[0].payload == str(round_trip).encode()
    answers = [attacker.receive(timeout=60) for attacker in attackers]
    # Refused, or (queued behind the throttle past the connect timeout) closed.
    assert all(answer is None or (isinstance(answer, ConnAck) and answer.reason_code ==
                                  ReasonCode.BAD_USER_NAME_OR_PASSWORD) for answer in answers)
    assert any(answer is not None for answer in answers)


def test_a_login_that_timed_out_waiting_for_its_turn_is_not_checked(
        start_broker: Callable[..., BrokerThread], tmp_path: Path) -> None:
    """Checks take turns in one thread. Of 30 wrong argon2id passwords sent at once, those
    still waiting at the connect timeout are closed unchecked, and their hashes are never
    made (they used to be, one by one, for connections long gone: after a login storm the
    broker stayed busy for tens of seconds)."""
    path = str(tmp_path / "passwd")
    assert passwd(["-c", "-b", path, "carol", "carol-pw"]) == 0  # argon2id: slow to check
    broker = start_broker(password_file=path, connect_timeout=1.0)
    leavers = [RawClient(broker.port) for _ in range(30)]
    for index, leaver in enumerate(leavers):
        leaver.send(ConnectPacket(f"leaver{index}", username="carol", password=b"x"))
    answers = [leaver.receive(timeout=30) for leaver in leavers]
    refused = sum(1 for answer in answers if isinstance(answer, ConnAck))
    assert 0 < refused < len(leavers)  # the others were closed at the connect timeout
    # From another address (no throttle), its turn comes after theirs: at once, unless
    # their hashes are made after all, and then it times out too.
    ok = RawClient(broker.port, source="127.0.0.2")
    assert ok.connect("ok", username="carol", password=b"carol-pw").reason_code == 0
    # Checked: the refused, and perhaps one whose hash was under way at its timeout.
    assert refused <= broker.broker.metrics.logins_failed <= refused + 1


# ------------------------------------------------------------------ ACL


def test_acl_on_publish_subscribe_and_delivery(start_broker: Callable[..., BrokerThread],
                                               passwords: str, acl_file: str) -> None:
    broker = start_broker(password_file=passwords, acl_file=acl_file)
    alice = paho(broker.port, "alice", protocol=V5, user="alice", password="alice-pw")
    bob5 = paho(broker.port, "bob5", protocol=V5, user="bob", password="bob-pw")
    bob3 = paho(broker.port, "bob3", user="bob", password="bob-pw")
    assert [c.value for c in bob5.subscribe("#")] == [ReasonCode.NOT_AUTHORIZED]
    assert [c.value for c in bob3.subscribe("#")] == [0x80]
    assert [c.value for c in bob5.subscribe("home/+/+")] == [0]
    assert [c.value for c in alice.subscribe("home/#")] == [0]  # overlaps a deny: filtered
    # bob may not write; MQTT 5 is told, 3.1.1 is acknowledged and dropped.
    assert bob5.publish("home/kitchen/lamp", "on", qos=1).value == ReasonCode.NOT_AUTHORIZED
    bob3.publish("home/kitchen/lamp", "on", qos=1)
    assert alice.publish("home/safe/code", "1234", qos=1).value == ReasonCode.NOT_AUTHORIZED
    assert alice.publish("home/kitchen/lamp", "off", qos=1).value == 0
    assert bob5.expect()[0].payload == b"off"
    assert alice.expect()[0].payload == b"off"  # the only message that went anywhere
    assert alice.messages.empty() and bob5.messages.empty()


def test_a_wide_subscription_never_receives_unreadable_topics(
        start_broker: Callable[..., BrokerThread], tmp_path: Path, passwords: str) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user bob\ntopic read #\ntopic deny private/#\n"
                   "user alice\ntopic write #\n")
    broker = start_broker(password_file=passwords, acl_file=str(acl))
    alice = paho(broker.port, "alice", user="alice", password="alice-pw")
    alice.publish("private/diary", "retained secret", qos=1, retain=True)
    bob = paho(broker.port, "bob", user="bob", password="bob-pw")
    assert [c.value for c in bob.subscribe("#")] == [0]
    for topic in ("private/diary", "public/news", "private/x"):
        alice.publish(topic, topic, qos=1)
    assert [m.topic for m in bob.expect()] == ["public/news"]  # nor the retained one
    assert bob.messages.empty()


def test_sys_topics_need_an_explicit_grant(start_broker: Callable[..., BrokerThread],
                                           passwords: str, acl_file: str) -> None:
    broker = start_broker(password_file=passwords, acl_file=acl_file, sys_interval=0)
    alice = paho(broker.port, "alice", protocol=V5, user="alice", password="alice-pw")
    bob = paho(broker.port, "bob", protocol=V5, user="bob", password="bob-pw")
    assert bob.publish("$SYS/broker/commands", "x", qos=1).value == ReasonCode.NOT_AUTHORIZED
    assert alice.publish("$SYS/broker/uptime", "x", qos=1).value == ReasonCode.NOT_AUTHORIZED
    assert alice.publish("$SYS/broker/commands", "reload", qos=1).value < 0x80


# ------------------------------------------------------------------ TLS


def test_mosquitto_clients_over_tls(start_broker: Callable[..., BrokerThread],
                                    certs: Certificates) -> None:
    broker = start_broker(listeners=(tls_listener(certs),))
    tls = ("--cafile", certs.ca, "-h", "localhost")
    assert mosquitto("mosquitto_pub", broker.port, *tls, "-t", "tls/ready", "-m", "1",
                     "-r").returncode == 0
    sub = sub_process(broker.port, *tls, "-t", "tls/#", "-C", "2", "-W", "10")
    assert sub.stdout is not None
    assert sub.stdout.readline() == "tls/ready 1\n"
    assert mosquitto("mosquitto_pub", broker.port, *tls, "-t", "tls/x", "-m", "secret",
                     "-q", "2").returncode == 0
    assert sub.stdout.readline() == "tls/x secret\n"
    assert sub.wait(10) == 0


def test_mutual_tls_names_the_user_by_certificate(
        start_broker: Callable[..., BrokerThread], certs: Certificates, acl_file: str,
        passwords: str) -> None:
    devices = tls_listener(certs, cafile=certs.ca, require_certificate=True,
                           use_identity_as_username=True)
    staff = ListenerConfig(port=0, password_file=passwords)
    broker = start_broker(listeners=(devices, staff), acl_file=acl_file)
    device_port, staff_port = broker.ports
    bob = paho(staff_port, "bob", user="bob", password="bob-pw")
    assert [c.value for c in bob.subscribe("devices/#")] == [0]
    tls = ("--cafile", certs.ca, "-h", "localhost",
           "--cert", certs.client_cert, "--key", certs.client_key, "-q", "1")
    # CN=device-7 may write devices/device-7/#, and nothing else.
    assert mosquitto("mosquitto_pub", device_port, *tls, "-t", "devices/device-8/temp",
                     "-m", "forged").returncode == 0  # 3.1.1: acknowledged, and dropped
    assert mosquitto("mosquitto_pub", device_port, *tls, "-t", "devices/device-7/temp",
                     "-m", "21").returncode == 0
    [message] = bob.expect()
    assert (message.topic, message.payload) == ("devices/device-7/temp", b"21")
    # A client certificate is required, and a user name and password do not replace it.
    without = mosquitto("mosquitto_pub", device_port, "--cafile", certs.ca, "-h", "localhost",
                        "-u", "alice", "-P", "alice-pw", "-t", "t", "-m", "x")
    assert without.returncode != 0
    assert bob.messages.empty()


@pytest.mark.parametrize("kind", ["expired", "stranger"])
def test_unknown_or_expired_client_certificates_are_refused(
        start_broker: Callable[..., BrokerThread], certs: Certificates, kind: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttish.tls")
    listener = tls_listener(certs, cafile=certs.ca, require_certificate=True)
    broker = start_broker(listeners=(listener,))
    cert, key = getattr(certs, f"{kind}_cert"), getattr(certs, f"{kind}_key")
    result = mosquitto("mosquitto_pub", broker.port, "--cafile", certs.ca, "-h", "localhost",
                       "--cert", cert, "--key", key, "-t", "t", "-m", "x")
    assert result.returncode != 0
    assert broker.broker.metrics.clients_total_connections == 0
    failures = [r for r in caplog.records if r.name == "mqttish.tls"]
    assert len(failures) == 1 and "certificate" in failures[0].getMessage().lower()


def test_paho_over_tls_and_a_plain_client_on_the_tls_port(
        start_broker: Callable[..., BrokerThread], certs: Certificates,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqttish.tls")
    broker = start_broker(listeners=(tls_listener(certs, handshake_timeout=2.0),))
    sub = paho(broker.port, "sub", protocol=V5, tls=certs.client_context())
    sub.subscribe("t")
    plain = RawClient(broker.port)  # plain MQTT on a TLS port
    plain.sock.sendall(b"\x10\x10\x00\x04MQTT\x04\x02\x00\x3c\x00\x04abcd")
    assert plain.closed_by_broker()
    silent = socket.create_connection(("127.0.0.1", broker.port))  # never says a word
    silent.settimeout(10)
    assert silent.recv(1) == b""  # closed at the handshake timeout
    pub = paho(broker.port, "pub", protocol=V5, tls=certs.client_context())
    pub.publish("t", "still fine", qos=1)
    assert sub.expect()[0].payload == b"still fine"
    failures = [r.getMessage() for r in caplog.records if r.name == "mqttish.tls"]
    assert len(failures) == 2
    assert "not done within 2 s" in failures[1]


def test_tls_listener_needs_its_files() -> None:
    with pytest.raises(ConfigError, match="needs both 'certfile' and 'keyfile'"):
        ListenerConfig(certfile="server.crt")
    with pytest.raises(ConfigError, match="require_certificate: needs 'cafile'"):
        ListenerConfig(certfile="a", keyfile="b", require_certificate=True)
    with pytest.raises(ConfigError, match="use_identity_as_username: needs"):
        ListenerConfig(certfile="a", keyfile="b", cafile="c", use_identity_as_username=True)
    assert ListenerConfig(certfile="a", keyfile="b").port == 8883


def test_a_missing_certificate_stops_the_start(start_broker: Callable[..., BrokerThread],
                                               tmp_path: Path) -> None:
    from mqttish.transport.listeners import StartupError

    listener = ListenerConfig(port=0, certfile=str(tmp_path / "none.crt"),
                              keyfile=str(tmp_path / "none.key"))
    with pytest.raises(BaseExceptionGroup) as error:
        start_broker(listeners=(listener,))
    assert error.group_contains(StartupError, match="TLS setup failed")


# ------------------------------------------------------------------ per listener, reload


def test_settings_per_listener(start_broker: Callable[..., BrokerThread],
                               passwords: str) -> None:
    broker = start_broker(listeners=(
        ListenerConfig(port=0, password_file=passwords),
        ListenerConfig(port=0, allow_anonymous=True),
    ))
    secured, open_port = broker.ports
    assert RawClient(secured).connect("a").reason_code == ReasonCode.NOT_AUTHORIZED
    assert RawClient(secured).connect("b", username="bob",
                                      password=b"bob-pw").reason_code == 0
    assert RawClient(open_port).connect("c").reason_code == 0


def test_exposed_listeners_need_authentication(passwords: str) -> None:
    with pytest.raises(ConfigError, match="requires 'allow_anonymous: true'"):
        Config(listeners=(ListenerConfig(bind="0.0.0.0"),))
    Config(listeners=(ListenerConfig(bind="0.0.0.0"),), password_file=passwords)
    Config(listeners=(ListenerConfig(bind="0.0.0.0", allow_anonymous=True),))
    assert Config(password_file=passwords).bind_address(ListenerConfig()) == "127.0.0.1"


def test_reload_disconnects_removed_users_and_renews_certificates(
        start_broker: Callable[..., BrokerThread], passwords: str,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    certs = make_certificates(tmp_path_factory.mktemp("renewed"))
    broker = start_broker(listeners=(tls_listener(certs),), password_file=passwords)
    bob = paho(broker.port, "bob", protocol=V5, user="bob", password="bob-pw",
               tls=certs.client_context())
    alice = paho(broker.port, "alice", protocol=V5, user="alice", password="alice-pw",
                 tls=certs.client_context())
    subprocess.run(["mosquitto_passwd", "-D", passwords, "bob"], check=True)
    certs.renew_server(Path(certs.ca).parent)
    assert trio.from_thread.run(broker.server.reload, trio_token=broker._token)  # type: ignore
    assert bob.disconnected.wait(10)
    assert bob.disconnect_reason is not None and bob.disconnect_reason.value == 0x87
    assert not alice.disconnected.is_set()
    with socket.create_connection(("127.0.0.1", broker.port)) as raw, \
            certs.client_context().wrap_socket(raw, server_hostname="localhost") as tls:
        issuer = dict(item[0] for item in tls.getpeercert()["subject"])  # type: ignore[index]
        assert issuer.get("organizationName") == "Renewed"


# ------------------------------------------------------------------ limits


def test_new_connections_per_second_per_address(start_broker: Callable[..., BrokerThread],
                                                ) -> None:
    broker = start_broker(max_connection_rate=2)
    assert RawClient(broker.port).connect("one").reason_code == 0
    assert RawClient(broker.port).connect("two").reason_code == 0
    third = RawClient(broker.port)
    third.send(ConnectPacket("three"))
    with contextlib.suppress(ConnectionResetError):
        assert third.receive() is None  # closed without a word
    assert broker.server.listener_stats[0].refused == 1  # type: ignore[union-attr]


def test_message_rate_disconnects_mqtt5_clients_with_0x96(
        start_broker: Callable[..., BrokerThread]) -> None:
    broker = start_broker(max_message_rate=10)
    client = paho(broker.port, "chatty", protocol=V5)
    for _ in range(50):
        client.publish("t", "x", wait=False)
    assert client.disconnected.wait(10)
    assert client.disconnect_reason is not None
    assert client.disconnect_reason.value == ReasonCode.MESSAGE_RATE_TOO_HIGH
