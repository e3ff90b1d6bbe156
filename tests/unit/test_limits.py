"""Abuse limits in the sans-IO core: ids, topics, subscriptions, rates, and the CONNECT
that waits while its credentials are checked off the event loop."""

from __future__ import annotations

import tracemalloc

from mqttish.auth.throttle import FREE_FAILURES, MAX_WAIT, ConnectionRate, LoginThrottle
from mqttish.config import Config
from mqttish.core.broker import Broker
from mqttish.core.connection import ConnectionState
from mqttish.core.hooks import ClientInfo, Decision, Hook
from mqttish.protocol.codec import encode
from mqttish.protocol.packets import (
    MQTT_5,
    Connect,
    Disconnect,
    Packet,
    PubAck,
    Publish,
    Subscribe,
    SubscriptionRequest,
)
from mqttish.protocol.reason_codes import ReasonCode
from tests.unit.peer import Peer


def test_long_client_id_refused() -> None:
    broker = Broker(Config(max_client_id_length=8))
    assert Peer(broker, MQTT_5).connect("x" * 9).reason_code == \
        ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert Peer(broker, MQTT_5).connect("x" * 8).reason_code == ReasonCode.SUCCESS


def test_a_topic_65000_levels_deep_costs_nothing() -> None:
    broker = Broker(Config())
    sub = Peer(broker, MQTT_5)
    sub.connect("sub")
    deep = "/" * 65_000  # 65,001 empty levels, within the 65,535 bytes of a topic
    tracemalloc.start()
    answer = sub.send(Subscribe(1, (SubscriptionRequest(deep + "/#", 0),)))
    pub = Peer(broker, MQTT_5)
    pub.connect("pub")
    refused = pub.send(Publish(deep, b"x", qos=1, packet_id=7))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert answer[0].reason_codes == (ReasonCode.TOPIC_FILTER_INVALID,)  # type: ignore[union-attr]
    assert refused == [PubAck(7, ReasonCode.TOPIC_NAME_INVALID)]
    assert broker.subscriptions.count == 0
    assert peak < 2_000_000  # the packet itself, not a tree or a split of 65,000 levels


def test_subscriptions_per_client() -> None:
    broker = Broker(Config(max_subscriptions_per_client=2))
    peer = Peer(broker, MQTT_5)
    peer.connect("c")
    requests = tuple(SubscriptionRequest(f"t/{n}", 0) for n in range(3))
    [suback] = peer.send(Subscribe(1, requests))
    assert suback.reason_codes == (0, 0, ReasonCode.QUOTA_EXCEEDED)  # type: ignore[union-attr]
    [again] = peer.send(Subscribe(2, (SubscriptionRequest("t/1", 1),)))  # replacing is fine
    assert again.reason_codes == (1,)  # type: ignore[union-attr]


def test_message_rate_too_high_disconnects_with_0x96() -> None:
    broker = Broker(Config(max_message_rate=5))
    peer = Peer(broker, MQTT_5)
    peer.connect("fast")
    answers = peer.send(*(Publish("t", b"x") for _ in range(5)), now=0.0)
    assert answers == []  # a second's worth goes through
    assert peer.send(Publish("t", b"x"), now=1.0) == []  # refilled in time
    answers = peer.send(*(Publish("t", b"x") for _ in range(10)), now=1.0)
    assert answers == [Disconnect(ReasonCode.MESSAGE_RATE_TOO_HIGH)]
    assert peer.connection.state is ConnectionState.CLOSED


def test_byte_rate_exceeded_disconnects_with_0x97() -> None:
    broker = Broker(Config(max_byte_rate=1000))
    peer = Peer(broker, MQTT_5)
    peer.connect("big")
    assert peer.send(Publish("t", b"x" * 2000), now=1.0) == []  # a full bucket overdraws
    assert peer.send(Publish("t", b"x"), now=1.5) == [Disconnect(ReasonCode.QUOTA_EXCEEDED)]


class SlowCheck(Hook):
    """Passwords checked 'in a thread': here, whenever the test says."""

    def authenticate_blocking(self, client: ClientInfo, connect: Connect) -> Decision:
        return Decision.ALLOW if connect.password == b"right" else Decision.DENY


def test_connect_waits_for_credentials_and_keeps_what_followed() -> None:
    hooks = SlowCheck()
    broker = Broker(Config(), hooks=[hooks])
    sub = Peer(broker)
    sub.connection.receive_data(b"".join([
        _encoded(Connect("sub", username="u", password=b"right")),
        _encoded(Subscribe(1, (SubscriptionRequest("t", 0),))),
    ]), 0.0)
    pending = sub.connection.pending_connect
    assert pending is not None and sub.receive() == []  # nothing answered yet
    client = ClientInfo("sub", "u", "peer", 4)
    sub.connection.credentials_checked(broker.hooks.authenticate_blocking(client, pending), 0.0)
    connack, suback = sub.receive()
    assert connack.reason_code == 0  # type: ignore[union-attr]
    assert suback.reason_codes == (0,)  # type: ignore[union-attr]
    wrong = Peer(broker, MQTT_5)
    wrong.connection.receive_data(_encoded(Connect("w", MQTT_5, username="u",
                                                   password=b"wrong"), MQTT_5), 0.0)
    wrong.connection.credentials_checked(Decision.DENY, 0.0)
    [refusal] = wrong.receive()
    assert refusal.reason_code == ReasonCode.BAD_USER_NAME_OR_PASSWORD  # type: ignore[union-attr]


def _encoded(packet: Packet, version: int = 4) -> bytes:
    return encode(packet, version)


def test_login_throttle_spaces_out_failures_then_refuses() -> None:
    throttle = LoginThrottle()
    for _ in range(FREE_FAILURES):
        assert throttle.wait("10.0.0.1", 0.0) == 0.0
        throttle.failed("10.0.0.1", 0.0)
    assert throttle.wait("10.0.0.1", 0.0) == 0.0  # the first few are free
    throttle.failed("10.0.0.1", 0.0)
    waits = [throttle.wait("10.0.0.1", 0.0) for _ in range(100)]
    assert waits[0] == 0.5 and waits[1] == 1.0  # parallel attempts take turns
    assert None in waits and all(w is None or w <= MAX_WAIT for w in waits)
    assert throttle.wait("10.0.0.2", 0.0) == 0.0  # other addresses are not affected
    throttle.succeeded("10.0.0.1")
    assert throttle.wait("10.0.0.1", 0.0) == 0.0


def test_connection_rate_per_address() -> None:
    rate = ConnectionRate(2)
    assert [rate.admit("a", 0.0) for _ in range(3)] == [True, True, False]
    assert rate.admit("b", 0.0)
    assert rate.admit("a", 1.0)


def test_message_size_limit_acknowledges_and_drops_a_larger_payload() -> None:
    """Mosquitto's message_size_limit: the flow completes, nobody receives the message;
    an MQTT 5 publisher learns why."""
    broker = Broker(Config(message_size_limit=10))
    sub = Peer(broker)
    sub.connect("sub")
    sub.subscribe("t", 1)
    pub5 = Peer(broker, MQTT_5)
    pub5.connect("pub5")
    assert pub5.send(Publish("t", b"x" * 11, 1, packet_id=1)) == [
        PubAck(1, ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR)]
    pub3 = Peer(broker)
    pub3.connect("pub3")
    assert pub3.send(Publish("t", b"x" * 11, 1, packet_id=2)) == [PubAck(2)]
    assert sub.publishes() == []
    pub3.send(Publish("t", b"x" * 10, 1, packet_id=3))
    assert [p.payload for p in sub.publishes()] == [b"x" * 10]


def test_empty_client_id_refused_when_not_allowed() -> None:
    broker = Broker(Config(allow_zero_length_clientid=False))
    assert Peer(broker, MQTT_5).connect("").reason_code == ReasonCode.CLIENT_IDENTIFIER_NOT_VALID
    assert Peer(Broker(Config()), MQTT_5).connect("").reason_code == ReasonCode.SUCCESS
