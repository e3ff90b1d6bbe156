"""MQTT 5.0 connection behaviour: limits in CONNACK, assigned ids, session expiry,
server-initiated DISCONNECT reason codes, enhanced authentication, redirects."""

import subprocess
from collections.abc import Callable
from pathlib import Path

from mqttish.protocol.packets import MQTT_5, ConnAck, Disconnect, Publish
from mqttish.protocol.properties import Properties
from mqttish.protocol.reason_codes import ReasonCode
from tests.conftest import BrokerThread, missing
from tests.e2e.broker_process import free_port
from tests.wire.mqtt5 import props, v5
from tests.wire.raw_client import RawClient

MOSQUITTO = Path("/usr/sbin/mosquitto")


def test_connack_announces_the_broker_limits(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_inflight_messages=7, max_packet_size=5000, topic_alias_maximum=4)
    client = v5(broker.port, "limits")
    p = client.connack_properties
    assert p is not None
    assert (p.ReceiveMaximum, p.MaximumPacketSize, p.TopicAliasMaximum) == (7, 5000, 4)
    # Absent means what the spec says by default: QoS 2, and every feature available.
    for default in ("MaximumQoS", "RetainAvailable", "WildcardSubscriptionAvailable",
                    "SubscriptionIdentifierAvailable", "SharedSubscriptionAvailable"):
        assert not hasattr(p, default), default


def test_connack_is_mosquittos_given_the_same_limits(
        start_broker: Callable[..., BrokerThread], tmp_path: Path) -> None:
    """Both send only what differs from the spec's defaults (20 in flight, 10 aliases)."""
    if not MOSQUITTO.exists():
        missing(f"{MOSQUITTO} not found: apt-get install mosquitto")
    port = free_port()
    config = tmp_path / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\nlog_dest stderr\n")
    process = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None  # unbuffered, unlike its stdout into a pipe
        while " running" not in (line := process.stderr.readline()):
            assert line, "mosquitto ended before it was running"
        theirs = RawClient(port, MQTT_5).connect("same-client")
    finally:
        process.terminate()
        process.wait(10)
    broker = start_broker(max_packet_size=268_435_460)  # Mosquitto's default: no limit
    ours = RawClient(broker.port, MQTT_5).connect("same-client")
    assert ours == theirs
    assert theirs.properties == Properties(receive_maximum=20, topic_alias_maximum=10)


def test_connack_announces_reduced_capabilities(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_qos=1, retain_available=False, wildcard_subscriptions=False,
                          shared_subscriptions=False, subscription_identifiers=False,
                          max_keepalive=30)
    client = v5(broker.port, "reduced", keepalive=120)
    p = client.connack_properties
    assert p is not None
    assert (p.MaximumQoS, p.RetainAvailable, p.WildcardSubscriptionAvailable,
            p.SharedSubscriptionAvailable, p.SubscriptionIdentifierAvailable,
            p.ServerKeepAlive) == (1, 0, 0, 0, 0, 30)
    assert [int(c.value) for c in client.subscribe("a/#", 1)] == [0xA2]
    assert [int(c.value) for c in client.subscribe("$share/g/a", 1)] == [0x9E]
    assert [int(c.value) for c in client.subscribe("a/b", 2)] == [1]  # granted QoS 1


def test_retain_not_available_disconnects_a_retained_publish(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(retain_available=False)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("r")
    raw.send(Publish("t", b"x", retain=True))
    assert raw.receive() == Disconnect(ReasonCode.RETAIN_NOT_SUPPORTED)


def test_qos_above_maximum_disconnects(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_qos=1)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("q")
    raw.send(Publish("t", b"x", qos=2, packet_id=1))
    assert raw.receive() == Disconnect(ReasonCode.QOS_NOT_SUPPORTED)


def test_assigned_client_identifier(broker: BrokerThread) -> None:
    client = v5(broker.port, "")
    assert client.connack_properties is not None
    assigned = client.connack_properties.AssignedClientIdentifier
    assert assigned.startswith("mqttish-")
    assert broker.call(lambda: assigned in broker.broker.sessions)


def test_session_expiry_zero_ends_session_at_disconnect(broker: BrokerThread) -> None:
    client = v5(broker.port, "gone", clean_start=False,
                properties=props("CONNECT", SessionExpiryInterval=0))
    client.subscribe("t", 1)
    client.disconnect()
    again = v5(broker.port, "gone", clean_start=False)
    assert again.connect_flags["session_present"] is False


def test_session_expires_after_its_interval(broker: BrokerThread) -> None:
    client = v5(broker.port, "brief", clean_start=False,
                properties=props("CONNECT", SessionExpiryInterval=60))
    client.subscribe("t", 1)
    client.disconnect()
    broker.disconnects.wait("brief")
    broker.advance(30)
    assert broker.call(lambda: "brief" in broker.broker.sessions)
    broker.advance(31)
    assert not broker.call(lambda: "brief" in broker.broker.sessions)
    again = v5(broker.port, "brief", clean_start=False)
    assert again.connect_flags["session_present"] is False


def test_session_expiry_max_never_expires(broker: BrokerThread) -> None:
    client = v5(broker.port, "forever", clean_start=False,
                properties=props("CONNECT", SessionExpiryInterval=0xFFFFFFFF))
    client.disconnect()
    broker.disconnects.wait("forever")
    broker.advance(10 * 365 * 86400)
    again = v5(broker.port, "forever", clean_start=False)
    assert again.connect_flags["session_present"] is True


def test_session_expiry_changed_at_disconnect(broker: BrokerThread) -> None:
    client = v5(broker.port, "changed", clean_start=False,
                properties=props("CONNECT", SessionExpiryInterval=3600))
    client.client.disconnect(properties=props("DISCONNECT", SessionExpiryInterval=0))
    assert client.disconnected.wait(5)
    again = v5(broker.port, "changed", clean_start=False)
    assert again.connect_flags["session_present"] is False


def test_session_expiry_cannot_grow_from_zero_at_disconnect(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("zero")
    raw.send(Disconnect(0, Properties(session_expiry_interval=60)))
    assert raw.receive() == Disconnect(ReasonCode.PROTOCOL_ERROR)


def test_clean_start_discards_session(broker: BrokerThread) -> None:
    first = v5(broker.port, "cs", clean_start=False,
               properties=props("CONNECT", SessionExpiryInterval=60))
    first.disconnect()
    assert v5(broker.port, "cs", clean_start=True).connect_flags["session_present"] is False


def test_takeover_sends_disconnect_0x8e(broker: BrokerThread) -> None:
    first = v5(broker.port, "twin")
    v5(broker.port, "twin")
    assert first.disconnected.wait(5)
    assert first.disconnect_reason is not None and first.disconnect_reason.value == 0x8E


def test_keepalive_timeout_sends_disconnect_0x8d(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("sleepy", keepalive=1)
    assert raw.receive(timeout=10) == Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)
    assert raw.receive() is None


def test_malformed_packet_gets_disconnect_0x81(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("malformed")
    raw.send(b"\x36\x06\x00\x01t\x00\x01\x00")  # QoS 3
    assert raw.receive() == Disconnect(ReasonCode.MALFORMED_PACKET)


def test_protocol_error_gets_disconnect_0x82(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("twice")
    raw.send(b"\x10\x0f\x00\x04MQTT\x05\x02\x00\x3c\x00\x00\x02c1")
    assert raw.receive() == Disconnect(ReasonCode.PROTOCOL_ERROR)


def test_packet_too_large_gets_disconnect_0x95(start_broker) -> None:  # type: ignore[no-untyped-def]
    broker = start_broker(max_packet_size=200)
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("big")
    raw.send(Publish("t", b"x" * 300))
    assert raw.receive() == Disconnect(ReasonCode.PACKET_TOO_LARGE)


def test_unsupported_authentication_method_refused_0x8c(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    connack = raw.connect("auth", properties=Properties(authentication_method="SCRAM-SHA-1"))
    assert connack.reason_code == ReasonCode.BAD_AUTHENTICATION_METHOD
    assert raw.receive() is None


def test_auth_packet_without_method_is_a_protocol_error(broker: BrokerThread) -> None:
    raw = RawClient(broker.port, MQTT_5)
    raw.connect("auth")
    raw.send(b"\xf0\x00")
    assert raw.receive() == Disconnect(ReasonCode.PROTOCOL_ERROR)


def test_redirect_to_another_server(start_broker) -> None:  # type: ignore[no-untyped-def]
    from mqttish.core.settings import RedirectConfig

    moved = start_broker(redirect=RedirectConfig("other.example:1883", permanent=True))
    raw = RawClient(moved.port, MQTT_5)
    assert raw.connect("r") == ConnAck(False, ReasonCode.SERVER_MOVED,
                                       Properties(server_reference="other.example:1883"))
    busy = start_broker(redirect=RedirectConfig("spare.example"))
    raw = RawClient(busy.port, MQTT_5)
    assert raw.connect("r").reason_code == ReasonCode.USE_ANOTHER_SERVER
    legacy = RawClient(busy.port)
    assert legacy.connect("r").reason_code == ReasonCode.SERVER_UNAVAILABLE  # 3.1.1 code 3
