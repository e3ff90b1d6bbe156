"""Bugs the fuzzer found outside issue #10, replayed through the core as it found them."""

from __future__ import annotations

from mqttish.config import Config
from mqttish.protocol.codec import PacketDecoder, encode
from mqttish.protocol.packets import (
    MQTT_3_1_1,
    MQTT_5,
    Connect,
    Publish,
    Subscribe,
    SubscriptionRequest,
)
from tests.fuzz.adapter import CoreClient, new_broker


def _fed(data: bytes, version: int) -> PacketDecoder:
    """The packets a client makes of the broker's bytes (iterating raises if malformed)."""
    decoder = PacketDecoder(version)
    decoder.feed(data)
    return decoder


def test_shared_message_handed_on_at_qos_0_carries_no_dup() -> None:
    """A member with a persistent session leaves with a QoS 1 shared message unacknowledged;
    the member that gets it next subscribed at QoS 0, so it arrives at QoS 0, and DUP
    must be 0 [MQTT-3.3.1-2]."""
    broker = new_broker(Config(listeners=()))
    leaving = CoreClient(broker, 0.0)
    leaving.exchange(
        encode(Connect("leaving", MQTT_3_1_1, clean_start=False))
        + encode(Subscribe(1, (SubscriptionRequest("$share/g/#", 1),)))
        + encode(Publish("t", b"x", 1, packet_id=2)), 0.0)
    leaving.lose(1.0)
    joining = CoreClient(broker, 1.0)
    output = joining.exchange(
        encode(Connect("joining", MQTT_5), MQTT_5)
        + encode(Subscribe(1, (SubscriptionRequest("$share/g/#", 0),)), MQTT_5), 1.0)
    publishes = [p for p in _fed(output, MQTT_5) if isinstance(p, Publish)]
    assert [(p.topic, p.qos, p.dup) for p in publishes] == [("t", 0, False)]


def test_a_second_connect_of_an_unknown_version_gets_a_valid_disconnect() -> None:
    """A connected MQTT 5 client sends a second CONNECT whose protocol level is unknown:
    the decoder's answer would be 0x84, a CONNACK code, which a DISCONNECT cannot carry
    [MQTT-3.14.2-1]; a second CONNECT is a protocol error, 0x82."""
    from mqttish.protocol.packets import Disconnect
    from mqttish.protocol.reason_codes import ReasonCode

    broker = new_broker(Config(listeners=()))
    client = CoreClient(broker, 0.0)
    output = client.exchange(
        encode(Connect("c1", MQTT_5), MQTT_5)
        + b"\x10\x17\x00\x04MQTT\x15\x82\xff\xff\x22\x17\x01\x00\x02c1\x00\x04eser", 0.0)
    disconnects = [p for p in _fed(output, MQTT_5) if isinstance(p, Disconnect)]
    assert [d.reason_code for d in disconnects] == [ReasonCode.PROTOCOL_ERROR]
